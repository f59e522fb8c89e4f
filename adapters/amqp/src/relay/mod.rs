//! The outbox relay: follows the log from its durable checkpoint `relay:amqp` and publishes every
//! event to `paystream.events` with publisher confirms.
//!
//! - At least once, never a skip: the checkpoint moves past a batch only after the broker acked
//!   every publish of it (and of every batch before it). Saves are coalesced while a backlog
//!   drains (every `checkpoint_every`, and whenever the relay catches up). A nack, a timeout or a
//!   lost connection ends the session; the next one starts again from the saved checkpoint (the
//!   broker may see an event twice; consumers dedupe).
//! - Order: one channel, batches in log order, so each order's events go out in version order.
//! - Throughput: a few batches are in flight at once; batch k+1 is read and published while the
//!   broker is still confirming batch k. Checkpoints are still saved strictly in order.
//! - One active relay across processes: the lease `relay:amqp` (a row in `leases`). The holder
//!   renews it every third of its lifetime and stops publishing when it cannot; another process
//!   takes it once it has expired.
//! - The log is the outbox: nothing here ever blocks an append. With the broker down the relay
//!   retries with back-off and the backlog simply waits in the log.

mod lease_clock;
mod publish;
mod stats;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::ConfirmSelectOptions;
use lapin::Connection;
use paystream_engine::consumers::lease::Lease;
use paystream_engine::follow::Checkpoints;
use paystream_engine::store::{Checkpoint, EventStore, StoreError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::topology::{self, QueueSpec};
use crate::{connect, sleep_or_stop, AmqpError, Backoff};
use lease_clock::LeaseClock;
pub use publish::properties;
use publish::{publish_batch, Batch, Prefetch};
pub use stats::RelayStats;

/// The relay's lease and checkpoint name.
pub const RELAY_NAME: &str = "relay:amqp";

#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// This process's lease holder id; unique per process (the default is random).
    pub holder: String,
    /// How long the lease lasts unrenewed: how soon another process takes over from a dead one.
    pub lease_ttl: Duration,
    /// Events read from the log and published per batch.
    pub batch_size: i64,
    /// Batches published but not yet confirmed at once.
    pub batches_in_flight: usize,
    /// How often an idle relay looks for new events.
    pub idle_poll: Duration,
    /// How often the checkpoint is saved while a backlog is being published (always when caught
    /// up): the most a crash makes the relay publish again.
    pub checkpoint_every: Duration,
    /// A batch not sent or not confirmed within this is treated as lost (reconnect, republish).
    pub confirm_timeout: Duration,
    /// Back-off between attempts to reach the broker.
    pub reconnect: Backoff,
    /// Worker queues to declare, so events published before a worker first runs are kept for it.
    pub queues: Vec<QueueSpec>,
    /// Counters for /readyz and /metrics; clone the `Arc` before handing the options over.
    pub stats: Arc<RelayStats>,
}

