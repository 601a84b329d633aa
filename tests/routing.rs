//! Routing end to end: forced HTTPS on the http entry, host and path matching, Traefik rule
//! types, precedence and its conflicts, the default backend, Ingress selection by label and
//! class, and refusal of an invalid Ingress alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------- helpers

const RULE_TYPE: &str = "traefik.ingress.kubernetes.io/rule-type";
const IS: &str = "ImplementationSpecific";

/// Echo backends, each behind a ClusterIP Service of the same name (port 80, named `http`) whose
/// EndpointSlice lists the echo on 127.0.0.1.
struct Backends {
    _echoes: Vec<Echo>,
    manifests: String,
}

async fn backends(names: &[&str]) -> Backends {
    let mut echoes = Vec::new();
    let mut docs = Vec::new();
    for name in names {
        let echo = echo_http(name).await;
        docs.push(service_with_slice(name, 80, "http", echo.port(), &[("127.0.0.1", true)]));
        echoes.push(echo);
    }
    Backends { _echoes: echoes, manifests: docs.join("---\n") }
}

/// Starts portier over the backends' Services plus these Ingress files.
async fn start(backends: &Backends, ingresses: &[(&str, String)], args: &[&str]) -> Portier {
    let mut files = vec![("services.yaml", backends.manifests.clone())];
    files.extend(ingresses.iter().map(|(n, c)| (*n, c.clone())));
    Portier::start(&files, args).await
}

/// GET on the https entry (SNI-less TLS, like a client connecting by IP).
async fn https_get(portier: &Portier, host: &str, path: &str) -> Reply {
    get(portier.https(), Via::Tls(None), host, path).await
}

/// Which echo backend answered (panics with the body when it was not an echo).
async fn answered_by(portier: &Portier, host: &str, path: &str) -> String {
    let reply = https_get(portier, host, path).await;
    assert_eq!(reply.status, 200, "{host}{path}: {}", reply.text());
    reply.json()["backend"].as_str().unwrap().to_string()
}

