//! The WeChat mini-program server API (code2Session, stable access token, phone number,
//! subscribe messages, cards), spoken over HTTP to `WECHAT_API_BASE` — api.weixin.qq.com, or the
//! built-in sandbox.
//!
//! One [`MiniProgramClient`] per app, shared by every caller: it holds the access token and the
//! card api_ticket for all of them (see `token.rs` for how the token is renewed).

mod cards;
mod sign;
mod subscribe;
mod token;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use paystream_engine::accounts::{MiniProgram, PhoneNumber, WechatError, WechatSession};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use tokio::sync::Mutex;

pub use sign::card_signature;

/// code2Session answers -1 when WeChat is busy; the code is not consumed, so it is worth trying
/// again a couple of times before telling the user.
const BUSY_RETRIES: u32 = 2;

pub struct MiniProgramClient {
    http: reqwest::Client,
    base: String,
    appid: String,
    secret: SecretString,
    token: Mutex<Option<token::CachedToken>>,
    /// The `wx_card` api_ticket and when to fetch a new one.
    card_ticket: Mutex<Option<(SecretString, Instant)>>,
}

#[derive(Deserialize)]
struct SessionReply {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    openid: Option<String>,
    unionid: Option<String>,
    session_key: Option<String>,
}

#[derive(Deserialize)]
struct PhoneReply {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    phone_info: Option<PhoneInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PhoneInfo {
    phone_number: String,
    /// A string in WeChat's answers, a number in its documentation's example.
    #[serde(deserialize_with = "string_or_number")]
    country_code: String,
}

/// A field WeChat sends as a JSON string or a number, kept as text.
pub(crate) fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(match Either::deserialize(d)? {
        Either::Text(text) => text,
        Either::Number(number) => number.to_string(),
    })
}

/// reqwest's messages include the URL, which carries the app secret or access token: strip it.
fn transport(e: reqwest::Error) -> WechatError {
    WechatError::Unavailable(e.without_url().to_string())
}

fn classify(errcode: i64, errmsg: &str) -> WechatError {
    match errcode {
        40029 | 40163 => WechatError::InvalidCode { errcode },
        45011 => WechatError::RateLimited,
        -1 => WechatError::Unavailable("WeChat is busy (errcode -1)".into()),
        40226 => WechatError::Refused {
            errcode,
            errmsg: errmsg.to_string(),
        },
        _ => WechatError::Unavailable(format!("WeChat answered errcode {errcode}: {errmsg}")),
    }
}

/// An answer's errcode; WeChat leaves it out of some successful answers.
pub(crate) fn errcode_of(answer: &Value) -> i64 {
    answer.get("errcode").and_then(Value::as_i64).unwrap_or(0)
}

pub(crate) fn errmsg_of(answer: &Value) -> String {
    answer
        .get("errmsg")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl MiniProgramClient {
    pub fn new(base: &str, appid: &str, secret: SecretString) -> MiniProgramClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("paystream/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client");
        MiniProgramClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            appid: appid.to_string(),
            secret,
            token: Mutex::new(None),
            card_ticket: Mutex::new(None),
        }
    }

    /// A 2xx answer's JSON body; anything else is WeChat being unavailable.
    async fn read(response: reqwest::Response) -> Result<Value, WechatError> {
        if !response.status().is_success() {
            return Err(WechatError::Unavailable(format!(
                "WeChat answered HTTP {}",
                response.status()
            )));
        }
        // jscode2session answers with text/plain: parse the body, whatever its content type.
        let body = response.bytes().await.map_err(transport)?;
        serde_json::from_slice(&body)
            .map_err(|e| WechatError::Unavailable(format!("unreadable WeChat answer: {e}")))
    }

    /// Calls an API that takes `?access_token=`: `request` builds the call for a token. When the
    /// token is refused it is renewed and the call made once more; the answer (errcode included,
    /// a token error too if the renewed token is refused again) is the caller's to read.
    async fn call<F>(&self, request: F) -> Result<Value, WechatError>
    where
        F: Fn(&str) -> reqwest::RequestBuilder,
    {
        let mut token = self.access_token().await?;
        let mut renewed = false;
        loop {
            let response = request(token.expose_secret())
                .send()
                .await
                .map_err(transport)?;
            let answer = Self::read(response).await?;
            if token::is_token_error(errcode_of(&answer)) && !renewed {
                token = self.renew_token(&token).await?;
                renewed = true;
                continue;
            }
            return Ok(answer);
        }
    }

    /// `POST {base}{path}?access_token=…` with a JSON body, through [`Self::call`].
    async fn post_json(&self, path: &str, body: &Value) -> Result<Value, WechatError> {
        let url = format!("{}{path}", self.base);
        self.call(|token| {
            self.http
                .post(&url)
                .query(&[("access_token", token)])
                .json(body)
        })
        .await
    }
}

