//! `GET /api/cards/{card_id}/ext`: the signed `cardExt` that `wx.addCard` needs to put one of the
//! merchant's cards into the customer's WeChat card holder.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use paystream_engine::{Error, ErrorCode, Kind};
use serde_json::json;

use crate::auth::Customer;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/cards/{card_id}/ext", get(card_ext))
}

/// Card ids are WeChat's (`p1Pj9jr90_SQRaVqYI239Ka1erkI`): short, printable.
pub(crate) fn valid_card_field(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

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
