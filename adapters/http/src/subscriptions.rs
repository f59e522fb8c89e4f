//! `POST /api/subscriptions`: the templates the customer just accepted in
//! `wx.requestSubscribeMessage`; each accept allows one subscribe message of that template.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use paystream_engine::subscriptions::valid_template_id;
use paystream_engine::{ErrorCode, Kind};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Customer;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::AppState;

/// `wx.requestSubscribeMessage` takes at most 3 templates a call; allow a little slack.
const MAX_TEMPLATES: usize = 10;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/subscriptions", post(accept))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcceptRequest {
    template_ids: Vec<String>,
}

async fn accept(
    State(state): State<AppState>,
    customer: Customer,
    ApiJson(req): ApiJson<AcceptRequest>,
) -> ApiResult<impl IntoResponse> {
    if req.template_ids.is_empty()
        || req.template_ids.len() > MAX_TEMPLATES
        || !req.template_ids.iter().all(|id| valid_template_id(id))
    {
        return Err(ApiError::new(
            Kind::Invalid,
            ErrorCode::InvalidTemplateIds,
            format!(
                "template_ids must hold 1-{MAX_TEMPLATES} template ids of printable characters"
            ),
        ));
    }
    state
        .subscriptions
        .accept(customer.user_id, &req.template_ids)
        .await?;
    tracing::info!(user_id = %customer.user_id, templates = req.template_ids.len(), "subscribe-message acceptances recorded");
    Ok(Json(json!({ "accepted": req.template_ids })))
}
