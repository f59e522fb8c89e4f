//! The consumer runtime: runs an engine [`Worker`] off its queue `paystream.<name>`.
//!
//! - Prefetch bounds what is held at once; deliveries are spread over lanes by order (see
//!   [`crate::lanes`]): one order's events one at a time in delivery order, orders concurrently.
//! - Exactly once in effect: a message whose id is in the worker's inbox is acked unhandled; a
//!   handled one is marked (the worker itself records it with its effect, in one transaction).
//! - Transient failure: retried in place with back-off a few times, then requeued; the queue's
//!   delivery limit dead-letters a message that keeps failing (or keeps crashing workers).
//! - Poison (or an undecodable body): published to `paystream.dead` with the reason in the header
//!   `x-paystream-reason` (with a confirm), then acked; it waits in `paystream.<name>.parked`.
//! - Stop: the consumer is cancelled, messages being handled are finished and acked, the ones not
//!   started are handed back to the broker, then the connection closes.
//! - A dropped connection: reconnect with back-off; unacked messages are redelivered by the broker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection};
use paystream_engine::consumers::{EventMessage, HandleError, Inbox, Worker};
use paystream_engine::db::Db;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use crate::lanes::{lane_of_body, Holds};
use crate::topology::{self, QueueSpec, DEAD_EXCHANGE};
use crate::{connect, sleep_or_stop, stopped, AmqpError, Backoff};

/// A parking publish not confirmed by then is given up (the message is requeued instead).
const PARK_TIMEOUT: Duration = Duration::from_secs(30);

/// The header that says why a message was parked.
pub const REASON_HEADER: &str = "x-paystream-reason";

#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Unacked deliveries held at once.
    pub prefetch: u16,
    /// Orders handled concurrently.
    pub lanes: usize,
    /// Attempts in place for a transiently failing message before it is requeued.
    pub attempts: u32,
    /// Back-off between those attempts.
    pub retry: Backoff,
    /// Back-off between attempts to reach the broker.
    pub reconnect: Backoff,
    /// Deliveries of a message before the queue dead-letters it (part of the queue's declaration:
    /// the relay must declare the same).
    pub delivery_limit: u32,
    /// How long a stop waits for the messages being handled.
    pub shutdown_timeout: Duration,
    /// Counters for /readyz and /metrics; clone the `Arc` before handing the options over.
    pub stats: Arc<WorkerStats>,
}

impl Default for WorkerOptions {
    fn default() -> WorkerOptions {
        WorkerOptions {
            prefetch: 32,
            lanes: 16,
            attempts: 4,
            retry: Backoff::new(Duration::from_millis(200), Duration::from_secs(3)),
            reconnect: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            delivery_limit: topology::DEFAULT_DELIVERY_LIMIT,
            shutdown_timeout: Duration::from_secs(30),
            stats: Arc::default(),
        }
    }
}

#[derive(Debug, Default)]
pub struct WorkerStats {
    handled: AtomicU64,
    duplicates: AtomicU64,
    parked: AtomicU64,
    requeued: AtomicU64,
    connected: AtomicBool,
}

