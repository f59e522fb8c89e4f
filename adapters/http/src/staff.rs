//! Staff management (issue 11): admins list, create, disable and enable staff accounts and reset
//! their passwords. Support staff get 403 `admin_only` on all of it. Password hashes never leave
//! the engine. Every change is logged at INFO with the acting admin and the target account.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use paystream_engine::accounts::{Role, Staff};
use paystream_engine::ErrorCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::StaffMember;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::text::STAFF_USERNAME;
use crate::throttle::username_key;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/staff", get(list).post(create))
        .route("/admin/staff/{username}/password", post(reset_password))
        .route("/admin/staff/{username}/disable", post(disable))
        .route("/admin/staff/{username}/enable", post(enable))
}

/// A staff account as the API shows it: no id, no hash, no session version.
#[derive(Serialize)]
struct StaffView {
    username: String,
    role: Role,
    disabled: bool,
    created_at: DateTime<Utc>,
}

impl From<Staff> for StaffView {
    fn from(staff: Staff) -> StaffView {
        StaffView {
            username: staff.username,
            role: staff.role,
            disabled: staff.disabled,
            created_at: staff.created_at,
        }
    }
}

/// The admin making the request, or 403 `admin_only`.
fn admin(staff: &StaffMember) -> ApiResult<&Staff> {
    staff.require_admin()?;
    Ok(&staff.0)
}

/// A username from the path. One that no account can have (control characters, too long) is
/// simply not found, and never reaches the database.
fn target(username: &str) -> ApiResult<&str> {
    if username.is_empty() || username.len() > 64 || !crate::text::clean(username) {
        return Err(ApiError::new(
            paystream_engine::Kind::NotFound,
            ErrorCode::StaffNotFound,
            "no such staff account",
        ));
    }
    Ok(username)
}

async fn list(State(state): State<AppState>, staff: StaffMember) -> ApiResult<impl IntoResponse> {
    admin(&staff)?;
    let items: Vec<StaffView> = state
        .accounts
        .list_staff()
        .await?
        .into_iter()
        .map(StaffView::from)
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    username: String,
    password: SecretString,
    role: Role,
}

async fn create(
    State(state): State<AppState>,
    staff: StaffMember,
    ApiJson(req): ApiJson<CreateRequest>,
) -> ApiResult<impl IntoResponse> {
    let actor = admin(&staff)?;
    let username = STAFF_USERNAME.required(&req.username)?;
    let created = state
        .accounts
        .create_staff(&username, req.password, req.role)
        .await?;
    tracing::info!(
        actor = %actor.username,
        actor_id = %actor.id,
        target = %created.username,
        role = created.role.as_str(),
        "staff account created"
    );
    Ok((StatusCode::CREATED, Json(StaffView::from(created))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    password: SecretString,
}

/// Sets a new password and ends the account's sessions (its tokens carry an older session
/// version); also lifts a login lockout of that username.
async fn reset_password(
    State(state): State<AppState>,
    staff: StaffMember,
    Path(username): Path<String>,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> ApiResult<impl IntoResponse> {
    let actor = admin(&staff)?;
    let username = target(&username)?;
    let changed = state
        .accounts
        .reset_staff_password(username, req.password)
        .await?;
    state
        .throttles
        .staff_by_username
        .forgive(&username_key(&changed.username));
    tracing::info!(
        actor = %actor.username,
        actor_id = %actor.id,
        target = %changed.username,
        "staff password reset; the account's sessions ended"
    );
    Ok(Json(StaffView::from(changed)))
}

async fn disable(
    State(state): State<AppState>,
    staff: StaffMember,
    Path(username): Path<String>,
) -> ApiResult<impl IntoResponse> {
    set_disabled(state, staff, username, true).await
}

async fn enable(
    State(state): State<AppState>,
    staff: StaffMember,
    Path(username): Path<String>,
) -> ApiResult<impl IntoResponse> {
    set_disabled(state, staff, username, false).await
}

async fn set_disabled(
    state: AppState,
    staff: StaffMember,
    username: String,
    disabled: bool,
) -> ApiResult<Json<StaffView>> {
    let actor = admin(&staff)?;
    let username = target(&username)?;
    let changed = state
        .accounts
        .set_staff_disabled(actor.id, username, disabled)
        .await?;
    tracing::info!(
        actor = %actor.username,
        actor_id = %actor.id,
        target = %changed.username,
        "staff account {}",
        if disabled { "disabled" } else { "enabled" }
    );
    Ok(Json(StaffView::from(changed)))
}
