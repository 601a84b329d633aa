//! The JSON views of `/api/routes`, `/api/backends` and `/api/version`. Field names are a
//! contract (the dashboard and users' scripts read them): add fields, never rename them.

use std::collections::BTreeMap;
use std::time::{Instant, UNIX_EPOCH};

use serde::Serialize;

use crate::config::{Backend, Route, Scheme, Target};
use crate::metrics::{refused_ingresses, BackendHandles, LastError};
use crate::proxy::{EntryKind, Live, Shared};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteView<'a> {
    #[serde(flatten)]
    pub route: &'a Route,
    pub backend_name: &'a str,
    pub scheme: &'static str,
    pub target: Option<&'a Target>,
    pub is_default: bool,
    /// Requests answered by this route since it appeared, by status class ("1xx" … "5xx").
    pub requests: BTreeMap<&'static str, u64>,
    pub requests_total: u64,
}

pub fn routes(live: &Live) -> Vec<RouteView<'_>> {
    let config = &live.config;
    config
        .routes
        .iter()
        .enumerate()
        .map(|(id, route)| {
            let backend: Option<&Backend> = config.backends.get(route.backend);
            let requests: BTreeMap<&'static str, u64> =
                live.observers.routes.get(id).map(|h| h.by_class().collect()).unwrap_or_default();
            RouteView {
                route,
                backend_name: backend.map(|b| b.name.as_str()).unwrap_or_default(),
                scheme: backend.map(|b| b.transport.scheme.as_str()).unwrap_or_default(),
                target: backend.map(|b| &b.target),
                is_default: config.router.default_route() == Some(id),
                requests_total: requests.values().sum(),
                requests,
            }
        })
        .collect()
}

/// How an https backend's certificate is checked: `verify`, `skip` (insecure-skip-verify), or
/// `none` for a plain-http backend.
pub fn verification(backend: &Backend) -> &'static str {
    match (backend.transport.scheme, backend.transport.verify) {
        (Scheme::Http, _) => "none",
        (Scheme::Https, true) => "verify",
        (Scheme::Https, false) => "skip",
    }
}

fn failing_endpoints(backend: &Backend, handles: Option<&BackendHandles>, now_ms: u64) -> Vec<FailingEndpoint> {
    let (Target::Endpoints(addrs), Some(handles)) = (&backend.target, handles) else { return Vec::new() };
    addrs
        .iter()
        .zip(&handles.endpoints)
        .filter_map(|(addr, health)| {
            let (failures, skipped_for_ms) = health.state(now_ms);
            (failures > 0).then(|| FailingEndpoint { address: addr.to_string(), failures, skipped_for_ms })
        })
        .collect()
}

/// The addresses a backend's requests go to (`ip:port`, or `name:port` for an ExternalName).
pub fn addresses(backend: &Backend) -> Vec<String> {
    match &backend.target {
        Target::Endpoints(addrs) => addrs.iter().map(|a| a.to_string()).collect(),
        Target::ExternalName { host, port } => vec![format!("{host}:{port}")],
        Target::Unavailable(_) => Vec::new(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendView<'a> {
    /// `name`, `service`, `transport`, `target`, `authority`.
    #[serde(flatten)]
    pub backend: &'a Backend,
    pub scheme: &'static str,
    pub addresses: Vec<String>,
    pub verification: &'static str,
    /// Why requests get 503 (no Service, port or ready endpoint); null when it has addresses.
    pub unavailable: Option<String>,
    /// Ids of the routes that send to it.
    pub routes: Vec<&'a str>,
    pub last_error: Option<LastError>,
    /// errorsLastMinute / requestsLastMinute; null with no request in the last minute.
    pub error_rate: Option<f64>,
    pub requests_last_minute: u64,
    pub errors_last_minute: u64,
    pub requests_total: u64,
    pub errors_total: u64,
    /// Endpoints that failed to connect lately (passive health); empty when all are fine.
    pub failing_endpoints: Vec<FailingEndpoint>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailingEndpoint {
    pub address: String,
    /// Connection failures in a row.
    pub failures: u32,
    /// Milliseconds it is still skipped for; 0 once it may be tried again.
    pub skipped_for_ms: u64,
}

pub fn backends<'a>(shared: &Shared, live: &'a Live) -> Vec<BackendView<'a>> {
    let config = &live.config;
    let at = Instant::now();
    let (now, now_ms) = (shared.metrics.now(at), shared.metrics.now_ms(at));
    config
        .backends
        .iter()
        .enumerate()
        .map(|(id, backend)| {
            let stats = live.observers.backends.get(id).map(|h| &h.stats);
            let recent = stats.map(|s| s.recent(now));
            let addresses = addresses(backend);
            BackendView {
                backend,
                scheme: backend.transport.scheme.as_str(),
                verification: verification(backend),
                unavailable: addresses.is_empty().then(|| crate::proxy::unavailable_reason(backend)),
                addresses,
                routes: config.routes.iter().filter(|r| r.backend == id).map(|r| r.id.as_str()).collect(),
                last_error: stats.and_then(|s| s.last_error()).map(|e| (*e).clone()),
                error_rate: recent.filter(|r| r.requests > 0).map(|r| r.errors as f64 / r.requests as f64),
                requests_last_minute: recent.map(|r| r.requests).unwrap_or(0),
                errors_last_minute: recent.map(|r| r.errors).unwrap_or(0),
                requests_total: recent.map(|r| r.requests_total).unwrap_or(0),
                errors_total: recent.map(|r| r.errors_total).unwrap_or(0),
                failing_endpoints: failing_endpoints(backend, live.observers.backends.get(id), now_ms),
            }
        })
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryView {
    pub name: &'static str,
    pub address: String,
    /// Client connections open now (null for the admin entry).
    pub open_connections: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    pub version: &'static str,
    /// 0 until a first configuration is swapped in; +1 per swap.
    pub generation: u64,
    /// Unix seconds of the last swap; null before the first.
    pub last_swap: Option<u64>,
    pub swaps_total: u64,
    pub ready: bool,
    pub entries: Vec<EntryView>,
    pub routes: usize,
    pub backends: usize,
    pub certificates: usize,
    pub warnings: usize,
    pub refused_ingresses: usize,
}

pub fn version(shared: &Shared, live: &Live) -> VersionView {
    let entry = |kind: EntryKind, address: std::net::SocketAddr| EntryView {
        name: kind.as_str(),
        address: address.to_string(),
        open_connections: Some(shared.metrics.open_connections(kind)),
    };
    let config = &live.config;
    VersionView {
        version: env!("CARGO_PKG_VERSION"),
        generation: live.generation,
        last_swap: (live.generation > 0)
            .then(|| live.swapped_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)),
        swaps_total: shared.metrics.swaps_total(),
        ready: shared.ready.load(std::sync::atomic::Ordering::Acquire),
        entries: vec![
            entry(EntryKind::Http, shared.entries.http),
            entry(EntryKind::Https, shared.entries.https),
            EntryView { name: "admin", address: shared.entries.admin.to_string(), open_connections: None },
        ],
        routes: config.routes.len(),
        backends: config.backends.len(),
        certificates: config.certificates.certificates().len(),
        warnings: config.warnings.len(),
        refused_ingresses: refused_ingresses(config),
    }
}
