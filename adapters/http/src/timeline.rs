//! `GET /admin/orders/{id}/timeline?lang=zh-CN|en`: an order's history in plain words for support
//! staff (any staff role). The words are in [`wording`]; this module reads the stream and looks
//! each distinct actor up once.

mod wording;

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use paystream_engine::order::OrderEvent;
use paystream_engine::{ErrorCode, Kind};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::StaffMember;
use crate::customer::{order_not_found, parse_order_id};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::openapi::{self, ErrorBody};
use crate::AppState;
use wording::{ActorRef, Context, Known, Lang};

/// How an actor appears in the timeline (its OpenAPI schema is `TimelineActor`).
pub(crate) use wording::Actor as TimelineActor;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(timeline))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TimelineQuery {
    /// `zh-CN` (the default) or `en`.
    #[param(pattern = "^(zh-CN|en)$")]
    lang: Option<String>,
}

fn parse_lang(lang: Option<&str>) -> ApiResult<Lang> {
    match lang.map(str::trim).filter(|l| !l.is_empty()) {
        None => Ok(Lang::default()),
        Some(l) => Lang::parse(l).ok_or_else(|| {
            ApiError::new(
                Kind::Invalid,
                ErrorCode::InvalidQuery,
                "lang must be zh-CN or en",
            )
        }),
    }
}

fn internal(message: impl Into<String>) -> ApiError {
    ApiError::new(Kind::Internal, ErrorCode::InternalError, message)
}

/// What the database knows about one actor: a customer's phone and openid, a staff username.
async fn look_up(state: &AppState, actor: &ActorRef) -> ApiResult<Known> {
    Ok(match actor {
        ActorRef::Customer(id) => match state.accounts.user(state.mini_program.appid(), *id).await?
        {
            Some(user) => Known {
                phone: user.phone.filter(|p| !p.is_empty()),
                openid: Some(user.openid),
                username: None,
            },
            None => Known::default(),
        },
        ActorRef::Staff(id) => Known {
            username: state.accounts.staff(*id).await?.map(|s| s.username),
            ..Known::default()
        },
        ActorRef::Wechatpay { .. } | ActorRef::System(_) | ActorRef::Other(_) => Known::default(),
    })
}

#[utoipa::path(
    get,
    path = "/admin/orders/{id}/timeline",
    tag = "back-office",
    summary = "An order's history in plain words",
    description = "One sentence per event, money in yuan, Beijing time, actors by name.",
    security(("staff_token" = [])),
    params(("id" = Uuid, Path, description = "The order's id"), TimelineQuery),
    responses(
        (status = 200, description = "The timeline, oldest first", body = openapi::Timeline),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
    ),
)]
async fn timeline(
    State(state): State<AppState>,
    _staff: StaffMember,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TimelineQuery>,
) -> ApiResult<impl IntoResponse> {
    let lang = parse_lang(q.lang.as_deref())?;
    let id = parse_order_id(&id)?;
    let stored = state.orders.history(id).await?;
    if stored.is_empty() {
        return Err(order_not_found());
    }

    let mut decoded = Vec::with_capacity(stored.len());
    for e in &stored {
        let event = OrderEvent::from_stored(&e.event_type, e.data.clone()).map_err(|err| {
            internal(format!(
                "event {} v{} unreadable: {err}",
                e.stream_id, e.version
            ))
        })?;
        let actor = ActorRef::parse(e.metadata["actor"].as_str().unwrap_or_default());
        decoded.push((e, event, actor));
    }

    // One lookup per distinct actor, not per event.
    let mut actors = HashMap::new();
    for (_, _, actor) in &decoded {
        if !actors.contains_key(actor) {
            let known = look_up(&state, actor).await?;
            actors.insert(actor.clone(), wording::actor(actor, &known, lang));
        }
    }

    let mut refunds = HashMap::new();
    let mut items = Vec::with_capacity(decoded.len());
    for (stored, event, actor) in &decoded {
        if let OrderEvent::RefundRequested {
            out_refund_no,
            amount_fen,
            ..
        } = event
        {
            refunds.insert(out_refund_no.clone(), *amount_fen);
        }
        let actor = &actors[actor];
        let text = wording::sentence(
            event,
            &Context {
                lang,
                actor,
                refunds: &refunds,
            },
        );
        items.push(json!({
            "version": stored.version,
            "at": stored.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "at_beijing": wording::beijing_time(stored.recorded_at),
            "type": stored.event_type,
            "text": text,
            "actor": actor,
        }));
    }
    Ok(Json(json!({ "items": items })))
}
