//! Wiring: builds the services from settings, serves HTTP, runs the background jobs.

pub mod config;
pub mod jobs;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use paystream_engine::accounts::{Accounts, MiniProgram};
use paystream_engine::catalogue::Catalogue;
use paystream_engine::db::Db;
use paystream_engine::orders::OrderService;
use paystream_engine::store::{EventStore, SqlEventStore};
use paystream_http::{AppState, Services, Tokens};
use paystream_projections::{OrdersProjection, OrdersView};
use paystream_sandbox::{Sandbox, SandboxConfig};
use paystream_wechat::MiniProgramClient;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{MiniProgramMode, Settings, SANDBOX_APPID, SANDBOX_SECRET};

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

    let (mini_program, sandbox): (Arc<dyn MiniProgram>, Option<Sandbox>) = match mode {
        MiniProgramMode::InProcessSandbox => {
            tracing::warn!(
                "SANDBOX MODE: WECHAT_APPID is unset, logins go to the built-in WeChat simulator \
                 at {local_base}/sandbox — no real WeChat user can log in"
            );
            let sandbox = Sandbox::new(SandboxConfig {
                appid: SANDBOX_APPID.into(),
                secret: SANDBOX_SECRET.into(),
            });
            let client = MiniProgramClient::new(
                &format!("{local_base}/sandbox"),
                SANDBOX_APPID,
                SecretString::from(SANDBOX_SECRET),
            );
            (Arc::new(client), Some(sandbox))
        }
        MiniProgramMode::Remote {
            base,
            appid,
            secret,
        } => {
            tracing::info!(api_base = %base, appid, "mini-program API configured");
            (
                Arc::new(MiniProgramClient::new(
                    &base,
                    &appid,
                    SecretString::from(secret),
                )),
                None,
            )
        }
    };

    let store = event_store(&db);
    let orders = OrderService::new(store.clone());
    let orders_view = OrdersView::new(db.clone());
    let secret = accounts.token_secret().await?;
    let state = AppState::new(Services {
        db: db.clone(),
        orders: orders.clone(),
        orders_view: orders_view.clone(),
        catalogue: Catalogue::new(db.clone()),
        accounts,
        mini_program,
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
    if !settings.no_background_jobs {
        tasks.push(tokio::spawn(jobs::expiry_loop(
            orders,
            orders_view,
            std::time::Duration::from_secs(u64::from(settings.expiry_interval_seconds)),
            signal.clone(),
        )));
    }
    tracing::info!(%addr, backend = ?db.backend, "paystream listening");
    Ok(Running {
        addr,
        db,
        sandbox,
        shutdown,
        tasks,
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
