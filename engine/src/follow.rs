//! Following the whole log from a named, durable checkpoint — the base of every asynchronous
//! reader (outbox relay, pollers). The checkpoint advances only after the handler has succeeded,
//! so a crash repeats a batch (at-least-once) and never skips one.

use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use sqlx::Row;

use crate::db::{millis, Db};
use crate::store::{Checkpoint, EventStore, RecordedEvent, StoreError};

#[derive(Clone)]
pub struct Checkpoints {
    db: Db,
}

impl Checkpoints {
    pub fn new(db: Db) -> Checkpoints {
        Checkpoints { db }
    }

    pub async fn load(&self, name: &str) -> Result<Checkpoint, StoreError> {
        let row = sqlx::query("SELECT tx, position FROM checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.db.pool)
            .await?;
        Ok(match row {
            Some(row) => Checkpoint {
                transaction: row.try_get("tx")?,
                position: row.try_get("position")?,
            },
            None => Checkpoint::START,
        })
    }

    pub async fn save(&self, name: &str, at: Checkpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkpoints (name, tx, position, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, position = excluded.position, \
             updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(at.transaction)
        .bind(at.position)
        .bind(millis(Utc::now()))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }
}

/// A named reader of the log.
pub struct Follower {
    name: String,
    store: Arc<dyn EventStore>,
    checkpoints: Checkpoints,
    batch: i64,
}

impl Follower {
    pub fn new(name: impl Into<String>, store: Arc<dyn EventStore>, batch: i64) -> Follower {
        let checkpoints = Checkpoints::new(store.db().clone());
        Follower {
            name: name.into(),
            store,
            checkpoints,
            batch,
        }
    }

    /// Hands the next batch (if any) to `handle` and, once it succeeded, saves the checkpoint.
    /// Returns how many events were handled.
    pub async fn poll<F, Fut, E>(&self, handle: F) -> Result<usize, E>
    where
        F: FnOnce(Vec<RecordedEvent>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: From<StoreError>,
    {
        let from = self.checkpoints.load(&self.name).await?;
        let events = self.store.read_all(from, self.batch).await?;
        let Some(last) = events.last().map(|e| e.checkpoint) else {
            return Ok(0);
        };
        let count = events.len();
        handle(events).await?;
        self.checkpoints.save(&self.name, last).await?;
        Ok(count)
    }
}
