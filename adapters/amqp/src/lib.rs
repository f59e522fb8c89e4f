//! RabbitMQ fan-out of the event log (contract.md, "RabbitMQ").
//!
//! - [`topology`]: the exchanges and the workers' queues, declared idempotently by everyone.
//! - [`relay`]: follows the log from its own checkpoint and publishes every event with publisher
//!   confirms; one active relay across processes (a lease row).
//! - [`consumer`]: runs an engine [`Worker`](paystream_engine::consumers::Worker) off its queue,
//!   exactly once in effect through the worker's inbox.

pub mod consumer;
mod handle;
mod lanes;
pub mod relay;
pub mod topology;

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use lapin::{Connection, ConnectionProperties};

/// The lapin this crate speaks, for callers that need its types (benchmarks, tests).
pub use lapin;

pub use consumer::{run_worker, spawn_worker, WorkerHandle, WorkerOptions, WorkerStats};
pub use handle::Handle;
pub use relay::{run_relay, spawn_relay, RelayHandle, RelayOptions, RelayStats, RELAY_NAME};
pub use topology::QueueSpec;

/// A TCP connect to a black-holed broker can hang for minutes; give up sooner and retry.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ did not answer within {0:?}")]
    Timeout(Duration),
    #[error("RabbitMQ refused a publish: {0}")]
    Refused(&'static str),
}

/// Opens a connection driven by the current tokio runtime. `name` shows in the management UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, AmqpError> {
    let properties = ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties))
        .await
        .map_err(|_| AmqpError::Timeout(CONNECT_TIMEOUT))?
        .map_err(AmqpError::from)
}

/// Closes `channel` before its connection is closed, on a clean stop. Why: lapin closes a
/// channel still open when its last handle is dropped, and if that happens while the connection
/// is closing it logs the refusal as a connection ERROR — one at every graceful shutdown.
pub(crate) async fn close_channel(channel: &lapin::Channel) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, "bye")).await;
    }
}

/// How long a clean close waits for the broker's answer.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the broker accepts a connection now (for readiness checks).
pub async fn check_broker(url: &str) -> Result<(), AmqpError> {
    let connection = connect(url, "paystream-readyz").await?;
    let _ = connection.close(200, "ok").await;
    Ok(())
}

/// Exponential back-off with jitter between `min` and `max`, never giving up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max }
    }

    pub fn delays(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Sleeps for `pause` unless `stop` turns true first; `true` when stopping.
async fn sleep_or_stop(pause: Duration, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = stopped(stop) => true,
        () = tokio::time::sleep(pause) => false,
    }
}

/// Resolves once `stop` is true or its sender is gone (the owner can no longer stop us).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not in the caller's select.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
