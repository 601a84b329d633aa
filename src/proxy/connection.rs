//! One client connection: what it is doing (requests in flight, idle since when, a request head
//! being read since when), and the watchdog that closes it when it idles too long or trickles
//! its headers. hyper's own header-read timer also runs while a keep-alive connection waits for
//! its next request, which would make the idle timeout equal to the header timeout; this keeps
//! the two apart, as nginx does (`keepalive_timeout` vs `client_header_timeout`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

use super::middleware::{is_trusted, ClientInfo};
use super::{Connection, Shared};

/// How long a keep-alive connection may wait for its next request (Go's and so Traefik's
/// `IdleTimeout` default is 180s, nginx's `keepalive_timeout` 75s).
pub const DEFAULT_IDLE_TIMEOUT: &str = "90s";

/// A client connection and its state, shared by its requests (and an upgraded tunnel, which
/// keeps the connection's `--max-connections` permit while it lasts).
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    pub conn: Connection,
    /// The forwarding header values of this client, made once.
    pub client: ClientInfo,
    pub activity: Activity,
    /// The response-header deadline of its HTTP/1.1 requests.
    pub response_timer: ResponseTimer,
    _permit: OwnedSemaphorePermit,
}

impl ConnCtx {
    pub fn new(shared: Arc<Shared>, conn: Connection, permit: OwnedSemaphorePermit) -> Self {
        let trusted = is_trusted(conn.peer.ip(), &shared.settings.trusted_proxies);
        let client = ClientInfo::new(conn.peer.ip(), conn.entry.as_str(), conn.local.port(), trusted);
        Self {
            shared,
            conn,
            client,
            activity: Activity::new(),
            response_timer: ResponseTimer::default(),
            _permit: permit,
        }
    }
}

/// One timer that the requests of an HTTP/1.1 connection (one at a time) wait on for their
/// response headers. A new deadline later than the one the timer is set to leaves it alone; when
/// it fires early it is moved on. So a connection's back-to-back requests re-arm it about once per
/// timeout, not each: a timer armed and cancelled per request cost about 5% of the CPU of a
/// proxied request.
#[derive(Default)]
pub struct ResponseTimer(std::sync::Mutex<Option<Pin<Box<tokio::time::Sleep>>>>);

impl ResponseTimer {
    /// Resolves at `at`.
    pub fn until(&self, at: tokio::time::Instant) -> ResponseDeadline<'_> {
        ResponseDeadline { timer: self, at }
    }
}

pub struct ResponseDeadline<'a> {
    timer: &'a ResponseTimer,
    at: tokio::time::Instant,
}

impl Future for ResponseDeadline<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A panic elsewhere while holding it leaves the timer itself sound: keep using it.
        let mut timer = self.timer.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(self.at)));
        if sleep.deadline() > self.at {
            sleep.as_mut().reset(self.at);
        }
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if tokio::time::Instant::now() >= self.at {
                return Poll::Ready(());
            }
            // It fired for an earlier request's deadline: on to this one's.
            sleep.as_mut().reset(self.at);
        }
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No request for `--idle-timeout`.
    Idle,
    /// A request head started but was not complete within `--header-read-timeout`.
    HeaderRead,
}

/// Times are milliseconds since the connection opened, plus one (0 means "not set").
pub struct Activity {
    opened: Instant,
    /// Requests being answered; a response counts until its body has been sent (or dropped).
    in_flight: AtomicU32,
    /// When the connection last had no request in flight.
    idle_since: AtomicU64,
    /// When the first byte of the next request arrived on an idle connection.
    head_started: AtomicU64,
    /// HTTP/2: bytes on an idle connection are frames (pings, settings), not a request head.
    multiplexed: AtomicBool,
    /// The raw bytes of the request head being read (HTTP/1.1; up to [`HEAD_COPY_LIMIT`]): hyper
    /// drops `Content-Length` when `Transfer-Encoding` is also sent, and this is how portier can
    /// still see both and refuse the request.
    head: std::sync::Mutex<Vec<u8>>,
    /// The request being answered is the one `head` holds (its head was read while idle, not
    /// pipelined behind the previous one).
    head_fresh: AtomicBool,
}

