// Sessions: a token that stops working (corrupted, expired) is replaced by one silent re-login;
// a second 401 in the same call is the caller's error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, TOKEN_KEY } from '../paystream.js';
import { sandboxWx, engine, uniqueUser } from '../testing/wx-sandbox.mjs';

const base = engine();

test('a corrupted token: the next call succeeds after exactly one silent re-login', async () => {
  const wx = sandboxWx(base, { user: uniqueUser('corrupt') });
  const paystream = createClient({ baseUrl: base, wx });
  const first = await paystream.login();
  assert.equal(wx.calls.login, 1);
  wx.setStorageSync(TOKEN_KEY, first.token.slice(0, -4) + 'AAAA');
  const page = await paystream.orders();
  assert.equal(page.total_items, 0);
  assert.equal(wx.calls.login, 2);
  assert.notEqual(paystream.token(), first.token.slice(0, -4) + 'AAAA');
  const statuses = wx.requests.filter((r) => r.path === '/api/orders').map((r) => r.status);
  assert.deepEqual(statuses, [401, 200]);
});

test('concurrent calls with a dead token share one re-login', async () => {
  const wx = sandboxWx(base, { user: uniqueUser('concurrent') });
  const paystream = createClient({ baseUrl: base, wx });
  await paystream.login();
  wx.setStorageSync(TOKEN_KEY, 'not-a-token');
  await Promise.all([paystream.orders(), paystream.orders({ page: 2 }), paystream.orders({ status: 'paid' })]);
  assert.equal(wx.calls.login, 2);
});

test('a token the engine keeps refusing: one re-login, then the 401 error', async () => {
  const wx = sandboxWx(base, { user: uniqueUser('refused') });
  // Every authenticated request goes out with a bad token (as if the engine refused every session).
  const request = wx.request;
  wx.request = (options) => {
    if (options.header && options.header.Authorization) options.header.Authorization = 'Bearer garbage';
    request(options);
  };
  const paystream = createClient({ baseUrl: base, wx });
  await assert.rejects(paystream.orders(), (e) => {
    assert.equal(e.status, 401);
    assert.match(e.code, /token/);
    return true;
  });
  assert.equal(wx.calls.login, 2, 'the first login, then one silent re-login');
});

test('an expired session (SESSION_TTL_SECONDS) is renewed silently', async () => {
  const shortBase = process.env.PAYSTREAM_SHORT_TTL_BASE_URL;
  assert.ok(shortBase, 'set PAYSTREAM_SHORT_TTL_BASE_URL to an engine with a short session TTL (cargo test does)');
  const ttl = Number(process.env.PAYSTREAM_SHORT_TTL_SECONDS || '1');
  const wx = sandboxWx(shortBase, { user: uniqueUser('expiry') });
  const paystream = createClient({ baseUrl: shortBase, wx });
  const session = await paystream.login();
  await new Promise((r) => setTimeout(r, ttl * 1000 + 1100));
  // The engine says so: the kept token is expired.
  const res = await fetch(`${shortBase}/api/orders`, { headers: { authorization: `Bearer ${session.token}` } });
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error.code, 'token_expired');
  const page = await paystream.orders();
  assert.equal(page.total_items, 0);
  assert.equal(wx.calls.login, 2);
});

test('login: a code WeChat refuses is the engine\'s 401 invalid_code, not a loop', async () => {
  const wx = sandboxWx(base, { user: uniqueUser('badcode') });
  wx.login = ({ success }) => {
    wx.calls.login += 1;
    success({ code: 'code-wechat-never-issued', errMsg: 'login:ok' });
  };
  const paystream = createClient({ baseUrl: base, wx });
  await assert.rejects(paystream.login(), (e) => e.status === 401 && e.code === 'invalid_code');
  await assert.rejects(paystream.orders(), (e) => e.status === 401 && e.code === 'invalid_code');
  assert.equal(wx.calls.login, 2, 'one wx.login per attempt');
});
