//! `POST /v3/refund/domestic/refunds`, `GET …/{out_refund_no}`, and settling refunds (on a timer,
//! or through the control API) with their notifications.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use super::ids::refund_id;
use super::notify::{self, Subject};
use super::state::{OrderStatus, Refund, RefundStatus};
use super::validate::{self, required, ApiError};
use super::Pay;

/// WeChat allows at most 50 partial refunds of one order.
const MAX_REFUNDS_PER_ORDER: usize = 50;

#[derive(Deserialize)]
struct RefundRequest {
    transaction_id: Option<String>,
    out_trade_no: Option<String>,
    out_refund_no: Option<String>,
    reason: Option<String>,
    notify_url: Option<String>,
    amount: Option<RefundAmount>,
}

#[derive(Deserialize)]
struct RefundAmount {
    refund: Option<i64>,
    total: Option<i64>,
    currency: Option<String>,
}

struct Checked {
    transaction_id: Option<String>,
    out_trade_no: Option<String>,
    out_refund_no: String,
    notify_url: Option<String>,
    refund: i64,
    total: i64,
}

fn check(req: RefundRequest) -> Result<Checked, ApiError> {
    let out_refund_no = required(req.out_refund_no, "out_refund_no")?;
    let amount = required(req.amount, "amount")?;
    let refund = required(amount.refund, "amount/refund")?;
    let total = required(amount.total, "amount/total")?;
    let currency = required(amount.currency, "amount/currency")?;
    if req.transaction_id.is_none() && req.out_trade_no.is_none() {
        return Err(ApiError::param("transaction_id和out_trade_no必须二选一"));
    }
    validate::out_refund_no(&out_refund_no)?;
    if let Some(reason) = &req.reason {
        validate::text(reason, "reason", 1, 80)?;
    }
    if let Some(url) = &req.notify_url {
        validate::notify_url(url, "notify_url")?;
    }
    if refund < 1 {
        return Err(ApiError::field(
            "amount/refund",
            "应为大于0的整数（单位：分）",
        ));
    }
    if total < 1 {
        return Err(ApiError::field(
            "amount/total",
            "应为大于0的整数（单位：分）",
        ));
    }
    if currency != "CNY" {
        return Err(ApiError::field("amount/currency", "境内商户仅支持CNY"));
    }
    Ok(Checked {
        transaction_id: req.transaction_id,
        out_trade_no: req.out_trade_no,
        out_refund_no,
        notify_url: req.notify_url,
        refund,
        total,
    })
}

fn not_exists(message: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", message)
}

/// `POST /v3/refund/domestic/refunds`. `out_refund_no` is the idempotency key: the same request
/// again answers the existing refund (in its current status) and refunds nothing more.
pub(crate) async fn create(State(pay): State<Pay>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req = check(validate::parse_body(&body)?)?;
    let now = Utc::now();
    let (answer, hold, settle_after) = {
        let mut state = pay.lock();
        // `transaction_id` wins when both are given, as at WeChat.
        let order = match &req.transaction_id {
            Some(id) => state.order_by_transaction_id(id),
            None => req
                .out_trade_no
                .as_deref()
                .and_then(|no| state.orders.get(no)),
        }
        .ok_or_else(|| not_exists("订单不存在"))?;
        let out_trade_no = order.out_trade_no.clone();

        if let Some(existing) = state.refunds.get(&req.out_refund_no) {
            let same = existing.out_trade_no == out_trade_no
                && existing.refund == req.refund
                && existing.total == req.total;
            if !same {
                return Err(ApiError::invalid_request(
                    "商户退款单号已存在，且退款参数与原请求不一致",
                ));
            }
            return Ok(Json(existing.api_json()));
        }

        let OrderStatus::Paid(payment) = &order.status else {
            return Err(ApiError::invalid_request("订单未支付，不能退款"));
        };
        let since_payment = (now - payment.success_time).num_milliseconds();
        if since_payment < i64::try_from(state.faults.refund_lag_ms).unwrap_or(i64::MAX) {
            // WeChat's refund system has not heard of the payment yet.
            return Err(not_exists("订单不存在"));
        }
        if req.total != payment.total {
            return Err(ApiError::invalid_request("订单金额total与原订单金额不一致"));
        }
        if now - payment.success_time > chrono::Duration::days(365) {
            return Err(ApiError::invalid_request("订单已超过退款期限（一年）"));
        }
        let existing = state.refunds_of(&out_trade_no);
        if existing.len() >= MAX_REFUNDS_PER_ORDER {
            return Err(ApiError::invalid_request("一笔订单最多退款50次"));
        }
        let committed: i64 = existing
            .iter()
            .filter(|r| r.status != RefundStatus::Closed)
            .map(|r| r.refund)
            .sum();
        if committed + req.refund > payment.total {
            return Err(ApiError::invalid_request("申请退款金额超过订单可退金额"));
        }
        if state
            .faults
            .balance_fen
            .is_some_and(|balance| balance < req.refund)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "NOT_ENOUGH",
                "基本账户余额不足，请充值后重新发起",
            ));
        }

        let refund = Refund {
            refund_id: refund_id(now),
            out_refund_no: req.out_refund_no.clone(),
            out_trade_no,
            transaction_id: payment.transaction_id.clone(),
            notify_url: req.notify_url,
            refund: req.refund,
            total: payment.total,
            payer_total: payment.payer_total,
            status: RefundStatus::Processing,
            create_time: now,
            success_time: None,
        };
        let answer = refund.api_json();
        if let Some(balance) = &mut state.faults.balance_fen {
            *balance -= req.refund;
        }
        state.refunds.insert(req.out_refund_no.clone(), refund);
        (answer, state.faults.hold_refunds, state.refund_settle)
    };
    if !hold {
        let pay = pay.clone();
        let out_refund_no = req.out_refund_no;
        tokio::spawn(async move {
            tokio::time::sleep(settle_after).await;
            // Held in the meantime, or settled through control: leave it alone.
            let _ = settle(&pay, &out_refund_no, RefundStatus::Success, true);
        });
    }
    Ok(Json(answer))
}

