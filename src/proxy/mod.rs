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

pub mod entry;
pub mod middleware;
pub mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use ipnet::IpNet;

use self::middleware::{ClientInfo, Rewritten};
use self::upstream::{BackendClients, UpstreamFailure};
use crate::config::{Config, Endpoint, Target};

pub type ResponseBody = Either<Incoming, Full<Bytes>>;

/// The config in use and the clients of its backends (same order as `config.backends`).
pub struct Live {
    pub config: Arc<Config>,
    pub clients: Vec<BackendClients>,
    pub generation: u64,
    pub swapped_at: SystemTime,
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
}

pub struct Shared {
    pub live: ArcSwap<Live>,
    pub settings: Settings,
    /// True once the first complete set of objects has been loaded and translated.
    pub ready: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Http,
    Https,
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

pub async fn handle(
    shared: Arc<Shared>,
    conn: Connection,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    Ok(proxy(&shared, conn, req).await)
}

async fn proxy(shared: &Shared, conn: Connection, mut req: Request<Incoming>) -> Response<ResponseBody> {
    let settings = &shared.settings;
    let host = request_host(&req).to_string();

    // 2. force https, before routing: the path is the one the client sent.
    if conn.entry == EntryKind::Http && settings.https_redirect {
        return redirect_to_https(&req, &host, settings.https_port, true);
    }

    // 3. route: the only load of the config for this request.
    let live = shared.live.load_full();
    let config = &live.config;
    let path = req.uri().path();
    let Some(route) = config.router.lookup(&host, path).and_then(|id| config.routes.get(id)) else {
        return text(StatusCode::NOT_FOUND, format!("404 Not Found: no route for host {host:?} and path {path:?}\n"));
    };
    if conn.entry == EntryKind::Http {
        if let Some(kind) = route.redirect_to_https {
            return redirect_to_https(&req, &host, settings.https_port, kind.permanent);
        }
    }

    // 4. rewrite.
    let (path_and_query, forwarded_prefix, replaced_path) = match middleware::rewrite(route, path, req.uri().query()) {
        Rewritten::SlashRedirect(location) => {
            let status = middleware::redirect_status(req.method(), true);
            return redirect(status, &location);
        }
        Rewritten::Forward { path_and_query, forwarded_prefix, replaced_path } => (
            path_and_query.into_owned(),
            forwarded_prefix.and_then(|p| HeaderValue::from_str(p).ok()),
            replaced_path.and_then(|p| HeaderValue::from_str(p).ok()),
        ),
    };

    let Some((backend, clients)) = config.backends.get(route.backend).zip(live.clients.get(route.backend)) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "500 Internal Server Error: route has no backend\n".into());
    };
    let Some(endpoint) = backend.pick() else {
        let why = match &backend.target {
            Target::Unavailable(reason) => reason.clone(),
            _ => format!("Service {} has no ready endpoints", backend.service),
        };
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("503 Service Unavailable: backend {}: {why}\n", backend.name),
        );
    };
    let authority = match endpoint {
        Endpoint::Socket(addr) => addr.to_string(),
        Endpoint::Name(name, port) => format!("{name}:{port}"),
    };
    let target = format!("{}://{authority}", backend.transport.scheme.as_str());
    let Ok(uri) = Uri::try_from(format!("{target}{path_and_query}")) else {
        return text(StatusCode::BAD_REQUEST, "400 Bad Request: the rewritten URL is invalid\n".into());
    };

    // 5. forward headers.
    let upgrade = req.version() == Version::HTTP_11 && middleware::is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    middleware::strip_hop_by_hop(headers, upgrade);
    let client = ClientInfo {
        ip: conn.peer.ip(),
        proto: match conn.entry {
            EntryKind::Http => "http",
            EntryKind::Https => "https",
        },
        port: conn.local.port(),
        host: &host,
        trusted: middleware::is_trusted(conn.peer.ip(), &settings.trusted_proxies),
    };
    middleware::set_forwarding_headers(headers, &client);
    if let Some(prefix) = forwarded_prefix {
        headers.insert(middleware::X_FORWARDED_PREFIX, prefix);
    }
    if let Some(original) = replaced_path {
        headers.insert(middleware::X_REPLACED_PATH, original);
    }
    let host_header = if route.preserve_host { host.as_str() } else { backend.authority.as_str() };
    match HeaderValue::from_str(host_header) {
        Ok(v) if !host_header.is_empty() => {
            headers.insert(header::HOST, v);
        }
        _ => {
            headers.remove(header::HOST);
        }
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);

    // 6. upstream.
    let client = if upgrade { &clients.upgrade } else { &clients.main };
    let sent = tokio::time::timeout(settings.response_header_timeout, client.request(upstream_req)).await;
    let mut response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            let failure = upstream::classify(&error);
            tracing::debug!(backend = %backend.name, %target, ?failure, "upstream request failed");
            return upstream_error(failure, &backend.name, &target);
        }
        Err(_) => {
            let failure = UpstreamFailure::Timeout(format!(
                "no response headers within {}",
                humantime::format_duration(settings.response_header_timeout)
            ));
            return upstream_error(failure, &backend.name, &target);
        }
    };

    // 7. response.
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
        }
    }
    middleware::strip_hop_by_hop(response.headers_mut(), switching && upgrade);
    response.headers_mut().entry(header::SERVER).or_insert(SERVER);
    response.map(Either::Left)
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

/// The host the client asked for: the URI authority (HTTP/2, absolute-form) or the Host header.
fn request_host<B>(req: &Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("")
}

fn redirect_to_https<B>(req: &Request<B>, host: &str, https_port: u16, permanent: bool) -> Response<ResponseBody> {
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match middleware::https_location(host, https_port, path_and_query) {
        Some(location) => redirect(middleware::redirect_status(req.method(), permanent), &location),
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
    let (status, detail) = match failure {
        UpstreamFailure::BadGateway(d) => (StatusCode::BAD_GATEWAY, d),
        UpstreamFailure::Timeout(d) => (StatusCode::GATEWAY_TIMEOUT, d),
    };
    text(status, format!("{status}: backend {backend} ({target}): {detail}\n"))
}

pub fn text(status: StatusCode, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::SERVER, SERVER);
    response
}
