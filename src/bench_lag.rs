//! `paystream bench lag`: end-to-end lag from an append to a worker's effect, through RabbitMQ,
//! under the notify load of `bench notify` sent at a fixed rate.
//!
//! - A fresh PostgreSQL database (the one `--database-url` names, dropped and created again; its
//!   name must contain `bench`) and a throwaway RabbitMQ vhost on the broker of `--amqp-url`
//!   (made with `rabbitmqctl`, so the broker must be local), so a run meets no old queues.
//! - The engine runs as `serve` does with `AMQP_URL` set: background jobs on, so its outbox relay
//!   publishes the log. Notifications are captured from its WeChat Pay simulator as in
//!   `bench notify`, then sent at `--rate` per second by a paced sender (open loop: each one
//!   leaves at its scheduled time, whatever the answers before it took).
//! - A measuring worker `bench-lag` (event type `PaymentSucceeded`) consumes its queue through
//!   the consumer runtime the real workers use ([`paystream_amqp::spawn_worker`], its own pool).
//!   Its effect is what a real worker's is: the message id in the inbox and a row in a table, in
//!   one transaction. After that transaction commits it takes `now - recorded_at`.
//!
//! With `--probe`, a bare consumer (no acks, no database) of a quorum queue bound like the
//! worker's takes the same lag at delivery: the relay's and the broker's share, without the
//! worker runtime's. That queue is one more the broker writes every event to.
//!
//! `recorded_at` is stamped by the engine just before the group-commit transaction that appends
//! the event begins, so the lag covers: the append's transaction and commit, the relay noticing
//! the event (it polls the log every 50 ms when idle), publish, routing to the quorum queue,
//! delivery, the runtime's inbox check, and the effect's transaction. Both ends read the same
//! clock (one process).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use async_trait::async_trait;
use chrono::Utc;
use futures::StreamExt;
use paystream_amqp::lapin;
use paystream_amqp::lapin::options::BasicConsumeOptions;

use crate::bench_relay::Vhost;
use paystream_amqp::lapin::types::FieldTable;
use paystream_amqp::topology::declare_listener;
use paystream_amqp::{RelayOptions, WorkerOptions, RELAY_NAME};
use paystream_engine::consumers::{Effect, EventMessage, HandleError, Inbox, Worker};
use paystream_engine::db::{Backend, Db};
use paystream_engine::follow::Checkpoints;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::bench::BenchArgs;
use crate::bench_cpu::CpuSample;
use crate::bench_notify::{percentile_ms, send, settings, start_with_paid_orders};

const WORKER: &str = "bench-lag";
/// How often the paced sender wakes up to send what is due.
const TICK: Duration = Duration::from_millis(2);
/// Notifications in flight at most; only reached when the engine cannot keep up with the rate.
const MAX_IN_FLIGHT: usize = 512;
/// How long the run waits for the last events to reach the worker.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    ensure!(
        args.rate > 0.0 && args.orders > 0,
        "--rate and --orders must be positive"
    );
    recreate_database(&args.database_url).await?;
    let vhost = Vhost::create(&args.amqp_url, "paystream-bench-lag")?;
    let result = measure(args, &vhost.url).await;
    vhost.delete();
    result
}

