//! Wiring: builds the services from settings, serves HTTP, runs the background jobs.

pub mod config;
pub mod jobs;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use paystream_engine::accounts::Accounts;
use paystream_engine::catalogue::Catalogue;
use paystream_engine::consumers::from_log;
use paystream_engine::db::Db;
use paystream_engine::orders::OrderService;
use paystream_engine::payments::gateway::PayGateway;
use paystream_engine::payments::Payments;
use paystream_engine::store::{EventStore, SqlEventStore};
use paystream_engine::subscriptions::Subscriptions;
use paystream_http::{AppState, Services, Tokens};
use paystream_projections::{Checks, OrdersProjection, OrdersView};
use paystream_sandbox::{PaySandboxConfig, Sandbox, SandboxConfig};
use paystream_wechat::MiniProgramClient;
use paystream_wechatpay::client::{V3Client, V3Config};
use paystream_wechatpay::v3::keys::{load_public_key_pem, MerchantPrivateKey};
use paystream_wechatpay::ApiV3Key;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{MiniProgramMode, Settings, WechatPaySettings, SANDBOX_APPID, SANDBOX_SECRET};

/// The event store with every inline projection attached.
pub fn event_store(db: &Db) -> Arc<dyn EventStore> {
    Arc::new(SqlEventStore::new(db.clone()).with_projection(Arc::new(OrdersProjection)))
}

