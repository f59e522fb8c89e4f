//! Mini-program server API: code2Session, stable access tokens, phone numbers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::wechatpay::{MerchantCredentials, Pay, PaySandboxConfig, VerificationMode};

/// A `wx.login` code is valid for about five minutes and once only.
const CODE_TTL: Duration = Duration::from_secs(300);
const TOKEN_TTL_SECONDS: u64 = 7200;

#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub appid: String,
    pub secret: String,
    pub pay: PaySandboxConfig,
}

#[derive(Clone)]
pub struct Sandbox {
    config: Arc<SandboxConfig>,
    state: Arc<Mutex<State_>>,
    pub(crate) pay: Pay,
}

#[derive(Default)]
struct State_ {
    login_codes: HashMap<String, LoginCode>,
    phone_codes: HashMap<String, (String, Instant)>,
    access_tokens: HashMap<String, Instant>,
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
        let pay = Pay::new(&config.appid, &config.pay);
        Sandbox {
            config: Arc::new(config),
            state: Arc::new(Mutex::new(State_::default())),
            pay,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `wx.login` in the simulated mini-program would hand the client for this user.
    pub fn login_code(&self, user: &str, unionid: Option<String>) -> (String, String) {
        let code = random_token(32);
        let openid = openid_for(&self.config.appid, user);
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

fn random_token(len: usize) -> String {
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
fn wechat_error(errcode: i64, errmsg: &str) -> Value {
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
    text_json(body)
}

/// A session_key is 16 random bytes, base64-encoded (24 characters).
fn base64_key() -> String {
    use base64::Engine;
    let bytes: [u8; 16] = rand::thread_rng().gen();
    base64::engine::general_purpose::STANDARD.encode(bytes)
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
    let now = Instant::now();
    state.access_tokens.retain(|_, expiry| *expiry > now);
    // The stable token stays the same until it expires unless a refresh is forced.
    let current = state
        .access_tokens
        .iter()
        .max_by_key(|(_, expiry)| **expiry)
        .map(|(t, e)| (t.clone(), *e));
    let (token, expiry) = match current {
        Some(current) if !req.force_refresh => current,
        _ => {
            let token = random_token(136);
            let expiry = now + Duration::from_secs(TOKEN_TTL_SECONDS);
            state.access_tokens.insert(token.clone(), expiry);
            (token, expiry)
        }
    };
    Json(
        json!({ "access_token": token, "expires_in": expiry.saturating_duration_since(now).as_secs() }),
    )
}

#[derive(Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

async fn phone_number(
    State(sb): State<Sandbox>,
    Query(q): Query<TokenQuery>,
    body: axum::body::Bytes,
) -> Json<Value> {
    let mut state = sb.lock();
    let now = Instant::now();
    let token_ok = q
        .access_token
        .as_deref()
        .and_then(|t| state.access_tokens.get(t))
        .is_some_and(|expiry| *expiry > now);
    if !token_ok {
        return Json(wechat_error(
            40001,
            "invalid credential, access_token is invalid or not latest",
        ));
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
}

async fn control_faults(State(sb): State<Sandbox>, Json(req): Json<FaultRequest>) -> Json<Value> {
    let mut state = sb.lock();
    state.login_faults.extend(req.code2session);
    Json(json!({ "queued": { "code2session": state.login_faults.iter().collect::<Vec<_>>() } }))
}

pub fn routes(sandbox: Sandbox) -> Router {
    Router::new()
        .route("/sns/jscode2session", get(code2session))
        .route("/cgi-bin/stable_token", post(stable_token))
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
