//! Access tokens as `/cgi-bin/stable_token` hands them out, and the check every token-carrying
//! API makes.
//!
//! * Normal mode (`force_refresh: false`) returns the current token; a new one only when the
//!   current one has less than five minutes left (the old one stays valid until it expires).
//! * `force_refresh: true` voids every token in use, issues a new one, and is limited to 20 a day
//!   (a rolling 24 hours here) and 30 s apart: over either limit it answers 45009.
//! * `POST /control/void-access-token` voids every token, as if it had leaked and been revoked:
//!   the next API call answers 40001, and normal mode then issues a fresh token.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::miniprogram::{random_token, wechat_error, Sandbox, State_};

const TOKEN_TTL: Duration = Duration::from_secs(7200);
/// Normal mode renews a token this close to its expiry.
const RENEW_AHEAD: Duration = Duration::from_secs(300);
const FORCE_GAP: Duration = Duration::from_secs(30);
const FORCE_PER_DAY: usize = 20;
const DAY: Duration = Duration::from_secs(86_400);

#[derive(Default)]
pub(crate) struct TokenState {
    /// Token → expiry. Voided tokens are removed.
    valid: std::collections::HashMap<String, Instant>,
    /// When forced refreshes happened, within the last day.
    forced: std::collections::VecDeque<Instant>,
    issued: u64,
    forced_total: u64,
    /// stable_token calls answered with a token.
    requests: u64,
}

impl TokenState {
    /// Whether an API call carrying this token is accepted.
    pub(crate) fn accepts(&self, token: Option<&str>) -> bool {
        token
            .and_then(|t| self.valid.get(t))
            .is_some_and(|expiry| *expiry > Instant::now())
    }

    fn issue(&mut self, now: Instant) -> (String, Instant) {
        let token = random_token(136);
        let expiry = now + TOKEN_TTL;
        self.valid.insert(token.clone(), expiry);
        self.issued += 1;
        (token, expiry)
    }
}

/// WeChat's answer to a call with an unknown, expired or voided token.
pub(crate) fn invalid_token() -> Json<Value> {
    Json(wechat_error(
        40001,
        "invalid credential, access_token is invalid or not latest",
    ))
}

/// The token check of every API: `Some(answer)` when the call must be refused.
pub(crate) fn check(state: &State_, token: Option<&str>) -> Option<Json<Value>> {
    (!state.tokens.accepts(token)).then(invalid_token)
}

#[derive(Deserialize)]
struct StableTokenRequest {
    grant_type: Option<String>,
    appid: Option<String>,
    secret: Option<String>,
    #[serde(default)]
    force_refresh: bool,
}

async fn stable_token(State(sb): State<Sandbox>, body: axum::body::Bytes) -> Json<Value> {
    let Ok(req) = serde_json::from_slice::<StableTokenRequest>(&body) else {
        return Json(wechat_error(47001, "data format error"));
    };
    if req.grant_type.as_deref() != Some("client_credential") {
        return Json(wechat_error(40002, "invalid grant_type"));
    }
    if req.appid.as_deref() != Some(sb.config.appid.as_str()) {
        return Json(wechat_error(40013, "invalid appid"));
    }
    if req.secret.as_deref() != Some(sb.config.secret.as_str()) {
        return Json(wechat_error(40125, "invalid appsecret"));
    }
    let mut state = sb.lock();
    let tokens = &mut state.tokens;
    let now = Instant::now();
    tokens.valid.retain(|_, expiry| *expiry > now);
    let (token, expiry) = if req.force_refresh {
        tokens
            .forced
            .retain(|at| now.saturating_duration_since(*at) < DAY);
        if tokens.forced.len() >= FORCE_PER_DAY {
            return Json(wechat_error(45009, "reach max api daily quota limit"));
        }
        if tokens
            .forced
            .back()
            .is_some_and(|last| now.saturating_duration_since(*last) < FORCE_GAP)
        {
            return Json(wechat_error(
                45009,
                "reach max api daily quota limit, force refresh is allowed once per 30 seconds",
            ));
        }
        tokens.forced.push_back(now);
        tokens.forced_total += 1;
        // A forced refresh revokes the token everyone else is using.
        tokens.valid.clear();
        tokens.issue(now)
    } else {
        let current = tokens
            .valid
            .iter()
            .max_by_key(|(_, expiry)| **expiry)
            .map(|(t, e)| (t.clone(), *e));
        match current {
            Some((token, expiry)) if expiry.saturating_duration_since(now) > RENEW_AHEAD => {
                (token, expiry)
            }
            _ => tokens.issue(now),
        }
    };
    tokens.requests += 1;
    Json(json!({
        "access_token": token,
        "expires_in": expiry.saturating_duration_since(now).as_secs(),
    }))
}

async fn control_void(State(sb): State<Sandbox>) -> Json<Value> {
    let mut state = sb.lock();
    let voided = state.tokens.valid.len();
    state.tokens.valid.clear();
    Json(json!({ "voided": voided }))
}

/// Counts only: the tokens themselves are credentials and are not shown.
async fn control_stats(State(sb): State<Sandbox>) -> Json<Value> {
    let state = sb.lock();
    let now = Instant::now();
    let valid = state.tokens.valid.values().filter(|e| **e > now).count();
    Json(json!({
        "valid": valid,
        "issued": state.tokens.issued,
        "forced_refreshes": state.tokens.forced_total,
        "requests": state.tokens.requests,
    }))
}

pub(crate) fn routes() -> Router<Sandbox> {
    use axum::routing::{get, post};
    Router::new()
        .route("/cgi-bin/stable_token", post(stable_token))
        .route("/control/void-access-token", post(control_void))
        .route("/control/access-tokens", get(control_stats))
}
