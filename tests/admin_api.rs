//! The admin API against a running portier with known routes: Prometheus metrics (parsed as
//! OpenMetrics text), per-backend health, version, explain, the dashboard page, and the access
//! log of the real binary; also after a configuration swap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::process::PortierProcess;
use common::*;
use http_body_util::Full;
use serde_json::Value;

const STRIP: (&str, &str) = ("traefik.ingress.kubernetes.io/rule-type", "PathPrefixStrip");
const DASH: &str = "default/dash#0.0";
const DEAD: &str = "default/dead#0.0";
const MISSING: &str = "default/missing#0.0";
const SECURE: &str = "default/secure#0.0";

// ---------------------------------------------------------------- fixtures

/// A port nothing listens on (bound, then released): connecting is refused.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Host `node`: `/k8s` strips to the echo backend `app`, `/dead` goes to a backend that refuses
/// connections, `/missing` to a Service that does not exist. Host `secure.test`: an HTTPS
/// ExternalName backend (only explained, never requested).
fn manifests(echo: &Echo, dead_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("app.yaml", service_with_slice("app", 80, "http", echo.port(), &[("127.0.0.1", true)])),
        ("dead-svc.yaml", service_with_slice("dead", 80, "http", dead_port, &[("127.0.0.1", true)])),
        ("tls-svc.yaml", external_service("tlsback", "localhost", 443, None)),
        ("dash.yaml", ingress("dash", &[STRIP], Some("node"), &[("/k8s", "ImplementationSpecific", "app", 80)])),
        ("dead.yaml", ingress("dead", &[], Some("node"), &[("/dead", "Prefix", "dead", 80)])),
        ("missing.yaml", ingress("missing", &[], Some("node"), &[("/missing", "Prefix", "nope", 80)])),
        ("secure.yaml", ingress("secure", &[], Some("secure.test"), &[("/", "Prefix", "tlsback", 443)])),
    ]
}

async fn start(echo: &Echo, dead_port: u16) -> Portier {
    Portier::start(&manifests(echo, dead_port), &[]).await
}

async fn https_get(portier: &Portier, host: &str, path: &str) -> Reply {
    get(portier.https(), Via::Tls(Some(host)), host, path).await
}

/// Retries `check` (up to 10 s) until it returns Some: counters are updated when a response body
/// ends, which may be just after the client has read it.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn explain_path(url: &str) -> String {
    let encoded: String = url
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/api/explain?url={encoded}")
}

async fn explain(portier: &Portier, url: &str) -> Value {
    let reply = admin_get(portier, &explain_path(url)).await;
    assert_eq!(reply.status, 200, "explain {url}: {}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

// ---------------------------------------------------------------- OpenMetrics parsing

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict parser of the OpenMetrics text format: every line is a descriptor (`# HELP`,
/// `# TYPE`, `# UNIT`), a sample of a declared family with the suffixes its type allows, or the
/// final `# EOF`. Histogram buckets must be cumulative and end with `+Inf` equal to `_count`.
fn parse_openmetrics(text: &str) -> Vec<Sample> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
    };
    assert!(text.ends_with("# EOF\n"), "must end with # EOF");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if *line == "# EOF" {
            assert_eq!(i, lines.len() - 1, "# EOF must be the last line");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(valid_name(name), "bad metric name in {line:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(["counter", "gauge", "histogram", "info", "unknown"].contains(&t), "bad type: {line:?}");
                    assert!(types.insert(name.to_string(), t.to_string()).is_none(), "family declared twice: {name}");
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown descriptor: {line:?}"),
            }
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                (name.to_string(), parse_labels(body, line))
            }
        };
        assert!(valid_name(&name), "bad sample name: {line:?}");
        let family = types
            .iter()
            .filter(|(f, t)| {
                let allowed: &[&str] = match t.as_str() {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_sum", "_count", "_created"],
                    "info" => &["_info"],
                    _ => &[""],
                };
                allowed.iter().any(|s| name == format!("{f}{s}"))
            })
            .count();
        assert_eq!(family, 1, "sample {name} belongs to no declared family (or several)");
        samples.push(Sample { name, labels, value });
    }
    // Histograms: cumulative buckets ending in +Inf = _count.
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let buckets: Vec<&Sample> = samples.iter().filter(|s| s.name == format!("{family}_bucket")).collect();
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for b in buckets {
            let mut labels = b.labels.clone();
            let le = labels.remove("le").expect("bucket without le");
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
            series.entry(labels).or_default().push((le, b.value));
        }
        for (labels, buckets) in series {
            assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{family} {labels:?}");
            let (last_le, last) = *buckets.last().unwrap();
            assert_eq!(last_le, f64::INFINITY);
            let count = samples.iter().find(|s| s.name == format!("{family}_count") && s.labels == labels).unwrap();
            assert_eq!(count.value, last, "{family} {labels:?}: +Inf bucket != count");
        }
    }
    samples
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label value not quoted: {line:?}");
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => panic!("unterminated label value: {line:?}"),
            }
        }
        assert!(labels.insert(key, value).is_none(), "label repeated: {line:?}");
        match chars.next() {
            Some(',') | None => {}
            Some(c) => panic!("unexpected {c:?} after a label in {line:?}"),
        }
    }
    labels
}

