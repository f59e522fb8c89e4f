//! What the simulated WeChat Pay remembers, and how it renders it as WeChat's JSON.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use super::ids::wechat_time;
use super::keys::PlatformCert;
use super::{Channel, VerificationMode};

/// A prepay id is valid for two hours; ordering again with the same parameters after that issues
/// a new one.
pub(crate) const PREPAY_TTL: chrono::Duration = chrono::Duration::hours(2);

const DEFAULT_REFUND_SETTLE: Duration = Duration::from_millis(200);

pub(crate) struct PayState {
    pub mode: VerificationMode,
    /// Oldest first; the last one signs.
    pub certs: Vec<PlatformCert>,
    /// By `out_trade_no`.
    pub orders: HashMap<String, Order>,
    /// By `out_refund_no`.
    pub refunds: HashMap<String, Refund>,
    pub faults: Faults,
    pub refund_settle: Duration,
    pub deliveries: Vec<Delivery>,
    /// APIv2's own order and refund books (see the module documentation: kept apart on purpose).
    pub v2: super::v2::state::V2State,
    /// How many times each v3 order was queried (by `out_trade_no` or by transaction id), by
    /// `out_trade_no`; shown by control `GET transactions/{out_trade_no}` as `queries`.
    pub queries: HashMap<String, u64>,
    /// The trade bills: when they are made and how they disagree with the books (`bills`).
    pub bills: super::bills::BillSettings,
}

impl PayState {
    pub(crate) fn new(first_cert: PlatformCert) -> PayState {
        PayState {
            mode: VerificationMode::default(),
            certs: vec![first_cert],
            orders: HashMap::new(),
            refunds: HashMap::new(),
            faults: Faults::default(),
            refund_settle: DEFAULT_REFUND_SETTLE,
            deliveries: Vec::new(),
            v2: super::v2::state::V2State::default(),
            queries: HashMap::new(),
            bills: super::bills::BillSettings::default(),
        }
    }

    /// The certificate that signs (there is always at least one: certificates are only added).
    pub(crate) fn newest_cert(&self) -> Option<&PlatformCert> {
        self.certs.last()
    }

    pub(crate) fn order_by_transaction_id(&self, transaction_id: &str) -> Option<&Order> {
        self.orders.values().find(|o| {
            o.payment()
                .is_some_and(|p| p.transaction_id == transaction_id)
        })
    }

    /// Counts one query of a v3 order.
    pub(crate) fn count_query(&mut self, out_trade_no: &str) {
        *self.queries.entry(out_trade_no.to_string()).or_default() += 1;
    }

    /// Refunds of one order, oldest first.
    pub(crate) fn refunds_of(&self, out_trade_no: &str) -> Vec<&Refund> {
        let mut list: Vec<&Refund> = self
            .refunds
            .values()
            .filter(|r| r.out_trade_no == out_trade_no)
            .collect();
        list.sort_by_key(|r| r.create_time);
        list
    }
}

/// The parameters of a JSAPI order that must match when the same `out_trade_no` is ordered again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OrderParams {
    pub appid: String,
    pub description: String,
    pub time_expire: Option<DateTime<Utc>>,
    pub attach: Option<String>,
    pub notify_url: String,
    pub total: i64,
    pub openid: String,
}

pub(crate) struct Order {
    pub out_trade_no: String,
    pub params: OrderParams,
    pub prepay_id: String,
    pub prepay_issued: DateTime<Utc>,
    pub status: OrderStatus,
    /// Set once a refund of this order has succeeded: `trade_state` is then `REFUND`.
    pub refunded: bool,
    /// The `TRANSACTION.SUCCESS` notification as first sent, for byte-identical re-sends.
    pub notification: Option<Notification>,
}

#[derive(Clone)]
pub(crate) struct Notification {
    pub id: String,
    pub body: axum::body::Bytes,
}

pub(crate) enum OrderStatus {
    NotPay,
    /// The user is entering the password right now (control API): not paid, and not closable.
    UserPaying,
    /// The last attempt to pay failed (control API); the user may try again.
    PayError,
    Closed,
    Paid(Payment),
}

impl OrderStatus {
    /// Whether the user may still pay (and the merchant still close) the order.
    pub(crate) fn is_open(&self) -> bool {
        matches!(
            self,
            OrderStatus::NotPay | OrderStatus::UserPaying | OrderStatus::PayError
        )
    }
}

