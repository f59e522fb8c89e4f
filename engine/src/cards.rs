//! WeChat cards (coupons) redeemed with an order: the port the engine checks and consumes them
//! through. The card travels on the order (`OrderPlaced.card`); it is checked when the order is
//! placed and consumed only after the order is paid (by the card-verification worker).

use async_trait::async_trait;
use chrono::Utc;
use sqlx::Row;
use uuid::Uuid;

use crate::db::{millis, Db};

use crate::error::{Error, ErrorCode, Kind};

pub use crate::order::CardRef;

/// Where one card code stands at the card's issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodeState {
    /// In the holder's card bag, not used.
    Usable,
    /// Used (by us or elsewhere).
    Consumed,
    /// Anything else (expired, being gifted, deleted, …), in the issuer's words.
    Unusable(String),
}

/// What the issuer says of one card code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardCode {
    /// Whose card it is.
    pub openid: String,
    pub state: CodeState,
    /// The issuer's own verdict on consuming it now.
    pub can_consume: bool,
}

impl CardCode {
    /// Usable by `openid` right now.
    pub fn usable_by(&self, openid: &str) -> bool {
        self.openid == openid && self.can_consume && self.state == CodeState::Usable
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// No such card or code at WeChat.
    #[error("no such card code")]
    Unknown,
    /// WeChat says this code is already consumed (40099).
    #[error("the card code is already consumed")]
    AlreadyConsumed,
    /// WeChat refused for good (bad card id, not the merchant's card, …).
    #[error("WeChat refused (errcode {errcode}: {errmsg})")]
    Refused { errcode: i64, errmsg: String },
    /// Down, busy, rate limited: try again later.
    #[error("WeChat is unavailable: {0}")]
    Unavailable(String),
}

impl From<CardError> for Error {
    fn from(e: CardError) -> Error {
        let message = e.to_string();
        match e {
            CardError::Unknown | CardError::AlreadyConsumed | CardError::Refused { .. } => {
                Error::new(Kind::Rule, ErrorCode::CardNotUsable, message)
            }
            CardError::Unavailable(_) => {
                Error::new(Kind::Unavailable, ErrorCode::WechatUnavailable, message)
            }
        }
    }
}

/// The card API as the engine needs it (`/card/code/get`, `/card/code/consume`, the `wx_card`
/// api_ticket). Implemented over HTTP by `adapters/wechat`.
#[async_trait]
pub trait Cards: Send + Sync {
    async fn check(&self, card: &CardRef) -> Result<CardCode, CardError>;
    /// Consumes the code; `Ok` carries the owner's openid.
    async fn consume(&self, card: &CardRef) -> Result<String, CardError>;
    /// The `cardExt` JSON string `wx.addCard` takes for this card, signed with the api_ticket.
    async fn card_ext(&self, card_id: &str) -> Result<String, CardError>;
}

/// Consume calls made for each order's card. WeChat answers a repeated consume with 40099 ("already
/// consumed"); only a record of our own earlier call tells a lost answer from a card used elsewhere.
#[derive(Clone)]
pub struct ConsumeAttempts {
    db: Db,
}

impl ConsumeAttempts {
    pub fn new(db: Db) -> ConsumeAttempts {
        ConsumeAttempts { db }
    }

    /// Records a consume call about to be made; returns how many were recorded before it.
    pub async fn begin(&self, order_id: Uuid, card: &CardRef) -> crate::Result<i64> {
        let mut tx = self.db.begin_write().await?;
        let before: i64 =
            sqlx::query("SELECT attempts FROM card_consume_attempts WHERE order_id = $1")
                .bind(order_id.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get("attempts"))
                .transpose()?
                .unwrap_or(0);
        sqlx::query(
            "INSERT INTO card_consume_attempts (order_id, card_id, code, first_attempt_at, attempts) \
             VALUES ($1, $2, $3, $4, 1) ON CONFLICT (order_id) DO UPDATE \
             SET attempts = card_consume_attempts.attempts + 1",
        )
        .bind(order_id.to_string())
        .bind(&card.card_id)
        .bind(&card.code)
        .bind(millis(Utc::now()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(before)
    }

    /// Consume calls recorded so far for the order.
    pub async fn count(&self, order_id: Uuid) -> crate::Result<i64> {
        Ok(
            sqlx::query("SELECT attempts FROM card_consume_attempts WHERE order_id = $1")
                .bind(order_id.to_string())
                .fetch_optional(&self.db.pool)
                .await?
                .map(|row| row.try_get("attempts"))
                .transpose()?
                .unwrap_or(0),
        )
    }
}
