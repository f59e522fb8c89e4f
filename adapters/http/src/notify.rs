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
use paystream_engine::payments::gateway::RawNotice;
use paystream_engine::payments::NoticeError;
use serde_json::json;

use crate::error::status_of;
use crate::AppState;

/// Where WeChat Pay APIv3 sends notifications (the wiring gives the gateway this URL).
pub const WECHATPAY_V3_PATH: &str = "/notify/wechatpay/v3";

pub fn routes() -> Router<AppState> {
    Router::new().route(WECHATPAY_V3_PATH, post(wechatpay_v3))
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

async fn wechatpay_v3(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let raw = raw_notice(&headers, &body);
    match state
        .payments
        .receive_notice(PayChannel::WechatpayV3, &raw)
        .await
    {
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
            tracing::warn!(error = %e, code = e.code(), "WeChat Pay notification not acknowledged");
            fail(status_of(e.kind()), e.code())
        }
    }
}
