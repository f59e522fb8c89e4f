//! `paystream bench append|notify|lag|relay|rebuild`: the benchmarks of docs/benchmarks.md.
//!
//! `append` runs single-event appends from concurrent writers, beside pgbench running an
//! equivalent two-statement transaction on the same server, so the figures can be compared;
//! `notify` is in `bench_notify`, `lag` in `bench_lag`, `relay` in `bench_relay`, `rebuild` in
//! `bench_rebuild`, `reconcile` in `bench_reconcile`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use paystream_engine::store::{EventStore, ExpectedVersion, NewEvent};
use serde_json::json;

#[derive(Args)]
pub struct BenchArgs {
    /// What to measure: `append`, `notify`, `lag`, `relay`, `rebuild` or `reconcile`.
    #[arg(default_value = "append")]
    pub what: String,
    /// A PostgreSQL URL; the benchmark creates and drops its own tables' rows there.
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL")]
    pub database_url: String,
    /// Concurrent writers (append) or notification senders (notify).
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// How long each measurement runs, in seconds (append and pgbench).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Distinct paid orders whose notifications are sent (notify, lag).
    #[arg(long, default_value_t = 2000)]
    pub orders: usize,
    /// Notifications sent per second, each appending one PaymentSucceeded (lag).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// RabbitMQ (lag, relay): a local broker, each run uses a throwaway vhost on it.
    #[arg(
        long,
        env = "AMQP_BENCH_URL",
        value_name = "AMQP_BENCH_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Also time each event's delivery to a bare consumer of a quorum queue of its own (lag): the
    /// relay's and the broker's share of the lag, without the worker's.
    #[arg(long)]
    pub probe: bool,
    /// Events in the log `rebuild` replays.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Payments of the day `reconcile` reconciles.
    #[arg(long, default_value_t = 100_000)]
    pub payments: usize,
    /// Skip the pgbench baseline.
    #[arg(long)]
    pub no_pgbench: bool,
    /// `relay`'s own options (`--events`, `--runs`, …), after `--`; `-- --help` lists them.
    #[arg(last = true, value_name = "RELAY_OPTIONS")]
    pub relay_options: Vec<String>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what.as_str() {
        "append" => run_append(&args).await,
        "notify" => crate::bench_notify::run(&args).await,
        "lag" => crate::bench_lag::run(&args).await,
        "relay" => run_relay(&args).await,
        "rebuild" => crate::bench_rebuild::run(&args).await,
        "reconcile" => crate::bench_reconcile::run(&args).await,
        other => bail!(
            "unknown benchmark {other:?} (known: append, notify, lag, relay, rebuild, reconcile)"
        ),
    }
}

/// `bench relay`: its own arguments (bench_relay.rs), with this command's database and broker.
async fn run_relay(args: &BenchArgs) -> anyhow::Result<()> {
    use clap::Parser;

    #[derive(Parser)]
    #[command(name = "paystream bench relay --database-url … --")]
    struct RelayCli {
        #[command(flatten)]
        args: crate::bench_relay::RelayBenchArgs,
    }
    let argv = [
        "paystream bench relay".to_string(),
        "--database-url".into(),
        args.database_url.clone(),
        "--amqp-url".into(),
        args.amqp_url.clone(),
    ]
    .into_iter()
    .chain(args.relay_options.iter().cloned());
    let cli = RelayCli::try_parse_from(argv).unwrap_or_else(|e| e.exit());
    crate::bench_relay::run(cli.args).await
}

async fn run_append(args: &BenchArgs) -> anyhow::Result<()> {
    let db = paystream::connect(&args.database_url).await?;
    let store = paystream::event_store(&db);
    let ours = append_rate(store, args.writers, args.seconds).await?;
    println!(
        "paystream append: {ours:.0} events/s ({} writers, {} s, single-event appends with expected version)",
        args.writers, args.seconds
    );
    if !args.no_pgbench {
        let baseline = pgbench(args).context("running pgbench")?;
        println!(
            "pgbench two-row insert transaction: {baseline:.0} tps ({} clients, {} s)",
            args.writers, args.seconds
        );
        println!("ratio: {:.2}", ours / baseline);
    }
    Ok(())
}

async fn append_rate(
    store: Arc<dyn EventStore>,
    writers: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let deadline = Instant::now() + std::time::Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = store.clone();
        let stream = format!("bench-{run}-{writer}");
        tasks.push(tokio::spawn(async move {
            let mut version = 0_i64;
            while Instant::now() < deadline {
                let event = NewEvent::new("BenchEvent", json!({ "n": version, "writer": writer }));
                store
                    .append(&stream, ExpectedVersion::Exact(version), vec![event])
                    .await?;
                version += 1;
            }
            anyhow::Ok(version)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The baseline the issue asks for: a two-row insert transaction into an events-like table
/// (identity position, JSONB data, xid8, UNIQUE (stream_id, version)), as pgbench runs it.
pub fn pgbench(args: &BenchArgs) -> anyhow::Result<f64> {
    let script = std::env::temp_dir().join(format!("paystream-bench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "\\set w random(1, 1000000000)\n\
         BEGIN;\n\
         INSERT INTO bench_events (stream_id, version, data) VALUES ('pgbench-' || :w || '-' || :client_id, 1, '{\"n\":1}') ON CONFLICT DO NOTHING;\n\
         INSERT INTO bench_events (stream_id, version, data) VALUES ('pgbench-' || :w || '-' || :client_id, 2, '{\"n\":2}') ON CONFLICT DO NOTHING;\n\
         END;\n",
    )?;
    let setup = "CREATE TABLE IF NOT EXISTS bench_events (position BIGINT GENERATED ALWAYS AS IDENTITY \
                 PRIMARY KEY, stream_id TEXT NOT NULL, version BIGINT NOT NULL, data JSONB NOT NULL, \
                 tx XID8 NOT NULL DEFAULT pg_current_xact_id(), UNIQUE (stream_id, version))";
    let status = std::process::Command::new("psql")
        .args([&args.database_url, "-qc", setup])
        .status()?;
    if !status.success() {
        bail!("psql could not create the pgbench table");
    }
    let output = std::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &args.writers.to_string(),
            "-j",
            "2",
            "-T",
            &args.seconds.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(&args.database_url)
        .output()?;
    let _ = std::fs::remove_file(&script);
    let _ = std::process::Command::new("psql")
        .args([&args.database_url, "-qc", "DROP TABLE bench_events"])
        .status();
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .with_context(|| {
            format!(
                "no tps in pgbench output: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}
