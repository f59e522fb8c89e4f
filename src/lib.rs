//! Wiring: builds the services from settings, serves HTTP, runs the background jobs.

pub mod config;
pub mod jobs;
pub mod reconcile_job;
pub mod server;
pub mod telemetry;
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
use paystream_engine::reconciliation::{Reconciler, Reports};
use paystream_engine::store::{EventStore, SqlEventStore};
use paystream_engine::subscriptions::Subscriptions;
use paystream_http::{AppState, Services, Tokens};
use paystream_projections::{Checks, OrdersView};
use paystream_sandbox::{PaySandboxConfig, Sandbox, SandboxConfig};
use paystream_wechat::MiniProgramClient;
use paystream_wechatpay::client::{ClientCertificate, V2Client, V2Config, V3Client, V3Config};
use paystream_wechatpay::v2::sign::SignType;
use paystream_wechatpay::v3::keys::{load_public_key_pem, MerchantPrivateKey};
use paystream_wechatpay::{ApiV2Key, ApiV3Key};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{
    MiniProgramMode, Settings, WechatPaySettings, WechatPayV3Settings, SANDBOX_APPID,
    SANDBOX_SECRET,
};

/// The event store with every inline projection attached (the ones a rebuild replays).
pub fn event_store(db: &Db) -> Arc<dyn EventStore> {
    let store = paystream_projections::inline_projections()
        .into_iter()
        .fold(
            SqlEventStore::new(db.clone()),
            SqlEventStore::with_projection,
        );
    Arc::new(store)
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
    /// Reconciles a day against the bills (what `reconcile --date` and the daily job run).
    pub reconciler: Reconciler,
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

/// Logged at start-up when no staff account exists and none is configured: nobody could log in
/// to the back-office.
pub const NO_STAFF_HINT: &str = "no staff account exists, so nobody can log in to the \
    back-office: set ADMIN_USERNAME and ADMIN_PASSWORD and restart to create an admin account";

/// Starts the engine: migrates, binds, serves, and (unless told not to) runs the jobs.
pub async fn start(settings: Settings) -> anyhow::Result<Running> {
    let (mode, wechatpay) = settings.wechat().map_err(|e| anyhow!(e))?;
    let admin = settings.admin_account().map_err(|e| anyhow!(e))?;
    let templates = Arc::new(settings.templates().map_err(|e| anyhow!(e))?);
    let amqp_url = settings.amqp().map_err(|e| anyhow!(e))?;
    let db = connect(&settings.db.database_url).await?;
    let metrics = telemetry::prometheus();
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
    } else if accounts
        .staff_count()
        .await
        .context("cannot count the staff accounts")?
        == 0
    {
        tracing::warn!("{NO_STAFF_HINT}");
    }

    let appid = appid_of(&mode);
    // The simulator runs in-process when WeChat is not configured at all (a mix of real and
    // simulated WeChat is refused above).
    let sandbox = (mode == MiniProgramMode::InProcessSandbox).then(|| {
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
    let notify_urls = NotifyUrls::of(&settings, &local_base);
    let mut tasks = Vec::new();
    let (shutdown, signal) = watch::channel(false);
    let clients = match (wechatpay, &sandbox) {
        (Some(merchant), _) => {
            tracing::info!(mchid = %merchant.mchid, api_base = %merchant.api_base, v3 = merchant.v3.is_some(), v2 = merchant.v2.is_some(), "WeChat Pay configured");
            merchant_clients(merchant, &appid, &notify_urls, &settings)?
        }
        (None, Some(sandbox)) => {
            tracing::warn!(
                "SANDBOX MODE: WECHATPAY_MCHID is unset, payments go to the built-in WeChat Pay \
                 simulator at {sandbox_base} — no real money moves"
            );
            let secapi_base =
                serve_sandbox_secapi(sandbox, settings.listen_addr, &signal, &mut tasks).await?;
            sandbox_clients(
                &sandbox.merchant(),
                &sandbox_base,
                Some(&secapi_base),
                &notify_urls,
                &settings,
            )?
        }
        (None, None) => unreachable!("a sandbox exists whenever WeChat Pay is not configured"),
    };
    let certificates_client = clients.v3.clone();

    let store = event_store(&db);
    // A read model added by a migration to a database with orders is filled before serving.
    paystream_projections::backfill_if_needed(store.as_ref())
        .await
        .context("filling the read models from the event log")?;
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
    let payments = Payments::new(db.clone(), orders.clone(), clients.gateways());
    let running_payments = payments.clone();
    let reconciler = reconciler(&db, &orders, &payments);
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
        reconciler: reconciler.clone(),
        broker: amqp_url.clone().map(|url| {
            Arc::new(workers::AmqpBroker { url }) as Arc<dyn paystream_engine::consumers::Broker>
        }),
        tokens: Tokens::new(secret.expose_secret().as_bytes()),
        order_ttl: chrono::Duration::seconds(i64::from(settings.order_ttl_seconds)),
        customer_session_ttl: chrono::Duration::seconds(i64::from(settings.session_ttl_seconds)),
        staff_session_ttl: chrono::Duration::seconds(i64::from(settings.staff_session_ttl_seconds)),
        throttles: paystream_http::Throttles::new(std::time::Duration::from_secs(u64::from(
            settings.admin_login_lockout_seconds,
        ))),
        ops: paystream_http::Ops::new(metrics.clone()),
    });
    let mut app = paystream_http::router(state);
    if let Some(sandbox) = &sandbox {
        app = app.nest("/sandbox", paystream_sandbox::router(sandbox.clone()));
    }

    tasks.push(tokio::spawn(server::serve(
        listener,
        app,
        server::ConnectionLimits::within_fd_limit(
            settings.max_connections as usize,
            std::time::Duration::from_secs(u64::from(settings.http_header_timeout_seconds)),
            std::time::Duration::from_secs(u64::from(settings.http_idle_timeout_seconds)),
        ),
        signal.clone(),
    )));
    tasks.push(tokio::spawn(jobs::metrics_upkeep_loop(
        metrics,
        std::time::Duration::from_secs(5),
        signal.clone(),
    )));
    // After the server is up (in sandbox mode the certificates come from this very process),
    // then on a timer, so a rotation is known before the new certificate signs anything.
    if let Some(client) = certificates_client {
        tasks.push(tokio::spawn(jobs::certificate_refresh_loop(
            client,
            std::time::Duration::from_secs(u64::from(settings.wechatpay_cert_refresh_hours) * 3600),
            signal.clone(),
        )));
    }
    if !settings.no_background_jobs {
        match &amqp_url {
            // The log is the outbox: the relay publishes it, `paystream worker …` consumes.
            Some(url) => {
                tasks.push(tokio::spawn(jobs::relay_lag_loop(
                    db.clone(),
                    std::time::Duration::from_secs(5),
                    signal.clone(),
                )));
                tasks.push(tokio::spawn(paystream_amqp::run_relay(
                    store.clone(),
                    url.clone(),
                    paystream_amqp::RelayOptions {
                        // Declared here too, so events published before a worker first runs
                        // wait in its queue.
                        queues: workers::all(&worker_deps)
                            .iter()
                            .map(|w| paystream_amqp::QueueSpec::of(w.as_ref()))
                            .collect(),
                        ..paystream_amqp::RelayOptions::default()
                    },
                    signal.clone(),
                )));
            }
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
    if !settings.no_background_jobs {
        let daily = reconcile_job::DailyJob::new(
            reconciler.clone(),
            paystream_engine::runs::Runs::new(db.clone()),
            settings.reconcile_at,
        );
        tasks.push(tokio::spawn(daily.run(signal.clone())));
    }
    tracing::info!(%addr, backend = ?db.backend, "paystream listening");
    Ok(Running {
        addr,
        db,
        payments: running_payments,
        reconciler,
        sandbox,
        shutdown,
        tasks,
    })
}

/// The mini-program's appid: the configured one, or the simulator's.
fn appid_of(mode: &MiniProgramMode) -> String {
    match mode {
        MiniProgramMode::Remote { appid, .. } => appid.clone(),
        MiniProgramMode::InProcessSandbox => SANDBOX_APPID.to_string(),
    }
}

/// The reconciliation service over this database and these payment channels.
fn reconciler(db: &Db, orders: &OrderService, payments: &Payments) -> Reconciler {
    Reconciler::new(
        payments.clone(),
        orders.clone(),
        Arc::new(paystream_projections::Ledger::new(db.clone())),
        Reports::new(db.clone()),
    )
}

/// A reconciler for `paystream reconcile`, a process of its own beside the running engine: the
/// same database, and the merchant's WeChat Pay — in sandbox mode the simulator of the engine
/// at `LISTEN_ADDR`, whose state holds the sandbox's payments.
pub async fn reconciler_for(settings: &Settings) -> anyhow::Result<Reconciler> {
    let (mode, wechatpay) = settings.wechat().map_err(|e| anyhow!(e))?;
    let db = connect(&settings.db.database_url).await?;
    let engine_base = format!("http://{}", loopback(settings.listen_addr));
    let urls = NotifyUrls::of(settings, &engine_base);
    let clients = match wechatpay {
        Some(merchant) => merchant_clients(merchant, &appid_of(&mode), &urls, settings)?,
        None => {
            let sandbox_base = format!("{engine_base}/sandbox");
            let credentials_url = format!("{sandbox_base}/control/wechatpay/merchant");
            let merchant: paystream_sandbox::MerchantCredentials = reqwest::get(&credentials_url)
                .await
                .and_then(|r| r.error_for_status())
                .with_context(|| {
                    format!(
                        "sandbox mode: no engine answers at LISTEN_ADDR={} (its simulator holds the \
                         sandbox's payments; start `paystream serve` first)",
                        settings.listen_addr
                    )
                })?
                .json()
                .await
                .context("sandbox mode: the engine's simulator sent unreadable credentials")?;
            sandbox_clients(&merchant, &sandbox_base, None, &urls, settings)?
        }
    };
    let store = event_store(&db);
    let orders = OrderService::new(store);
    let payments = Payments::new(db.clone(), orders.clone(), clients.gateways());
    Ok(reconciler(&db, &orders, &payments))
}

fn read_file(path: &std::path::Path, variable: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("{variable}={}: cannot read", path.display()))
}

/// Where WeChat Pay is told to send notifications (https in production: PUBLIC_BASE_URL).
struct NotifyUrls {
    v3: String,
    v2: String,
    v2_refund: String,
}

impl NotifyUrls {
    /// Under `PUBLIC_BASE_URL`, else under the engine's own address.
    fn of(settings: &Settings, local_base: &str) -> NotifyUrls {
        match &settings.public_base_url {
            Some(url) => NotifyUrls::under(url.as_str()),
            None => NotifyUrls::under(local_base),
        }
    }

    fn under(public_base_url: &str) -> NotifyUrls {
        let base = public_base_url.trim_end_matches('/');
        NotifyUrls {
            v3: format!("{base}{}", paystream_http::WECHATPAY_V3_PATH),
            v2: format!("{base}{}", paystream_http::WECHATPAY_V2_PATH),
            v2_refund: format!("{base}{}", paystream_http::WECHATPAY_V2_REFUND_PATH),
        }
    }
}

/// The WeChat Pay clients of this merchant: APIv3, APIv2, or both.
struct PayClients {
    v3: Option<Arc<V3Client>>,
    v2: Option<Arc<V2Client>>,
}

impl PayClients {
    fn gateways(&self) -> Vec<Arc<dyn PayGateway>> {
        let mut gateways: Vec<Arc<dyn PayGateway>> = Vec::new();
        if let Some(v3) = &self.v3 {
            gateways.push(v3.clone());
        }
        if let Some(v2) = &self.v2 {
            gateways.push(v2.clone());
        }
        gateways
    }
}

fn refund_lag_grace(settings: &Settings) -> std::time::Duration {
    std::time::Duration::from_secs(u64::from(settings.wechatpay_refund_lag_seconds))
}

fn sign_type(settings: &Settings) -> anyhow::Result<SignType> {
    settings
        .wechatpay_v2_sign_type
        .parse()
        .map_err(|e| anyhow!("WECHATPAY_V2_SIGN_TYPE: {e}"))
}

/// The clients for a real merchant, from files and settings.
fn merchant_clients(
    merchant: WechatPaySettings,
    appid: &str,
    urls: &NotifyUrls,
    settings: &Settings,
) -> anyhow::Result<PayClients> {
    let v3 = match merchant.v3 {
        Some(v3) => Some(Arc::new(v3_client(
            v3,
            &merchant.mchid,
            &merchant.api_base,
            appid,
            urls,
            settings,
        )?)),
        None => None,
    };
    let v2 = match merchant.v2 {
        Some(v2) => {
            let client_certificate = match &v2.client_certificate {
                Some((cert, key)) => Some(ClientCertificate {
                    cert_pem: read_file(cert, "WECHATPAY_V2_CLIENT_CERT")?,
                    key_pem: read_file(key, "WECHATPAY_V2_CLIENT_KEY")?,
                }),
                None => {
                    tracing::warn!(
                        "WECHATPAY_V2_CLIENT_CERT/KEY unset: WeChat refuses APIv2 refunds without \
                         the merchant certificate; they wait, in flight, until it is configured"
                    );
                    None
                }
            };
            Some(Arc::new(
                V2Client::new(V2Config {
                    api_base: merchant.api_base.clone(),
                    secapi_base: v2.secapi_base.clone(),
                    mchid: merchant.mchid.clone(),
                    appid: appid.to_string(),
                    api_key: ApiV2Key::new(v2.api_key),
                    sign_type: sign_type(settings)?,
                    client_certificate,
                    extra_root_ca_pem: v2
                        .root_ca
                        .as_ref()
                        .map(|path| read_file(path, "WECHATPAY_V2_ROOT_CA"))
                        .transpose()?,
                    notify_url: urls.v2.clone(),
                    refund_notify_url: urls.v2_refund.clone(),
                    refund_lag_grace: refund_lag_grace(settings),
                })
                .context("WECHATPAY_V2_CLIENT_CERT/WECHATPAY_V2_CLIENT_KEY/WECHATPAY_V2_ROOT_CA")?,
            ))
        }
        None => None,
    };
    Ok(PayClients { v3, v2 })
}

fn v3_client(
    v3: WechatPayV3Settings,
    mchid: &str,
    api_base: &str,
    appid: &str,
    urls: &NotifyUrls,
    settings: &Settings,
) -> anyhow::Result<V3Client> {
    let key =
        MerchantPrivateKey::from_pem(&read_file(&v3.private_key, "WECHATPAY_MCH_PRIVATE_KEY")?)
            .map_err(|e| anyhow!("WECHATPAY_MCH_PRIVATE_KEY: {e}"))?;
    let public_key = match &v3.public_key {
        Some((id, path)) => Some((
            id.clone(),
            load_public_key_pem(&read_file(path, "WECHATPAY_PUBLIC_KEY")?)
                .map_err(|e| anyhow!("WECHATPAY_PUBLIC_KEY: {e}"))?,
        )),
        None => None,
    };
    Ok(V3Client::new(V3Config {
        api_base: api_base.to_string(),
        mchid: mchid.to_string(),
        appid: appid.to_string(),
        merchant_serial: v3.serial,
        merchant_key: key,
        apiv3_key: ApiV3Key::new(&v3.apiv3_key).map_err(|e| anyhow!("WECHATPAY_APIV3_KEY: {e}"))?,
        public_key,
        notify_url: urls.v3.clone(),
        certificate_refetch_interval: std::time::Duration::from_secs(u64::from(
            settings.wechatpay_cert_refetch_seconds,
        )),
        refund_lag_grace: refund_lag_grace(settings),
    }))
}

/// The simulator's `/secapi/...` (mutual TLS, like WeChat's) on a port of its own beside
/// LISTEN_ADDR; returns its base URL.
async fn serve_sandbox_secapi(
    sandbox: &Sandbox,
    listen_addr: SocketAddr,
    signal: &watch::Receiver<bool>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(loopback(listen_addr).ip(), 0))
        .await
        .context("sandbox secapi: cannot listen")?;
    let addr = listener.local_addr()?;
    let sandbox = sandbox.clone();
    let mut stop = signal.clone();
    tasks.push(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        if let Err(e) = sandbox.serve_secapi(listener, shutdown).await {
            tracing::error!(error = %e, "sandbox secapi server failed");
        }
    }));
    Ok(format!("https://{addr}"))
}