async fn metrics(portier: &Portier) -> Vec<Sample> {
    let reply = admin_get(portier, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    parse_openmetrics(&reply.text())
}

/// The value of the one sample with this name and (at least) these labels; None when absent.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect();
    assert!(found.len() <= 1, "several samples of {name} {labels:?}: {found:?}");
    found.first().map(|s| s.value)
}

fn requests(samples: &[Sample], route: &str, class: &str) -> f64 {
    value(samples, "portier_requests_total", &[("route", route), ("code_class", class)]).unwrap_or(0.0)
}

// ---------------------------------------------------------------- metrics

#[tokio::test]
async fn metrics_count_requests_by_route_id_and_keep_counting_across_a_swap() {
    let echo = echo_http("app").await;
    let portier = start(&echo, refused_port()).await;

    for _ in 0..3 {
        assert_eq!(https_get(&portier, "node", "/k8s/some/secret-path?x=1").await.status, 200);
    }
    assert_eq!(https_get(&portier, "nowhere.test", "/no/such/path").await.status, 404);
    assert_eq!(https_get(&portier, "node", "/k8s").await.status, 301);

    let samples = eventually("3 requests counted for the strip route", || async {
        let samples = metrics(&portier).await;
        (requests(&samples, DASH, "2xx") == 3.0 && requests(&samples, "none", "4xx") == 1.0).then_some(samples)
    })
    .await;
    assert_eq!(requests(&samples, DASH, "3xx"), 1.0, "the trailing-slash redirect counts for its route");
    assert_eq!(value(&samples, "portier_request_duration_seconds_count", &[("route", DASH)]), Some(4.0));
    assert!(value(&samples, "portier_request_duration_seconds_sum", &[("route", DASH)]).unwrap() > 0.0);

    // Route labels are route ids (or "none"), never the paths requested.
    let ids: Vec<String> = admin_get(&portier, "/api/routes")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![DASH, DEAD, MISSING, SECURE]);
    for s in samples.iter().filter(|s| s.labels.contains_key("route")) {
        let route = &s.labels["route"];
        assert!(route == "none" || ids.contains(route), "route label {route:?} is not a route id");
    }
    let text = admin_get(&portier, "/metrics").await.text();
    assert!(!text.contains("secret-path") && !text.contains("/no/such/path"), "no request path in the metrics");

    assert_eq!(value(&samples, "portier_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    assert_eq!(value(&samples, "portier_routes", &[]), Some(4.0));
    assert_eq!(value(&samples, "portier_refused_ingresses", &[]), Some(0.0));
    assert_eq!(value(&samples, "portier_config_generation", &[]), Some(portier.generation() as f64));
    let swaps = value(&samples, "portier_config_swaps_total", &[]).unwrap();
    assert!(swaps >= 1.0);
    let last_swap = value(&samples, "portier_config_last_swap_timestamp_seconds", &[]).unwrap() as u64;
    assert!(last_swap.abs_diff(unix_now()) < 120, "last swap {last_swap} is not recent");
    assert!(value(&samples, "portier_tls_handshakes_total", &[]).unwrap() >= 5.0, "one handshake per request here");
    assert_eq!(value(&samples, "portier_tls_handshake_failures_total", &[("reason", "error")]), Some(0.0));
    assert!(value(&samples, "portier_open_connections", &[("entry", "https")]).is_some());
    assert!(value(&samples, "portier_open_connections", &[("entry", "http")]).is_some());

    let version = admin_get(&portier, "/api/version").await.json();
    let generation = version["generation"].as_u64().unwrap();
    assert_eq!(version["swapsTotal"].as_f64().unwrap(), swaps);

    // Swap: the dead route is renamed, a refused Ingress appears; the strip route stays.
    portier.write("dead.yaml", &ingress("dead", &[], Some("node"), &[("/gone", "Prefix", "dead", 80)]));
    portier.write(
        "refused.yaml",
        &ingress(
            "refused",
            &[("traefik.ingress.kubernetes.io/rule-type", "Bogus")],
            Some("node"),
            &[("/r", "Prefix", "app", 80)],
        ),
    );
    portier
        .wait_for("swap", |c| c.routes.iter().any(|r| r.path == "/gone") && c.warnings.iter().any(|w| w.refused))
        .await;
    for _ in 0..2 {
        assert_eq!(https_get(&portier, "node", "/k8s/").await.status, 200);
    }
    let samples = eventually("the strip route's counter continues after the swap", || async {
        let samples = metrics(&portier).await;
        (requests(&samples, DASH, "2xx") == 5.0).then_some(samples)
    })
    .await;
    assert!(value(&samples, "portier_config_swaps_total", &[]).unwrap() > swaps);
    let new_generation = value(&samples, "portier_config_generation", &[]).unwrap() as u64;
    assert!(new_generation > generation);
    assert_eq!(new_generation, portier.generation());
    assert_eq!(value(&samples, "portier_refused_ingresses", &[]), Some(1.0));
    assert!(value(&samples, "portier_config_change_to_swap_seconds_count", &[]).unwrap() >= 1.0);
    // The renamed route kept its id (same Ingress, rule and path index); the series of a route
    // that disappears goes with it.
    assert!(samples.iter().all(|s| s.labels.get("route").is_none_or(|r| r == "none" || ids.contains(r))));

    let version = admin_get(&portier, "/api/version").await.json();
    assert_eq!(version["generation"].as_u64().unwrap(), new_generation);
    assert!(version["swapsTotal"].as_f64().unwrap() > swaps);
    assert_eq!(version["refusedIngresses"], 1);
    let routes = admin_get(&portier, "/api/routes").await.json();
    assert_eq!(routes[0]["id"], DASH);
    assert_eq!(routes[0]["requestsTotal"], 6);
    assert_eq!(routes[0]["requests"]["2xx"], 5);
    assert_eq!(routes[0]["requests"]["3xx"], 1);
}

#[tokio::test]
async fn series_of_a_removed_route_disappear() {
    let echo = echo_http("app").await;
    let portier = start(&echo, refused_port()).await;
    // Series exist from the swap that brought the route in, before any request.
    let samples = metrics(&portier).await;
    assert_eq!(value(&samples, "portier_request_duration_seconds_count", &[("route", SECURE)]), Some(0.0));
    assert_eq!(requests(&samples, SECURE, "2xx"), 0.0);
    assert!(value(&samples, "portier_upstream_errors_total", &[("backend", "default/tlsback:443"), ("kind", "tls")])
        .is_some());
    portier.remove("secure.yaml");
    portier.wait_for("secure route removed", |c| c.routes.iter().all(|r| r.id != SECURE)).await;
    let samples = metrics(&portier).await;
    assert!(samples.iter().all(|s| s.labels.get("route").map(String::as_str) != Some(SECURE)));
    assert!(samples.iter().all(|s| s.labels.get("backend").map(String::as_str) != Some("default/tlsback:443")));
    assert_eq!(value(&samples, "portier_routes", &[]), Some(3.0));
}

// ---------------------------------------------------------------- backends

fn backend<'a>(backends: &'a Value, name: &str) -> &'a Value {
    backends.as_array().unwrap().iter().find(|b| b["name"] == name).unwrap_or_else(|| panic!("no backend {name}"))
}

