//! Mini-program server API: code2Session and phone numbers, the state every mini-program endpoint
//! shares, and the fault injection of `/control/faults`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::cards::{self, CardState};
use crate::openids::KnownOpenids;
use crate::subscribe::{self, SubscribeState};
use crate::tokens::{self, TokenState};
use crate::wechatpay::{MerchantCredentials, Pay, PaySandboxConfig, VerificationMode};

/// A `wx.login` code is valid for about five minutes and once only.
const CODE_TTL: Duration = Duration::from_secs(300);

#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub appid: String,
    pub secret: String,
    pub pay: PaySandboxConfig,
}

#[derive(Clone)]
pub struct Sandbox {
    pub(crate) config: Arc<SandboxConfig>,
    state: Arc<Mutex<State_>>,
    pub(crate) pay: Pay,
    pub(crate) openids: KnownOpenids,
}

#[derive(Default)]
pub(crate) struct State_ {
    login_codes: HashMap<String, LoginCode>,
    phone_codes: HashMap<String, (String, Instant)>,
    pub(crate) tokens: TokenState,
    pub(crate) subscribe: SubscribeState,
    pub(crate) cards: CardState,
    /// errcodes that the next code2Session calls answer with, in order.
    login_faults: VecDeque<i64>,
}

struct LoginCode {
    openid: String,
    unionid: Option<String>,
    issued: Instant,
    used: bool,
}

impl Sandbox {
    /// Generates the WeChat Pay key material (several RSA-2048 keys), so it takes a moment.
    pub fn new(config: SandboxConfig) -> Sandbox {
        let openids = KnownOpenids::default();
        let pay = Pay::new(&config.appid, &config.pay, openids.clone());
        Sandbox {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State_::default())),
            pay,
            openids,
        }
    }

    /// The simulated merchant's WeChat Pay credentials, to configure the client with.
    pub fn merchant(&self) -> MerchantCredentials {
        self.pay.credentials()
    }

    /// Switch how WeChat Pay answers are signed (also `POST /control/wechatpay/mode`).
    pub fn set_pay_verification_mode(&self, mode: VerificationMode) {
        self.pay.set_mode(mode);
    }

    /// Never held across an `.await`.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `wx.login` in the simulated mini-program would hand the client for this user.
    pub fn login_code(&self, user: &str, unionid: Option<String>) -> (String, String) {
        let code = random_token(32);
        let openid = openid_for(&self.config.appid, user);
        // The user opened the mini-program: WeChat knows them under this app from now on.
        self.openids.insert(&openid);
        self.lock().login_codes.insert(
            code.clone(),
            LoginCode {
                openid: openid.clone(),
                unionid,
                issued: Instant::now(),
                used: false,
            },
        );
        (code, openid)
    }

    pub fn phone_code(&self, phone: &str) -> String {
        let code = random_token(32);
        self.lock()
            .phone_codes
            .insert(code.clone(), (phone.to_string(), Instant::now()));
        code
    }
}

pub(crate) fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A stable, WeChat-looking openid (28 characters starting with `o`) per (appid, user name), so
/// the same simulated user gets the same openid in every run.
pub fn openid_for(appid: &str, user: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let digest = Sha256::digest(format!("{appid}\n{user}").as_bytes());
    let tail: String = digest
        .iter()
        .take(27)
        .map(|b| ALPHABET[usize::from(b % 64)] as char)
        .collect();
    format!("o{tail}")
}

/// WeChat's error shape. jscode2session and friends answer HTTP 200 even for errors.
pub(crate) fn wechat_error(errcode: i64, errmsg: &str) -> Value {
    json!({ "errcode": errcode, "errmsg": format!("{errmsg} rid: {}", random_token(8)) })
}

/// jscode2session answers `text/plain` although the body is JSON — faithfully reproduced so
/// clients that insist on `application/json` fail here as they would against WeChat.
fn text_json(body: Value) -> Response {
    ([(CONTENT_TYPE, "text/plain")], body.to_string()).into_response()
}

#[derive(Deserialize)]
struct Code2SessionQuery {
    appid: Option<String>,
    secret: Option<String>,
    js_code: Option<String>,
    grant_type: Option<String>,
}

async fn code2session(State(sb): State<Sandbox>, Query(q): Query<Code2SessionQuery>) -> Response {
    if q.appid.as_deref() != Some(sb.config.appid.as_str()) {
        return text_json(wechat_error(40013, "invalid appid"));
    }
    if q.secret.as_deref() != Some(sb.config.secret.as_str()) {
        return text_json(wechat_error(40125, "invalid appsecret"));
    }
    if q.grant_type.as_deref() != Some("authorization_code") {
        return text_json(wechat_error(40002, "invalid grant_type"));
    }
    let mut state = sb.lock();
    if let Some(errcode) = state.login_faults.pop_front() {
        return text_json(wechat_error(errcode, "injected by the sandbox"));
    }
    let Some(entry) = q
        .js_code
        .as_deref()
        .and_then(|c| state.login_codes.get_mut(c))
    else {
        return text_json(wechat_error(40029, "invalid code"));
    };
    if entry.used {
        return text_json(wechat_error(40163, "code been used"));
    }
    if entry.issued.elapsed() > CODE_TTL {
        return text_json(wechat_error(40029, "invalid code"));
    }
    entry.used = true;
    let mut body = json!({
        "openid": entry.openid,
        "session_key": base64_key(),
    });
    if let Some(unionid) = &entry.unionid {
        body["unionid"] = json!(unionid);
    }
    let openid = entry.openid.clone();
    drop(state);
    sb.openids.insert(&openid);
    text_json(body)
}

