//! Prometheus metrics (prometheus-client, OpenMetrics text) and per-backend health.
//!
//! The request path never hashes a label set or takes a lock: at each config swap, `observers_for`
//! resolves the handles of every route and backend once (a `Vec` indexed like the config's routes
//! and backends, stored in [`Live`](crate::proxy::Live)); a request then bumps atomics only.
//! Series of routes and backends that left the config are removed at the swap, so the label
//! cardinality is bounded by the current config. Labels are route ids and backend names, never
//! request paths.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

use crate::config::{Config, Target};
use crate::proxy::balance::EndpointHealth;
use crate::proxy::upstream::UpstreamErrorKind;
use crate::proxy::EntryKind;

/// Upper bounds of the request duration buckets, in seconds: the Prometheus client libraries'
/// default buckets, which suit an HTTP proxy in front of dashboards (5 ms to 10 s).
pub const DEFAULT_DURATION_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds of the change-to-swap buckets, in seconds: a swap normally follows a change
/// within one to two `--throttle` windows (200-400 ms by default); the tail shows a slow rebuild.
pub const CHANGE_TO_SWAP_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Buckets of `portier_config_rebuild_seconds`: a few ms for a small cluster, tens at 10,000
/// Ingresses.
pub const REBUILD_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];
/// The error rate of a backend is counted over this many slots of `WINDOW_SLOT_SECS` seconds:
/// the last minute (the current slot is partial, so 50 to 60 seconds of data).
pub const WINDOW_SLOTS: usize = 6;
pub const WINDOW_SLOT_SECS: u64 = 10;

/// `code_class` label values, indexed by the status code's first digit minus one.
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The `route` label of requests no route answered (404s, and the http entry's https redirect,
/// which is answered before routing).
pub const NO_ROUTE: &str = "none";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteClassLabels {
    route: String,
    code_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendKindLabels {
    backend: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntryLabels {
    entry: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// A histogram whose `observe` is a few relaxed atomic adds (prometheus-client's own takes a
/// mutex). The count is the sum of the buckets, so a scrape never sees them disagree.
#[derive(Clone, Debug)]
pub struct AtomicHistogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    bounds: &'static [f64],
    /// One per bound, then +Inf. Not cumulative.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(HistogramCells { bounds, buckets, sum_nanos: AtomicU64::new(0) }))
    }

    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let index = self.0.bounds.iter().position(|b| seconds <= *b).unwrap_or(self.0.bounds.len());
        if let Some(bucket) = self.0.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let cells = &self.0;
        let bounds = cells.bounds.iter().copied().chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds.zip(cells.buckets.iter().map(|b| b.load(Ordering::Relaxed))).collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = Duration::from_nanos(cells.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The handles one route's requests update.
#[derive(Clone, Debug)]
pub struct RouteHandles {
    classes: [Counter; 5],
    duration: AtomicHistogram,
}

impl RouteHandles {
    /// Counts a finished request: its status class and how long it took (until the last byte of
    /// the response body, or until the client went away).
    pub fn record(&self, status: u16, duration: Duration) {
        let class = usize::from(status / 100).saturating_sub(1);
        if let Some(counter) = self.classes.get(class) {
            counter.inc();
        }
        self.duration.observe(duration);
    }

    /// Requests counted per status class ("1xx" … "5xx").
    pub fn by_class(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        CODE_CLASSES.iter().zip(&self.classes).map(|(class, c)| (*class, c.get()))
    }
}

/// The handles one backend's requests update, and its health.
#[derive(Clone, Debug)]
pub struct BackendHandles {
    pub stats: Arc<BackendStats>,
    errors: [Counter; UpstreamErrorKind::ALL.len()],
    /// Passive health of the backend's endpoints, indexed like its `Target::Endpoints`.
    pub endpoints: Vec<Arc<EndpointHealth>>,
    retries: Counter,
    skips: Counter,
}

impl BackendHandles {
    /// A request got a response from the backend (whatever its status).
    pub fn record_ok(&self, now: u64) {
        self.stats.record(now, false);
    }

    /// A request to the backend failed: no response (refused, TLS, timeout) or no endpoint.
    pub fn record_error(&self, now: u64, kind: UpstreamErrorKind, message: String, address: Option<String>) {
        if let Some(counter) = self.errors.get(kind as usize) {
            counter.inc();
        }
        self.stats.record(now, true);
        self.stats.last_error.store(Some(Arc::new(LastError { kind, message, address, at: SystemTime::now() })));
    }

    /// A request was sent again, to another endpoint, after a connection failure.
    pub fn record_retry(&self) {
        self.retries.inc();
    }

    /// An endpoint failed to connect and is skipped for a while.
    pub fn record_skip(&self) {
        self.skips.inc();
    }
}

/// Metric handles and health stats of the routes and backends of one config, indexed like its
/// `routes` and `backends`.
#[derive(Debug, Default)]
pub struct Observers {
    pub routes: Vec<RouteHandles>,
    pub backends: Vec<BackendHandles>,
}

/// The most recent failure of a backend.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    pub kind: UpstreamErrorKind,
    pub message: String,
    /// The address dialled (`ip:port` or `name:port`), when there was one.
    pub address: Option<String>,
    #[serde(serialize_with = "unix_seconds")]
    pub at: SystemTime,
}

fn unix_seconds<S: serde::Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}

/// A backend's request and error counts and last error; kept across swaps while the backend (by
/// name) stays in the config. Updated lock-free by the proxy.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Ring of slots, each packed as `epoch (24 bits) | requests (20) | errors (20)` so a slot is
    /// reset and counted in one compare-and-swap.
    window: [AtomicU64; WINDOW_SLOTS],
    requests_total: AtomicU64,
    errors_total: AtomicU64,
    last_error: ArcSwapOption<LastError>,
    /// Passive health by endpoint address; read only when a config is swapped in.
    endpoint_health: Mutex<HashMap<SocketAddr, Arc<EndpointHealth>>>,
}

const EPOCH_BITS: u32 = 24;
const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const EPOCH_MASK: u64 = (1 << EPOCH_BITS) - 1;

/// Counts over the last minute, and totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recent {
    pub requests: u64,
    pub errors: u64,
    pub requests_total: u64,
    pub errors_total: u64,
}

