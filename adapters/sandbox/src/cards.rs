//! Cards (coupons): `POST /card/code/get`, `POST /card/code/consume`, the `wx_card` api_ticket of
//! `GET /cgi-bin/ticket/getticket`, and the control calls that give a user a card, use it
//! elsewhere, and check a `cardExt` as `wx.addCard` would.
//!
//! Codes are 12 digits, unique, valid for 30 days from when the card was given, and belong to
//! one openid. Errcodes (HTTP 200): 40001 bad token, 40073 unknown `card_id`, 40056 unknown code
//! (or a code of another card), 40099 consumed, 40127 otherwise unusable (expired).
//! `/card/code/get` with `check_consume` true (WeChat's default) answers those errcodes for an
//! unusable code; with false it answers the code's `user_card_status` and `can_consume`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::miniprogram::{
    control_error, control_openid, random_token, wechat_error, Sandbox, State_, TokenQuery,
};
use crate::tokens;

/// The card `POST /control/cards` gives when no `card_id` is named.
pub const DEFAULT_CARD_ID: &str = "pSandbox-Default-Card-000001";

const CARD_VALIDITY: i64 = 30 * 86_400;
const TICKET_TTL: Duration = Duration::from_secs(7200);
/// A new ticket is issued when the current one has less than this left; the old stays valid.
const TICKET_RENEW_AHEAD: Duration = Duration::from_secs(300);

#[derive(Default)]
pub(crate) struct CardState {
    card_ids: HashSet<String>,
    /// Code → the copy of the card it is.
    codes: HashMap<String, CardCode>,
    /// api_tickets issued and their expiry.
    tickets: HashMap<String, Instant>,
    /// errcodes the next consumes answer with (the code is not consumed).
    pub(crate) consume_faults: VecDeque<i64>,
    /// The next n consumes consume the code and answer 502.
    pub(crate) consume_lose_answer: u32,
}

struct CardCode {
    card_id: String,
    openid: String,
    consumed: bool,
    begin_time: i64,
    end_time: i64,
}

impl CardCode {
    fn status(&self) -> &'static str {
        if self.consumed {
            "CONSUMED"
        } else if chrono::Utc::now().timestamp() >= self.end_time {
            "EXPIRE"
        } else {
            "NORMAL"
        }
    }
}

/// WeChat's card signature: SHA1 (lowercase hex) of the values sorted as strings, concatenated.
pub(crate) fn card_signature(values: &[&str]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    hex::encode(Sha1::digest(sorted.concat().as_bytes()))
}

#[derive(Deserialize)]
struct CodeRequest {
    card_id: Option<String>,
    code: Option<String>,
    check_consume: Option<bool>,
}

/// The code a card call is about, or WeChat's refusal.
fn find_code<'a>(state: &'a mut State_, body: &[u8]) -> Result<(&'a mut CardCode, bool), Value> {
    let Ok(req) = serde_json::from_slice::<CodeRequest>(body) else {
        return Err(wechat_error(47001, "data format error"));
    };
    if let Some(card_id) = &req.card_id {
        if !state.cards.card_ids.contains(card_id) {
            return Err(wechat_error(40073, "invalid card id"));
        }
    }
    let code = req
        .code
        .and_then(|code| state.cards.codes.get_mut(&code))
        .filter(|c| req.card_id.as_ref().is_none_or(|id| *id == c.card_id));
    match code {
        Some(code) => Ok((code, req.check_consume.unwrap_or(true))),
        None => Err(wechat_error(40056, "invalid serial code")),
    }
}

fn unusable(code: &CardCode) -> Option<Value> {
    match code.status() {
        "NORMAL" => None,
        "CONSUMED" => Some(wechat_error(40099, "invalid code, this code has consumed.")),
        _ => Some(wechat_error(40127, "invalid user-card status")),
    }
}