/// The clients for the in-process simulator's merchant. The simulator starts in WeChat's
/// migration mode (notifications signed by a platform certificate or the public key, at
/// random), so the v3 client holds both, as a merchant in the migration must.
fn sandbox_clients(
    merchant: &paystream_sandbox::MerchantCredentials,
    base: &str,
    secapi_base: Option<&str>,
    urls: &NotifyUrls,
    settings: &Settings,
) -> anyhow::Result<PayClients> {
    let public_key = (
        merchant.public_key_id.clone(),
        load_public_key_pem(&merchant.public_key_pem)?,
    );
    let v3 = V3Client::new(V3Config {
        api_base: base.to_string(),
        mchid: merchant.mchid.clone(),
        appid: merchant.appid.clone(),
        merchant_serial: merchant.merchant_serial.clone(),
        merchant_key: MerchantPrivateKey::from_pem(&merchant.merchant_private_key_pem)?,
        apiv3_key: ApiV3Key::new(&merchant.apiv3_key)?,
        public_key: Some(public_key),
        notify_url: urls.v3.clone(),
        certificate_refetch_interval: std::time::Duration::from_secs(u64::from(
            settings.wechatpay_cert_refetch_seconds,
        )),
        refund_lag_grace: refund_lag_grace(settings),
    });
    let v2 = V2Client::new(V2Config {
        api_base: base.to_string(),
        secapi_base: secapi_base.map(str::to_string),
        mchid: merchant.mchid.clone(),
        appid: merchant.appid.clone(),
        api_key: ApiV2Key::new(merchant.apiv2_key.clone()),
        sign_type: sign_type(settings)?,
        client_certificate: Some(ClientCertificate {
            cert_pem: merchant.apiv2_client_cert_pem.clone(),
            key_pem: merchant.apiv2_client_key_pem.clone(),
        }),
        extra_root_ca_pem: Some(merchant.secapi_ca_pem.clone()),
        notify_url: urls.v2.clone(),
        refund_notify_url: urls.v2_refund.clone(),
        refund_lag_grace: refund_lag_grace(settings),
    })?;
    Ok(PayClients {
        v3: Some(Arc::new(v3)),
        v2: Some(Arc::new(v2)),
    })
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
pub fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
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
