// pay(): prepay → wx.requestPayment (the stand-in checks the parameters as WeChat does) → follow
// the order at the engine. The requestPayment success callback is never taken as payment.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '../paystream.js';
import { sandboxWx, engine, ensureProducts, uniqueUser } from '../testing/wx-sandbox.mjs';

const base = engine();

function client(name) {
  const wx = sandboxWx(base, { user: uniqueUser(name) });
  return { wx, paystream: createClient({ baseUrl: base, wx }) };
}

function ordersFetched(wx, id) {
  return wx.requests.filter((r) => r.method === 'GET' && r.path === `/api/orders/${id}`).length;
}

before(() => ensureProducts(base));

for (const channel of ['wechatpay_v3', 'wechatpay_v2']) {
  test(`pay (${channel}): requestPayment, then the order is followed until paid`, async () => {
    const { wx, paystream } = client(`pay-${channel}`);
    const order = await paystream.placeOrder([{ sku: 'mp-tea', quantity: 2 }]);
    const result = await paystream.pay(order.id, { channel, intervalMs: 100, timeoutMs: 20000 });
    assert.deepEqual(wx.paymentProblems, []);
    assert.equal(result.status, 'paid', JSON.stringify(result));
    assert.equal(result.order.id, order.id);
    assert.equal(result.order.paid_fen, 2500);
    assert.equal(result.order.channel, channel);
    assert.ok(result.order.transaction_id);
    assert.equal(wx.calls.requestPayment, 1);
    assert.ok(ordersFetched(wx, order.id) >= 1, 'the status came from the engine');
    // Paying a paid order is the engine's 409, not a second cashier.
    await assert.rejects(paystream.pay(order.id, { channel }), (e) => e.status === 409 && e.code === 'order_already_paid');
    assert.equal(wx.calls.requestPayment, 1);
  });
}

test('pay: the user closes the cashier → cancelled_by_user, the order is not followed', async () => {
  const { wx, paystream } = client('pay-cancel');
  const order = await paystream.placeOrder([{ sku: 'mp-cake', quantity: 1 }]);
  wx.nextPayment = 'cancel';
  const result = await paystream.pay(order.id, { intervalMs: 100 });
  assert.deepEqual(result, { status: 'cancelled_by_user' });
  assert.deepEqual(wx.paymentProblems, []);
  assert.equal(ordersFetched(wx, order.id), 0);
  assert.equal((await paystream.order(order.id)).status, 'pending_payment');
  // The user tries again and pays.
  const paid = await paystream.pay(order.id, { intervalMs: 100, timeoutMs: 20000 });
  assert.equal(paid.status, 'paid');
});

test('pay: requestPayment success is no proof — without the engine hearing of it, pay() times out', async () => {
  const { wx, paystream } = client('pay-lost-notify');
  const order = await paystream.placeOrder([{ sku: 'mp-cake', quantity: 2 }]);
  wx.nextPayment = 'pay_without_notify';
  const started = Date.now();
  const result = await paystream.pay(order.id, { intervalMs: 100, timeoutMs: 1500 });
  assert.equal(result.status, 'timeout');
  assert.equal(result.order.status, 'pending_payment');
  assert.ok(Date.now() - started >= 1400, 'followed until the timeout');
  assert.ok(ordersFetched(wx, order.id) >= 3);
});

test('pay: a cancelled order cannot be paid, with the engine\'s error', async () => {
  const { wx, paystream } = client('pay-closed');
  const order = await paystream.placeOrder([{ sku: 'mp-cake', quantity: 1 }]);
  await paystream.cancel(order.id);
  await assert.rejects(paystream.pay(order.id), (e) => e.status === 409 && typeof e.code === 'string');
  assert.equal(wx.calls.requestPayment, 0);
});

test('subscribe then pay: the accepted template is sent once the order is paid', async () => {
  const { wx, paystream } = client('pay-subscribe');
  const { user } = await paystream.login();
  assert.deepEqual(await paystream.subscribe(['TPL-PAID']), ['TPL-PAID']);
  const order = await paystream.placeOrder([{ sku: 'mp-tea', quantity: 1 }]);
  assert.equal((await paystream.pay(order.id, { intervalMs: 100, timeoutMs: 20000 })).status, 'paid');
  assert.deepEqual(wx.paymentProblems, []);
  let messages = [];
  for (let i = 0; i < 100 && messages.length === 0; i++) {
    const res = await fetch(`${base}/sandbox/control/subscribe-messages?openid=${encodeURIComponent(user.openid)}`);
    messages = (await res.json()).messages || [];
    if (messages.length === 0) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(messages.length, 1, 'one accept, one message');
  assert.equal(messages[0].template_id, 'TPL-PAID');
  assert.equal(messages[0].data.character_string1.value, order.out_trade_no);
});

test('pay: another requestPayment failure looks at the order once, then is request_payment_failed', async () => {
  const { wx, paystream } = client('pay-fail');
  const order = await paystream.placeOrder([{ sku: 'mp-cake', quantity: 1 }]);
  wx.requestPayment = ({ fail }) => fail({ errMsg: 'requestPayment:fail no permission' });
  await assert.rejects(paystream.pay(order.id, { intervalMs: 100 }), (e) => {
    assert.equal(e.code, 'request_payment_failed');
    assert.equal(e.status, 0);
    assert.match(e.message, /no permission/);
    return true;
  });
  assert.equal(ordersFetched(wx, order.id), 1);
});
