//! `/secapi/pay/refund` (mutual TLS), `/pay/refundquery`, and settling v2 refunds (on the timer
//! v3 uses, or through the control API) with their encrypted notifications.

pub(crate) use crate::wechatpay::refunds::SettleError;
use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{OriginalUri, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Extensions, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use rustls::pki_types::UnixTime;

use super::notify;
use super::orders::{check_notify_url, fen};
use super::pki::common_name;
use super::state::{put, Fields, V2Refund};
use super::wire::{self, V2Error, V2Request, V2Result};
use crate::secapi::SecapiPeer;
use crate::wechatpay::ids::refund_id;
use crate::wechatpay::state::{OrderStatus, RefundStatus};
use crate::wechatpay::Pay;

/// WeChat allows at most 50 partial refunds of one order.
const MAX_REFUNDS_PER_ORDER: usize = 50;

/// The page WeChat's nginx answers when the client certificate is missing or not WeChat's
/// (HTTP 400, HTML, not XML: clients must cope).
fn nginx_400(reason: &str) -> Response {
    let page = format!(
        "<html>\r\n<head><title>400 {reason}</title></head>\r\n<body>\r\n\
         <center><h1>400 Bad Request</h1></center>\r\n<center>{reason}</center>\r\n\
         <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    );
    (StatusCode::BAD_REQUEST, [(CONTENT_TYPE, "text/html")], page).into_response()
}

/// The client certificate of a `/secapi` call, judged as WeChat does: none (or plain HTTP) →
/// nginx's `No required SSL certificate was sent`; not issued by WeChat's CA or expired →
/// `The SSL certificate error`; WeChat's but another merchant's → `certificate not match`.
/// `None` when the certificate is the merchant's.
fn certificate_refusal(pay: &Pay, extensions: &Extensions) -> Option<Response> {
    let peer = extensions.get::<ConnectInfo<SecapiPeer>>().map(|c| &c.0);
    let Some((end_entity, intermediates)) = peer.and_then(|p| p.certificates.split_first()) else {
        return Some(nginx_400("No required SSL certificate was sent"));
    };
    let verified =
        pay.secapi
            .client_verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now());
    if let Err(e) = verified {
        tracing::info!(peer = ?peer.map(|p| p.remote), error = %e, "wechatpay sandbox: secapi client certificate refused");
        return Some(nginx_400("The SSL certificate error"));
    }
    if common_name(end_entity).as_deref() != Some(pay.mchid.as_str()) {
        return Some(wire::not_taken("certificate not match"));
    }
    None
}

pub(crate) async fn refund_handler(
    State(pay): State<Pay>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    extensions: Extensions,
    body: Bytes,
) -> Response {
    if let Some(refusal) = certificate_refusal(&pay, &extensions) {
        return refusal;
    }
    wire::handle(&pay, &method, uri.path(), &body, refund).await
}

pub(crate) async fn refundquery_handler(
    State(pay): State<Pay>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    wire::handle(&pay, &method, uri.path(), &body, refundquery).await
}

struct Checked {
    out_refund_no: String,
    total_fee: i64,
    refund_fee: i64,
    notify_url: Option<String>,
}

fn check(req: &V2Request) -> Result<Checked, V2Error> {
    if req.get("transaction_id").is_none() && req.get("out_trade_no").is_none() {
        return Err(V2Error::param("transaction_id和out_trade_no必须二选一"));
    }
    let out_refund_no = req.required("out_refund_no")?;
    let total_fee = fen(req, "total_fee")?;
    let refund_fee = fen(req, "refund_fee")?;
    let ok_refund_no = out_refund_no.len() <= 64
        && out_refund_no
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-|*@".contains(c));
    if !ok_refund_no {
        return Err(V2Error::param(
            "out_refund_no参数错误：不超过64位的数字、大小写字母或_-|*@",
        ));
    }
    if req.get("refund_fee_type").is_some_and(|t| t != "CNY") {
        return Err(V2Error::param("refund_fee_type参数错误：境内商户仅支持CNY"));
    }
    if req
        .get("refund_desc")
        .is_some_and(|d| d.chars().count() > 80)
    {
        return Err(V2Error::param("refund_desc参数长度有误：不超过80个字符"));
    }
    let notify_url = req.get("notify_url");
    if let Some(url) = notify_url {
        check_notify_url(url)?;
    }
    Ok(Checked {
        out_refund_no: out_refund_no.to_string(),
        total_fee,
        refund_fee,
        notify_url: notify_url.map(str::to_string),
    })
}

/// `/secapi/pay/refund`. `out_refund_no` is the idempotency key: the same request again gets
/// the same refund (whatever its status now) and refunds nothing more. The answer means
/// "accepted": the refund settles later (refundquery, notification).
fn refund(pay: &Pay, req: &V2Request) -> V2Result {
    let checked = check(req)?;
    let now = Utc::now();
    let (answer, hold, settle_after) = {
        let mut state = pay.lock();
        let v2 = &state.v2;
        let order = match (req.get("transaction_id"), req.get("out_trade_no")) {
            (Some(id), _) => v2.order_by_transaction_id(id),
            (None, no) => no.and_then(|no| v2.orders.get(no)),
        }
        .ok_or_else(|| V2Error::refused("ORDERNOTEXIST", "订单不存在"))?;
        let out_trade_no = order.out_trade_no.clone();

        if let Some(existing) = v2.refunds.get(&checked.out_refund_no) {
            let same = existing.out_trade_no == out_trade_no
                && existing.refund_fee == checked.refund_fee
                && existing.total_fee == checked.total_fee;
            if !same {
                return Err(V2Error::refused(
                    "REFUND_FEE_MISMATCH",
                    "订单金额或退款金额与之前请求不一致，请核实后再试",
                ));
            }
            return Ok(existing.answer_fields());
        }

        let OrderStatus::Paid(payment) = &order.status else {
            // WeChat's refund system only knows paid orders.
            return Err(V2Error::refused("ORDERNOTEXIST", "订单不存在"));
        };
        let since_payment = (now - payment.success_time).num_milliseconds();
        if since_payment < i64::try_from(state.faults.refund_lag_ms).unwrap_or(i64::MAX) {
            // WeChat's refund system has not heard of the payment yet.
            return Err(V2Error::refused("ORDERNOTEXIST", "订单不存在"));
        }
        if checked.total_fee != payment.total {
            return Err(V2Error::param("total_fee与订单金额不一致"));
        }
        if now - payment.success_time > chrono::Duration::days(365) {
            return Err(V2Error::refused("TRADE_OVERDUE", "订单已经超过退款期限"));
        }
        let existing = v2.refunds_of(&out_trade_no);
        if existing.len() >= MAX_REFUNDS_PER_ORDER {
            return Err(V2Error::refused("ERROR", "一笔订单最多退款50次"));
        }
        let committed: i64 = existing
            .iter()
            .filter(|r| r.status != RefundStatus::Closed)
            .map(|r| r.refund_fee)
            .sum();
        if committed + checked.refund_fee > payment.total {
            return Err(V2Error::refused("ERROR", "申请退款金额超过订单可退金额"));
        }
        if state
            .faults
            .balance_fen
            .is_some_and(|balance| balance < checked.refund_fee)
        {
            return Err(V2Error::refused(
                "NOTENOUGH",
                "基本账户余额不足，请充值后重新发起",
            ));
        }
        let refund = V2Refund {
            refund_id: refund_id(now),
            out_refund_no: checked.out_refund_no.clone(),
            out_trade_no,
            transaction_id: payment.transaction_id.clone(),
            notify_url: checked.notify_url,
            refund_fee: checked.refund_fee,
            total_fee: payment.total,
            cash_fee: payment.payer_total,
            status: RefundStatus::Processing,
            create_time: now,
            success_time: None,
        };
        let answer = refund.answer_fields();
        if let Some(balance) = &mut state.faults.balance_fen {
            *balance -= checked.refund_fee;
        }
        state
            .v2
            .refunds
            .insert(checked.out_refund_no.clone(), refund);
        (answer, state.faults.hold_refunds, state.refund_settle)
    };
    if !hold {
        let pay = pay.clone();
        let out_refund_no = checked.out_refund_no;
        tokio::spawn(async move {
            tokio::time::sleep(settle_after).await;
            // Held in the meantime, or settled through control: leave it alone.
            let _ = settle(&pay, &out_refund_no, RefundStatus::Success, true);
        });
    }
    Ok(answer)
}

/// `/pay/refundquery` by `refund_id`, `out_refund_no`, `transaction_id` or `out_trade_no` (in
/// that order of precedence, as WeChat's): the order's totals, `refund_count` and each refund
/// as `…_$n` fields — only the one asked for when asked by refund.
fn refundquery(pay: &Pay, req: &V2Request) -> V2Result {
    let state = pay.lock();
    let v2 = &state.v2;
    let not_exist = || V2Error::refused("REFUNDNOTEXIST", "退款订单查询失败");
    let refunds: Vec<&V2Refund> = if let Some(id) = req.get("refund_id") {
        v2.refunds.values().filter(|r| r.refund_id == id).collect()
    } else if let Some(no) = req.get("out_refund_no") {
        v2.refunds.get(no).into_iter().collect()
    } else {
        let out_trade_no = match (req.get("transaction_id"), req.get("out_trade_no")) {
            (Some(id), _) => v2
                .order_by_transaction_id(id)
                .map(|o| o.out_trade_no.as_str()),
            (None, Some(no)) => Some(no),
            (None, None) => {
                return Err(V2Error::param(
                    "out_refund_no、out_trade_no、transaction_id、refund_id必须四选一",
                ))
            }
        };
        out_trade_no.map(|no| v2.refunds_of(no)).unwrap_or_default()
    };
    let Some(first) = refunds.first() else {
        return Err(not_exist());
    };
    let mut fields = Fields::new();
    put(&mut fields, "out_trade_no", &first.out_trade_no);
    put(&mut fields, "transaction_id", &first.transaction_id);
    put(&mut fields, "total_fee", first.total_fee);
    put(&mut fields, "settlement_total_fee", first.total_fee);
    put(&mut fields, "fee_type", "CNY");
    put(&mut fields, "cash_fee", first.cash_fee);
    put(&mut fields, "refund_count", refunds.len());
    for (n, refund) in refunds.iter().enumerate() {
        refund.query_fields(n, &mut fields);
    }
    Ok(fields)
}

/// Move a v2 refund to `status` and notify its `notify_url` (SUCCESS, REFUNDCLOSE and CHANGE are
/// notified). `automatic` is the timer: it only settles refunds still PROCESSING and not held.
/// Returns the refund as refundquery shows it.
pub(crate) fn settle(
    pay: &Pay,
    out_refund_no: &str,
    status: RefundStatus,
    automatic: bool,
) -> Result<Fields, SettleError> {
    let now = Utc::now();
    let (answer, notify_url, req_info, out_trade_no) = {
        let mut state = pay.lock();
        let held = state.faults.hold_refunds;
        let refund = state
            .v2
            .refunds
            .get_mut(out_refund_no)
            .ok_or(SettleError::NotFound)?;
        if !refund.status.may_settle(held, automatic) {
            return Err(SettleError::Final(refund.status.v2_str()));
        }
        refund.status = status;
        if status == RefundStatus::Success {
            refund.success_time = Some(now);
        }
        let mut answer = Fields::new();
        refund.query_fields(0, &mut answer);
        let req_info = refund.req_info_fields();
        let notify_url = refund.notify_url.clone();
        let out_trade_no = refund.out_trade_no.clone();
        if status == RefundStatus::Success {
            if let Some(order) = state.v2.orders.get_mut(&out_trade_no) {
                order.refunded = true;
            }
        }
        (answer, notify_url, req_info, out_trade_no)
    };
    if let Some(url) = notify_url.filter(|_| status != RefundStatus::Processing) {
        notify::send_refund(pay, &url, &req_info, status, &out_trade_no, out_refund_no);
    }
    Ok(answer)
}
