//! Around every `/v3` call: check the merchant's signature over the exact request, apply injected
//! faults, and sign the exact answer bytes.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use paystream_wechatpay::v3::sign::{
    check_timestamp, parse_authorization, request_message_bytes, verify_sha256_rsa,
};

use super::ids::request_id;
use super::signing::{probe, signature_headers, WECHATPAY_SERIAL};
use super::validate::ApiError;
use super::Pay;

/// WeChat's bodies are small; a megabyte is far beyond any legitimate request.
const MAX_BODY: usize = 1 << 20;

pub(crate) async fn guard(State(pay): State<Pay>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    // The client signed the path it sent, prefix included; axum's `nest` strips the prefix from
    // `parts.uri`, `OriginalUri` keeps it.
    let path_and_query = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |o| &o.0)
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let requested_serial = parts
        .headers
        .get(WECHATPAY_SERIAL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let mut sign_error = false;
    let answer = match axum::body::to_bytes(body, MAX_BODY).await {
        Err(_) => ApiError::param("请求体过大").into_response(),
        Ok(bytes) => match check_headers(&parts, &bytes)
            .and_then(|()| verify(&pay, &parts, &path_and_query, &bytes))
        {
            Err(e) => {
                tracing::info!(path = %path_and_query, code = %e.code, reason = ?e.detail, "wechatpay sandbox: request refused");
                sign_error = e.status == StatusCode::UNAUTHORIZED;
                e.into_response()
            }
            Ok(()) => handle(&pay, parts, bytes, &path_and_query, next).await,
        },
    };

    let (delay_ms, signing) = {
        let mut state = pay.lock();
        let faults = &mut state.faults;
        // The bill download first: WeChat signs none, so it must not use up an armed
        // `unsigned_next` meant for an answer that would have been signed.
        let signing = if answer.extensions().get::<super::bills::UnsignedAnswer>().is_some()
            // WeChat never signs a 401 SIGN_ERROR: it cannot tell whom it is talking to.
            || sign_error
            || faults.take_unsigned(&path_and_query)
            || (faults.unsigned_errors && answer.status().is_client_error())
        {
            Signing::None
        } else if faults.probe_now() {
            Signing::Probe
        } else {
            Signing::Real
        };
        (faults.delay_ms, signing)
    };
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    seal(&pay, answer, requested_serial.as_deref(), signing).await
}

/// How an answer is signed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Signing {
    Real,
    /// A `WECHATPAY/SIGNTEST/` probe: must fail the merchant's verification.
    Probe,
    None,
}

/// The headers WeChat requires before it looks at the signature: a `User-Agent`, an `Accept`
/// that takes JSON, and `Content-Type: application/json` on a request with a body.
fn check_headers(parts: &Parts, body: &[u8]) -> Result<(), ApiError> {
    let header = |name: axum::http::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if header(axum::http::header::USER_AGENT).is_none() {
        return Err(ApiError::param("HTTP请求头缺少User-Agent"));
    }
    let accepts_json = header(axum::http::header::ACCEPT)
        .is_some_and(|v| v.contains("application/json") || v.contains("*/*"));
    if !accepts_json {
        return Err(ApiError::param("HTTP请求头Accept应为application/json"));
    }
    if !body.is_empty() {
        let json = header(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(ApiError::param(
                "HTTP请求头Content-Type应为application/json",
            ));
        }
    }
    Ok(())
}

/// Run the handler, unless an injected failure pre-empts it (or, `after_processing`, replaces
/// its answer: the call took effect but the merchant never learns it).
async fn handle(pay: &Pay, parts: Parts, body: Bytes, path: &str, next: Next) -> Response {
    let failure = pay.lock().faults.take_failure(path);
    let injected = |status: u16, code: &str| {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, code, "系统错误（由沙箱注入）").into_response()
    };
    match failure {
        Some((status, code, false)) => injected(status, &code),
        Some((status, code, true)) => {
            next.run(Request::from_parts(parts, Body::from(body))).await;
            injected(status, &code)
        }
        None => next.run(Request::from_parts(parts, Body::from(body))).await,
    }
}

/// The checks WeChat makes on `Authorization` before anything else; all failures are 401
/// `SIGN_ERROR`.
fn verify(pay: &Pay, parts: &Parts, path_and_query: &str, body: &[u8]) -> Result<(), ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::sign_error("Authorization header is missing"))?
        .to_str()
        .map_err(|_| ApiError::sign_error("Authorization header is not ASCII"))?;
    let auth = parse_authorization(header).map_err(|e| ApiError::sign_error(e.to_string()))?;
    if auth.mchid != pay.mchid {
        return Err(ApiError::sign_error("mchid is not this merchant"));
    }
    if auth.serial_no != pay.merchant_serial {
        return Err(ApiError::sign_error(
            "serial_no is not the merchant API certificate's serial",
        ));
    }
    check_timestamp(&auth.timestamp, Utc::now().timestamp())
        .map_err(|e| ApiError::sign_error(e.to_string()))?;
    let message = request_message_bytes(
        parts.method.as_str(),
        path_and_query,
        &auth.timestamp,
        &auth.nonce_str,
        body,
    );
    if !verify_sha256_rsa(&pay.merchant_public_key, message, &auth.signature) {
        return Err(ApiError::sign_error(
            "signature does not match METHOD\\nPATH?QUERY\\nTIMESTAMP\\nNONCE\\nBODY\\n",
        ));
    }
    Ok(())
}

/// Add `Request-ID` and, unless told not to, the signature over the exact answer bytes.
async fn seal(
    pay: &Pay,
    answer: Response,
    requested_serial: Option<&str>,
    signing: Signing,
) -> Response {
    let (mut parts, body) = answer.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        parts
            .headers
            .insert(HeaderName::from_static("request-id"), id);
    }
    if signing != Signing::None {
        let headers = pay
            .answer_signer(requested_serial)
            .ok_or_else(|| "no signing key".to_string())
            .and_then(|signer| signature_headers(&signer, &bytes))
            .map(|headers| match signing {
                Signing::Probe => probe(headers),
                _ => headers,
            });
        match headers {
            Ok(headers) => parts.headers.extend(headers),
            Err(e) => {
                tracing::error!(error = %e, "wechatpay sandbox: cannot sign an answer");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}
