//! `paystream bench relay`: the outbox relay's throughput (events/s published with confirms,
//! persistent, until its checkpoint reaches the end of the log) beside a plain lapin publisher
//! with confirms sending the same bodies on one channel, in the same run against the same queue.
//!
//! Each run uses a throwaway vhost (made with `rabbitmqctl`, so the broker must be local) holding
//! one durable quorum queue bound to everything: confirms then mean "stored", as for the workers'
//! queues. The events are appended once to a fresh database (PostgreSQL: created beside the one
//! `--database-url` names and dropped afterwards; SQLite: a temporary file).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Args;
use paystream_amqp::lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions,
};
use paystream_amqp::lapin::BasicProperties;
use paystream_amqp::relay::{properties, RELAY_NAME};
use paystream_amqp::topology::{declare_listener, EVENTS_EXCHANGE};
use paystream_amqp::{spawn_relay, RelayOptions};
use paystream_engine::consumers::EventMessage;
use paystream_engine::db::{Backend, Db};
use paystream_engine::store::{
    Checkpoint, EventStore, ExpectedVersion, NewEvent, RecordedEvent, SqlEventStore,
};
use uuid::Uuid;

#[derive(Args, Clone, Debug)]
pub struct RelayBenchArgs {
    /// PostgreSQL server (a fresh database is created beside the one named) or `sqlite:` URL.
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL")]
    pub database_url: String,
    /// The broker; each run uses a throwaway vhost on it.
    #[arg(
        long,
        env = "AMQP_URL",
        value_name = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Events appended, then published by each side.
    #[arg(long, default_value_t = 20000)]
    pub events: usize,
    /// Measurements (each: the relay, then the plain publisher).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The relay's batch size (events read and published per batch); default: the relay's own.
    #[arg(long)]
    pub batch_size: Option<i64>,
    /// Batches the relay keeps unconfirmed at once; default: the relay's own.
    #[arg(long)]
    pub batches_in_flight: Option<usize>,
}

const SINK: &str = "bench.sink";

pub async fn run(args: RelayBenchArgs) -> anyhow::Result<()> {
    ensure!(
        args.events > 0 && args.runs > 0,
        "--events and --runs must be positive"
    );
    let database = FreshDatabase::create(&args.database_url).await?;
    let result = bench(&args, &database.url).await;
    database.drop().await;
    result
}

