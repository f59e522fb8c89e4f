//! The in-process runtime (no broker): a worker fed straight from the log handles each wanted
//! event once, retries transient failures, parks poison messages with their reason and moves on.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use paystream_engine::consumers::{from_log, Effect, EventMessage, HandleError, Parked, Worker};
use paystream_engine::db::Backend;
use paystream_engine::store::{EventStore, ExpectedVersion, NewEvent};
use paystream_engine::testing::TestDb;
use serde_json::json;

#[derive(Default)]
struct Recorder {
    handled: Mutex<Vec<(String, i64)>>,
    /// Fails this many times with a transient error before handling anything.
    transient_failures: AtomicUsize,
}

#[async_trait]
impl Worker for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn event_types(&self) -> Vec<String> {
        vec!["Wanted".into(), "Poison".into()]
    }

    async fn handle(&self, message: &EventMessage) -> Result<Effect, HandleError> {
        if self
            .transient_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandleError::Transient("WeChat is busy".into()));
        }
        if message.event_type == "Poison" {
            return Err(HandleError::Poison("cannot ever be handled".into()));
        }
        self.handled
            .lock()
            .unwrap()
            .push((message.stream_id.clone(), message.version));
        Ok(Effect::NotRecorded)
    }
}

async fn append(store: &Arc<dyn EventStore>, stream: &str, types: &[&str]) {
    let events = types.iter().map(|t| NewEvent::new(*t, json!({}))).collect();
    store
        .append(stream, ExpectedVersion::Any, events)
        .await
        .unwrap();
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never happened");
}

async fn a_worker_fed_from_the_log(backend: Backend) {
    let test_db = TestDb::new(backend).await;
    let db = paystream::connect(&test_db.url).await.unwrap();
    let store = paystream::event_store(&db);
    let worker = Arc::new(Recorder::default());
    worker.transient_failures.store(2, Ordering::SeqCst);

    append(&store, "s-1", &["Wanted", "Ignored", "Poison", "Wanted"]).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(from_log::run(
        worker.clone(),
        store.clone(),
        stopped.clone(),
    ));
    wait_until("both wanted events handled", || {
        worker.handled.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(
        *worker.handled.lock().unwrap(),
        vec![("s-1".to_string(), 1), ("s-1".to_string(), 4)],
        "in log order, transient failures retried, the unwanted one skipped"
    );
    let parked = Parked::new(db.clone()).list("recorder").await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].event_type, "Poison");
    assert_eq!(parked[0].reason, "cannot ever be handled");

    // Restarted: nothing is handled twice; new events are.
    stop.send(true).unwrap();
    task.await.unwrap();
    append(&store, "s-2", &["Wanted"]).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(from_log::run(worker.clone(), store.clone(), stopped));
    wait_until("the new event handled", || {
        worker.handled.lock().unwrap().len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(worker.handled.lock().unwrap().len(), 3);
    assert_eq!(
        Parked::new(db.clone())
            .list("recorder")
            .await
            .unwrap()
            .len(),
        1
    );
    stop.send(true).unwrap();
    task.await.unwrap();
    db.pool.close().await;
}

on_both_backends!(a_worker_fed_from_the_log);
