//! The back-office API (contract.md, "Back-office API"). Support staff read; admins also write.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Days, NaiveDate, Utc};
use paystream_engine::catalogue::ProductInput;
use paystream_engine::money::Fen;
use paystream_engine::orders::Metadata;
use paystream_engine::{ErrorCode, Kind};
use paystream_projections::{OrderFilter, OrderView};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::StaffMember;
use crate::customer::{parse_order_id, parse_status};
use crate::error::{ApiError, ApiResult, RetryLater};
use crate::extract::{empty_as_none, ApiJson, ApiQuery, ClientIp, RequestId};
use crate::openapi::{self, ErrorBody};
use crate::text::{PRODUCT_NAME, REFUND_REASON};
use crate::throttle::{client_key, username_key};
use crate::AppState;

/// Each endpoint with its OpenAPI operation (the handler's `#[utoipa::path]`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(list_products, create_product))
        .routes(routes!(put_product))
        .routes(routes!(search_orders))
        .routes(routes!(get_order))
        .routes(routes!(order_events))
        .routes(routes!(refund_order))
}

#[derive(Deserialize, ToSchema)]
#[schema(as = StaffLoginRequest)]
struct LoginRequest {
    username: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

const LOCKED_OUT: &str = "too many failed logins; try again after the time in Retry-After";

/// Staff login, throttled (`throttle.rs`): after 5 failures for one username, or 20 from one
/// client address, every attempt for it (whatever the password, and whether or not the username
/// exists) answers 429 `too_many_attempts` with `Retry-After` until the lockout ends; lockouts
/// double while failures go on, and a successful login clears its username's count. Refused
/// attempts check no password (and cost no hashing). Failures are logged at WARN.
#[utoipa::path(
    post,
    path = "/admin/login",
    tag = "back-office",
    operation_id = "staff_login",
    summary = "Log a staff member in",
    description = "Answers a bearer token for `/admin/*`. After 5 failures for one username, or \
        20 from one client address, every attempt for it answers 429 `too_many_attempts` with \
        `Retry-After` until the lockout ends; lockouts double while failures go on.",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = openapi::StaffSession),
        (status = 401, description = "Wrong username or password, or a disabled account \
            (`invalid_credentials`)", body = ErrorBody),
        (status = 429, description = "Locked out (`too_many_attempts`, with `Retry-After`), or \
            too many logins being checked at once (`rate_limited`)", body = ErrorBody),
    ),
)]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> axum::response::Result<impl IntoResponse> {
    let throttles = &state.throttles;
    let (username, address) = (username_key(&req.username), client_key(ip));
    let now = Instant::now();
    let locked = [
        throttles.staff_by_username.locked(&username, now),
        throttles.staff_by_address.locked(&address, now),
    ];
    if let Some(wait) = locked.into_iter().flatten().max() {
        tracing::warn!(username = ?username, client = %ip, retry_after_s = wait.as_secs(), "staff login refused: locked out");
        return Err(RetryLater {
            code: ErrorCode::TooManyAttempts,
            message: LOCKED_OUT,
            after: wait,
        }
        .into());
    }
    let staff = match state
        .accounts
        .verify_staff(&req.username, req.password)
        .await
    {
        Ok(staff) => staff,
        Err(e) if e.code() == ErrorCode::InvalidCredentials => {
            let by_name = throttles.staff_by_username.fail(username.clone(), now);
            let by_address = throttles.staff_by_address.fail(address, now);
            tracing::warn!(username = ?username, client = %ip, "staff login failed: wrong username or password");
            if let Some(lockout) = by_name.max(by_address) {
                tracing::warn!(username = ?username, client = %ip, lockout_s = lockout.as_secs(), by_username = by_name.is_some(), by_address = by_address.is_some(), "staff login locked out");
            }
            return Err(ApiError(e).into());
        }
        Err(e) => return Err(ApiError(e).into()),
    };
    throttles.staff_by_username.forgive(&username);
    let issued = state.tokens.issue_session(
        staff.id,
        crate::tokens::STAFF,
        staff.session_version,
        state.staff_session_ttl,
    )?;
    tracing::info!(staff_id = %staff.id, role = staff.role.as_str(), "staff logged in");
    Ok(Json(json!({
        "token": issued.token,
        "expires_at": issued.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "role": staff.role,
    })))
}

#[utoipa::path(
    get,
    path = "/admin/products",
    tag = "back-office",
    summary = "Every product, for sale or not",
    security(("staff_token" = [])),
    responses((status = 200, description = "The catalogue", body = openapi::ProductList)),
)]
async fn list_products(
    State(state): State<AppState>,
    _staff: StaffMember,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({ "items": state.catalogue.list(false).await? })))
}