/// `GET /v3/refund/domestic/refunds/{out_refund_no}`.
pub(crate) async fn query(
    State(pay): State<Pay>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Ok(Path(out_refund_no)) = path else {
        return Err(ApiError::param("路径参数格式错误"));
    };
    let state = pay.lock();
    let refund = state
        .refunds
        .get(&out_refund_no)
        .ok_or_else(|| not_exists("退款单不存在"))?;
    Ok(Json(refund.api_json()))
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SettleError {
    NotFound,
    /// Already SUCCESS or CLOSED, or (automatic settling) no longer due.
    Final(&'static str),
}

/// Move a refund to `status` and notify its `notify_url`. `automatic` is the timer: it only
/// settles refunds still PROCESSING and not held.
pub(crate) fn settle(
    pay: &Pay,
    out_refund_no: &str,
    status: RefundStatus,
    automatic: bool,
) -> Result<Value, SettleError> {
    let now = Utc::now();
    let (answer, notify_url, resource, out_trade_no) = {
        let mut state = pay.lock();
        let held = state.faults.hold_refunds;
        let refund = state
            .refunds
            .get_mut(out_refund_no)
            .ok_or(SettleError::NotFound)?;
        if !refund.status.may_settle(held, automatic) {
            return Err(SettleError::Final(refund.status.as_str()));
        }
        refund.status = status;
        if status == RefundStatus::Success {
            refund.success_time = Some(now);
        }
        let out_trade_no = refund.out_trade_no.clone();
        let answer = refund.api_json();
        let resource = refund.notify_json(&pay.mchid);
        let notify_url = refund.notify_url.clone();
        if status == RefundStatus::Success {
            if let Some(order) = state.orders.get_mut(&out_trade_no) {
                order.refunded = true;
            }
        }
        (answer, notify_url, resource, out_trade_no)
    };
    if let (Some(url), RefundStatus::Success | RefundStatus::Closed | RefundStatus::Abnormal) =
        (notify_url, status)
    {
        let event = notify::refund_event(status);
        match notify::build(pay, event, &resource) {
            Ok(notification) => notify::dispatch(
                pay,
                &url,
                &notification,
                Subject {
                    channel: super::Channel::V3,
                    event_type: event.event_type,
                    out_trade_no: &out_trade_no,
                    out_refund_no: Some(out_refund_no),
                },
                Duration::ZERO,
                1,
            ),
            Err(e) => {
                tracing::error!(error = %e, "wechatpay sandbox: cannot build a refund notification")
            }
        }
    }
    Ok(answer)
}