impl Default for RelayOptions {
    fn default() -> RelayOptions {
        RelayOptions {
            holder: format!("pid{}-{}", std::process::id(), Uuid::new_v4().simple()),
            lease_ttl: Duration::from_secs(10),
            batch_size: 1000,
            batches_in_flight: 4,
            idle_poll: Duration::from_millis(10),
            checkpoint_every: Duration::from_millis(100),
            confirm_timeout: Duration::from_secs(30),
            reconnect: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            queues: Vec::new(),
            stats: Arc::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("event log: {0}")]
    Store(#[from] StoreError),
    #[error("the broker refused (nacked) a publish")]
    Nacked,
    #[error("the broker did not confirm a batch within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("the connection to the broker was lost")]
    Disconnected,
    #[error("reading ahead failed: {0}")]
    Reader(String),
}

impl From<lapin::Error> for RelayError {
    fn from(e: lapin::Error) -> RelayError {
        RelayError::Amqp(AmqpError::Amqp(e))
    }
}

/// How a session with the broker ended without an error.
enum SessionEnd {
    Stopped,
    LostLease,
}

/// A running relay. `stop` finishes the batches in flight and releases the lease; `kill` does
/// neither.
pub type RelayHandle = crate::Handle<RelayStats>;

/// Runs the relay on a task of its own.
pub fn spawn_relay(
    store: Arc<dyn EventStore>,
    amqp_url: String,
    options: RelayOptions,
) -> RelayHandle {
    let stats = options.stats.clone();
    crate::Handle::spawn(stats, |stopped| {
        run_relay(store, amqp_url, options, stopped)
    })
}

/// Publishes the log until `stop` turns true (or its sender is dropped).
pub async fn run_relay(
    store: Arc<dyn EventStore>,
    amqp_url: String,
    options: RelayOptions,
    mut stop: watch::Receiver<bool>,
) {
    let db = store.db().clone();
    let relay = Relay {
        lease: LeaseClock::new(Lease::new(
            db.clone(),
            RELAY_NAME,
            options.holder.clone(),
            options.lease_ttl,
        )),
        checkpoints: Checkpoints::new(db),
        store,
        url: amqp_url,
        options,
    };
    relay.run(&mut stop).await;
}

struct Relay {
    store: Arc<dyn EventStore>,
    checkpoints: Checkpoints,
    lease: LeaseClock,
    url: String,
    options: RelayOptions,
}

impl Relay {
    async fn run(mut self, stop: &mut watch::Receiver<bool>) {
        let holder = self.options.holder.clone();
        let stats = self.options.stats.clone();
        let mut delays = self.options.reconnect.delays();
        let mut failures_in_a_row = 0u32;
        tracing::info!(holder = %holder, "outbox relay started");
        while !*stop.borrow() {
            match self.lease.acquire().await {
                Ok(true) => {}
                Ok(false) => {
                    stats.leader.store(false, Ordering::Relaxed);
                    if sleep_or_stop(self.lease.renew_every(), stop).await {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(holder = %holder, error = %e, "cannot take the relay lease");
                    if sleep_or_stop(self.lease.renew_every(), stop).await {
                        break;
                    }
                    continue;
                }
            }
            if !stats.leader.swap(true, Ordering::Relaxed) {
                tracing::info!(holder = %holder, "relay lease taken: publishing");
            }
            let mut progressed = false;
            let began = Instant::now();
            let ended = self.session(stop, &mut progressed).await;
            stats.connected.store(false, Ordering::Relaxed);
            if progressed || began.elapsed() > self.options.reconnect.max {
                // The broker was healthy for a while: start the next back-off from its minimum.
                delays = self.options.reconnect.delays();
                failures_in_a_row = 0;
            }
            match ended {
                Ok(SessionEnd::Stopped) => break,
                Ok(SessionEnd::LostLease) => {
                    stats.leader.store(false, Ordering::Relaxed);
                    tracing::warn!(holder = %holder, "relay lease lost: publishing stopped");
                }
                Err(e) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    failures_in_a_row += 1;
                    let pause = delays.next().unwrap_or(self.options.reconnect.max);
                    // One line per attempt, and attempts are spaced by the growing back-off.
                    tracing::warn!(
                        holder = %holder, error = %e, attempt = failures_in_a_row,
                        retry_in_ms = pause.as_millis() as u64,
                        "relay cannot publish; the backlog waits in the log"
                    );
                    if sleep_or_stop(pause, stop).await {
                        break;
                    }
                }
            }
        }
        if stats.leader.swap(false, Ordering::Relaxed) {
            if let Err(e) = self.lease.lease.release().await {
                tracing::warn!(holder = %holder, error = %e, "cannot release the relay lease");
            }
        }
        tracing::info!(holder = %holder, "outbox relay stopped");
    }

    /// One connection: publish from the saved checkpoint until stopped, the lease is lost, or
    /// something fails. `progressed` turns true once a batch was confirmed.
    async fn session(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        progressed: &mut bool,
    ) -> Result<SessionEnd, RelayError> {
        let connection = connect(&self.url, "paystream-relay").await?;
        let result = self.publish_on(&connection, stop, progressed).await;
        // A clean close tells the broker at once; a broken connection is simply dropped.
        let _ = tokio::time::timeout(Duration::from_secs(2), connection.close(200, "bye")).await;
        result
    }

    async fn publish_on(
        &mut self,
        connection: &Connection,
        stop: &mut watch::Receiver<bool>,
        progressed: &mut bool,
    ) -> Result<SessionEnd, RelayError> {
        let channel = connection.create_channel().await?;
        topology::declare_exchanges(&channel).await?;
        for spec in &self.options.queues {
            topology::declare_worker(&channel, spec).await?;
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.options.stats.connected.store(true, Ordering::Relaxed);

        // Another holder may have moved the checkpoint while this process was not publishing.
        let mut cursor = self.checkpoints.load(RELAY_NAME).await?;
        let mut in_flight: VecDeque<Batch> = VecDeque::new();
        let mut prefetch = Prefetch(None);
        // Confirmed but not saved yet: saving is a database commit, so it is coalesced; a crash
        // repeats at most `checkpoint_every` worth of publishes.
        let mut unsaved: Option<Checkpoint> = None;
        let mut saved_at = Instant::now();
        let window = self.options.batches_in_flight.max(1);
        loop {
            if *stop.borrow() {
                // Settle what is in flight so that a clean stop repeats nothing.
                while let Some(batch) = in_flight.pop_front() {
                    unsaved = Some(self.confirm(batch).await?);
                }
                if let Some(at) = unsaved {
                    self.save(at).await?;
                }
                crate::close_channel(&channel).await;
                return Ok(SessionEnd::Stopped);
            }
            if !self.lease.keep().await {
                crate::close_channel(&channel).await;
                return Ok(SessionEnd::LostLease);
            }
            // An idle relay touches neither: notice a dead connection without waiting for an
            // event to publish (the counters feed /readyz).
            if !connection.status().connected() || !channel.status().connected() {
                return Err(RelayError::Disconnected);
            }
            let mut caught_up = false;
            if in_flight.len() < window {
                let events = match prefetch.take() {
                    Some(read) => read
                        .await
                        .map_err(|e| RelayError::Reader(e.to_string()))??,
                    None => self.store.read_all(cursor, self.options.batch_size).await?,
                };
                caught_up = (events.len() as i64) < self.options.batch_size;
                if let Some(last) = events.last() {
                    cursor = last.checkpoint;
                    if !caught_up {
                        // A backlog: read the next batch while this one is being published.
                        let (store, size) = (self.store.clone(), self.options.batch_size);
                        prefetch.0 =
                            Some(tokio::spawn(
                                async move { store.read_all(cursor, size).await },
                            ));
                    }
                    // A broker under a resource alarm stops reading: writes would wait forever.
                    let timeout = self.options.confirm_timeout;
                    let batch = tokio::time::timeout(timeout, publish_batch(&channel, &events))
                        .await
                        .map_err(|_| RelayError::ConfirmTimeout(timeout))??;
                    in_flight.push_back(batch);
                }
            }
            if in_flight.len() >= window || (caught_up && !in_flight.is_empty()) {
                if let Some(batch) = in_flight.pop_front() {
                    unsaved = Some(self.confirm(batch).await?);
                    *progressed = true;
                }
            } else if caught_up && sleep_or_stop(self.options.idle_poll, stop).await {
                continue;
            }
            let due = in_flight.is_empty() || saved_at.elapsed() >= self.options.checkpoint_every;
            if let Some(at) = unsaved.filter(|_| due) {
                self.save(at).await?;
                unsaved = None;
                saved_at = Instant::now();
            }
        }
    }

    /// Waits for every confirm of a batch; its last checkpoint may then be saved.
    async fn confirm(&self, batch: Batch) -> Result<Checkpoint, RelayError> {
        let timeout = self.options.confirm_timeout;
        tokio::time::timeout(timeout, async {
            for confirm in batch.confirms {
                if !confirm.await?.is_ack() {
                    return Err(RelayError::Nacked);
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| RelayError::ConfirmTimeout(timeout))??;
        self.options
            .stats
            .published
            .fetch_add(batch.events as u64, Ordering::Relaxed);
        Ok(batch.last)
    }

    async fn save(&self, at: Checkpoint) -> Result<(), RelayError> {
        self.checkpoints.save(RELAY_NAME, at).await?;
        self.options.stats.saved(at);
        tracing::debug!(position = at.position, "relay checkpoint saved");
        Ok(())
    }
}
