//! The outbox relay against a real RabbitMQ (a vhost per test) and PostgreSQL (a database per
//! test).

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use lapin::ExchangeKind;
use paystream_amqp::{spawn_relay, Backoff, RelayOptions, RELAY_NAME};
use paystream_engine::follow::Checkpoints;
use paystream_engine::store::Checkpoint;
use support::*;
use uuid::Uuid;

fn fast_options() -> RelayOptions {
    RelayOptions {
        lease_ttl: Duration::from_secs(1),
        idle_poll: Duration::from_millis(20),
        reconnect: Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
        ..RelayOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_published_once_in_the_contract_shape() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let mut probe = Probe::bind(&vhost.url()).await;
    for stream in 0..5 {
        log.append(&format!("order-{stream}"), 4).await;
    }
    let stored = log.all(20).await;
    assert_eq!(stored.len(), 20);

    let relay = spawn_relay(log.store.clone(), vhost.url(), fast_options());
    probe.until_count(stored.len()).await;
    probe.drain(Duration::from_millis(500)).await;
    assert_eq!(
        probe.received.len(),
        stored.len(),
        "an event was published twice"
    );

    let by_id: HashMap<Uuid, _> = stored.iter().map(|e| (e.event_id, e)).collect();
    for delivery in &probe.received {
        let body: serde_json::Value = serde_json::from_slice(&delivery.data).expect("JSON body");
        let keys: HashSet<&str> = body
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            HashSet::from([
                "event_id",
                "stream_id",
                "version",
                "type",
                "recorded_at",
                "data",
                "metadata"
            ])
        );
        let id: Uuid = body["event_id"].as_str().unwrap().parse().unwrap();
        let event = by_id[&id];
        assert_eq!(delivery.routing_key.as_str(), event.event_type);
        assert_eq!(delivery.exchange.as_str(), "paystream.events");
        let properties = &delivery.properties;
        assert_eq!(
            properties.message_id().as_ref().map(|m| m.as_str()),
            Some(id.to_string().as_str())
        );
        assert_eq!(
            properties.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        assert_eq!(*properties.delivery_mode(), Some(2), "not persistent");
        assert_eq!(body["stream_id"], event.stream_id.as_str());
        assert_eq!(body["version"], event.version);
        assert_eq!(body["type"], event.event_type.as_str());
        assert_eq!(body["data"], event.data);
        assert_eq!(body["metadata"], event.metadata);
        let recorded_at: chrono::DateTime<chrono::Utc> =
            body["recorded_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(recorded_at, event.recorded_at);
    }
    assert_each_stream_in_order(&probe.messages());

    // The checkpoint is durable and at the end of the log; the counters say so too.
    let end = stored.last().unwrap().checkpoint;
    eventually("the relay's checkpoint reaches the end", || async {
        relay.stats.checkpoint() == end
    })
    .await;
    assert_eq!(
        Checkpoints::new(log.db.clone())
            .load(RELAY_NAME)
            .await
            .unwrap(),
        end
    );
    assert_eq!(relay.stats.published(), 20);
    assert!(relay.stats.connected() && relay.stats.leader());

    // The exchange is a durable topic exchange: redeclaring it so succeeds (anything else
    // would close the channel with PRECONDITION_FAILED).
    let connection = amqp(&vhost.url()).await;
    let channel = connection.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            "paystream.events",
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("paystream.events is a durable topic exchange");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publish_and_checkpoint_republishes_and_skips_nothing() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let mut probe = Probe::bind(&vhost.url()).await;
    for stream in 0..10 {
        log.append(&format!("order-{stream}"), 30).await;
    }
    // Keep appending while the relay runs, is killed and restarts.
    let appender = tokio::spawn({
        let store = log.store.clone();
        async move {
            let log = support::Appender { store };
            for round in 0..40 {
                log.append(&format!("order-{}", round % 10), 5).await;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });

    // Checkpoint saves wait behind this lock: the first relay publishes, gets its confirms,
    // and is killed before it can save anything.
    let mut lock = log.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE checkpoints IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let options = RelayOptions {
        batch_size: 50,
        ..fast_options()
    };
    let first = spawn_relay(log.store.clone(), vhost.url(), options.clone());
    probe.until_count(100).await;
    assert_eq!(
        first.stats.checkpoint(),
        Checkpoint::START,
        "no checkpoint could be saved"
    );
    first.kill().await;
    lock.commit().await.unwrap();
    let published_before_kill: HashSet<Uuid> = probe.ids();

    // A new process (new holder id) takes over once the dead holder's lease expires.
    let second = spawn_relay(
        log.store.clone(),
        vhost.url(),
        RelayOptions {
            holder: "second".into(),
            ..options
        },
    );
    tokio::time::timeout(WAIT, appender)
        .await
        .expect("appends finish")
        .unwrap();
    let all: Vec<Uuid> = log.all(500).await.iter().map(|e| e.event_id).collect();
    assert_eq!(all.len(), 300 + 200);
    probe.until_all(&all).await;
    probe.drain(Duration::from_millis(300)).await;

    let republished = probe.received.len() - probe.ids().len();
    assert!(
        republished > 0,
        "events published but not checkpointed are published again"
    );
    assert!(published_before_kill.len() >= 100);
    assert_each_stream_in_order(&probe.messages());
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_delays_the_backlog_but_loses_nothing() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let mut probe = Probe::bind(&vhost.url()).await;
    let proxy = Proxy::start(broker_addr()).await;
    let relay = spawn_relay(log.store.clone(), vhost.url_at(proxy.addr), fast_options());

    let before: Vec<Uuid> = log
        .append("order-a", 20)
        .await
        .iter()
        .map(|e| e.event_id)
        .collect();
    probe.until_all(&before).await;

    proxy.cut();
    eventually("the relay notices the broker is gone", || async {
        !relay.stats.connected()
    })
    .await;
    // The API keeps working: appends do not wait for the broker.
    let during = tokio::time::timeout(Duration::from_secs(10), async {
        let mut ids = Vec::new();
        for stream in ["order-a", "order-b", "order-c"] {
            ids.extend(log.append(stream, 30).await.iter().map(|e| e.event_id));
        }
        ids
    })
    .await
    .expect("appends go on while the broker is unreachable");
    tokio::time::sleep(Duration::from_secs(3)).await;
    probe.drain(Duration::from_millis(100)).await;
    assert!(
        during.iter().all(|id| !probe.ids().contains(id)),
        "nothing can be published during the outage"
    );
    assert!(relay.stats.failures() > 0);

    proxy.restore();
    probe.until_all(&during).await;
    assert_each_stream_in_order(&probe.messages());
    assert!(relay.stats.connected());
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_relays_one_publishes_and_the_other_takes_over_when_it_goes() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let mut probe = Probe::bind(&vhost.url()).await;
    let a = spawn_relay(
        log.store.clone(),
        vhost.url(),
        RelayOptions {
            holder: "a".into(),
            ..fast_options()
        },
    );
    let b = spawn_relay(
        log.store.clone(),
        vhost.url(),
        RelayOptions {
            holder: "b".into(),
            ..fast_options()
        },
    );

    for stream in 0..4 {
        log.append(&format!("order-{stream}"), 25).await;
    }
    probe.until_count(100).await;
    probe.drain(Duration::from_secs(1)).await;
    assert_eq!(probe.received.len(), 100, "each event once");
    assert_eq!(probe.ids().len(), 100);
    let (holder, other) = if a.stats.published() > 0 {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(holder.stats.published(), 100);
    assert_eq!(
        other.stats.published(),
        0,
        "only the lease holder publishes"
    );
    assert!(!other.stats.leader() && !other.stats.connected());

    // A clean stop releases the lease; the other relay continues from the saved checkpoint.
    holder.stop().await;
    log.append("order-9", 50).await;
    probe.until_count(150).await;
    probe.drain(Duration::from_secs(1)).await;
    assert_eq!(
        probe.received.len(),
        150,
        "each event once across the hand-over"
    );
    assert_eq!(other.stats.published(), 50);

    // A holder that dies keeps its lease until it expires; then a third relay takes over.
    let third = spawn_relay(
        log.store.clone(),
        vhost.url(),
        RelayOptions {
            holder: "c".into(),
            ..fast_options()
        },
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(third.stats.published(), 0);
    other.kill().await;
    let last: Vec<Uuid> = log
        .append("order-10", 10)
        .await
        .iter()
        .map(|e| e.event_id)
        .collect();
    probe.until_all(&last).await;
    eventually("the third relay counts what it published", || async {
        third.stats.published() >= 10
    })
    .await;
    assert_each_stream_in_order(&probe.messages());
    third.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_declares_the_workers_queues_so_early_events_wait_for_them() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let spec = paystream_amqp::QueueSpec::new("subscribe-message", vec!["OrderPlaced".into()]);
    let relay = spawn_relay(
        log.store.clone(),
        vhost.url(),
        RelayOptions {
            queues: vec![spec],
            ..fast_options()
        },
    );
    log.append("order-1", 3).await;
    let connection = amqp(&vhost.url()).await;
    eventually("3 events wait in paystream.subscribe-message", || async {
        // A passive declare of a missing queue closes its channel: a fresh one per look.
        let Ok(channel) = connection.create_channel().await else {
            return false;
        };
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        channel
            .queue_declare(
                "paystream.subscribe-message",
                passive,
                FieldTable::default(),
            )
            .await
            .map(|q| q.message_count() == 3)
            .unwrap_or(false)
    })
    .await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_whose_lease_is_taken_stops_publishing_until_it_gets_it_back() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let mut probe = Probe::bind(&vhost.url()).await;
    let relay = spawn_relay(log.store.clone(), vhost.url(), fast_options());
    let first: Vec<Uuid> = log
        .append("order-1", 5)
        .await
        .iter()
        .map(|e| e.event_id)
        .collect();
    probe.until_all(&first).await;

    // Another process holds the lease now (as after a pause longer than the lease's life).
    let far_future = chrono::Utc::now().timestamp_millis() + 3_600_000;
    sqlx::query("UPDATE leases SET holder = 'someone-else', expires_at = $1 WHERE name = $2")
        .bind(far_future)
        .bind(RELAY_NAME)
        .execute(&log.db.pool)
        .await
        .unwrap();
    eventually("the relay notices it lost the lease", || async {
        !relay.stats.leader()
    })
    .await;
    let second: Vec<Uuid> = log
        .append("order-1", 5)
        .await
        .iter()
        .map(|e| e.event_id)
        .collect();
    probe.drain(Duration::from_secs(1)).await;
    assert_eq!(
        probe.received.len(),
        5,
        "nothing is published without the lease"
    );

    sqlx::query("DELETE FROM leases WHERE name = $1")
        .bind(RELAY_NAME)
        .execute(&log.db.pool)
        .await
        .unwrap();
    probe.until_all(&second).await;
    assert!(relay.stats.leader());
    assert_each_stream_in_order(&probe.messages());
    relay.stop().await;
}