pub(crate) struct Payment {
    pub transaction_id: String,
    pub success_time: DateTime<Utc>,
    /// What WeChat recorded as paid: the order total unless the control API said otherwise.
    pub total: i64,
    pub payer_total: i64,
}

impl Order {
    pub(crate) fn payment(&self) -> Option<&Payment> {
        match &self.status {
            OrderStatus::Paid(p) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn trade_state(&self) -> (&'static str, &'static str) {
        match (&self.status, self.refunded) {
            (OrderStatus::NotPay, _) => ("NOTPAY", "订单未支付"),
            (OrderStatus::UserPaying, _) => ("USERPAYING", "用户支付中（输入密码中）"),
            (OrderStatus::PayError, _) => ("PAYERROR", "支付失败，请重新下单支付"),
            (OrderStatus::Closed, _) => ("CLOSED", "订单已关闭"),
            (OrderStatus::Paid(_), false) => ("SUCCESS", "支付成功"),
            (OrderStatus::Paid(_), true) => ("REFUND", "转入退款"),
        }
    }

    /// The transaction as `GET /v3/pay/transactions/...` and `TRANSACTION.SUCCESS` show it.
    /// Like WeChat, an unpaid order has no `transaction_id`, `trade_type`, `payer`, `bank_type`,
    /// `success_time` or `payer_total`: clients must not rely on them before payment.
    pub(crate) fn transaction_json(&self, mchid: &str) -> Value {
        let (state, desc) = self.trade_state();
        let mut v = json!({
            "appid": self.params.appid,
            "mchid": mchid,
            "out_trade_no": self.out_trade_no,
            "trade_state": state,
            "trade_state_desc": desc,
            "amount": {
                "total": self.params.total,
                "currency": "CNY",
                "payer_currency": "CNY",
            },
        });
        if let Some(attach) = &self.params.attach {
            v["attach"] = json!(attach);
        }
        if let Some(p) = self.payment() {
            v["transaction_id"] = json!(p.transaction_id);
            v["trade_type"] = json!("JSAPI");
            v["bank_type"] = json!("OTHERS");
            v["success_time"] = json!(wechat_time(p.success_time));
            v["payer"] = json!({ "openid": self.params.openid });
            v["amount"]["total"] = json!(p.total);
            v["amount"]["payer_total"] = json!(p.payer_total);
        }
        v
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefundStatus {
    Processing,
    Success,
    Closed,
    Abnormal,
}

impl RefundStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "CLOSED",
            RefundStatus::Abnormal => "ABNORMAL",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<RefundStatus> {
        [
            RefundStatus::Processing,
            RefundStatus::Success,
            RefundStatus::Closed,
            RefundStatus::Abnormal,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// SUCCESS and CLOSED never change again; ABNORMAL is not final (WeChat or the merchant can
    /// still resolve it).
    pub(crate) fn is_final(self) -> bool {
        matches!(self, RefundStatus::Success | RefundStatus::Closed)
    }

    /// Whether a refund in this state may be settled now: never once final; by the timer
    /// (`automatic`) only while PROCESSING and not held — the same for both APIs.
    pub(crate) fn may_settle(self, held: bool, automatic: bool) -> bool {
        !self.is_final() && !(automatic && (held || self != RefundStatus::Processing))
    }
}

pub(crate) struct Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub notify_url: Option<String>,
    pub refund: i64,
    pub total: i64,
    pub payer_total: i64,
    pub status: RefundStatus,
    pub create_time: DateTime<Utc>,
    pub success_time: Option<DateTime<Utc>>,
}

impl Refund {
    /// As answered by `POST`/`GET /v3/refund/domestic/refunds`.
    pub(crate) fn api_json(&self) -> Value {
        let mut v = json!({
            "refund_id": self.refund_id,
            "out_refund_no": self.out_refund_no,
            "transaction_id": self.transaction_id,
            "out_trade_no": self.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "支付用户零钱",
            "create_time": wechat_time(self.create_time),
            "status": self.status.as_str(),
            "funds_account": "AVAILABLE",
            "amount": {
                "total": self.total,
                "refund": self.refund,
                "payer_total": self.payer_total,
                "payer_refund": self.refund,
                "settlement_refund": self.refund,
                "settlement_total": self.total,
                "discount_refund": 0,
                "currency": "CNY",
            },
            "promotion_detail": [],
        });
        if let Some(t) = self.success_time {
            v["success_time"] = json!(wechat_time(t));
        }
        v
    }

    /// The decrypted `resource` of a `REFUND.*` notification (note `refund_status`, not `status`).
    pub(crate) fn notify_json(&self, mchid: &str) -> Value {
        let mut v = json!({
            "mchid": mchid,
            "out_trade_no": self.out_trade_no,
            "transaction_id": self.transaction_id,
            "out_refund_no": self.out_refund_no,
            "refund_id": self.refund_id,
            "refund_status": self.status.as_str(),
            "user_received_account": "支付用户零钱",
            "amount": {
                "total": self.total,
                "refund": self.refund,
                "payer_total": self.payer_total,
                "payer_refund": self.refund,
            },
        });
        if let Some(t) = self.success_time {
            v["success_time"] = json!(wechat_time(t));
        }
        v
    }
}

/// Trouble injected through the control API.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Faults {
    pub fail_next: u32,
    pub status: u16,
    pub code: String,
    pub after_processing: bool,
    pub unsigned_next: u32,
    pub path_contains: Option<String>,
    pub delay_ms: u64,
    pub hold_refunds: bool,
    /// For this long after a payment, refunds of it answer 404 `RESOURCE_NOT_EXISTS` (WeChat's
    /// refund system learns of payments late).
    pub refund_lag_ms: u64,
    /// The share (0..=1) of answers and notifications signed with a `WECHATPAY/SIGNTEST/` probe
    /// instead of a real signature, as WeChat does to check merchants verify.
    pub probe_share: f64,
    /// Error answers (4xx) go out unsigned, as WeChat leaves some.
    pub unsigned_errors: bool,
    /// The merchant's available balance in fen for refunds; `None` = unlimited. A refund beyond
    /// it answers 403 `NOT_ENOUGH` (v2: `NOTENOUGH`).
    pub balance_fen: Option<i64>,
    /// APIv2 only: sign pay notifications with this type (`MD5`/`HMAC-SHA256`) instead of the
    /// order's, as WeChat has been seen doing (MD5 for an HMAC-SHA256 order).
    pub v2_notify_sign_type: Option<String>,
    /// APIv2 only: pay notifications carry a `sign_type` field (WeChat's usually do not).
    pub v2_notify_with_sign_type: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_next: 0,
            status: 500,
            code: "SYSTEM_ERROR".to_string(),
            after_processing: false,
            unsigned_next: 0,
            path_contains: None,
            delay_ms: 0,
            hold_refunds: false,
            refund_lag_ms: 0,
            probe_share: 0.0,
            unsigned_errors: false,
            balance_fen: None,
            v2_notify_sign_type: None,
            v2_notify_with_sign_type: false,
        }
    }
}

impl Faults {
    fn applies_to(&self, path: &str) -> bool {
        self.path_contains
            .as_deref()
            .is_none_or(|needle| path.contains(needle))
    }