async fn code_get(
    State(sb): State<Sandbox>,
    Query(q): Query<TokenQuery>,
    body: axum::body::Bytes,
) -> Json<Value> {
    let mut state = sb.lock();
    if let Some(refusal) = tokens::check(&state, q.access_token.as_deref()) {
        return refusal;
    }
    let (code, check_consume) = match find_code(&mut state, &body) {
        Ok(found) => found,
        Err(refusal) => return Json(refusal),
    };
    if check_consume {
        if let Some(refusal) = unusable(code) {
            return Json(refusal);
        }
    }
    let status = code.status();
    Json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "card": {
            "card_id": code.card_id,
            "begin_time": code.begin_time,
            "end_time": code.end_time,
        },
        "openid": code.openid,
        "can_consume": status == "NORMAL",
        "user_card_status": status,
    }))
}

async fn code_consume(
    State(sb): State<Sandbox>,
    Query(q): Query<TokenQuery>,
    body: axum::body::Bytes,
) -> Response {
    let mut state = sb.lock();
    if let Some(refusal) = tokens::check(&state, q.access_token.as_deref()) {
        return refusal.into_response();
    }
    if let Some(errcode) = state.cards.consume_faults.pop_front() {
        return Json(wechat_error(errcode, "injected by the sandbox")).into_response();
    }
    let (code, _) = match find_code(&mut state, &body) {
        Ok(found) => found,
        Err(refusal) => return Json(refusal).into_response(),
    };
    if let Some(refusal) = unusable(code) {
        return Json(refusal).into_response();
    }
    code.consumed = true;
    let answer = json!({
        "errcode": 0,
        "errmsg": "ok",
        "card": { "card_id": code.card_id },
        "openid": code.openid,
    });
    if state.cards.consume_lose_answer > 0 {
        state.cards.consume_lose_answer -= 1;
        return (StatusCode::BAD_GATEWAY, "Bad Gateway").into_response();
    }
    Json(answer).into_response()
}

#[derive(Deserialize)]
struct TicketQuery {
    access_token: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

async fn get_ticket(State(sb): State<Sandbox>, Query(q): Query<TicketQuery>) -> Json<Value> {
    let mut state = sb.lock();
    if let Some(refusal) = tokens::check(&state, q.access_token.as_deref()) {
        return refusal;
    }
    if q.kind.as_deref() != Some("wx_card") {
        return Json(wechat_error(40097, "invalid args"));
    }
    let now = Instant::now();
    let tickets = &mut state.cards.tickets;
    tickets.retain(|_, expiry| *expiry > now);
    let current = tickets
        .iter()
        .max_by_key(|(_, expiry)| **expiry)
        .filter(|(_, expiry)| expiry.saturating_duration_since(now) > TICKET_RENEW_AHEAD)
        .map(|(t, e)| (t.clone(), *e));
    let (ticket, expiry) = current.unwrap_or_else(|| {
        let ticket = random_token(86);
        tickets.insert(ticket.clone(), now + TICKET_TTL);
        (ticket, now + TICKET_TTL)
    });
    Json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "ticket": ticket,
        "expires_in": expiry.saturating_duration_since(now).as_secs(),
    }))
}

#[derive(Deserialize)]
struct GiveRequest {
    user: Option<String>,
    openid: Option<String>,
    card_id: Option<String>,
}

/// The user receives a card: a new code of `card_id` (the default card when not named).
async fn control_give(State(sb): State<Sandbox>, Json(req): Json<GiveRequest>) -> Response {
    let Some(openid) = control_openid(&sb, req.user.as_deref(), req.openid.as_deref()) else {
        return control_error(StatusCode::BAD_REQUEST, "give user or openid");
    };
    let card_id = req.card_id.unwrap_or_else(|| DEFAULT_CARD_ID.to_string());
    if card_id.is_empty() || card_id.len() > 32 || !card_id.chars().all(|c| c.is_ascii_graphic()) {
        return control_error(StatusCode::BAD_REQUEST, "card_id: 1 to 32 ASCII characters");
    }
    let mut state = sb.lock();
    let code = loop {
        let code = format!(
            "{:012}",
            rand::thread_rng().gen_range(0..1_000_000_000_000u64)
        );
        if !state.cards.codes.contains_key(&code) {
            break code;
        }
    };
    let now = chrono::Utc::now().timestamp();
    state.cards.card_ids.insert(card_id.clone());
    state.cards.codes.insert(
        code.clone(),
        CardCode {
            card_id: card_id.clone(),
            openid: openid.clone(),
            consumed: false,
            begin_time: now,
            end_time: now + CARD_VALIDITY,
        },
    );
    sb.openids.insert(&openid);
    Json(json!({ "card_id": card_id, "code": code, "openid": openid })).into_response()
}