impl BackendStats {
    /// `now`: seconds on the process clock ([`Metrics::now`]).
    pub fn record(&self, now: u64, error: bool) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors_total.fetch_add(1, Ordering::Relaxed);
        }
        let epoch = (now / WINDOW_SLOT_SECS) & EPOCH_MASK;
        let Some(slot) = self.window.get((now / WINDOW_SLOT_SECS) as usize % WINDOW_SLOTS) else { return };
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |packed| {
            let (slot_epoch, requests, errors) = unpack(packed);
            let (requests, errors) = if slot_epoch == epoch { (requests, errors) } else { (0, 0) };
            Some(pack(epoch, (requests + 1).min(COUNT_MAX), (errors + u64::from(error)).min(COUNT_MAX)))
        });
    }

    pub fn recent(&self, now: u64) -> Recent {
        let epoch = (now / WINDOW_SLOT_SECS) & EPOCH_MASK;
        let (mut requests, mut errors) = (0, 0);
        for slot in &self.window {
            let (slot_epoch, r, e) = unpack(slot.load(Ordering::Relaxed));
            if epoch.wrapping_sub(slot_epoch) & EPOCH_MASK < WINDOW_SLOTS as u64 {
                requests += r;
                errors += e;
            }
        }
        Recent {
            requests,
            errors,
            requests_total: self.requests_total.load(Ordering::Relaxed),
            errors_total: self.errors_total.load(Ordering::Relaxed),
        }
    }

    pub fn last_error(&self) -> Option<Arc<LastError>> {
        self.last_error.load_full()
    }

    /// The health records of `target`'s endpoints, in its order: the same records as before for
    /// endpoints that stay, new ones for new endpoints; records of endpoints gone are dropped.
    fn endpoint_health(&self, target: &Target) -> Vec<Arc<EndpointHealth>> {
        let Target::Endpoints(addrs) = target else { return Vec::new() };
        let mut known = self.endpoint_health.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        known.retain(|addr, _| addrs.contains(addr));
        addrs.iter().map(|addr| known.entry(*addr).or_default().clone()).collect()
    }
}

fn pack(epoch: u64, requests: u64, errors: u64) -> u64 {
    (epoch << (2 * COUNT_BITS)) | (requests << COUNT_BITS) | errors
}

fn unpack(packed: u64) -> (u64, u64, u64) {
    (packed >> (2 * COUNT_BITS), (packed >> COUNT_BITS) & COUNT_MAX, packed & COUNT_MAX)
}

