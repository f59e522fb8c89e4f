//! What each worker has already handled (the inbox) and what it gave up on (parked messages).

use chrono::Utc;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::EventMessage;
use crate::db::{from_millis, millis, Backend, Db};

/// Message ids a worker has handled. A row is written in the same transaction as the worker's
/// effect, so an effect and its "done" mark are committed together or not at all.
#[derive(Clone)]
pub struct Inbox {
    db: Db,
}

impl Inbox {
    pub fn new(db: Db) -> Inbox {
        Inbox { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether `worker` has already handled `message_id`.
    pub async fn seen(&self, worker: &str, message_id: Uuid) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT 1 FROM inbox WHERE worker = $1 AND message_id = $2")
            .bind(worker)
            .bind(message_id.to_string())
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Marks `message_id` handled inside the caller's transaction. `false` when it already was
    /// (a concurrent duplicate got there first: the caller must roll its effect back).
    pub async fn record(
        conn: &mut AnyConnection,
        worker: &str,
        message_id: Uuid,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO inbox (worker, message_id, handled_at) VALUES ($1, $2, $3) \
             ON CONFLICT (worker, message_id) DO NOTHING",
        )
        .bind(worker)
        .bind(message_id.to_string())
        .bind(millis(Utc::now()))
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a message handled after a worker returned without recording it (a repeat is then
    /// skipped without asking the worker). Such workers are idempotent by other means (an event
    /// on the order, a send row); this mark only saves the next delivery a trip through the
    /// worker, so on PostgreSQL it does not wait for its commit to reach the disk: a mark lost in
    /// a crash costs one idempotent re-run, while waiting would cost a WAL flush per message.
    pub async fn mark(&self, worker: &str, message_id: Uuid) -> Result<(), sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        if self.db.backend == Backend::Postgres {
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        Inbox::record(&mut tx, worker, message_id).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// A message a worker gave up on, kept with the reason (in-process runtime; with RabbitMQ the
/// parking queues hold them).
#[derive(Clone, Debug, PartialEq)]
pub struct ParkedMessage {
    pub worker: String,
    pub message_id: Uuid,
    pub event_type: String,
    pub reason: String,
    pub parked_at: chrono::DateTime<Utc>,
    pub body: String,
}

#[derive(Clone)]
pub struct Parked {
    db: Db,
}

impl Parked {
    pub fn new(db: Db) -> Parked {
        Parked { db }
    }

    pub async fn park(
        &self,
        worker: &str,
        message: &EventMessage,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO parked_messages (worker, message_id, event_type, reason, body, parked_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (worker, message_id) DO NOTHING",
        )
        .bind(worker)
        .bind(message.event_id.to_string())
        .bind(&message.event_type)
        .bind(reason)
        .bind(String::from_utf8_lossy(&message.to_body()).into_owned())
        .bind(millis(Utc::now()))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    pub async fn list(&self, worker: &str) -> Result<Vec<ParkedMessage>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT worker, message_id, event_type, reason, body, parked_at FROM parked_messages \
             WHERE worker = $1 ORDER BY parked_at",
        )
        .bind(worker)
        .fetch_all(&self.db.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ParkedMessage {
                    worker: row.try_get("worker")?,
                    message_id: Uuid::parse_str(&row.try_get::<String, _>("message_id")?)
                        .unwrap_or_default(),
                    event_type: row.try_get("event_type")?,
                    reason: row.try_get("reason")?,
                    body: row.try_get("body")?,
                    parked_at: from_millis(row.try_get("parked_at")?),
                })
            })
            .collect()
    }
}
