//! The request pipeline, top to bottom:
//!
//! 1. **entry** (`entry.rs`): accept, TLS with SNI on the https entry, HTTP/1.1 or HTTP/2.
//! 2. **force https**: the http entry answers every request with a redirect to https that keeps
//!    the host (without port), the original path and the query.
//! 3. **route**: one atomic load of the current config, then a lookup by host and path.
//! 4. **rewrite**: strip or replace the path; the bare prefix of a strip route redirects to
//!    `prefix/`.
//! 5. **forward headers**: hop-by-hop removed, X-Forwarded-* set, Host kept or replaced.
//! 6. **upstream** (`upstream.rs`): a pooled client per backend transport; upgrades tunnelled.
//! 7. **response**: hop-by-hop removed, `Server` added when missing, errors made readable.
//! 8. **observe** ([`Metered`]): when the response body ends (or the client goes away), the
//!    route's request counter and duration histogram, and the access log line.
//!
//! Steps 2 to 4 decide without IO ([`entry_redirect`], [`route_request`], [`upstream_host`]);
//! the admin's `/api/explain` calls the same functions, so its answer cannot drift from what
//! the proxy does.

pub mod balance;
pub mod connection;
pub mod entry;
pub mod middleware;
pub mod pool;
pub mod upstream;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use ipnet::IpNet;

use self::connection::{ConnCtx, InFlight};
use self::middleware::Rewritten;
use self::upstream::{BackendClients, UpstreamErrorKind, UpstreamFailure};
use crate::access_log::{AccessLog, Pending};
use crate::config::{Backend, BackendId, Config, Route, RouteId, Scheme, Target};
use crate::metrics::{BackendHandles, EntryAddresses, Metrics, Observers};

/// A backend's response body (from a pooled HTTP/1.1 connection, or the HTTP/2 client), or one
/// portier wrote.
pub type ResponseBody = Either<Either<pool::PooledBody, Incoming>, Full<Bytes>>;

/// The config in use and the clients of its backends (same order as `config.backends`).
pub struct Live {
    pub config: Arc<Config>,
    pub clients: Vec<BackendClients>,
    /// The authorities of each backend's endpoints (same order as `config.backends`, and within
    /// one, as its endpoints and as its clients' pools; one for an ExternalName), made once per
    /// swap.
    pub authorities: Vec<Vec<Authority>>,
    pub generation: u64,
    pub swapped_at: SystemTime,
    /// Metric handles and health stats of the routes and backends (same order as the config's).
    pub observers: Observers,
}

/// Settings of the proxy that do not change while it runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Redirect every http request to https (off with `--no-https-redirect`).
    pub https_redirect: bool,
    /// Port written in redirect Locations (omitted when 443).
    pub https_port: u16,
    pub trusted_proxies: Vec<IpNet>,
    pub response_header_timeout: Duration,
    /// `--tls-handshake-timeout`.
    pub tls_handshake_timeout: Duration,
    /// `--header-read-timeout` (slowloris).
    pub header_read_timeout: Duration,
    /// `--max-connections`, per entry.
    pub max_connections: usize,
    /// `--idle-timeout`: a keep-alive connection waiting for its next request.
    pub idle_timeout: Duration,
    /// `--max-header-bytes`.
    pub max_header_bytes: usize,
    /// `--max-headers`.
    pub max_headers: usize,
    /// `--max-uri-length`: longer request targets get 414.
    pub max_uri_length: usize,
    /// `--http2-max-concurrent-streams`.
    pub http2_max_concurrent_streams: u32,
}

pub struct Shared {
    pub live: ArcSwap<Live>,
    pub settings: Settings,
    /// True once the first complete set of objects has been loaded and translated.
    pub ready: std::sync::atomic::AtomicBool,
    pub metrics: Metrics,
    /// `--access-log`; None when off.
    pub access_log: Option<AccessLog>,
    pub entries: EntryAddresses,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Http,
    Https,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Http => "http",
            EntryKind::Https => "https",
        }
    }
}

/// The connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub entry: EntryKind,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

const SERVER: HeaderValue = HeaderValue::from_static("portier");

