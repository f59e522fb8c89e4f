//! The control API (`/control/wechatpay/...`): play the paying user, inject trouble, inspect.
//! See the module documentation for the endpoint list.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ids::transaction_id;
use super::keys::generate_platform_cert;
use super::notify::{self, Subject, TRANSACTION_SUCCESS};
use super::refunds::{settle, SettleError};
use super::state::{OrderStatus, Payment, RefundStatus};
use super::{v2, Channel, Pay, VerificationMode};

/// Enough to exercise duplicate handling, few enough not to flood a receiver by typo.
const MAX_DUPLICATES: usize = 100;

pub(crate) fn routes(pay: Pay) -> Router {
    Router::new()
        .route("/merchant", get(merchant))
        .route("/mode", post(mode))
        .route("/pay", post(pay_order))
        .route("/notify", post(renotify))
        .route("/trade-state", post(trade_state))
        .route("/faults", post(faults))
        .route("/refunds/{out_refund_no}/settle", post(settle_refund))
        .route("/rotate-certificate", post(rotate_certificate))
        .route("/transactions/{out_trade_no}", get(transaction))
        .route("/notifications", get(notifications))
        .merge(super::bills::control_routes())
        .with_state(pay)
}

/// Control errors are plain `{"error": "…"}`: this API is the sandbox's own, not WeChat's.
struct ControlError(StatusCode, String);

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ControlResult = Result<Json<Value>, ControlError>;

fn error(status: StatusCode, message: impl Into<String>) -> ControlError {
    ControlError(status, message.into())
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// An APIv2 control action's answer as this API's.
fn from_v2(result: v2::control::ControlResult) -> ControlResult {
    result
        .map(Json)
        .map_err(|(status, message)| ControlError(status, message))
}

async fn merchant(State(pay): State<Pay>) -> Json<Value> {
    Json(json!(pay.credentials()))
}

#[derive(Deserialize)]
struct ModeRequest {
    mode: VerificationMode,
}

async fn mode(State(pay): State<Pay>, body: Bytes) -> ControlResult {
    let req: ModeRequest = parse(&body)?;
    pay.set_mode(req.mode);
    Ok(Json(json!({ "mode": req.mode })))
}

#[derive(Deserialize)]
struct PayRequest {
    #[serde(default)]
    channel: Channel,
    out_trade_no: String,
    amount_fen: Option<i64>,
    #[serde(default)]
    duplicates: usize,
    #[serde(default)]
    delay_ms: u64,
    /// `false`: the order is paid but no notification is ever sent (a lost notification).
    #[serde(default = "yes")]
    notify: bool,
    /// `true`: answer only once the merchant answered the first delivery attempt (after
    /// `delay_ms`), with that answer in `notified`, so the caller's next read sees the payment.
    #[serde(default)]
    wait: bool,
}

fn yes() -> bool {
    true
}

/// How long `wait` waits for the merchant's answer beyond `delay_ms`. The simulator's HTTP
/// client gives up on one attempt after 5 s, so an attempt has an outcome well before.
const WAIT_LIMIT: Duration = Duration::from_secs(15);

/// The user pays: the order becomes SUCCESS now, and `TRANSACTION.SUCCESS` goes out (unless
/// `notify` is false: WeChat has the payment, the merchant never hears of it). With `wait`, the
/// answer waits for the merchant's answer to the first delivery attempt and carries it.
async fn pay_order(State(pay): State<Pay>, body: Bytes) -> ControlResult {
    let req: PayRequest = parse(&body)?;
    if req.duplicates > MAX_DUPLICATES {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_DUPLICATES} duplicates"),
        ));
    }
    if req.wait && !req.notify {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "\"wait\": true needs a notification to wait for; it cannot go with \"notify\": false",
        ));
    }
    if req.channel == Channel::V2 {
        let mut answer = from_v2(v2::control::pay(
            &pay,
            &req.out_trade_no,
            req.amount_fen,
            Duration::from_millis(req.delay_ms),
            req.duplicates,
            req.notify,
        ))?;
        if req.wait {
            if let Some(id) = v2::control::pay_notification_id(&pay, &req.out_trade_no) {
                answer.0["notified"] = first_answer(&pay, &id, req.delay_ms).await;
            }
        }
        return Ok(answer);
    }
    let now = Utc::now();
    // Paid and notification stored under one lock: the order is never paid without the
    // notification that /control/wechatpay/notify re-sends.
    let (notification, url, transaction) = {
        let mut state = pay.lock();
        let Some(order) = state.orders.get_mut(&req.out_trade_no) else {
            return Err(error(
                StatusCode::NOT_FOUND,
                "no order with that out_trade_no",
            ));
        };
        match order.status {
            OrderStatus::NotPay | OrderStatus::UserPaying | OrderStatus::PayError => {}
            OrderStatus::Paid(_) => {
                return Err(error(StatusCode::CONFLICT, "the order is already paid"))
            }
            OrderStatus::Closed => return Err(error(StatusCode::CONFLICT, "the order is closed")),
        }
        if order.params.time_expire.is_some_and(|t| t <= now) {
            return Err(error(
                StatusCode::CONFLICT,
                "the order is past its time_expire",
            ));
        }
        let amount = req.amount_fen.unwrap_or(order.params.total);
        let transaction = transaction_id(now);
        let paid = OrderStatus::Paid(Payment {
            transaction_id: transaction.clone(),
            success_time: now,
            total: amount,
            payer_total: amount,
        });
        let unpaid = std::mem::replace(&mut order.status, paid);
        let notification = match notify::build(
            &pay,
            TRANSACTION_SUCCESS,
            &order.transaction_json(&pay.mchid),
        ) {
            Ok(n) => n,
            Err(e) => {
                order.status = unpaid;
                return Err(error(StatusCode::INTERNAL_SERVER_ERROR, e));
            }
        };
        order.notification = Some(notification.clone());
        (notification, order.params.notify_url.clone(), transaction)
    };
    if !req.notify {
        // Kept (a control `notify` can still send it), never sent by itself.
        return Ok(Json(json!({ "transaction_id": transaction })));
    }
    notify::dispatch(
        &pay,
        &url,
        &notification,
        Subject {
            channel: super::Channel::V3,
            event_type: TRANSACTION_SUCCESS.event_type,
            out_trade_no: &req.out_trade_no,
            out_refund_no: None,
        },
        Duration::from_millis(req.delay_ms),
        1 + req.duplicates,
    );
    let mut answer = json!({ "transaction_id": transaction });
    if req.wait {
        answer["notified"] = first_answer(&pay, &notification.id, req.delay_ms).await;
    }
    Ok(Json(answer))
}

