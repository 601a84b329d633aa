//! Entries: the http and https listeners. Accept, TLS with SNI, HTTP/1.1 and HTTP/2, graceful
//! drain on shutdown.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::connection::{ConnCtx, Expired, Timeouts, Watchdog, Watched};
use super::{Connection, EntryKind, Shared};

/// A TLS handshake must finish within this (nginx's client_header_timeout is 60s; a handshake
/// needs far less, and a stalled one holds a socket).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: &str = "10s";
/// A request head must arrive within this from its first byte, against slowloris (nginx's
/// `client_header_timeout` is 60s).
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
/// Request line and headers, in bytes (nginx allows 4 × 8 KiB, Go's servers and so Traefik 1 MiB;
/// a dashboard's bearer token and cookies fit easily).
pub const DEFAULT_MAX_HEADER_BYTES: &str = "65536";
/// Header fields per request (hyper's and Apache's default).
pub const DEFAULT_MAX_HEADERS: &str = "100";
/// Request target length (nginx answers 414 past its 8 KiB buffer; long Grafana links need more).
pub const DEFAULT_MAX_URI_LENGTH: &str = "16384";
/// Concurrent streams per HTTP/2 connection (Go's default, so Traefik's).
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: &str = "250";
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

/// The HTTP limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// hyper's own header-read timer; None on the entries, whose watchdog does it (see
    /// `connection.rs`).
    pub header_read_timeout: Option<Duration>,
    /// `--max-header-bytes`: request line and headers together (HTTP/1.1), the header list
    /// (HTTP/2).
    pub max_header_bytes: usize,
    /// `--max-headers` (HTTP/1.1).
    pub max_headers: usize,
    /// `--http2-max-concurrent-streams`.
    pub max_concurrent_streams: u32,
}

/// The HTTP server settings of every listener (entries and admin).
pub fn http_builder(limits: HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's read buffer bounds the head: past it, 431. (Its floor is 8 KiB.)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));
    // hyper parses into a stack array of its default size, but fills a vector per request once a
    // limit is set: set one only when it differs.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// hyper's own limit on header fields when none is set (`proto::h1::role::DEFAULT_MAX_HEADERS`).
const HYPER_MAX_HEADERS: usize = 100;

/// hyper refuses a read buffer smaller than this.
pub const MIN_HEADER_BYTES: usize = 8192;

/// Serves one entry until `shutdown` turns true, then drains open connections: each finishes
/// the requests it has (HTTP/2: sends GOAWAY), upgraded connections keep going; all of them
/// are waited for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    entry: EntryKind,
    tls: Option<crate::tls::TlsEntry>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let settings = &shared.settings;
    let builder = Arc::new(http_builder(HttpLimits {
        header_read_timeout: None,
        max_header_bytes: settings.max_header_bytes,
        max_headers: settings.max_headers,
        max_concurrent_streams: settings.http2_max_concurrent_streams,
    }));
    let timeouts = Timeouts { idle: settings.idle_timeout, header_read: settings.header_read_timeout };
    let handshake_timeout = settings.tls_handshake_timeout;
    let max_connections = settings.max_connections;
    let limit = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = crate::proxy::stopped(&mut stop) => break,
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
        let ctx = Arc::new(ConnCtx::new(shared.clone(), Connection { entry, peer, local }, permit));
        let builder = builder.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _open = ctx.shared.metrics.connection_opened(entry);
            match tls {
                None => serve_connection(&builder, stream, ctx, timeouts, shutdown).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                    let failure = match &handshake {
                        Ok(Ok(_)) => None,
                        Ok(Err(_)) => Some("error"),
                        Err(_) => Some("timeout"),
                    };
                    ctx.shared.metrics.tls_handshake(failure);
                    match handshake {
                        Ok(Ok(tls_stream)) => serve_connection(&builder, tls_stream, ctx, timeouts, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    // Every connection and upgraded tunnel holds a permit until it ends.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, limit.acquire_many(all)).await.is_err() {
        tracing::warn!(?entry, "connections still open after the grace period are closed");
    }
}

/// After the watchdog or a shutdown asked a connection to close, how long it may take to finish
/// (an HTTP/2 client that ignores GOAWAY, a request still being answered) before it is dropped
/// when the reason was the watchdog. On shutdown, the entry's grace period bounds it instead.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Serves HTTP on one accepted (and TLS-terminated) connection until it ends, the watchdog
/// expires it, or the entry shuts down.
async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    ctx: Arc<ConnCtx>,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Watched::new(stream, ctx.clone()));
    let service_ctx = ctx.clone();
    let service = service_fn(move |req| super::handle(service_ctx.clone(), req));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut watchdog = Watchdog::new(ctx.clone(), timeouts);
    tokio::select! {
        biased;
        _ = conn.as_mut() => return,
        expired = &mut watchdog => {
            tracing::debug!(peer = %ctx.conn.peer, ?expired, "closing connection");
            // A head trickling in is cut as hyper's own header timer would; an idle connection is
            // closed gracefully (HTTP/2: GOAWAY first).
            if expired == Expired::Idle {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
            }
            return;
        }
        _ = crate::proxy::stopped(&mut shutdown) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}