pub async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Result<Response<Metered>, Infallible> {
    let in_flight = InFlight::start(ctx, req.version() == Version::HTTP_2);
    let (shared, conn) = (&in_flight.0.shared, in_flight.0.conn);
    let mut seen = Seen {
        start: Instant::now(),
        live: None,
        route: None,
        backend: None,
        upstream: None,
        log: shared.access_log.as_ref().map(|_| Box::new(pending(&conn, &req))),
    };
    let response = proxy(&in_flight.0, req, &mut seen).await;
    let (parts, body) = response.into_parts();
    let status = parts.status.as_u16();
    Ok(Response::from_parts(parts, Metered { body, bytes: 0, finish: Some(Finish { in_flight, seen, status }) }))
}

/// The access log's view of a request as it arrives.
fn pending<B>(conn: &Connection, req: &Request<B>) -> Pending {
    Pending {
        time: SystemTime::now(),
        entry: conn.entry.as_str(),
        client: conn.peer.ip(),
        method: req.method().clone(),
        host: request_host(req).to_string(),
        path: req.uri().path().to_string(),
        version: req.version(),
        address: None,
    }
}

async fn proxy(ctx: &Arc<ConnCtx>, mut req: Request<Incoming>, seen: &mut Seen) -> Response<ResponseBody> {
    let (shared, conn) = (&*ctx.shared, ctx.conn);
    let settings = &shared.settings;
    if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > settings.max_uri_length {
        return text(
            StatusCode::URI_TOO_LONG,
            format!("414 URI Too Long: the request target is over {} bytes\n", settings.max_uri_length),
        );
    }
    // Content-Length with Transfer-Encoding: hyper frames by the latter and drops the former, but
    // a request that carries both is how request smuggling starts; refuse it and close (RFC 9112
    // 6.1: the connection must not be reused), as nginx does.
    if req.version() == Version::HTTP_11
        && req.headers().contains_key(header::TRANSFER_ENCODING)
        && ctx.activity.head_had_content_length()
    {
        let mut response =
            text(StatusCode::BAD_REQUEST, "400 Bad Request: both Content-Length and Transfer-Encoding\n".into());
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    if authority_mismatch(&req) {
        return text(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: the Host header names another host than the request target\n".into(),
        );
    }
    // The host as a header value: a clone of the client's Host (shared bytes, no copy), so it
    // can be borrowed while the request is taken apart, and sent on as is.
    let host_value = request_host_value(&req);
    let host = host_value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");

    // 2. force https, before routing: the path is the one the client sent.
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Some((status, location)) = entry_redirect(settings, conn.entry, req.method(), host, path_and_query) {
        return redirect_or_bad_host(status, location);
    }

    // 3. route: the only load of the config for this request.
    // Kept in `seen` (for the metrics when the body ends), borrowed from there: no extra clone.
    let live: &Live = seen.live.insert(shared.live.load_full());
    let config = &live.config;
    let path = req.uri().path();

    // 4. rewrite.
    let (route_id, path_and_query, forwarded_prefix, replaced_path) =
        match route_request(config, settings, conn.entry, req.method(), host, path, req.uri().query()) {
            Routed::NoRoute => return not_found(host, path),
            Routed::Redirect { route, status, location, .. } => {
                seen.route = Some(route);
                return redirect_or_bad_host(status, location);
            }
            Routed::Forward { route, path_and_query, forwarded_prefix, replaced_path } => (
                route,
                upstream_path(req.uri(), path_and_query),
                forwarded_prefix.and_then(|p| HeaderValue::from_str(p).ok()),
                replaced_path.and_then(|p| HeaderValue::from_str(p).ok()),
            ),
        };
    seen.route = Some(route_id);
    let Some(route) = config.routes.get(route_id) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error: route not found\n".into());
    };

    let Some((backend, clients)) = config.backends.get(route.backend).zip(live.clients.get(route.backend)) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error: route has no backend\n".into());
    };
    seen.backend = Some(route.backend);
    let observer = live.observers.backends.get(route.backend);
    let health = health_of(observer);
    let now_ms = shared.metrics.now_ms(seen.start);
    let Some(chosen) = balance::pick(backend, health, now_ms, None) else {
        let failure = UpstreamFailure::new(UpstreamErrorKind::Unavailable, unavailable_reason(backend));
        if let Some(observer) = observer {
            observer.record_error(shared.metrics.now(seen.start), failure.kind, failure.detail.clone(), None);
        }
        return text(
            failure.status(),
            format!("503 Service Unavailable: backend {}: {}\n", backend.name, failure.detail),
        );
    };
    let authorities = live.authorities.get(route.backend).map_or(&[][..], Vec::as_slice);
    let Some(path_and_query) = path_and_query else {
        return text(StatusCode::BAD_REQUEST, "400 Bad Request: the rewritten URL is invalid\n".into());
    };
    let Some((mut authority, uri)) = target_uri(backend, authorities, chosen, &path_and_query) else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 Internal Server Error: no address for the endpoint\n".into(),
        );
    };

    // 5. forward headers.
    let upgrade = req.version() == Version::HTTP_11 && middleware::is_upgrade(req.headers());
    let client_http2 = req.version() == Version::HTTP_2;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    middleware::strip_hop_by_hop(headers, upgrade);
    if parts.version == Version::HTTP_2 {
        middleware::join_cookies(headers);
    }
    middleware::set_forwarding_headers(headers, &ctx.client, host_value.as_ref());
    if let Some(prefix) = forwarded_prefix {
        headers.insert(middleware::X_FORWARDED_PREFIX, prefix);
    }
    if let Some(original) = replaced_path {
        headers.insert(middleware::X_REPLACED_PATH, original);
    }
    let upstream_host = match route.preserve_host {
        true => host_value,
        false => upstream_host(route, backend, host).and_then(|h| HeaderValue::from_str(h).ok()),
    };
    match upstream_host {
        Some(v) => {
            headers.insert(header::HOST, v);
        }
        None => {
            headers.remove(header::HOST);
        }
    }
    parts.version = Version::HTTP_11;
    // A request that may be sent again to another endpoint if the connection fails: idempotent,
    // with no body, and a backend with more than one endpoint. Only then are its headers kept.
    let retry = (chosen.index.is_some() && health.len() > 1 && is_idempotent(&parts.method) && body.is_end_stream())
        .then(|| (parts.method.clone(), parts.headers.clone()));
    let body = match retry {
        Some(_) => Either::Right(Empty::new()),
        None => Either::Left(body),
    };

    // 6. upstream: HTTP/1.1 pools for HTTP/1.1 backends and for upgrades, the HTTP/2 client
    // otherwise.
    let via = match &clients.http2 {
        Some(client) if !upgrade => Via::Http2(client),
        _ => Via::Pools(&clients.pools),
    };
    let wait = route.response_timeout_ms.map_or(settings.response_header_timeout, Duration::from_millis);
    let sent_at = Instant::now();
    parts.uri = uri;
    // HTTP/1.1 requests come one at a time per connection, and share its timer.
    let timer = (!client_http2).then_some(&ctx.response_timer);
    let mut sent = send_upstream(via, timer, attempt_index(chosen), Request::from_parts(parts, body), wait).await;
    let (mut attempt, mut retry) = (chosen, retry);
    loop {
        let connect_failed = matches!(&sent, Err(Attempt { connect_failed: true, .. }));
        note_endpoint(shared, backend, observer, attempt.index, &sent, authority);
        let Some((method, headers)) = retry.take().filter(|_| connect_failed) else { break };
        let Some(next) = balance::pick(backend, health, now_ms, attempt.index) else { break };
        let Some((next_authority, next_uri)) = target_uri(backend, authorities, next, &path_and_query) else { break };
        tracing::debug!(backend = %backend.name, from = %authority, to = %next_authority, "retrying on another endpoint");
        if let Some(observer) = observer {
            observer.record_retry();
        }
        let mut request = Request::new(Either::Right(Empty::new()));
        *request.method_mut() = method;
        *request.headers_mut() = headers;
        *request.uri_mut() = next_uri;
        (attempt, authority) = (next, next_authority);
        sent = send_upstream(via, timer, attempt_index(next), request, wait).await;
    }
    if let Some(log) = seen.log.as_mut() {
        log.address = Some(authority.to_string());
    }
    seen.upstream = Some(sent_at.elapsed());
    let now = shared.metrics.now(sent_at);
    let mut response = match sent {
        Ok(response) => {
            if let Some(observer) = observer {
                observer.record_ok(now);
            }
            response
        }
        Err(Attempt { failure, .. }) => {
            let target = format!("{}://{authority}", backend.transport.scheme.as_str());
            tracing::debug!(backend = %backend.name, %target, ?failure, "upstream request failed");
            if let Some(observer) = observer {
                observer.record_error(now, failure.kind, failure.detail.clone(), Some(authority.to_string()));
            }
            return upstream_error(failure, &backend.name, &target);
        }
    };

    // 7. response.
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            // The tunnel outlives the HTTP connection it came from: count it as open while it lasts,
            // and keep the connection's permit, so drain waits for it (up to the grace period).
            let open = shared.metrics.connection_opened(conn.entry);
            let hold = ctx.clone();
            tokio::spawn(async move {
                tunnel(client_upgrade, upstream_upgrade).await;
                drop((open, hold));
            });
        }
    }
    middleware::strip_hop_by_hop(response.headers_mut(), switching && upgrade);
    response.headers_mut().entry(header::SERVER).or_insert(SERVER);
    if conn.entry == EntryKind::Https {
        if let Some(hsts) = route.hsts.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
            response.headers_mut().entry(header::STRICT_TRANSPORT_SECURITY).or_insert(hsts);
        }
    }
    response.map(Either::Left)
}