/// The most of a request head kept for the Content-Length + Transfer-Encoding check (a head
/// longer than `--max-header-bytes` is refused by hyper anyway).
const HEAD_COPY_LIMIT: usize = 64 * 1024;
/// The buffer kept between requests (a usual head fits in well under it).
const HEAD_KEEP_CAPACITY: usize = 4 * 1024;

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(1),
            head_started: AtomicU64::new(0),
            multiplexed: AtomicBool::new(false),
            head: std::sync::Mutex::new(Vec::new()),
            head_fresh: AtomicBool::new(false),
        }
    }

    fn stamp(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }

    /// A request arrived (its head is complete).
    pub fn request_started(&self, http2: bool) {
        if http2 && !self.multiplexed.load(Ordering::Relaxed) {
            self.multiplexed.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let fresh = self.head_started.load(Ordering::Relaxed) != 0;
        self.head_fresh.store(fresh, Ordering::Relaxed);
        if fresh {
            self.head_started.store(0, Ordering::Relaxed);
        }
    }

    /// A request's response was sent, or the request was abandoned.
    pub fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle_since.store(self.stamp(), Ordering::Relaxed);
        }
    }

    /// Bytes were read from the client.
    fn bytes_read(&self, bytes: &[u8]) {
        if self.in_flight.load(Ordering::Relaxed) != 0 || self.multiplexed.load(Ordering::Relaxed) {
            return;
        }
        let new_head = self.head_started.load(Ordering::Relaxed) == 0;
        if new_head {
            self.head_started.store(self.stamp(), Ordering::Relaxed);
        }
        if let Ok(mut head) = self.head.lock() {
            if new_head {
                head.clear();
                // A large head once should not hold its buffer for the connection's life.
                if head.capacity() > HEAD_KEEP_CAPACITY {
                    head.shrink_to(HEAD_KEEP_CAPACITY);
                }
            }
            let room = HEAD_COPY_LIMIT.saturating_sub(head.len());
            head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    /// Whether the head of the request being answered had a `Content-Length` header. Only asked
    /// for requests that carry `Transfer-Encoding`; false when the head was not seen whole (read
    /// behind a pipelined request): hyper then frames by Transfer-Encoding alone.
    pub fn head_had_content_length(&self) -> bool {
        if !self.head_fresh.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(head) = self.head.lock() else { return false };
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
        head[..end].split(|&b| b == b'\n').skip(1).any(|line| {
            line.iter()
                .position(|&b| b == b':')
                .is_some_and(|colon| line[..colon].trim_ascii().eq_ignore_ascii_case(b"content-length"))
        })
    }

    /// When the connection is to be closed if nothing changes; None while a request is in flight.
    fn deadline(&self, limits: &Timeouts) -> Option<(Instant, Expired)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let at = |stamp: u64, after: Duration| self.opened + Duration::from_millis(stamp - 1) + after;
        match self.head_started.load(Ordering::Relaxed) {
            0 => Some((at(self.idle_since.load(Ordering::Relaxed).max(1), limits.idle), Expired::Idle)),
            started => Some((at(started, limits.header_read), Expired::HeaderRead)),
        }
    }
}

/// The client timeouts the watchdog enforces.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `--idle-timeout`.
    pub idle: Duration,
    /// `--header-read-timeout`.
    pub header_read: Duration,
}

