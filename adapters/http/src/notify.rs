//! Where WeChat Pay calls back. Each endpoint hands the raw notice to the engine in one call and
//! answers in that API's dialect — v3: 204 = received, any 4xx/5xx with
//! `{"code":"FAIL","message"}` = "send it again"; v2: the `return_code` XML, SUCCESS = received.
//! Only a verified (or, for v2 refunds, decrypted) notice that matches one of our orders is
//! believed; the gateway decides on the raw body bytes.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use paystream_engine::order::PayChannel;
use paystream_engine::payments::gateway::RawNotice;
use paystream_engine::payments::{NoticeError, NoticeOutcome};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::status_of;
use crate::openapi::NotifyFailure;
use crate::{telemetry, AppState};

/// Where WeChat Pay APIv3 sends notifications (the wiring gives the gateway this URL).
pub const WECHATPAY_V3_PATH: &str = "/notify/wechatpay/v3";

/// Where WeChat Pay APIv2 sends pay notifies.
pub const WECHATPAY_V2_PATH: &str = "/notify/wechatpay/v2";
/// Where WeChat Pay APIv2 sends refund notifies (given as `notify_url` with each refund).
pub const WECHATPAY_V2_REFUND_PATH: &str = "/notify/wechatpay/v2/refund";

/// WeChat's notifications are a few kilobytes; anything near this is not one.
const MAX_NOTICE_BYTES: usize = 64 * 1024;

/// Each endpoint with its OpenAPI operation (the handler's `#[utoipa::path]`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(wechatpay_v3))
        .routes(routes!(wechatpay_v2))
        .routes(routes!(wechatpay_v2_refund))
        .layer(DefaultBodyLimit::max(MAX_NOTICE_BYTES))
}

fn fail(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "code": "FAIL", "message": message }))).into_response()
}

/// Every header, as the gateway decides which ones carry its proof.
fn raw_notice<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> RawNotice<'a> {
    RawNotice {
        headers: headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect(),
        body,
    }
}

/// Hands a notice to the engine and counts what became of it (`notifications_total`).
async fn receive(
    state: &AppState,
    channel: PayChannel,
    raw: &RawNotice<'_>,
) -> Result<NoticeOutcome, NoticeError> {
    let result = state.payments.receive_notice(channel, raw).await;
    telemetry::notice(channel, &result);
    result
}

#[utoipa::path(
    post,
    path = WECHATPAY_V3_PATH,
    tag = "notify",
    summary = "WeChat Pay APIv3 notifications: TRANSACTION.SUCCESS and REFUND.*",
    description = "Authenticated by WeChat Pay's signature (the `Wechatpay-Signature`, \
        `-Timestamp`, `-Nonce` and `-Serial` headers over the raw body), not by a token; the \
        resource is AES-GCM encrypted with the APIv3 key. Answers in WeChat Pay's dialect: \
        204 = received, anything else = send it again.",
    request_body(content = Object, content_type = "application/json", description = "The signed notification"),
    responses(
        (status = 204, description = "Received"),
        (status = 400, description = "Malformed", body = NotifyFailure),
        (status = 401, description = "The signature does not verify", body = NotifyFailure),
        (status = 404, description = "Not one of our orders", body = NotifyFailure),
        (status = 413, description = "Too large to be a notification", body = NotifyFailure),
        (status = 503, description = "Not recorded now: send it again", body = NotifyFailure),
    ),
)]
async fn wechatpay_v3(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        tracing::warn!("rejected an oversized or unreadable WeChat Pay notification");
        return fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large or unreadable",
        );
    };
    let raw = raw_notice(&headers, &body);
    match receive(&state, PayChannel::WechatpayV3, &raw).await {
        Ok(outcome) => {
            tracing::debug!(?outcome, "WeChat Pay notification handled");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(NoticeError::Unverifiable(reason)) => {
            tracing::warn!(%reason, "rejected an unverifiable WeChat Pay notification");
            fail(StatusCode::UNAUTHORIZED, "signature verification failed")
        }
        Err(NoticeError::Malformed(reason)) => {
            tracing::warn!(%reason, "rejected a malformed WeChat Pay notification");
            fail(StatusCode::BAD_REQUEST, "malformed notification")
        }
        Err(NoticeError::NotOurs(reason)) => {
            tracing::warn!(%reason, "WeChat Pay notification not ours; not acknowledged");
            fail(StatusCode::NOT_FOUND, "not ours")
        }
        Err(NoticeError::Failed(e)) => {
            tracing::warn!(error = %e, code = e.code().as_str(), "WeChat Pay notification not acknowledged");
            fail(status_of(e.kind()), e.code().as_str())
        }
    }
}

