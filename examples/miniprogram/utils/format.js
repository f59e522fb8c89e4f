// Money is integer fen (分) in the API; people read yuan.
function yuan(fen) {
  return '¥' + (Number(fen || 0) / 100).toFixed(2);
}

const STATUS = {
  pending_payment: 'Waiting for payment',
  paid: 'Paid',
  partially_refunded: 'Partly refunded',
  refunded: 'Refunded',
  closed: 'Closed',
  needs_review: 'Being checked by the shop',
};

function statusText(status) {
  return STATUS[status] || status;
}

module.exports = { yuan, statusText };
