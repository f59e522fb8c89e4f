//! The sandbox's HTTPS port for APIv2 calls that need the merchant's client certificate
//! (`/secapi/pay/refund`), as WeChat's `api.mch.weixin.qq.com` serves them: TLS, a client
//! certificate asked for (not required at the handshake), judged per request.
//!
//! axum serves any [`Listener`]; this one hands out connections whose TLS handshake is done
//! (handshakes run concurrently, so a slow client holds up no one) together with the client's
//! certificate chain, which reaches handlers as `ConnectInfo<SecapiPeer>`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::Sandbox;

/// A TLS handshake that takes longer than this is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a `/secapi` connection.
#[derive(Clone, Debug)]
pub(crate) struct SecapiPeer {
    pub remote: SocketAddr,
    /// The client's certificate chain, end entity first; empty when it sent none.
    pub certificates: Vec<CertificateDer<'static>>,
}

impl Connected<IncomingStream<'_, TlsListener>> for SecapiPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SecapiPeer)>,
    local: std::io::Result<SocketAddr>,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    fn new(listener: TcpListener, acceptor: TlsAcceptor) -> TlsListener {
        let local = listener.local_addr();
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "wechatpay sandbox: secapi accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let certificates = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                                .unwrap_or_default();
                            let peer = SecapiPeer {
                                remote,
                                certificates,
                            };
                            // The server has stopped when nobody receives: drop the connection.
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "wechatpay sandbox: secapi TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "wechatpay sandbox: secapi TLS handshake timed out")
                        }
                    }
                });
            }
        });
        TlsListener {
            ready,
            local,
            accepting,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SecapiPeer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop never ends by itself; if it was aborted, nothing comes any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match &self.local {
            Ok(addr) => Ok(SecapiPeer {
                remote: *addr,
                certificates: Vec::new(),
            }),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

impl Sandbox {
    /// Serve WeChat Pay APIv2 over HTTPS on `listener` until `shutdown` completes, then finish
    /// the requests in flight and return. The routes are at the root, as at
    /// `https://api.mch.weixin.qq.com`: `/secapi/pay/refund` (which needs the merchant API
    /// certificate, [`MerchantCredentials::apiv2_client_cert_pem`](crate::MerchantCredentials)
    /// and its key) and, for convenience, `/pay/unifiedorder`, `/pay/orderquery`,
    /// `/pay/closeorder` and `/pay/refundquery`. Clients trust
    /// [`MerchantCredentials::secapi_ca_pem`](crate::MerchantCredentials) to reach it; the
    /// server certificate is for `localhost`, `127.0.0.1` and `::1`.
    pub async fn serve_secapi(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let acceptor = TlsAcceptor::from(Arc::clone(&self.pay.secapi.server_config));
        let app = crate::wechatpay::v2::routes(self.pay.clone());
        axum::serve(
            TlsListener::new(listener, acceptor),
            app.into_make_service_with_connect_info::<SecapiPeer>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}