fn body_request(method: &str, host: &str, path: &str, via: Via<'_>, body: &str) -> http::Request<Full<Bytes>> {
    request(method, host, path, via).body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// Writes raw bytes to `addr` and returns the first line of the answer (the status line).
async fn raw_status_line(addr: std::net::SocketAddr, raw: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.windows(2).any(|w| w == b"\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s to {raw:?}");
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

/// The warnings portier lists on the admin address.
async fn warnings(portier: &Portier) -> Vec<serde_json::Value> {
    let reply = admin_get(portier, "/api/warnings").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json().as_array().cloned().unwrap_or_default()
}

fn warning_text(w: &serde_json::Value) -> String {
    format!("{} {}", w["object"].as_str().unwrap_or_default(), w["message"].as_str().unwrap_or_default())
}

/// A hand-written Ingress: `metadata_extra` and `spec` are YAML fragments indented for their
/// place (`metadata_extra` at 2 spaces, `spec` at 2 spaces under `spec:`).
fn manual_ingress(name: &str, metadata_extra: &str, spec: &str) -> String {
    format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n{metadata_extra}spec:\n{spec}")
}

/// One rule, one path, as YAML under `spec:`.
fn rule_spec(host: Option<&str>, path: &str, path_type: &str, service: &str) -> String {
    let host = host.map(|h| format!("  - host: {h:?}\n    http:\n")).unwrap_or_else(|| "  - http:\n".into());
    format!(
        "  rules:\n{host}      paths:\n      - path: {path}\n        pathType: {path_type}\n        backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n"
    )
}

// ---------------------------------------------------------------- 1. forced https

async fn strip_setup(args: &[&str]) -> (Portier, Backends) {
    let b = backends(&["dash"]).await;
    let portier = start(
        &b,
        &[("ing.yaml", ingress("dash", &[(RULE_TYPE, "PathPrefixStrip")], None, &[("/k8s", IS, "dash", 80)]))],
        args,
    )
    .await;
    (portier, b)
}

#[tokio::test]
async fn http_entry_redirects_get_and_head_with_301_to_the_https_port() {
    let (portier, _b) = strip_setup(&[]).await;
    let port = portier.https().port();
    for method in ["GET", "HEAD"] {
        let req = body_request(method, "node.invalid:8080", "/k8s/x?y=1", Via::Plain, "");
        let reply = send(portier.http(), Via::Plain, req).await;
        assert_eq!(reply.status, 301, "{method}");
        let expected = format!("https://node.invalid:{port}/k8s/x?y=1");
        assert_eq!(reply.header("location"), Some(expected.as_str()), "{method}");
    }
}

#[tokio::test]
async fn http_entry_redirects_post_and_put_with_308() {
    let (portier, _b) = strip_setup(&[]).await;
    let port = portier.https().port();
    for method in ["POST", "PUT"] {
        let req = body_request(method, "node.invalid", "/k8s/api/v1/login?a=b", Via::Plain, "{\"token\":\"t\"}");
        let reply = send(portier.http(), Via::Plain, req).await;
        assert_eq!(reply.status, 308, "{method} must keep its body across the redirect");
        let expected = format!("https://node.invalid:{port}/k8s/api/v1/login?a=b");
        assert_eq!(reply.header("location"), Some(expected.as_str()), "{method}");
    }
}

#[tokio::test]
async fn https_redirect_keeps_the_original_path_of_a_strip_route() {
    let (portier, _b) = strip_setup(&[]).await;
    let port = portier.https().port();
    // The bare prefix and a deep path: neither is stripped nor slash-redirected first.
    for path in ["/k8s", "/k8s/", "/k8s/x?y=1", "/k8s/a%2Fb?q=%20"] {
        let reply = get(portier.http(), Via::Plain, "node.invalid", path).await;
        assert_eq!(reply.status, 301, "{path}");
        let expected = format!("https://node.invalid:{port}{path}");
        assert_eq!(reply.header("location"), Some(expected.as_str()), "{path}");
    }
    // And the https entry really does serve what the redirect points at.
    let reply = https_get(&portier, "node.invalid", "/k8s/x?y=1").await;
    assert_eq!(reply.json()["uri"], "/x?y=1");
}

#[tokio::test]
async fn https_redirect_port_443_is_omitted_from_the_location() {
    let (portier, _b) = strip_setup(&["--https-redirect-port", "443"]).await;
    let reply = get(portier.http(), Via::Plain, "h.invalid:80", "/k8s/").await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("https://h.invalid/k8s/"));
}

#[tokio::test]
async fn https_redirect_port_other_than_443_is_written_in_the_location() {
    let (portier, _b) = strip_setup(&["--https-redirect-port", "8443"]).await;
    let reply = get(portier.http(), Via::Plain, "h.invalid", "/k8s/").await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("https://h.invalid:8443/k8s/"));
    let req = body_request("POST", "h.invalid:80", "/k8s/?x=1", Via::Plain, "data");
    let reply = send(portier.http(), Via::Plain, req).await;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("location"), Some("https://h.invalid:8443/k8s/?x=1"));
}

#[tokio::test]
async fn https_redirect_without_a_host_is_a_bad_request() {
    let (portier, _b) = strip_setup(&[]).await;
    let line = raw_status_line(portier.http(), "GET / HTTP/1.0\r\n\r\n").await;
    assert!(line.starts_with("HTTP/1.") && line.contains(" 400"), "status line: {line:?}");
}

