//! Prepay ids from WeChat Pay, kept so that a repeated pay call reuses a still-valid one
//! (WeChat would answer the same id for identical parameters anyway; this saves the round trip).

use chrono::{DateTime, Duration, Utc};

use crate::db::{from_millis, millis, Db};
use crate::order::PayChannel;

/// Don't hand out an id that would expire while the user is still on the payment sheet.
const SAFETY_MARGIN: Duration = Duration::minutes(5);

#[derive(Clone)]
pub struct Prepays {
    db: Db,
}

impl Prepays {
    pub fn new(db: Db) -> Prepays {
        Prepays { db }
    }

    pub async fn valid(
        &self,
        out_trade_no: &str,
        channel: PayChannel,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, sqlx::Error> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT prepay_id, expires_at FROM prepays WHERE out_trade_no = $1 AND channel = $2",
        )
        .bind(out_trade_no)
        .bind(channel.as_str())
        .fetch_optional(&self.db.pool)
        .await?;
        Ok(row
            .filter(|(_, expires_at)| from_millis(*expires_at) - SAFETY_MARGIN > now)
            .map(|(id, _)| id))
    }

    /// A channel other than `channel` through which this order was already ordered at the
    /// provider, if any (its prepay id was issued, whether or not it is still valid).
    pub async fn other_channel(
        &self,
        out_trade_no: &str,
        channel: PayChannel,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT channel FROM prepays WHERE out_trade_no = $1 AND channel <> $2 LIMIT 1",
        )
        .bind(out_trade_no)
        .bind(channel.as_str())
        .fetch_optional(&self.db.pool)
        .await
    }

    pub async fn save(
        &self,
        out_trade_no: &str,
        channel: PayChannel,
        prepay_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO prepays (out_trade_no, channel, prepay_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (out_trade_no, channel) DO UPDATE SET \
             prepay_id = excluded.prepay_id, created_at = excluded.created_at, \
             expires_at = excluded.expires_at",
        )
        .bind(out_trade_no)
        .bind(channel.as_str())
        .bind(prepay_id)
        .bind(millis(now))
        .bind(millis(expires_at))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}
