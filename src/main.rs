//! `paystream`: the engine binary. See contract.md for subcommands and settings.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Parser, Subcommand};
use paystream::config::{DbSettings, Settings, SANDBOX_APPID, SANDBOX_SECRET};
use paystream_sandbox::{PaySandboxConfig, Sandbox, SandboxConfig};
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
mod bench_relay;
mod demo;
mod rebuild_cli;

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
    /// Measure the event store (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
    /// A scripted checkout against the built-in simulator, printing each step.
    Demo(demo::DemoArgs),
}

/// lapin logs every broken connection as ERROR lines of its own; the relay and the workers log
/// the same event once, with back-off, so lapin's are off unless RUST_LOG asks for them.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info,lapin=off"));
    // Colours only on a terminal: a log file or a collector should not get escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> std::process::ExitCode {
    init_logging();
    let cli = Cli::parse();
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
            let running = paystream::start(*settings).await?;
            shutdown_signal().await;
            tracing::info!("shutting down");
            running.stop().await;
        }
        Command::Worker { kind, settings } => {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let mut worker = tokio::spawn(paystream::run_worker(kind, *settings, stopped));
            tokio::select! {
                result = &mut worker => return result?,
                () = shutdown_signal() => {}
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
            // What an engine needs to reach APIv2's secapi here, as files it can point at.
            let merchant = sandbox.merchant();
            let files = tempfile::Builder::new()
                .prefix("paystream-sandbox-")
                .tempdir()?;
            for (name, pem) in [
                ("secapi_ca.pem", &merchant.secapi_ca_pem),
                ("apiclient_cert.pem", &merchant.apiv2_client_cert_pem),
                ("apiclient_key.pem", &merchant.apiv2_client_key_pem),
            ] {
                std::fs::write(files.path().join(name), pem)?;
            }
            let dir = files.path().display();
            tracing::warn!(
                %listen_addr, appid = SANDBOX_APPID,
                "WeChat simulator running; point WECHAT_API_BASE and WECHATPAY_API_BASE at \
                 http://{listen_addr}; the merchant's ids and keys: GET \
                 http://{listen_addr}/control/wechatpay/merchant. APIv2 refunds: \
                 WECHATPAY_V2_SECAPI_BASE=https://{secapi_addr} WECHATPAY_V2_ROOT_CA={dir}/secapi_ca.pem \
                 WECHATPAY_V2_CLIENT_CERT={dir}/apiclient_cert.pem \
                 WECHATPAY_V2_CLIENT_KEY={dir}/apiclient_key.pem"
            );
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
                .with_graceful_shutdown(shutdown_signal())
                .await?;
            let _ = stop.send(true);
            secapi_server.await??;
        }
        Command::RebuildProjections(db) => rebuild_cli::run(&db.database_url).await?,
        Command::Bench(args) => bench::run(args).await?,
        Command::Demo(args) => demo::run(args).await?,
    }
    Ok(())
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