#[derive(Deserialize)]
struct UseRequest {
    card_id: String,
    code: String,
}

/// The code is used somewhere else (at a shop's till, say).
async fn control_consume(State(sb): State<Sandbox>, Json(req): Json<UseRequest>) -> Response {
    let mut state = sb.lock();
    match state.cards.codes.get_mut(&req.code) {
        Some(code) if code.card_id == req.card_id => {
            if code.consumed {
                return control_error(StatusCode::CONFLICT, "already consumed");
            }
            code.consumed = true;
            Json(json!({ "card_id": req.card_id, "code": req.code, "consumed": true }))
                .into_response()
        }
        _ => control_error(StatusCode::NOT_FOUND, "no such card code"),
    }
}

#[derive(Deserialize, Default)]
struct ExtCheck {
    card_id: Option<String>,
    timestamp: Option<String>,
    nonce_str: Option<String>,
    signature: Option<String>,
    /// The whole cardExt JSON string instead of its three fields.
    card_ext: Option<String>,
}

/// What `wx.addCard` would say of a cardExt: signed with a current api_ticket for this card?
fn check_ext(state: &State_, req: ExtCheck) -> Result<(), &'static str> {
    let ext: Value = match &req.card_ext {
        Some(ext) => serde_json::from_str(ext).map_err(|_| "card_ext is not JSON")?,
        None => json!({
            "timestamp": req.timestamp,
            "nonce_str": req.nonce_str,
            "signature": req.signature,
        }),
    };
    let field = |name: &str| ext.get(name).and_then(Value::as_str).unwrap_or_default();
    let (timestamp, nonce_str, signature) =
        (field("timestamp"), field("nonce_str"), field("signature"));
    let card_id = req.card_id.as_deref().unwrap_or_default();
    if !state.cards.card_ids.contains(card_id) {
        return Err("unknown card_id");
    }
    if timestamp.is_empty() || !timestamp.chars().all(|c| c.is_ascii_digit()) {
        return Err("timestamp must be unix seconds as a string");
    }
    if nonce_str.is_empty() || nonce_str.len() > 32 {
        return Err("nonce_str must be 1 to 32 characters");
    }
    let now = Instant::now();
    let signed_with_a_ticket = state.cards.tickets.iter().any(|(ticket, expiry)| {
        *expiry > now && card_signature(&[ticket, card_id, timestamp, nonce_str]) == signature
    });
    if signed_with_a_ticket {
        Ok(())
    } else {
        Err("signature does not match a current api_ticket")
    }
}

async fn control_ext_check(
    State(sb): State<Sandbox>,
    Query(q): Query<ExtCheck>,
    body: axum::body::Bytes,
) -> Json<Value> {
    let req = serde_json::from_slice::<ExtCheck>(&body).unwrap_or(q);
    match check_ext(&sb.lock(), req) {
        Ok(()) => Json(json!({ "valid": true })),
        Err(reason) => Json(json!({ "valid": false, "reason": reason })),
    }
}

pub(crate) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/card/code/get", post(code_get))
        .route("/card/code/consume", post(code_consume))
        .route("/cgi-bin/ticket/getticket", get(get_ticket))
        .route("/control/cards", post(control_give))
        .route("/control/cards/consume", post(control_consume))
        .route(
            "/control/cards/ext-check",
            get(control_ext_check).post(control_ext_check),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of WeChat's card documentation (a code is signed too there).
    #[test]
    fn card_signature_matches_wechats_example() {
        let signature = card_signature(&[
            "1434008071",
            "1404896688",
            "pjZ8Yt1XGILfi-FUsewpnnolGgZk",
            "ojZ8YtyVyr30HheH3CM73y7h4jJE",
            "123",
        ]);
        assert_eq!(signature, "f137ab68b7f8112d20ee528ab6074564e2796250");
    }
}
