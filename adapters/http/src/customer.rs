//! The customer API used by the mini-program (contract.md, "Customer API").

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::Utc;
use paystream_engine::accounts::WechatError;
use paystream_engine::catalogue::LineRequest;
use paystream_engine::order::{CardRef, CloseReason, OrderStatus, PayChannel};
use paystream_engine::orders::{Metadata, PlaceOrder};
use paystream_engine::{Error, ErrorCode, Kind};
use paystream_projections::{OrderFilter, OrderView};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Customer;
use crate::error::{ApiError, ApiResult, RetryLater};
use crate::extract::{empty_as_none, ApiJson, ApiQuery, ClientIp, RequestId};
use crate::openapi::{self, ErrorBody};
use crate::AppState;

/// Each endpoint with its OpenAPI operation (the handler's `#[utoipa::path]`).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(login))
        .routes(routes!(phone))
        .routes(routes!(products))
        .routes(routes!(place_order, list_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .routes(routes!(pay_order))
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness: whether the database answers",
    responses(
        (status = 200, description = "The database answers", body = openapi::Health),
        (status = 503, description = "The database does not answer (`database_unavailable`)", body = ErrorBody),
    ),
)]
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    if state.db.ping().await {
        (StatusCode::OK, Json(json!({ "status": "ok" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "status": "unavailable", "error": { "code": ErrorCode::DatabaseUnavailable.as_str(), "message": "the database does not answer" } }),
            ),
        )
    }
}

/// A code the mini-program got from WeChat.
#[derive(Deserialize, ToSchema)]
struct CodeRequest {
    /// The `wx.login` (or `getPhoneNumber`) code: 1-128 printable characters.
    code: String,
}

impl CodeRequest {
    /// A `wx.login` / `getPhoneNumber` code: short, printable, never empty.
    fn checked(&self) -> ApiResult<&str> {
        let code = self.code.trim();
        if code.is_empty() || code.len() > 128 || !code.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ApiError::new(
                Kind::Invalid,
                ErrorCode::InvalidCodeFormat,
                "code must be 1-128 printable characters",
            ));
        }
        Ok(code)
    }
}

/// Customer login. Each address may have 20 codes refused by WeChat at once, then 10 a minute
/// (a token bucket, `throttle.rs`); beyond that, 429 `rate_limited` with `Retry-After`, before
/// WeChat is asked. Only refused codes count: a token is taken before the call (so a burst of
/// concurrent guesses cannot overshoot) and given back when the login succeeds or WeChat is
/// unreachable, so customers behind one address (a carrier's NAT, an office) are never limited
/// for logging in, only for guessing.
#[utoipa::path(
    post,
    path = "/api/login",
    tag = "customer",
    operation_id = "customer_login",
    summary = "Log in with a `wx.login` code",
    description = "Exchanges the code at WeChat and answers a bearer token for `/api/*`. Codes \
        WeChat refuses are limited per client address (20 at once, then 10 a minute): beyond \
        that, 429 `rate_limited` with `Retry-After`.",
    request_body = CodeRequest,
    responses(
        (status = 200, description = "Logged in", body = openapi::CustomerSession),
        (status = 401, description = "WeChat refused the code (`invalid_code`)", body = ErrorBody),
        (status = 429, description = "Too many refused codes from this address (`rate_limited`, \
            with `Retry-After`), or WeChat's rate limit (`wechat_rate_limited`)", body = ErrorBody),
        (status = 503, description = "WeChat is unreachable (`wechat_unavailable`)", body = ErrorBody),
    ),
)]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<CodeRequest>,
) -> axum::response::Result<impl IntoResponse> {
    let code = req.checked()?;
    let address = crate::throttle::client_key(ip);
    let buckets = &state.throttles.customer_login;
    if let Err(wait) = buckets.take(address, std::time::Instant::now()) {
        tracing::warn!(client = %ip, retry_after_s = wait.as_secs(), "customer login refused: too many refused codes from this address");
        return Err(RetryLater {
            code: ErrorCode::RateLimited,
            message: "too many invalid login codes from this address; try again after the time in Retry-After",
            after: wait,
        }
        .into());
    }
    let session = match state.mini_program.code_to_session(code).await {
        Ok(session) => {
            buckets.give_back(&address);
            session
        }
        Err(e) => {
            if matches!(e, WechatError::Unavailable(_)) {
                buckets.give_back(&address);
            } else {
                tracing::warn!(client = %ip, error = %e, "customer login failed: WeChat refused the code");
            }
            return Err(ApiError::from(e).into());
        }
    };
    let user = state
        .accounts
        .login_wechat(state.mini_program.appid(), &session)
        .await
        .map_err(ApiError)?;
    let issued =
        state
            .tokens
            .issue(user.id, crate::tokens::CUSTOMER, state.customer_session_ttl)?;
    tracing::info!(user_id = %user.id, "customer logged in");
    Ok(Json(json!({
        "token": issued.token,
        "expires_at": issued.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "user": user,
    })))
}