/// All of portier's metrics, and the per-backend stats that survive swaps.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    requests: Family<RouteClassLabels, Counter>,
    durations: Family<RouteLabels, AtomicHistogram, fn() -> AtomicHistogram>,
    upstream_errors: Family<BackendKindLabels, Counter>,
    upstream_retries: Family<BackendLabels, Counter>,
    endpoint_skips: Family<BackendLabels, Counter>,
    /// Handles of requests no route answered.
    pub unrouted: RouteHandles,
    open_http: Gauge,
    open_https: Gauge,
    tls_handshakes: Counter,
    tls_failures: Family<ReasonLabels, Counter>,
    swaps: Counter,
    last_swap: Gauge,
    generation: Gauge,
    routes: Gauge,
    refused: Gauge,
    change_to_swap: AtomicHistogram,
    rebuild: AtomicHistogram,
    /// Access log lines dropped because the writer could not keep up.
    pub access_log_dropped: Counter,
    backend_stats: Mutex<HashMap<String, Arc<BackendStats>>>,
    /// Route ids that have series (besides "none").
    route_series: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn duration_histogram() -> AtomicHistogram {
    AtomicHistogram::new(DEFAULT_DURATION_BUCKETS)
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RouteClassLabels, Counter>::default();
        let durations = Family::<RouteLabels, AtomicHistogram, fn() -> AtomicHistogram>::new_with_constructor(
            duration_histogram as fn() -> AtomicHistogram,
        );
        let upstream_errors = Family::<BackendKindLabels, Counter>::default();
        let upstream_retries = Family::<BackendLabels, Counter>::default();
        let endpoint_skips = Family::<BackendLabels, Counter>::default();
        let open = Family::<EntryLabels, Gauge>::default();
        let tls_failures = Family::<ReasonLabels, Counter>::default();
        let tls_handshakes = Counter::default();
        let (swaps, last_swap, generation, routes, refused) =
            (Counter::default(), Gauge::default(), Gauge::default(), Gauge::default(), Gauge::default());
        let change_to_swap = AtomicHistogram::new(CHANGE_TO_SWAP_BUCKETS);
        let rebuild = AtomicHistogram::new(REBUILD_BUCKETS);
        let access_log_dropped = Counter::default();

        registry.register("portier", "portier build information", Info::new([("version", env!("CARGO_PKG_VERSION"))]));
        registry.register(
            "portier_requests",
            "Requests answered, by route id (\"none\" when no route answered) and status class",
            requests.clone(),
        );
        registry.register_with_unit(
            "portier_request_duration",
            "Time from the request to the end of the response body, by route id",
            Unit::Seconds,
            durations.clone(),
        );
        registry.register(
            "portier_upstream_errors",
            "Requests that got no response from their backend, by backend and kind (connect, tls, timeout, other, unavailable)",
            upstream_errors.clone(),
        );
        registry.register(
            "portier_upstream_retries",
            "Requests sent again to another endpoint after a connection failure (idempotent, no body), by backend",
            upstream_retries.clone(),
        );
        registry.register(
            "portier_endpoint_skips",
            "Times an endpoint failed to connect and was skipped for a while (passive health), by backend",
            endpoint_skips.clone(),
        );
        registry.register("portier_open_connections", "Client connections open, by entry", open.clone());
        registry.register(
            "portier_tls_handshakes",
            "TLS handshakes attempted on the https entry",
            tls_handshakes.clone(),
        );
        registry.register(
            "portier_tls_handshake_failures",
            "TLS handshakes that failed (error) or did not finish in time (timeout)",
            tls_failures.clone(),
        );
        registry.register("portier_config_swaps", "Configurations swapped in", swaps.clone());
        registry.register_with_unit(
            "portier_config_last_swap_timestamp",
            "Unix time of the last configuration swap",
            Unit::Seconds,
            last_swap.clone(),
        );
        registry.register("portier_config_generation", "Generation of the configuration serving", generation.clone());
        registry.register("portier_routes", "Routes in the configuration serving", routes.clone());
        registry.register(
            "portier_refused_ingresses",
            "Ingresses refused as a whole (see /api/warnings)",
            refused.clone(),
        );
        registry.register_with_unit(
            "portier_config_change_to_swap",
            "Time from the first change event of a burst to the swap it led to",
            Unit::Seconds,
            change_to_swap.clone(),
        );
        registry.register_with_unit(
            "portier_config_rebuild",
            "Time of one rebuild that led to a swap: reading the objects, translating, linking, swapping (no debounce wait)",
            Unit::Seconds,
            rebuild.clone(),
        );
        registry.register(
            "portier_access_log_dropped",
            "Access log lines dropped because stdout could not keep up",
            access_log_dropped.clone(),
        );

        let unrouted = route_handles(&requests, &durations, NO_ROUTE);
        let open_http = open.get_or_create_owned(&EntryLabels { entry: "http" });
        let open_https = open.get_or_create_owned(&EntryLabels { entry: "https" });
        for reason in ["error", "timeout"] {
            tls_failures.get_or_create_owned(&ReasonLabels { reason });
        }
        Self {
            registry,
            started: Instant::now(),
            requests,
            durations,
            upstream_errors,
            upstream_retries,
            endpoint_skips,
            unrouted,
            open_http,
            open_https,
            tls_handshakes,
            tls_failures,
            swaps,
            last_swap,
            generation,
            routes,
            refused,
            change_to_swap,
            rebuild,
            access_log_dropped,
            backend_stats: Mutex::new(HashMap::new()),
            route_series: Mutex::new(HashSet::new()),
        }
    }

    /// Seconds since the process started: the clock of the backends' error windows.
    pub fn now(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs()
    }

    /// Milliseconds since the process started: the clock of the endpoints' passive health.
    pub fn now_ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    /// The metrics in the OpenMetrics text format (which Prometheus scrapes natively).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Resolves the handles of `config`'s routes and backends (called once per swap), and drops
    /// the series and stats of routes and backends no longer in it.
    pub fn observers_for(&self, config: &Config, previous: Option<(&Config, &Observers)>) -> Observers {
        // Handles of routes that stay are taken from the previous config (an Arc clone each):
        // looking 10,000 routes up in the families again was a fifth of a rebuild.
        let kept: HashMap<&str, &RouteHandles> = previous
            .map(|(config, observers)| config.routes.iter().map(|r| r.id.as_str()).zip(&observers.routes).collect())
            .unwrap_or_default();
        let routes: Vec<RouteHandles> = config
            .routes
            .iter()
            .map(|r| match kept.get(r.id.as_str()) {
                Some(handles) => (*handles).clone(),
                None => route_handles(&self.requests, &self.durations, &r.id),
            })
            .collect();
        let current: HashSet<&str> = config.routes.iter().map(|r| r.id.as_str()).collect();
        let mut known = self.route_series.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        known.retain(|route| {
            let stays = current.contains(route.as_str());
            if !stays {
                for code_class in CODE_CLASSES {
                    self.requests.remove(&RouteClassLabels { route: route.clone(), code_class });
                }
                self.durations.remove(&RouteLabels { route: route.clone() });
            }
            stays
        });
        for route in &config.routes {
            if !known.contains(&route.id) {
                known.insert(route.id.clone());
            }
        }
        drop(known);

        let names: HashSet<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
        let mut stats = self.backend_stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let gone: Vec<String> = stats.keys().filter(|n| !names.contains(n.as_str())).cloned().collect();
        for backend in gone {
            stats.remove(&backend);
            for kind in UpstreamErrorKind::ALL {
                self.upstream_errors.remove(&BackendKindLabels { backend: backend.clone(), kind: kind.as_str() });
            }
            self.upstream_retries.remove(&BackendLabels { backend: backend.clone() });
            self.endpoint_skips.remove(&BackendLabels { backend: backend.clone() });
        }
        let backends = config
            .backends
            .iter()
            .map(|b| {
                let stats = stats.entry(b.name.clone()).or_default().clone();
                let labels = BackendLabels { backend: b.name.clone() };
                BackendHandles {
                    endpoints: stats.endpoint_health(&b.target),
                    stats,
                    errors: UpstreamErrorKind::ALL.map(|kind| {
                        self.upstream_errors
                            .get_or_create_owned(&BackendKindLabels { backend: b.name.clone(), kind: kind.as_str() })
                    }),
                    retries: self.upstream_retries.get_or_create_owned(&labels),
                    skips: self.endpoint_skips.get_or_create_owned(&labels),
                }
            })
            .collect();
        Observers { routes, backends }
    }

    /// Records a swap that just happened.
    pub fn swapped(&self, config: &Config, generation: u64, at: SystemTime) {
        self.swaps.inc();
        self.generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.last_swap.set(at.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0));
        self.routes.set(config.routes.len() as i64);
        self.refused.set(refused_ingresses(config) as i64);
    }

    pub fn swaps_total(&self) -> u64 {
        self.swaps.get()
    }

    /// A burst of changes that started `since` ended in a swap now.
    pub fn change_swapped(&self, since: Instant) {
        self.change_to_swap.observe(since.elapsed());
    }

    /// Records how long one rebuild took: reading the source, translating, comparing, linking
    /// and swapping (no debounce wait).
    pub fn rebuilt(&self, took: Duration) {
        self.rebuild.observe(took);
    }

    /// Counts an open client connection on `entry` until the returned guard is dropped.
    pub fn connection_opened(&self, entry: EntryKind) -> ConnectionGuard {
        let gauge = match entry {
            EntryKind::Http => self.open_http.clone(),
            EntryKind::Https => self.open_https.clone(),
        };
        gauge.inc();
        ConnectionGuard(gauge)
    }

    pub fn open_connections(&self, entry: EntryKind) -> i64 {
        match entry {
            EntryKind::Http => self.open_http.get(),
            EntryKind::Https => self.open_https.get(),
        }
    }

    pub fn tls_handshake(&self, failure: Option<&'static str>) {
        self.tls_handshakes.inc();
        if let Some(reason) = failure {
            self.tls_failures.get_or_create(&ReasonLabels { reason }).inc();
        }
    }
}