    /// Consumes one `fail_next` if it applies to this call: `(status, code, after_processing)`.
    pub(crate) fn take_failure(&mut self, path: &str) -> Option<(u16, String, bool)> {
        if self.fail_next == 0 || !self.applies_to(path) {
            return None;
        }
        self.fail_next -= 1;
        Some((self.status, self.code.clone(), self.after_processing))
    }

    /// Whether this answer or notification carries a probe signature instead of a real one.
    pub(crate) fn probe_now(&self) -> bool {
        self.probe_share > 0.0 && rand::random::<f64>() < self.probe_share
    }

    /// Consumes one `unsigned_next` if it applies to this call.
    pub(crate) fn take_unsigned(&mut self, path: &str) -> bool {
        if self.unsigned_next == 0 || !self.applies_to(path) {
            return false;
        }
        self.unsigned_next -= 1;
        true
    }
}

/// One delivery of one notification (duplicates have their own), as the control API shows it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Delivery {
    /// `wechatpay_v3` or `wechatpay_v2`.
    pub channel: Channel,
    /// v3: the notification's `id`; v2 notifications have none, the sandbox names them.
    pub notification_id: String,
    pub event_type: String,
    pub url: String,
    pub out_trade_no: String,
    pub out_refund_no: Option<String>,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered: bool,
    pub gave_up: bool,
}
