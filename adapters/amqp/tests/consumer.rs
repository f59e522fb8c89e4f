//! The consumer runtime against a real RabbitMQ (a vhost per test) and PostgreSQL (a database per
//! test), with a worker that records its effect and its inbox row in one transaction.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lapin::message::BasicGetMessage;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Connection;
use paystream_amqp::consumer::REASON_HEADER;
use paystream_amqp::topology::{parked_queue_name, queue_name};
use paystream_amqp::{spawn_relay, spawn_worker, Backoff, QueueSpec, RelayOptions, WorkerOptions};
use paystream_engine::consumers::HandleError;
use paystream_engine::store::{ExpectedVersion, NewEvent};
use serde_json::json;
use support::*;

fn fast_options() -> WorkerOptions {
    WorkerOptions {
        retry: Backoff::new(Duration::from_millis(20), Duration::from_millis(100)),
        reconnect: Backoff::new(Duration::from_millis(50), Duration::from_millis(500)),
        ..WorkerOptions::default()
    }
}

/// Messages waiting in a queue (a fresh channel each time: a failed passive declare closes it).
async fn ready_in(connection: &Connection, queue: &str) -> u32 {
    let channel = connection.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue, passive, FieldTable::default())
        .await
        .map(|q| q.message_count())
        .unwrap_or_else(|e| panic!("queue {queue}: {e}"))
}