/// One attempt's failure, and whether it happened while connecting (nothing was sent, so the
/// request may go to another endpoint).
struct Attempt {
    failure: UpstreamFailure,
    connect_failed: bool,
}

/// Where a backend's requests go.
#[derive(Clone, Copy)]
enum Via<'a> {
    /// One pool per endpoint, by the endpoint's index.
    Pools(&'a [Arc<pool::EndpointPool>]),
    Http2(&'a upstream::UpstreamClient),
}

fn attempt_index(chosen: balance::Chosen<'_>) -> usize {
    chosen.index.unwrap_or(0)
}

/// Sends a request to its backend, waiting at most `wait` for the response headers. The request's
/// URI is absolute (scheme, endpoint, path); `endpoint` is the index of the endpoint it names.
async fn send_upstream(
    via: Via<'_>,
    timer: Option<&connection::ResponseTimer>,
    endpoint: usize,
    mut request: Request<upstream::UpstreamBody>,
    wait: Duration,
) -> Result<Response<Either<pool::PooledBody, Incoming>>, Attempt> {
    let failed = |error: &(dyn std::error::Error + 'static), connect: bool| Attempt {
        failure: upstream::classify(error, connect),
        connect_failed: connect,
    };
    let sent = match via {
        Via::Http2(client) => within(timer, wait, client.request(request))
            .await
            .map(|sent| sent.map(|response| response.map(Either::Right)).map_err(|e| failed(&e, e.is_connect()))),
        Via::Pools(pools) => {
            let Some(pool) = pools.get(endpoint) else {
                let detail = "no connection pool for the endpoint".to_string();
                return Err(Attempt {
                    failure: UpstreamFailure::new(UpstreamErrorKind::Other, detail),
                    connect_failed: false,
                });
            };
            to_origin_form(&mut request);
            within(timer, wait, pool.send(request)).await.map(|sent| {
                sent.map(|response| response.map(Either::Left)).map_err(|e| failed(e.as_error(), e.is_connect()))
            })
        }
    };
    sent.unwrap_or_else(|_| {
        Err(Attempt {
            failure: UpstreamFailure::new(
                UpstreamErrorKind::Timeout,
                format!("no response headers within {}", humantime::format_duration(wait)),
            ),
            connect_failed: false,
        })
    })
}

/// `sending`, unless `wait` passes first (on the connection's timer, when it has one to share).
/// A combinator rather than an async fn, which would hold `sending` twice (its argument, and
/// the select over it): request futures are moved per request, so their size is CPU.
fn within<'a, F: std::future::Future + 'a>(
    timer: Option<&'a connection::ResponseTimer>,
    wait: Duration,
    sending: F,
) -> impl std::future::Future<Output = Result<F::Output, ()>> + 'a {
    use futures_util::FutureExt;
    match timer {
        None => {
            futures_util::future::Either::Left(tokio::time::timeout(wait, sending).map(|sent| sent.map_err(|_| ())))
        }
        Some(timer) => futures_util::future::Either::Right(WithinDeadline {
            sending,
            deadline: timer.until(tokio::time::Instant::now() + wait),
        }),
    }
}