#[utoipa::path(
    post,
    path = "/api/me/phone",
    tag = "customer",
    summary = "Record the customer's phone number from a `getPhoneNumber` code",
    security(("customer_token" = [])),
    request_body = CodeRequest,
    responses(
        (status = 200, description = "The phone number, now on the customer's account", body = openapi::PhoneNumber),
        (status = 400, description = "A malformed code (`invalid_code_format`), or one WeChat \
            refused (`invalid_code`)", body = ErrorBody),
        (status = 503, description = "WeChat is unreachable (`wechat_unavailable`)", body = ErrorBody),
    ),
)]
async fn phone(
    State(state): State<AppState>,
    customer: Customer,
    ApiJson(req): ApiJson<CodeRequest>,
) -> ApiResult<impl IntoResponse> {
    // A bad phone code is bad input, not a bad session: 400, so the app does not log in again.
    let phone = state
        .mini_program
        .phone_number(req.checked()?)
        .await
        .map_err(|e| match Error::from(e) {
            e if e.code() == ErrorCode::InvalidCode => {
                ApiError::new(Kind::Invalid, ErrorCode::InvalidCode, e.to_string())
            }
            e => ApiError(e),
        })?;
    state.accounts.set_phone(customer.user_id, &phone).await?;
    Ok(Json(phone))
}

#[utoipa::path(
    get,
    path = "/api/products",
    tag = "customer",
    operation_id = "list_products_for_sale",
    summary = "The products for sale",
    responses((status = 200, description = "Active products", body = openapi::ProductList)),
)]
async fn products(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let items = state.catalogue.list(true).await?;
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PlaceOrderRequest {
    /// What to buy; prices come from the catalogue.
    #[schema(value_type = Vec<openapi::LineRequest>)]
    items: Vec<LineRequest>,
    #[serde(default)]
    #[schema(nullable = false)]
    note: Option<String>,
    /// The customer's card (coupon) to redeem with this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    card: Option<CardRequest>,
}

/// A card (coupon) in the customer's WeChat card holder.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CardRequest {
    card_id: String,
    code: String,
}

impl CardRequest {
    fn checked(&self) -> ApiResult<CardRef> {
        if !crate::cards::valid_card_field(&self.card_id)
            || !crate::cards::valid_card_field(&self.code)
        {
            return Err(ApiError::new(
                Kind::Invalid,
                ErrorCode::InvalidCard,
                "card.card_id and card.code must be 1-64 letters, digits, - or _",
            ));
        }
        Ok(CardRef {
            card_id: self.card_id.clone(),
            code: self.code.clone(),
        })
    }
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > 128 {
        return Err(ApiError::new(
            Kind::Invalid,
            ErrorCode::InvalidIdempotencyKey,
            "Idempotency-Key must be 1-128 printable ASCII characters",
        ));
    }
    Ok(Some(key.to_string()))
}

#[utoipa::path(
    post,
    path = "/api/orders",
    tag = "customer",
    summary = "Place an order",
    description = "Prices come from the catalogue, never from the client. A card, if given, is \
        checked at WeChat now and consumed once the order is paid. With an `Idempotency-Key`, \
        the same request again answers the same order.",
    security(("customer_token" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, description = "1-128 characters; \
        reusing one for a different request is a 422 `idempotency_key_reused`")),
    request_body = PlaceOrderRequest,
    responses(
        (status = 201, description = "The order, waiting for payment", body = openapi::Order),
        (status = 422, description = "`unknown_sku`, `product_inactive`, `card_not_usable`, \
            `total_too_large`, `idempotency_key_reused` (the key was used for another request)", body = ErrorBody),
    ),
)]
async fn place_order(
    State(state): State<AppState>,
    customer: Customer,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PlaceOrderRequest>,
) -> ApiResult<impl IntoResponse> {
    let key = idempotency_key(&headers)?;
    let card = req.card.as_ref().map(CardRequest::checked).transpose()?;
    let note = crate::text::ORDER_NOTE.optional(req.note.as_deref())?;
    let request_hash = hex::encode(Sha256::digest(serde_json::to_vec(&req).unwrap_or_default()));
    let user = state
        .accounts
        .user(state.mini_program.appid(), customer.user_id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                Kind::Unauthenticated,
                ErrorCode::InvalidToken,
                "log in again",
            )
        })?;
    if let Some(key) = &key {
        if let Some(order) = state
            .orders
            .placed_with_key(user.id, key, &request_hash)
            .await?
        {
            return Ok((StatusCode::CREATED, Json(OrderView::from(&order))));
        }
    }
    let lines = state.catalogue.price(&req.items).await?;
    let meta = Metadata::actor(format!("customer:{}", user.id)).with_request_id(request_id);
    let order = state
        .orders
        .place(
            PlaceOrder {
                user_id: user.id,
                openid: user.openid,
                lines,
                note,
                ttl: state.order_ttl,
                idempotency_key: key,
                request_hash,
                card,
            },
            meta,
            Utc::now(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(OrderView::from(&order))))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// From 1 (the default).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(minimum = 1)]
    page: Option<u32>,
    /// 20 by default, 100 at most.
    #[serde(default, deserialize_with = "empty_as_none")]
    per_page: Option<u32>,
    /// Only orders in this status.
    #[param(value_type = Option<openapi::OrderStatus>)]
    status: Option<String>,
}