/// A session_key is 16 random bytes, base64-encoded (24 characters).
fn base64_key() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::thread_rng().gen();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `?access_token=` of every call after the token is obtained.
#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    pub(crate) access_token: Option<String>,
}

async fn phone_number(
    State(sb): State<Sandbox>,
    Query(q): Query<TokenQuery>,
    body: axum::body::Bytes,
) -> Json<Value> {
    let mut state = sb.lock();
    if let Some(refusal) = tokens::check(&state, q.access_token.as_deref()) {
        return refusal;
    }
    let code = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_string));
    let Some(code) = code else {
        return Json(wechat_error(47001, "data format error"));
    };
    let Some((phone, issued)) = state.phone_codes.remove(&code) else {
        return Json(wechat_error(40029, "invalid code"));
    };
    if issued.elapsed() > CODE_TTL {
        return Json(wechat_error(40029, "invalid code"));
    }
    Json(json!({
        "errcode": 0,
        "errmsg": "ok",
        "phone_info": {
            "phoneNumber": phone,
            "purePhoneNumber": phone,
            "countryCode": "86",
            "watermark": { "timestamp": chrono::Utc::now().timestamp(), "appid": sb.config.appid },
        }
    }))
}

#[derive(Deserialize, Default)]
struct LoginCodeRequest {
    /// A name for the simulated user; the same name always gets the same openid.
    user: Option<String>,
    unionid: Option<String>,
}

async fn control_login_code(
    State(sb): State<Sandbox>,
    Query(q): Query<LoginCodeRequest>,
    body: axum::body::Bytes,
) -> Json<Value> {
    let req = serde_json::from_slice::<LoginCodeRequest>(&body).unwrap_or(q);
    let user = req
        .user
        .unwrap_or_else(|| format!("user-{}", random_token(8)));
    let (code, openid) = sb.login_code(&user, req.unionid.clone());
    Json(json!({ "code": code, "user": user, "openid": openid, "unionid": req.unionid }))
}

#[derive(Deserialize, Default)]
struct PhoneCodeRequest {
    phone: Option<String>,
}

async fn control_phone_code(
    State(sb): State<Sandbox>,
    Query(q): Query<PhoneCodeRequest>,
    body: axum::body::Bytes,
) -> Json<Value> {
    let req = serde_json::from_slice::<PhoneCodeRequest>(&body).unwrap_or(q);
    let phone = req.phone.unwrap_or_else(|| "13800138000".to_string());
    Json(json!({ "code": sb.phone_code(&phone), "phone": phone }))
}

#[derive(Deserialize)]
struct FaultRequest {
    /// errcodes the next code2Session calls answer with (e.g. [-1, 45011]).
    #[serde(default)]
    code2session: Vec<i64>,
    /// errcodes the next subscribe-message sends answer with (-1 busy, 40001 token invalid, …).
    #[serde(default)]
    subscribe_send: Vec<i64>,
    /// errcodes the next card consumes answer with; the code is not consumed.
    #[serde(default)]
    card_consume: Vec<i64>,
    /// The next n card consumes do consume the code, then answer HTTP 502: the answer was lost.
    #[serde(default)]
    card_consume_lose_answer: u32,
}

async fn control_faults(State(sb): State<Sandbox>, Json(req): Json<FaultRequest>) -> Json<Value> {
    let mut state = sb.lock();
    state.login_faults.extend(req.code2session);
    state.subscribe.faults.extend(req.subscribe_send);
    state.cards.consume_faults.extend(req.card_consume);
    state.cards.consume_lose_answer += req.card_consume_lose_answer;
    Json(json!({ "queued": {
        "code2session": state.login_faults,
        "subscribe_send": state.subscribe.faults,
        "card_consume": state.cards.consume_faults,
        "card_consume_lose_answer": state.cards.consume_lose_answer,
    } }))
}

/// The simulated user a control call is about: `openid` as given, or the openid of `user`.
/// `None` when the call names neither.
pub(crate) fn control_openid(
    sb: &Sandbox,
    user: Option<&str>,
    openid: Option<&str>,
) -> Option<String> {
    match (openid, user) {
        (Some(openid), _) if !openid.is_empty() => Some(openid.to_string()),
        (_, Some(user)) if !user.is_empty() => Some(openid_for(&sb.config.appid, user)),
        _ => None,
    }
}

/// A refused control call (these are the sandbox's own API, not WeChat's: plain HTTP errors).
pub(crate) fn control_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub fn routes(sandbox: Sandbox) -> Router {
    Router::new()
        .route("/sns/jscode2session", get(code2session))
        .route("/wxa/business/getuserphonenumber", post(phone_number))
        .route(
            "/control/login-code",
            get(control_login_code).post(control_login_code),
        )
        .route(
            "/control/phone-code",
            get(control_phone_code).post(control_phone_code),
        )
        .route("/control/faults", post(control_faults))
        .merge(tokens::routes())
        .merge(subscribe::routes())
        .merge(cards::routes())
        .with_state(sandbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openids_look_like_wechat_and_are_stable_per_app_and_user() {
        let a = openid_for("wxapp", "alice");
        assert_eq!(a.len(), 28);
        assert!(a.starts_with('o'));
        assert_eq!(a, openid_for("wxapp", "alice"));
        assert_ne!(a, openid_for("wxapp", "bob"));
        assert_ne!(a, openid_for("wxother", "alice"));
    }

    #[test]
    fn session_keys_are_base64_of_16_bytes() {
        let key = base64_key();
        assert_eq!(key.len(), 24);
        assert!(key.ends_with("=="));
    }
}