#[tokio::test]
async fn https_redirect_with_an_invalid_host_is_a_bad_request() {
    let (portier, _b) = strip_setup(&[]).await;
    for host in ["a b", "evil.invalid/x", "evil.invalid@other.invalid", "x.invalid?y"] {
        let raw = format!("GET /k8s/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let line = raw_status_line(portier.http(), &raw).await;
        assert!(line.starts_with("HTTP/1.") && line.contains(" 400"), "Host {host:?}: status line {line:?}");
    }
}

// ---------------------------------------------------------------- 2. --no-https-redirect

#[tokio::test]
async fn no_https_redirect_serves_routes_on_the_http_entry() {
    let b = backends(&["app"]).await;
    let portier = start(
        &b,
        &[("ing.yaml", ingress("app", &[], None, &[("/app", "Prefix", "app", 80)]))],
        &["--no-https-redirect"],
    )
    .await;
    let reply = get(portier.http(), Via::Plain, "node.invalid", "/app/x?y=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    assert_eq!(echo["backend"], "app");
    assert_eq!(echo["uri"], "/app/x?y=1");
    assert_eq!(reply.echoed_header("x-forwarded-proto").as_deref(), Some("http"));
    // Unmatched paths on the http entry are 404, not a redirect.
    let reply = get(portier.http(), Via::Plain, "node.invalid", "/other").await;
    assert_eq!(reply.status, 404, "{}", reply.text());
}

#[tokio::test]
async fn redirect_entry_point_annotation_redirects_temporarily_on_http() {
    let b = backends(&["app", "open"]).await;
    let redirecting = ingress(
        "app",
        &[("traefik.ingress.kubernetes.io/redirect-entry-point", "https")],
        Some("r.invalid"),
        &[("/app", "Prefix", "app", 80)],
    );
    let open = ingress("open", &[], Some("o.invalid"), &[("/", "Prefix", "open", 80)]);
    let portier = start(&b, &[("a.yaml", redirecting), ("o.yaml", open)], &["--no-https-redirect"]).await;
    let port = portier.https().port();
    let expected = format!("https://r.invalid:{port}/app/x?y=1");

    let reply = get(portier.http(), Via::Plain, "r.invalid:8080", "/app/x?y=1").await;
    assert_eq!(reply.status, 302, "{}", reply.text());
    assert_eq!(reply.header("location"), Some(expected.as_str()));
    let reply =
        send(portier.http(), Via::Plain, body_request("POST", "r.invalid", "/app/x?y=1", Via::Plain, "b")).await;
    assert_eq!(reply.status, 307, "{}", reply.text());
    assert_eq!(reply.header("location"), Some(expected.as_str()));

    // The same route on https is served; other routes on http are served.
    assert_eq!(answered_by(&portier, "r.invalid", "/app/x").await, "app");
    let reply = get(portier.http(), Via::Plain, "o.invalid", "/x").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["backend"], "open");
}

#[tokio::test]
async fn redirect_permanent_annotation_makes_the_entry_point_redirect_permanent() {
    let b = backends(&["app"]).await;
    let redirecting = ingress(
        "app",
        &[
            ("traefik.ingress.kubernetes.io/redirect-entry-point", "https"),
            ("traefik.ingress.kubernetes.io/redirect-permanent", "true"),
        ],
        Some("r.invalid"),
        &[("/app", "Prefix", "app", 80)],
    );
    let portier = start(&b, &[("a.yaml", redirecting)], &["--no-https-redirect", "--https-redirect-port", "443"]).await;
    let reply = get(portier.http(), Via::Plain, "r.invalid", "/app/x?y=1").await;
    assert_eq!(reply.status, 301, "{}", reply.text());
    assert_eq!(reply.header("location"), Some("https://r.invalid/app/x?y=1"));
    let reply = send(portier.http(), Via::Plain, body_request("PUT", "r.invalid", "/app/x", Via::Plain, "b")).await;
    assert_eq!(reply.status, 308, "{}", reply.text());
    assert_eq!(reply.header("location"), Some("https://r.invalid/app/x"));
}

// ---------------------------------------------------------------- 3. hosts

async fn host_setup() -> (Portier, Backends) {
    let b = backends(&["exact", "wild", "any", "b"]).await;
    let portier = start(
        &b,
        &[
            ("exact.yaml", ingress("exact", &[], Some("x.a.invalid"), &[("/", "Prefix", "exact", 80)])),
            ("wild.yaml", ingress("wild", &[], Some("*.a.invalid"), &[("/", "Prefix", "wild", 80)])),
            ("any.yaml", ingress("any", &[], None, &[("/", "Prefix", "any", 80)])),
            ("b.yaml", ingress("b", &[], Some("B.Invalid"), &[("/only", "Prefix", "b", 80)])),
        ],
        &[],
    )
    .await;
    (portier, b)
}

#[tokio::test]
async fn host_match_ignores_case_and_port() {
    let (portier, _b) = host_setup().await;
    for host in ["x.a.invalid", "X.A.INVALID", "x.a.invalid:8443", "X.a.Invalid:1"] {
        assert_eq!(answered_by(&portier, host, "/p").await, "exact", "{host}");
    }
    for host in ["b.invalid", "B.INVALID:443"] {
        assert_eq!(answered_by(&portier, host, "/only/x").await, "b", "{host}");
    }
}

#[tokio::test]
async fn exact_host_beats_wildcard() {
    let (portier, _b) = host_setup().await;
    assert_eq!(answered_by(&portier, "x.a.invalid", "/").await, "exact");
    assert_eq!(answered_by(&portier, "z.a.invalid", "/").await, "wild");
    assert_eq!(answered_by(&portier, "Z.A.invalid:9", "/").await, "wild");
}

#[tokio::test]
async fn wildcard_host_matches_exactly_one_extra_label() {
    let (portier, _b) = host_setup().await;
    assert_eq!(answered_by(&portier, "q.a.invalid", "/x").await, "wild");
    assert_eq!(answered_by(&portier, "y.q.a.invalid", "/x").await, "any", "two extra labels");
    assert_eq!(answered_by(&portier, "a.invalid", "/x").await, "any", "no extra label");
}

#[tokio::test]
async fn rule_without_host_matches_other_hosts_but_loses_to_host_rules() {
    let (portier, _b) = host_setup().await;
    assert_eq!(answered_by(&portier, "other.invalid", "/x").await, "any");
    assert_eq!(answered_by(&portier, "localhost", "/").await, "any");
    assert_eq!(answered_by(&portier, "b.invalid", "/only").await, "b");
    // A host rule's path that does not match leaves the request to the rule without host.
    assert_eq!(answered_by(&portier, "b.invalid", "/elsewhere").await, "any");
}

#[tokio::test]
async fn host_rule_beats_a_longer_path_in_a_rule_without_host() {
    let b = backends(&["host", "nohost"]).await;
    let portier = start(
        &b,
        &[
            ("h.yaml", ingress("host", &[], Some("h.invalid"), &[("/api", "Prefix", "host", 80)])),
            ("n.yaml", ingress("nohost", &[], None, &[("/api/deeper", "Prefix", "nohost", 80)])),
        ],
        &[],
    )
    .await;
    assert_eq!(answered_by(&portier, "h.invalid", "/api/deeper/x").await, "host");
    assert_eq!(answered_by(&portier, "other.invalid", "/api/deeper/x").await, "nohost");
}

// ---------------------------------------------------------------- 4. paths and rule types

#[tokio::test]
async fn prefix_path_type_matches_whole_segments_only() {
    let b = backends(&["prefix"]).await;
    let portier = start(&b, &[("i.yaml", ingress("p", &[], None, &[("/foo", "Prefix", "prefix", 80)]))], &[]).await;
    for path in ["/foo", "/foo/", "/foo/bar", "/foo/bar/baz?x=1"] {
        let reply = https_get(&portier, "h.invalid", path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.json()["uri"], path, "Prefix does not rewrite");
    }
    for path in ["/foobar", "/fo", "/", "/other/foo"] {
        let reply = https_get(&portier, "h.invalid", path).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
    }
}

#[tokio::test]
async fn exact_path_type_matches_only_that_path_and_beats_prefix() {
    let b = backends(&["prefix", "exact"]).await;
    // The Prefix path is listed first, so input order cannot explain the Exact win.
    let ing = ingress("p", &[], None, &[("/foo", "Prefix", "prefix", 80), ("/foo", "Exact", "exact", 80)]);
    let portier = start(&b, &[("i.yaml", ing)], &[]).await;
    assert_eq!(answered_by(&portier, "h.invalid", "/foo").await, "exact");
    assert_eq!(answered_by(&portier, "h.invalid", "/foo?q=1").await, "exact");
    assert_eq!(answered_by(&portier, "h.invalid", "/foo/").await, "prefix");
    assert_eq!(answered_by(&portier, "h.invalid", "/foo/bar").await, "prefix");

    let b2 = backends(&["only"]).await;
    let portier = start(&b2, &[("i.yaml", ingress("e", &[], None, &[("/exact", "Exact", "only", 80)]))], &[]).await;
    assert_eq!(answered_by(&portier, "h.invalid", "/exact").await, "only");
    for path in ["/exact/", "/exact/x", "/exactly"] {
        let reply = https_get(&portier, "h.invalid", path).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
    }
}

#[tokio::test]
async fn longer_prefix_beats_shorter() {
    let b = backends(&["short", "long"]).await;
    // The shorter prefix comes first in the file and in the Ingress order.
    let portier = start(
        &b,
        &[
            ("a.yaml", ingress("a-short", &[], None, &[("/foo", "Prefix", "short", 80)])),
            ("b.yaml", ingress("b-long", &[], None, &[("/foo/bar", "Prefix", "long", 80)])),
        ],
        &[],
    )
    .await;
    assert_eq!(answered_by(&portier, "h.invalid", "/foo/bar").await, "long");
    assert_eq!(answered_by(&portier, "h.invalid", "/foo/bar/baz").await, "long");
    assert_eq!(answered_by(&portier, "h.invalid", "/foo/barx").await, "short");
    assert_eq!(answered_by(&portier, "h.invalid", "/foo/ba").await, "short");
}

#[tokio::test]
async fn rule_type_path_matches_exactly_and_does_not_strip() {
    let b = backends(&["p"]).await;
    let portier =
        start(&b, &[("i.yaml", ingress("p", &[(RULE_TYPE, "Path")], None, &[("/exact", IS, "p", 80)]))], &[]).await;
    let reply = https_get(&portier, "h.invalid", "/exact?a=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["uri"], "/exact?a=1");
    assert!(reply.json()["headers"].get("x-forwarded-prefix").is_none(), "{}", reply.text());
    for path in ["/exact/", "/exact/x", "/exactly"] {
        let reply = https_get(&portier, "h.invalid", path).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
    }
}

#[tokio::test]
async fn rule_type_path_strip_matches_exactly_and_strips_to_slash() {
    let b = backends(&["ps"]).await;
    let portier =
        start(&b, &[("i.yaml", ingress("ps", &[(RULE_TYPE, "PathStrip")], None, &[("/ps", IS, "ps", 80)]))], &[]).await;
    let reply = https_get(&portier, "h.invalid", "/ps").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["uri"], "/");
    assert_eq!(reply.echoed_header("x-forwarded-prefix").as_deref(), Some("/ps"));
    let reply = https_get(&portier, "h.invalid", "/ps?q=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["uri"], "/?q=1");
    for path in ["/ps/x", "/psx"] {
        let reply = https_get(&portier, "h.invalid", path).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
    }
}

#[tokio::test]
async fn rule_type_path_prefix_matches_prefix_and_does_not_strip() {
    let b = backends(&["pp"]).await;
    let portier =
        start(&b, &[("i.yaml", ingress("pp", &[(RULE_TYPE, "PathPrefix")], None, &[("/pp", IS, "pp", 80)]))], &[])
            .await;
    for path in ["/pp", "/pp/", "/pp/x/y?z=1"] {
        let reply = https_get(&portier, "h.invalid", path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.json()["uri"], path, "{path}");
        assert!(reply.json()["headers"].get("x-forwarded-prefix").is_none(), "{path}: {}", reply.text());
    }
    let reply = https_get(&portier, "h.invalid", "/ppx").await;
    assert_eq!(reply.status, 404, "{}", reply.text());
}

#[tokio::test]
async fn rule_type_replace_path_replaces_the_whole_path() {
    let b = backends(&["rp"]).await;
    let portier =
        start(&b, &[("i.yaml", ingress("rp", &[(RULE_TYPE, "ReplacePath")], None, &[("/fixed", IS, "rp", 80)]))], &[])
            .await;
    for (sent, original) in [("/fixed", "/fixed"), ("/fixed/a/b?q=1", "/fixed/a/b")] {
        let reply = https_get(&portier, "h.invalid", sent).await;
        assert_eq!(reply.status, 200, "{sent}: {}", reply.text());
        let uri = reply.json()["uri"].as_str().unwrap().to_string();
        assert_eq!(uri.split('?').next(), Some("/fixed"), "{sent}: upstream got {uri}");
        assert_eq!(reply.echoed_header("x-replaced-path").as_deref(), Some(original), "{sent}");
    }
}

#[tokio::test]
async fn rewrite_target_replaces_the_matched_prefix() {
    let b = backends(&["rw"]).await;
    let portier = start(
        &b,
        &[(
            "i.yaml",
            ingress("rw", &[("traefik.ingress.kubernetes.io/rewrite-target", "/new")], None, &[("/old", IS, "rw", 80)]),
        )],
        &[],
    )
    .await;
    let reply = https_get(&portier, "h.invalid", "/old/x").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["uri"], "/new/x");
    assert_eq!(reply.echoed_header("x-replaced-path").as_deref(), Some("/old/x"));
    let reply = https_get(&portier, "h.invalid", "/old/a/b?q=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["uri"], "/new/a/b?q=1");
    assert_eq!(reply.echoed_header("x-replaced-path").as_deref(), Some("/old/a/b"));
    let reply = https_get(&portier, "h.invalid", "/oldx").await;
    assert_eq!(reply.status, 404, "{}", reply.text());
}

#[tokio::test]
async fn rule_type_is_read_from_all_three_annotation_spellings() {
    let spellings =
        ["traefik.ingress.kubernetes.io/rule-type", "ingress.kubernetes.io/rule-type", "traefik.frontend.rule.type"];
    let b = backends(&["s1", "s2", "s3"]).await;
    let files: Vec<(String, String)> = spellings
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let n = i + 1;
            (
                format!("s{n}.yaml"),
                ingress(
                    &format!("s{n}"),
                    &[(name, "PathPrefixStrip")],
                    None,
                    &[(&format!("/s{n}"), IS, &format!("s{n}"), 80)],
                ),
            )
        })
        .collect();
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let portier = start(&b, &files, &[]).await;
    for (i, name) in spellings.iter().enumerate() {
        let n = i + 1;
        let reply = https_get(&portier, "h.invalid", &format!("/s{n}/x?y=1")).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(reply.json()["backend"], format!("s{n}"), "{name}");
        assert_eq!(reply.json()["uri"], "/x?y=1", "{name} was not read as PathPrefixStrip");
        assert_eq!(reply.echoed_header("x-forwarded-prefix"), Some(format!("/s{n}")), "{name}");
    }
}