/// The merchant's answer to the first attempt of the first delivery of notification `id`:
/// `{"status", "acknowledged", "error"?}` (`status` null when nothing came back: refused
/// connection, timeout), once that attempt is over; at most `delay_ms` + [`WAIT_LIMIT`].
async fn first_answer(pay: &Pay, id: &str, delay_ms: u64) -> Value {
    let limit = Duration::from_millis(delay_ms) + WAIT_LIMIT;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let answered = pay
            .lock()
            .deliveries
            .iter()
            .find(|d| d.notification_id == id)
            .filter(|d| d.attempts > 0)
            .map(|d| {
                let mut answer = json!({ "status": d.last_status, "acknowledged": d.delivered });
                if let Some(e) = &d.last_error {
                    answer["error"] = json!(e);
                }
                answer
            });
        if let Some(answer) = answered {
            return answer;
        }
        if tokio::time::Instant::now() >= deadline {
            return json!({
                "status": null,
                "acknowledged": false,
                "error": format!("no answer from the merchant within {} s", limit.as_secs()),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Deserialize)]
struct TradeStateRequest {
    #[serde(default)]
    channel: Channel,
    out_trade_no: String,
    trade_state: String,
}

/// The user's side of an unpaid order: `USERPAYING` (entering the password: a close answers 202),
/// `PAYERROR` (the attempt failed, e.g. the bank refused), `NOTPAY` (the user gave up), or
/// `CLOSED` (closed at WeChat, as after `time_expire`). Paying goes through `pay`.
async fn trade_state(State(pay): State<Pay>, body: Bytes) -> ControlResult {
    let req: TradeStateRequest = parse(&body)?;
    let status = match req.trade_state.as_str() {
        "USERPAYING" => OrderStatus::UserPaying,
        "PAYERROR" => OrderStatus::PayError,
        "NOTPAY" => OrderStatus::NotPay,
        "CLOSED" => OrderStatus::Closed,
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "trade_state must be USERPAYING, PAYERROR, NOTPAY or CLOSED",
            ))
        }
    };
    if req.channel == Channel::V2 {
        return from_v2(v2::control::trade_state(&pay, &req.out_trade_no, status));
    }
    let mut state = pay.lock();
    let Some(order) = state.orders.get_mut(&req.out_trade_no) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "no order with that out_trade_no",
        ));
    };
    if !order.status.is_open() {
        return Err(error(
            StatusCode::CONFLICT,
            "the order is already paid or closed",
        ));
    }
    order.status = status;
    Ok(Json(order.transaction_json(&pay.mchid)))
}

