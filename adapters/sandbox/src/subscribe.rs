//! Subscribe messages: `POST /cgi-bin/message/subscribe/send`, and the user's side of it — the
//! acceptances given in `wx.requestSubscribeMessage` — through the control API.
//!
//! Checked as WeChat does, in this order (all answers HTTP 200):
//! * the access token (40001);
//! * `touser` is an openid of this app the simulator knows: one that logged in, accepted a
//!   template or was given a card (40003 `invalid openid`);
//! * `template_id` is a non-empty string (40037 `invalid template_id`);
//! * `page`, `miniprogram_state` (`developer`/`trial`/`formal`) and `lang` (`zh_CN`, `en_US`,
//!   `zh_HK`, `zh_TW`) are well-formed when present, `data` follows [`check_data`] (47003);
//! * the user has an unused acceptance of the template (43101 `user refuse to accept the msg`);
//!   each acceptance allows exactly one send.
//!
//! The sandbox does not know the app's templates or pages: any template id the user accepted is
//! sent, any page is taken (WeChat would answer 40037 or 41030 for unknown ones).

use std::collections::{HashMap, VecDeque};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::miniprogram::{control_error, control_openid, wechat_error, Sandbox, TokenQuery};
use crate::tokens;

#[derive(Default)]
pub(crate) struct SubscribeState {
    /// Unused acceptances per (openid, template_id).
    quota: HashMap<(String, String), u32>,
    sent: Vec<SentMessage>,
    /// errcodes the next sends answer with.
    pub(crate) faults: VecDeque<i64>,
}

/// A message WeChat accepted, as `GET /control/subscribe-messages` shows it.
#[derive(Clone, Serialize)]
struct SentMessage {
    touser: String,
    template_id: String,
    page: Option<String>,
    data: Value,
    msgid: u64,
    sent_at: String,
}

/// 47003, with WeChat's wording.
fn bad_argument(what: &str) -> Value {
    wechat_error(47003, &format!("argument invalid! {what}"))
}

/// The value rules per field kind (the field name without its trailing digits), from WeChat's
/// subscribe-message documentation, simplified:
/// * every field: `{"value": "<non-empty string>"}`;
/// * `thing`: at most 20 characters; `phrase`: at most 5;
/// * `character_string`: at most 32, ASCII letters, digits and symbols only;
/// * `number`: at most 32 digits, one optional decimal point; `letter`: at most 32 ASCII letters;
/// * `amount`: an optional currency sign, at most 10 digits with an optional decimal part, an
///   optional trailing `元`;
/// * other kinds (`time`, `date`, `name`, …): non-empty only.
pub(crate) fn check_data(data: Option<&Value>) -> Result<Map<String, Value>, String> {
    let Some(Value::Object(fields)) = data else {
        return Err("data invalid".into());
    };
    if fields.is_empty() {
        return Err("data is empty".into());
    }
    for (name, field) in fields {
        let Some(value) = field.get("value").and_then(Value::as_str) else {
            return Err(format!("data.{name}.value invalid"));
        };
        let kind = name.trim_end_matches(|c: char| c.is_ascii_digit());
        if value.is_empty() || !value_fits(kind, value) {
            return Err(format!("data.{name}.value invalid"));
        }
    }
    Ok(fields.clone())
}

fn value_fits(kind: &str, value: &str) -> bool {
    let chars = value.chars().count();
    match kind {
        "thing" => chars <= 20,
        "phrase" => chars <= 5,
        "character_string" => chars <= 32 && value.chars().all(|c| c.is_ascii_graphic()),
        "number" => {
            chars <= 32
                && value.chars().filter(|c| *c == '.').count() <= 1
                && value.chars().all(|c| c.is_ascii_digit() || c == '.')
                && value.chars().any(|c| c.is_ascii_digit())
        }
        "letter" => chars <= 32 && value.chars().all(|c| c.is_ascii_alphabetic()),
        "amount" => amount_fits(value),
        _ => true,
    }
}

fn amount_fits(value: &str) -> bool {
    let value = value.strip_suffix('元').unwrap_or(value);
    let value = value.trim_start_matches(['¥', '￥', '$']);
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    match value.split_once('.') {
        Some((whole, fraction)) => {
            digits(whole) && digits(fraction) && whole.len() + fraction.len() <= 10
        }
        None => digits(value) && value.len() <= 10,
    }
}

