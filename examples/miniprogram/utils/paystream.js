/**
 * paystream.js — the mini-program side of paystream's customer API (docs: ./README.md,
 * contract: "Customer API (mini-program)"). No dependencies; the `wx` object is injected so the
 * same code runs in a mini-program (`wx` is the real one) and in node tests (a stand-in).
 *
 * One file for both module systems. It is written as CommonJS (`exports.x = …`), because:
 *  - WeChat mini-programs load modules with CommonJS `require('../../utils/paystream.js')` and
 *    do not understand ES `export` without the DevTools' "ES6 → ES5" compile step;
 *  - node's ES modules import a CommonJS file with named imports
 *    (`import { createClient } from './paystream.js'`): node finds the names by reading the
 *    `exports.name = …` assignments statically, so keep every export in that form (no
 *    `module.exports = …` of a computed object) and the file needs no separate ESM build;
 *  - bundlers (webpack, esbuild, rollup with the CommonJS plugin) take it as it is.
 * The language is kept to what the mini-program runtime runs without compilation: no optional
 * chaining, no `??`, no `fetch`/`URLSearchParams`/`crypto.randomUUID` (absent there).
 *
 * The examples/miniprogram project carries a byte-identical copy in `utils/paystream.js`
 * (`npm run sync` here copies it; test/sync.test.mjs fails when the copy differs).
 */
'use strict';

/** Storage key of the session token. */
var TOKEN_KEY = 'paystream.token';

/** Order statuses after which `pay()` stops following the order. */
var SETTLED = ['paid', 'partially_refunded', 'refunded', 'closed', 'needs_review'];

/**
 * An error of the engine's API (`{"error":{"code","message"}}`), or of the way to it.
 * `status` is the HTTP status (0 when no answer arrived); `code` is the engine's stable
 * snake_case code, or `network_error` / `http_error` / `wx_login_failed` /
 * `request_payment_failed` / `subscribe_failed` for what went wrong on this side.
 */
function PaystreamError(status, code, message, details) {
  var error = new Error(message || code);
  Object.setPrototypeOf(error, PaystreamError.prototype);
  error.name = 'PaystreamError';
  error.status = status;
  error.code = code;
  if (details !== undefined) error.details = details;
  return error;
}
PaystreamError.prototype = Object.create(Error.prototype, {
  constructor: { value: PaystreamError, writable: true, configurable: true },
});

/**
 * A storage for the token: the given one, else the mini-program's (wx.*StorageSync), else memory.
 * @returns {{get(key: string): any, set(key: string, value: any): void, remove(key: string): void}}
 */
function pickStorage(wx, storage) {
  if (storage) return storage;
  if (wx && typeof wx.getStorageSync === 'function' && typeof wx.setStorageSync === 'function') {
    return {
      get: function (key) { return wx.getStorageSync(key) || null; },
      set: function (key, value) { wx.setStorageSync(key, value); },
      remove: function (key) {
        if (typeof wx.removeStorageSync === 'function') wx.removeStorageSync(key);
        else wx.setStorageSync(key, '');
      },
    };
  }
  var memory = {};
  return {
    get: function (key) { return Object.prototype.hasOwnProperty.call(memory, key) ? memory[key] : null; },
    set: function (key, value) { memory[key] = value; },
    remove: function (key) { delete memory[key]; },
  };
}

/** `?a=1&b=2` of the defined values, or ''. */
function query(params) {
  var parts = [];
  Object.keys(params || {}).forEach(function (key) {
    var value = params[key];
    if (value === undefined || value === null || value === '') return;
    parts.push(encodeURIComponent(key) + '=' + encodeURIComponent(String(value)));
  });
  return parts.length ? '?' + parts.join('&') : '';
}

/**
 * A fresh idempotency key. It needs to be unique, not secret: time plus randomness is enough
 * (the mini-program runtime has no crypto.randomUUID).
 */
function newKey() {
  var random = '';
  for (var i = 0; i < 4; i++) random += Math.floor(Math.random() * 0x100000000).toString(36);
  return 'cart-' + Date.now().toString(36) + '-' + random;
}

/**
 * The cart's lines in one canonical form — one line per sku (quantities summed), sorted by sku —
 * so that the same cart always sends the same body: the engine answers a reused
 * Idempotency-Key only for a byte-for-byte same request (else 422 `idempotency_key_reused`).
 */
function canonicalLines(items) {
  var quantities = {};
  (items || []).forEach(function (item) {
    quantities[item.sku] = (quantities[item.sku] || 0) + Number(item.quantity);
  });
  return Object.keys(quantities).sort().map(function (sku) {
    return { sku: sku, quantity: quantities[sku] };
  });
}