async fn bench(args: &RelayBenchArgs, database_url: &str) -> anyhow::Result<()> {
    let db = Db::connect(database_url).await?;
    db.migrate().await?;
    let store: Arc<dyn EventStore> = Arc::new(SqlEventStore::new(db.clone()));
    let events = append_events(&store, args.events).await?;
    println!(
        "relay bench: {} events appended ({} streams, {:?}); {} runs",
        events.len(),
        args.events.div_ceil(10),
        db.backend,
        args.runs
    );
    let mut ratios = Vec::new();
    for run in 1..=args.runs {
        let vhost = Vhost::create(&args.amqp_url, "paystream-bench")?;
        let options = Options {
            batch_size: args.batch_size,
            batches_in_flight: args.batches_in_flight,
            relay_first: run % 2 == 1,
        };
        let measured = measure(&store, &db, &vhost.url, &events, &options).await;
        vhost.delete();
        let (relay, plain) = measured?;
        let (relay_rate, plain_rate) = (relay.rate(events.len()), plain.rate(events.len()));
        ratios.push(relay_rate / plain_rate);
        println!(
            "run {run}: relay {relay_rate:.0} events/s ({:.2} s, bench CPU {:.2} s), plain lapin \
             publisher {plain_rate:.0} events/s ({:.2} s, bench CPU {:.2} s), ratio {:.2}",
            relay.wall.as_secs_f64(),
            relay.cpu.as_secs_f64(),
            plain.wall.as_secs_f64(),
            plain.cpu.as_secs_f64(),
            relay_rate / plain_rate
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "ratio median {:.2} (target >= 0.80)",
        ratios[ratios.len() / 2]
    );
    Ok(())
}

/// One side's measurement: wall time, and the CPU this process spent meanwhile (the relay also
/// reads and decodes the log; the broker and the database are other processes).
struct Phase {
    wall: Duration,
    cpu: Duration,
}

impl Phase {
    fn start() -> (Instant, Duration) {
        (Instant::now(), process_cpu())
    }

    fn since((started, cpu): (Instant, Duration)) -> Phase {
        Phase {
            wall: started.elapsed(),
            cpu: process_cpu().saturating_sub(cpu),
        }
    }

    fn rate(&self, events: usize) -> f64 {
        events as f64 / self.wall.as_secs_f64()
    }
}

/// 10 events per order, appended 10 at a time.
async fn append_events(
    store: &Arc<dyn EventStore>,
    count: usize,
) -> anyhow::Result<Vec<RecordedEvent>> {
    let types = ["OrderPlaced", "PaymentRequested", "PaymentSucceeded"];
    let mut appended = Vec::with_capacity(count);
    for order in 0..count.div_ceil(10) {
        let stream = format!("bench-{order}");
        let batch = (0..10.min(count - order * 10))
            .map(|i| {
                NewEvent::new(
                    types[i % types.len()],
                    serde_json::json!({
                        "order_id": stream, "out_trade_no": format!("PS{order:012}"),
                        "total_fen": 12_800, "items": [{"sku": "tea-1", "quantity": 2}],
                    }),
                )
                .with_metadata(serde_json::json!({"correlation_id": Uuid::new_v4().to_string()}))
            })
            .collect();
        let done = store.append(&stream, ExpectedVersion::Any, batch).await?;
        appended.extend(done.events);
    }
    Ok(appended)
}

/// One run: the relay from the start of the log and the plain publisher, into the same emptied
/// (and warmed-up) queue. Odd runs measure the relay first, even runs the publisher first.
async fn measure(
    store: &Arc<dyn EventStore>,
    db: &Db,
    url: &str,
    events: &[RecordedEvent],
    options: &Options,
) -> anyhow::Result<(Phase, Phase)> {
    prepare_sink(url).await?;
    let messages: Arc<Vec<Message>> = Arc::new(
        events
            .iter()
            .map(|e| {
                let body = EventMessage::from(e).to_body();
                (e.event_type.clone(), body, properties(e))
            })
            .collect(),
    );
    let end = events
        .last()
        .map(|e| e.checkpoint)
        .unwrap_or(Checkpoint::START);
    // A new quorum queue is slower for its first few thousand messages: warm it up first.
    let warm_up = messages.len().min(5000);
    plain_publish(url, &messages[..warm_up]).await?;
    purge_sink(url).await?;
    if options.relay_first {
        let relay = time_relay(store, db, url, end, options).await?;
        purge_sink(url).await?;
        Ok((relay, time_plain(url, messages).await?))
    } else {
        let plain = time_plain(url, messages).await?;
        purge_sink(url).await?;
        Ok((time_relay(store, db, url, end, options).await?, plain))
    }
}

/// Routing key, body, properties.
type Message = (String, Vec<u8>, BasicProperties);

struct Options {
    batch_size: Option<i64>,
    batches_in_flight: Option<usize>,
    relay_first: bool,
}

/// From the relay's start until its checkpoint is the end of the log.
async fn time_relay(
    store: &Arc<dyn EventStore>,
    db: &Db,
    url: &str,
    end: Checkpoint,
    options: &Options,
) -> anyhow::Result<Phase> {
    // Each run publishes the whole log again: forget where the previous run's relay stopped.
    sqlx::query("DELETE FROM checkpoints WHERE name = $1")
        .bind(RELAY_NAME)
        .execute(&db.pool)
        .await?;
    let mut relay_options = RelayOptions::default();
    relay_options.batch_size = options.batch_size.unwrap_or(relay_options.batch_size);
    relay_options.batches_in_flight = options
        .batches_in_flight
        .unwrap_or(relay_options.batches_in_flight);
    let started = Phase::start();
    let relay = spawn_relay(store.clone(), url.to_string(), relay_options);
    let deadline = started.0 + Duration::from_secs(600);
    while relay.stats.checkpoint() != end {
        if Instant::now() > deadline {
            relay.stop().await;
            bail!("the relay did not reach the end of the log in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let phase = Phase::since(started);
    relay.stop().await;
    Ok(phase)
}

/// The plain publisher runs on a runtime worker too, as the relay does (not on the thread that
/// blocks on `main`, where waking up costs less).
async fn time_plain(url: &str, messages: Arc<Vec<Message>>) -> anyhow::Result<Phase> {
    let url = url.to_string();
    let started = Phase::start();
    tokio::spawn(async move { plain_publish(&url, &messages).await }).await??;
    Ok(Phase::since(started))
}

async fn purge_sink(url: &str) -> anyhow::Result<()> {
    let connection = paystream_amqp::connect(url, "paystream-bench").await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_purge(SINK, QueuePurgeOptions::default())
        .await?;
    let _ = connection.close(200, "bye").await;
    Ok(())
}

/// Everything published to `paystream.events` lands in one durable quorum queue.
async fn prepare_sink(url: &str) -> anyhow::Result<()> {
    let connection = paystream_amqp::connect(url, "paystream-bench").await?;
    let channel = connection.create_channel().await?;
    declare_listener(&channel, SINK, &["#"]).await?;
    let _ = connection.close(200, "bye").await;
    Ok(())
}

/// The baseline: one connection, one channel in confirm mode, every publish pipelined, then
/// every confirm awaited.
async fn plain_publish(url: &str, messages: &[Message]) -> anyhow::Result<()> {
    let connection = paystream_amqp::connect(url, "paystream-bench-plain").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut confirms = Vec::with_capacity(messages.len());
    for (routing_key, body, properties) in messages {
        confirms.push(
            channel
                .basic_publish(
                    EVENTS_EXCHANGE,
                    routing_key,
                    BasicPublishOptions::default(),
                    body,
                    properties.clone(),
                )
                .await?,
        );
    }
    for confirm in confirms {
        ensure!(confirm.await?.is_ack(), "the broker nacked a publish");
    }
    let _ = connection.close(200, "bye").await;
    Ok(())
}

/// A throwaway vhost on the broker of `base_url`, for one run (also used by `bench lag`).
pub struct Vhost {
    pub name: String,
    pub url: String,
}

impl Vhost {
    pub fn create(base_url: &str, prefix: &str) -> anyhow::Result<Vhost> {
        let name = format!("{prefix}-{}", Uuid::new_v4().simple());
        // Same scheme, credentials and host; another path (the vhost).
        let authority_end = base_url
            .find("://")
            .and_then(|s| base_url[s + 3..].find('/').map(|p| s + 3 + p))
            .unwrap_or(base_url.len());
        let url = format!("{}/{name}", &base_url[..authority_end]);
        rabbitmqctl(&["add_vhost", &name])?;
        let vhost = Vhost { name, url };
        let user = user_of(base_url);
        if let Err(e) = rabbitmqctl(&["set_permissions", "-p", &vhost.name, user, ".*", ".*", ".*"])
        {
            vhost.delete();
            return Err(e);
        }
        Ok(vhost)
    }

    pub fn delete(&self) {
        if let Err(e) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!("could not delete vhost {}: {e}", self.name);
        }
    }
}

fn user_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match rest.split_once('@') {
        Some((credentials, _)) => credentials.split(':').next().unwrap_or("guest"),
        None => "guest",
    }
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("running rabbitmqctl (the RabbitMQ benchmarks need a local broker)")?;
    ensure!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A database for this benchmark only (also `bench rebuild`'s).
pub(crate) struct FreshDatabase {
    pub(crate) url: String,
    admin: Option<(String, String)>,
}

impl FreshDatabase {
    pub(crate) async fn create(url: &str) -> anyhow::Result<FreshDatabase> {
        match Backend::of_url(url) {
            Some(Backend::Postgres) => {
                let name = format!("paystream_bench_relay_{}", Uuid::new_v4().simple());
                let admin = Db::connect(url).await?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&admin.pool)
                    .await
                    .context("creating the benchmark database")?;
                admin.pool.close().await;
                let base = url.split('?').next().unwrap_or(url);
                let base = base.rsplit_once('/').map(|(b, _)| b).unwrap_or(base);
                Ok(FreshDatabase {
                    url: format!("{base}/{name}"),
                    admin: Some((url.to_string(), name)),
                })
            }
            Some(Backend::Sqlite) => {
                let path = std::env::temp_dir().join(format!(
                    "paystream-bench-relay-{}.db",
                    Uuid::new_v4().simple()
                ));
                Ok(FreshDatabase {
                    url: format!("sqlite://{}", path.display()),
                    admin: None,
                })
            }
            None => bail!("DATABASE_URL must start with postgres:// or sqlite:"),
        }
    }

    pub(crate) async fn drop(self) {
        match self.admin {
            Some((admin, name)) => {
                if let Ok(db) = Db::connect(&admin).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(&drop).execute(&db.pool).await;
                    db.pool.close().await;
                }
            }
            None => {
                let path = self.url.trim_start_matches("sqlite://");
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{path}{suffix}"));
                }
            }
        }
    }
}

/// CPU time (user + system) of this process so far; zero where /proc is not there.
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}