async fn send(
    State(sb): State<Sandbox>,
    Query(q): Query<TokenQuery>,
    body: axum::body::Bytes,
) -> Json<Value> {
    let mut state = sb.lock();
    if let Some(refusal) = tokens::check(&state, q.access_token.as_deref()) {
        return refusal;
    }
    if let Some(errcode) = state.subscribe.faults.pop_front() {
        return Json(wechat_error(errcode, "injected by the sandbox"));
    }
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return Json(wechat_error(47001, "data format error"));
    };
    let touser = match req.get("touser").and_then(Value::as_str) {
        Some(openid) if sb.openids.contains(openid) => openid.to_string(),
        _ => return Json(wechat_error(40003, "invalid openid")),
    };
    let template_id = match req.get("template_id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => return Json(wechat_error(40037, "invalid template_id")),
    };
    let page = match req.get("page") {
        None => None,
        Some(Value::String(page)) if page.len() <= 1024 => Some(page.clone()),
        Some(_) => return Json(bad_argument("page invalid")),
    };
    if let Some(v) = req.get("miniprogram_state") {
        if !matches!(v.as_str(), Some("developer" | "trial" | "formal")) {
            return Json(bad_argument("miniprogram_state invalid"));
        }
    }
    if let Some(v) = req.get("lang") {
        if !matches!(v.as_str(), Some("zh_CN" | "en_US" | "zh_HK" | "zh_TW")) {
            return Json(bad_argument("lang invalid"));
        }
    }
    let data = match check_data(req.get("data")) {
        Ok(data) => data,
        Err(what) => return Json(bad_argument(&what)),
    };
    let key = (touser.clone(), template_id.clone());
    match state.subscribe.quota.get_mut(&key) {
        Some(left) if *left > 0 => *left -= 1,
        _ => return Json(wechat_error(43101, "user refuse to accept the msg")),
    }
    // WeChat's msgids are 19-digit numbers, beyond what a JavaScript number holds exactly.
    let msgid: u64 =
        rand::thread_rng().gen_range(1_000_000_000_000_000_000..9_000_000_000_000_000_000);
    state.subscribe.sent.push(SentMessage {
        touser,
        template_id,
        page,
        data: Value::Object(data),
        msgid,
        sent_at: chrono::Utc::now().to_rfc3339(),
    });
    Json(json!({ "errcode": 0, "errmsg": "ok", "msgid": msgid }))
}

#[derive(Deserialize)]
struct AcceptRequest {
    user: Option<String>,
    openid: Option<String>,
    template_ids: Vec<String>,
}

/// The user taps "allow" in `wx.requestSubscribeMessage` for these templates: one send each.
async fn control_accept(State(sb): State<Sandbox>, Json(req): Json<AcceptRequest>) -> Response {
    let Some(openid) = control_openid(&sb, req.user.as_deref(), req.openid.as_deref()) else {
        return control_error(StatusCode::BAD_REQUEST, "give user or openid");
    };
    if req.template_ids.iter().any(String::is_empty) {
        return control_error(StatusCode::BAD_REQUEST, "empty template id");
    }
    let mut state = sb.lock();
    sb.openids.insert(&openid);
    for template_id in &req.template_ids {
        *state
            .subscribe
            .quota
            .entry((openid.clone(), template_id.clone()))
            .or_default() += 1;
    }
    Json(json!({ "openid": openid, "accepted": req.template_ids })).into_response()
}

#[derive(Deserialize)]
struct MessagesQuery {
    openid: Option<String>,
}

/// Every message WeChat accepted, oldest first; only those to `openid` when given.
async fn control_messages(
    State(sb): State<Sandbox>,
    Query(q): Query<MessagesQuery>,
) -> Json<Value> {
    let state = sb.lock();
    let messages: Vec<&SentMessage> = state
        .subscribe
        .sent
        .iter()
        .filter(|m| q.openid.as_deref().is_none_or(|o| m.touser == o))
        .collect();
    Json(json!({ "messages": messages }))
}

pub(crate) fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/cgi-bin/message/subscribe/send", post(send))
        .route("/control/subscribe-accept", post(control_accept))
        .route("/control/subscribe-messages", get(control_messages))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, value: &str) -> Result<Map<String, Value>, String> {
        check_data(Some(&json!({ name: { "value": value } })))
    }

    #[test]
    fn data_values_follow_the_field_kind() {
        assert!(field("thing1", "二十个字以内的商品名称也可以").is_ok());
        assert!(field("thing1", &"字".repeat(20)).is_ok());
        assert!(field("thing1", &"字".repeat(21)).is_err());
        assert!(field("character_string2", "PS20240101123456").is_ok());
        assert!(field("character_string2", &"a".repeat(33)).is_err());
        assert!(field("character_string2", "订单号").is_err());
        assert!(field("number3", "12.5").is_ok());
        assert!(field("number3", "12a").is_err());
        assert!(field("letter4", "abc").is_ok());
        assert!(field("letter4", "ab1").is_err());
        assert!(field("phrase5", "已支付").is_ok());
        assert!(field("phrase5", "已经支付成功了").is_err());
        assert!(field("amount6", "12.50").is_ok());
        assert!(field("amount6", "¥12.50").is_ok());
        assert!(field("amount6", "12元").is_ok());
        assert!(field("amount6", "12.").is_err());
        assert!(field("amount6", "twelve").is_err());
        assert!(field("time7", "2024-01-01 12:00").is_ok());
        assert!(field("time7", "").is_err());
    }

    #[test]
    fn data_must_be_an_object_of_value_objects() {
        assert!(check_data(None).is_err());
        assert!(check_data(Some(&json!({}))).is_err());
        assert!(check_data(Some(&json!({ "thing1": "bare string" }))).is_err());
        assert!(check_data(Some(&json!({ "thing1": { "value": 5 } }))).is_err());
    }
}
