// A stand-in for the mini-program's `wx`, backed by a paystream engine in sandbox mode and its
// WeChat simulator's control API (`{base}/sandbox/control/...`). It plays WeChat's part the way
// the real runtime does, and checks what the client hands it as WeChat would:
//   wx.login                   → a code from POST /sandbox/control/login-code {"user"}
//   wx.request                 → fetch (JSON), with the runtime's {statusCode, data, header}
//   wx.requestPayment          → checks the five parameters (shape, time, the prepay id belongs to
//                                an order WeChat Pay has, the paySign verifies with the merchant's
//                                key), then "pays" with POST /sandbox/control/wechatpay/pay — or
//                                the user closes the cashier (`requestPayment:fail cancel`)
//   wx.requestSubscribeMessage → the user accepts (POST /sandbox/control/subscribe-accept) or rejects
//   wx.*StorageSync            → a Map
// plus `phoneCode()`: the `e.detail.code` of a getPhoneNumber button (/sandbox/control/phone-code).
// Not a test file: test/*.test.mjs import it.
import { createHash, createHmac, createPublicKey, verify } from 'node:crypto';

/**
 * @param {string} base  the engine, e.g. http://127.0.0.1:8080
 * @param {{user: string}} options  the simulated WeChat user (same name → same openid)
 */
export function sandboxWx(base, { user }) {
  const control = `${base}/sandbox/control`;
  const storage = new Map();
  /** Every wx.request: {method, path, status} (status 0: no answer reached the caller). */
  const requests = [];
  /** How many times each wx API was called. */
  const calls = { login: 0, request: 0, requestPayment: 0, requestSubscribeMessage: 0 };
  /** out_trade_no of every order seen passing through wx.request (WeChat knows its prepay ids). */
  const tradeNos = new Set();

  const wx = {
    calls,
    requests,
    storage,
    /** What the user does at the next cashier: 'pay', 'cancel', or 'pay_without_notify'
     *  (paid at WeChat, but the notification to the engine is lost). */
    nextPayment: 'pay',
    /** Per template id: 'accept' (default) or 'reject'. */
    subscribeChoices: {},
    /** When set, the next wx.request whose path matches is sent, but its answer is lost
     *  (`request:fail timeout`), as on a flaky mobile network. */
    loseAnswerOf: null,
    /** Problems requestPayment found in the parameters it was given. */
    paymentProblems: [],

    getStorageSync: (key) => (storage.has(key) ? storage.get(key) : ''),
    setStorageSync: (key, value) => void storage.set(key, value),
    removeStorageSync: (key) => void storage.delete(key),

    login({ success, fail }) {
      calls.login += 1;
      post(`${control}/login-code`, { user }).then(
        (body) => success({ code: body.code, errMsg: 'login:ok' }),
        (e) => fail({ errMsg: `login:fail ${e.message}` }),
      );
    },

    request({ url, method = 'GET', data, header = {}, success, fail }) {
      calls.request += 1;
      const path = url.slice(base.length);
      const entry = { method, path, status: 0 };
      requests.push(entry);
      const lose = wx.loseAnswerOf && wx.loseAnswerOf.test(path);
      if (lose) wx.loseAnswerOf = null;
      const body = data === undefined ? undefined : typeof data === 'string' ? data : JSON.stringify(data);
      fetch(url, { method, headers: header, body })
        .then(async (res) => {
          const text = await res.text();
          let parsed = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // dataType json: a non-JSON body stays text, as in the runtime
          }
          remember(parsed);
          if (lose) return fail({ errMsg: 'request:fail timeout' });
          entry.status = res.status;
          success({ statusCode: res.status, data: parsed, header: Object.fromEntries(res.headers), errMsg: 'request:ok' });
        })
        .catch((e) => fail({ errMsg: `request:fail ${e.message}` }));
    },

    requestPayment(params) {
      calls.requestPayment += 1;
      const { success, fail } = params;
      checkPayment(params)
        .then(async ({ outTradeNo, channel }) => {
          if (wx.nextPayment === 'cancel') return fail({ errMsg: 'requestPayment:fail cancel' });
          await post(`${control}/wechatpay/pay`, {
            out_trade_no: outTradeNo,
            channel,
            notify: wx.nextPayment !== 'pay_without_notify',
          });
          success({ errMsg: 'requestPayment:ok' });
        })
        .catch((e) => {
          wx.paymentProblems.push(e.message);
          fail({ errMsg: `requestPayment:fail ${e.message}` });
        })
        .finally(() => {
          wx.nextPayment = 'pay';
        });
    },

    requestSubscribeMessage({ tmplIds, success, fail }) {
      calls.requestSubscribeMessage += 1;
      if (!Array.isArray(tmplIds) || tmplIds.length === 0 || tmplIds.length > 3) {
        return fail({ errMsg: 'requestSubscribeMessage:fail invalid tmplIds', errCode: 10001 });
      }
      const answer = { errMsg: 'requestSubscribeMessage:ok' };
      for (const id of tmplIds) answer[id] = wx.subscribeChoices[id] || 'accept';
      const accepted = tmplIds.filter((id) => answer[id] === 'accept');
      const recorded = accepted.length
        ? post(`${control}/subscribe-accept`, { user, template_ids: accepted })
        : Promise.resolve();
      recorded.then(() => success(answer), (e) => fail({ errMsg: `requestSubscribeMessage:fail ${e.message}` }));
    },

    /** The `e.detail.code` a getPhoneNumber button gives, for this phone number. */
    async phoneCode(phone) {
      return (await post(`${control}/phone-code`, { phone })).code;
    },
  };

  function remember(body) {
    // An order, or a page of them (an order's own `items` are its lines: harmless here).
    const items = [body, ...(body && Array.isArray(body.items) ? body.items : [])];
    for (const item of items) {
      if (item && typeof item.out_trade_no === 'string') tradeNos.add(item.out_trade_no);
    }
  }

  /** As WeChat checks wx.requestPayment's parameters; resolves the order they pay. */
  async function checkPayment(params) {
    const { timeStamp, nonceStr, package: pkg, signType, paySign } = params;
    if (typeof timeStamp !== 'string' || !/^\d{10}$/.test(timeStamp)) {
      throw new Error(`timeStamp must be Unix seconds as a string, got ${JSON.stringify(timeStamp)}`);
    }
    if (Math.abs(Number(timeStamp) - Date.now() / 1000) > 300) throw new Error(`timeStamp ${timeStamp} is not now`);
    if (typeof nonceStr !== 'string' || !/^[0-9A-Za-z]{1,32}$/.test(nonceStr)) {
      throw new Error(`nonceStr must be 1-32 letters and digits, got ${JSON.stringify(nonceStr)}`);
    }
    const prepay = /^prepay_id=(\S+)$/.exec(typeof pkg === 'string' ? pkg : '');
    if (!prepay) throw new Error(`package must be prepay_id=…, got ${JSON.stringify(pkg)}`);
    if (!['RSA', 'MD5', 'HMAC-SHA256'].includes(signType)) throw new Error(`signType ${JSON.stringify(signType)}`);
    if (typeof paySign !== 'string' || !paySign) throw new Error('paySign is missing');

    const channel = signType === 'RSA' ? 'wechatpay_v3' : 'wechatpay_v2';
    let found = null;
    for (const outTradeNo of tradeNos) {
      const res = await fetch(`${control}/wechatpay/transactions/${encodeURIComponent(outTradeNo)}?channel=${channel}`);
      if (!res.ok) continue;
      const tx = await res.json();
      if (tx.prepay_id === prepay[1]) {
        found = { outTradeNo, tx };
        break;
      }
    }
    if (!found) throw new Error(`WeChat Pay (${channel}) has no order with prepay_id ${prepay[1]}`);

    const merchant = await (await fetch(`${control}/wechatpay/merchant`)).json();
    const appid = (found.tx.transaction && found.tx.transaction.appid) || merchant.appid;
    if (signType === 'RSA') {
      const message = `${appid}\n${timeStamp}\n${nonceStr}\n${pkg}\n`;
      const key = createPublicKey(merchant.apiv2_client_cert_pem);
      if (!verify('RSA-SHA256', Buffer.from(message), key, Buffer.from(paySign, 'base64'))) {
        throw new Error('paySign does not verify with the merchant certificate (APIv3)');
      }
    } else {
      const fields = { appId: appid, nonceStr, package: pkg, signType, timeStamp };
      const text = Object.keys(fields).sort().map((k) => `${k}=${fields[k]}`).join('&') + `&key=${merchant.apiv2_key}`;
      const want = (signType === 'MD5'
        ? createHash('md5').update(text)
        : createHmac('sha256', merchant.apiv2_key).update(text)
      ).digest('hex').toUpperCase();
      if (paySign !== want) throw new Error(`paySign does not verify with the APIv2 key (${signType})`);
    }
    return { outTradeNo: found.outTradeNo, channel };
  }

  return wx;
}

