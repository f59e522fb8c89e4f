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
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::Connection;
use paystream_engine::consumers::{Inbox, Worker};
use paystream_engine::db::Db;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::lanes::lane_of_body;
use crate::topology::{self, QueueSpec};
use crate::{connect, sleep_or_stop, stopped, AmqpError, Backoff};
use delivery::{run_lane, Shared};

mod delivery;

/// The header that says why a message was parked.
pub const REASON_HEADER: &str = "x-paystream-reason";

#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Unacked deliveries held at once.
    pub prefetch: u16,
    /// Orders handled concurrently.
    pub lanes: usize,
    /// Attempts in place for a transiently failing message before it is requeued. Unbounded by
    /// default: on quorum queues a requeue counts toward the delivery limit, so requeueing
    /// during a WeChat or database outage of a minute would park every message of that minute
    /// (a card never consumed, a customer never told). The limit is for crash loops and poison.
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
            prefetch: 256,
            lanes: 32,
            attempts: u32::MAX,
            retry: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
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
pub type WorkerHandle = crate::Handle<WorkerStats>;

pub fn spawn_worker(
    worker: Arc<dyn Worker>,
    db: Db,
    amqp_url: String,
    options: WorkerOptions,
) -> WorkerHandle {
    let stats = options.stats.clone();
    crate::Handle::spawn(stats, |stopped| {
        run_worker(worker, db, amqp_url, options, stopped)
    })
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
        if ended.is_ok() {
            crate::close_channel(&shared.park_channel).await;
            crate::close_channel(&channel).await;
        }
        ended
    }
}
