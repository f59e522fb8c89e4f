//! Publishing batches: pipelined on one channel, in log order, confirms awaited later.

use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::PublisherConfirm;
use lapin::{BasicProperties, Channel};
use paystream_engine::consumers::EventMessage;
use paystream_engine::store::{Checkpoint, RecordedEvent, StoreError};
use tokio::task::JoinHandle;

use super::RelayError;
use crate::topology::EVENTS_EXCHANGE;

/// The next batch being read ahead; dropped with the session.
pub(super) struct Prefetch(pub(super) Option<JoinHandle<Result<Vec<RecordedEvent>, StoreError>>>);

impl Prefetch {
    pub(super) fn take(&mut self) -> Option<JoinHandle<Result<Vec<RecordedEvent>, StoreError>>> {
        self.0.take()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let Some(read) = self.0.take() {
            read.abort();
        }
    }
}

/// A batch published and waiting for its confirms.
pub(super) struct Batch {
    pub(super) last: Checkpoint,
    pub(super) events: usize,
    pub(super) confirms: Vec<PublisherConfirm>,
}

/// Publishes the batch in log order on one channel without waiting for confirms (pipelined).
pub(super) async fn publish_batch(
    channel: &Channel,
    events: &[RecordedEvent],
) -> Result<Batch, RelayError> {
    let mut confirms = Vec::with_capacity(events.len());
    for event in events {
        let body = EventMessage::from(event).to_body();
        confirms.push(
            channel
                .basic_publish(
                    EVENTS_EXCHANGE,
                    &event.event_type,
                    // Not mandatory: an event nobody is bound to yet is still published.
                    BasicPublishOptions::default(),
                    &body,
                    properties(event),
                )
                .await?,
        );
    }
    Ok(Batch {
        last: events.last().map(|e| e.checkpoint).unwrap_or_default(),
        events: events.len(),
        confirms,
    })
}

/// The contract's message properties: message id = event id, JSON, persistent.
pub fn properties(event: &RecordedEvent) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(event.event_id.to_string().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_type(event.event_type.as_str().into())
        .with_timestamp(event.recorded_at.timestamp().max(0) as u64)
}
