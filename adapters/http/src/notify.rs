//! Where WeChat Pay calls back. Answers in WeChat's dialect: 204 = received; any 4xx/5xx with
//! `{"code":"FAIL","message"}` = "send it again". Only a verified, decrypted notice that matches
//! one of our orders is believed; everything is decided on the raw body bytes.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use paystream_engine::order::PayChannel;
use paystream_engine::payments::gateway::{NotifyError, NotifyHeaders};
use serde_json::json;

use crate::error::status_of;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/notify/wechatpay/v3", post(wechatpay_v3))
}

fn fail(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "code": "FAIL", "message": message }))).into_response()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn wechatpay_v3(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(gateway) = state.payments.gateway(PayChannel::WechatpayV3) else {
        return fail(StatusCode::NOT_FOUND, "WeChat Pay v3 is not configured");
    };
    let signed = NotifyHeaders {
        timestamp: header(&headers, "wechatpay-timestamp"),
        nonce: header(&headers, "wechatpay-nonce"),
        signature: header(&headers, "wechatpay-signature"),
        serial: header(&headers, "wechatpay-serial"),
        signature_type: header(&headers, "wechatpay-signature-type"),
    };
    let notice = match gateway.verify_notify(&signed, &body).await {
        Ok(notice) => notice,
        Err(NotifyError::Unverified(reason)) => {
            tracing::warn!(%reason, "rejected an unverifiable WeChat Pay notification");
            return fail(StatusCode::UNAUTHORIZED, "signature verification failed");
        }
        Err(NotifyError::Malformed(reason)) => {
            tracing::warn!(%reason, "rejected a malformed WeChat Pay notification");
            return fail(StatusCode::BAD_REQUEST, "malformed notification");
        }
    };
    match state
        .payments
        .on_notice(PayChannel::WechatpayV3, notice)
        .await
    {
        Ok(outcome) => {
            tracing::debug!(?outcome, "WeChat Pay notification handled");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, code = e.code(), "WeChat Pay notification not acknowledged");
            fail(status_of(e.kind()), e.code())
        }
    }
}
