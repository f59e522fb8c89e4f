//! WeChat's payment endpoints: certificates, JSAPI order, query, close. Signature checks and
//! answer signing happen around these in `middleware`.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use paystream_wechatpay::v3::aead::EncryptedResource;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ids::{prepay_id, wechat_time};
use super::keys::alphanumeric;
use super::state::{Order, OrderParams, OrderStatus, PREPAY_TTL};
use super::validate::{self, required, ApiError};
use super::{Pay, VerificationMode};

type ApiResult = Result<Json<Value>, ApiError>;

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "请求的资源不存在")
}

/// `GET /v3/certificates`: every valid platform certificate, PEM sealed with the APIv3 key.
pub(crate) async fn certificates(State(pay): State<Pay>) -> ApiResult {
    let now = Utc::now();
    let certs = {
        let state = pay.lock();
        if state.mode == VerificationMode::PublicKey {
            // Merchants onboarded with a WeChat Pay public key have no platform certificates.
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_EXISTS",
                "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥",
            ));
        }
        state
            .certs
            .iter()
            .filter(|c| c.not_before <= now && now <= c.not_after)
            .cloned()
            .collect::<Vec<_>>()
    };
    let mut data = Vec::new();
    for cert in certs {
        let sealed = EncryptedResource::seal(
            &pay.apiv3_key,
            &alphanumeric(12),
            "certificate",
            None,
            cert.pem.as_bytes(),
        )
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SYSTEM_ERROR",
                e.to_string(),
            )
        })?;
        data.push(json!({
            "serial_no": cert.serial_no,
            "effective_time": wechat_time(cert.not_before),
            "expire_time": wechat_time(cert.not_after),
            "encrypt_certificate": sealed,
        }));
    }
    Ok(Json(json!({ "data": data })))
}

#[derive(Deserialize)]
struct JsapiRequest {
    appid: Option<String>,
    mchid: Option<String>,
    description: Option<String>,
    out_trade_no: Option<String>,
    time_expire: Option<String>,
    attach: Option<String>,
    notify_url: Option<String>,
    amount: Option<OrderAmount>,
    payer: Option<Payer>,
}

#[derive(Deserialize)]
struct OrderAmount {
    total: Option<i64>,
    currency: Option<String>,
}

#[derive(Deserialize)]
struct Payer {
    openid: Option<String>,
}

/// Field checks, in the order WeChat reports them: presence and format first.
fn jsapi_params(
    pay: &Pay,
    req: JsapiRequest,
    now: DateTime<Utc>,
) -> Result<(String, OrderParams), ApiError> {
    let appid = required(req.appid, "appid")?;
    let mchid = required(req.mchid, "mchid")?;
    let description = required(req.description, "description")?;
    let out_trade_no = required(req.out_trade_no, "out_trade_no")?;
    let notify_url = required(req.notify_url, "notify_url")?;
    let amount = required(req.amount, "amount")?;
    let total = required(amount.total, "amount/total")?;
    let payer = required(req.payer, "payer")?;
    let openid = required(payer.openid, "payer/openid")?;

    if mchid != pay.mchid {
        return Err(ApiError::param("请求中的mchid与请求头中的商户号不一致"));
    }
    if appid != pay.appid {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        ));
    }
    validate::text(&description, "description", 1, 127)?;
    validate::out_trade_no(&out_trade_no)?;
    if let Some(attach) = &req.attach {
        validate::text(attach, "attach", 1, 128)?;
    }
    validate::notify_url(&notify_url, "notify_url")?;
    if total < 1 {
        return Err(ApiError::field(
            "amount/total",
            "应为大于0的整数（单位：分）",
        ));
    }
    if amount.currency.as_deref().is_some_and(|c| c != "CNY") {
        return Err(ApiError::field("amount/currency", "境内商户仅支持CNY"));
    }
    if openid.trim().is_empty() || openid.len() > 128 {
        return Err(ApiError::field("payer/openid", "openid格式不正确"));
    }
    // An openid belongs to one appid: someone else's, or a made-up one, is refused.
    if !pay.openids.contains(&openid) {
        return Err(ApiError::param("appid和openid不匹配"));
    }
    let time_expire = match &req.time_expire {
        None => None,
        Some(t) => {
            let parsed = DateTime::parse_from_rfc3339(t)
                .map_err(|_| {
                    ApiError::field(
                        "time_expire",
                        "应为RFC 3339格式，如2018-06-08T10:34:56+08:00",
                    )
                })?
                .with_timezone(&Utc);
            if parsed <= now {
                return Err(ApiError::field("time_expire", "交易结束时间已过"));
            }
            Some(parsed)
        }
    };
    Ok((
        out_trade_no,
        OrderParams {
            appid,
            description,
            time_expire,
            attach: req.attach,
            notify_url,
            total,
            openid,
        },
    ))
}