// ---------------------------------------------------------------- 5. precedence ties

#[tokio::test]
async fn older_ingress_wins_a_tie_and_the_conflict_is_warned() {
    let b = backends(&["old", "new"]).await;
    // The newer one sorts first by name, so only the timestamp can make "z-old" win.
    let newer = manual_ingress(
        "a-new",
        "  creationTimestamp: \"2024-05-01T00:00:00Z\"\n",
        &rule_spec(Some("t.invalid"), "/api", "Prefix", "new"),
    );
    let older = manual_ingress(
        "z-old",
        "  creationTimestamp: \"2020-01-01T00:00:00Z\"\n",
        &rule_spec(Some("t.invalid"), "/api", "Prefix", "old"),
    );
    let portier = start(&b, &[("a.yaml", newer), ("z.yaml", older)], &[]).await;
    assert_eq!(answered_by(&portier, "t.invalid", "/api/x").await, "old");
    assert_eq!(answered_by(&portier, "t.invalid", "/api").await, "old");
    let all = warnings(&portier).await;
    let conflict = all.iter().map(warning_text).find(|t| t.contains("default/a-new") && t.contains("default/z-old"));
    assert!(conflict.is_some(), "no warning naming both Ingresses: {all:#?}");
}

#[tokio::test]
async fn priority_annotation_decides_between_same_paths_of_different_ingresses() {
    let b = backends(&["old", "prio"]).await;
    let older = manual_ingress(
        "old",
        "  creationTimestamp: \"2020-01-01T00:00:00Z\"\n",
        &rule_spec(Some("t.invalid"), "/api", "Prefix", "old"),
    );
    let prioritised = manual_ingress(
        "prio",
        "  creationTimestamp: \"2024-05-01T00:00:00Z\"\n  annotations: {traefik.ingress.kubernetes.io/priority: \"10\"}\n",
        &rule_spec(Some("t.invalid"), "/api", "Prefix", "prio"),
    );
    let portier = start(&b, &[("old.yaml", older), ("prio.yaml", prioritised)], &[]).await;
    assert_eq!(answered_by(&portier, "t.invalid", "/api/x").await, "prio");
    assert_eq!(answered_by(&portier, "t.invalid", "/api").await, "prio");
}

