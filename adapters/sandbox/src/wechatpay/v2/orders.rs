//! `/pay/unifiedorder`, `/pay/orderquery`, `/pay/closeorder`.

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::Method;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};

use super::state::{put, Fields, V2Order, V2OrderParams};
use super::wire::{self, V2Error, V2Request, V2Result};
use crate::wechatpay::ids::{prepay_id, BEIJING};
use crate::wechatpay::state::{OrderStatus, PREPAY_TTL};
use crate::wechatpay::{validate, Pay};

pub(crate) async fn unifiedorder_handler(
    State(pay): State<Pay>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    wire::handle(&pay, &method, uri.path(), &body, unifiedorder).await
}

pub(crate) async fn orderquery_handler(
    State(pay): State<Pay>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    wire::handle(&pay, &method, uri.path(), &body, orderquery).await
}

pub(crate) async fn closeorder_handler(
    State(pay): State<Pay>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    wire::handle(&pay, &method, uri.path(), &body, closeorder).await
}

/// A positive integer amount in fen, written as WeChat requires: digits only (`1.00`, `+1`,
/// ` 1` and `0` are refused).
pub(crate) fn fen(req: &V2Request, name: &str) -> Result<i64, V2Error> {
    let raw = req.required(name)?;
    let bad = || V2Error::param(format!("{name}参数错误：应为大于0的整数（单位：分）"));
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match raw.parse::<i64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(bad()),
    }
}

/// `out_trade_no`: at most 32 of `[0-9A-Za-z_-|*]`.
pub(crate) fn check_out_trade_no(value: &str) -> Result<(), V2Error> {
    let ok = value.len() <= 32
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-|*".contains(c));
    if ok {
        Ok(())
    } else {
        Err(V2Error::param(
            "out_trade_no参数错误：不超过32位的数字、大小写字母或_-|*",
        ))
    }
}

/// `notify_url` as v3 has it: https (http for loopback hosts), no query string.
pub(crate) fn check_notify_url(value: &str) -> Result<(), V2Error> {
    validate::notify_url(value, "notify_url")
        .map_err(|_| V2Error::param("notify_url参数格式错误：须为https://开头且不带参数的URL"))
}

/// `time_expire`: `yyyyMMddHHmmss` Beijing time, at least five minutes ahead — WeChat's rule for
/// every trade type but card-swipe (one minute), and the sandbox takes JSAPI only.
fn time_expire(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, V2Error> {
    let parsed = NaiveDateTime::parse_from_str(value, "%Y%m%d%H%M%S")
        .ok()
        .filter(|_| value.len() == 14)
        .and_then(|t| t.and_local_timezone(BEIJING).single())
        .ok_or_else(|| V2Error::param("time_expire参数格式错误：应为yyyyMMddHHmmss"))?
        .with_timezone(&Utc);
    if parsed - now < chrono::Duration::minutes(5) {
        return Err(V2Error::param(
            "time_expire时间过短，刷卡至少1分钟，其他5分钟",
        ));
    }
    Ok(parsed)
}

/// Field checks, presence and format first, in the order WeChat reports them.
fn order_params(pay: &Pay, req: &V2Request, now: DateTime<Utc>) -> Result<V2OrderParams, V2Error> {
    let body = req.required("body")?;
    let out_trade_no = req.required("out_trade_no")?;
    let total_fee = fen(req, "total_fee")?;
    let ip = req.required("spbill_create_ip")?;
    let notify_url = req.required("notify_url")?;
    let trade_type = req.required("trade_type")?;
    if body.chars().count() > 128 {
        return Err(V2Error::param("body参数长度有误：不超过128个字符"));
    }
    check_out_trade_no(out_trade_no)?;
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(V2Error::param("spbill_create_ip参数格式错误"));
    }
    check_notify_url(notify_url)?;
    if trade_type != "JSAPI" {
        return Err(V2Error::param(
            "trade_type参数错误：沙箱仅支持JSAPI（小程序支付）",
        ));
    }
    // JSAPI requires the payer.
    let openid = req
        .get("openid")
        .ok_or_else(|| V2Error::param("trade_type=JSAPI时（即JSAPI支付），此参数必传"))?;
    if req.get("fee_type").is_some_and(|t| t != "CNY") {
        return Err(V2Error::param("fee_type参数错误：境内商户仅支持CNY"));
    }
    if let Some(attach) = req.get("attach") {
        if attach.chars().count() > 127 {
            return Err(V2Error::param("attach参数长度有误：不超过127个字符"));
        }
    }
    let time_expire = req
        .get("time_expire")
        .map(|t| time_expire(t, now))
        .transpose()?;
    // An openid belongs to one appid: someone else's, or a made-up one, is refused.
    if !pay.openids.contains(openid) {
        return Err(V2Error::param("appid和openid不匹配"));
    }
    Ok(V2OrderParams {
        body: body.to_string(),
        attach: req.get("attach").map(str::to_string),
        total_fee,
        notify_url: notify_url.to_string(),
        openid: openid.to_string(),
        time_expire,
    })
}

fn prepay_answer(prepay_id: &str) -> Fields {
    let mut fields = Fields::new();
    put(&mut fields, "trade_type", "JSAPI");
    put(&mut fields, "prepay_id", prepay_id);
    fields
}