pin_project_lite::pin_project! {
    /// `sending`, unless the connection's shared response timer reaches `deadline` first.
    struct WithinDeadline<'a, F> {
        #[pin]
        sending: F,
        deadline: connection::ResponseDeadline<'a>,
    }
}

impl<F: std::future::Future> std::future::Future for WithinDeadline<'_, F> {
    type Output = Result<F::Output, ()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(sent) = this.sending.poll(cx) {
            return Poll::Ready(Ok(sent));
        }
        Pin::new(this.deadline).poll(cx).map(|()| Err(()))
    }
}

/// An HTTP/1.1 request names its target in origin-form (`/path?query`; authority-form for
/// CONNECT), with a Host header: the endpoint's (without a default port) when the request has none.
fn to_origin_form(request: &mut Request<upstream::UpstreamBody>) {
    let Some(authority) = request.uri().authority().cloned() else { return };
    if !request.headers().contains_key(header::HOST) {
        let default_port = if request.uri().scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port == default_port => authority.host(),
            _ => authority.as_str(),
        };
        if let Ok(host) = HeaderValue::from_str(host) {
            request.headers_mut().insert(header::HOST, host);
        }
    }
    let mut parts = http::uri::Parts::default();
    if request.method() == Method::CONNECT {
        parts.authority = Some(authority);
    } else {
        parts.path_and_query = request.uri().path_and_query().cloned();
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// Passive health: an endpoint that failed to connect is skipped for a while; one that answered
/// is cleared.
fn note_endpoint(
    shared: &Shared,
    backend: &Backend,
    observer: Option<&BackendHandles>,
    index: Option<usize>,
    sent: &Result<Response<Either<pool::PooledBody, Incoming>>, Attempt>,
    authority: &Authority,
) {
    let Some(health) = index.and_then(|i| health_of(observer).get(i)) else { return };
    match sent {
        Ok(_) => health.succeeded(),
        Err(Attempt { connect_failed: true, .. }) => {
            let skip = health.failed(shared.metrics.now_ms(Instant::now()));
            tracing::debug!(backend = %backend.name, %authority, ?skip, "endpoint failed to connect: skipped for a while");
            if let Some(observer) = observer {
                observer.record_skip();
            }
        }
        Err(_) => {}
    }
}

/// The passive health records of a backend's endpoints (none when it has no observer).
fn health_of(observer: Option<&BackendHandles>) -> &[Arc<balance::EndpointHealth>] {
    observer.map_or(&[][..], |o| &o.endpoints[..])
}

/// The authority (`ip:port` or `name:port`) of the chosen endpoint, and the URI to send upstream:
/// built from parts made earlier (shared, not copied), so no allocation.
fn target_uri<'a>(
    backend: &Backend,
    authorities: &'a [Authority],
    chosen: balance::Chosen<'_>,
    path_and_query: &PathAndQuery,
) -> Option<(&'a Authority, Uri)> {
    let authority = authorities.get(chosen.index.unwrap_or(0))?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(match backend.transport.scheme {
        Scheme::Http => http::uri::Scheme::HTTP,
        Scheme::Https => http::uri::Scheme::HTTPS,
    });
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(path_and_query.clone());
    Some((authority, Uri::from_parts(parts).ok()?))
}

