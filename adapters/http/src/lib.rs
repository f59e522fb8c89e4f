//! The HTTP face of paystream: the customer API for mini-programs and the back-office API.
//! Handlers are thin: parse, authorise, call an engine service, shape the answer.

mod admin;
mod admin_ui;
mod auth;
mod backoffice;
mod cards;
mod customer;
pub mod error;
mod extract;
mod money_search;
mod notify;
mod openapi;
pub use notify::{WECHATPAY_V2_PATH, WECHATPAY_V2_REFUND_PATH, WECHATPAY_V3_PATH};
pub mod ops;
mod reconciliation;
mod staff;
mod subscriptions;
pub mod telemetry;
mod text;
pub mod throttle;
mod timeline;
pub mod tokens;

use std::sync::Arc;

use axum::http::{HeaderName, Request};
use axum::{Extension, Router};
use paystream_engine::accounts::{Accounts, MiniProgram};
use paystream_engine::cards::Cards;
use paystream_engine::catalogue::Catalogue;
use paystream_engine::consumers::Broker;
use paystream_engine::db::Db;
use paystream_engine::orders::OrderService;
use paystream_engine::payments::Payments;
use paystream_engine::reconciliation::Reconciler;
use paystream_engine::subscriptions::Subscriptions;
use paystream_projections::OrdersView;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

pub use ops::Ops;
pub use throttle::Throttles;
pub use tokens::Tokens;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

pub struct Services {
    pub db: Db,
    pub orders: OrderService,
    pub payments: Payments,
    pub orders_view: OrdersView,
    pub catalogue: Catalogue,
    pub accounts: Accounts,
    pub mini_program: Arc<dyn MiniProgram>,
    pub cards: Arc<dyn Cards>,
    pub subscriptions: Subscriptions,
    /// Reconciliation against WeChat Pay's bills: its day reports, and running a day on demand.
    pub reconciler: Reconciler,
    /// RabbitMQ, when the log is fanned out to it (checked by `/readyz`).
    pub broker: Option<Arc<dyn Broker>>,
    pub tokens: Tokens,
    pub order_ttl: chrono::Duration,
    pub customer_session_ttl: chrono::Duration,
    pub staff_session_ttl: chrono::Duration,
    /// Failed-login throttles (in memory: per process, see `throttle.rs`).
    pub throttles: Throttles,
    /// `/metrics` and `/readyz`: the process's metrics and the readiness checks' cache.
    pub ops: Ops,
}

impl AppState {
    pub fn new(services: Services) -> AppState {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Bodies larger than this are refused before they are parsed.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every endpoint of the API. Each module registers its endpoints with `utoipa_axum::routes!`
/// from the handlers' `#[utoipa::path]`, so an endpoint cannot be served without its operation
/// in `/api/openapi.json`: add new API endpoints here, never to [`router`] directly.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(customer::routes())
        .merge(subscriptions::routes())
        .merge(cards::routes())
        .merge(admin::routes())
        .merge(admin_ui::api_routes())
        .merge(backoffice::routes())
        .merge(staff::routes())
        .merge(timeline::routes())
        .merge(money_search::routes())
        .merge(reconciliation::routes())
        .merge(notify::routes())
        .merge(ops::routes())
        .merge(openapi::routes())
}

/// The OpenAPI document of [`api`], as `GET /api/openapi.json` serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::complete(api().into_openapi())
}

pub fn router(state: AppState) -> Router {
    let (api, document) = api().split_for_parts();
    let document = openapi::Served::new(&openapi::complete(document));
    Router::new()
        .merge(api)
        .layer(Extension(document))
        // The back-office web UI's pages and static files: for browsers, not in the document.
        .merge(admin_ui::routes())
        .fallback(error::no_such_endpoint)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(error::deadline))
        // After routing (it sees the matched route), around the deadline (it sees its 503).
        .layer(axum::middleware::from_fn(ops::observe))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!(
                    "http",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %request_id,
                )
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
