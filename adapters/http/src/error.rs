//! The one place where errors become HTTP: `{"error": {"code", "message"}}` with a status from
//! the error's kind. Internal details are logged, never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use paystream_engine::store::StoreError;
use paystream_engine::{Error, ErrorCode, Kind};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> ApiError {
        ApiError(e.into())
    }
}

impl ApiError {
    pub fn new(kind: Kind, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(Error::new(kind, code, message))
    }
}

pub fn status_of(kind: Kind) -> StatusCode {
    match kind {
        Kind::Invalid => StatusCode::BAD_REQUEST,
        Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::Rule => StatusCode::UNPROCESSABLE_ENTITY,
        Kind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Upstream => StatusCode::BAD_GATEWAY,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Whether the database refused a value it cannot store: PostgreSQL's SQLSTATE 22021
/// (`invalid byte sequence`, a NUL in text) or 22P05 (`unsupported Unicode escape sequence`,
/// `\u0000` in jsonb). Input checks (`text.rs`) keep such text out; should one miss a field,
/// the client still gets a 400 it will not retry rather than a 503 it would.
fn unstorable_text(e: &Error) -> bool {
    let Error::Store(StoreError::Database(e)) = e else {
        return false;
    };
    e.as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| matches!(code.as_ref(), "22021" | "22P05"))
}

/// The error's text is for clients only when it is about their request. Database errors (of any
/// kind) and internal errors are logged — inside the request's span, so with its request id —
/// and answered with a generic message: database error text names tables, constraints and
/// values, and is nobody's business outside.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if unstorable_text(&self.0) {
            tracing::warn!(error = %self.0, "the database refused text the input checks let through");
            return ApiError::new(
                Kind::Invalid,
                ErrorCode::InvalidBody,
                "the request holds text that cannot be stored (such as a U+0000 character)",
            )
            .into_response();
        }
        let kind = self.0.kind();
        let code = self.0.code();
        let message = match (&self.0, kind) {
            (_, Kind::Internal) => {
                tracing::error!(error = %self.0, code = code.as_str(), "internal error");
                "internal error; the X-Request-Id header of this answer identifies it in the log"
                    .to_string()
            }
            (Error::Store(_), Kind::Unavailable) => {
                tracing::warn!(error = %self.0, code = code.as_str(), "database unavailable");
                "the database is unavailable; retry shortly".to_string()
            }
            (Error::Store(_), _) => {
                tracing::warn!(error = %self.0, code = code.as_str(), "database error");
                "another request changed the same data at the same time; retry".to_string()
            }
            (_, Kind::Unavailable | Kind::Upstream) => {
                tracing::warn!(error = %self.0, code = code.as_str(), "dependency unavailable");
                self.0.to_string()
            }
            _ => self.0.to_string(),
        };
        let body = json!({ "error": { "code": code.as_str(), "message": message } });
        (status_of(kind), Json(body)).into_response()
    }
}

/// A 429 with a `Retry-After` header (whole seconds, rounded up): the contract's error shape,
/// and when to come back.
pub struct RetryLater {
    pub code: ErrorCode,
    pub message: &'static str,
    pub after: std::time::Duration,
}

impl IntoResponse for RetryLater {
    fn into_response(self) -> Response {
        let seconds = crate::throttle::retry_after_seconds(self.after);
        let mut response =
            ApiError::new(Kind::RateLimited, self.code, self.message).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

pub async fn no_such_endpoint() -> ApiError {
    ApiError::new(
        Kind::NotFound,
        ErrorCode::NoSuchEndpoint,
        "no such endpoint",
    )
}

pub async fn method_not_allowed() -> Response {
    let body = json!({ "error": { "code": ErrorCode::MethodNotAllowed.as_str(), "message": "this endpoint does not take that method" } });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

/// No request runs longer than this; a slow dependency gets a JSON 503, not a hung client.
/// Dropping the handler rolls back any open transaction and withdraws an append still waiting
/// for its group commit, so nothing half-done is kept; only a write whose COMMIT was already on
/// its way may still land (as with any database client).
const REQUEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn deadline(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            Kind::Unavailable,
            ErrorCode::Timeout,
            "the request took too long; retry it",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paystream_engine::store::{ExpectedVersion, StoreError};
    use serde_json::Value;

    async fn answer(response: Response) -> (StatusCode, Option<String>, Value) {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, retry_after, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn store_and_internal_errors_answer_without_their_text() {
        let corrupt = ApiError(Error::Store(StoreError::Corrupt {
            position: 7,
            reason: "relation \"events\" SQLSTATE XX001".into(),
        }));
        let (status, _, body) = answer(corrupt.into_response()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal_error");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("SQLSTATE") && !message.contains("events"),
            "{message}"
        );

        let conflict = ApiError(Error::Store(StoreError::Conflict {
            stream_id: "order-secret-stream".into(),
            expected: ExpectedVersion::Exact(1),
            actual: 2,
        }));
        let (status, _, body) = answer(conflict.into_response()).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "concurrent_update");
        assert!(!body.to_string().contains("order-secret-stream"), "{body}");

        let internal = ApiError::new(Kind::Internal, ErrorCode::InternalError, "pool says no");
        let (_, _, body) = answer(internal.into_response()).await;
        assert!(!body.to_string().contains("pool says no"), "{body}");

        // Errors about the request keep their text.
        let invalid = ApiError::new(Kind::Invalid, ErrorCode::InvalidName, "name must be …");
        let (status, _, body) = answer(invalid.into_response()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["message"], "name must be …");
    }

    #[tokio::test]
    async fn retry_later_is_a_429_with_retry_after_in_whole_seconds() {
        let later = RetryLater {
            code: ErrorCode::TooManyAttempts,
            message: "wait",
            after: std::time::Duration::from_millis(2500),
        };
        let (status, retry_after, body) = answer(later.into_response()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after.as_deref(), Some("3"));
        assert_eq!(body["error"]["code"], "too_many_attempts");
        assert_eq!(body["error"]["message"], "wait");
    }
}