/** A promise of a wx callback API call: resolves with `success`'s result, rejects with `fail`'s. */
function call(wx, api, options) {
  return new Promise(function (resolve, reject) {
    if (!wx || typeof wx[api] !== 'function') {
      reject(PaystreamError(0, 'wx_unavailable', 'wx.' + api + ' is not available here'));
      return;
    }
    var args = {};
    Object.keys(options || {}).forEach(function (key) { args[key] = options[key]; });
    args.success = resolve;
    args.fail = function (err) { reject(err || { errMsg: api + ':fail' }); };
    wx[api](args);
  });
}

function sleep(ms) {
  return new Promise(function (resolve) { setTimeout(resolve, ms); });
}

/**
 * @typedef {Object} ClientOptions
 * @property {string} baseUrl  the engine, e.g. `https://pay.example.com` or, in DevTools against a
 *   local engine, `http://127.0.0.1:8080` (no trailing slash needed)
 * @property {any} wx  the mini-program's `wx` (or a stand-in with the same callback APIs)
 * @property {{get(key: string): any, set(key: string, value: any): void, remove(key: string): void}} [storage]
 *   where the session token is kept; default `wx.setStorageSync`/`getStorageSync`, else memory
 * @property {number} [timeoutMs]  per-request timeout handed to `wx.request` (default 15000)
 */

/**
 * @typedef {Object} Order
 * @property {string} id
 * @property {string} out_trade_no
 * @property {'pending_payment'|'paid'|'partially_refunded'|'refunded'|'closed'|'needs_review'} status
 * @property {number} total_fen
 * @property {number} paid_fen
 * @property {number} refunded_fen
 * @property {{sku: string, name: string, quantity: number, unit_price_fen: number, line_total_fen: number}[]} items
 * @property {string} [channel]
 * @property {string} [transaction_id]
 * @property {string} created_at
 * @property {string} expires_at
 * @property {string} [paid_at]
 */

/**
 * @typedef {Object} PayResult
 * @property {'paid'|'partially_refunded'|'refunded'|'closed'|'needs_review'|'cancelled_by_user'|'timeout'} status
 *   `timeout`: WeChat took the payment request but the order did not settle in time — show
 *   "confirming payment" and look again later, never "failed"
 * @property {Order} [order]  the order as last seen (absent for `cancelled_by_user`)
 */

/**
 * A paystream client for one mini-program.
 * @param {ClientOptions} options
 */
