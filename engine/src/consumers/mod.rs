//! Consumers of the log: everything that reacts to events after they are recorded (the
//! subscribe-message and card-verification workers, and whoever else binds to the fan-out).
//!
//! A [`Worker`] sees each event as the [`EventMessage`] that the contract publishes to RabbitMQ. It
//! is fed either by the RabbitMQ consumer runtime (`adapters/amqp`) or, without a broker, straight
//! from the log by [`from_log::run`]. Delivery is at least once in both cases; a worker makes its
//! effect happen once by recording the message id in its [`inbox`] in the same transaction as the
//! effect's record.

pub mod from_log;
pub mod inbox;
pub mod lease;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::RecordedEvent;

pub use inbox::{Inbox, Parked};

/// One event as published (contract.md, "RabbitMQ"): routing key = `type`, message id = `event_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventMessage {
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
}

impl From<&RecordedEvent> for EventMessage {
    fn from(e: &RecordedEvent) -> EventMessage {
        EventMessage {
            event_id: e.event_id,
            stream_id: e.stream_id.clone(),
            version: e.version,
            event_type: e.event_type.clone(),
            recorded_at: e.recorded_at,
            data: e.data.clone(),
            metadata: e.metadata.clone(),
        }
    }
}

impl EventMessage {
    /// The published body.
    pub fn to_body(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("event messages always serialize")
    }

    pub fn from_body(body: &[u8]) -> Result<EventMessage, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// Why a message was not handled, by what the runtime must do with it.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth trying again later (WeChat or the database is down, busy or rate limiting).
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed (unreadable message, an order that does not exist): park it with the
    /// reason for a human, and move on.
    #[error("poison: {0}")]
    Poison(String),
}

impl From<crate::Error> for HandleError {
    fn from(e: crate::Error) -> HandleError {
        // Any database trouble (timeouts, lost connections, lock waits) passes; parking the
        // message would drop its effect for good.
        if matches!(
            e,
            crate::Error::Store(crate::store::StoreError::Database(_))
        ) {
            return HandleError::Transient(e.to_string());
        }
        match e.kind() {
            crate::Kind::Unavailable | crate::Kind::RateLimited | crate::Kind::Conflict => {
                HandleError::Transient(e.to_string())
            }
            _ => HandleError::Poison(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for HandleError {
    fn from(e: crate::store::StoreError) -> HandleError {
        // The database going away is the usual reason; a corrupt event would fail again, but
        // parking it would hide a bug in the log itself: keep trying and keep shouting.
        HandleError::Transient(e.to_string())
    }
}

impl From<sqlx::Error> for HandleError {
    fn from(e: sqlx::Error) -> HandleError {
        HandleError::Transient(format!("database: {e}"))
    }
}

/// A consumer of the log's events.
#[async_trait]
pub trait Worker: Send + Sync {
    /// Stable name: the queue is `paystream.<name>`, the inbox and checkpoint are keyed by it.
    fn name(&self) -> &'static str;

    /// The event types (routing keys) this worker needs; the rest never reach it.
    fn event_types(&self) -> Vec<String>;

    /// Handles one message. Called at least once per event, possibly concurrently for different
    /// orders but never for two events of one order at once. Must be idempotent: record the
    /// message id with [`Inbox::record`] in the transaction that records the effect, and say so
    /// with [`Effect::Recorded`].
    async fn handle(&self, message: &EventMessage) -> Result<Effect, HandleError>;
}

/// What a worker's `handle` left in its inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The message id was recorded with the effect (or by an earlier attempt): the runtime has
    /// nothing to add. Saves a transaction per message on the hot path.
    Recorded,
    /// Nothing recorded the message id (nothing to do, or an effect kept elsewhere, such as an
    /// event on the order): the runtime marks it handled so a repeat skips the worker.
    NotRecorded,
}

/// What [`handle_once`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// The worker handled it now.
    Done,
    /// The inbox says it was handled before: the worker was not asked.
    Duplicate,
}

/// One attempt at a message, as every runtime makes it: skip it if the worker's inbox has it,
/// otherwise hand it to the worker and mark it handled unless the worker recorded it itself.
pub async fn handle_once(
    worker: &dyn Worker,
    inbox: &Inbox,
    message: &EventMessage,
) -> Result<Handled, HandleError> {
    if inbox.seen(worker.name(), message.event_id).await? {
        return Ok(Handled::Duplicate);
    }
    if worker.handle(message).await? == Effect::NotRecorded {
        inbox.mark(worker.name(), message.event_id).await?;
    }
    Ok(Handled::Done)
}

/// The broker the log is fanned out to, as far as readiness checks need it.
#[async_trait]
pub trait Broker: Send + Sync {
    /// `Err` with a reason when the broker does not accept a connection now.
    async fn check(&self) -> Result<(), String>;
}
