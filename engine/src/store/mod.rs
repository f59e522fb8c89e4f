//! The event log: one append-only table that is the only truth of the system.
//!
//! Semantics follow EventStoreDB / Message DB: every append states what it expects the stream's
//! current version to be and fails with a typed [`StoreError::Conflict`] otherwise; the caller
//! re-reads and decides again. Versions start at 1. Re-sending an append whose event ids were already
//! stored (a retry after a lost answer) succeeds without writing anything twice.

mod group_commit;
mod sql;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::db::{Backend, Db};

pub use sql::{events_after, read_by_stream_on, read_stream_on, read_streams_on, SqlEventStore};

/// What the appender believes the stream looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's state.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(i64),
}

/// An event not yet stored.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
}

impl NewEvent {
    pub fn new(event_type: impl Into<String>, data: serde_json::Value) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            data,
            metadata: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn with_id(mut self, event_id: Uuid) -> NewEvent {
        self.event_id = event_id;
        self
    }

    pub fn with_metadata(mut self, metadata: serde_json::Value) -> NewEvent {
        self.metadata = metadata;
        self
    }
}

/// Where a follower of the whole log stands. On PostgreSQL events are ordered by the id of the
/// transaction that wrote them, then by position (see `follow` in the PostgreSQL dialect); on SQLite
/// `transaction` is always 0 and positions alone order the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Checkpoint {
    pub transaction: i64,
    pub position: i64,
}

impl Checkpoint {
    pub const START: Checkpoint = Checkpoint {
        transaction: 0,
        position: 0,
    };
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordedEvent {
    pub global_position: i64,
    pub stream_id: String,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
    #[serde(skip)]
    pub checkpoint: Checkpoint,
}

/// The outcome of an append: the stream's version afterwards and the events as stored.
#[derive(Clone, Debug)]
pub struct Appended {
    pub version: i64,
    pub events: Vec<RecordedEvent>,
    /// `true` when every event was already stored by an earlier identical append.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {stream_id} is at version {actual}, the append expected {expected:?}")]
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
        actual: i64,
    },
    #[error("event {event_id} is already stored elsewhere than this append puts it")]
    DuplicateEventId { event_id: Uuid },
    #[error("stored event {position} is unreadable: {reason}")]
    Corrupt { position: i64, reason: String },
    #[error("event store database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// The database is down or overloaded (as opposed to a bug or a bad event).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            ) => true,
            StoreError::Database(sqlx::Error::Database(e)) => {
                // Transient server-side trouble: PostgreSQL shutting down (57P01-57P03), too
                // many connections (53300), deadlock/serialization (40P01, 40001); SQLite busy
                // or locked (5, 6 and their extended codes).
                // SQLite's codes are numbers, PostgreSQL's five-character SQLSTATEs — some of
                // which are all digits (22021, bad UTF-8) and must not be read as SQLite's.
                let code = e.code().unwrap_or_default();
                if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
                } else {
                    matches!(
                        code.as_ref(),
                        "57P01" | "57P02" | "57P03" | "53300" | "40P01" | "40001"
                    )
                }
            }
            _ => false,
        }
    }
}

/// A read model kept in the same transaction as the append, so that what a client just did is
/// what it reads back. Asynchronous consumers follow the log with [`EventStore::read_all`] instead.
#[async_trait]
pub trait InlineProjection: Send + Sync {
    /// `appended` holds the events of one transaction, possibly of several streams (appends are
    /// committed in groups on PostgreSQL).
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        appended: &[RecordedEvent],
    ) -> Result<(), sqlx::Error>;

    /// A rebuild (`paystream rebuild-projections`): `streams` holds whole streams, each in
    /// version order from version 1, to be projected onto read models that hold nothing of them
    /// yet. That is what an append of those streams in one transaction would hand
    /// [`InlineProjection::apply`], which is therefore the default; a projection that re-reads
    /// its streams on every append may skip the re-read here, since `streams` is all there is.
    async fn replay(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        streams: &[RecordedEvent],
    ) -> Result<(), sqlx::Error> {
        self.apply(conn, backend, streams).await
    }
}

#[async_trait]
pub trait EventStore: Send + Sync {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError>;

    /// The whole stream, oldest first; empty when it does not exist.
    async fn read_stream(&self, stream_id: &str) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events after `after`, in log order, never returning an event that a
    /// transaction still in flight could later place before one already returned.
    async fn read_all(
        &self,
        after: Checkpoint,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    fn db(&self) -> &Db;
}
