// The client against a real engine in sandbox mode: login, catalogue, orders (idempotency,
// cancel, listing), phone number, subscribe messages, cards, and the error shape.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { createClient, PaystreamError, TOKEN_KEY } from '../paystream.js';
import { sandboxWx, engine, ensureProducts, uniqueUser, post } from '../testing/wx-sandbox.mjs';

const base = engine();

function client(name) {
  const wx = sandboxWx(base, { user: uniqueUser(name) });
  return { wx, paystream: createClient({ baseUrl: base, wx }) };
}

before(() => ensureProducts(base));

test('one file for both module systems: require() and import give the same createClient', () => {
  const require = createRequire(import.meta.url);
  assert.equal(require('../paystream.js').createClient, createClient);
});

test('login: wx.login code → session token kept in wx storage', async () => {
  const { wx, paystream } = client('login');
  const session = await paystream.login();
  assert.match(session.user.openid, /\S/);
  assert.ok(session.token && session.expires_at);
  assert.equal(wx.storage.get(TOKEN_KEY), session.token);
  assert.equal(paystream.token(), session.token);
  // The first authenticated call logs in by itself when no token is kept.
  const { wx: wx2, paystream: fresh } = client('lazy');
  const page = await fresh.orders();
  assert.equal(page.total_items, 0);
  assert.equal(wx2.calls.login, 1);
});

test('products: the active catalogue', async () => {
  const { paystream } = client('browse');
  const items = await paystream.products();
  const tea = items.find((p) => p.sku === 'mp-tea');
  assert.deepEqual(tea, { sku: 'mp-tea', name: 'Green tea', price_fen: 1250, active: true });
});

test('placeOrder: prices from the catalogue; the same key is the same order', async () => {
  const { paystream } = client('order');
  const cart = [{ sku: 'mp-tea', quantity: 2 }, { sku: 'mp-cake', quantity: 1 }];
  const order = await paystream.placeOrder(cart, { note: 'no sugar', idempotencyKey: 'cart-test-1' });
  assert.equal(order.status, 'pending_payment');
  assert.equal(order.total_fen, 2 * 1250 + 800);
  const again = await paystream.placeOrder(cart, { note: 'no sugar', idempotencyKey: 'cart-test-1' });
  assert.equal(again.id, order.id);
  // A definite answer ends the cart's key: the same cart bought again is a new order.
  const other = await paystream.placeOrder(cart, { note: 'no sugar' });
  const third = await paystream.placeOrder(cart, { note: 'no sugar' });
  assert.notEqual(other.id, order.id);
  assert.notEqual(third.id, other.id);
  // The same key for a different cart is refused, with the engine's error (the engine answers
  // 422, its OpenAPI document says 409: either is a refusal).
  await assert.rejects(paystream.placeOrder([{ sku: 'mp-cake', quantity: 9 }], { idempotencyKey: 'cart-test-1' }), (e) => {
    assert.ok(e instanceof Error && e instanceof PaystreamError);
    assert.ok([409, 422].includes(e.status), String(e.status));
    assert.equal(e.code, 'idempotency_key_reused');
    assert.ok(e.message);
    return true;
  });
});

test('placeOrder: a lost answer is retried with the cart\'s key and gives the same order', async () => {
  const { wx, paystream } = client('flaky');
  const cart = [{ sku: 'mp-cake', quantity: 3 }];
  wx.loseAnswerOf = /^\/api\/orders$/;
  await assert.rejects(paystream.placeOrder(cart), (e) => e.status === 0 && e.code === 'network_error');
  // The order was placed; the retry of the same cart (lines in another order, same sums) finds it.
  const order = await paystream.placeOrder([{ sku: 'mp-cake', quantity: 1 }, { sku: 'mp-cake', quantity: 2 }]);
  const page = await paystream.orders();
  assert.equal(page.total_items, 1, 'one order, not two');
  assert.equal(page.items[0].id, order.id);
  const keys = wx.requests.filter((r) => r.method === 'POST' && r.path === '/api/orders');
  assert.equal(keys.length, 2);
});