#[derive(Deserialize)]
struct RenotifyRequest {
    #[serde(default)]
    channel: Channel,
    out_trade_no: String,
}

/// Deliver the order's `TRANSACTION.SUCCESS` again, byte for byte (same `id`): WeChat does.
async fn renotify(State(pay): State<Pay>, body: Bytes) -> ControlResult {
    let req: RenotifyRequest = parse(&body)?;
    if req.channel == Channel::V2 {
        return from_v2(v2::control::renotify(&pay, &req.out_trade_no));
    }
    let found = pay
        .lock()
        .orders
        .get(&req.out_trade_no)
        .map(|o| (o.notification.clone(), o.params.notify_url.clone()));
    let Some((notification, url)) = found else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "no order with that out_trade_no",
        ));
    };
    let Some(notification) = notification else {
        return Err(error(
            StatusCode::CONFLICT,
            "the order is not paid: nothing to notify",
        ));
    };
    notify::dispatch(
        &pay,
        &url,
        &notification,
        Subject {
            channel: super::Channel::V3,
            event_type: TRANSACTION_SUCCESS.event_type,
            out_trade_no: &req.out_trade_no,
            out_refund_no: None,
        },
        Duration::ZERO,
        1,
    );
    Ok(Json(json!({ "notification_id": notification.id })))
}

#[derive(Deserialize)]
struct FaultsRequest {
    fail_next: Option<u32>,
    status: Option<u16>,
    code: Option<String>,
    after_processing: Option<bool>,
    unsigned_next: Option<u32>,
    path_contains: Option<String>,
    delay_ms: Option<u64>,
    hold_refunds: Option<bool>,
    refund_settle_ms: Option<u64>,
    refund_lag_ms: Option<u64>,
    probe_share: Option<f64>,
    unsigned_errors: Option<bool>,
    /// `null` lifts the limit; absent keeps it.
    #[serde(default, deserialize_with = "present")]
    balance_fen: Option<Option<i64>>,
    /// `null` goes back to the order's sign type; absent keeps the setting.
    #[serde(default, deserialize_with = "present")]
    v2_notify_sign_type: Option<Option<String>>,
    v2_notify_with_sign_type: Option<bool>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The error code WeChat uses with each status, for `fail_next` without `code`.
fn default_code(status: u16) -> &'static str {
    match status {
        400 => "PARAM_ERROR",
        401 => "SIGN_ERROR",
        403 => "NO_AUTH",
        404 => "RESOURCE_NOT_EXISTS",
        429 => "FREQUENCY_LIMITED",
        _ => "SYSTEM_ERROR",
    }
}