#[tokio::test]
async fn priority_does_not_override_a_longer_prefix() {
    let b = backends(&["short", "long"]).await;
    let short = ingress(
        "short",
        &[("traefik.ingress.kubernetes.io/priority", "100")],
        None,
        &[("/api", "Prefix", "short", 80)],
    );
    let long = ingress("long", &[], None, &[("/api/v1", "Prefix", "long", 80)]);
    let portier = start(&b, &[("s.yaml", short), ("l.yaml", long)], &[]).await;
    assert_eq!(answered_by(&portier, "h.invalid", "/api/v1/x").await, "long");
    assert_eq!(answered_by(&portier, "h.invalid", "/api/v2").await, "short");
}

// ---------------------------------------------------------------- 6. default backend

fn default_backend_spec(service: &str) -> String {
    format!("  defaultBackend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n")
}

#[tokio::test]
async fn default_backend_serves_what_no_rule_matches() {
    let b = backends(&["fallback", "app"]).await;
    let spec = format!("{}{}", default_backend_spec("fallback"), rule_spec(Some("h.invalid"), "/app", "Prefix", "app"));
    let portier = start(&b, &[("i.yaml", manual_ingress("with-default", "", &spec))], &[]).await;
    assert_eq!(answered_by(&portier, "h.invalid", "/app/x").await, "app");
    assert_eq!(answered_by(&portier, "h.invalid", "/elsewhere").await, "fallback");
    assert_eq!(answered_by(&portier, "other.invalid", "/app").await, "fallback");
    let reply = https_get(&portier, "other.invalid", "/a/b?c=d").await;
    assert_eq!(reply.json()["uri"], "/a/b?c=d", "the default backend gets the path unchanged");
}

