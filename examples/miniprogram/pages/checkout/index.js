// Checkout: subscribe messages (from the tap, as WeChat requires), place the order (one
// idempotency key per cart, so a double tap or a retry after a lost answer is the same order),
// pay, and show the order — whose status comes from the engine, never from requestPayment.
const { yuan } = require('../../utils/format.js');
const config = require('../../config.js');

const app = getApp();

Page({
  data: { lines: [], total: yuan(0), note: '', phone: '', busy: false, error: '' },

  onShow() {
    const lines = Object.keys(app.globalData.cart).map((sku) => app.globalData.cart[sku]);
    const total = lines.reduce((sum, l) => sum + l.quantity * l.price_fen, 0);
    this.setData({
      lines: lines.map((l) => ({ sku: l.sku, name: l.name, quantity: l.quantity, total: yuan(l.quantity * l.price_fen) })),
      total: yuan(total),
    });
  },

  note(e) {
    this.setData({ note: e.detail.value });
  },

  // <button open-type="getPhoneNumber">: e.detail.code is the one-time code for the engine.
  phone(e) {
    const code = config.sandbox ? app.runtime.phoneCode() : Promise.resolve(e.detail.code);
    code
      .then((c) => {
        if (!c) throw new Error('the phone number was not shared');
        return app.paystream.bindPhone(c);
      })
      .then((p) => this.setData({ phone: '+' + p.country_code + ' ' + p.phone }))
      .catch((err) => this.setData({ error: err.message }));
  },

  placeAndPay() {
    const paystream = app.paystream;
    const items = this.data.lines.map((l) => ({ sku: l.sku, quantity: l.quantity }));
    this.setData({ busy: true, error: '' });
    // Asking for subscriptions must happen in the tap handler; a refusal does not stop checkout.
    paystream
      .subscribe(config.templates)
      .catch(() => [])
      .then(() => paystream.placeOrder(items, { note: this.data.note || undefined }))
      .then((order) => {
        app.globalData.cart = {};
        // Whatever pay() says, the order page shows the engine's status (and can pay again).
        return paystream.pay(order.id).then(
          (result) => {
            if (result.status === 'cancelled_by_user') wx.showToast({ title: 'Not paid yet', icon: 'none' });
            if (result.status === 'timeout') wx.showToast({ title: 'Confirming payment…', icon: 'none' });
          },
          (err) => wx.showToast({ title: err.message, icon: 'none' })
        ).then(() => {
          this.setData({ busy: false });
          wx.redirectTo({ url: '/pages/order/detail?id=' + order.id });
        });
      })
      .catch((err) => this.setData({ busy: false, error: err.message + ' (' + err.code + ')' }));
  },
});
