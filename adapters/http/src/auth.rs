//! Who is calling: bearer tokens for customers and staff, and the staff roles.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use paystream_engine::accounts::{Role, Staff};
use paystream_engine::{ErrorCode, Kind};
use uuid::Uuid;

use crate::error::ApiError;
use crate::tokens::{CUSTOMER, STAFF};
use crate::AppState;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                Kind::Unauthenticated,
                ErrorCode::MissingToken,
                "send Authorization: Bearer <token>",
            )
        })
}

/// A logged-in mini-program user.
pub struct Customer {
    pub user_id: Uuid,
}

impl FromRequestParts<AppState> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = state.tokens.verify(bearer(parts)?, CUSTOMER)?;
        Ok(Customer {
            user_id: claims.sub,
        })
    }
}

/// A logged-in staff member, checked against the staff table on every request so that a removed
/// or disabled account, or a session ended by a password reset, loses access at once.
pub struct StaffMember(pub Staff);

impl FromRequestParts<AppState> for StaffMember {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let claims = state.tokens.verify(bearer(parts)?, STAFF)?;
        let staff = state.accounts.staff(claims.sub).await?.ok_or_else(|| {
            ApiError::new(
                Kind::Unauthenticated,
                ErrorCode::InvalidToken,
                "this staff account no longer exists",
            )
        })?;
        if staff.disabled || staff.session_version != claims.sv {
            return Err(ApiError::new(
                Kind::Unauthenticated,
                ErrorCode::InvalidToken,
                "this session has ended (password reset or account disabled); log in again",
            ));
        }
        Ok(StaffMember(staff))
    }
}

impl StaffMember {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.0.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::new(
                Kind::Forbidden,
                ErrorCode::AdminOnly,
                "this action needs the admin role",
            ))
        }
    }
}