#[tokio::test]
async fn a_refusing_backend_shows_its_last_error_and_error_rate() {
    let echo = echo_http("app").await;
    let dead_port = refused_port();
    let portier = start(&echo, dead_port).await;

    let backends = admin_get(&portier, "/api/backends").await.json();
    let app = backend(&backends, "default/app:80");
    assert_eq!(app["scheme"], "http");
    assert_eq!(app["addresses"], serde_json::json!([echo.addr.to_string()]));
    assert_eq!(app["verification"], "none");
    assert_eq!(app["routes"], serde_json::json!([DASH]));
    assert!(app["lastError"].is_null());
    assert!(app["errorRate"].is_null(), "no request yet: no rate");
    let secure = backend(&backends, "default/tlsback:443");
    assert_eq!((secure["scheme"].as_str(), secure["verification"].as_str()), (Some("https"), Some("verify")));
    assert_eq!(secure["addresses"], serde_json::json!(["localhost:443"]));
    assert_eq!(secure["transport"]["serverName"], "localhost", "existing fields are kept");
    let nope = backend(&backends, "default/nope:80");
    assert!(nope["unavailable"].as_str().unwrap().contains("Service default/nope not found"));

    let before = unix_now();
    let reply = https_get(&portier, "node", "/dead/x").await;
    assert_eq!(reply.status, 502);
    assert!(reply.text().contains("default/dead:80"), "{}", reply.text());
    assert_eq!(https_get(&portier, "node", "/missing").await.status, 503);
    assert_eq!(https_get(&portier, "node", "/k8s/").await.status, 200);

    let backends = admin_get(&portier, "/api/backends").await.json();
    let dead = backend(&backends, "default/dead:80");
    let error = &dead["lastError"];
    assert_eq!(error["kind"], "connect");
    assert!(error["message"].as_str().unwrap().contains("connection failed"), "{error}");
    assert_eq!(error["address"], format!("127.0.0.1:{dead_port}"));
    let at = error["at"].as_u64().unwrap();
    assert!(at >= before && at <= unix_now(), "error time {at}");
    assert_eq!(dead["errorRate"], 1.0);
    assert_eq!((dead["requestsLastMinute"].as_u64(), dead["errorsLastMinute"].as_u64()), (Some(1), Some(1)));
    let nope = backend(&backends, "default/nope:80");
    assert_eq!(nope["lastError"]["kind"], "unavailable");
    let app = backend(&backends, "default/app:80");
    assert!(app["lastError"].is_null());
    assert_eq!(app["errorRate"], 0.0);
    assert_eq!(app["requestsTotal"], 1);

    let samples = metrics(&portier).await;
    let errors = |backend: &str, kind: &str| {
        value(&samples, "portier_upstream_errors_total", &[("backend", backend), ("kind", kind)]).unwrap()
    };
    assert_eq!(errors("default/dead:80", "connect"), 1.0);
    assert_eq!(errors("default/dead:80", "tls"), 0.0);
    assert_eq!(errors("default/nope:80", "unavailable"), 1.0);
    assert_eq!(errors("default/app:80", "connect"), 0.0);
    let samples = eventually("the 502 counted for its route", || async {
        let samples = metrics(&portier).await;
        (requests(&samples, DEAD, "5xx") == 1.0).then_some(samples)
    })
    .await;
    assert_eq!(requests(&samples, MISSING, "5xx"), 1.0);

    // Stats are kept by backend name across a swap that keeps the backend.
    portier.write("extra.yaml", &ingress("extra", &[], Some("extra.test"), &[("/", "Prefix", "app", 80)]));
    portier.wait_for("extra route", |c| c.routes.len() == 5).await;
    let backends = admin_get(&portier, "/api/backends").await.json();
    let dead = backend(&backends, "default/dead:80");
    assert_eq!(dead["lastError"]["kind"], "connect");
    assert_eq!(dead["errorsTotal"], 1);
    assert_eq!(backend(&backends, "default/app:80")["routes"], serde_json::json!([DASH, "default/extra#0.0"]));
}

