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
        let mut conn = self.db.pool.acquire().await?;
        remaining_on(&mut conn, user_id, template_id).await
    }
}

/// A subscribe message that one event should cause: who, which template, for which order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendKey {
    pub message_id: Uuid,
    pub template_id: String,
    pub user_id: Uuid,
    pub openid: String,
    pub order_id: Uuid,
    pub event_type: String,
}

/// What [`Subscriptions::claim`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// An acceptance was spent on this message just now: send it.
    New,
    /// This message spent an acceptance earlier but its send never finished (a crash, a lost
    /// answer): send again. WeChat allows one send per acceptance, so a repeat that already got
    /// through is answered "no acceptance" there instead of reaching the customer twice.
    Resumed,
    /// The message was already handled (sent, refused or skipped).
    Done,
    /// Another worker is sending it right now: try again later.
    Busy,
    /// A worker died mid-send and the customer still has unused acceptances of the template, so
    /// WeChat would not refuse a repeat: not resent (recorded `unconfirmed`) rather than risk a
    /// second message.
    Unconfirmed,
    /// The customer has no unused acceptance of the template: nothing is sent.
    NoAcceptance,
}

/// How a send ended, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendResult {
    Sent {
        msgid: String,
    },
    /// A resumed send that WeChat answered "no acceptance": the first attempt got through.
    SentBefore,
    Refused {
        errcode: i64,
        detail: String,
    },
}

/// A claim older than this with no outcome belongs to a worker that died: comfortably more than
/// one send takes (the client gives up on WeChat after 5 s).
const CLAIM_STALE_AFTER: chrono::Duration = chrono::Duration::seconds(15);

impl Subscriptions {
    /// Claims the send of `key` for `worker`: spends one acceptance the first time (in the same
    /// transaction as the claim row), and tells a repeat what became of the first.
    pub async fn claim(&self, key: &SendKey, worker: &str) -> Result<Claim> {
        let now = Utc::now();
        let mut tx = self.db.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO subscribe_sends (message_id, template_id, user_id, openid, order_id, \
             event_type, status, claimed_at) VALUES ($1, $2, $3, $4, $5, $6, 'sending', $7) \
             ON CONFLICT (message_id, template_id) DO NOTHING",
        )
        .bind(key.message_id.to_string())
        .bind(&key.template_id)
        .bind(key.user_id.to_string())
        .bind(&key.openid)
        .bind(key.order_id.to_string())
        .bind(&key.event_type)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            let row = sqlx::query(
                "SELECT status, claimed_at FROM subscribe_sends WHERE message_id = $1 AND template_id = $2",
            )
            .bind(key.message_id.to_string())
            .bind(&key.template_id)
            .fetch_one(&mut *tx)
            .await?;
            let status: String = row.try_get("status")?;
            let claimed_at: i64 = row.try_get("claimed_at")?;
            if status != "sending" {
                return Ok(Claim::Done);
            }
            let stale_before = millis(now - CLAIM_STALE_AFTER);
            if claimed_at > stale_before {
                return Ok(Claim::Busy);
            }
            // Guarded, so that of two workers resuming the same stale claim at once (PostgreSQL
            // reads committed; SQLite serialises) exactly one gets it.
            let taken = sqlx::query(
                "UPDATE subscribe_sends SET claimed_at = $3 WHERE message_id = $1 \
                 AND template_id = $2 AND status = 'sending' AND claimed_at <= $4",
            )
            .bind(key.message_id.to_string())
            .bind(&key.template_id)
            .bind(millis(now))
            .bind(stale_before)
            .execute(&mut *tx)
            .await?;
            if taken.rows_affected() == 0 {
                return Ok(Claim::Busy);
            }
            // A released claim (claimed_at = 0) failed in a way worth retrying; any other stale
            // claim belongs to a worker that died, possibly after WeChat took the message.
            let released = claimed_at == 0;
            if !released && remaining_on(&mut tx, key.user_id, &key.template_id).await? > 0 {
                sqlx::query(
                    "UPDATE subscribe_sends SET status = 'unconfirmed', finished_at = $3 \
                     WHERE message_id = $1 AND template_id = $2",
                )
                .bind(key.message_id.to_string())
                .bind(&key.template_id)
                .bind(millis(now))
                .execute(&mut *tx)
                .await?;
                crate::consumers::Inbox::record(&mut tx, worker, key.message_id).await?;
                tx.commit().await?;
                return Ok(Claim::Unconfirmed);
            }
            tx.commit().await?;
            return Ok(Claim::Resumed);
        }
        let spent = sqlx::query(
            "UPDATE subscription_acceptances SET remaining = remaining - 1, updated_at = $3 \
             WHERE user_id = $1 AND template_id = $2 AND remaining > 0",
        )
        .bind(key.user_id.to_string())
        .bind(&key.template_id)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
        let claim = if spent.rows_affected() == 1 {
            Claim::New
        } else {
            sqlx::query(
                "UPDATE subscribe_sends SET status = 'not_accepted', finished_at = $3 \
                 WHERE message_id = $1 AND template_id = $2",
            )
            .bind(key.message_id.to_string())
            .bind(&key.template_id)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
            Claim::NoAcceptance
        };
        tx.commit().await?;
        Ok(claim)
    }

    /// Records how the send ended, with the worker's inbox row, in one transaction.
    pub async fn finish(&self, key: &SendKey, worker: &str, result: &SendResult) -> Result<()> {
        let (status, errcode, detail, msgid) = match result {
            SendResult::Sent { msgid } => ("sent", None, None, Some(msgid.as_str())),
            SendResult::SentBefore => ("sent_before", None, None, None),
            SendResult::Refused { errcode, detail } => {
                ("refused", Some(*errcode), Some(detail.as_str()), None)
            }
        };
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "UPDATE subscribe_sends SET status = $3, errcode = $4, detail = $5, msgid = $6, \
             finished_at = $7 WHERE message_id = $1 AND template_id = $2",
        )
        .bind(key.message_id.to_string())
        .bind(&key.template_id)
        .bind(status)
        .bind(errcode)
        .bind(detail)
        .bind(msgid)
        .bind(millis(Utc::now()))
        .execute(&mut *tx)
        .await?;
        crate::consumers::Inbox::record(&mut tx, worker, key.message_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The subscribe messages of an order, oldest first: (event type, template, status).
    pub async fn sends_of_order(&self, order_id: Uuid) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query(
            "SELECT event_type, template_id, status FROM subscribe_sends WHERE order_id = $1 \
             ORDER BY claimed_at",
        )
        .bind(order_id.to_string())
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("event_type")?,
                    r.try_get("template_id")?,
                    r.try_get("status")?,
                ))
            })
            .collect()
    }
}

impl Subscriptions {
    /// Lets the next attempt resume a claim at once (the send failed in a way worth retrying).
    /// `claimed_at = 0` marks the claim released, as opposed to abandoned by a dead worker.
    pub async fn release(&self, key: &SendKey) -> Result<()> {
        sqlx::query(
            "UPDATE subscribe_sends SET claimed_at = 0 WHERE message_id = $1 AND template_id = $2 \
             AND status = 'sending'",
        )
        .bind(key.message_id.to_string())
        .bind(&key.template_id)
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}

async fn remaining_on(
    conn: &mut sqlx::AnyConnection,
    user_id: Uuid,
    template_id: &str,
) -> Result<i64> {
    let row = sqlx::query(
        "SELECT remaining FROM subscription_acceptances WHERE user_id = $1 AND template_id = $2",
    )
    .bind(user_id.to_string())
    .bind(template_id)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        Some(row) => row.try_get("remaining")?,
        None => 0,
    })
}