function createClient(options) {
  if (!options || !options.baseUrl) throw new Error('createClient: baseUrl is required');
  if (!options.wx) throw new Error('createClient: wx is required');
  var wx = options.wx;
  var base = String(options.baseUrl).replace(/\/+$/, '');
  var storage = pickStorage(wx, options.storage);
  var requestTimeout = options.timeoutMs || 15000;
  /** One login at a time: concurrent 401s share it instead of each burning a wx.login code. */
  var loggingIn = null;
  /** Idempotency keys of carts whose placing has not had a definite answer yet (see placeOrder). */
  var cartKeys = {};

  /** One HTTP exchange through wx.request; resolves `{status, data}` whatever the status. */
  function send(method, path, body, headers) {
    var header = { Accept: 'application/json' };
    if (body !== undefined) header['Content-Type'] = 'application/json';
    Object.keys(headers || {}).forEach(function (key) { header[key] = headers[key]; });
    var request = { url: base + path, method: method, header: header, dataType: 'json', timeout: requestTimeout };
    // Serialised here so that wx.request never turns a body into a query string or a form.
    if (body !== undefined) request.data = JSON.stringify(body);
    return call(wx, 'request', request).then(
      function (res) {
        var data = res.data;
        if (typeof data === 'string' && data) {
          try { data = JSON.parse(data); } catch (e) { /* not JSON: left as text */ }
        }
        return { status: res.statusCode, data: data };
      },
      function (err) {
        throw PaystreamError(0, 'network_error', (err && err.errMsg) || 'the request failed', err);
      }
    );
  }

  /** The engine's error answer as a PaystreamError. */
  function toError(res) {
    var error = res.data && res.data.error;
    if (error && error.code) return PaystreamError(res.status, error.code, error.message, res.data);
    return PaystreamError(res.status, 'http_error', 'HTTP ' + res.status, res.data);
  }

  function doLogin() {
    return call(wx, 'login', {})
      .catch(function (err) {
        throw PaystreamError(0, 'wx_login_failed', (err && err.errMsg) || 'wx.login failed', err);
      })
      .then(function (res) { return send('POST', '/api/login', { code: res.code }); })
      .then(function (res) {
        if (res.status !== 200) throw toError(res);
        storage.set(TOKEN_KEY, res.data.token);
        return res.data;
      });
  }

  /**
   * `wx.login` → `POST /api/login`; keeps the token. Resolves the engine's answer
   * `{token, expires_at, user:{id, openid, unionid?, phone?}}`.
   */
  function login() {
    if (!loggingIn) {
      loggingIn = doLogin().then(
        function (session) { loggingIn = null; return session; },
        function (error) { loggingIn = null; throw error; }
      );
    }
    return loggingIn;
  }

  /**
   * The authenticated helper: JSON in and out, `Authorization: Bearer <token>`. Logs in first
   * when there is no token; on a 401 (token expired, or the engine's key changed) it logs in
   * again silently and repeats the call once — a second 401 is the caller's error.
   * Resolves the answer's JSON; rejects with a PaystreamError.
   * @param {string} method
   * @param {string} path  e.g. `/api/orders?page=2`
   * @param {any} [body]
   * @param {Object<string,string>} [headers]
   * @returns {Promise<any>}
   */
  function request(method, path, body, headers) {
    function attempt(retried) {
      var token = storage.get(TOKEN_KEY);
      var ready = token ? Promise.resolve(token) : login().then(function (s) { return s.token; });
      return ready.then(function (bearer) {
        var all = { Authorization: 'Bearer ' + bearer };
        Object.keys(headers || {}).forEach(function (key) { all[key] = headers[key]; });
        return send(method, path, body, all).then(function (res) {
          if (res.status >= 200 && res.status < 300) return res.data;
          if (res.status === 401 && !retried) {
            // Only forget the token that failed: a concurrent call may have logged in already.
            if (storage.get(TOKEN_KEY) === bearer) storage.remove(TOKEN_KEY);
            return attempt(true);
          }
          throw toError(res);
        });
      });
    }
    return attempt(false);
  }

  /** Active products: `[{sku, name, price_fen, active}]`. */
  function products() {
    return send('GET', '/api/products').then(function (res) {
      if (res.status !== 200) throw toError(res);
      return res.data.items;
    });
  }

  /**
   * Places an order (prices come from the catalogue). Resolves the Order.
   *
   * Idempotency: a retried POST (the answer was lost, the call timed out, the user tapped twice)
   * must not make a second order. Each cart — the same lines (in any order), note and card — gets one
   * `Idempotency-Key`, generated on its first attempt and reused by every attempt until one
   * gets a definite answer from the engine (the order, or a 4xx refusal); the engine answers
   * the same order to the same key. After that definite answer the key is forgotten, so buying
   * the same cart again later is a new order. Keys live in memory: a mini-program killed
   * mid-checkout at worst leaves an unpaid order that the engine closes at its expiry.
   * Pass `idempotencyKey` to manage keys yourself (e.g. one per checkout page visit).
   *
   * @param {{sku: string, quantity: number}[]} items
   * @param {{note?: string, card?: {card_id: string, code: string}, idempotencyKey?: string}} [opts]
   * @returns {Promise<Order>}
   */
  function placeOrder(items, opts) {
    opts = opts || {};
    var body = { items: canonicalLines(items) };
    if (opts.note) body.note = opts.note;
    if (opts.card) body.card = { card_id: opts.card.card_id, code: opts.card.code };
    var cart = JSON.stringify(body);
    var key = opts.idempotencyKey || cartKeys[cart] || (cartKeys[cart] = newKey());
    return request('POST', '/api/orders', body, { 'Idempotency-Key': key }).then(
      function (order) {
        if (cartKeys[cart] === key) delete cartKeys[cart];
        return order;
      },
      function (error) {
        // No answer, or the engine/WeChat in trouble: the order may exist; keep the key.
        var uncertain = error.status === 0 || error.status === 429 || error.status >= 500;
        if (!uncertain && cartKeys[cart] === key) delete cartKeys[cart];
        throw error;
      }
    );
  }

  /** One of the customer's orders. @param {string} id @returns {Promise<Order>} */
  function order(id) {
    return request('GET', '/api/orders/' + encodeURIComponent(id));
  }

  /**
   * The customer's orders, newest first.
   * @param {{page?: number, per_page?: number, status?: string}} [filter]
   * @returns {Promise<{page: number, per_page: number, total_items: number, total_pages: number, items: Order[]}>}
   */
  function orders(filter) {
    filter = filter || {};
    return request('GET', '/api/orders' + query({ page: filter.page, per_page: filter.per_page, status: filter.status }));
  }

  /** Cancels an unpaid order; resolves it closed (409 `order_already_paid` when paid). */
  function cancel(id) {
    return request('POST', '/api/orders/' + encodeURIComponent(id) + '/cancel');
  }

  /**
   * Follows the order until it settles or time is up. Transient trouble (no answer, 5xx, 429)
   * is waited out; anything else (404…) is thrown.
   */
  function follow(id, deadline, interval) {
    var last = null;
    function poll() {
      return order(id).then(
        function (now) {
          last = now;
          if (SETTLED.indexOf(now.status) >= 0) return { status: now.status, order: now };
          return next();
        },
        function (error) {
          if (error.status === 0 || error.status === 429 || error.status >= 500) return next();
          throw error;
        }
      );
    }
    function next() {
      var left = deadline - Date.now();
      if (left <= 0) return { status: 'timeout', order: last || undefined };
      return sleep(Math.min(interval, left)).then(poll);
    }
    return poll();
  }

  /**
   * Pays an order: `POST /api/orders/{id}/pay` → `wx.requestPayment` → follows the order
   * (`GET /api/orders/{id}`) until it is paid (or refunded already), closed or in review, or
   * `timeoutMs` passes.
   *
   * The `requestPayment` success callback only says the cashier closed after the user
   * confirmed; the money is proven by WeChat Pay's signed notification (or the engine's query)
   * reaching the engine, so the order's status is the only answer trusted here. A user who
   * closes the cashier (`requestPayment:fail cancel`) resolves `{status:'cancelled_by_user'}`
   * at once, without following; the order stays payable until it expires. Any other
   * requestPayment failure looks at the order once (it may have been paid nonetheless) and
   * otherwise rejects with code `request_payment_failed`.
   *
   * @param {string} orderId
   * @param {{channel?: 'wechatpay_v3'|'wechatpay_v2', timeoutMs?: number, intervalMs?: number}} [opts]
   * @returns {Promise<PayResult>}
   */
  function pay(orderId, opts) {
    opts = opts || {};
    var channel = opts.channel || 'wechatpay_v3';
    var timeoutMs = opts.timeoutMs === undefined ? 60000 : opts.timeoutMs;
    var interval = opts.intervalMs || 1000;
    var path = '/api/orders/' + encodeURIComponent(orderId) + '/pay';
    return request('POST', path, { channel: channel }).then(function (params) {
      var payment = {
        timeStamp: params.timeStamp,
        nonceStr: params.nonceStr,
        package: params.package,
        signType: params.signType,
        paySign: params.paySign,
      };
      return call(wx, 'requestPayment', payment).then(
        function () { return follow(orderId, Date.now() + timeoutMs, interval); },
        function (err) {
          var message = (err && err.errMsg) || 'requestPayment:fail';
          if (/cancel/.test(message)) return { status: 'cancelled_by_user' };
          var failed = PaystreamError(0, 'request_payment_failed', message, err);
          return order(orderId).then(
            function (now) {
              if (SETTLED.indexOf(now.status) >= 0) return { status: now.status, order: now };
              throw failed;
            },
            function () { throw failed; }
          );
        }
      );
    });
  }

  /**
   * Records the user's phone number from the `getPhoneNumber` button's event
   * (`<button open-type="getPhoneNumber" bindgetphonenumber="…">`: `e.detail.code`).
   * Resolves `{phone, country_code}`.
   * @param {string} code
   */
  function bindPhone(code) {
    return request('POST', '/api/me/phone', { code: code });
  }

  /**
   * Asks the user to accept subscribe-message templates (`wx.requestSubscribeMessage`; in a real
   * mini-program it must be called from a tap), then tells the engine which were accepted — one
   * accept allows the engine one message of that template. Resolves the accepted ids (maybe []).
   * @param {string[]} templateIds
   * @returns {Promise<string[]>}
   */
  function subscribe(templateIds) {
    return call(wx, 'requestSubscribeMessage', { tmplIds: templateIds })
      .catch(function (err) {
        throw PaystreamError(0, 'subscribe_failed', (err && err.errMsg) || 'requestSubscribeMessage failed', err);
      })
      .then(function (res) {
        var accepted = templateIds.filter(function (id) { return res && res[id] === 'accept'; });
        if (!accepted.length) return [];
        return request('POST', '/api/subscriptions', { template_ids: accepted }).then(function (answer) {
          return (answer && answer.accepted) || accepted;
        });
      });
  }

  /**
   * The signed `cardExt` for `wx.addCard({cardList: [{cardId, cardExt}]})`.
   * @param {string} cardId
   * @returns {Promise<string>}
   */
  function cardExt(cardId) {
    return request('GET', '/api/cards/' + encodeURIComponent(cardId) + '/ext').then(function (answer) {
      return answer.cardExt;
    });
  }

  /** Forgets the session token (the next call logs in again). */
  function logout() {
    storage.remove(TOKEN_KEY);
  }

  return {
    login: login,
    logout: logout,
    request: request,
    products: products,
    placeOrder: placeOrder,
    order: order,
    orders: orders,
    cancel: cancel,
    pay: pay,
    bindPhone: bindPhone,
    subscribe: subscribe,
    cardExt: cardExt,
    /** The token kept now, or null. */
    token: function () { return storage.get(TOKEN_KEY) || null; },
  };
}

exports.createClient = createClient;
exports.PaystreamError = PaystreamError;
exports.TOKEN_KEY = TOKEN_KEY;