// ---------------------------------------------------------------- version, dashboard

#[tokio::test]
async fn version_names_the_entries_and_the_last_swap() {
    let echo = echo_http("app").await;
    let portier = start(&echo, refused_port()).await;
    let version = admin_get(&portier, "/api/version").await.json();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["generation"].as_u64().unwrap(), portier.generation());
    assert!(version["lastSwap"].as_u64().unwrap().abs_diff(unix_now()) < 120);
    assert_eq!(version["ready"], true);
    assert_eq!(version["routes"], 4);
    let entries = version["entries"].as_array().unwrap();
    let address =
        |name: &str| entries.iter().find(|e| e["name"] == name).unwrap()["address"].as_str().unwrap().to_string();
    assert_eq!(address("http"), portier.http().to_string());
    assert_eq!(address("https"), portier.https().to_string());
    assert_eq!(address("admin"), portier.admin().to_string());
}

#[tokio::test]
async fn the_dashboard_page_and_api_errors() {
    let echo = echo_http("app").await;
    let portier = start(&echo, refused_port()).await;
    let page = admin_get(&portier, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(page.text().to_ascii_lowercase().contains("<html"), "the dashboard page is served");

    let missing = admin_get(&portier, "/api/explain").await;
    assert_eq!(missing.status, 400);
    assert!(missing.json()["error"].as_str().unwrap().contains("url="));
    let bad = admin_get(&portier, &explain_path("node/k8s/")).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap().contains("https://"), "{}", bad.text());
    assert_eq!(admin_get(&portier, "/api/nothing").await.status, 404);
}