/// The path and query sent upstream: the client's own (shared, not copied) when unchanged.
fn upstream_path(uri: &Uri, rewritten: Cow<'_, str>) -> Option<PathAndQuery> {
    match uri.path_and_query() {
        Some(original) if original.as_str() == rewritten => Some(original.clone()),
        _ => PathAndQuery::try_from(rewritten.into_owned()).ok(),
    }
}

/// Methods whose request may be sent twice (RFC 9110, 9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

/// Step 2: on the http entry (unless `--no-https-redirect`), every request is answered with a
/// redirect to https, before routing. `(status, location)`; no location when the host is invalid.
pub fn entry_redirect(
    settings: &Settings,
    entry: EntryKind,
    method: &Method,
    host: &str,
    path_and_query: &str,
) -> Option<(StatusCode, Option<String>)> {
    (entry == EntryKind::Http && settings.https_redirect).then(|| {
        (
            middleware::redirect_status(method, true),
            middleware::https_location(host, settings.https_port, path_and_query),
        )
    })
}

/// Why a route answers with a redirect instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectReason {
    /// The route's `redirect-entry-point: https`, on the http entry.
    Https,
    /// The bare prefix of a strip route (`/k8s` → `/k8s/`).
    TrailingSlash,
}

/// What steps 3 and 4 decide for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed<'a> {
    /// No route (and no default backend): 404.
    NoRoute,
    /// Answer with a redirect; with no location (the host cannot be written in one), 400.
    Redirect { route: RouteId, status: StatusCode, location: Option<String>, reason: RedirectReason },
    /// Proxy with this path and query, and these headers.
    Forward {
        route: RouteId,
        path_and_query: Cow<'a, str>,
        forwarded_prefix: Option<&'a str>,
        replaced_path: Option<&'a str>,
    },
}

