//! APIv2's books: orders and refunds placed through `/pay/...` and `/secapi/pay/refund`, apart
//! from APIv3's (see the module documentation), and how they read as v2 fields.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use paystream_wechatpay::v2::request::beijing_time;
use paystream_wechatpay::v2::sign::SignType;

use crate::wechatpay::ids::BEIJING;
use crate::wechatpay::state::{Notification, OrderStatus, Payment, RefundStatus};

#[derive(Default)]
pub(crate) struct V2State {
    /// By `out_trade_no`.
    pub orders: HashMap<String, V2Order>,
    /// By `out_refund_no`.
    pub refunds: HashMap<String, V2Refund>,
    /// How many times each order was queried (`/pay/orderquery`), by `out_trade_no`.
    pub queries: HashMap<String, u64>,
}

impl V2State {
    pub(crate) fn order_by_transaction_id(&self, transaction_id: &str) -> Option<&V2Order> {
        self.orders.values().find(|o| {
            o.payment()
                .is_some_and(|p| p.transaction_id == transaction_id)
        })
    }

    /// Refunds of one order, oldest first.
    pub(crate) fn refunds_of(&self, out_trade_no: &str) -> Vec<&V2Refund> {
        let mut list: Vec<&V2Refund> = self
            .refunds
            .values()
            .filter(|r| r.out_trade_no == out_trade_no)
            .collect();
        list.sort_by_key(|r| r.create_time);
        list
    }
}

/// The parameters that must match when the same `out_trade_no` is ordered again (`nonce_str`,
/// `spbill_create_ip`, `sign_type` and the signature may differ between retries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct V2OrderParams {
    pub body: String,
    pub attach: Option<String>,
    pub total_fee: i64,
    pub notify_url: String,
    pub openid: String,
    pub time_expire: Option<DateTime<Utc>>,
}

pub(crate) struct V2Order {
    pub out_trade_no: String,
    pub params: V2OrderParams,
    /// The first order's: it signs the pay notification.
    pub sign_type: SignType,
    pub prepay_id: String,
    pub prepay_issued: DateTime<Utc>,
    pub status: OrderStatus,
    pub refunded: bool,
    /// The pay notification as first sent, for byte-identical re-sends.
    pub notification: Option<Notification>,
}

/// `yyyy-MM-dd HH:mm:ss` in Beijing time (refund times in v2).
pub(crate) fn beijing_datetime(t: DateTime<Utc>) -> String {
    t.with_timezone(&BEIJING)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

pub(crate) type Fields = BTreeMap<String, String>;

pub(crate) fn put(fields: &mut Fields, key: &str, value: impl ToString) {
    fields.insert(key.to_string(), value.to_string());
}

impl V2Order {
    pub(crate) fn payment(&self) -> Option<&Payment> {
        match &self.status {
            OrderStatus::Paid(p) => Some(p),
            _ => None,
        }
    }

    /// v2's `trade_state` and `trade_state_desc`.
    pub(crate) fn trade_state(&self) -> (&'static str, &'static str) {
        match (&self.status, self.refunded) {
            (OrderStatus::NotPay, _) => ("NOTPAY", "订单未支付"),
            (OrderStatus::UserPaying, _) => ("USERPAYING", "需要用户输入支付密码"),
            (OrderStatus::PayError, _) => ("PAYERROR", "支付失败，请重新下单支付"),
            (OrderStatus::Closed, _) => ("CLOSED", "订单已关闭"),
            (OrderStatus::Paid(_), false) => ("SUCCESS", "支付成功"),
            (OrderStatus::Paid(_), true) => ("REFUND", "订单发生过退款，退款详情请查询退款单"),
        }
    }

    /// What a paid order says about its payment, in the pay notification and in orderquery.
    pub(crate) fn payment_fields(&self, fields: &mut Fields) {
        let Some(p) = self.payment() else { return };
        put(fields, "openid", &self.params.openid);
        put(fields, "is_subscribe", "N");
        put(fields, "trade_type", "JSAPI");
        put(fields, "bank_type", "OTHERS");
        put(fields, "total_fee", p.total);
        put(fields, "cash_fee", p.payer_total);
        put(fields, "fee_type", "CNY");
        put(fields, "transaction_id", &p.transaction_id);
        put(fields, "time_end", beijing_time(p.success_time));
        if let Some(attach) = &self.params.attach {
            put(fields, "attach", attach);
        }
    }

    /// The business fields of an orderquery answer. Like WeChat, an unpaid order has no
    /// `transaction_id`, `time_end`, `openid`, … .
    pub(crate) fn query_fields(&self) -> Fields {
        let mut fields = Fields::new();
        let (state, desc) = self.trade_state();
        put(&mut fields, "out_trade_no", &self.out_trade_no);
        put(&mut fields, "trade_state", state);
        put(&mut fields, "trade_state_desc", desc);
        self.payment_fields(&mut fields);
        fields
    }
}

impl RefundStatus {
    /// v2's spelling: `REFUNDCLOSE` and `CHANGE` for v3's CLOSED and ABNORMAL.
    pub(crate) fn v2_str(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Closed => "REFUNDCLOSE",
            RefundStatus::Abnormal => "CHANGE",
        }
    }
}

