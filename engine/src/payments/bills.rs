//! A provider's own record of a day's money (WeChat Pay's trade bill), as the engine needs it for
//! reconciliation: which payments and refunds the provider has, for how much. How the bill is
//! fetched, checked and parsed (CSV, backquotes, yuan, SHA1, gzip) is the adapter's business; it
//! hands the engine these types, amounts already in fen and checked against the bill's summary.

use chrono::{DateTime, NaiveDate, Utc};

use crate::money::Fen;

/// One Beijing day's bill.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TradeBill {
    /// The Beijing day the bill covers.
    pub date: NaiveDate,
    /// Every successful payment of the day (bill rows in state `SUCCESS`; a payment refunded
    /// later still appears here, with its refund as a separate line below).
    pub payments: Vec<BillPayment>,
    /// Every refund line of the day (bill rows in state `REFUND`).
    pub refunds: Vec<BillRefund>,
}

/// A payment as the provider's bill has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillPayment {
    pub out_trade_no: String,
    pub transaction_id: String,
    /// What the order was for at the provider (the bill's order amount, 订单金额), the same
    /// figure a notify or query reports as `amount.total`.
    pub amount_fen: Fen,
    /// The bill's trade time (交易时间).
    pub paid_at: DateTime<Utc>,
}

/// A refund as the provider's bill has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillRefund {
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    /// The provider's refund id (微信退款单号).
    pub refund_id: String,
    /// The refund asked for (申请退款金额), comparable with our `RefundRequested` amount.
    pub amount_fen: Fen,
    pub state: BillRefundState,
    /// The bill's trade time of the refund line.
    pub at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BillRefundState {
    Succeeded,
    Processing,
    Failed,
}

/// The answer to "the bill of that day, please".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BillOutcome {
    Bill(TradeBill),
    /// The provider keeps no bill for the day: nothing was paid or refunded (WeChat:
    /// `NO_STATEMENT_EXIST` / `No Bill Exist`). An answer, not an error.
    NoBill,
    /// The bill is not made yet (WeChat makes yesterday's after 10:00 Beijing time); ask later.
    NotReady,
}
