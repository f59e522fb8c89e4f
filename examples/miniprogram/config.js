// Where the engine is and how this example talks to it. Edit for your setup.
module.exports = {
  // A local engine (`cargo run --release`). In DevTools tick "Does not verify valid domain names"
  // (不校验合法域名); a published mini-program needs an https domain listed in its request domains.
  baseUrl: 'http://127.0.0.1:8080',
  // While the engine runs without WeChat configuration (sandbox mode): wx.login, getPhoneNumber,
  // requestSubscribeMessage and (with `cashier`) requestPayment are played through the
  // simulator's control API (utils/sandbox.js), because real WeChat codes and payments mean
  // nothing to the simulator. Set `sandbox: null` against an engine with real WeChat credentials.
  sandbox: {
    // The simulated WeChat user (same name → same openid).
    user: 'devtools-alice',
    // true: requestPayment is a "sandbox cashier" modal that pays at the simulator. false: the
    // real wx.requestPayment (which cannot pay the simulator): mark orders paid with curl.
    cashier: true,
  },
  // Subscribe-message templates to ask for at checkout (docs/subscribe-templates.example.toml).
  templates: ['TPL-PAID', 'TPL-CLOSED'],
};
