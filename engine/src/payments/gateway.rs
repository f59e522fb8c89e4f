//! The port to a payment provider. `adapters/wechatpay` implements it for WeChat Pay; the engine
//! decides what to call and records what comes back, never knowing HTTP, JSON or signatures.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::bills::BillOutcome;
use crate::money::Fen;
use crate::order::PayChannel;

/// A JSAPI order at the provider for one of our orders.
#[derive(Clone, Debug)]
pub struct PrepayRequest {
    pub out_trade_no: String,
    pub description: String,
    pub total_fen: Fen,
    pub openid: String,
    pub time_expire: DateTime<Utc>,
    /// The customer's address as the request reached us (APIv2's `spbill_create_ip`, which
    /// WeChat uses for risk control).
    pub payer_ip: std::net::IpAddr,
}

/// Exactly what `wx.requestPayment` takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PayParams {
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    #[serde(rename = "nonceStr")]
    pub nonce_str: String,
    pub package: String,
    #[serde(rename = "signType")]
    pub sign_type: String,
    #[serde(rename = "paySign")]
    pub pay_sign: String,
}

/// A successful payment as the provider reports it (query or notify).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaidTransaction {
    pub transaction_id: String,
    /// What the order was for at the provider (`amount.total`).
    pub amount_fen: Fen,
    pub paid_at: DateTime<Utc>,
}

/// The state of a payment at the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TradeState {
    /// Paid (`SUCCESS`, or `REFUND`: paid and since refunded in part or whole).
    Paid(PaidTransaction),
    /// Not paid (yet): `NOTPAY`.
    Unpaid,
    /// The customer is paying right now (`USERPAYING`: entering the password): neither paid nor
    /// closable; ask again shortly.
    UserPaying,
    /// The last attempt to pay failed (`PAYERROR`, e.g. the bank refused); the customer may try
    /// again, so the order stays payable.
    PaymentFailed { reason: String },
    /// `CLOSED` or `REVOKED`: can no longer be paid.
    Closed,
    /// The provider has never heard of it.
    NotFound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseOutcome {
    /// Closed now, or already closed (or never ordered) at the provider.
    Closed,
    /// The order was paid meanwhile: query it and record the payment instead.
    AlreadyPaid,
    /// The customer is paying right now: not closed; try again later.
    UserPaying,
}

#[derive(Clone, Debug)]
pub struct RefundCall {
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub amount_fen: Fen,
    /// The order's total, which the provider checks.
    pub total_fen: Fen,
    /// When the payment was made: a provider may not know a payment for a short while after it
    /// (WeChat's refund system lags), which is "try again" then and "no such payment" later.
    pub paid_at: DateTime<Utc>,
    pub reason: Option<String>,
}

/// The state of a refund at the provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundState {
    Succeeded {
        refund_id: Option<String>,
        at: DateTime<Utc>,
    },
    /// `PROCESSING`, or `ABNORMAL` (not final: needs a merchant's action, keep asking).
    Processing {
        refund_id: Option<String>,
    },
    /// `CLOSED`: final failure.
    Failed {
        reason: String,
    },
    NotFound,
}

/// A verified, decrypted notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    Payment {
        mchid: String,
        appid: String,
        out_trade_no: String,
        /// `None` when the notice reports something other than success.
        paid: Option<PaidTransaction>,
    },
    Refund {
        mchid: String,
        out_trade_no: String,
        out_refund_no: String,
        /// What the notice says was refunded, when it says (checked against our record).
        amount_fen: Option<Fen>,
        state: RefundState,
    },
    /// Verified, but of a kind the engine does not act on.
    Ignored { event_type: String },
}

/// Why a call to the provider failed. Only `Rejected` is a definite answer; anything else
/// means the outcome is unknown and the same call (same out_trade_no / out_refund_no) must be
/// retried or queried later.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("rejected by the payment provider: {code}: {message}")]
    Rejected { code: String, message: String },
    #[error("payment provider unavailable: {0}")]
    Unavailable(String),
    #[error("payment provider answer failed verification: {0}")]
    Unverified(String),
}

/// Why a notification was not accepted. The provider will send it again.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notification failed verification: {0}")]
    Unverified(String),
    #[error("malformed notification: {0}")]
    Malformed(String),
}

/// A notification as it arrived, before anything in it is believed: the raw body bytes (what
/// signatures are made over) and every header. Which headers matter is the provider's business.
#[derive(Clone, Debug, Default)]
pub struct RawNotice<'a> {
    /// (name, value), borrowed from the request; names compare without regard to case.
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a [u8],
}

impl<'a> RawNotice<'a> {
    /// The first value of the header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

#[async_trait]
pub trait PayGateway: Send + Sync {
    fn channel(&self) -> PayChannel;
    fn mchid(&self) -> &str;
    fn appid(&self) -> &str;
    /// How long a prepay id stays usable at the provider.
    fn prepay_lifetime(&self) -> chrono::Duration;
    async fn prepay(&self, request: &PrepayRequest) -> Result<String, GatewayError>;
    fn pay_params(&self, prepay_id: &str) -> Result<PayParams, GatewayError>;
    async fn query(&self, out_trade_no: &str) -> Result<TradeState, GatewayError>;
    async fn close(&self, out_trade_no: &str) -> Result<CloseOutcome, GatewayError>;
    async fn refund(&self, call: &RefundCall) -> Result<RefundState, GatewayError>;
    async fn query_refund(&self, out_refund_no: &str) -> Result<RefundState, GatewayError>;
    /// Verifies and decrypts a notification as it arrived.
    async fn verify_notify(&self, notice: &RawNotice<'_>) -> Result<Notice, NotifyError>;
    /// The provider's trade bill (payments and refunds) of one Beijing day, fetched and
    /// checked (hash, summary against the rows).
    async fn trade_bill(&self, date: NaiveDate) -> Result<BillOutcome, GatewayError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_headers_are_found_in_any_case() {
        let raw = RawNotice {
            headers: vec![
                ("wechatpay-serial", "ABC"),
                ("Content-Type", "application/json"),
            ],
            body: b"{}",
        };
        assert_eq!(raw.header("Wechatpay-Serial"), Some("ABC"));
        assert_eq!(raw.header("content-type"), Some("application/json"));
        assert_eq!(raw.header("Wechatpay-Nonce"), None);
    }
}
