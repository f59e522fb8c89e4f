// One order (also the page subscribe messages open: pages/order/detail?id=…). While it waits for
// payment the page looks again every few seconds: the notification from WeChat Pay reaches the
// engine, not the phone.
const { yuan, statusText } = require('../../utils/format.js');

const app = getApp();
const REFRESH_MS = 3000;

Page({
  data: { order: null, lines: [], status: '', total: '', paid: '', refunded: '', busy: false, error: '' },

  onLoad(options) {
    this.id = options.id;
  },

  onShow() {
    this.load();
  },

  onHide() {
    clearTimeout(this.timer);
  },

  onUnload() {
    clearTimeout(this.timer);
  },

  onPullDownRefresh() {
    this.load().then(() => wx.stopPullDownRefresh());
  },

  load() {
    clearTimeout(this.timer);
    return app.paystream
      .order(this.id)
      .then((order) => {
        this.show(order);
        if (order.status === 'pending_payment') this.timer = setTimeout(() => this.load(), REFRESH_MS);
      })
      .catch((e) => this.setData({ error: e.message + ' (' + e.code + ')' }));
  },

  show(order) {
    this.setData({
      error: '',
      order,
      status: statusText(order.status),
      total: yuan(order.total_fen),
      paid: yuan(order.paid_fen),
      refunded: yuan(order.refunded_fen),
      lines: order.items.map((l) => ({ sku: l.sku, name: l.name, quantity: l.quantity, total: yuan(l.line_total_fen) })),
    });
  },

  pay() {
    this.setData({ busy: true, error: '' });
    app.paystream
      .pay(this.id)
      .then((result) => {
        if (result.status === 'cancelled_by_user') wx.showToast({ title: 'Not paid yet', icon: 'none' });
        if (result.status === 'timeout') wx.showToast({ title: 'Confirming payment…', icon: 'none' });
      })
      .catch((e) => this.setData({ error: e.message + ' (' + e.code + ')' }))
      .then(() => {
        this.setData({ busy: false });
        return this.load();
      });
  },

  cancel() {
    wx.showModal({
      title: 'Cancel this order?',
      success: (choice) => {
        if (!choice.confirm) return;
        app.paystream
          .cancel(this.id)
          .then((order) => this.show(order))
          .catch((e) => this.setData({ error: e.message + ' (' + e.code + ')' }));
      },
    });
  },
});
