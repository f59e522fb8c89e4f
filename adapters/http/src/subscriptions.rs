//! `POST /api/subscriptions`: the templates the customer just accepted in
//! `wx.requestSubscribeMessage`; each accept allows one subscribe message of that template.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use paystream_engine::subscriptions::valid_template_id;
use paystream_engine::{ErrorCode, Kind};
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Customer;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::openapi::{self, ErrorBody};
use crate::AppState;

/// `wx.requestSubscribeMessage` takes at most 3 templates a call; allow a little slack.
const MAX_TEMPLATES: usize = 10;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(accept))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AcceptRequest {
    /// The templates `wx.requestSubscribeMessage` reported as accepted: 1-10 ids.
    template_ids: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/api/subscriptions",
    tag = "customer",
    summary = "Record subscribe-message templates the customer accepted",
    description = "Each accepted template allows one subscribe message of that template.",
    security(("customer_token" = [])),
    request_body = AcceptRequest,
    responses(
        (status = 200, description = "Recorded", body = openapi::AcceptedTemplates),
        (status = 400, description = "`invalid_template_ids`", body = ErrorBody),
    ),
)]
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
