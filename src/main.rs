//! `paystream`: the engine binary. See contract.md for subcommands and settings.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use paystream::config::{DbSettings, Settings, SANDBOX_APPID, SANDBOX_SECRET};
use paystream_sandbox::{PaySandboxConfig, Sandbox, SandboxConfig};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

/// glibc's allocator spends a tenth of the CPU on the notify hot path in lock contention and
/// consolidation between tokio's worker threads (see docs/benchmarks.md); mimalloc's per-thread
/// heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod api_client;
mod bench;
mod bench_cpu;
mod bench_lag;
mod bench_notify;
mod bench_rebuild;
mod bench_reconcile;
mod bench_relay;
mod demo;
mod rebuild_cli;
mod reconcile_cli;

#[derive(Parser)]
#[command(
    name = "paystream",
    version,
    about = "Event-sourced order and payment engine for WeChat mini-programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP API, back-office and background jobs (the default).
    Serve(Box<Settings>),
    /// Run one of the RabbitMQ consumers (needs AMQP_URL).
    Worker {
        #[arg(value_enum)]
        kind: paystream::workers::WorkerKind,
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Apply database migrations and exit.
    Migrate(DbSettings),
    /// Run the WeChat simulator on its own.
    Sandbox {
        #[arg(
            long,
            env = "SANDBOX_LISTEN_ADDR",
            value_name = "SANDBOX_LISTEN_ADDR",
            default_value = "127.0.0.1:8081"
        )]
        listen_addr: SocketAddr,
    },
    /// Drop every read model and replay it from the event log, with progress on stderr. Meant
    /// for a stopped engine; a running one waits for it on PostgreSQL (see README).
    RebuildProjections(DbSettings),
    /// Reconcile one Beijing day against WeChat Pay's trade and refund bills, with progress on
    /// stderr and the report on stdout. Settings as `serve` (same database and WeChat Pay; in
    /// sandbox mode, the simulator of the engine running at LISTEN_ADDR).
    Reconcile {
        /// The Beijing day, YYYY-MM-DD.
        #[arg(long, value_name = "YYYY-MM-DD")]
        date: chrono::NaiveDate,
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Measure the event store (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
    /// A scripted checkout against the built-in simulator, printing each step.
    Demo(demo::DemoArgs),
}

/// lapin logs every broken connection as ERROR lines of its own; the relay and the workers log
/// the same event once, with back-off, so lapin's are off unless RUST_LOG asks for them.
/// `quiet` (the demo, unless `--verbose`): only errors, so the output is the demo's own steps;
/// RUST_LOG, when set, wins either way.
/// `report`: the command's stdout is its result (a reconciliation report, a rebuild's summary),
/// so log lines go to stderr.
fn init_logging(quiet: bool, report: bool) {
    let default = if quiet {
        "error,lapin=off"
    } else {
        "info,sqlx=warn,tower_http=info,lapin=off"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal: a log file or a collector should not get escape codes.
    let (writer, terminal) = if report {
        (
            BoxMakeWriter::new(std::io::stderr),
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
    } else {
        (
            BoxMakeWriter::new(std::io::stdout),
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
        )
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(terminal);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Resolves on the first Ctrl-C or SIGTERM. The SIGTERM handler is registered when this is
/// called, not when the future is first polled: a server hands the future to a task of its own,
/// and a SIGTERM arriving before that task ran would otherwise kill the process outright.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(
        matches!(&cli.command, Some(Command::Demo(args)) if !args.verbose),
        matches!(
            &cli.command,
            Some(Command::Reconcile { .. } | Command::RebuildProjections(_))
        ),
    );
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (with its causes) for the operator, no backtrace.
            eprintln!("paystream: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = match cli.command {
        Some(command) => command,
        // `serve` is the default: parse its settings from the environment alone.
        None => Command::Serve(Box::new(Settings::parse_from_env())),
    };
    match command {
        Command::Serve(settings) => {
            // Registered before start-up: a SIGTERM during it still stops the engine cleanly.
            let shutdown = shutdown_signal();
            let running = paystream::start(*settings).await?;
            shutdown.await;
            tracing::info!("shutting down");
            running.stop().await;
        }
        Command::Worker { kind, settings } => {
            let shutdown = shutdown_signal();
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let mut worker = tokio::spawn(paystream::run_worker(kind, *settings, stopped));
            tokio::select! {
                result = &mut worker => return result?,
                () = shutdown => {}
            }
            tracing::info!("stopping: finishing messages in hand");
            let _ = stop.send(true);
            worker.await??;
        }
        Command::Migrate(db) => {
            paystream::connect(&db.database_url).await?;
            println!(
                "migrations applied to {}",
                paystream::redact(&db.database_url)
            );
        }
        Command::Sandbox { listen_addr } => {
            let sandbox = Sandbox::new(SandboxConfig {
                appid: SANDBOX_APPID.into(),
                secret: SANDBOX_SECRET.into(),
                pay: PaySandboxConfig::default(),
            });
            let listener = tokio::net::TcpListener::bind(listen_addr)
                .await
                .with_context(|| format!("SANDBOX_LISTEN_ADDR={listen_addr}: cannot listen"))?;
            // WeChat takes `/secapi/...` (v2 refunds) only over mutual TLS: on a port of its own.
            let secapi = tokio::net::TcpListener::bind(SocketAddr::new(listen_addr.ip(), 0))
                .await
                .context("sandbox secapi: cannot listen")?;
            let secapi_addr = secapi.local_addr()?;
            // Everything an engine needs to use this simulator: its addresses, and its
            // credentials with the keys as files an engine can point at.
            let merchant = sandbox.merchant();
            let files = tempfile::Builder::new()
                .prefix("paystream-sandbox-")
                .tempdir()?;
            let write = |name: &str, pem: &str| -> std::io::Result<String> {
                let path = files.path().join(name);
                std::fs::write(&path, pem)?;
                Ok(path.display().to_string())
            };
            let merchant_key = write("apiclient_key.pem", &merchant.merchant_private_key_pem)?;
            let client_cert = write("apiclient_cert.pem", &merchant.apiv2_client_cert_pem)?;
            // The same key as the merchant API key (one certificate serves both APIs).
            let client_key = write("apiv2_client_key.pem", &merchant.apiv2_client_key_pem)?;
            let public_key = write("pub_key.pem", &merchant.public_key_pem)?;
            let secapi_ca = write("secapi_ca.pem", &merchant.secapi_ca_pem)?;
            let base = format!("http://{}", paystream::loopback(listener.local_addr()?));
            let secapi_base = format!("https://{}", paystream::loopback(secapi_addr));
            tracing::warn!(%base, "WeChat simulator running on its own; its settings for an engine are on stdout");
            let exports = [
                ("WECHAT_APPID", SANDBOX_APPID.to_string()),
                ("WECHAT_SECRET", SANDBOX_SECRET.to_string()),
                ("WECHAT_API_BASE", base.clone()),
                ("WECHATPAY_API_BASE", base.clone()),
                ("WECHATPAY_MCHID", merchant.mchid.clone()),
                ("WECHATPAY_APIV3_KEY", merchant.apiv3_key.clone()),
                ("WECHATPAY_MCH_SERIAL", merchant.merchant_serial.clone()),
                ("WECHATPAY_MCH_PRIVATE_KEY", merchant_key),
                ("WECHATPAY_PUBLIC_KEY_ID", merchant.public_key_id.clone()),
                ("WECHATPAY_PUBLIC_KEY", public_key),
                ("WECHATPAY_API_KEY", merchant.apiv2_key.clone()),
                ("WECHATPAY_V2_SECAPI_BASE", secapi_base.clone()),
                ("WECHATPAY_V2_ROOT_CA", secapi_ca),
                ("WECHATPAY_V2_CLIENT_CERT", client_cert),
                ("WECHATPAY_V2_CLIENT_KEY", client_key),
            ];
            // Before the settings say the simulator is up: a SIGTERM from then on stops it cleanly.
            let shutdown = shutdown_signal();
            println!("paystream sandbox: the WeChat simulator on its own (mini-program APIs, WeChat Pay v2 and v3)");
            println!();
            println!("  base URL     {base}   (WeChat's paths at the root: /sns/jscode2session, /v3/..., /pay/...)");
            println!("  control API  {base}/control/...   (e.g. curl '{base}/control/login-code?user=alice')");
            println!("  APIv2 secapi {secapi_base}   (mutual TLS, v2 refunds)");
            println!("  mini-program appid {SANDBOX_APPID}, appsecret {SANDBOX_SECRET}");
            println!();
            println!("These credentials are the simulator's own and open nothing at WeChat: the appid and");
            println!("appsecret are fixed sandbox values, the merchant's keys were generated at this start and");
            println!(
                "their PEM files ({}) are deleted when it stops. To run an engine",
                files.path().display()
            );
            println!("against this simulator, paste these lines into its shell, then start it:");
            println!();
            for (name, value) in exports {
                println!("export {name}={}", shell_quote(&value));
            }
            println!();
            println!("Ctrl-C stops the simulator.");
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let secapi_server = {
                let sandbox = sandbox.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    sandbox
                        .serve_secapi(secapi, async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        })
                        .await
                })
            };
            axum::serve(listener, paystream_sandbox::router(sandbox))
                .with_graceful_shutdown(shutdown)
                .await?;
            let _ = stop.send(true);
            secapi_server.await??;
        }
        Command::RebuildProjections(db) => rebuild_cli::run(&db.database_url).await?,
        Command::Reconcile { date, settings } => reconcile_cli::run(&settings, date).await?,
        Command::Bench(args) => bench::run(args).await?,
        Command::Demo(args) => demo::run(args).await?,
    }
    Ok(())
}

/// `value` as one POSIX shell word (quoted only when it needs to be).
fn shell_quote(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-:+=,@%".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

trait FromEnv {
    fn parse_from_env() -> Self;
}

impl FromEnv for Settings {
    fn parse_from_env() -> Settings {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            settings: Settings,
        }
        Only::parse_from(["paystream"]).settings
    }
}