/// An APIv2 answer: `<xml><return_code>…</return_code><return_msg>…</return_msg></xml>`. Only
/// SUCCESS is an acknowledgement (WeChat retries on anything else, a bare `success` included).
/// The messages are our own fixed words, so nothing needs escaping.
fn v2_answer(status: StatusCode, return_code: &str, return_msg: &'static str) -> Response {
    let body = format!(
        "<xml><return_code><![CDATA[{return_code}]]></return_code><return_msg><![CDATA[{return_msg}]]></return_msg></xml>"
    );
    (status, [(CONTENT_TYPE, "text/xml; charset=utf-8")], body).into_response()
}

/// The answers of both APIv2 endpoints, for the OpenAPI document: the `return_code` XML, where
/// only SUCCESS acknowledges (built by [`v2_answer`]).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Describes; the answers are built by `v2_answer`.
enum V2Answer {
    #[response(
        status = 200,
        description = "Received: `<xml><return_code>SUCCESS</return_code>…</xml>`",
        content_type = "text/xml"
    )]
    Received(String),
    #[response(
        status = 400,
        description = "Malformed; `return_code` FAIL, WeChat Pay sends it again",
        content_type = "text/xml"
    )]
    Malformed(String),
    #[response(
        status = 401,
        description = "Not signed (or encrypted) by WeChat Pay; `return_code` FAIL",
        content_type = "text/xml"
    )]
    Unverifiable(String),
    #[response(
        status = 404,
        description = "Not one of our orders; `return_code` FAIL",
        content_type = "text/xml"
    )]
    NotOurs(String),
    #[response(
        status = 503,
        description = "Not recorded now; `return_code` FAIL, WeChat Pay sends it again",
        content_type = "text/xml"
    )]
    NotRecorded(String),
}

/// Pay and refund notifies alike: the gateway tells them apart by their content (a refund
/// notify's proof is its encrypted `req_info`, a pay notify's its `sign`).
#[utoipa::path(
    post,
    path = WECHATPAY_V2_PATH,
    tag = "notify",
    summary = "WeChat Pay APIv2 pay notifications",
    description = "Authenticated by the `sign` in the XML (MD5 or HMAC-SHA256 with the APIv2 \
        key), not by a token. Answers with the `return_code` XML; only SUCCESS acknowledges.",
    request_body(content = String, content_type = "text/xml", description = "The signed notification"),
    responses(V2Answer),
)]
async fn wechatpay_v2(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        tracing::warn!("rejected an oversized or unreadable WeChat Pay v2 notification");
        return v2_answer(StatusCode::PAYLOAD_TOO_LARGE, "FAIL", "body too large");
    };
    let raw = raw_notice(&headers, &body);
    match receive(&state, PayChannel::WechatpayV2, &raw).await {
        Ok(outcome) => {
            tracing::debug!(?outcome, "WeChat Pay v2 notification handled");
            v2_answer(StatusCode::OK, "SUCCESS", "OK")
        }
        Err(NoticeError::Unverifiable(reason)) => {
            tracing::warn!(%reason, "rejected an unverifiable WeChat Pay v2 notification");
            v2_answer(
                StatusCode::UNAUTHORIZED,
                "FAIL",
                "signature verification failed",
            )
        }
        Err(NoticeError::Malformed(reason)) => {
            tracing::warn!(%reason, "rejected a malformed WeChat Pay v2 notification");
            v2_answer(StatusCode::BAD_REQUEST, "FAIL", "malformed notification")
        }
        Err(NoticeError::NotOurs(reason)) => {
            tracing::warn!(%reason, "WeChat Pay v2 notification not ours; not acknowledged");
            v2_answer(StatusCode::NOT_FOUND, "FAIL", "not ours")
        }
        Err(NoticeError::Failed(e)) => {
            tracing::warn!(error = %e, code = e.code().as_str(), "WeChat Pay v2 notification not acknowledged");
            v2_answer(status_of(e.kind()), "FAIL", "not recorded, send again")
        }
    }
}

/// APIv2 refund notifies come to their own URL (the `notify_url` of each refund) but are handled
/// like pay notifies: the gateway tells them apart by their content.
#[utoipa::path(
    post,
    path = WECHATPAY_V2_REFUND_PATH,
    tag = "notify",
    summary = "WeChat Pay APIv2 refund notifications",
    description = "Authenticated by the `req_info`, AES-256-ECB encrypted with the MD5 of the \
        APIv2 key, not by a token. Answers with the `return_code` XML; only SUCCESS acknowledges.",
    request_body(content = String, content_type = "text/xml", description = "The encrypted notification"),
    responses(V2Answer),
)]
async fn wechatpay_v2_refund(
    state: State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    wechatpay_v2(state, headers, body).await
}