pub(crate) fn parse_status(status: Option<&str>) -> ApiResult<Option<OrderStatus>> {
    status
        .filter(|s| !s.is_empty())
        .map(|s| {
            OrderStatus::parse(s).ok_or_else(|| {
                ApiError::new(
                    Kind::Invalid,
                    ErrorCode::InvalidStatus,
                    format!("unknown status {s}"),
                )
            })
        })
        .transpose()
}

#[utoipa::path(
    get,
    path = "/api/orders",
    tag = "customer",
    summary = "The customer's own orders, newest first",
    security(("customer_token" = [])),
    params(ListQuery),
    responses((status = 200, description = "One page of orders", body = openapi::OrderPage)),
)]
async fn list_orders(
    State(state): State<AppState>,
    customer: Customer,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let filter = OrderFilter {
        user_id: Some(customer.user_id),
        status: parse_status(q.status.as_deref())?,
        ..OrderFilter::default()
    };
    let page = state
        .orders_view
        .search(&filter, q.page.unwrap_or(1), q.per_page.unwrap_or(20))
        .await?;
    Ok(Json(page))
}

/// Someone else's order is reported exactly like a missing one: ids reveal nothing.
pub(crate) fn order_not_found() -> ApiError {
    ApiError(Error::from(paystream_engine::order::OrderError::NotFound))
}

pub(crate) fn parse_order_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| order_not_found())
}

async fn own_order(
    state: &AppState,
    customer: &Customer,
    id: &str,
) -> ApiResult<paystream_engine::order::Order> {
    let order = state.orders.get(parse_order_id(id)?).await?;
    if order.user_id != customer.user_id {
        return Err(order_not_found());
    }
    Ok(order)
}

#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    tag = "customer",
    operation_id = "get_own_order",
    summary = "One of the customer's orders",
    security(("customer_token" = [])),
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order", body = openapi::Order),
        (status = 404, description = "No such order, or someone else's (`order_not_found`)", body = ErrorBody),
    ),
)]
async fn get_order(
    State(state): State<AppState>,
    customer: Customer,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let order = own_order(&state, &customer, &id).await?;
    Ok(Json(OrderView::from(&order)))
}

#[utoipa::path(
    post,
    path = "/api/orders/{id}/cancel",
    tag = "customer",
    summary = "Cancel an unpaid order",
    security(("customer_token" = [])),
    params(("id" = Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order, closed", body = openapi::Order),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "Paid already (`order_already_paid`), or the customer is \
            paying right now (`payment_in_progress`)", body = ErrorBody),
    ),
)]
async fn cancel_order(
    State(state): State<AppState>,
    customer: Customer,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let order = own_order(&state, &customer, &id).await?;
    let meta =
        Metadata::actor(format!("customer:{}", customer.user_id)).with_request_id(request_id);
    let outcome = state
        .payments
        .close(order.id, CloseReason::CancelledByCustomer, &meta)
        .await?;
    Ok(Json(OrderView::from(&outcome.order)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PayRequest {
    /// Which WeChat Pay API to pay through.
    #[schema(value_type = openapi::PayChannel)]
    channel: PayChannel,
}

#[utoipa::path(
    post,
    path = "/api/orders/{id}/pay",
    tag = "customer",
    summary = "Start paying an order: the parameters of `wx.requestPayment`",
    security(("customer_token" = [])),
    params(("id" = Uuid, Path, description = "The order's id")),
    request_body = PayRequest,
    responses(
        (status = 200, description = "Exactly what `wx.requestPayment` takes", body = openapi::PayParams),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "Paid already, closed, expired, or ordered through the \
            other channel (`order_already_paid`, `order_not_payable`, `order_expired`, \
            `payment_channel_fixed`)", body = ErrorBody),
        (status = 502, description = "WeChat Pay refused (`wechatpay_rejected`)", body = ErrorBody),
    ),
)]
async fn pay_order(
    State(state): State<AppState>,
    customer: Customer,
    RequestId(request_id): RequestId,
    ClientIp(payer_ip): ClientIp,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PayRequest>,
) -> ApiResult<impl IntoResponse> {
    let order_id = parse_order_id(&id)?;
    let meta =
        Metadata::actor(format!("customer:{}", customer.user_id)).with_request_id(request_id);
    let params = state
        .payments
        .pay(order_id, customer.user_id, req.channel, payer_ip, &meta)
        .await?;
    Ok(Json(params))
}
