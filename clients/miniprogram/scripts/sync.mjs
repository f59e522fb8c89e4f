// Copies paystream.js and its types into the example mini-program, which cannot require files
// outside its own folder. test/sync.test.mjs fails when a copy is stale.
import { copyFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, relative } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const example = join(here, '..', '..', '..', 'examples', 'miniprogram', 'utils');

/** [original, copy] */
export const COPIES = ['paystream.js', 'paystream.d.ts'].map((name) => [join(here, '..', name), join(example, name)]);

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  for (const [source, copy] of COPIES) {
    copyFileSync(source, copy);
    console.log(`copied ${relative(process.cwd(), source)} → ${relative(process.cwd(), copy)}`);
  }
}
