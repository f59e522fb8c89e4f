//! One lane's work: each delivery decoded, deduplicated through the inbox, handled with retries
//! in place, then acked, requeued or parked.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::Channel;
use paystream_engine::consumers::{handle_once, EventMessage, HandleError, Handled, Inbox, Worker};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{WorkerOptions, REASON_HEADER};
use crate::lanes::Holds;
use crate::topology::{self, DEAD_EXCHANGE};
use crate::AmqpError;

/// A parking publish not confirmed by then is given up (the message is requeued instead).
const PARK_TIMEOUT: Duration = Duration::from_secs(30);

/// What every lane of a session shares.
pub(super) struct Shared {
    pub(super) worker: Arc<dyn Worker>,
    pub(super) inbox: Inbox,
    pub(super) park_channel: Channel,
    pub(super) options: WorkerOptions,
    /// Set when the session ends: deliveries not started yet go back to the broker.
    pub(super) draining: AtomicBool,
    /// The highest delivery tag received on the consuming channel.
    pub(super) last_tag: AtomicU64,
}

pub(super) async fn run_lane(shared: Arc<Shared>, mut deliveries: mpsc::Receiver<Delivery>) {
    let mut holds = Holds::default();
    while let Some(delivery) = deliveries.recv().await {
        if shared.draining.load(Ordering::Relaxed) {
            requeue(&shared, &delivery).await;
            continue;
        }
        handle_delivery(&shared, &mut holds, delivery).await;
    }
}

async fn handle_delivery(shared: &Shared, holds: &mut Holds, delivery: Delivery) {
    let name = shared.worker.name();
    let message = match EventMessage::from_body(&delivery.data) {
        Ok(message) => message,
        Err(e) => {
            let reason = format!("undecodable message body: {e}");
            tracing::error!(worker = name, %reason, "message parked");
            park_or_requeue(shared, &delivery, &reason).await;
            return;
        }
    };
    if holds.must_requeue(&message, delivery.delivery_tag) {
        requeue(shared, &delivery).await;
        return;
    }
    let span = tracing::info_span!(
        "message", worker = name, message_id = %message.event_id,
        stream_id = %message.stream_id, event_type = %message.event_type
    );
    async {
        match process(shared, &message).await {
            Processed::Done => {
                shared.options.stats.handled.fetch_add(1, Ordering::Relaxed);
                ack(&delivery).await;
            }
            Processed::Duplicate => {
                shared
                    .options
                    .stats
                    .duplicates
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!("already handled; acked");
                ack(&delivery).await;
            }
            Processed::Poison(reason) => {
                tracing::error!(%reason, "message parked");
                park_or_requeue(shared, &delivery, &reason).await;
            }
            Processed::Transient(reason) => {
                tracing::warn!(%reason, "message requeued after failing in place");
                holds.hold(&message.stream_id, shared.last_tag.load(Ordering::Relaxed));
                requeue(shared, &delivery).await;
            }
        }
    }
    .instrument(span)
    .await
}

enum Processed {
    Done,
    Duplicate,
    Poison(String),
    Transient(String),
}

/// Handles a message with a few attempts in place.
async fn process(shared: &Shared, message: &EventMessage) -> Processed {
    let mut delays = shared.options.retry.delays();
    let attempts = shared.options.attempts.max(1);
    let mut attempt = 1;
    loop {
        let outcome = handle_once(shared.worker.as_ref(), &shared.inbox, message).await;
        let reason = match outcome {
            Ok(Handled::Done) => return Processed::Done,
            Ok(Handled::Duplicate) => return Processed::Duplicate,
            Err(HandleError::Poison(reason)) => return Processed::Poison(reason),
            Err(HandleError::Transient(reason)) => reason,
        };
        // At a stop, hand the message back rather than wait out the back-off.
        if attempt >= attempts || shared.draining.load(Ordering::Relaxed) {
            return Processed::Transient(reason);
        }
        let pause = delays.next().unwrap_or(shared.options.retry.max);
        tracing::warn!(
            %reason, attempt, retry_in_ms = pause.as_millis() as u64, "message not handled yet"
        );
        tokio::time::sleep(pause).await;
        attempt += 1;
    }
}

async fn ack(delivery: &Delivery) {
    if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
        // The channel is gone: the broker redelivers and the inbox skips it.
        tracing::warn!(error = %e, "cannot ack a message");
    }
}

async fn requeue(shared: &Shared, delivery: &Delivery) {
    shared
        .options
        .stats
        .requeued
        .fetch_add(1, Ordering::Relaxed);
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(e) = delivery.acker.nack(options).await {
        tracing::warn!(error = %e, "cannot requeue a message");
    }
}

async fn park_or_requeue(shared: &Shared, delivery: &Delivery, reason: &str) {
    match park(shared, delivery, reason).await {
        Ok(()) => {
            shared.options.stats.parked.fetch_add(1, Ordering::Relaxed);
            ack(delivery).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot park a message; requeued");
            requeue(shared, delivery).await;
        }
    }
}

/// Publishes the original body and properties to the dead-letter exchange with the reason, and
/// waits for the broker's confirm. Mandatory: a parking queue that is missing is an error, not a
/// silent loss.
async fn park(shared: &Shared, delivery: &Delivery, reason: &str) -> Result<(), AmqpError> {
    let name = shared.worker.name();
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(
        ShortString::from(REASON_HEADER),
        AMQPValue::LongString(LongString::from(reason)),
    );
    let properties = delivery.properties.clone().with_headers(headers);
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let publish = async {
        shared
            .park_channel
            .basic_publish(
                DEAD_EXCHANGE,
                &topology::queue_name(name),
                options,
                &delivery.data,
                properties,
            )
            .await?
            .await
    };
    let confirm = tokio::time::timeout(PARK_TIMEOUT, publish)
        .await
        .map_err(|_| AmqpError::Timeout(PARK_TIMEOUT))??;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(AmqpError::Refused("no parking queue is bound")),
        Confirmation::Nack(_) => Err(AmqpError::Refused("nacked")),
        Confirmation::NotRequested => Err(AmqpError::Refused("not confirmed")),
    }
}