pub async fn connect(database_url: &str) -> anyhow::Result<Db> {
    let db = Db::connect(database_url)
        .await
        .with_context(|| format!("DATABASE_URL={}", redact(database_url)))?;
    db.migrate().await.context("applying migrations")?;
    Ok(db)
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// A running engine: its address and the handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub db: Db,
    pub payments: Payments,
    pub sandbox: Option<Sandbox>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting requests, lets in-flight ones and jobs finish, and waits for them.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.db.pool.close().await;
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Starts the engine: migrates, binds, serves, and (unless told not to) runs the jobs.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let mode = settings.mini_program().map_err(|e| anyhow!(e))?;
    let admin = settings.admin_account().map_err(|e| anyhow!(e))?;
    let wechatpay = settings.wechatpay().map_err(|e| anyhow!(e))?;
    let templates = Arc::new(settings.templates().map_err(|e| anyhow!(e))?);
    let amqp_url = settings.amqp().map_err(|e| anyhow!(e))?;
    let db = connect(&settings.db.database_url).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen_addr)
        .await
        .with_context(|| format!("LISTEN_ADDR={}: cannot listen", settings.listen_addr))?;
    let addr = listener.local_addr()?;
    let local_base = format!("http://{}", loopback(addr));

    let accounts = Accounts::new(db.clone());
    if let Some((username, password)) = admin {
        let created = accounts
            .ensure_admin(&username, SecretString::from(password))
            .await
            .context("ADMIN_USERNAME/ADMIN_PASSWORD: cannot create the bootstrap admin")?;
        if created {
            tracing::info!(username, "bootstrap admin account created");
        }
    }

    let appid = match &mode {
        MiniProgramMode::Remote { appid, .. } => appid.clone(),
        MiniProgramMode::InProcessSandbox => SANDBOX_APPID.to_string(),
    };
    // The simulator runs in-process whenever part of WeChat is not configured.
    let sandbox = (mode == MiniProgramMode::InProcessSandbox || wechatpay.is_none()).then(|| {
        Sandbox::new(SandboxConfig {
            appid: appid.clone(),
            secret: SANDBOX_SECRET.into(),
            pay: PaySandboxConfig {
                notify_time_scale: settings.sandbox_notify_time_scale,
                ..PaySandboxConfig::default()
            },
        })
    });
    let sandbox_base = format!("{local_base}/sandbox");

    if mode == MiniProgramMode::InProcessSandbox {
        tracing::warn!(
            "SANDBOX MODE: WECHAT_APPID is unset, logins go to the built-in WeChat simulator \
             at {sandbox_base} — no real WeChat user can log in"
        );
    }
    // One client for every mini-program API, so all of them share one access-token cache.
    let wechat = mini_program_client(&mode, &sandbox_base);
    let public_base_url = settings
        .public_base_url
        .as_ref()
        .map(|u| u.to_string())
        .unwrap_or_else(|| local_base.clone());
    let notify_url = format!(
        "{}{}",
        public_base_url.trim_end_matches('/'),
        paystream_http::WECHATPAY_V3_PATH
    );
    let v3 = match (wechatpay, &sandbox) {
        (Some(merchant), _) => {
            tracing::info!(mchid = %merchant.mchid, api_base = %merchant.api_base, "WeChat Pay configured");
            wechatpay_client(merchant, &appid, notify_url, &settings)?
        }
        (None, Some(sandbox)) => {
            tracing::warn!(
                "SANDBOX MODE: WECHATPAY_MCHID is unset, payments go to the built-in WeChat Pay \
                 simulator at {sandbox_base} — no real money moves"
            );
            sandbox_client(sandbox, &sandbox_base, notify_url, &settings)?
        }
        (None, None) => unreachable!("a sandbox exists whenever WeChat Pay is not configured"),
    };
    let v3 = Arc::new(v3);
    let certificates_client = v3.clone();

    let store = event_store(&db);
    let orders = OrderService::new(store.clone()).with_cards(wechat.clone());
    let subscriptions = Subscriptions::new(db.clone());
    let worker_deps = workers::WorkerDeps {
        orders: orders.clone(),
        subscriptions: subscriptions.clone(),
        sender: wechat.clone(),
        cards: wechat.clone(),
        templates,
    };
    let orders_view = OrdersView::new(db.clone());
    let payments = Payments::new(db.clone(), orders.clone(), vec![v3 as Arc<dyn PayGateway>]);
    let running_payments = payments.clone();
    let secret = accounts.token_secret().await?;
    let state = AppState::new(Services {
        db: db.clone(),
        orders: orders.clone(),
        payments: payments.clone(),
        orders_view: orders_view.clone(),
        catalogue: Catalogue::new(db.clone()),
        accounts,
        mini_program: wechat.clone(),
        cards: wechat.clone(),
        subscriptions,
        broker: amqp_url.clone().map(|url| {
            Arc::new(workers::AmqpBroker { url }) as Arc<dyn paystream_engine::consumers::Broker>
        }),
        tokens: Tokens::new(secret.expose_secret().as_bytes()),
        order_ttl: chrono::Duration::seconds(i64::from(settings.order_ttl_seconds)),
        customer_session_ttl: chrono::Duration::seconds(i64::from(settings.session_ttl_seconds)),
        staff_session_ttl: chrono::Duration::seconds(i64::from(settings.staff_session_ttl_seconds)),
    });
    let mut app = paystream_http::router(state);
    if let Some(sandbox) = &sandbox {
        app = app.nest("/sandbox", paystream_sandbox::router(sandbox.clone()));
    }

    let (shutdown, signal) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut server_signal = signal.clone();
    tasks.push(tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_signal.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }));
    // After the server is up (in sandbox mode the certificates come from this very process),
    // then on a timer, so a rotation is known before the new certificate signs anything.
    tasks.push(tokio::spawn(jobs::certificate_refresh_loop(
        certificates_client,
        std::time::Duration::from_secs(u64::from(settings.wechatpay_cert_refresh_hours) * 3600),
        signal.clone(),
    )));
    if !settings.no_background_jobs {
        match &amqp_url {
            // The log is the outbox: the relay publishes it, `paystream worker …` consumes.
            Some(url) => tasks.push(tokio::spawn(paystream_amqp::run_relay(
                store.clone(),
                url.clone(),
                paystream_amqp::RelayOptions {
                    // Declared here too, so events published before a worker first runs wait
                    // in its queue.
                    queues: workers::all(&worker_deps)
                        .iter()
                        .map(|w| paystream_amqp::QueueSpec::of(w.as_ref()))
                        .collect(),
                    ..paystream_amqp::RelayOptions::default()
                },
                signal.clone(),
            ))),
            None => {
                for worker in workers::all(&worker_deps) {
                    tasks.push(tokio::spawn(from_log::run(
                        worker,
                        store.clone(),
                        signal.clone(),
                    )));
                }
            }
        }
        tasks.push(tokio::spawn(jobs::expiry_loop(
            payments.clone(),
            orders_view,
            Checks::new(db.clone()),
            std::time::Duration::from_secs(u64::from(settings.expiry_interval_seconds)),
            signal.clone(),
        )));
        tasks.push(tokio::spawn(jobs::reconcile_loop(
            payments,
            Checks::new(db.clone()),
            jobs::ReconcileTiming {
                payment_after: chrono::Duration::seconds(i64::from(
                    settings.payment_query_after_seconds,
                )),
                refund_after: chrono::Duration::seconds(i64::from(
                    settings.refund_query_after_seconds,
                )),
            },
            signal.clone(),
        )));
    }
    tracing::info!(%addr, backend = ?db.backend, "paystream listening");
    Ok(Running {
        addr,
        db,
        payments: running_payments,
        sandbox,
        shutdown,
        tasks,
    })
}

fn read_file(path: &std::path::Path, variable: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("{variable}={}: cannot read", path.display()))
}