/// Ingresses refused as a whole: distinct objects of refusing warnings.
pub fn refused_ingresses(config: &Config) -> usize {
    config
        .warnings
        .iter()
        .filter(|w| w.refused && w.object.starts_with("Ingress "))
        .map(|w| &w.object)
        .collect::<HashSet<_>>()
        .len()
}

fn route_handles(
    requests: &Family<RouteClassLabels, Counter>,
    durations: &Family<RouteLabels, AtomicHistogram, fn() -> AtomicHistogram>,
    route: &str,
) -> RouteHandles {
    RouteHandles {
        classes: CODE_CLASSES
            .map(|code_class| requests.get_or_create_owned(&RouteClassLabels { route: route.to_string(), code_class })),
        duration: durations.get_or_create_owned(&RouteLabels { route: route.to_string() }),
    }
}

/// Decrements the open-connections gauge of an entry when the connection ends.
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The bound addresses of the entries, for `/api/version` and the dashboard.
#[derive(Debug, Clone, Copy)]
pub struct EntryAddresses {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_into_the_first_bucket_that_fits() {
        let h = AtomicHistogram::new(&[0.1, 1.0]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(100));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(3));
        let counts: Vec<u64> = h.0.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        assert_eq!(counts, vec![2, 1, 1]);
        assert_eq!(h.count(), 4);
        assert_eq!(h.0.sum_nanos.load(Ordering::Relaxed), 3_650_000_000);
    }

    #[test]
    fn backend_window_forgets_after_a_minute() {
        let stats = BackendStats::default();
        stats.record(0, false);
        stats.record(5, true);
        stats.record(12, true);
        let r = stats.recent(15);
        assert_eq!((r.requests, r.errors, r.requests_total, r.errors_total), (3, 2, 3, 2));
        // Slot 0 (seconds 0-9) is out of the window from second 60 on; slot 1 from second 70.
        assert_eq!(stats.recent(59).requests, 3);
        assert_eq!((stats.recent(60).requests, stats.recent(60).errors), (1, 1));
        assert_eq!(stats.recent(70).requests, 0);
        // A slot reused a minute later starts from zero.
        stats.record(61, false);
        assert_eq!((stats.recent(61).requests, stats.recent(61).errors), (2, 1));
        assert_eq!(stats.recent(61).requests_total, 4);
    }

    #[test]
    fn backend_window_saturates_instead_of_overflowing_into_the_epoch() {
        let stats = BackendStats::default();
        let slot = &stats.window[0];
        slot.store(pack(0, COUNT_MAX, COUNT_MAX), Ordering::Relaxed);
        stats.record(1, true);
        assert_eq!(unpack(slot.load(Ordering::Relaxed)), (0, COUNT_MAX, COUNT_MAX));
    }
}
