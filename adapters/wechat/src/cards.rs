//! Cards: `/card/code/get`, `/card/code/consume`, and the `wx_card` api_ticket `cardExt` is
//! signed with.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use paystream_engine::cards::{CardCode, CardError, CardRef, Cards, CodeState};
use rand::distributions::Alphanumeric;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::sign::card_signature;
use crate::{errcode_of, errmsg_of, token, MiniProgramClient};

/// Fetch a new api_ticket this long before WeChat says the current one expires.
const TICKET_MARGIN: Duration = Duration::from_secs(300);

/// What the caller must do about a card call WeChat did not accept.
pub(crate) fn card_error(errcode: i64, errmsg: &str) -> CardError {
    match errcode {
        // 40056 invalid serial code, 40127 invalid user-card status, 40073 invalid card id.
        40056 | 40127 | 40073 => CardError::Unknown,
        40099 => CardError::AlreadyConsumed,
        -1 | 45009 | 45011 => {
            CardError::Unavailable(format!("WeChat answered errcode {errcode}: {errmsg}"))
        }
        e if token::is_token_error(e) => CardError::Unavailable(format!(
            "access token refused after renewal (errcode {errcode})"
        )),
        _ => CardError::Refused {
            errcode,
            errmsg: errmsg.to_string(),
        },
    }
}

fn unavailable(e: impl std::fmt::Display) -> CardError {
    CardError::Unavailable(e.to_string())
}

#[derive(Deserialize)]
struct CodeReply {
    openid: Option<String>,
    user_card_status: Option<String>,
    /// Absent reads as "no": a code is never taken as usable on a guess.
    #[serde(default)]
    can_consume: bool,
}

#[derive(Deserialize)]
struct TicketReply {
    ticket: Option<String>,
    expires_in: Option<u64>,
}

/// 16 random letters and digits.
fn nonce_str() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

impl MiniProgramClient {
    /// A card api call: the answer when errcode is 0, else what it means.
    async fn card_call(&self, path: &str, body: Value) -> Result<Value, CardError> {
        let answer = self.post_json(path, &body).await.map_err(unavailable)?;
        match errcode_of(&answer) {
            0 => Ok(answer),
            errcode => Err(card_error(errcode, &errmsg_of(&answer))),
        }
    }

    /// The `wx_card` api_ticket, cached for every caller until shortly before it expires.
    async fn card_api_ticket(&self) -> Result<SecretString, CardError> {
        let mut cached = self.card_ticket.lock().await;
        if let Some((ticket, _)) = cached.as_ref().filter(|(_, at)| Instant::now() < *at) {
            return Ok(ticket.clone());
        }
        let url = format!("{}/cgi-bin/ticket/getticket", self.base);
        let answer = self
            .call(|token| {
                self.http
                    .get(&url)
                    .query(&[("access_token", token), ("type", "wx_card")])
            })
            .await
            .map_err(unavailable)?;
        if errcode_of(&answer) != 0 {
            return Err(card_error(errcode_of(&answer), &errmsg_of(&answer)));
        }
        let reply: TicketReply = serde_json::from_value(answer).map_err(unavailable)?;
        let (Some(ticket), Some(expires_in)) = (reply.ticket, reply.expires_in) else {
            return Err(unavailable(
                "getticket answered without ticket or expires_in",
            ));
        };
        let ticket = SecretString::from(ticket);
        let lifetime = Duration::from_secs(expires_in).saturating_sub(TICKET_MARGIN);
        *cached = Some((ticket.clone(), Instant::now() + lifetime));
        Ok(ticket)
    }
}

#[async_trait]
impl Cards for MiniProgramClient {
    async fn check(&self, card: &CardRef) -> Result<CardCode, CardError> {
        // With check_consume true WeChat answers an errcode for an unusable code; false gives
        // its status, which says why.
        let body = json!({ "card_id": card.card_id, "code": card.code, "check_consume": false });
        let answer = self.card_call("/card/code/get", body).await?;
        let reply: CodeReply = serde_json::from_value(answer).map_err(unavailable)?;
        match (reply.openid, reply.user_card_status) {
            (Some(openid), Some(status)) => Ok(CardCode {
                openid,
                state: match status.as_str() {
                    "NORMAL" => CodeState::Usable,
                    "CONSUMED" => CodeState::Consumed,
                    // EXPIRE, GIFTING, GIFT_TIMEOUT, DELETE, UNAVAILABLE, …
                    _ => CodeState::Unusable(status),
                },
                can_consume: reply.can_consume,
            }),
            _ => Err(unavailable(
                "card/code/get answered without openid or user_card_status",
            )),
        }
    }

    async fn consume(&self, card: &CardRef) -> Result<String, CardError> {
        let body = json!({ "code": card.code, "card_id": card.card_id });
        let answer = self.card_call("/card/code/consume", body).await?;
        match answer.get("openid").and_then(Value::as_str) {
            Some(openid) => Ok(openid.to_string()),
            // Consumed, but whose it was is unknown: asking again gives 40099, which the caller
            // already has to handle after a lost answer.
            None => Err(unavailable("card/code/consume answered without openid")),
        }
    }

    async fn card_ext(&self, card_id: &str) -> Result<String, CardError> {
        let ticket = self.card_api_ticket().await?;
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let nonce_str = nonce_str();
        let signature = card_signature(&[ticket.expose_secret(), card_id, &timestamp, &nonce_str]);
        Ok(
            json!({ "timestamp": timestamp, "nonce_str": nonce_str, "signature": signature })
                .to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errcodes_map_to_what_the_caller_must_do() {
        for errcode in [40056, 40127, 40073] {
            assert!(matches!(card_error(errcode, ""), CardError::Unknown));
        }
        assert!(matches!(card_error(40099, ""), CardError::AlreadyConsumed));
        for errcode in [-1, 45009, 45011, 40001, 42001, 40014] {
            assert!(matches!(card_error(errcode, ""), CardError::Unavailable(_)));
        }
        assert!(matches!(
            card_error(40079, "invalid time"),
            CardError::Refused { errcode: 40079, .. }
        ));
    }

    #[test]
    fn nonces_are_16_alphanumerics_and_differ() {
        let (a, b) = (nonce_str(), nonce_str());
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
