//! Test support: a RabbitMQ vhost and a PostgreSQL database per test, a TCP proxy to cut the
//! broker away, a probe queue bound to everything, and a worker that records its effects.
//!
//! RabbitMQ must be reachable (127.0.0.1:5672, or `TEST_AMQP_ADDR`) and `rabbitmqctl` runnable:
//! a test that cannot reach them fails loudly instead of passing without a broker.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use paystream_amqp::topology::{self, EVENTS_EXCHANGE};
use paystream_engine::consumers::{EventMessage, HandleError, Inbox, Worker};
use paystream_engine::db::{Backend, Db};
use paystream_engine::store::{
    Checkpoint, EventStore, ExpectedVersion, NewEvent, RecordedEvent, SqlEventStore,
};
use paystream_engine::testing::TestDb;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
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

/// A queue bound to `paystream.events` with `#`: sees everything the relay publishes.
pub struct Probe {
    _connection: Connection,
    consumer: Consumer,
    pub received: Vec<Delivery>,
}

impl Probe {
    pub async fn bind(url: &str) -> Probe {
        let connection = amqp(url).await;
        let channel = connection.create_channel().await.expect("channel");
        topology::declare_exchanges(&channel)
            .await
            .expect("exchanges");
        let queue = channel
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("probe queue");
        channel
            .queue_bind(
                queue.name().as_str(),
                EVENTS_EXCHANGE,
                "#",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind probe");
        let consumer = channel
            .basic_consume(
                queue.name().as_str(),
                "probe",
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume probe");
        Probe {
            _connection: connection,
            consumer,
            received: Vec::new(),
        }
    }

    /// Receives until `count` deliveries in all have arrived; panics after `WAIT`.
    pub async fn until_count(&mut self, count: usize) {
        let received = tokio::time::timeout(WAIT, async {
            while self.received.len() < count {
                let delivery = self
                    .consumer
                    .next()
                    .await
                    .expect("probe open")
                    .expect("delivery");
                self.received.push(delivery);
            }
        })
        .await;
        assert!(
            received.is_ok(),
            "the probe saw {} deliveries in {WAIT:?}, expected {count}",
            self.received.len()
        );
    }

    /// Receives until every id in `ids` has arrived at least once; panics after `WAIT`.
    pub async fn until_all(&mut self, ids: &[Uuid]) {
        let mut missing: HashSet<Uuid> = ids.iter().copied().collect();
        for id in self.ids() {
            missing.remove(&id);
        }
        let received = tokio::time::timeout(WAIT, async {
            while !missing.is_empty() {
                let delivery = self
                    .consumer
                    .next()
                    .await
                    .expect("probe open")
                    .expect("delivery");
                missing.remove(&message_of(&delivery).event_id);
                self.received.push(delivery);
            }
        })
        .await;
        assert!(
            received.is_ok(),
            "{} events never reached the probe in {WAIT:?}",
            missing.len()
        );
    }

    /// Whatever else arrives within `quiet`.
    pub async fn drain(&mut self, quiet: Duration) {
        while let Ok(Some(delivery)) = tokio::time::timeout(quiet, self.consumer.next()).await {
            self.received.push(delivery.expect("delivery"));
        }
    }

    pub fn ids(&self) -> HashSet<Uuid> {
        self.received
            .iter()
            .map(|d| message_of(d).event_id)
            .collect()
    }

    pub fn messages(&self) -> Vec<EventMessage> {
        self.received.iter().map(message_of).collect()
    }
}

pub fn message_of(delivery: &Delivery) -> EventMessage {
    EventMessage::from_body(&delivery.data).expect("a published body decodes")
}

/// Each stream's events in first-delivery order, repeats removed: must be versions 1, 2, 3, ...
pub fn assert_each_stream_in_order(messages: &[EventMessage]) {
    let mut seen = HashSet::new();
    let mut versions: HashMap<&str, Vec<i64>> = HashMap::new();
    for m in messages {
        if seen.insert(m.event_id) {
            versions.entry(&m.stream_id).or_default().push(m.version);
        }
    }
    for (stream, versions) in versions {
        let expected: Vec<i64> = (1..=versions.len() as i64).collect();
        assert_eq!(
            versions, expected,
            "stream {stream} out of order or with a gap"
        );
    }
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

/// A TCP proxy in front of the broker that can be cut (every connection dropped, new ones
/// closed at once) and restored: a broker outage that disturbs no other test.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listens");
        let addr = listener.local_addr().expect("proxy address");
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, links) = (cut.clone(), links.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().expect("links").push(link);
                }
            }
        });
        Proxy {
            addr,
            cut,
            links,
            accept,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

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

    async fn handle(&self, message: &EventMessage) -> Result<(), HandleError> {
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
            return Ok(()); // a concurrent duplicate recorded it first; roll back
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
        Ok(())
    }
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
