//! The access token, one per client and shared by every API it calls, renewed the way WeChat
//! asks: `stable_token` in normal mode first; `force_refresh` only when normal mode hands back the
//! very token that was just refused, and at most once per 30 s per app in this process (a forced
//! refresh revokes the token every other instance is using, and WeChat allows 20 a day).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex as StdMutex};
use std::time::{Duration, Instant};

use paystream_engine::accounts::WechatError;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::{classify, transport, MiniProgramClient};

/// Refresh the access token this long before WeChat says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
const FORCE_GAP: Duration = Duration::from_secs(30);

/// When each app last forced a refresh, for every client in the process.
static LAST_FORCED: LazyLock<StdMutex<HashMap<String, Instant>>> =
    LazyLock::new(|| StdMutex::new(HashMap::new()));

/// Claims the app's forced refresh if none happened in the last 30 s. Check and claim are one
/// step, so of concurrent callers only one forces.
fn claim_forced_refresh(appid: &str) -> bool {
    let mut last = LAST_FORCED.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    match last.get(appid) {
        Some(at) if now.saturating_duration_since(*at) < FORCE_GAP => false,
        _ => {
            last.insert(appid.to_string(), now);
            true
        }
    }
}

/// 40001 invalid credential, 42001 expired, 40014 invalid access_token.
pub(crate) fn is_token_error(errcode: i64) -> bool {
    matches!(errcode, 40001 | 42001 | 40014)
}

pub(crate) struct CachedToken {
    token: SecretString,
    renew_at: Instant,
}

#[derive(Deserialize)]
struct StableTokenReply {
    #[serde(default)]
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

fn same(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}

impl MiniProgramClient {
    async fn stable_token(&self, force: bool) -> Result<CachedToken, WechatError> {
        let response = self
            .http
            .post(format!("{}/cgi-bin/stable_token", self.base))
            .json(&json!({
                "grant_type": "client_credential",
                "appid": self.appid,
                "secret": self.secret.expose_secret(),
                "force_refresh": force,
            }))
            .send()
            .await
            .map_err(transport)?;
        let reply: StableTokenReply =
            serde_json::from_value(Self::read(response).await?).map_err(|e| {
                WechatError::Unavailable(format!("unreadable stable_token answer: {e}"))
            })?;
        let (Some(token), Some(expires_in)) = (reply.access_token, reply.expires_in) else {
            return Err(classify(reply.errcode, &reply.errmsg));
        };
        let lifetime = Duration::from_secs(expires_in).saturating_sub(TOKEN_MARGIN);
        Ok(CachedToken {
            token: SecretString::from(token),
            renew_at: Instant::now() + lifetime,
        })
    }

    /// The cached token, or a new one from `stable_token` in normal mode.
    pub(crate) async fn access_token(&self) -> Result<SecretString, WechatError> {
        let mut cached = self.token.lock().await;
        if let Some(current) = cached.as_ref().filter(|c| Instant::now() < c.renew_at) {
            return Ok(current.token.clone());
        }
        let fresh = self.stable_token(false).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// A replacement for `refused`, which an API just answered 40001/42001/40014 to.
    pub(crate) async fn renew_token(
        &self,
        refused: &SecretString,
    ) -> Result<SecretString, WechatError> {
        // Callers that were refused together queue here; the first renews for all of them.
        let mut cached = self.token.lock().await;
        if let Some(current) = cached.as_ref() {
            if !same(&current.token, refused) && Instant::now() < current.renew_at {
                return Ok(current.token.clone());
            }
        }
        let normal = self.stable_token(false).await?;
        if !same(&normal.token, refused) {
            let token = normal.token.clone();
            *cached = Some(normal);
            return Ok(token);
        }
        // WeChat still hands out the token it refuses: only a forced refresh replaces it.
        if !claim_forced_refresh(&self.appid) {
            return Err(WechatError::Unavailable(
                "WeChat refuses the access token and it was force-refreshed less than 30 s ago"
                    .into(),
            ));
        }
        tracing::warn!(appid = %self.appid, "access token refused but still current: forcing a refresh");
        let forced = self.stable_token(true).await?;
        let token = forced.token.clone();
        *cached = Some(forced);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_refresh_is_claimed_once_per_30_seconds_per_app() {
        assert!(claim_forced_refresh("wx-claim-test-a"));
        assert!(!claim_forced_refresh("wx-claim-test-a"));
        assert!(claim_forced_refresh("wx-claim-test-b"));
    }

    #[test]
    fn token_errors_are_the_three_that_mean_renew() {
        for errcode in [40001, 42001, 40014] {
            assert!(is_token_error(errcode));
        }
        for errcode in [0, -1, 40003, 45009] {
            assert!(!is_token_error(errcode));
        }
    }
}
