//! `GET /api/cards/{card_id}/ext`: the signed `cardExt` that `wx.addCard` needs to put one of the
//! merchant's cards into the customer's WeChat card holder.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use paystream_engine::{Error, ErrorCode, Kind};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Customer;
use crate::error::{ApiError, ApiResult};
use crate::openapi::{self, ErrorBody};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(card_ext))
}

/// Card ids are WeChat's (`p1Pj9jr90_SQRaVqYI239Ka1erkI`): short, printable.
pub(crate) fn valid_card_field(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[utoipa::path(
    get,
    path = "/api/cards/{card_id}/ext",
    tag = "customer",
    summary = "The signed `cardExt` that `wx.addCard` needs for one of the merchant's cards",
    security(("customer_token" = [])),
    params(("card_id" = String, Path, description = "WeChat's card id")),
    responses(
        (status = 200, description = "The `cardExt`", body = openapi::CardExt),
        (status = 400, description = "Not a WeChat card id (`invalid_card_id`)", body = ErrorBody),
        (status = 503, description = "WeChat is unreachable (`wechat_unavailable`)", body = ErrorBody),
    ),
)]
async fn card_ext(
    State(state): State<AppState>,
    _customer: Customer,
    Path(card_id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    if !valid_card_field(&card_id) {
        return Err(ApiError::new(
            Kind::Invalid,
            ErrorCode::InvalidCardId,
            "card_id is not a WeChat card id",
        ));
    }
    let ext = state.cards.card_ext(&card_id).await.map_err(Error::from)?;
    Ok(Json(json!({ "cardExt": ext })))
}
