// The example mini-program (examples/miniprogram) run in node against the engine: its app.js and
// pages are loaded with stand-ins for the mini-program framework (App, Page, getApp) and `wx`
// (the simulator-backed one; modals answer "confirm"), then a customer browses, fills the cart,
// checks out through the sandbox cashier and sees the order paid. It checks the example's
// JavaScript, not its WXML.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { sandboxWx, engine, ensureProducts, uniqueUser } from '../testing/wx-sandbox.mjs';

const base = engine();
const example = fileURLToPath(new URL('../../../examples/miniprogram/', import.meta.url));
const require = createRequire(example);

before(() => ensureProducts(base));

/** Loads the example: App()/Page() definitions, with `wx` a stand-in that records navigation. */
function loadExample(user) {
  const wx = sandboxWx(base, { user });
  wx.navigations = [];
  wx.toasts = [];
  wx.showModal = ({ success }) => setTimeout(() => success({ confirm: true, cancel: false }), 0);
  wx.showToast = (options) => void wx.toasts.push(options.title);
  wx.navigateTo = ({ url }) => void wx.navigations.push(url);
  wx.redirectTo = ({ url }) => void wx.navigations.push(url);
  wx.stopPullDownRefresh = () => {};
  const pages = {};
  let app = null;
  Object.assign(globalThis, {
    wx,
    App: (definition) => { app = definition; },
    Page: (definition) => { pages[current] = definition; },
    getApp: () => app,
  });
  let current = '';
  require('./config.js').baseUrl = base;
  require('./config.js').sandbox.user = user;
  require('./app.js');
  app.onLaunch();
  for (const page of ['pages/products/index', 'pages/checkout/index', 'pages/order/detail']) {
    current = page;
    require(`./${page}.js`);
  }
  return { wx, app, pages };
}

/** A page instance: its methods, a copy of its data, setData. */
function open(definition, options = {}) {
  const page = Object.create(definition);
  page.data = JSON.parse(JSON.stringify(definition.data));
  page.setData = (changes) => Object.assign(page.data, changes);
  if (page.onLoad) page.onLoad(options);
  return page;
}

async function until(check, what) {
  for (let i = 0; i < 200; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`never: ${what}`);
}

test('the example mini-program: browse, cart, checkout with the sandbox cashier, order paid', async () => {
  const { wx, pages } = loadExample(uniqueUser('example'));

  const products = open(pages['pages/products/index']);
  await products.load();
  assert.equal(products.data.error, '');
  assert.ok(products.data.products.some((p) => p.sku === 'mp-tea' && p.price === '¥12.50'));
  products.change({ currentTarget: { dataset: { sku: 'mp-tea', step: 1 } } });
  products.change({ currentTarget: { dataset: { sku: 'mp-tea', step: 1 } } });
  products.change({ currentTarget: { dataset: { sku: 'mp-cake', step: 1 } } });
  assert.equal(products.data.total, '¥33.00');
  assert.equal(products.data.count, 3);
  products.checkout();
  assert.deepEqual(wx.navigations, ['/pages/checkout/index']);

  const checkout = open(pages['pages/checkout/index']);
  checkout.onShow();
  assert.equal(checkout.data.total, '¥33.00');
  checkout.phone({ detail: {} });
  await until(() => checkout.data.phone, 'the phone number is bound');
  assert.equal(checkout.data.phone, '+86 13800138000');
  checkout.placeAndPay();
  await until(() => wx.navigations.length === 2, 'the checkout goes to the order page');
  assert.equal(checkout.data.error, '');
  assert.deepEqual(wx.paymentProblems, []);
  const [, url] = wx.navigations;
  const id = /^\/pages\/order\/detail\?id=(.+)$/.exec(url)[1];

  const detail = open(pages['pages/order/detail'], { id });
  await detail.load();
  assert.equal(detail.data.order.status, 'paid');
  assert.equal(detail.data.status, 'Paid');
  assert.equal(detail.data.paid, '¥33.00');
  assert.equal(wx.calls.requestSubscribeMessage, 0, 'the sandbox wrapper plays requestSubscribeMessage');
  detail.onUnload();
});