// ---------------------------------------------------------------- explain

#[tokio::test]
async fn explain_a_strip_route_shows_what_the_backend_receives() {
    let echo = echo_http("app").await;
    let portier = start(&echo, refused_port()).await;

    let e = explain(&portier, "https://node/k8s/api/v1/pods?limit=5").await;
    assert_eq!(e["outcome"], "forward");
    assert_eq!(e["matched"], true);
    assert!(e["status"].is_null());
    assert_eq!(e["route"]["id"], DASH);
    let up = &e["upstream"];
    assert_eq!(up["pathAndQuery"], "/api/v1/pods?limit=5");
    assert_eq!(up["headers"]["x-forwarded-prefix"], "/k8s");
    assert_eq!(up["headers"]["host"], "node");
    assert_eq!(up["headers"]["x-forwarded-proto"], "https");
    assert_eq!(up["backend"], "default/app:80");
    assert_eq!(up["scheme"], "http");
    assert_eq!(up["verification"], "none");
    assert_eq!(up["addresses"], serde_json::json!([echo.addr.to_string()]));
    assert_eq!(up["url"], format!("http://{}/api/v1/pods?limit=5", echo.addr));

    // What the proxy really sends is what explain said.
    let real = https_get(&portier, "node", "/k8s/api/v1/pods?limit=5").await;
    assert_eq!(real.json()["uri"], up["pathAndQuery"]);
    assert_eq!(real.echoed_header("x-forwarded-prefix").as_deref(), up["headers"]["x-forwarded-prefix"].as_str());
    assert_eq!(real.echoed_header("host").as_deref(), up["headers"]["host"].as_str());
    assert_eq!(
        real.echoed_header("x-forwarded-port").as_deref(),
        up["headers"]["x-forwarded-port"].as_str(),
        "the port of the https entry"
    );

    // An HTTPS backend: scheme, verification and server name.
    let e = explain(&portier, "https://secure.test/x").await;
    assert_eq!(e["route"]["id"], SECURE);
    assert_eq!(e["upstream"]["scheme"], "https");
    assert_eq!(e["upstream"]["verification"], "verify");
    assert_eq!(e["upstream"]["serverName"], "localhost");
    assert_eq!(e["upstream"]["pathAndQuery"], "/x");
    assert!(e["upstream"]["headers"].get("x-forwarded-prefix").is_none());

    // A route with no address: 503 and why.
    let e = explain(&portier, "https://node/missing").await;
    assert_eq!(e["outcome"], "unavailable");
    assert_eq!(e["status"], 503);
    assert!(e["reason"].as_str().unwrap().contains("Service default/nope not found"), "{}", e["reason"]);
}

