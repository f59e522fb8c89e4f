//! The WeChat mini-program server API (code2Session, stable access token, phone number), spoken
//! over HTTP to `WECHAT_API_BASE` — api.weixin.qq.com, or the built-in sandbox.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use paystream_engine::accounts::{MiniProgram, PhoneNumber, WechatError, WechatSession};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

/// code2Session answers -1 when WeChat is busy; the code is not consumed, so it is worth trying
/// again a couple of times before telling the user.
const BUSY_RETRIES: u32 = 2;

/// Refresh the access token this long before WeChat says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

pub struct MiniProgramClient {
    http: reqwest::Client,
    base: String,
    appid: String,
    secret: SecretString,
    token: Mutex<Option<(SecretString, Instant)>>,
}

#[derive(Deserialize)]
struct WechatReply {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    openid: Option<String>,
    unionid: Option<String>,
    session_key: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
    phone_info: Option<PhoneInfo>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PhoneInfo {
    phone_number: String,
    country_code: String,
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
        }
    }

    async fn read(response: reqwest::Response) -> Result<WechatReply, WechatError> {
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

    async fn access_token(&self, force: bool) -> Result<SecretString, WechatError> {
        let mut cached = self.token.lock().await;
        if let Some((token, valid_until)) = cached.as_ref() {
            if !force && Instant::now() < *valid_until {
                return Ok(token.clone());
            }
        }
        let reply = Self::read(
            self.http
                .post(format!("{}/cgi-bin/stable_token", self.base))
                .json(&json!({
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self.secret.expose_secret(),
                    "force_refresh": force,
                }))
                .send()
                .await
                .map_err(transport)?,
        )
        .await?;
        let (Some(token), Some(expires_in)) = (reply.access_token, reply.expires_in) else {
            return Err(classify(reply.errcode, &reply.errmsg));
        };
        let token = SecretString::from(token);
        let lifetime = Duration::from_secs(expires_in).saturating_sub(TOKEN_MARGIN);
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
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
            let reply = Self::read(response).await?;
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
        let mut force = false;
        loop {
            let token = self.access_token(force).await?;
            let reply = Self::read(
                self.http
                    .post(format!("{}/wxa/business/getuserphonenumber", self.base))
                    .query(&[("access_token", token.expose_secret())])
                    .json(&json!({ "code": code }))
                    .send()
                    .await
                    .map_err(transport)?,
            )
            .await?;
            match (reply.errcode, reply.phone_info) {
                (0, Some(info)) => {
                    return Ok(PhoneNumber {
                        phone: info.phone_number,
                        country_code: info.country_code,
                    })
                }
                // The token was revoked or expired early: fetch a fresh one once.
                (40001 | 42001, _) if !force => force = true,
                (errcode, _) => return Err(classify(errcode, &reply.errmsg)),
            }
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
    }
}
