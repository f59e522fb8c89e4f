//! The back-office API (contract.md, "Back-office API"). Support staff read; admins also write.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Days, FixedOffset, NaiveDate, Utc};
use paystream_engine::catalogue::ProductInput;
use paystream_engine::money::Fen;
use paystream_engine::orders::Metadata;
use paystream_engine::{ErrorCode, Kind};
use paystream_projections::{OrderFilter, OrderView};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use crate::auth::StaffMember;
use crate::customer::{parse_order_id, parse_status};
use crate::error::{ApiError, ApiResult};
use crate::extract::{empty_as_none, ApiJson, ApiQuery, RequestId};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/", get(ui))
        .route("/admin/login", post(login))
        .route("/admin/products", get(list_products).post(create_product))
        .route("/admin/products/{sku}", put(put_product))
        .route("/admin/orders", get(search_orders))
        .route("/admin/orders/{id}", get(get_order))
        .route("/admin/orders/{id}/events", get(order_events))
        .route("/admin/orders/{id}/refunds", post(refund_order))
}

async fn ui() -> Html<&'static str> {
    Html(include_str!("admin.html"))
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: SecretString,
}

async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<impl IntoResponse> {
    let staff = state
        .accounts
        .verify_staff(&req.username, req.password)
        .await?;
    let issued = state
        .tokens
        .issue(staff.id, crate::tokens::STAFF, state.staff_session_ttl)?;
    tracing::info!(staff_id = %staff.id, role = staff.role.as_str(), "staff logged in");
    Ok(Json(json!({
        "token": issued.token,
        "expires_at": issued.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "role": staff.role,
    })))
}

async fn list_products(
    State(state): State<AppState>,
    _staff: StaffMember,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({ "items": state.catalogue.list(false).await? })))
}

async fn create_product(
    State(state): State<AppState>,
    staff: StaffMember,
    ApiJson(input): ApiJson<ProductInput>,
) -> ApiResult<impl IntoResponse> {
    staff.require_admin()?;
    let product = state.catalogue.create(input).await?;
    tracing::info!(sku = %product.sku, staff_id = %staff.0.id, "product created");
    Ok((StatusCode::CREATED, Json(product)))
}

async fn put_product(
    State(state): State<AppState>,
    staff: StaffMember,
    Path(sku): Path<String>,
    ApiJson(input): ApiJson<ProductInput>,
) -> ApiResult<impl IntoResponse> {
    staff.require_admin()?;
    let product = state.catalogue.put(&sku, input).await?;
    tracing::info!(sku = %product.sku, staff_id = %staff.0.id, "product saved");
    Ok(Json(product))
}

#[derive(Deserialize)]
struct SearchQuery {
    status: Option<String>,
    openid: Option<String>,
    out_trade_no: Option<String>,
    transaction_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    page: Option<u32>,
    #[serde(default, deserialize_with = "empty_as_none")]
    per_page: Option<u32>,
}

/// Merchants think in Beijing days.
fn china() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8")
}

/// An RFC 3339 instant, or a date meaning that day in Beijing time; `end` makes a date inclusive
/// (the bound becomes the start of the next day).
fn parse_bound(value: Option<&str>, name: &str, end: bool) -> ApiResult<Option<DateTime<Utc>>> {
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
        .and_then(|t| t.and_local_timezone(china()).single())
        .map(|t| t.with_timezone(&Utc));
    Ok(start)
}

/// A text filter: blank means no filter; control characters (which PostgreSQL text cannot hold)
/// are bad input.
fn text_filter(v: Option<String>, name: &str) -> ApiResult<Option<String>> {
    let v = v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if v.as_ref()
        .is_some_and(|s| s.len() > 128 || s.chars().any(char::is_control))
    {
        return Err(ApiError::new(
            Kind::Invalid,
            ErrorCode::InvalidQuery,
            format!("{name} is not a valid value"),
        ));
    }
    Ok(v)
}

async fn search_orders(
    State(state): State<AppState>,
    _staff: StaffMember,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<impl IntoResponse> {
    let filter = OrderFilter {
        user_id: None,
        status: parse_status(q.status.as_deref())?,
        openid: text_filter(q.openid, "openid")?,
        out_trade_no: text_filter(q.out_trade_no, "out_trade_no")?,
        transaction_id: text_filter(q.transaction_id, "transaction_id")?,
        from: parse_bound(q.from.as_deref(), "from", false)?,
        to: parse_bound(q.to.as_deref(), "to", true)?,
    };
    let page = state
        .orders_view
        .search(&filter, q.page.unwrap_or(1), q.per_page.unwrap_or(20))
        .await?;
    Ok(Json(page))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefundRequest {
    amount_fen: i64,
    #[serde(default)]
    reason: Option<String>,
}

/// 202: the refund is recorded and asked for; its outcome arrives by notice or query.
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
    let reason = req
        .reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    // WeChat's refund reason holds at most 80 characters.
    if reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 80 || r.chars().any(char::is_control))
    {
        return Err(ApiError::new(
            Kind::Invalid,
            ErrorCode::InvalidReason,
            "reason must be at most 80 characters",
        ));
    }
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
