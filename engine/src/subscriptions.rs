//! Subscribe messages: the acceptances a customer gave in `wx.requestSubscribeMessage` (each accept
//! allows exactly one send of that template) and the port messages are sent through.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::Row;
use uuid::Uuid;

use crate::db::{millis, Db};
use crate::error::Result;

/// One subscribe message, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeMessage {
    pub openid: String,
    pub template_id: String,
    pub page: Option<String>,
    /// Template field → text.
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The user has no unused acceptance of this template at WeChat (43101).
    #[error("the user has no unused acceptance of this template")]
    NoAcceptance,
    /// Final: bad openid (40003), bad data (47003), unknown template, …
    #[error("WeChat refused the message (errcode {errcode}: {errmsg})")]
    Refused { errcode: i64, errmsg: String },
    /// Busy (-1), network trouble, an access token that could not be renewed: try again.
    #[error("WeChat is unavailable: {0}")]
    Unavailable(String),
}

/// `/cgi-bin/message/subscribe/send`, implemented by `adapters/wechat`.
#[async_trait]
pub trait SubscribeMessages: Send + Sync {
    /// Sends one message; `Ok` carries WeChat's msgid.
    async fn send(&self, message: &SubscribeMessage) -> std::result::Result<String, SendError>;
}

/// Template ids are short printable strings from the mini-program's console.
pub fn valid_template_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_graphic())
}

/// The acceptances customers gave, one send each.
#[derive(Clone)]
pub struct Subscriptions {
    db: Db,
}

impl Subscriptions {
    pub fn new(db: Db) -> Subscriptions {
        Subscriptions { db }
    }

    /// Records one more acceptance of each template for this user.
    pub async fn accept(&self, user_id: Uuid, template_ids: &[String]) -> Result<()> {
        let mut tx = self.db.begin_write().await?;
        let now = millis(Utc::now());
        for template_id in template_ids {
            sqlx::query(
                "INSERT INTO subscription_acceptances (user_id, template_id, remaining, updated_at) \
                 VALUES ($1, $2, 1, $3) ON CONFLICT (user_id, template_id) DO UPDATE \
                 SET remaining = subscription_acceptances.remaining + 1, updated_at = excluded.updated_at",
            )
            .bind(user_id.to_string())
            .bind(template_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            ?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Unused acceptances of a template.
    pub async fn remaining(&self, user_id: Uuid, template_id: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT remaining FROM subscription_acceptances WHERE user_id = $1 AND template_id = $2",
        )
        .bind(user_id.to_string())
        .bind(template_id)
        .fetch_optional(&self.db.pool)
        .await
        ?;
        Ok(match row {
            Some(row) => row.try_get("remaining")?,
            None => 0,
        })
    }
}
