// The example mini-program carries its own copy of the client (a mini-program cannot require
// files outside its project folder); it must be this one, byte for byte. `npm run sync` in
// clients/miniprogram (or `node clients/miniprogram/scripts/sync.mjs`) copies it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { COPIES } from '../scripts/sync.mjs';

test('the example mini-program\'s copy of the client is up to date', () => {
  for (const [source, copy] of COPIES) {
    assert.ok(readFileSync(copy).equals(readFileSync(source)), `${copy} differs from ${source}: run \`npm run sync\` in clients/miniprogram`);
  }
});