/// Resolves when the connection has been idle, or reading one request head, for too long.
/// Polled after the connection itself on every wake-up, so a deadline that moved closer (a head
/// started) is seen at once; the timer is only reset when the deadline moves closer, or fires.
pub struct Watchdog {
    ctx: Arc<ConnCtx>,
    timeouts: Timeouts,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Watchdog {
    pub fn new(ctx: Arc<ConnCtx>, timeouts: Timeouts) -> Self {
        let sleep = Box::pin(tokio::time::sleep(timeouts.idle));
        Self { ctx, timeouts, sleep }
    }
}

impl Future for Watchdog {
    type Output = Expired;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Expired> {
        let this = &mut *self;
        loop {
            let deadline = this.ctx.activity.deadline(&this.timeouts);
            if let Some((at, _)) = deadline {
                if tokio::time::Instant::from_std(at) < this.sleep.deadline() {
                    this.sleep.as_mut().reset(tokio::time::Instant::from_std(at));
                }
            }
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            match deadline {
                Some((at, why)) if at <= Instant::now() => return Poll::Ready(why),
                Some((at, _)) => this.sleep.as_mut().reset(tokio::time::Instant::from_std(at)),
                // Busy: look again later (the deadline only exists once it is idle again).
                None => this.sleep.as_mut().reset(tokio::time::Instant::now() + this.timeouts.idle),
            }
        }
    }
}

/// The client's socket, noting when a request head starts arriving on an idle connection.
pub struct Watched<S> {
    inner: S,
    ctx: Arc<ConnCtx>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, ctx: Arc<ConnCtx>) -> Self {
        Self { inner, ctx }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ctx.activity.bytes_read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request as in flight on its connection from its head until it is dropped (its
/// response body sent, or the client gone).
pub struct InFlight(pub Arc<ConnCtx>);

impl InFlight {
    pub fn start(ctx: Arc<ConnCtx>, http2: bool) -> Self {
        ctx.activity.request_started(http2);
        Self(ctx)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.activity.request_finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Timeouts = Timeouts { idle: Duration::from_secs(90), header_read: Duration::from_secs(10) };

    #[test]
    fn idle_deadline_then_head_deadline_then_none_while_busy() {
        let activity = Activity::new();
        let (idle_at, why) = activity.deadline(&LIMITS).unwrap();
        assert_eq!(why, Expired::Idle);
        assert!(idle_at >= activity.opened + Duration::from_secs(90));

        activity.bytes_read(b"GET / HTTP/1.1\r\n");
        let (head_at, why) = activity.deadline(&LIMITS).unwrap();
        assert_eq!(why, Expired::HeaderRead);
        assert!(head_at < idle_at);

        activity.request_started(false);
        assert_eq!(activity.deadline(&LIMITS), None);
        // Body bytes of a request in flight do not start a head.
        activity.bytes_read(b"GET / HTTP/1.1\r\n");
        activity.request_finished();
        assert_eq!(activity.deadline(&LIMITS).map(|(_, why)| why), Some(Expired::Idle));
    }

    #[test]
    fn sees_content_length_in_the_raw_head_across_reads() {
        let activity = Activity::new();
        activity.bytes_read(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nCont");
        activity.bytes_read(b"ent-Length : 4\r\n\r\n3\r\nabc\r\n0\r\n\r\nPOST / HTTP/1.1\r\n");
        activity.request_started(false);
        assert!(activity.head_had_content_length());
        activity.request_finished();
        // The pipelined request after it was not read while idle: its head is not the one kept.
        activity.request_started(false);
        assert!(!activity.head_had_content_length());
        activity.request_finished();
        activity.bytes_read(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        activity.request_started(false);
        assert!(!activity.head_had_content_length(), "a new head replaces the last one");
        // In the body, not the head: not a header.
        activity.request_finished();
        activity.bytes_read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\ncontent-length: 1\r\n");
        activity.request_started(false);
        assert!(!activity.head_had_content_length());
    }

    #[test]
    fn http2_frames_on_an_idle_connection_are_not_a_request_head() {
        let activity = Activity::new();
        activity.request_started(true);
        activity.request_finished();
        activity.bytes_read(b"GET / HTTP/1.1\r\n");
        assert_eq!(activity.deadline(&LIMITS).map(|(_, why)| why), Some(Expired::Idle));
    }

    #[test]
    fn concurrent_streams_keep_the_connection_busy_until_the_last_ends() {
        let activity = Activity::new();
        activity.request_started(true);
        activity.request_started(true);
        activity.request_finished();
        assert_eq!(activity.deadline(&LIMITS), None);
        activity.request_finished();
        assert!(activity.deadline(&LIMITS).is_some());
    }
}