/// `POST /v3/pay/transactions/jsapi`. Ordering the same `out_trade_no` again is how merchants
/// retry: identical parameters get the same `prepay_id` (a new one once it has expired).
pub(crate) async fn jsapi(State(pay): State<Pay>, body: Bytes) -> ApiResult {
    let now = Utc::now();
    let req: JsapiRequest = validate::parse_body(&body)?;
    let (out_trade_no, params) = jsapi_params(&pay, req, now)?;

    let mut state = pay.lock();
    // WeChat keeps one order book per merchant: a number ordered through APIv2 is taken.
    if state.v2.orders.contains_key(&out_trade_no) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "OUT_TRADE_NO_USED",
            "商户订单号重复",
        ));
    }
    let Some(order) = state.orders.get_mut(&out_trade_no) else {
        let prepay = prepay_id(now);
        state.orders.insert(
            out_trade_no.clone(),
            Order {
                out_trade_no,
                params,
                prepay_id: prepay.clone(),
                prepay_issued: now,
                status: OrderStatus::NotPay,
                refunded: false,
                notification: None,
            },
        );
        return Ok(Json(json!({ "prepay_id": prepay })));
    };
    reorder(order, &params, now).map(|prepay| Json(json!({ "prepay_id": prepay })))
}

/// The answer to ordering an existing `out_trade_no` again.
fn reorder(
    order: &mut Order,
    params: &OrderParams,
    now: DateTime<Utc>,
) -> Result<String, ApiError> {
    let same = order.params == *params;
    match (&order.status, same) {
        (OrderStatus::NotPay | OrderStatus::UserPaying | OrderStatus::PayError, false) => Err(
            ApiError::invalid_request("商户订单号重复：同一out_trade_no的下单参数与已有订单不一致"),
        ),
        (_, false) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "OUT_TRADE_NO_USED",
            "商户订单号重复",
        )),
        (OrderStatus::Paid(_), true) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ORDERPAID",
            "该订单已支付",
        )),
        (OrderStatus::Closed, true) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ORDER_CLOSED",
            "该订单已关闭",
        )),
        (OrderStatus::NotPay | OrderStatus::UserPaying | OrderStatus::PayError, true) => {
            if now - order.prepay_issued >= PREPAY_TTL {
                order.prepay_id = prepay_id(now);
                order.prepay_issued = now;
            }
            Ok(order.prepay_id.clone())
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct MchidQuery {
    mchid: Option<String>,
}

fn check_query_mchid(
    pay: &Pay,
    query: Result<Query<MchidQuery>, QueryRejection>,
) -> Result<(), ApiError> {
    let Ok(Query(q)) = query else {
        return Err(ApiError::param("查询参数格式错误"));
    };
    match q.mchid {
        None => Err(ApiError {
            detail: Some(json!({ "location": "query", "field": "mchid" })),
            ..ApiError::param(
                "输入源“/query/mchid”映射到字段“mchid”必填性规则校验失败，此字段为必填项",
            )
        }),
        Some(m) if m != pay.mchid => Err(ApiError::param("请求中的mchid与请求头中的商户号不一致")),
        Some(_) => Ok(()),
    }
}

fn order_not_exist() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在")
}

fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(p)| p)
        .map_err(|_| ApiError::param("路径参数格式错误"))
}