#[async_trait]
impl MiniProgram for MiniProgramClient {
    fn appid(&self) -> &str {
        &self.appid
    }

    async fn code_to_session(&self, code: &str) -> Result<WechatSession, WechatError> {
        let mut attempt = 0;
        loop {
            let response = self
                .http
                .get(format!("{}/sns/jscode2session", self.base))
                .query(&[
                    ("appid", self.appid.as_str()),
                    ("secret", self.secret.expose_secret()),
                    ("js_code", code),
                    ("grant_type", "authorization_code"),
                ])
                .send()
                .await
                .map_err(transport)?;
            let reply: SessionReply =
                serde_json::from_value(Self::read(response).await?).map_err(|e| {
                    WechatError::Unavailable(format!("unreadable code2Session answer: {e}"))
                })?;
            match (reply.errcode, reply.openid, reply.session_key) {
                (0, Some(openid), Some(session_key)) => {
                    return Ok(WechatSession {
                        openid,
                        unionid: reply.unionid,
                        session_key: SecretString::from(session_key),
                    })
                }
                (-1, _, _) if attempt < BUSY_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                (0, _, _) => {
                    return Err(WechatError::Unavailable(
                        "code2Session answered without openid or session_key".into(),
                    ))
                }
                (errcode, _, _) => return Err(classify(errcode, &reply.errmsg)),
            }
        }
    }

    async fn phone_number(&self, code: &str) -> Result<PhoneNumber, WechatError> {
        let answer = self
            .post_json("/wxa/business/getuserphonenumber", &json!({ "code": code }))
            .await?;
        let reply: PhoneReply = serde_json::from_value(answer).map_err(|e| {
            WechatError::Unavailable(format!("unreadable getuserphonenumber answer: {e}"))
        })?;
        match (reply.errcode, reply.phone_info) {
            (0, Some(info)) => Ok(PhoneNumber {
                phone: info.phone_number,
                country_code: info.country_code,
            }),
            (errcode, _) => Err(classify(errcode, &reply.errmsg)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wechat_errcodes_map_to_what_the_caller_must_do() {
        assert!(matches!(
            classify(40029, ""),
            WechatError::InvalidCode { errcode: 40029 }
        ));
        assert!(matches!(
            classify(40163, ""),
            WechatError::InvalidCode { errcode: 40163 }
        ));
        assert!(matches!(classify(45011, ""), WechatError::RateLimited));
        assert!(matches!(classify(-1, ""), WechatError::Unavailable(_)));
        assert!(matches!(
            classify(40226, "blocked"),
            WechatError::Refused { errcode: 40226, .. }
        ));
        assert!(matches!(
            classify(40013, "invalid appid"),
            WechatError::Unavailable(_)
        ));
        // A token still refused after renewal.
        assert!(matches!(classify(40001, ""), WechatError::Unavailable(_)));
    }

    #[test]
    fn country_codes_are_read_as_strings_or_numbers() {
        for answer in [
            json!({ "phoneNumber": "13800138000", "countryCode": "86" }),
            json!({ "phoneNumber": "13800138000", "countryCode": 86 }),
        ] {
            let info: PhoneInfo = serde_json::from_value(answer).unwrap();
            assert_eq!(info.country_code, "86");
        }
    }
}
