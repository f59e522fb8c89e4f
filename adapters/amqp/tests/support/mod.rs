//! Test support: a RabbitMQ vhost and a PostgreSQL database per test, a TCP proxy to cut the
//! broker away, a probe queue bound to everything, and a worker that records its effects.
//!
//! RabbitMQ must be reachable (127.0.0.1:5672, or `TEST_AMQP_ADDR`) and `rabbitmqctl` runnable:
//! a test that cannot reach them fails loudly instead of passing without a broker.

// Each test binary uses a different part of this module.
#![allow(dead_code, unused_imports)]

mod probe;
mod proxy;
mod worker;

pub use probe::*;
pub use proxy::Proxy;
pub use worker::*;

use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use paystream_amqp::topology::EVENTS_EXCHANGE;
use paystream_engine::consumers::EventMessage;
use paystream_engine::db::{Backend, Db};
use paystream_engine::store::{
    Checkpoint, EventStore, ExpectedVersion, NewEvent, RecordedEvent, SqlEventStore,
};
use paystream_engine::testing::TestDb;
use serde_json::json;
use tokio::net::TcpStream;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,paystream_amqp=info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn broker_addr() -> SocketAddr {
    std::env::var("TEST_AMQP_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:5672".into())
        .parse()
        .expect("TEST_AMQP_ADDR must be host:port")
}

fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let program = std::env::var("RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    let output = Command::new(&program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A vhost that exists for one test, deleted on drop.
pub struct Vhost {
    pub name: String,
}

impl Vhost {
    pub async fn new() -> Vhost {
        let addr = broker_addr();
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| "timed out".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        {
            panic!(
                "RabbitMQ is required for this test and did not answer at {addr}: {e}. \
                 Start it (rabbitmq-server -detached) or set TEST_AMQP_ADDR."
            );
        }
        let name = format!("paystream-test-{}", Uuid::new_v4().simple());
        let vhost = name.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["add_vhost", &vhost])?;
            rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"])
        })
        .await
        .expect("rabbitmqctl task")
        .unwrap_or_else(|e| panic!("cannot create a RabbitMQ vhost for this test: {e}"));
        Vhost { name }
    }

    pub fn url(&self) -> String {
        self.url_at(broker_addr())
    }

    pub fn url_at(&self, addr: SocketAddr) -> String {
        format!("amqp://guest:guest@{addr}/{}", self.name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

/// A migrated PostgreSQL database and its event store.
pub struct Log {
    pub test_db: TestDb,
    pub db: Db,
    pub store: Arc<dyn EventStore>,
}

impl Log {
    pub async fn new() -> Log {
        let test_db = TestDb::new(Backend::Postgres).await;
        let db = test_db.db().await;
        let store: Arc<dyn EventStore> = Arc::new(SqlEventStore::new(db.clone()));
        Log { test_db, db, store }
    }

    /// Appends `count` events to `stream`, one append each (so each is its own transaction).
    pub async fn append(&self, stream: &str, count: usize) -> Vec<RecordedEvent> {
        let mut stored = Vec::new();
        for _ in 0..count {
            let event = NewEvent::new("OrderPlaced", json!({"order_id": stream, "total_fen": 100}))
                .with_metadata(json!({"correlation_id": Uuid::new_v4().to_string()}));
            let appended = self
                .store
                .append(stream, ExpectedVersion::Any, vec![event])
                .await
                .expect("append");
            stored.extend(appended.events);
        }
        stored
    }

    /// The first `count` events of the log, in log order, once followers can see them all. A
    /// follower sees nothing newer than the oldest transaction open anywhere in the PostgreSQL
    /// cluster (the gap-free rule), so a parallel test's open transaction can delay them.
    pub async fn all(&self, count: usize) -> Vec<RecordedEvent> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let all = self.visible().await;
            if all.len() >= count {
                return all;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} events became visible to followers",
                all.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn visible(&self) -> Vec<RecordedEvent> {
        let mut all = Vec::new();
        let mut from = Checkpoint::START;
        loop {
            let batch = self.store.read_all(from, 1000).await.expect("read_all");
            let Some(last) = batch.last() else {
                return all;
            };
            from = last.checkpoint;
            all.extend(batch);
        }
    }
}

pub async fn amqp(url: &str) -> Connection {
    paystream_amqp::connect(url, "paystream-test")
        .await
        .expect("connect to RabbitMQ")
}

/// Polls `check` until it holds; panics with `what` after `WAIT`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes one message as the relay would, with a confirm.
pub async fn publish(channel: &Channel, message: &EventMessage) {
    publish_raw(
        channel,
        &message.event_type,
        &message.to_body(),
        &message.event_id.to_string(),
    )
    .await;
}

pub async fn publish_raw(channel: &Channel, routing_key: &str, body: &[u8], message_id: &str) {
    let properties = BasicProperties::default()
        .with_message_id(message_id.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            EVENTS_EXCHANGE,
            routing_key,
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "the broker refused a test publish");
}

pub async fn confirm_channel(connection: &Connection) -> Channel {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    channel
}

pub fn message(stream_id: &str, version: i64) -> EventMessage {
    EventMessage {
        event_id: Uuid::now_v7(),
        stream_id: stream_id.into(),
        version,
        event_type: "PaymentSucceeded".into(),
        recorded_at: chrono_now(),
        data: json!({"order_id": stream_id}),
        metadata: json!({}),
    }
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// Appends from a task of its own.
pub struct Appender {
    pub store: Arc<dyn EventStore>,
}

impl Appender {
    pub async fn append(&self, stream: &str, count: usize) {
        for _ in 0..count {
            let event = NewEvent::new("OrderPlaced", json!({"order_id": stream}));
            self.store
                .append(stream, ExpectedVersion::Any, vec![event])
                .await
                .expect("append");
        }
    }
}