pub(crate) struct V2Refund {
    pub refund_id: String,
    pub out_refund_no: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub notify_url: Option<String>,
    pub refund_fee: i64,
    pub total_fee: i64,
    pub cash_fee: i64,
    pub status: RefundStatus,
    pub create_time: DateTime<Utc>,
    pub success_time: Option<DateTime<Utc>>,
}

impl V2Refund {
    /// The business fields of the refund answer (the request was accepted: processing).
    pub(crate) fn answer_fields(&self) -> Fields {
        let mut f = Fields::new();
        put(&mut f, "transaction_id", &self.transaction_id);
        put(&mut f, "out_trade_no", &self.out_trade_no);
        put(&mut f, "out_refund_no", &self.out_refund_no);
        put(&mut f, "refund_id", &self.refund_id);
        put(&mut f, "refund_fee", self.refund_fee);
        put(&mut f, "settlement_refund_fee", self.refund_fee);
        put(&mut f, "total_fee", self.total_fee);
        put(&mut f, "settlement_total_fee", self.total_fee);
        put(&mut f, "fee_type", "CNY");
        put(&mut f, "cash_fee", self.cash_fee);
        put(&mut f, "cash_fee_type", "CNY");
        put(&mut f, "cash_refund_fee", self.refund_fee);
        put(&mut f, "coupon_refund_fee", 0);
        put(&mut f, "coupon_refund_count", 0);
        f
    }

    /// This refund as entry `n` of a refundquery answer (`out_refund_no_0`, …).
    pub(crate) fn query_fields(&self, n: usize, f: &mut Fields) {
        put(f, &format!("out_refund_no_{n}"), &self.out_refund_no);
        put(f, &format!("refund_id_{n}"), &self.refund_id);
        put(f, &format!("refund_channel_{n}"), "ORIGINAL");
        put(f, &format!("refund_fee_{n}"), self.refund_fee);
        put(f, &format!("settlement_refund_fee_{n}"), self.refund_fee);
        put(f, &format!("refund_status_{n}"), self.status.v2_str());
        put(
            f,
            &format!("refund_account_{n}"),
            "REFUND_SOURCE_RECHARGE_FUNDS",
        );
        put(f, &format!("refund_recv_accout_{n}"), "支付用户零钱");
        if let Some(t) = self.success_time {
            put(f, &format!("refund_success_time_{n}"), beijing_datetime(t));
        }
    }

    /// The `<root>` of a refund notification's `req_info`, before encryption.
    pub(crate) fn req_info_fields(&self) -> Fields {
        let mut f = Fields::new();
        put(&mut f, "out_trade_no", &self.out_trade_no);
        put(&mut f, "transaction_id", &self.transaction_id);
        put(&mut f, "out_refund_no", &self.out_refund_no);
        put(&mut f, "refund_id", &self.refund_id);
        put(&mut f, "total_fee", self.total_fee);
        put(&mut f, "refund_fee", self.refund_fee);
        put(&mut f, "settlement_total_fee", self.total_fee);
        put(&mut f, "settlement_refund_fee", self.refund_fee);
        put(&mut f, "refund_status", self.status.v2_str());
        if let Some(t) = self.success_time {
            put(&mut f, "success_time", beijing_datetime(t));
        }
        put(&mut f, "refund_recv_accout", "支付用户零钱");
        put(&mut f, "refund_account", "REFUND_SOURCE_RECHARGE_FUNDS");
        put(&mut f, "refund_request_source", "API");
        f
    }
}
