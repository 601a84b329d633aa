//! HTTP/1.1 connections to one backend endpoint, kept open for the next request.
//!
//! Leaner than hyper-util's pooled client on the hot path: the pool is found once per swap (not
//! hashed per request), a request takes the most recently used idle connection under an
//! uncontended lock, and a connection comes back when its response body has been read to the
//! end, with no task spawned per request and no clock read. Idle connections age out by a
//! sweeper that ticks while the pool exists.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use super::upstream::{Connector, UpstreamBody, DEFAULT_POOL_IDLE_TIMEOUT};

/// How often idle connections are looked at; an idle connection lives at most this much longer
/// than [`DEFAULT_POOL_IDLE_TIMEOUT`].
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Idle connections kept per endpoint; more are closed when they come back (a burst should not
/// leave thousands of sockets open on the backend for the idle timeout).
pub const DEFAULT_MAX_IDLE_PER_ENDPOINT: usize = 1024;

/// The most a backend connection buffers of what it reads (hyper's default grows to about
/// 400 KiB). Measured with 64 responses of 1 MiB in flight (benches/load.sh): hyper's default
/// peaked at 52 MiB of RSS, 256 KiB at 42 MiB with the same requests per CPU-second, 128 KiB at
/// 31 MiB and 64 KiB at 22 MiB but with 30% more CPU per request (smaller reads).
const UPSTREAM_READ_BUFFER: usize = 256 * 1024;

/// Why a request got no response from the endpoint.
#[derive(Debug)]
pub enum PoolError {
    /// No connection could be made (TCP connect, TLS handshake): nothing was sent.
    Connect(Box<dyn StdError + Send + Sync>),
    /// The request failed on an open connection.
    Send(hyper::Error),
}

impl PoolError {
    pub fn is_connect(&self) -> bool {
        matches!(self, PoolError::Connect(_))
    }

    pub fn as_error(&self) -> &(dyn StdError + 'static) {
        match self {
            PoolError::Connect(e) => &**e,
            PoolError::Send(e) => e,
        }
    }
}

struct IdleConnection {
    sender: SendRequest<UpstreamBody>,
    /// The sweep tick it became idle at.
    since: u32,
}

/// The connections to one endpoint (`scheme://address:port`) of one transport.
pub struct EndpointPool {
    connector: Connector,
    /// What the connector dials.
    target: Uri,
    idle: Mutex<Vec<IdleConnection>>,
    tick: AtomicU32,
    sweeping: AtomicBool,
}

impl std::fmt::Debug for EndpointPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointPool").field("target", &self.target).finish_non_exhaustive()
    }
}

impl EndpointPool {
    pub fn new(connector: Connector, target: Uri) -> Arc<Self> {
        Arc::new(Self {
            connector,
            target,
            idle: Mutex::new(Vec::new()),
            tick: AtomicU32::new(0),
            sweeping: AtomicBool::new(false),
        })
    }

    /// Sends `request` (origin-form URI, Host set) on an idle connection, or a new one. A request
    /// that an idle connection closed under before taking it (the backend's keep-alive ended) is
    /// sent again on another: it was not written, so this is safe for any method.
    pub async fn send(self: &Arc<Self>, mut request: Request<UpstreamBody>) -> Result<Response<PooledBody>, PoolError> {
        loop {
            let (mut sender, reused) = match self.checkout().await {
                Some(sender) => (sender, true),
                // Boxed: connecting (TCP, TLS, handshake) is rare next to reuse, and its state
                // would otherwise make every request's future 1.4 KB larger, copied per request.
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    // A 101's connection now belongs to the tunnel.
                    let back = (response.status() != StatusCode::SWITCHING_PROTOCOLS).then(|| (sender, self.clone()));
                    return Ok(response.map(|body| PooledBody { body, back, ended: false }));
                }
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(PoolError::Send(failed.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open.
    async fn checkout(&self) -> Option<SendRequest<UpstreamBody>> {
        loop {
            let IdleConnection { mut sender, .. } = self.idle.lock().ok()?.pop()?;
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let since = self.tick.load(Ordering::Relaxed);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < DEFAULT_MAX_IDLE_PER_ENDPOINT {
                idle.push(IdleConnection { sender, since });
            }
        }
    }

    async fn connect(self: &Arc<Self>) -> Result<SendRequest<UpstreamBody>, PoolError> {
        use tower_service::Service;
        let mut connector = self.connector.clone();
        futures_util::future::poll_fn(|cx| connector.poll_ready(cx)).await.map_err(PoolError::Connect)?;
        let io = connector.call(self.target.clone()).await.map_err(PoolError::Connect)?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(UPSTREAM_READ_BUFFER)
            .handshake(io)
            .await
            .map_err(|e| PoolError::Connect(Box::new(e)))?;
        let target = self.target.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(%target, error = %e, "backend connection ended with an error");
            }
        });
        self.start_sweeping();
        Ok(sender)
    }

    fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                pool.sweep();
            }
        });
    }

    /// Closes connections idle for longer than the idle timeout, and forgets closed ones.
    fn sweep(&self) {
        let now = self.tick.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let limit = (DEFAULT_POOL_IDLE_TIMEOUT.as_secs() / SWEEP_EVERY.as_secs()) as u32;
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|c| !c.sender.is_closed() && now.wrapping_sub(c.since) <= limit);
        }
    }
}

/// A response body from a pooled connection: the connection goes back to its pool once the body
/// has been read to its end (or had none). A body dropped before its end closes the connection,
/// since what is left of it would be read as the next response.
pub struct PooledBody {
    body: Incoming,
    back: Option<(SendRequest<UpstreamBody>, Arc<EndpointPool>)>,
    ended: bool,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((sender, pool)) = self.back.take() {
            pool.checkin(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                this.ended = true;
                this.give_back();
            }
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.ended || self.body.is_end_stream() {
            self.give_back();
        }
    }
}