/// `GET /v3/pay/transactions/out-trade-no/{out_trade_no}?mchid=`.
pub(crate) async fn query_by_out_trade_no(
    State(pay): State<Pay>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<MchidQuery>, QueryRejection>,
) -> ApiResult {
    let out_trade_no = path_param(path)?;
    check_query_mchid(&pay, query)?;
    let mut state = pay.lock();
    let order = state
        .orders
        .get(&out_trade_no)
        .ok_or_else(order_not_exist)?;
    let answer = order.transaction_json(&pay.mchid);
    state.count_query(&out_trade_no);
    Ok(Json(answer))
}

/// `GET /v3/pay/transactions/id/{transaction_id}?mchid=`.
pub(crate) async fn query_by_transaction_id(
    State(pay): State<Pay>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<MchidQuery>, QueryRejection>,
) -> ApiResult {
    let transaction_id = path_param(path)?;
    check_query_mchid(&pay, query)?;
    let mut state = pay.lock();
    let order = state
        .order_by_transaction_id(&transaction_id)
        .ok_or_else(order_not_exist)?;
    let (answer, out_trade_no) = (
        order.transaction_json(&pay.mchid),
        order.out_trade_no.clone(),
    );
    state.count_query(&out_trade_no);
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct CloseRequest {
    mchid: Option<String>,
}

/// `POST /v3/pay/transactions/out-trade-no/{out_trade_no}/close` → 204. While the user is
/// entering the password: 202 `USERPAYING` (not closed). Closing a closed order: 400
/// `ORDER_CLOSED`; a paid one: 400 `ORDERPAID` (the merchant must query and refund instead).
pub(crate) async fn close(
    State(pay): State<Pay>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let out_trade_no = path_param(path)?;
    let req: CloseRequest = validate::parse_body(&body)?;
    let mchid = required(req.mchid, "mchid")?;
    if mchid != pay.mchid {
        return Err(ApiError::param("请求中的mchid与请求头中的商户号不一致"));
    }
    let mut state = pay.lock();
    let order = state
        .orders
        .get_mut(&out_trade_no)
        .ok_or_else(order_not_exist)?;
    match order.status {
        OrderStatus::Paid(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ORDERPAID",
            "订单已支付，不能关闭",
        )),
        OrderStatus::Closed => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ORDER_CLOSED",
            "订单已关闭",
        )),
        OrderStatus::UserPaying => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "code": "USERPAYING", "message": "用户支付中，请稍后再试" })),
        )
            .into_response()),
        OrderStatus::NotPay | OrderStatus::PayError => {
            order.status = OrderStatus::Closed;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(now: DateTime<Utc>) -> Order {
        Order {
            out_trade_no: "T20240501001".into(),
            params: OrderParams {
                appid: "wxapp".into(),
                description: "咖啡".into(),
                time_expire: None,
                attach: None,
                notify_url: "https://shop.example.com/notify".into(),
                total: 100,
                openid: "o123".into(),
            },
            prepay_id: prepay_id(now),
            prepay_issued: now,
            status: OrderStatus::NotPay,
            refunded: false,
            notification: None,
        }
    }

    #[test]
    fn same_prepay_id_for_two_hours_then_a_new_one() {
        let t0 = Utc::now();
        let mut o = order(t0);
        let params = o.params.clone();
        let first = o.prepay_id.clone();
        let later = t0 + chrono::Duration::minutes(119);
        assert_eq!(reorder(&mut o, &params, later).unwrap(), first);
        let expired = t0 + chrono::Duration::minutes(121);
        let renewed = reorder(&mut o, &params, expired).unwrap();
        assert_ne!(renewed, first);
        assert_eq!(reorder(&mut o, &params, expired).unwrap(), renewed);
    }

    #[test]
    fn changed_parameters_are_refused() {
        let now = Utc::now();
        let mut o = order(now);
        let mut changed = o.params.clone();
        changed.description = "茶".into();
        let e = reorder(&mut o, &changed, now).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (400, "INVALID_REQUEST")
        );
        o.status = OrderStatus::Closed;
        let e = reorder(&mut o, &changed, now).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (403, "OUT_TRADE_NO_USED")
        );
        let same = o.params.clone();
        let e = reorder(&mut o, &same, now).unwrap_err();
        assert_eq!(e.code, "ORDER_CLOSED");
    }
}