impl WorkerStats {
    /// Messages the worker handled successfully.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }
    /// Deliveries acked unhandled because the inbox had them.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }
    /// Messages published to the parking queue.
    pub fn parked(&self) -> u64 {
        self.parked.load(Ordering::Relaxed)
    }
    /// Deliveries handed back to the broker (failed, or not started at a stop).
    pub fn requeued(&self) -> u64 {
        self.requeued.load(Ordering::Relaxed)
    }
    /// Consuming from the broker now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// A running worker.
pub struct WorkerHandle {
    pub stats: Arc<WorkerStats>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops consuming, finishes the messages being handled and waits for the worker to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Ends the worker at once, as a crash would.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

pub fn spawn_worker(
    worker: Arc<dyn Worker>,
    db: Db,
    amqp_url: String,
    options: WorkerOptions,
) -> WorkerHandle {
    let (stop, stopped) = watch::channel(false);
    let stats = options.stats.clone();
    let task = tokio::spawn(run_worker(worker, db, amqp_url, options, stopped));
    WorkerHandle { stats, stop, task }
}

/// Consumes `paystream.<worker>` until `stop` turns true (or its sender is dropped), reconnecting
/// with back-off whenever the broker goes away.
pub async fn run_worker(
    worker: Arc<dyn Worker>,
    db: Db,
    amqp_url: String,
    options: WorkerOptions,
    mut stop: watch::Receiver<bool>,
) {
    let name = worker.name();
    let mut delays = options.reconnect.delays();
    let mut failures_in_a_row = 0u32;
    tracing::info!(worker = name, "worker consuming from RabbitMQ");
    while !*stop.borrow() {
        let session = Session {
            worker: worker.clone(),
            inbox: Inbox::new(db.clone()),
            options: options.clone(),
            consumer_tag: format!("{name}-{}", Uuid::new_v4().simple()),
        };
        let mut consumed = false;
        let began = std::time::Instant::now();
        let ended = session.run(&amqp_url, &mut stop, &mut consumed).await;
        options.stats.connected.store(false, Ordering::Relaxed);
        // Consuming for a while means the broker was healthy: back off from the minimum again.
        // A connection that drops at once keeps growing the back-off (no flood of attempts).
        if consumed && began.elapsed() > options.reconnect.max {
            delays = options.reconnect.delays();
            failures_in_a_row = 0;
        }
        match ended {
            Ok(()) => break,
            Err(e) => {
                failures_in_a_row += 1;
                let pause = delays.next().unwrap_or(options.reconnect.max);
                tracing::warn!(
                    worker = name, error = %e, attempt = failures_in_a_row,
                    retry_in_ms = pause.as_millis() as u64, "worker lost the broker; reconnecting"
                );
                if sleep_or_stop(pause, &mut stop).await {
                    break;
                }
            }
        }
    }
    tracing::info!(worker = name, "worker stopped");
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("the broker cancelled the consumer (queue deleted?)")]
    Cancelled,
}

impl From<lapin::Error> for SessionError {
    fn from(e: lapin::Error) -> SessionError {
        SessionError::Amqp(AmqpError::Amqp(e))
    }
}

struct Session {
    worker: Arc<dyn Worker>,
    inbox: Inbox,
    options: WorkerOptions,
    consumer_tag: String,
}

impl Session {
    /// One connection. `Ok` only when stopped.
    async fn run(
        self,
        url: &str,
        stop: &mut watch::Receiver<bool>,
        consumed: &mut bool,
    ) -> Result<(), SessionError> {
        let name = self.worker.name();
        let connection = connect(url, &format!("paystream-worker-{name}")).await?;
        let result = self.consume(&connection, stop, consumed).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), connection.close(200, "bye")).await;
        result
    }

    async fn consume(
        self,
        connection: &Connection,
        stop: &mut watch::Receiver<bool>,
        consumed: &mut bool,
    ) -> Result<(), SessionError> {
        let name = self.worker.name();
        let spec =
            QueueSpec::of(self.worker.as_ref()).with_delivery_limit(self.options.delivery_limit);
        let channel = connection.create_channel().await?;
        topology::declare_worker(&channel, &spec).await?;
        channel
            .basic_qos(self.options.prefetch, BasicQosOptions::default())
            .await?;
        // Parking publishes on their own channel, in confirm mode.
        let park_channel = connection.create_channel().await?;
        park_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                &topology::queue_name(name),
                &self.consumer_tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.options.stats.connected.store(true, Ordering::Relaxed);
        *consumed = true;

        let shared = Arc::new(Shared {
            worker: self.worker.clone(),
            inbox: self.inbox.clone(),
            park_channel,
            options: self.options.clone(),
            draining: AtomicBool::new(false),
            last_tag: AtomicU64::new(0),
        });
        let lanes = self.options.lanes.max(1);
        let (senders, tasks): (Vec<_>, Vec<_>) = (0..lanes)
            .map(|_| {
                let (send, receive) = mpsc::channel(usize::from(self.options.prefetch.max(1)));
                (send, tokio::spawn(run_lane(shared.clone(), receive)))
            })
            .unzip();

        let ended = loop {
            tokio::select! {
                () = stopped(stop) => break Ok(()),
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => {
                        shared.last_tag.store(delivery.delivery_tag, Ordering::Relaxed);
                        let lane = lane_of_body(&delivery.data, lanes);
                        // Lanes hold up to the prefetch each: this never waits for long.
                        if senders[lane].send(delivery).await.is_err() {
                            break Err(SessionError::Cancelled);
                        }
                    }
                    Some(Err(e)) => break Err(e.into()),
                    None => break Err(SessionError::Cancelled),
                },
            }
        };
        if ended.is_ok() {
            // Stop: no new deliveries; what was delivered and not started goes back.
            let _ = channel
                .basic_cancel(&self.consumer_tag, BasicCancelOptions::default())
                .await;
        }
        shared.draining.store(true, Ordering::Relaxed);
        drop(senders);
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let finished = futures::future::join_all(tasks);
        if tokio::time::timeout(self.options.shutdown_timeout, finished)
            .await
            .is_err()
        {
            // Their effects are either committed with their inbox row or not at all; the broker
            // redelivers them once the connection closes.
            aborts.iter().for_each(|a| a.abort());
            tracing::warn!(
                worker = name,
                "messages still being handled at shutdown were abandoned"
            );
        }
        ended
    }
}

/// What every lane of a session shares.
struct Shared {
    worker: Arc<dyn Worker>,
    inbox: Inbox,
    park_channel: Channel,
    options: WorkerOptions,
    /// Set when the session ends: deliveries not started yet go back to the broker.
    draining: AtomicBool,
    /// The highest delivery tag received on the consuming channel.
    last_tag: AtomicU64,
}

async fn run_lane(shared: Arc<Shared>, mut deliveries: mpsc::Receiver<Delivery>) {
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
    let name = shared.worker.name();
    let mut delays = shared.options.retry.delays();
    let attempts = shared.options.attempts.max(1);
    let mut attempt = 1;
    loop {
        let outcome = match shared.inbox.seen(name, message.event_id).await {
            Ok(true) => return Processed::Duplicate,
            Ok(false) => match shared.worker.handle(message).await {
                Ok(()) => shared
                    .inbox
                    .mark(name, message.event_id)
                    .await
                    .map_err(HandleError::from),
                Err(e) => Err(e),
            },
            Err(e) => Err(HandleError::from(e)),
        };
        let reason = match outcome {
            Ok(()) => return Processed::Done,
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