#[tokio::test]
async fn unmatched_request_without_default_backend_is_404_saying_no_route() {
    let b = backends(&["app"]).await;
    let portier =
        start(&b, &[("i.yaml", ingress("app", &[], Some("h.invalid"), &[("/app", "Prefix", "app", 80)]))], &[]).await;
    for (host, path) in [("h.invalid", "/other"), ("other.invalid", "/app")] {
        let reply = https_get(&portier, host, path).await;
        assert_eq!(reply.status, 404, "{host}{path}");
        assert!(reply.text().to_lowercase().contains("no route"), "{host}{path}: body {:?}", reply.text());
    }
}

#[tokio::test]
async fn second_default_backend_is_ignored_with_a_warning_naming_both() {
    let b = backends(&["first", "second"]).await;
    let first = manual_ingress("a-first", "", &default_backend_spec("first"));
    let second = manual_ingress("b-second", "", &default_backend_spec("second"));
    let portier = start(&b, &[("a.yaml", first), ("b.yaml", second)], &[]).await;
    assert_eq!(answered_by(&portier, "h.invalid", "/anything").await, "first");
    let all = warnings(&portier).await;
    let found = all.iter().map(warning_text).find(|t| {
        t.contains("default/a-first")
            && t.contains("default/b-second")
            && t.to_lowercase().replace(' ', "").contains("defaultbackend")
    });
    assert!(found.is_some(), "no warning naming both Ingresses: {all:#?}");
}

