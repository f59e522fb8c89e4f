//! Staff management (issue 11): admins list, create, disable and enable staff accounts and reset
//! their passwords. Support staff get 403 `admin_only` on all of it. Password hashes never leave
//! the engine. Every change is logged at INFO with the acting admin and the target account.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use paystream_engine::accounts::{Role, Staff};
use paystream_engine::ErrorCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::StaffMember;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::openapi::{self, ErrorBody};
use crate::text::STAFF_USERNAME;
use crate::throttle::username_key;
use crate::AppState;

/// Each endpoint with its OpenAPI operation (the handler's `#[utoipa::path]`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(reset_password))
        .routes(routes!(disable))
        .routes(routes!(enable))
}

/// A staff account as the API shows it: no id, no hash, no session version.
#[derive(Serialize, ToSchema)]
#[schema(as = StaffAccount)]
struct StaffView {
    username: String,
    #[schema(value_type = openapi::Role)]
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

/// Every staff account.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the answer of `list`, which is built with `json!`.
struct StaffAccounts {
    items: Vec<StaffView>,
}

#[utoipa::path(
    get,
    path = "/admin/staff",
    tag = "back-office",
    operation_id = "list_staff",
    summary = "Every staff account (admin only)",
    security(("staff_token" = [])),
    responses(
        (status = 200, description = "The accounts", body = StaffAccounts),
        (status = 403, description = "Admins only (`admin_only`)", body = ErrorBody),
    ),
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewStaffAccount)]
struct CreateRequest {
    username: String,
    /// At least as long as the engine's minimum (`weak_password` otherwise).
    #[schema(value_type = String, format = Password)]
    password: SecretString,
    #[schema(value_type = openapi::Role)]
    role: Role,
}

#[utoipa::path(
    post,
    path = "/admin/staff",
    tag = "back-office",
    operation_id = "create_staff",
    summary = "Create a staff account (admin only)",
    security(("staff_token" = [])),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "The account", body = StaffView),
        (status = 400, description = "`invalid_username`, `weak_password`", body = ErrorBody),
        (status = 403, description = "Admins only (`admin_only`)", body = ErrorBody),
        (status = 409, description = "The username is taken (`staff_exists`)", body = ErrorBody),
    ),
)]
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewStaffPassword)]
struct PasswordRequest {
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

/// Sets a new password and ends the account's sessions (its tokens carry an older session
/// version); also lifts a login lockout of that username.
#[utoipa::path(
    post,
    path = "/admin/staff/{username}/password",
    tag = "back-office",
    summary = "Set a staff account's password, ending its sessions (admin only)",
    security(("staff_token" = [])),
    params(("username" = String, Path, description = "The staff account's username")),
    request_body = PasswordRequest,
    responses(
        (status = 200, description = "The account", body = StaffView),
        (status = 400, description = "`weak_password`", body = ErrorBody),
        (status = 403, description = "Admins only (`admin_only`)", body = ErrorBody),
        (status = 404, description = "No such account (`staff_not_found`)", body = ErrorBody),
    ),
)]
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

#[utoipa::path(
    post,
    path = "/admin/staff/{username}/disable",
    tag = "back-office",
    summary = "Disable a staff account (admin only)",
    description = "Its sessions end. An admin cannot disable their own account \
        (`cannot_disable_self`), nor the last enabled admin (`last_admin`).",
    security(("staff_token" = [])),
    params(("username" = String, Path, description = "The staff account's username")),
    responses(
        (status = 200, description = "The account", body = StaffView),
        (status = 403, description = "Admins only (`admin_only`)", body = ErrorBody),
        (status = 404, description = "No such account (`staff_not_found`)", body = ErrorBody),
        (status = 409, description = "`cannot_disable_self`, `last_admin`", body = ErrorBody),
    ),
)]
async fn disable(
    State(state): State<AppState>,
    staff: StaffMember,
    Path(username): Path<String>,
) -> ApiResult<impl IntoResponse> {
    set_disabled(state, staff, username, true).await
}

#[utoipa::path(
    post,
    path = "/admin/staff/{username}/enable",
    tag = "back-office",
    summary = "Enable a disabled staff account (admin only)",
    security(("staff_token" = [])),
    params(("username" = String, Path, description = "The staff account's username")),
    responses(
        (status = 200, description = "The account", body = StaffView),
        (status = 403, description = "Admins only (`admin_only`)", body = ErrorBody),
        (status = 404, description = "No such account (`staff_not_found`)", body = ErrorBody),
    ),
)]
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