/// The client for a real merchant, from files and settings.
fn wechatpay_client(
    merchant: WechatPaySettings,
    appid: &str,
    notify_url: String,
    settings: &Settings,
) -> anyhow::Result<V3Client> {
    let key = MerchantPrivateKey::from_pem(&read_file(
        &merchant.private_key,
        "WECHATPAY_MCH_PRIVATE_KEY",
    )?)
    .map_err(|e| anyhow!("WECHATPAY_MCH_PRIVATE_KEY: {e}"))?;
    let public_key = match &merchant.public_key {
        Some((id, path)) => Some((
            id.clone(),
            load_public_key_pem(&read_file(path, "WECHATPAY_PUBLIC_KEY")?)
                .map_err(|e| anyhow!("WECHATPAY_PUBLIC_KEY: {e}"))?,
        )),
        None => None,
    };
    Ok(V3Client::new(V3Config {
        api_base: merchant.api_base,
        mchid: merchant.mchid,
        appid: appid.to_string(),
        merchant_serial: merchant.serial,
        merchant_key: key,
        apiv3_key: ApiV3Key::new(&merchant.apiv3_key)
            .map_err(|e| anyhow!("WECHATPAY_APIV3_KEY: {e}"))?,
        public_key,
        notify_url,
        certificate_refetch_interval: std::time::Duration::from_secs(u64::from(
            settings.wechatpay_cert_refetch_seconds,
        )),
        refund_lag_grace: std::time::Duration::from_secs(u64::from(
            settings.wechatpay_refund_lag_seconds,
        )),
    }))
}

/// The client for the in-process simulator's merchant. The simulator starts in WeChat's
/// migration mode (notifications signed by a platform certificate or the public key, at
/// random), so the client holds both, as a merchant in the migration must.
fn sandbox_client(
    sandbox: &Sandbox,
    base: &str,
    notify_url: String,
    settings: &Settings,
) -> anyhow::Result<V3Client> {
    let merchant = sandbox.merchant();
    let public_key = (
        merchant.public_key_id.clone(),
        load_public_key_pem(&merchant.public_key_pem)?,
    );
    Ok(V3Client::new(V3Config {
        api_base: base.to_string(),
        mchid: merchant.mchid.clone(),
        appid: merchant.appid.clone(),
        merchant_serial: merchant.merchant_serial.clone(),
        merchant_key: MerchantPrivateKey::from_pem(&merchant.merchant_private_key_pem)?,
        apiv3_key: ApiV3Key::new(&merchant.apiv3_key)?,
        public_key: Some(public_key),
        notify_url,
        certificate_refetch_interval: std::time::Duration::from_secs(u64::from(
            settings.wechatpay_cert_refetch_seconds,
        )),
        refund_lag_grace: std::time::Duration::from_secs(u64::from(
            settings.wechatpay_refund_lag_seconds,
        )),
    }))
}

/// The mini-program API client for this mode (the in-process simulator sits under `/sandbox`).
pub fn mini_program_client(mode: &MiniProgramMode, sandbox_base: &str) -> Arc<MiniProgramClient> {
    Arc::new(match mode {
        MiniProgramMode::InProcessSandbox => MiniProgramClient::new(
            sandbox_base,
            SANDBOX_APPID,
            SecretString::from(SANDBOX_SECRET),
        ),
        MiniProgramMode::Remote {
            base,
            appid,
            secret,
        } => {
            tracing::info!(api_base = %base, appid, "mini-program API configured");
            MiniProgramClient::new(base, appid, SecretString::from(secret.clone()))
        }
    })
}

/// The address this process can reach itself on (0.0.0.0 is not an address to connect to).
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// `paystream worker <kind>`: one worker consuming its RabbitMQ queue until `stop` turns true.
pub async fn run_worker(
    kind: workers::WorkerKind,
    settings: Settings,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mode = settings.mini_program().map_err(|e| anyhow!(e))?;
    let templates = Arc::new(settings.templates().map_err(|e| anyhow!(e))?);
    let amqp_url = settings.amqp().map_err(|e| anyhow!(e))?.ok_or_else(|| {
        anyhow!("AMQP_URL must be set: without a broker the workers run inside `paystream serve`")
    })?;
    let db = connect(&settings.db.database_url).await?;
    // In sandbox mode the simulator lives in the engine process, at LISTEN_ADDR.
    let sandbox_base = format!("http://{}/sandbox", loopback(settings.listen_addr));
    if mode == MiniProgramMode::InProcessSandbox {
        tracing::warn!("SANDBOX MODE: WECHAT_APPID is unset, the worker calls the engine's WeChat simulator at {sandbox_base}");
    }
    let wechat = mini_program_client(&mode, &sandbox_base);
    let store = event_store(&db);
    let deps = workers::WorkerDeps {
        orders: OrderService::new(store).with_cards(wechat.clone()),
        subscriptions: Subscriptions::new(db.clone()),
        sender: wechat.clone(),
        cards: wechat,
        templates,
    };
    let worker = workers::build(kind, &deps);
    tracing::info!(worker = worker.name(), "worker consuming from RabbitMQ");
    paystream_amqp::run_worker(
        worker,
        db.clone(),
        amqp_url,
        paystream_amqp::WorkerOptions::default(),
        stop,
    )
    .await;
    db.pool.close().await;
    Ok(())
}