async fn measure(args: &BenchArgs, amqp_url: &str) -> anyhow::Result<()> {
    let engine_settings = paystream::config::Settings {
        amqp_url: Some(amqp_url.to_string()),
        // As `serve` runs: the relay, the expiry sweep and the reconciler.
        no_background_jobs: false,
        // The simulator pays the orders while their notifications are held back: the
        // reconciler must not find them paid at WeChat Pay before the notifications are sent.
        payment_query_after_seconds: 24 * 3600,
        ..settings(&args.database_url)
    };
    let (running, notifications) =
        start_with_paid_orders(engine_settings, args.orders, args.writers).await?;

    // The worker's own pool, as in a `paystream worker` process.
    let worker_db = paystream::connect(&args.database_url).await?;
    sqlx::query(
        "CREATE TABLE bench_lag_effects (message_id TEXT PRIMARY KEY, stream_id TEXT NOT NULL, \
         handled_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&worker_db.pool)
    .await
    .context("creating the bench table")?;
    let lag_worker = Arc::new(LagWorker {
        db: worker_db.clone(),
        lags: Mutex::new(Vec::with_capacity(args.orders)),
        handled: AtomicU64::new(0),
    });
    let options = WorkerOptions::default();
    let stats = options.stats.clone();
    let worker = paystream_amqp::spawn_worker(
        lag_worker.clone(),
        worker_db.clone(),
        amqp_url.to_string(),
        options,
    );
    let ready = Instant::now() + Duration::from_secs(30);
    while !stats.connected() {
        ensure!(
            Instant::now() < ready,
            "the measuring worker did not connect to RabbitMQ"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let probe = match args.probe {
        true => Some(Probe::start(amqp_url).await?),
        false => None,
    };
    // Start from a quiet relay: the preparation's events are all published.
    wait_for_relay(&running.db, Duration::from_secs(120)).await?;
    let relay_defaults = RelayOptions::default();
    println!(
        "relay caught up (batch {}, {} batches in flight, idle poll {} ms); sending {} notifications at {}/s",
        relay_defaults.batch_size,
        relay_defaults.batches_in_flight,
        relay_defaults.idle_poll.as_millis(),
        notifications.len(),
        args.rate
    );

    let url: Arc<str> = format!("{}/notify/wechatpay/v3", running.base_url()).into();
    let http = reqwest::Client::new();
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let total = notifications.len();
    let mut pending = notifications.into_iter();
    let mut sends = JoinSet::new();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut behind = Duration::ZERO;
    let cpu = CpuSample::now();
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        ticks.tick().await;
        // Everything whose time has come (the first one at once).
        let due = ((started.elapsed().as_secs_f64() * args.rate) as usize + 1).min(total);
        while sent < due {
            let notification = pending.next().context("fewer notifications than counted")?;
            let permit = limit.clone().acquire_owned().await?;
            let scheduled = started + Duration::from_secs_f64(sent as f64 / args.rate);
            behind = behind.max(Instant::now().saturating_duration_since(scheduled));
            let (http, url) = (http.clone(), url.clone());
            sends.spawn(async move {
                let _permit = permit;
                send(&http, &url, notification).await
            });
            sent += 1;
        }
    }
    let mut latencies = Vec::with_capacity(total);
    let mut failed = 0usize;
    while let Some(done) = sends.join_next().await {
        match done? {
            Ok(latency) => latencies.push(latency),
            Err(e) => {
                failed += 1;
                if failed == 1 {
                    eprintln!("a notification failed: {e:#}");
                }
            }
        }
    }
    let sending = started.elapsed();
    let expected = latencies.len() as u64;
    let drain = Instant::now() + DRAIN_TIMEOUT;
    while lag_worker.handled.load(Ordering::Relaxed) < expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let drained = started.elapsed() - sending;
    let cpu = CpuSample::now().report_since(&cpu, total);
    let arrived = lag_worker.handled.load(Ordering::Relaxed);
    // A little longer, so a late duplicate would show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.stop().await;

    let delivered = match probe {
        Some(probe) => Some(probe.stop().await),
        None => None,
    };

    let recorded: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = 'PaymentSucceeded'")
            .fetch_one(&running.db.pool)
            .await?;
    let effects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bench_lag_effects")
        .fetch_one(&worker_db.pool)
        .await?;
    running.stop().await;
    worker_db.pool.close().await;

    latencies.sort();
    let measured = std::mem::take(&mut *lag_worker.lags.lock().unwrap_or_else(|p| p.into_inner()));
    let by_second = p99_by_second(&measured);
    let mut called: Vec<Duration> = measured.iter().map(|l| l.called).collect();
    let mut lags: Vec<Duration> = measured.iter().map(|l| l.effect).collect();
    called.sort();
    lags.sort();
    println!(
        "sent {total} notifications at {:.0}/s (target {}/s; {:.1} s to the last answer; the sender fell at most {:.1} ms behind schedule); {} answered 204, {failed} failed",
        total as f64 / sending.as_secs_f64(),
        args.rate,
        sending.as_secs_f64(),
        behind.as_secs_f64() * 1000.0,
        latencies.len()
    );
    println!(
        "notify latency p50 {:.1} ms, p99 {:.1} ms",
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99)
    );
    println!(
        "append -> worker effect lag over {} events: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lags.len(),
        percentile_ms(&lags, 0.50),
        percentile_ms(&lags, 0.95),
        percentile_ms(&lags, 0.99),
        percentile_ms(&lags, 1.0)
    );
    println!(
        "  of which until the worker's handle was called: p50 {:.1} ms, p99 {:.1} ms; the last effect came {:.0} ms after the last notify answer",
        percentile_ms(&called, 0.50),
        percentile_ms(&called, 0.99),
        drained.as_secs_f64() * 1000.0
    );
    println!("  lag p99 by second of recording (ms): {by_second}");
    if let Some(mut delivered) = delivered {
        delivered.sort();
        println!(
            "  probe: delivered to a bare consumer of a quorum queue ({} events): p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            delivered.len(),
            percentile_ms(&delivered, 0.50),
            percentile_ms(&delivered, 0.95),
            percentile_ms(&delivered, 0.99),
            percentile_ms(&delivered, 1.0)
        );
    }
    let complete = arrived == expected && recorded as u64 == expected && effects as u64 == arrived;
    println!(
        "events: {expected} PaymentSucceeded expected, {recorded} in the log, {arrived} reached the worker ({effects} effect rows; runtime: {} duplicates skipped, {} requeued, {} parked){}",
        stats.duplicates(),
        stats.requeued(),
        stats.parked(),
        if complete { "" } else { " -- NOT ALL EVENTS ARRIVED" }
    );
    println!(
        "{cpu} (engine, senders and the measuring worker share one process; RabbitMQ not counted)"
    );
    ensure!(failed == 0, "{failed} notifications failed");
    ensure!(complete, "events were lost or duplicated on the way");
    Ok(())
}

/// The effect lag's p99 for the events recorded in each second of the run: whether the lag is
/// steady or grows (a backlog) as the run goes on.
fn p99_by_second(measured: &[Lag]) -> String {
    let Some(first) = measured.iter().map(|l| l.recorded_at).min() else {
        return String::new();
    };
    let mut seconds: Vec<Vec<Duration>> = Vec::new();
    for lag in measured {
        let second = (lag.recorded_at - first).num_seconds().max(0) as usize;
        if seconds.len() <= second {
            seconds.resize_with(second + 1, Vec::new);
        }
        seconds[second].push(lag.effect);
    }
    seconds
        .iter_mut()
        .map(|lags| {
            lags.sort();
            format!("{:.0}", percentile_ms(lags, 0.99))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until nothing in the log lies past the relay's checkpoint.
async fn wait_for_relay(db: &Db, timeout: Duration) -> anyhow::Result<()> {
    let store = paystream::event_store(db);
    let checkpoints = Checkpoints::new(db.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let at = checkpoints.load(RELAY_NAME).await?;
        if store.read_all(at, 1).await?.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the relay did not publish the preparation's events within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The measuring worker: an inbox row and an effect row in one transaction, then the lag.
struct LagWorker {
    db: Db,
    /// Per event: when it was recorded, the lag when `handle` was called and when the effect
    /// had committed.
    lags: Mutex<Vec<Lag>>,
    handled: AtomicU64,
}

struct Lag {
    recorded_at: chrono::DateTime<Utc>,
    called: Duration,
    effect: Duration,
}

fn lag_of(message: &EventMessage) -> Duration {
    (Utc::now() - message.recorded_at)
        .to_std()
        .unwrap_or_default()
}

#[async_trait]
impl Worker for LagWorker {
    fn name(&self) -> &'static str {
        WORKER
    }

    fn event_types(&self) -> Vec<String> {
        vec!["PaymentSucceeded".into()]
    }

    async fn handle(&self, message: &EventMessage) -> Result<Effect, HandleError> {
        let called = lag_of(message);
        let mut tx = self.db.begin_write().await?;
        if !Inbox::record(&mut tx, WORKER, message.event_id).await? {
            // A concurrent duplicate recorded it first; roll back.
            return Ok(Effect::Recorded);
        }
        sqlx::query("INSERT INTO bench_lag_effects (message_id, stream_id) VALUES ($1, $2)")
            .bind(message.event_id.to_string())
            .bind(&message.stream_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let effect = lag_of(message);
        self.lags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Lag {
                recorded_at: message.recorded_at,
                called,
                effect,
            });
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(Effect::Recorded)
    }
}

/// A consumer without acks of a quorum queue of its own bound to `PaymentSucceeded`: the lag at
/// delivery.
struct Probe {
    connection: lapin::Connection,
    task: tokio::task::JoinHandle<Vec<Duration>>,
}

const PROBE_QUEUE: &str = "bench.lag.probe";

impl Probe {
    async fn start(amqp_url: &str) -> anyhow::Result<Probe> {
        let connection = paystream_amqp::connect(amqp_url, "paystream-bench-probe").await?;
        let channel = connection.create_channel().await?;
        declare_listener(&channel, PROBE_QUEUE, &["PaymentSucceeded"]).await?;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let mut consumer = channel
            .basic_consume(PROBE_QUEUE, "probe", no_ack, FieldTable::default())
            .await?;
        let task = tokio::spawn(async move {
            let mut lags = Vec::new();
            while let Some(Ok(delivery)) = consumer.next().await {
                if let Ok(message) = EventMessage::from_body(&delivery.data) {
                    lags.push(lag_of(&message));
                }
            }
            lags
        });
        Ok(Probe { connection, task })
    }

    async fn stop(self) -> Vec<Duration> {
        let _ = self.connection.close(200, "bye").await;
        self.task.await.unwrap_or_default()
    }
}

/// Drops and creates the PostgreSQL database `url` names (through the server's `postgres`
/// database). Only a database whose name says `bench` is ever dropped.
async fn recreate_database(url: &str) -> anyhow::Result<()> {
    ensure!(
        Backend::of_url(url) == Some(Backend::Postgres),
        "bench lag needs PostgreSQL (postgres://…)"
    );
    let mut admin_url = url::Url::parse(url).context("DATABASE_URL")?;
    let name = admin_url.path().trim_start_matches('/').to_string();
    ensure!(
        name.contains("bench")
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "bench lag drops and recreates its database: name one whose name contains `bench` \
         (lower case, digits, _), not {name:?}"
    );
    admin_url.set_path("/postgres");
    let admin = Db::connect(admin_url.as_str())
        .await
        .context("connecting to the server's postgres database")?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin.pool)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin.pool)
        .await
        .context("creating the benchmark database")?;
    admin.pool.close().await;
    Ok(())
}
