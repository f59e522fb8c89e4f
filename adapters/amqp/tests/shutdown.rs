//! A graceful stop of the relay and of a worker is quiet: operators alert on ERROR lines, and a
//! deploy or a restart must not raise one. (lapin logs a connection ERROR when a channel is
//! still open as its connection closes.) Its own test binary, as it captures every log line of
//! the process.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use paystream_amqp::topology::QueueSpec;
use paystream_amqp::{spawn_relay, spawn_worker, RelayOptions, WorkerOptions};
use support::*;

/// Every line logged anywhere in the process.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_relay_and_a_worker_logs_no_error() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();
    let (vhost, log) = (Vhost::new().await, Log::new().await);
    let worker = Arc::new(RecordingWorker::new(log.db.clone(), RecordingWorker::always_ok()).await);
    let relay_options = RelayOptions {
        queues: vec![QueueSpec::of(worker.as_ref())],
        ..RelayOptions::default()
    };
    let relay = spawn_relay(log.store.clone(), vhost.url(), relay_options);
    let handle = spawn_worker(
        worker.clone(),
        log.db.clone(),
        vhost.url(),
        WorkerOptions::default(),
    );
    for i in 0..5 {
        log.append(&format!("order-{i}"), 2).await;
    }
    eventually("the worker handled every event", || async {
        handle.stats.handled() == 10
    })
    .await;

    handle.stop().await;
    relay.stop().await;
    let text = captured.text();
    assert!(
        text.contains("worker stopped") && text.contains("outbox relay stopped"),
        "both stopped, and their lines were captured:\n{text}"
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "a clean stop logged {errors:#?}");
}