// ---------------------------------------------------------------- 7. selection

fn labelled_ingress(name: &str, labels: &str, host: &str) -> String {
    let labels = if labels.is_empty() { String::new() } else { format!("  labels: {{{labels}}}\n") };
    manual_ingress(name, &labels, &rule_spec(Some(host), "/", "Prefix", name))
}

#[tokio::test]
async fn label_selector_ignores_ingresses_without_the_label() {
    let b = backends(&["labelled", "unlabelled", "other"]).await;
    let portier = start(
        &b,
        &[
            ("a.yaml", labelled_ingress("labelled", "app: traefik", "l.invalid")),
            ("b.yaml", labelled_ingress("unlabelled", "", "u.invalid")),
            ("c.yaml", labelled_ingress("other", "app: nginx", "o.invalid")),
        ],
        &["--label-selector", "app=traefik"],
    )
    .await;
    assert_eq!(answered_by(&portier, "l.invalid", "/").await, "labelled");
    for host in ["u.invalid", "o.invalid"] {
        let reply = https_get(&portier, host, "/").await;
        assert_eq!(reply.status, 404, "{host}: {}", reply.text());
    }
}

#[tokio::test]
async fn set_based_label_selectors_work() {
    let b = backends(&["traefik", "x", "y", "skipped", "none"]).await;
    let portier = start(
        &b,
        &[
            ("a.yaml", labelled_ingress("traefik", "app: traefik", "t.invalid")),
            ("b.yaml", labelled_ingress("x", "app: x", "x.invalid")),
            ("c.yaml", labelled_ingress("y", "app: y", "y.invalid")),
            ("d.yaml", labelled_ingress("skipped", "app: traefik, skip: \"1\"", "s.invalid")),
            ("e.yaml", labelled_ingress("none", "", "n.invalid")),
        ],
        &["--label-selector", "app in (traefik,x),!skip"],
    )
    .await;
    assert_eq!(answered_by(&portier, "t.invalid", "/").await, "traefik");
    assert_eq!(answered_by(&portier, "x.invalid", "/").await, "x");
    for host in ["y.invalid", "s.invalid", "n.invalid"] {
        let reply = https_get(&portier, host, "/").await;
        assert_eq!(reply.status, 404, "{host}: {}", reply.text());
    }
}

#[tokio::test]
async fn not_exists_selector_alone_works() {
    let b = backends(&["kept", "skipped"]).await;
    let portier = start(
        &b,
        &[
            ("a.yaml", labelled_ingress("kept", "app: traefik", "k.invalid")),
            ("b.yaml", labelled_ingress("skipped", "skip: \"yes\"", "s.invalid")),
        ],
        &["--label-selector", "!skip"],
    )
    .await;
    assert_eq!(answered_by(&portier, "k.invalid", "/").await, "kept");
    let reply = https_get(&portier, "s.invalid", "/").await;
    assert_eq!(reply.status, 404, "{}", reply.text());
}

