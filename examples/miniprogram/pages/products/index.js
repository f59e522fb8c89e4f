// The catalogue and the cart (getApp().globalData.cart), plus the customer's recent orders.
const { yuan, statusText } = require('../../utils/format.js');

const app = getApp();

Page({
  data: { products: [], orders: [], total: yuan(0), count: 0, error: '' },

  onShow() {
    this.load();
  },

  onPullDownRefresh() {
    this.load().then(() => wx.stopPullDownRefresh());
  },

  load() {
    const paystream = app.paystream;
    return Promise.all([paystream.products(), paystream.orders({ per_page: 5 })])
      .then(([products, page]) => {
        this.products = products;
        this.setData({
          error: '',
          orders: page.items.map((o) => ({ id: o.id, total: yuan(o.total_fen), status: statusText(o.status) })),
        });
        this.render();
      })
      .catch((e) => this.setData({ error: e.message + ' (' + e.code + ')' }));
  },

  render() {
    const cart = app.globalData.cart;
    let total = 0;
    let count = 0;
    const products = this.products.map((p) => {
      const quantity = cart[p.sku] ? cart[p.sku].quantity : 0;
      total += quantity * p.price_fen;
      count += quantity;
      return { sku: p.sku, name: p.name, price: yuan(p.price_fen), quantity };
    });
    this.setData({ products, total: yuan(total), count });
  },

  change(e) {
    const { sku, step } = e.currentTarget.dataset;
    const product = this.products.find((p) => p.sku === sku);
    const cart = app.globalData.cart;
    const quantity = Math.max(0, (cart[sku] ? cart[sku].quantity : 0) + step);
    if (quantity) cart[sku] = { sku, name: product.name, price_fen: product.price_fen, quantity };
    else delete cart[sku];
    this.render();
  },

  checkout() {
    wx.navigateTo({ url: '/pages/checkout/index' });
  },

  open(e) {
    wx.navigateTo({ url: '/pages/order/detail?id=' + e.currentTarget.dataset.id });
  },
});