test('order, orders (paged, by status) and cancel → closed', async () => {
  const { paystream } = client('cancel');
  const first = await paystream.placeOrder([{ sku: 'mp-tea', quantity: 1 }]);
  const second = await paystream.placeOrder([{ sku: 'mp-cake', quantity: 1 }]);
  assert.equal((await paystream.order(first.id)).id, first.id);
  const closed = await paystream.cancel(first.id);
  assert.equal(closed.status, 'closed');
  assert.equal((await paystream.order(first.id)).status, 'closed');
  const page = await paystream.orders({ page: 1, per_page: 1 });
  assert.equal(page.total_items, 2);
  assert.equal(page.total_pages, 2);
  assert.equal(page.items[0].id, second.id, 'newest first');
  const pending = await paystream.orders({ status: 'pending_payment' });
  assert.deepEqual(pending.items.map((o) => o.id), [second.id]);
  await assert.rejects(paystream.orders({ status: 'bogus' }), (e) => e.status === 400 && e.code === 'invalid_status');
});

test('someone else\'s order is not found', async () => {
  const { paystream: alice } = client('alice');
  const { paystream: bob } = client('bob');
  const order = await alice.placeOrder([{ sku: 'mp-tea', quantity: 1 }]);
  await assert.rejects(bob.order(order.id), (e) => e.status === 404 && e.code === 'order_not_found');
});

test('bindPhone: the getPhoneNumber code becomes the account\'s phone', async () => {
  const { wx, paystream } = client('phone');
  const code = await wx.phoneCode('13800138000');
  const phone = await paystream.bindPhone(code);
  assert.equal(phone.phone, '13800138000');
  assert.equal(phone.country_code, '86');
  // A bad code is bad input (400), not a bad session: no re-login.
  const logins = wx.calls.login;
  await assert.rejects(paystream.bindPhone('no-such-code'), (e) => e.status === 400);
  assert.equal(wx.calls.login, logins);
});

test('subscribe: only the accepted templates reach the engine', async () => {
  const { wx, paystream } = client('subscribe');
  wx.subscribeChoices = { 'TPL-CLOSED': 'reject' };
  const accepted = await paystream.subscribe(['TPL-PAID', 'TPL-CLOSED']);
  assert.deepEqual(accepted, ['TPL-PAID']);
  const posts = wx.requests.filter((r) => r.path === '/api/subscriptions');
  assert.equal(posts.length, 1);
  assert.equal(posts[0].status, 200);
  // All rejected: nothing to tell the engine.
  wx.subscribeChoices = { 'TPL-PAID': 'reject' };
  assert.deepEqual(await paystream.subscribe(['TPL-PAID']), []);
  assert.equal(wx.requests.filter((r) => r.path === '/api/subscriptions').length, 1);
});

test('cardExt: a signed cardExt for wx.addCard that WeChat accepts', async () => {
  const { paystream } = client('card');
  const { user } = await paystream.login();
  const card = await post(`${base}/sandbox/control/cards`, { openid: user.openid });
  const ext = await paystream.cardExt(card.card_id);
  assert.equal(typeof ext, 'string');
  JSON.parse(ext);
  const check = await post(`${base}/sandbox/control/cards/ext-check`, { card_id: card.card_id, card_ext: ext });
  assert.equal(check.valid, true, JSON.stringify(check));
  // The card redeemed with an order.
  const order = await paystream.placeOrder([{ sku: 'mp-tea', quantity: 1 }], { card: { card_id: card.card_id, code: card.code } });
  assert.equal(order.status, 'pending_payment');
});

test('request: errors carry status, code and message', async () => {
  const { paystream } = client('errors');
  await assert.rejects(paystream.request('GET', '/api/orders/not-an-id'), (e) => {
    assert.equal(e.status, 404);
    assert.equal(e.code, 'order_not_found');
    assert.ok(e.message.length > 0);
    return true;
  });
  await assert.rejects(paystream.placeOrder([{ sku: 'mp-nothing', quantity: 1 }]), (e) => e.status === 422 && e.code === 'unknown_sku');
});