#[utoipa::path(
    post,
    path = "/admin/products",
    tag = "back-office",
    summary = "Add a product (admin only)",
    security(("staff_token" = [])),
    request_body = openapi::ProductInput,
    responses(
        (status = 201, description = "The product", body = openapi::Product),
        (status = 400, description = "`invalid_sku`, `invalid_name`, `invalid_price`", body = ErrorBody),
        (status = 403, description = "Admins only (`admin_only`)", body = ErrorBody),
        (status = 409, description = "The sku is taken (`product_exists`)", body = ErrorBody),
    ),
)]
async fn create_product(
    State(state): State<AppState>,
    staff: StaffMember,
    ApiJson(input): ApiJson<ProductInput>,
) -> ApiResult<impl IntoResponse> {
    staff.require_admin()?;
    PRODUCT_NAME.required(&input.name)?;
    let product = state.catalogue.create(input).await?;
    tracing::info!(sku = %product.sku, staff_id = %staff.0.id, "product created");
    Ok((StatusCode::CREATED, Json(product)))
}

#[utoipa::path(
    put,
    path = "/admin/products/{sku}",
    tag = "back-office",
    summary = "Create or replace a product (admin only)",
    security(("staff_token" = [])),
    params(("sku" = String, Path, description = "1-64 of A-Z, a-z, 0-9, '-' and '_'")),
    request_body = openapi::ProductInput,
    responses(
        (status = 200, description = "The product", body = openapi::Product),
        (status = 400, description = "`invalid_sku`, `sku_mismatch`, `invalid_name`, \
            `invalid_price`", body = ErrorBody),
        (status = 403, description = "Admins only (`admin_only`)", body = ErrorBody),
    ),
)]
async fn put_product(
    State(state): State<AppState>,
    staff: StaffMember,
    Path(sku): Path<String>,
    ApiJson(input): ApiJson<ProductInput>,
) -> ApiResult<impl IntoResponse> {
    staff.require_admin()?;
    PRODUCT_NAME.required(&input.name)?;
    let product = state.catalogue.put(&sku, input).await?;
    tracing::info!(sku = %product.sku, staff_id = %staff.0.id, "product saved");
    Ok(Json(product))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SearchQuery {
    #[param(value_type = Option<openapi::OrderStatus>)]
    status: Option<String>,
    /// The customer's openid.
    openid: Option<String>,
    /// Our order number, as WeChat Pay knows it.
    out_trade_no: Option<String>,
    /// WeChat Pay's payment id.
    transaction_id: Option<String>,
    /// Placed at or after: an RFC 3339 time, or `YYYY-MM-DD` (that day in Beijing time).
    from: Option<String>,
    /// Placed before: an RFC 3339 time, or `YYYY-MM-DD` (that whole day included).
    to: Option<String>,
    /// From 1 (the default).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(minimum = 1)]
    page: Option<u32>,
    /// 20 by default, 100 at most.
    #[serde(default, deserialize_with = "empty_as_none")]
    per_page: Option<u32>,
}

/// An RFC 3339 instant, or a date meaning that day in Beijing time; `end` makes a date inclusive
/// (the bound becomes the start of the next day).
pub(crate) fn parse_bound(
    value: Option<&str>,
    name: &str,
    end: bool,
) -> ApiResult<Option<DateTime<Utc>>> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
        ApiError::new(
            Kind::Invalid,
            ErrorCode::InvalidQuery,
            format!("{name} must be YYYY-MM-DD or an RFC 3339 time"),
        )
    })?;
    let date = if end {
        date.checked_add_days(Days::new(1)).unwrap_or(date)
    } else {
        date
    };
    let start = date
        .and_hms_opt(0, 0, 0)
        .and_then(|t| {
            t.and_local_timezone(paystream_engine::beijing::OFFSET)
                .single()
        })
        .map(|t| t.with_timezone(&Utc));
    Ok(start)
}

/// A text filter: blank means no filter; control characters (which PostgreSQL text cannot hold)
/// are bad input.
pub(crate) fn text_filter(v: Option<String>, name: &str) -> ApiResult<Option<String>> {
    let v = v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if v.as_ref()
        .is_some_and(|s| s.len() > 128 || !crate::text::clean(s))
    {
        return Err(ApiError::new(
            Kind::Invalid,
            ErrorCode::InvalidQuery,
            format!("{name} is not a valid value"),
        ));
    }
    Ok(v)
}

