//! A worker for the consumer runtime's tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use paystream_engine::consumers::{Effect, EventMessage, HandleError, Inbox, Worker};
use paystream_engine::db::Db;
use uuid::Uuid;

/// What the test worker does with a message on a given attempt (1 = first).
pub type Script = dyn Fn(&EventMessage, u32) -> Result<(), HandleError> + Send + Sync;

/// A worker that records each effect (one row, no uniqueness of its own) together with its inbox
/// row in one transaction, as the real workers do.
pub struct RecordingWorker {
    db: Db,
    script: Box<Script>,
    attempts: Mutex<HashMap<Uuid, u32>>,
    pub delay: Duration,
    pub started: AtomicU64,
    sequence: AtomicU64,
}

pub const TEST_WORKER: &str = "test-worker";

impl RecordingWorker {
    pub async fn new(db: Db, script: Box<Script>) -> RecordingWorker {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS test_effects (seq BIGINT NOT NULL, message_id TEXT NOT NULL, \
             stream_id TEXT NOT NULL, version BIGINT NOT NULL)",
        )
        .execute(&db.pool)
        .await
        .expect("test table");
        RecordingWorker {
            db,
            script,
            attempts: Mutex::default(),
            delay: Duration::ZERO,
            started: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
        }
    }

    pub fn always_ok() -> Box<Script> {
        Box::new(|_, _| Ok(()))
    }

    /// (message id, stream id, version) of every effect, in the order they were recorded.
    pub async fn effects(db: &Db) -> Vec<(String, String, i64)> {
        use sqlx::Row;
        sqlx::query("SELECT message_id, stream_id, version FROM test_effects ORDER BY seq")
            .fetch_all(&db.pool)
            .await
            .expect("effects")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

#[async_trait]
impl Worker for RecordingWorker {
    fn name(&self) -> &'static str {
        TEST_WORKER
    }

    fn event_types(&self) -> Vec<String> {
        vec!["OrderPlaced".into(), "PaymentSucceeded".into()]
    }

    async fn handle(&self, message: &EventMessage) -> Result<Effect, HandleError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        let attempt = {
            let mut attempts = self.attempts.lock().expect("attempts");
            let n = attempts.entry(message.event_id).or_default();
            *n += 1;
            *n
        };
        tokio::time::sleep(self.delay).await;
        (self.script)(message, attempt)?;
        let mut tx = self.db.begin_write().await?;
        if !Inbox::record(&mut tx, TEST_WORKER, message.event_id).await? {
            // A concurrent duplicate recorded it first; roll back.
            return Ok(Effect::Recorded);
        }
        sqlx::query(
            "INSERT INTO test_effects (seq, message_id, stream_id, version) VALUES ($1, $2, $3, $4)",
        )
        .bind(self.sequence.fetch_add(1, Ordering::SeqCst) as i64)
        .bind(message.event_id.to_string())
        .bind(&message.stream_id)
        .bind(message.version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Effect::Recorded)
    }
}