async fn next_parked(connection: &Connection) -> BasicGetMessage {
    let channel = connection.create_channel().await.expect("channel");
    let queue = parked_queue_name(TEST_WORKER);
    tokio::time::timeout(WAIT, async {
        loop {
            let got = channel
                .basic_get(&queue, BasicGetOptions { no_ack: true })
                .await
                .expect("basic.get");
            if let Some(message) = got {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing reached {queue} in {WAIT:?}"))
}

fn header(message: &BasicGetMessage, name: &str) -> Option<String> {
    let headers = message.delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        other => Some(format!("{other:?}")),
    }
}

async fn effects_per_message(log: &Log) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for (id, _, _) in RecordingWorker::effects(&log.db).await {
        *count.entry(id).or_default() += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_have_one_effect_even_across_two_consumers() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    // Two consumer processes on one queue and one database.
    let mut handles = Vec::new();
    for _ in 0..2 {
        let worker =
            Arc::new(RecordingWorker::new(log.db.clone(), RecordingWorker::always_ok()).await);
        let handle = spawn_worker(worker, log.db.clone(), vhost.url(), fast_options());
        eventually("the worker consumes", || async { handle.stats.connected() }).await;
        handles.push(handle);
    }
    let connection = amqp(&vhost.url()).await;
    let channel = confirm_channel(&connection).await;
    let messages: Vec<_> = (0..20).map(|i| message(&format!("order-{i}"), 1)).collect();
    for _ in 0..3 {
        for m in &messages {
            publish(&channel, m).await;
        }
    }
    eventually("every delivery is handled or skipped", || async {
        let total: u64 = handles
            .iter()
            .map(|h| h.stats.handled() + h.stats.duplicates())
            .sum();
        total >= 60
    })
    .await;
    let effects = effects_per_message(&log).await;
    assert_eq!(effects.len(), 20);
    assert!(
        effects.values().all(|&n| n == 1),
        "an effect happened twice: {effects:?}"
    );
    assert_eq!(ready_in(&connection, &queue_name(TEST_WORKER)).await, 0);
    for handle in handles {
        handle.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_and_undecodable_messages_are_parked_with_their_reason() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let script: Box<Script> = Box::new(|m, _| {
        if m.stream_id == "order-missing" {
            Err(HandleError::Poison(
                "order order-missing does not exist".into(),
            ))
        } else {
            Ok(())
        }
    });
    let worker = Arc::new(RecordingWorker::new(log.db.clone(), script).await);
    let handle = spawn_worker(worker, log.db.clone(), vhost.url(), fast_options());
    eventually("the worker consumes", || async { handle.stats.connected() }).await;

    let connection = amqp(&vhost.url()).await;
    let channel = confirm_channel(&connection).await;
    let poison = message("order-missing", 1);
    publish(&channel, &poison).await;
    let parked = next_parked(&connection).await;
    assert_eq!(
        header(&parked, REASON_HEADER).as_deref(),
        Some("order order-missing does not exist")
    );
    assert_eq!(
        parked.delivery.data,
        poison.to_body(),
        "the original body is kept"
    );
    assert_eq!(
        parked
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string()),
        Some(poison.event_id.to_string())
    );

    publish_raw(&channel, "PaymentSucceeded", b"{not json", "garbage-1").await;
    let parked = next_parked(&connection).await;
    let reason = header(&parked, REASON_HEADER).expect("a reason");
    assert!(reason.starts_with("undecodable message body"), "{reason}");
    assert_eq!(parked.delivery.data, b"{not json");

    // Parking moves on: the next message is handled, nothing is left in the queue.
    let good = message("order-1", 1);
    publish(&channel, &good).await;
    eventually("the good message is handled", || async {
        handle.stats.handled() == 1
    })
    .await;
    let effects = effects_per_message(&log).await;
    assert_eq!(
        effects.keys().collect::<Vec<_>>(),
        vec![&good.event_id.to_string()]
    );
    assert_eq!(handle.stats.parked(), 2);
    assert_eq!(ready_in(&connection, &queue_name(TEST_WORKER)).await, 0);
    assert_eq!(
        ready_in(&connection, &parked_queue_name(TEST_WORKER)).await,
        0
    );
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_in_place_then_requeued_until_they_succeed() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    // order-a fails twice (within the attempts in place), order-b three times (needs a requeue).
    let script: Box<Script> = Box::new(|m, attempt| {
        let failures = if m.stream_id == "order-a" { 2 } else { 3 };
        if attempt <= failures {
            Err(HandleError::Transient("WeChat is busy".into()))
        } else {
            Ok(())
        }
    });
    let worker = Arc::new(RecordingWorker::new(log.db.clone(), script).await);
    let options = WorkerOptions {
        attempts: 3,
        ..fast_options()
    };
    let handle = spawn_worker(worker.clone(), log.db.clone(), vhost.url(), options);
    eventually("the worker consumes", || async { handle.stats.connected() }).await;
    let connection = amqp(&vhost.url()).await;
    let channel = confirm_channel(&connection).await;

    publish(&channel, &message("order-a", 1)).await;
    eventually("order-a is handled", || async {
        handle.stats.handled() == 1
    })
    .await;
    assert_eq!(
        handle.stats.requeued(),
        0,
        "two failures are absorbed in place"
    );
    assert_eq!(worker.started.load(Ordering::SeqCst), 3);

    publish(&channel, &message("order-b", 1)).await;
    eventually("order-b is handled", || async {
        handle.stats.handled() == 2
    })
    .await;
    assert_eq!(
        handle.stats.requeued(),
        1,
        "three failures need one trip back to the queue"
    );
    assert_eq!(worker.started.load(Ordering::SeqCst), 3 + 4);
    let effects = effects_per_message(&log).await;
    assert_eq!(effects.len(), 2);
    assert!(effects.values().all(|&n| n == 1));
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_dead_lettered_by_the_delivery_limit() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let script: Box<Script> = Box::new(|_, _| Err(HandleError::Transient("always down".into())));
    let worker = Arc::new(RecordingWorker::new(log.db.clone(), script).await);
    let options = WorkerOptions {
        attempts: 1,
        delivery_limit: 2,
        ..fast_options()
    };
    let handle = spawn_worker(worker.clone(), log.db.clone(), vhost.url(), options);
    eventually("the worker consumes", || async { handle.stats.connected() }).await;
    let connection = amqp(&vhost.url()).await;
    let channel = confirm_channel(&connection).await;
    let doomed = message("order-a", 1);
    publish(&channel, &doomed).await;

    let parked = next_parked(&connection).await;
    assert_eq!(parked.delivery.data, doomed.to_body());
    assert_eq!(
        header(&parked, REASON_HEADER),
        None,
        "the broker parked it, not the worker"
    );
    assert_eq!(
        header(&parked, "x-first-death-reason").as_deref(),
        Some("delivery_limit")
    );
    assert!(worker.started.load(Ordering::SeqCst) >= 2);
    assert_eq!(ready_in(&connection, &queue_name(TEST_WORKER)).await, 0);
    handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_finishes_the_message_in_hand_and_hands_back_the_rest() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let mut worker = RecordingWorker::new(log.db.clone(), RecordingWorker::always_ok()).await;
    worker.delay = Duration::from_millis(1500);
    let worker = Arc::new(worker);
    let handle = spawn_worker(worker.clone(), log.db.clone(), vhost.url(), fast_options());
    eventually("the worker consumes", || async { handle.stats.connected() }).await;
    let connection = amqp(&vhost.url()).await;
    let channel = confirm_channel(&connection).await;
    // One order: the second waits behind the first in its lane.
    let (first, second) = (message("order-a", 1), message("order-a", 2));
    publish(&channel, &first).await;
    publish(&channel, &second).await;
    eventually("the first message is being handled", || async {
        worker.started.load(Ordering::SeqCst) == 1
    })
    .await;

    let stopping = tokio::time::Instant::now();
    tokio::time::timeout(WAIT, handle.stop())
        .await
        .expect("the stop completes");
    assert!(
        stopping.elapsed() >= Duration::from_millis(500),
        "the stop waited for the message in hand"
    );
    let effects = effects_per_message(&log).await;
    assert_eq!(
        effects.keys().collect::<Vec<_>>(),
        vec![&first.event_id.to_string()]
    );
    assert_eq!(
        worker.started.load(Ordering::SeqCst),
        1,
        "nothing new started after the stop"
    );
    // The finished message was acked; the one not started is back in the queue.
    eventually("the message not started is back in the queue", || async {
        ready_in(&connection, &queue_name(TEST_WORKER)).await == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ready_in(&connection, &queue_name(TEST_WORKER)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_to_worker_each_order_in_version_order_and_only_bound_types() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let worker = Arc::new(RecordingWorker::new(log.db.clone(), RecordingWorker::always_ok()).await);
    let relay_options = RelayOptions {
        queues: vec![QueueSpec::of(worker.as_ref())],
        idle_poll: Duration::from_millis(20),
        ..RelayOptions::default()
    };
    let relay = spawn_relay(log.store.clone(), vhost.url(), relay_options);
    // Appended before the worker ever ran: the relay's declaration keeps them for it.
    for i in 0..12 {
        let stream = format!("order-{i}");
        for _ in 0..8 {
            log.append(&stream, 1).await;
        }
        let closed = NewEvent::new("OrderClosed", json!({}));
        log.store
            .append(&stream, ExpectedVersion::Any, vec![closed])
            .await
            .unwrap();
    }
    eventually("the relay published everything", || async {
        relay.stats.published() == 12 * 9
    })
    .await;

    let options = WorkerOptions {
        lanes: 4,
        ..fast_options()
    };
    let handle = spawn_worker(worker.clone(), log.db.clone(), vhost.url(), options);
    eventually("96 effects", || async { handle.stats.handled() == 96 }).await;
    let effects = RecordingWorker::effects(&log.db).await;
    assert_eq!(effects.len(), 96, "OrderClosed is not bound to this worker");
    let mut versions: HashMap<String, Vec<i64>> = HashMap::new();
    for (_, stream, version) in effects {
        versions.entry(stream).or_default().push(version);
    }
    for (stream, versions) in versions {
        assert_eq!(
            versions,
            (1..=8).collect::<Vec<i64>>(),
            "{stream} out of order"
        );
    }
    handle.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reconnects_after_losing_the_broker() {
    init_tracing();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let proxy = Proxy::start(broker_addr()).await;
    let worker = Arc::new(RecordingWorker::new(log.db.clone(), RecordingWorker::always_ok()).await);
    let handle = spawn_worker(
        worker,
        log.db.clone(),
        vhost.url_at(proxy.addr),
        fast_options(),
    );
    eventually("the worker consumes", || async { handle.stats.connected() }).await;
    let connection = amqp(&vhost.url()).await;
    let channel = confirm_channel(&connection).await;
    for i in 0..5 {
        publish(&channel, &message(&format!("order-{i}"), 1)).await;
    }
    eventually("5 handled", || async { handle.stats.handled() == 5 }).await;

    proxy.cut();
    eventually("the worker notices", || async { !handle.stats.connected() }).await;
    for i in 5..10 {
        publish(&channel, &message(&format!("order-{i}"), 1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.stats.handled(), 5);
    proxy.restore();
    eventually("10 handled", || async { handle.stats.handled() == 10 }).await;
    let effects = effects_per_message(&log).await;
    assert_eq!(effects.len(), 10);
    handle.stop().await;
}