#[tokio::test]
async fn explain_the_bare_prefix_redirects_to_the_slash() {
    let echo = echo_http("app").await;
    let portier = start(&echo, refused_port()).await;
    let e = explain(&portier, "https://node/k8s?a=1").await;
    assert_eq!(e["outcome"], "redirect");
    assert_eq!(e["matched"], true);
    assert_eq!(e["status"], 301);
    assert_eq!(e["redirect"]["kind"], "trailingSlash");
    assert_eq!(e["redirect"]["location"], "/k8s/?a=1");
    assert_eq!(e["route"]["id"], DASH);
    // And where it leads.
    assert_eq!(e["then"]["outcome"], "forward");
    assert_eq!(e["then"]["upstream"]["pathAndQuery"], "/?a=1");

    let real = https_get(&portier, "node", "/k8s?a=1").await;
    assert_eq!(real.status, 301);
    assert_eq!(real.header("location"), e["redirect"]["location"].as_str());
}

#[tokio::test]
async fn explain_an_http_url_redirects_to_https_keeping_the_path() {
    let echo = echo_http("app").await;
    let portier = start(&echo, refused_port()).await;
    // Raw (unencoded) URL as the last parameter works too.
    let reply = admin_get(&portier, "/api/explain?url=http://node/k8s/x?y=1&z=2").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let e = reply.json();
    assert_eq!(e["entry"], "http");
    assert_eq!(e["outcome"], "redirect");
    assert_eq!(e["redirect"]["kind"], "https");
    assert_eq!(e["status"], 301);
    let location = format!("https://node:{}/k8s/x?y=1&z=2", portier.https().port());
    assert_eq!(e["redirect"]["location"], location);
    assert_eq!(e["then"]["outcome"], "forward");
    assert_eq!(e["then"]["upstream"]["pathAndQuery"], "/x?y=1&z=2");

    let real = get(portier.http(), Via::Plain, "node", "/k8s/x?y=1&z=2").await;
    assert_eq!(real.status, 301);
    assert_eq!(real.header("location"), Some(location.as_str()));
}

#[tokio::test]
async fn explain_says_why_nothing_matches() {
    let echo = echo_http("app").await;
    let portier = start(&echo, refused_port()).await;

    let e = explain(&portier, "https://node/grafana/").await;
    assert_eq!(e["outcome"], "noRoute");
    assert_eq!(e["matched"], false);
    assert_eq!(e["status"], 404);
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.contains("host \"node\" has 3 route(s)") && reason.contains("none matches path \"/grafana/\""),
        "{reason}"
    );
    let candidates: Vec<&str> = e["candidates"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(candidates, vec![DASH, DEAD, MISSING]);
    assert_eq!(e["candidates"][0]["path"], "/k8s");
    assert!(e["upstream"].is_null());

    let e = explain(&portier, "https://node/k8sfoo").await;
    assert_eq!(e["outcome"], "noRoute");
    assert!(e["hints"][0].as_str().unwrap().contains("whole path segments"), "{}", e["hints"]);

    let e = explain(&portier, "https://unknown.test/k8s/").await;
    assert_eq!(e["outcome"], "noRoute");
    let reason = e["reason"].as_str().unwrap();
    assert!(reason.contains("no route for host \"unknown.test\"") && reason.contains("node, secure.test"), "{reason}");
    assert_eq!(e["candidates"], serde_json::json!([]));

    assert_eq!(https_get(&portier, "unknown.test", "/k8s/").await.status, 404);
}

// ---------------------------------------------------------------- access log (the real binary)

fn manifest_dir(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    dir
}

/// A request carrying secrets in Authorization, Cookie and the query.
async fn secret_request(p: &PortierProcess, path: &str) -> Reply {
    let via = Via::Tls(Some("node"));
    let req = request("GET", "node", path, via)
        .header("authorization", "Bearer AUTH-SECRET-42")
        .header("cookie", "session=COOKIE-SECRET-42")
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(p.https, via, req).await
}

