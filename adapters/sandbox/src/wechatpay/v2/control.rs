//! The control API's actions on APIv2's books (`"channel": "wechatpay_v2"`); the endpoints and
//! their JSON are `wechatpay::control`'s.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{json, Value};

use super::notify;
use super::refunds::{settle, SettleError};
use super::state::Fields;
use crate::wechatpay::ids::transaction_id;
use crate::wechatpay::state::{OrderStatus, Payment, RefundStatus};
use crate::wechatpay::Pay;

pub(crate) type ControlResult = Result<Value, (StatusCode, String)>;

fn no_order() -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        "no APIv2 order with that out_trade_no".to_string(),
    )
}

fn conflict(message: &str) -> (StatusCode, String) {
    (StatusCode::CONFLICT, message.to_string())
}

fn fields_json(fields: &Fields) -> Value {
    json!(fields)
}

/// The user pays: the order is SUCCESS now and the pay notification goes out (after `delay`,
/// `1 + duplicates` times concurrently) unless `send` is false (a lost notification).
pub(crate) fn pay(
    pay: &Pay,
    out_trade_no: &str,
    amount_fen: Option<i64>,
    delay: Duration,
    duplicates: usize,
    send: bool,
) -> ControlResult {
    let now = Utc::now();
    let (notification, url, transaction) = {
        let mut guard = pay.lock();
        let state = &mut *guard;
        let order = state.v2.orders.get_mut(out_trade_no).ok_or_else(no_order)?;
        match order.status {
            OrderStatus::NotPay | OrderStatus::UserPaying | OrderStatus::PayError => {}
            OrderStatus::Paid(_) => return Err(conflict("the order is already paid")),
            OrderStatus::Closed => return Err(conflict("the order is closed")),
        }
        if order.params.time_expire.is_some_and(|t| t <= now) {
            return Err(conflict("the order is past its time_expire"));
        }
        let amount = amount_fen.unwrap_or(order.params.total_fee);
        let transaction = transaction_id(now);
        let paid = OrderStatus::Paid(Payment {
            transaction_id: transaction.clone(),
            success_time: now,
            total: amount,
            payer_total: amount,
        });
        let unpaid = std::mem::replace(&mut order.status, paid);
        let notification = match notify::build_pay(pay, order, &state.faults) {
            Ok(n) => n,
            Err(e) => {
                order.status = unpaid;
                return Err((StatusCode::INTERNAL_SERVER_ERROR, e));
            }
        };
        order.notification = Some(notification.clone());
        (notification, order.params.notify_url.clone(), transaction)
    };
    // `notify: false`: paid, but the merchant never hears of it (the notification is kept for
    // a control `notify`).
    if send {
        notify::send_pay(
            pay,
            &url,
            &notification,
            out_trade_no,
            delay,
            1 + duplicates,
        );
    }
    Ok(json!({ "transaction_id": transaction }))
}

/// The id (in the delivery log) of the order's pay notification, once paid.
pub(crate) fn pay_notification_id(pay: &Pay, out_trade_no: &str) -> Option<String> {
    pay.lock()
        .v2
        .orders
        .get(out_trade_no)
        .and_then(|o| o.notification.as_ref().map(|n| n.id.clone()))
}

/// Deliver the order's pay notification again, byte for byte.
pub(crate) fn renotify(pay: &Pay, out_trade_no: &str) -> ControlResult {
    let found = pay
        .lock()
        .v2
        .orders
        .get(out_trade_no)
        .map(|o| (o.notification.clone(), o.params.notify_url.clone()));
    let (notification, url) = found.ok_or_else(no_order)?;
    let notification =
        notification.ok_or_else(|| conflict("the order is not paid: nothing to notify"))?;
    notify::send_pay(pay, &url, &notification, out_trade_no, Duration::ZERO, 1);
    Ok(json!({ "notification_id": notification.id }))
}

/// Set an unpaid order's state (USERPAYING, PAYERROR, NOTPAY, CLOSED).
pub(crate) fn trade_state(pay: &Pay, out_trade_no: &str, status: OrderStatus) -> ControlResult {
    let mut state = pay.lock();
    let order = state.v2.orders.get_mut(out_trade_no).ok_or_else(no_order)?;
    if !order.status.is_open() {
        return Err(conflict("the order is already paid or closed"));
    }
    order.status = status;
    Ok(fields_json(&order.query_fields()))
}

pub(crate) fn settle_refund(pay: &Pay, out_refund_no: &str, status: RefundStatus) -> ControlResult {
    match settle(pay, out_refund_no, status, false) {
        Ok(fields) => Ok(fields_json(&fields)),
        Err(SettleError::NotFound) => Err((
            StatusCode::NOT_FOUND,
            "no APIv2 refund with that out_refund_no".to_string(),
        )),
        Err(SettleError::Final(s)) => Err(conflict(&format!("the refund is already {s}"))),
    }
}

/// The order as orderquery shows it (fields as strings), with its refunds as refundquery does.
pub(crate) fn transaction(pay: &Pay, out_trade_no: &str) -> ControlResult {
    let state = pay.lock();
    let order = state.v2.orders.get(out_trade_no).ok_or_else(no_order)?;
    let refunds: Vec<Value> = state
        .v2
        .refunds_of(out_trade_no)
        .into_iter()
        .map(|r| {
            let mut fields = Fields::new();
            r.query_fields(0, &mut fields);
            // One refund per entry: drop the `_0` suffix.
            let plain: Fields = fields
                .into_iter()
                .map(|(k, v)| (k.trim_end_matches("_0").to_string(), v))
                .collect();
            fields_json(&plain)
        })
        .collect();
    Ok(json!({
        "transaction": fields_json(&order.query_fields()),
        "prepay_id": order.prepay_id,
        "notify_url": order.params.notify_url,
        "sign_type": order.sign_type.as_str(),
        "refunds": refunds,
        "queries": state.v2.queries.get(out_trade_no).copied().unwrap_or(0),
    }))
}