/// Fields given replace the current settings; fields left out keep them. `path_contains` belongs
/// to the counters: setting either counter replaces (or, left out, clears) the path filter.
async fn faults(State(pay): State<Pay>, body: Bytes) -> ControlResult {
    let req: FaultsRequest = parse(&body)?;
    if req.probe_share.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
        return Err(error(StatusCode::BAD_REQUEST, "probe_share must be 0..=1"));
    }
    if let Some(status) = req.status {
        if !(400..=599).contains(&status) {
            return Err(error(StatusCode::BAD_REQUEST, "status must be 400..=599"));
        }
    }
    if let Some(Some(t)) = &req.v2_notify_sign_type {
        if t.parse::<paystream_wechatpay::v2::sign::SignType>()
            .is_err()
        {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "v2_notify_sign_type must be MD5, HMAC-SHA256 or null",
            ));
        }
    }
    let mut state = pay.lock();
    let f = &mut state.faults;
    if let Some(n) = req.fail_next {
        f.fail_next = n;
        f.status = req.status.unwrap_or(500);
        f.code = req
            .code
            .unwrap_or_else(|| default_code(f.status).to_string());
        f.after_processing = req.after_processing.unwrap_or(false);
    }
    if let Some(n) = req.unsigned_next {
        f.unsigned_next = n;
    }
    if req.fail_next.is_some() || req.unsigned_next.is_some() {
        f.path_contains = req.path_contains.filter(|p| !p.is_empty());
    }
    if let Some(ms) = req.delay_ms {
        f.delay_ms = ms;
    }
    if let Some(hold) = req.hold_refunds {
        f.hold_refunds = hold;
    }
    if let Some(ms) = req.refund_lag_ms {
        f.refund_lag_ms = ms;
    }
    if let Some(share) = req.probe_share {
        f.probe_share = share;
    }
    if let Some(unsigned) = req.unsigned_errors {
        f.unsigned_errors = unsigned;
    }
    if let Some(balance) = req.balance_fen {
        f.balance_fen = balance;
    }
    if let Some(sign_type) = req.v2_notify_sign_type {
        f.v2_notify_sign_type = sign_type;
    }
    if let Some(with) = req.v2_notify_with_sign_type {
        f.v2_notify_with_sign_type = with;
    }
    if let Some(ms) = req.refund_settle_ms {
        state.refund_settle = Duration::from_millis(ms);
    }
    let settle_ms = u64::try_from(state.refund_settle.as_millis()).unwrap_or(u64::MAX);
    let mut answer = json!(state.faults);
    answer["refund_settle_ms"] = json!(settle_ms);
    Ok(Json(answer))
}

#[derive(Deserialize)]
struct SettleRequest {
    #[serde(default)]
    channel: Channel,
    status: String,
}

async fn settle_refund(
    State(pay): State<Pay>,
    Path(out_refund_no): Path<String>,
    body: Bytes,
) -> ControlResult {
    let req: SettleRequest = parse(&body)?;
    let status = match RefundStatus::parse(&req.status) {
        Some(s @ (RefundStatus::Success | RefundStatus::Closed | RefundStatus::Abnormal)) => s,
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "status must be SUCCESS, CLOSED or ABNORMAL",
            ))
        }
    };
    if req.channel == Channel::V2 {
        return from_v2(v2::control::settle_refund(&pay, &out_refund_no, status));
    }
    match settle(&pay, &out_refund_no, status, false) {
        Ok(refund) => Ok(Json(refund)),
        Err(SettleError::NotFound) => Err(error(StatusCode::NOT_FOUND, "no such out_refund_no")),
        Err(SettleError::Final(s)) => Err(error(
            StatusCode::CONFLICT,
            format!("the refund is already {s}"),
        )),
    }
}

/// A new platform certificate that signs from now on; the old one is still served (WeChat's
/// rotations overlap).
async fn rotate_certificate(State(pay): State<Pay>) -> ControlResult {
    // RSA key generation takes a while: keep it off the async workers.
    let generated = tokio::task::spawn_blocking(|| generate_platform_cert(Utc::now())).await;
    match generated {
        Ok(Ok(cert)) => {
            let serial = cert.serial_no.clone();
            pay.lock().certs.push(cert);
            Ok(Json(json!({ "serial_no": serial })))
        }
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

#[derive(Deserialize)]
struct ChannelQuery {
    #[serde(default)]
    channel: Channel,
}

async fn transaction(
    State(pay): State<Pay>,
    Path(out_trade_no): Path<String>,
    Query(query): Query<ChannelQuery>,
) -> ControlResult {
    if query.channel == Channel::V2 {
        return from_v2(v2::control::transaction(&pay, &out_trade_no));
    }
    let state = pay.lock();
    let Some(order) = state.orders.get(&out_trade_no) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "no order with that out_trade_no",
        ));
    };
    let refunds: Vec<Value> = state
        .refunds_of(&out_trade_no)
        .into_iter()
        .map(|r| r.api_json())
        .collect();
    Ok(Json(json!({
        "transaction": order.transaction_json(&pay.mchid),
        "prepay_id": order.prepay_id,
        "notify_url": order.params.notify_url,
        "refunds": refunds,
        "queries": state.queries.get(&out_trade_no).copied().unwrap_or(0),
    })))
}

async fn notifications(State(pay): State<Pay>) -> Json<Value> {
    Json(json!({ "deliveries": pay.lock().deliveries }))
}