/// Steps 3 and 4 without IO: the route for this host and raw path, and what it does with them.
pub fn route_request<'a>(
    config: &'a Config,
    settings: &Settings,
    entry: EntryKind,
    method: &Method,
    host: &str,
    path: &'a str,
    query: Option<&'a str>,
) -> Routed<'a> {
    let Some((id, route)) = config.router.lookup(host, path).and_then(|id| config.routes.get(id).map(|r| (id, r)))
    else {
        return Routed::NoRoute;
    };
    if entry == EntryKind::Http {
        if let Some(kind) = route.redirect_to_https {
            let path_and_query = match query {
                Some(q) => Cow::Owned(format!("{path}?{q}")),
                None => Cow::Borrowed(path),
            };
            return Routed::Redirect {
                route: id,
                status: middleware::redirect_status(method, kind.permanent),
                location: middleware::https_location(host, settings.https_port, &path_and_query),
                reason: RedirectReason::Https,
            };
        }
    }
    match middleware::rewrite(route, path, query) {
        Rewritten::SlashRedirect(location) => Routed::Redirect {
            route: id,
            status: middleware::redirect_status(method, true),
            location: Some(location),
            reason: RedirectReason::TrailingSlash,
        },
        Rewritten::Forward { path_and_query, forwarded_prefix, replaced_path } => {
            Routed::Forward { route: id, path_and_query, forwarded_prefix, replaced_path }
        }
    }
}

/// The `Host` sent upstream: the client's, or the backend's own with `preserve-host: "false"`.
/// None: no Host header.
pub fn upstream_host<'a>(route: &Route, backend: &'a Backend, client_host: &'a str) -> Option<&'a str> {
    let host = if route.preserve_host { client_host } else { backend.authority.as_str() };
    (!host.is_empty()).then_some(host)
}

/// Why a backend has no address to send to (the 503 body).
pub fn unavailable_reason(backend: &Backend) -> String {
    match &backend.target {
        Target::Unavailable(reason) => reason.clone(),
        _ => format!("Service {} has no ready endpoints", backend.service),
    }
}

fn not_found(host: &str, path: &str) -> Response<ResponseBody> {
    text(StatusCode::NOT_FOUND, format!("404 Not Found: no route for host {host:?} and path {path:?}\n"))
}