/// Ingresses named after how they give their class, each on its own host `<name>.invalid`.
fn class_ingresses() -> Vec<(String, String)> {
    let annotated = |name: &str, class: &str| {
        let meta = format!("  annotations: {{kubernetes.io/ingress.class: {class:?}}}\n");
        manual_ingress(name, &meta, &rule_spec(Some(&format!("{name}.invalid")), "/", "Prefix", name))
    };
    let spec_class = |name: &str, class: &str| {
        let spec = format!(
            "  ingressClassName: {class:?}\n{}",
            rule_spec(Some(&format!("{name}.invalid")), "/", "Prefix", name)
        );
        manual_ingress(name, "", &spec)
    };
    let none = manual_ingress("none", "", &rule_spec(Some("none.invalid"), "/", "Prefix", "none"));
    vec![
        ("none".into(), none),
        ("ann-empty".into(), annotated("ann-empty", "")),
        ("ann-traefik".into(), annotated("ann-traefik", "traefik")),
        ("ann-portier".into(), annotated("ann-portier", "portier")),
        ("ann-nginx".into(), annotated("ann-nginx", "nginx")),
        ("spec-empty".into(), spec_class("spec-empty", "")),
        ("spec-traefik".into(), spec_class("spec-traefik", "traefik")),
        ("spec-portier".into(), spec_class("spec-portier", "portier")),
        ("spec-nginx".into(), spec_class("spec-nginx", "nginx")),
    ]
}

async fn class_setup(args: &[&str]) -> (Portier, Backends) {
    let ingresses = class_ingresses();
    let names: Vec<&str> = ingresses.iter().map(|(n, _)| n.as_str()).collect();
    let b = backends(&names).await;
    let files: Vec<(String, String)> = ingresses.iter().map(|(n, c)| (format!("{n}.yaml"), c.clone())).collect();
    let files: Vec<(&str, String)> = files.iter().map(|(n, c)| (n.as_str(), c.clone())).collect();
    let portier = start(&b, &files, args).await;
    (portier, b)
}

async fn served(portier: &Portier, name: &str) -> bool {
    let reply = https_get(portier, &format!("{name}.invalid"), "/").await;
    match reply.status {
        200 => {
            assert_eq!(reply.json()["backend"], name);
            true
        }
        404 => false,
        other => panic!("{name}: unexpected status {other}: {}", reply.text()),
    }
}

#[tokio::test]
async fn without_ingress_class_flag_accepts_none_empty_traefik_portier_and_rejects_nginx() {
    let (portier, _b) = class_setup(&[]).await;
    for name in ["none", "ann-empty", "ann-traefik", "ann-portier", "spec-empty", "spec-traefik", "spec-portier"] {
        assert!(served(&portier, name).await, "{name} should be accepted");
    }
    for name in ["ann-nginx", "spec-nginx"] {
        assert!(!served(&portier, name).await, "{name} should be rejected");
    }
}

#[tokio::test]
async fn ingress_class_flag_accepts_only_that_class() {
    let (portier, _b) = class_setup(&["--ingress-class", "nginx"]).await;
    for name in ["ann-nginx", "spec-nginx"] {
        assert!(served(&portier, name).await, "{name} should be accepted");
    }
    for name in ["none", "ann-empty", "ann-traefik", "ann-portier", "spec-empty", "spec-traefik", "spec-portier"] {
        assert!(!served(&portier, name).await, "{name} should be rejected");
    }
}

// ---------------------------------------------------------------- 8. refusal of one Ingress

#[tokio::test]
async fn invalid_ingress_is_refused_alone_and_warned() {
    let b = backends(&["bad", "good"]).await;
    let bad = ingress("bad", &[(RULE_TYPE, "Regex")], Some("bad.invalid"), &[("/", "Prefix", "bad", 80)]);
    let good = ingress("good", &[], Some("good.invalid"), &[("/", "Prefix", "good", 80)]);
    let portier = start(&b, &[("both.yaml", format!("{bad}\n---\n{good}"))], &[]).await;
    assert_eq!(answered_by(&portier, "good.invalid", "/x").await, "good");
    let reply = https_get(&portier, "bad.invalid", "/x").await;
    assert_eq!(reply.status, 404, "{}", reply.text());
    let all = warnings(&portier).await;
    let refused = all.iter().find(|w| warning_text(w).contains("default/bad"));
    let refused = refused.unwrap_or_else(|| panic!("no warning naming default/bad: {all:#?}"));
    assert_eq!(refused["refused"], true, "{refused}");
    assert!(warning_text(refused).contains("Regex"), "the warning should give the reason: {refused}");
    assert!(
        !all.iter().any(|w| warning_text(w).contains("default/good") && w["refused"] == true),
        "the valid Ingress must not be refused: {all:#?}"
    );
}
