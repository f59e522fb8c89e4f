// One paystream client for the whole mini-program (getApp().paystream).
const { createClient } = require('./utils/paystream.js');
const { sandboxWx } = require('./utils/sandbox.js');
const config = require('./config.js');

App({
  onLaunch() {
    const runtime = config.sandbox ? sandboxWx(wx, config.baseUrl, config.sandbox) : wx;
    this.paystream = createClient({ baseUrl: config.baseUrl, wx: runtime });
    this.runtime = runtime;
  },
  globalData: {
    // The cart: sku → {sku, name, price_fen, quantity}; filled on the product list.
    cart: {},
  },
});
