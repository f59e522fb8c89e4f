// Sandbox mode only: a `wx` for the paystream client whose WeChat parts are played through the
// engine's WeChat simulator (its control API under {baseUrl}/sandbox/control), because codes and
// payments of the real WeChat (what DevTools hands out) mean nothing to the simulator:
//   login                   → a code for the simulated user from /sandbox/control/login-code
//   requestSubscribeMessage → a modal; "accept" is recorded at the simulator (subscribe-accept)
//   requestPayment          → with `cashier`, a modal "sandbox cashier": "Pay" marks the order paid
//                             at the simulated WeChat Pay (/sandbox/control/wechatpay/pay), which
//                             notifies the engine as WeChat Pay would; "Cancel" is the user
//                             closing the cashier. Without, the real one (it cannot pay the simulator)
//   request, storage        → the real wx
// plus phoneCode(e): the code to send for a getPhoneNumber button tap.
// Never ship this: an engine with real WeChat credentials has no /sandbox and refuses the mix.

function sandboxWx(wx, baseUrl, options) {
  const user = options.user;
  const control = baseUrl + '/sandbox/control';
  // out_trade_no of each order id seen in the engine's answers, and the order being paid: the
  // simulated cashier needs the out_trade_no, which requestPayment's parameters do not carry.
  const tradeNos = {};
  let paying = null;

  function post(path, body) {
    return new Promise((resolve, reject) => {
      wx.request({
        url: control + path,
        method: 'POST',
        data: body,
        header: { 'content-type': 'application/json' },
        success: (res) => (res.statusCode === 200 ? resolve(res.data) : reject(new Error(JSON.stringify(res.data)))),
        fail: (err) => reject(new Error(err.errMsg)),
      });
    });
  }

  function remember(data) {
    const orders = [data].concat(data && Array.isArray(data.items) ? data.items : []);
    orders.forEach((o) => {
      if (o && o.id && o.out_trade_no) tradeNos[o.id] = { outTradeNo: o.out_trade_no, channel: o.channel };
    });
  }

  return {
    getStorageSync: (key) => wx.getStorageSync(key),
    setStorageSync: (key, value) => wx.setStorageSync(key, value),
    removeStorageSync: (key) => wx.removeStorageSync(key),

    request(options) {
      const pay = /\/api\/orders\/([^/]+)\/pay$/.exec(options.url);
      if (pay) paying = { id: decodeURIComponent(pay[1]), channel: JSON.parse(options.data || '{}').channel };
      const success = options.success;
      wx.request(Object.assign({}, options, {
        success(res) {
          remember(res.data);
          success(res);
        },
      }));
    },

    login({ success, fail }) {
      post('/login-code', { user }).then((body) => success({ code: body.code, errMsg: 'login:ok' }), (e) => fail({ errMsg: 'login:fail ' + e.message }));
    },

    requestSubscribeMessage({ tmplIds, success, fail }) {
      wx.showModal({
        title: 'Sandbox: subscribe messages',
        content: 'Allow this mini-program to send ' + tmplIds.join(', ') + '?',
        confirmText: 'Allow',
        cancelText: 'Reject',
        success(choice) {
          const answer = { errMsg: 'requestSubscribeMessage:ok' };
          tmplIds.forEach((id) => { answer[id] = choice.confirm ? 'accept' : 'reject'; });
          if (!choice.confirm) return success(answer);
          post('/subscribe-accept', { user, template_ids: tmplIds }).then(() => success(answer), (e) => fail({ errMsg: 'requestSubscribeMessage:fail ' + e.message }));
        },
        fail,
      });
    },

    requestPayment(params) {
      if (!options.cashier) return wx.requestPayment(params);
      const { package: pkg, success, fail } = params;
      const order = paying && tradeNos[paying.id];
      if (!order || !/^prepay_id=/.test(pkg)) return fail({ errMsg: 'requestPayment:fail sandbox does not know this order' });
      wx.showModal({
        title: 'Sandbox cashier',
        content: 'Simulated WeChat Pay: pay order ' + order.outTradeNo + '?',
        confirmText: 'Pay',
        cancelText: 'Cancel',
        success(choice) {
          if (!choice.confirm) return fail({ errMsg: 'requestPayment:fail cancel' });
          post('/wechatpay/pay', { out_trade_no: order.outTradeNo, channel: paying.channel || 'wechatpay_v3' })
            .then(() => success({ errMsg: 'requestPayment:ok' }), (e) => fail({ errMsg: 'requestPayment:fail ' + e.message }));
        },
        fail,
      });
    },

    /** The getPhoneNumber code: the simulator's in sandbox mode (DevTools' real one would be refused). */
    phoneCode() {
      return post('/phone-code', { phone: '13800138000' }).then((body) => body.code);
    },
  };
}

module.exports = { sandboxWx };