/** POST JSON that must succeed; the answer's JSON. */
export async function post(url, body, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${url}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** The engine under test, from the environment `cargo test --test miniprogram_client` sets. */
export function engine() {
  const base = process.env.PAYSTREAM_BASE_URL;
  if (!base) {
    throw new Error('set PAYSTREAM_BASE_URL to an engine in sandbox mode (cargo test --test miniprogram_client does)');
  }
  return base.replace(/\/+$/, '');
}

/** A user name no other test (or earlier run against the same engine) uses. */
export function uniqueUser(name) {
  return `${name}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

/** The catalogue the tests buy from, put there through the admin API (created or updated). */
export const PRODUCTS = [
  { sku: 'mp-tea', name: 'Green tea', price_fen: 1250, active: true },
  { sku: 'mp-cake', name: 'Moon cake', price_fen: 800, active: true },
];

export async function ensureProducts(base) {
  const username = process.env.PAYSTREAM_ADMIN_USER;
  const password = process.env.PAYSTREAM_ADMIN_PASSWORD;
  if (!username || !password) throw new Error('set PAYSTREAM_ADMIN_USER and PAYSTREAM_ADMIN_PASSWORD (a staff admin)');
  const { token } = await post(`${base}/admin/login`, { username, password });
  const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  for (const product of PRODUCTS) {
    let res = await fetch(`${base}/admin/products`, { method: 'POST', headers: auth, body: JSON.stringify(product) });
    if (res.status === 409) {
      // Another test file got there first (or an earlier run): make it what we need.
      res = await fetch(`${base}/admin/products/${product.sku}`, { method: 'PUT', headers: auth, body: JSON.stringify(product) });
    }
    if (!res.ok) throw new Error(`product ${product.sku}: ${res.status} ${await res.text()}`);
  }
}
