//! The HTTP server's connection handling: a cap on open connections, a deadline for a request's
//! headers, and an idle deadline — so idle or header-trickling clients cannot hold file
//! descriptors until the process runs out (`axum::serve` has none of these). When the cap is
//! reached a small overflow of connections is still served, on short deadlines: a real client
//! sends its request at once and is answered, an idle one is gone in seconds — so a flood of idle
//! connections delays a health check by seconds, not by the idle deadline. Graceful: on stop it
//! accepts nothing more and lets requests in flight finish.

use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_io_timeout::TimeoutStream;
use tower_http::add_extension::AddExtensionLayer;

/// How many connections, and for how long, one client may hold.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Open connections at most; beyond it new ones wait in the listen backlog.
    pub max_connections: usize,
    /// A request's headers must arrive within this (a trickling client is cut off).
    pub header_timeout: Duration,
    /// A connection that sends nothing for this long is closed. Longer than the request
    /// deadline (30 s), so no request in progress is cut.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// `max_connections`, but never more than five eighths of the file descriptors this
    /// process may open; with the overflow (a quarter of that) at most three quarters — the rest
    /// is for the database pool, the broker, WeChat calls, logs.
    pub fn within_fd_limit(
        max_connections: usize,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> ConnectionLimits {
        let fds = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        let allowed = usize::try_from(fds.saturating_mul(5) / 8).unwrap_or(usize::MAX);
        ConnectionLimits {
            max_connections: max_connections.min(allowed).max(16),
            header_timeout,
            idle_timeout,
        }
    }
}

/// Deadlines of the connections served beyond the cap.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const OVERFLOW_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a stop waits for requests in flight before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(35);

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(Semaphore::new((limits.max_connections / 4).max(4)));
    let graceful = GracefulShutdown::new();
    let builder = |header_timeout: Duration| {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        builder
    };
    let (normal, short) = (
        builder(limits.header_timeout),
        builder(OVERFLOW_HEADER_TIMEOUT),
    );
    let mut stopped = pin!(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    });
    loop {
        // A regular slot when there is one, else an overflow slot on short deadlines.
        let (permit, builder, idle_timeout) = tokio::select! {
            biased;
            () = &mut stopped => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => (permit, &normal, limits.idle_timeout),
                Err(_) => break,
            },
            permit = overflow.clone().acquire_owned() => match permit {
                Ok(permit) => (permit, &short, OVERFLOW_IDLE_TIMEOUT),
                Err(_) => break,
            },
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let _ = tcp.set_nodelay(true);
        let mut io = TimeoutStream::new(tcp);
        io.set_read_timeout(Some(idle_timeout));
        let io = TokioIo::new(Box::pin(io));
        // What `into_make_service_with_connect_info` would give each request.
        let service = TowerToHyperService::new(
            tower::ServiceBuilder::new()
                .layer(AddExtensionLayer::new(ConnectInfo::<SocketAddr>(remote)))
                .service(app.clone()),
        );
        let connection = graceful.watch(
            builder
                .serve_connection_with_upgrades(io, service)
                .into_owned(),
        );
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%remote, error = %e, "connection closed");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("stopping with requests still in flight");
        }
    }
}