/// `/pay/unifiedorder`. Ordering the same `out_trade_no` again is how merchants retry:
/// identical parameters get the same `prepay_id` (a new one once two hours have passed).
fn unifiedorder(pay: &Pay, req: &V2Request) -> V2Result {
    let now = Utc::now();
    let params = order_params(pay, req, now)?;
    let out_trade_no = req.required("out_trade_no")?.to_string();
    let mut state = pay.lock();
    // WeChat keeps one order book per merchant: a number ordered through APIv3 is taken.
    if state.orders.contains_key(&out_trade_no) {
        return Err(V2Error::refused("OUT_TRADE_NO_USED", "商户订单号重复"));
    }
    let Some(order) = state.v2.orders.get_mut(&out_trade_no) else {
        let prepay = prepay_id(now);
        state.v2.orders.insert(
            out_trade_no.clone(),
            V2Order {
                out_trade_no,
                params,
                sign_type: req.sign_type,
                prepay_id: prepay.clone(),
                prepay_issued: now,
                status: OrderStatus::NotPay,
                refunded: false,
                notification: None,
            },
        );
        return Ok(prepay_answer(&prepay));
    };
    reorder(order, &params, now).map(|prepay| prepay_answer(&prepay))
}

/// The answer to ordering an existing `out_trade_no` again.
fn reorder(
    order: &mut V2Order,
    params: &V2OrderParams,
    now: DateTime<Utc>,
) -> Result<String, V2Error> {
    match order.status {
        OrderStatus::Paid(_) => Err(V2Error::refused("ORDERPAID", "该订单已支付")),
        OrderStatus::Closed => Err(V2Error::refused(
            "ORDERCLOSED",
            "该订单已关闭，请使用新的商户订单号下单",
        )),
        _ if order.params != *params => Err(V2Error::refused(
            "OUT_TRADE_NO_USED",
            "商户订单号重复：同一out_trade_no的下单参数与已有订单不一致",
        )),
        _ => {
            if now - order.prepay_issued >= PREPAY_TTL {
                order.prepay_id = prepay_id(now);
                order.prepay_issued = now;
            }
            Ok(order.prepay_id.clone())
        }
    }
}

/// `out_trade_no` or `transaction_id` (the latter wins when both are given, as at WeChat).
fn find<'a>(state: &'a super::state::V2State, req: &V2Request) -> Result<&'a V2Order, V2Error> {
    let order = match (req.get("transaction_id"), req.get("out_trade_no")) {
        (Some(id), _) => state.order_by_transaction_id(id),
        (None, Some(no)) => state.orders.get(no),
        (None, None) => return Err(V2Error::param("out_trade_no和transaction_id不能同时为空")),
    };
    order.ok_or_else(|| V2Error::refused("ORDERNOTEXIST", "订单不存在"))
}

/// `/pay/orderquery`.
fn orderquery(pay: &Pay, req: &V2Request) -> V2Result {
    let mut state = pay.lock();
    let order = find(&state.v2, req)?;
    let (out_trade_no, fields) = (order.out_trade_no.clone(), order.query_fields());
    *state.v2.queries.entry(out_trade_no).or_default() += 1;
    Ok(fields)
}

/// `/pay/closeorder`: an unpaid order is closed. Paid: `ORDERPAID` (query, then refund);
/// closed: `ORDERCLOSED`; the user entering the password: `USERPAYING` (not closed).
fn closeorder(pay: &Pay, req: &V2Request) -> V2Result {
    let out_trade_no = req.required("out_trade_no")?;
    let mut state = pay.lock();
    let order = state
        .v2
        .orders
        .get_mut(out_trade_no)
        .ok_or_else(|| V2Error::refused("ORDERNOTEXIST", "订单不存在"))?;
    match order.status {
        OrderStatus::Paid(_) => Err(V2Error::refused("ORDERPAID", "订单已支付，不能发起关单")),
        OrderStatus::Closed => Err(V2Error::refused("ORDERCLOSED", "订单已关闭，无法重复关闭")),
        OrderStatus::UserPaying => Err(V2Error::refused(
            "USERPAYING",
            "用户支付中（输入密码中），请稍后再试",
        )),
        OrderStatus::NotPay | OrderStatus::PayError => {
            order.status = OrderStatus::Closed;
            Ok(Fields::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_expire_is_beijing_and_must_be_a_minute_ahead() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T23:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // 07:40 on 2 May in Beijing is 23:40 UTC on 1 May.
        let t = time_expire("20240502074000", now).unwrap();
        assert_eq!(t, now + chrono::Duration::minutes(10));
        assert!(time_expire("20240502073030", now).is_err(), "30 s ahead");
        assert!(time_expire("2024050207400", now).is_err());
        assert!(time_expire("2024-05-02 07:40:00", now).is_err());
        assert!(time_expire("20240532074000", now).is_err());
    }

    #[test]
    fn out_trade_no_rules() {
        assert!(check_out_trade_no("A_b-c|d*9").is_ok());
        assert!(check_out_trade_no(&"x".repeat(33)).is_err());
        assert!(check_out_trade_no("abc.def").is_err());
    }
}