/// The filters of an order search as the query string has them (`/admin/orders`, and its CSV).
pub(crate) struct OrderFilterQuery {
    pub status: Option<String>,
    pub openid: Option<String>,
    pub out_trade_no: Option<String>,
    pub transaction_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The search those filters ask for; bad values are a 400 `invalid_query` naming the field.
pub(crate) fn order_filter(q: OrderFilterQuery) -> ApiResult<OrderFilter> {
    Ok(OrderFilter {
        user_id: None,
        status: parse_status(q.status.as_deref())?,
        openid: text_filter(q.openid, "openid")?,
        out_trade_no: text_filter(q.out_trade_no, "out_trade_no")?,
        transaction_id: text_filter(q.transaction_id, "transaction_id")?,
        from: parse_bound(q.from.as_deref(), "from", false)?,
        to: parse_bound(q.to.as_deref(), "to", true)?,
    })
}

#[utoipa::path(
    get,
    path = "/admin/orders",
    tag = "back-office",
    summary = "Search orders, newest first",
    security(("staff_token" = [])),
    params(SearchQuery),
    responses((status = 200, description = "One page of orders", body = openapi::OrderPage)),
)]
async fn search_orders(
    State(state): State<AppState>,
    _staff: StaffMember,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<impl IntoResponse> {
    let filter = order_filter(OrderFilterQuery {
        status: q.status,
        openid: q.openid,
        out_trade_no: q.out_trade_no,
        transaction_id: q.transaction_id,
        from: q.from,
        to: q.to,
    })?;
    let page = state
        .orders_view
        .search(&filter, q.page.unwrap_or(1), q.per_page.unwrap_or(20))
        .await?;
    Ok(Json(page))
}

#[utoipa::path(
    get,
    path = "/admin/orders/{id}",
    tag = "back-office",
    operation_id = "get_order_for_staff",
    summary = "An order with its customer, payments and refunds",
    security(("staff_token" = [])),
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = openapi::StaffOrder),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
    ),
)]
async fn get_order(
    State(state): State<AppState>,
    _staff: StaffMember,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let order = state.orders.get(parse_order_id(&id)?).await?;
    let mut body = serde_json::to_value(OrderView::from(&order))
        .map_err(|e| ApiError::new(Kind::Internal, ErrorCode::InternalError, e.to_string()))?;
    body["user_id"] = json!(order.user_id);
    body["openid"] = json!(order.openid);
    body["payments"] = json!(order.payments);
    body["refunds"] = json!(order.refunds);
    body["refundable_fen"] = json!(order.refundable_fen());
    if let Some(reason) = order.close_reason {
        body["close_reason"] = json!(reason);
    }
    Ok(Json(body))
}

#[utoipa::path(
    get,
    path = "/admin/orders/{id}/events",
    tag = "back-office",
    summary = "An order's event stream, oldest first",
    security(("staff_token" = [])),
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The events", body = openapi::OrderEvents),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
    ),
)]
async fn order_events(
    State(state): State<AppState>,
    _staff: StaffMember,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_order_id(&id)?;
    let events = state.orders.history(id).await?;
    if events.is_empty() {
        return Err(crate::customer::order_not_found());
    }
    let items: Vec<_> = events
        .iter()
        .map(|e| {
            json!({
                "event_id": e.event_id,
                "version": e.version,
                "type": e.event_type,
                "recorded_at": e.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "data": e.data,
                "metadata": e.metadata,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefundRequest {
    /// Integer fen, positive, at most what is left to refund.
    amount_fen: i64,
    #[serde(default)]
    #[schema(nullable = false)]
    reason: Option<String>,
}

/// 202: the refund is recorded and asked for; its outcome arrives by notice or query.
#[utoipa::path(
    post,
    path = "/admin/orders/{id}/refunds",
    tag = "back-office",
    summary = "Refund (part of) a paid order (admin only)",
    description = "The refund is recorded and asked for at WeChat Pay; its outcome arrives \
        later. With an `Idempotency-Key`, the same request again answers the same refund.",
    security(("staff_token" = [])),
    params(
        ("id" = Uuid, Path, description = "The order's id"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, description = "1-128 characters"),
    ),
    request_body = RefundRequest,
    responses(
        (status = 202, description = "Recorded and asked for", body = openapi::RefundAccepted),
        (status = 400, description = "`invalid_amount`, `invalid_reason`", body = ErrorBody),
        (status = 403, description = "Admins only (`admin_only`)", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "Not refundable (`order_not_refundable`), or the key was \
            used for another refund (`refund_conflict`)", body = ErrorBody),
        (status = 422, description = "More than is left to refund (`refund_exceeds_refundable`), \
            or too many refunds (`too_many_refunds`)", body = ErrorBody),
        (status = 502, description = "WeChat Pay refused (`wechatpay_rejected`)", body = ErrorBody),
    ),
)]
async fn refund_order(
    State(state): State<AppState>,
    staff: StaffMember,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<RefundRequest>,
) -> ApiResult<impl IntoResponse> {
    staff.require_admin()?;
    let order_id = parse_order_id(&id)?;
    let amount = Fen::new(req.amount_fen)
        .filter(|a| a.get() > 0)
        .ok_or_else(|| {
            ApiError::new(
                Kind::Invalid,
                ErrorCode::InvalidAmount,
                "amount_fen must be a positive number of fen",
            )
        })?;
    let reason = REFUND_REASON.optional(req.reason.as_deref())?;
    let key = crate::customer::idempotency_key(&headers)?;
    let meta = Metadata::actor(format!("staff:{}", staff.0.id)).with_request_id(request_id);
    let refund = state
        .payments
        .refund(order_id, amount, reason, key.as_deref(), &meta)
        .await?;
    tracing::info!(order_id = %order_id, out_refund_no = %refund.out_refund_no, amount_fen = refund.amount_fen.get(), "refund requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({ "out_refund_no": refund.out_refund_no, "amount_fen": refund.amount_fen, "status": refund.status }),
        ),
    ))
}
