//! The one place where errors become HTTP: `{"error": {"code", "message"}}` with a status from
//! the error's kind. Internal details are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.0.kind();
        let code = self.0.code();
        let message = match kind {
            Kind::Internal => {
                tracing::error!(error = %self.0, code = code.as_str(), "internal error");
                "internal error".to_string()
            }
            Kind::Unavailable | Kind::Upstream => {
                tracing::warn!(error = %self.0, code = code.as_str(), "dependency unavailable");
                self.0.to_string()
            }
            _ => self.0.to_string(),
        };
        let body = json!({ "error": { "code": code.as_str(), "message": message } });
        (status_of(kind), Json(body)).into_response()
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