/// What the pipeline learned about a request, for the metrics and the access log.
struct Seen {
    start: Instant,
    /// The config the request was routed with (None: answered before routing).
    live: Option<Arc<Live>>,
    route: Option<RouteId>,
    backend: Option<BackendId>,
    /// Time from sending upstream to the response headers (or the failure).
    upstream: Option<Duration>,
    log: Option<Box<Pending>>,
}

struct Finish {
    /// The request stays in flight on its connection until this is dropped.
    in_flight: InFlight,
    seen: Seen,
    status: u16,
}

/// Step 8, observe: the response body, counted as it streams. When it ends or is dropped (the
/// client went away, or a HEAD), the request is counted for its route and written to the access
/// log.
pub struct Metered {
    body: ResponseBody,
    bytes: u64,
    finish: Option<Finish>,
}

impl Metered {
    fn finish(&mut self) {
        let Some(Finish { in_flight, seen, status }) = self.finish.take() else { return };
        let shared = &in_flight.0.shared;
        let duration = seen.start.elapsed();
        let live = seen.live.as_deref();
        let handles = live.zip(seen.route).and_then(|(live, id)| live.observers.routes.get(id));
        handles.unwrap_or(&shared.metrics.unrouted).record(status, duration);
        if let (Some(log), Some(pending)) = (&shared.access_log, &seen.log) {
            let config = live.map(|l| &*l.config);
            let route = config.zip(seen.route).and_then(|(c, id)| c.routes.get(id)).map(|r| r.id.as_str());
            let backend = config.zip(seen.backend).and_then(|(c, id)| c.backends.get(id)).map(|b| b.name.as_str());
            log.log(&pending.record(status, self.bytes, duration, route, backend, seen.upstream));
        }
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(_) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Copies bytes both ways between the upgraded client and backend connections until both close.
/// No idle timeout: an exec session or log follow may sit quiet for a long time.
async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = hyper_util::rt::TokioIo::new(client);
            let mut upstream = hyper_util::rt::TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
    }
}

/// The host the client asked for: the URI authority (HTTP/2, absolute-form, without any
/// `user@`) or the Host header.
fn request_host<B>(req: &Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, host)| host))
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
}

/// An absolute-form target (or HTTP/2 `:authority`) and a `Host` header naming different hosts:
/// routing and the backend could disagree on which site is meant, so the request is refused
/// (RFC 9113 8.3.1 for HTTP/2; for HTTP/1.1 stricter than RFC 9112, as nginx is).
fn authority_mismatch<B>(req: &Request<B>) -> bool {
    let (Some(authority), Some(host)) = (req.uri().authority(), req.headers().get(header::HOST)) else {
        return false;
    };
    let target = authority.as_str().rsplit_once('@').map_or(authority.as_str(), |(_, h)| h);
    let Ok(host) = host.to_str() else { return true };
    !crate::router::strip_port(target).eq_ignore_ascii_case(crate::router::strip_port(host))
}

/// [`request_host`] as a header value; None when there is none (or it is empty).
fn request_host_value<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(_) => HeaderValue::from_str(request_host(req)).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
    .filter(|v| !v.is_empty() && v.to_str().is_ok())
}

fn redirect_or_bad_host(status: StatusCode, location: Option<String>) -> Response<ResponseBody> {
    match location {
        Some(location) => redirect(status, &location),
        None => text(StatusCode::BAD_REQUEST, "400 Bad Request: missing or invalid Host header\n".into()),
    }
}

fn redirect(status: StatusCode, location: &str) -> Response<ResponseBody> {
    let mut response = text(status, format!("{status}: {location}\n"));
    match HeaderValue::from_str(location) {
        Ok(v) => {
            response.headers_mut().insert(header::LOCATION, v);
            response
        }
        Err(_) => text(StatusCode::BAD_REQUEST, "400 Bad Request: cannot build the redirect location\n".into()),
    }
}

fn upstream_error(failure: UpstreamFailure, backend: &str, target: &str) -> Response<ResponseBody> {
    let status = failure.status();
    text(status, format!("{status}: backend {backend} ({target}): {}\n", failure.detail))
}

pub fn text(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::SERVER, SERVER);
    response
}