fn no_secrets(lines: &[String]) {
    for line in lines {
        for secret in ["AUTH-SECRET-42", "COOKIE-SECRET-42", "QUERY-SECRET-42", "Bearer"] {
            assert!(!line.contains(secret), "{secret} leaked into a log line: {line}");
        }
    }
}

async fn wait_lines(p: &PortierProcess, n: usize) -> Vec<String> {
    eventually("access log lines", || async {
        let lines = p.stdout_lines();
        (lines.len() >= n).then_some(lines)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_json_lines_have_the_fields_and_no_secrets() {
    let echo = echo_http("app").await;
    let dir = manifest_dir(&manifests(&echo, refused_port()));
    let p = PortierProcess::spawn(&["--manifests", dir.path().to_str().unwrap(), "--access-log"]);

    let reply = secret_request(&p, "/k8s/a/b?token=QUERY-SECRET-42").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echoed_header("authorization").as_deref(), Some("Bearer AUTH-SECRET-42"), "passed upstream");
    let nothing = secret_request(&p, "/nothing").await;
    assert_eq!(nothing.status, 404);

    let lines = wait_lines(&p, 2).await;
    assert_eq!(lines.len(), 2, "one line per request: {lines:#?}");
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["method"], "GET");
    assert_eq!(first["host"], "node");
    assert_eq!(first["path"], "/k8s/a/b", "the query is not logged");
    assert_eq!(first["status"], 200);
    assert_eq!(first["entry"], "https");
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["protocol"], "HTTP/1.1");
    assert_eq!(first["bytes"].as_u64().unwrap(), reply.body.len() as u64);
    assert!(first["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(first["upstream_ms"].as_f64().unwrap() > 0.0);
    assert!(first["duration_ms"].as_f64().unwrap() >= first["upstream_ms"].as_f64().unwrap());
    assert_eq!(first["route"], DASH);
    assert_eq!(first["backend"], "default/app:80");
    assert_eq!(first["backend_address"], echo.addr.to_string());
    let time = first["time"].as_str().unwrap();
    assert!(time.ends_with('Z') && time.len() == "2025-11-22T04:25:00.123Z".len(), "{time}");

    let second: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["status"], 404);
    assert!(second["route"].is_null() && second["backend_address"].is_null() && second["upstream_ms"].is_null());

    no_secrets(&p.stdout_lines());
    no_secrets(&p.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_common_format_and_off_by_default() {
    let echo = echo_http("app").await;
    let dir = manifest_dir(&manifests(&echo, refused_port()));
    let path = dir.path().to_str().unwrap();
    let common = PortierProcess::spawn(&["--manifests", path, "--access-log", "--access-log-format", "common"]);
    let quiet = PortierProcess::spawn(&["--manifests", path]);

    assert_eq!(secret_request(&common, "/k8s/?token=QUERY-SECRET-42").await.status, 200);
    let lines = wait_lines(&common, 1).await;
    let line = &lines[0];
    let pattern =
        format!("127.0.0.1 - - [ ] \"GET /k8s/ HTTP/1.1\" 200 N \"node\" \"{DASH}\" \"{}\" Nms Nms", echo.addr);
    // Replace the variable parts (time, byte count, durations) before comparing.
    let time_start = line.find('[').unwrap();
    let time_end = line.find(']').unwrap();
    assert_eq!(line[time_start + 1..time_end].len(), "22/Nov/2025:04:25:00 +0000".len(), "{line}");
    let normalised = format!("{}[ ]{}", &line[..time_start], &line[time_end + 1..]);
    let normalised: Vec<String> = normalised
        .split(' ')
        .map(|w| {
            let digits = w.trim_end_matches("ms");
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && w != "200" {
                w.replacen(digits, "N", 1)
            } else {
                w.to_string()
            }
        })
        .collect();
    assert_eq!(normalised.join(" "), pattern, "{line}");
    no_secrets(&lines);

    assert_eq!(secret_request(&quiet, "/k8s/").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(quiet.stdout_lines().is_empty(), "no access log without --access-log: {:?}", quiet.stdout_lines());
    no_secrets(&quiet.logs());
}
