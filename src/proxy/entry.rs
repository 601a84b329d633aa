//! Entries: the http and https listeners. Accept, TLS with SNI, HTTP/1.1 and HTTP/2, graceful
//! drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{Connection, EntryKind, Shared};

/// A TLS handshake must finish within this (nginx's client_header_timeout is 60s; a handshake
/// needs far less, and a stalled one holds a socket).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: &str = "10s";
/// Request headers must arrive within this, against slowloris (hyper applies it only with a timer).
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
/// Concurrent client connections per entry (nginx's default worker_connections is 512 per
/// worker; a node's door to its dashboards needs far fewer, but must not fall over first).
pub const DEFAULT_MAX_CONNECTIONS: &str = "16384";
/// On shutdown, connections still open after this are closed (Kubernetes' default
/// terminationGracePeriodSeconds is 30 s; deploy/ gives the pod 45 s so this fits inside).
pub const DEFAULT_GRACE_PERIOD: &str = "30s";

/// Picks the certificate by SNI from the current config; the default one otherwise.
pub struct CertResolver {
    shared: Arc<Shared>,
    default: Arc<CertifiedKey>,
}

impl CertResolver {
    pub fn new(shared: Arc<Shared>, default: Arc<CertifiedKey>) -> Self {
        Self { shared, default }
    }
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertResolver")
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let live = self.shared.live.load();
        let found = hello.server_name().and_then(|name| live.config.certificates.find(name));
        Some(found.cloned().unwrap_or_else(|| self.default.clone()))
    }
}

/// The HTTP server settings of every listener (entries and admin): header-read timeout included.
pub fn http_builder(header_read_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Serves one entry until `shutdown` turns true, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    entry: EntryKind,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let builder = Arc::new(http_builder(shared.settings.header_read_timeout));
    let handshake_timeout = shared.settings.tls_handshake_timeout;
    let limit = Arc::new(tokio::sync::Semaphore::new(shared.settings.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = crate::proxy::stopped(&mut shutdown) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(?entry, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the limit, the connection is closed at once: cheaper than queueing it, and the
        // client (or the next node behind a load balancer) retries.
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::debug!(?entry, %peer, "connection refused: --max-connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else { continue };
        let conn = Connection { entry, peer, local };
        let shared = shared.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = shared.metrics.connection_opened(entry);
            match tls {
                None => {
                    let service = service_fn(move |req| super::handle(shared.clone(), conn, req));
                    let served = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                    let _ = watcher.watch(served).await;
                }
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                    let failure = match &handshake {
                        Ok(Ok(_)) => None,
                        Ok(Err(_)) => Some("error"),
                        Err(_) => Some("timeout"),
                    };
                    shared.metrics.tls_handshake(failure);
                    let tls_stream = match handshake {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let service = service_fn(move |req| super::handle(shared.clone(), conn, req));
                    let served = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service).into_owned();
                    let _ = watcher.watch(served).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(?entry, "connections still open after the grace period were closed");
    }
}
