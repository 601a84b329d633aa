//! Backends end to end through the https entry: HTTPS backends and their verification (CA, SNI
//! name, per-Ingress and global skip), ClusterIP Services with EndpointSlices (round robin,
//! readiness, 503), ports by name, 502/503 errors, HTTP/2 to backends, and the forwarding
//! headers a backend sees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

// ---------------------------------------------------------------- helpers

const PROTOCOL: &str = "ingress.kubernetes.io/protocol";
const TRAEFIK_PROTOCOL: &str = "traefik.ingress.kubernetes.io/protocol";
const SKIP_VERIFY: &str = "portier.io/insecure-skip-verify";
const PRESERVE_HOST: &str = "traefik.ingress.kubernetes.io/preserve-host";

/// Fails the test instead of hanging when portier never answers.
async fn guarded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), fut).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// An Ingress routing every path of `host` (any host when None) to `service` on `port`.
fn route_all(name: &str, annotations: &[(&str, &str)], host: Option<&str>, service: &str, port: u16) -> String {
    ingress(name, annotations, host, &[("/", "Prefix", service, port)])
}

/// An Ingress routing `/` to `service`, its port given by name.
fn ingress_port_by_name(name: &str, host: Option<&str>, service: &str, port_name: &str) -> String {
    route_all(name, &[], host, service, 1).replace("port: {number: 1}", &format!("port: {{name: {port_name}}}"))
}

/// A ClusterIP Service (one port, named) with one EndpointSlice per `(target port, endpoints)`
/// entry: several slices let two backends on 127.0.0.1 differ by port.
fn service_with_slices(name: &str, port: u16, port_name: &str, slices: &[(u16, &[(&str, bool)])]) -> String {
    let first_target = slices.first().map(|(p, _)| *p).unwrap_or(port);
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: {port_name}, port: {port}, targetPort: {first_target}}}]\n"
    );
    for (i, (target, endpoints)) in slices.iter().enumerate() {
        let eps: String = endpoints
            .iter()
            .map(|(addr, ready)| format!("  - addresses: [\"{addr}\"]\n    conditions: {{ready: {ready}}}\n"))
            .collect();
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-s{i}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: {port_name}, port: {target}}}]\nendpoints:\n{eps}"
        ));
    }
    out
}

/// A file holding a PEM, for `--backend-ca` (kept while the returned handle lives).
fn pem_file(pem: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".pem").tempfile().unwrap();
    std::fs::write(file.path(), pem).unwrap();
    file
}

fn path_of(file: &tempfile::NamedTempFile) -> String {
    file.path().display().to_string()
}

/// GET on the https entry with SNI and Host `host`.
async fn https_get(portier: &Portier, host: &str, path: &str) -> Reply {
    guarded(&format!("GET https://{host}{path}"), get(portier.https(), Via::Tls(Some(host)), host, path)).await
}

/// GET on the https entry with extra request headers.
async fn https_get_with(portier: &Portier, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = request("GET", host, path, Via::Tls(Some(host)));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(Full::new(Bytes::new())).unwrap();
    guarded(&format!("GET https://{host}{path}"), send(portier.https(), Via::Tls(Some(host)), req)).await
}

/// Asserts an echo answered, and returns which one.
fn backend_of(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "expected the echo to answer: {}", reply.text());
    reply.json()["backend"].as_str().unwrap().to_string()
}

fn assert_502_certificate(reply: &Reply, backend: &str) {
    let body = reply.text();
    assert_eq!(reply.status, 502, "{body}");
    assert!(body.contains("certificate"), "the body must say it is about the certificate: {body}");
    assert!(body.contains(backend), "the body must name the backend {backend}: {body}");
}

/// A backend with an ExternalName Service `localhost` on its port, and the Ingress to it.
async fn https_backend_portier(
    leaf: &Leaf,
    port_name: Option<&str>,
    annotations: &[(&str, &str)],
    args: &[&str],
) -> (Portier, Echo) {
    let echo = echo_https("secure", leaf).await;
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("web", "localhost", echo.port(), port_name)),
            ("ing.yaml", route_all("web", annotations, None, "web", echo.port())),
        ],
        args,
    )
    .await;
    (portier, echo)
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

// ---------------------------------------------------------------- 1. HTTPS backends

#[tokio::test]
async fn https_backend_detected_by_port_name_is_refused_without_trust() {
    let ca = TestCa::new("backend ca");
    let (portier, echo) = https_backend_portier(&ca.leaf(&["localhost"]), Some("https-web"), &[], &[]).await;
    let reply = https_get(&portier, "app.test", "/x").await;
    assert_502_certificate(&reply, &format!("default/web:{}", echo.port()));
}

#[tokio::test]
async fn https_backend_detected_by_port_name_is_served_with_backend_ca() {
    let ca = TestCa::new("backend ca");
    let ca_file = pem_file(&ca.pem);
    let (portier, _echo) =
        https_backend_portier(&ca.leaf(&["localhost"]), Some("https-web"), &[], &["--backend-ca", &path_of(&ca_file)])
            .await;
    let reply = https_get(&portier, "app.test", "/x").await;
    assert_eq!(backend_of(&reply), "secure");
    assert_eq!(reply.json()["uri"], "/x");
}

#[tokio::test]
async fn plain_port_name_without_annotation_speaks_http_to_a_tls_backend_and_fails() {
    // The control for the two protocol-annotation tests below: without detection, portier
    // speaks plain HTTP to the TLS port, which cannot work.
    let ca = TestCa::new("backend ca");
    let ca_file = pem_file(&ca.pem);
    let (portier, echo) =
        https_backend_portier(&ca.leaf(&["localhost"]), Some("web"), &[], &["--backend-ca", &path_of(&ca_file)]).await;
    let reply = https_get(&portier, "app.test", "/x").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.text().contains(&format!("default/web:{}", echo.port())), "{}", reply.text());
}

#[tokio::test]
async fn https_backend_detected_by_protocol_annotation() {
    let ca = TestCa::new("backend ca");
    let ca_file = pem_file(&ca.pem);
    let (portier, _echo) = https_backend_portier(
        &ca.leaf(&["localhost"]),
        Some("web"),
        &[(PROTOCOL, "https")],
        &["--backend-ca", &path_of(&ca_file)],
    )
    .await;
    let reply = https_get(&portier, "app.test", "/x").await;
    assert_eq!(backend_of(&reply), "secure");
}

#[tokio::test]
async fn https_backend_detected_by_traefik_protocol_annotation() {
    let ca = TestCa::new("backend ca");
    let ca_file = pem_file(&ca.pem);
    let (portier, _echo) = https_backend_portier(
        &ca.leaf(&["localhost"]),
        None,
        &[(TRAEFIK_PROTOCOL, "https")],
        &["--backend-ca", &path_of(&ca_file)],
    )
    .await;
    let reply = https_get(&portier, "app.test", "/x").await;
    assert_eq!(backend_of(&reply), "secure");
}

#[tokio::test]
async fn https_backend_by_protocol_annotation_is_verified_by_default() {
    let ca = TestCa::new("backend ca");
    let (portier, echo) = https_backend_portier(&ca.leaf(&["localhost"]), None, &[(PROTOCOL, "https")], &[]).await;
    let reply = https_get(&portier, "app.test", "/x").await;
    assert_502_certificate(&reply, &format!("default/web:{}", echo.port()));
}

#[tokio::test]
async fn per_ingress_skip_verify_serves_self_signed_backend_only_for_that_ingress() {
    let echo = echo_https("dashboard", &self_signed(&["localhost"])).await;
    let port = echo.port();
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("dash", "localhost", port, Some("https"))),
            ("lax.yaml", route_all("lax", &[(SKIP_VERIFY, "true")], Some("lax.test"), "dash", port)),
            ("strict.yaml", route_all("strict", &[], Some("strict.test"), "dash", port)),
        ],
        &[],
    )
    .await;
    let reply = https_get(&portier, "lax.test", "/").await;
    assert_eq!(backend_of(&reply), "dashboard");
    let reply = https_get(&portier, "strict.test", "/").await;
    assert_502_certificate(&reply, &format!("default/dash:{port}"));
    // And again in the other order, now that a pooled connection to the backend exists.
    let reply = https_get(&portier, "lax.test", "/").await;
    assert_eq!(backend_of(&reply), "dashboard");
    let reply = https_get(&portier, "strict.test", "/").await;
    assert_502_certificate(&reply, &format!("default/dash:{port}"));
}

#[tokio::test]
async fn global_insecure_skip_verify_serves_self_signed_backend() {
    let (portier, _echo) =
        https_backend_portier(&self_signed(&["localhost"]), Some("https"), &[], &["--insecure-skip-verify"]).await;
    let reply = https_get(&portier, "app.test", "/").await;
    assert_eq!(backend_of(&reply), "secure");
}

#[tokio::test]
async fn self_signed_backend_is_refused_even_with_an_unrelated_backend_ca() {
    let unrelated = TestCa::new("someone else");
    let ca_file = pem_file(&unrelated.pem);
    let (portier, echo) =
        https_backend_portier(&self_signed(&["localhost"]), Some("https"), &[], &["--backend-ca", &path_of(&ca_file)])
            .await;
    let reply = https_get(&portier, "app.test", "/").await;
    assert_502_certificate(&reply, &format!("default/web:{}", echo.port()));
}

#[tokio::test]
async fn backend_certificate_must_name_the_external_name_host() {
    let ca = TestCa::new("backend ca");
    let ca_file = pem_file(&ca.pem);
    let right = echo_https("right", &ca.leaf(&["localhost"])).await;
    let wrong = echo_https("wrong", &ca.leaf(&["other.invalid"])).await;
    let portier = Portier::start(
        &[
            ("right.yaml", external_service("right", "localhost", right.port(), Some("https"))),
            ("wrong.yaml", external_service("wrong", "localhost", wrong.port(), Some("https"))),
            ("ing-right.yaml", route_all("right", &[], Some("right.test"), "right", right.port())),
            ("ing-wrong.yaml", route_all("wrong", &[], Some("wrong.test"), "wrong", wrong.port())),
        ],
        &["--backend-ca", &path_of(&ca_file)],
    )
    .await;
    assert_eq!(backend_of(&https_get(&portier, "right.test", "/").await), "right");
    let reply = https_get(&portier, "wrong.test", "/").await;
    assert_502_certificate(&reply, &format!("default/wrong:{}", wrong.port()));
}

// ---------------------------------------------------------------- 2. ClusterIP + EndpointSlices

#[tokio::test]
async fn cluster_ip_service_routes_to_its_ready_endpoint() {
    let echo = echo_http("pod-a").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", service_with_slice("web", 80, "http", echo.port(), &[("127.0.0.1", true)])),
            ("ing.yaml", route_all("web", &[], None, "web", 80)),
        ],
        &[],
    )
    .await;
    let reply = https_get(&portier, "app.test", "/hello?x=1").await;
    assert_eq!(backend_of(&reply), "pod-a");
    assert_eq!(reply.json()["uri"], "/hello?x=1");
}

#[tokio::test]
async fn requests_alternate_between_endpoints_round_robin() {
    let a = echo_http("pod-a").await;
    let b = echo_http("pod-b").await;
    let portier = Portier::start(
        &[
            (
                "svc.yaml",
                service_with_slices(
                    "web",
                    80,
                    "http",
                    &[(a.port(), &[("127.0.0.1", true)]), (b.port(), &[("127.0.0.1", true)])],
                ),
            ),
            ("ing.yaml", route_all("web", &[], None, "web", 80)),
        ],
        &[],
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(backend_of(&https_get(&portier, "app.test", "/").await));
    }
    assert_eq!(seen.iter().filter(|s| *s == "pod-a").count(), 3, "{seen:?}");
    assert_eq!(seen.iter().filter(|s| *s == "pod-b").count(), 3, "{seen:?}");
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "consecutive requests must go to different endpoints: {seen:?}");
    }
}

#[tokio::test]
async fn endpoint_that_is_not_ready_gets_no_traffic() {
    let a = echo_http("pod-a").await;
    let b = echo_http("pod-b").await;
    let portier = Portier::start(
        &[
            (
                "svc.yaml",
                service_with_slices(
                    "web",
                    80,
                    "http",
                    &[(a.port(), &[("127.0.0.1", false)]), (b.port(), &[("127.0.0.1", true)])],
                ),
            ),
            ("ing.yaml", route_all("web", &[], None, "web", 80)),
        ],
        &[],
    )
    .await;
    for _ in 0..6 {
        assert_eq!(backend_of(&https_get(&portier, "app.test", "/").await), "pod-b");
    }
}

#[tokio::test]
async fn no_ready_endpoints_answers_503_saying_so() {
    let a = echo_http("pod-a").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", service_with_slice("web", 80, "http", a.port(), &[("127.0.0.1", false)])),
            ("ing.yaml", route_all("web", &[], None, "web", 80)),
        ],
        &[],
    )
    .await;
    let reply = https_get(&portier, "app.test", "/").await;
    let body = reply.text();
    assert_eq!(reply.status, 503, "{body}");
    assert!(body.contains("no ready endpoints"), "{body}");
    assert!(body.contains("default/web"), "{body}");
}

/// A ClusterIP Service `web` (port 443, named https) whose endpoint is an HTTPS echo with `leaf`.
async fn endpoint_https_portier(leaf: &Leaf, ca: &TestCa) -> (Portier, Echo, tempfile::NamedTempFile) {
    let echo = echo_https("pod-tls", leaf).await;
    let ca_file = pem_file(&ca.pem);
    let portier = Portier::start(
        &[
            ("svc.yaml", service_with_slice("web", 443, "https", echo.port(), &[("127.0.0.1", true)])),
            ("ing.yaml", route_all("web", &[], None, "web", 443)),
        ],
        &["--backend-ca", &path_of(&ca_file)],
    )
    .await;
    (portier, echo, ca_file)
}

#[tokio::test]
async fn endpoint_https_backend_is_verified_as_service_dns_name() {
    let ca = TestCa::new("cluster ca");
    let (portier, _echo, _ca_file) = endpoint_https_portier(&ca.leaf(&["web.default.svc"]), &ca).await;
    let reply = https_get(&portier, "app.test", "/").await;
    assert_eq!(backend_of(&reply), "pod-tls");
}

#[tokio::test]
async fn endpoint_https_backend_with_certificate_for_another_name_is_refused() {
    let ca = TestCa::new("cluster ca");
    let (portier, _echo, _ca_file) = endpoint_https_portier(&ca.leaf(&["localhost"]), &ca).await;
    let reply = https_get(&portier, "app.test", "/").await;
    assert_502_certificate(&reply, "default/web:443");
}

// ---------------------------------------------------------------- 3. port by name

#[tokio::test]
async fn ingress_port_by_name_resolves_through_cluster_ip_service_ports() {
    let echo = echo_http("pod-a").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", service_with_slice("web", 80, "http", echo.port(), &[("127.0.0.1", true)])),
            ("ing.yaml", ingress_port_by_name("web", None, "web", "http")),
        ],
        &[],
    )
    .await;
    assert_eq!(backend_of(&https_get(&portier, "app.test", "/").await), "pod-a");
}

#[tokio::test]
async fn ingress_port_by_name_resolves_through_external_name_service_ports() {
    let echo = echo_http("ext").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("web", "localhost", echo.port(), Some("http"))),
            ("ing.yaml", ingress_port_by_name("web", None, "web", "http")),
        ],
        &[],
    )
    .await;
    assert_eq!(backend_of(&https_get(&portier, "app.test", "/").await), "ext");
}

#[tokio::test]
async fn ingress_port_name_unknown_to_the_service_answers_503_naming_it() {
    let echo = echo_http("pod-a").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", service_with_slice("web", 80, "http", echo.port(), &[("127.0.0.1", true)])),
            ("ing.yaml", ingress_port_by_name("web", None, "web", "nope")),
        ],
        &[],
    )
    .await;
    let reply = https_get(&portier, "app.test", "/").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("nope"), "{}", reply.text());
}

// ---------------------------------------------------------------- 4. errors

#[tokio::test]
async fn missing_service_answers_503_and_is_warned_about() {
    let portier = Portier::start(&[("ing.yaml", route_all("lonely", &[], None, "ghost", 80))], &[]).await;
    let reply = https_get(&portier, "app.test", "/").await;
    let body = reply.text();
    assert_eq!(reply.status, 503, "{body}");
    assert!(body.contains("default/ghost"), "the body must name the Service: {body}");

    let warnings = guarded("admin warnings", admin_get(&portier, "/api/warnings")).await;
    assert_eq!(warnings.status, 200);
    let list = warnings.json();
    let found = list.as_array().unwrap().iter().any(|w| {
        w["object"].as_str().unwrap_or_default().contains("default/lonely")
            && w["message"].as_str().unwrap_or_default().contains("ghost")
    });
    assert!(found, "expected a warning on Ingress default/lonely about Service ghost: {list}");
}

#[tokio::test]
async fn connection_refused_answers_502_naming_the_backend() {
    let port = closed_port();
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("gone", "localhost", port, None)),
            ("ing.yaml", route_all("gone", &[], None, "gone", port)),
        ],
        &[],
    )
    .await;
    let reply = https_get(&portier, "app.test", "/").await;
    let body = reply.text();
    assert_eq!(reply.status, 502, "{body}");
    assert!(body.contains(&format!("default/gone:{port}")), "{body}");
}

#[tokio::test]
async fn dns_failure_answers_502_naming_the_backend() {
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("nowhere", "no-such-host.invalid", 8080, None)),
            ("ing.yaml", route_all("nowhere", &[], None, "nowhere", 8080)),
        ],
        &[],
    )
    .await;
    let reply = https_get(&portier, "app.test", "/").await;
    let body = reply.text();
    assert_eq!(reply.status, 502, "{body}");
    assert!(body.contains("default/nowhere:8080"), "{body}");
}

// ---------------------------------------------------------------- 5. HTTP/2 to backends

#[tokio::test]
async fn h2c_protocol_speaks_http2_to_a_plain_backend() {
    let echo = echo_http("h2c").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("web", "localhost", echo.port(), None)),
            ("ing.yaml", route_all("web", &[(PROTOCOL, "h2c")], None, "web", echo.port())),
        ],
        &[],
    )
    .await;
    let reply = https_get(&portier, "app.test", "/v").await;
    assert_eq!(backend_of(&reply), "h2c");
    assert_eq!(reply.json()["version"], "HTTP/2.0");
    assert_eq!(reply.json()["uri"], "/v");
}

#[tokio::test]
async fn h2_protocol_speaks_http2_over_tls_to_the_backend() {
    let ca = TestCa::new("backend ca");
    let ca_file = pem_file(&ca.pem);
    let (portier, _echo) = https_backend_portier(
        &ca.leaf(&["localhost"]),
        None,
        &[(PROTOCOL, "h2")],
        &["--backend-ca", &path_of(&ca_file)],
    )
    .await;
    let reply = https_get(&portier, "app.test", "/v").await;
    assert_eq!(backend_of(&reply), "secure");
    assert_eq!(reply.json()["version"], "HTTP/2.0");
}

#[tokio::test]
async fn backends_get_http1_by_default_even_when_they_offer_h2() {
    let ca = TestCa::new("backend ca");
    let ca_file = pem_file(&ca.pem);
    let plain = echo_http("plain").await;
    let secure = echo_https("secure", &ca.leaf(&["localhost"])).await;
    let portier = Portier::start(
        &[
            ("plain.yaml", external_service("plain", "localhost", plain.port(), None)),
            ("secure.yaml", external_service("secure", "localhost", secure.port(), Some("https"))),
            ("ing-plain.yaml", route_all("plain", &[], Some("plain.test"), "plain", plain.port())),
            ("ing-secure.yaml", route_all("secure", &[], Some("secure.test"), "secure", secure.port())),
        ],
        &["--backend-ca", &path_of(&ca_file)],
    )
    .await;
    for host in ["plain.test", "secure.test"] {
        let reply = https_get(&portier, host, "/").await;
        assert_eq!(backend_of(&reply), host.trim_end_matches(".test"));
        assert_eq!(reply.json()["version"], "HTTP/1.1", "{host}");
        // A client speaking HTTP/2 to portier does not change what the backend gets.
        let reply = guarded("h2 client", get(portier.https(), Via::H2(Some(host)), host, "/")).await;
        assert_eq!(reply.version, http::Version::HTTP_2);
        assert_eq!(backend_of(&reply), host.trim_end_matches(".test"));
        assert_eq!(reply.json()["version"], "HTTP/1.1", "{host} via h2");
    }
}

// ---------------------------------------------------------------- 6. forwarding headers

async fn plain_backend_portier(annotations: &[(&str, &str)], args: &[&str]) -> (Portier, Echo) {
    let echo = echo_http("fwd").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("web", "localhost", echo.port(), None)),
            ("ing.yaml", route_all("web", annotations, None, "web", echo.port())),
        ],
        args,
    )
    .await;
    (portier, echo)
}

#[tokio::test]
async fn backend_sees_forwarding_headers_and_spoofed_forwarded_for_is_replaced() {
    let (portier, _echo) = plain_backend_portier(&[], &[]).await;
    let reply = https_get_with(
        &portier,
        "app.test",
        "/",
        &[("x-forwarded-for", "6.6.6.6"), ("x-real-ip", "6.6.6.6"), ("x-forwarded-proto", "http")],
    )
    .await;
    assert_eq!(backend_of(&reply), "fwd");
    let echo = reply.json();
    assert_eq!(echo["headers"]["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(echo["headers"]["x-forwarded-proto"], serde_json::json!(["https"]));
    assert_eq!(echo["headers"]["x-forwarded-host"], serde_json::json!(["app.test"]));
    assert_eq!(echo["headers"]["x-forwarded-port"], serde_json::json!([portier.https().port().to_string()]));
    assert_eq!(echo["headers"]["x-real-ip"], serde_json::json!(["127.0.0.1"]));
}

#[tokio::test]
async fn forwarded_for_from_a_trusted_client_is_kept_and_appended_to() {
    let (portier, _echo) = plain_backend_portier(&[], &["--forwarded-trusted-ips", "127.0.0.1/32"]).await;
    let reply = https_get_with(&portier, "app.test", "/", &[("x-forwarded-for", "6.6.6.6")]).await;
    assert_eq!(backend_of(&reply), "fwd");
    assert_eq!(reply.json()["headers"]["x-forwarded-for"], serde_json::json!(["6.6.6.6, 127.0.0.1"]));
}

#[tokio::test]
async fn client_host_header_is_passed_by_default() {
    let (portier, _echo) = plain_backend_portier(&[], &[]).await;
    let reply = https_get(&portier, "app.test", "/").await;
    assert_eq!(backend_of(&reply), "fwd");
    assert_eq!(reply.json()["headers"]["host"], serde_json::json!(["app.test"]));
}

#[tokio::test]
async fn preserve_host_false_sends_the_external_name_authority() {
    let (portier, echo) = plain_backend_portier(&[(PRESERVE_HOST, "false")], &[]).await;
    let reply = https_get(&portier, "app.test", "/").await;
    assert_eq!(backend_of(&reply), "fwd");
    let echoed = reply.json();
    assert_eq!(echoed["headers"]["host"], serde_json::json!([format!("localhost:{}", echo.port())]));
    assert_eq!(echoed["headers"]["x-forwarded-host"], serde_json::json!(["app.test"]));
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_reach_the_backend() {
    let (portier, _echo) = plain_backend_portier(&[], &[]).await;
    let reply = https_get_with(
        &portier,
        "app.test",
        "/",
        &[
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "5"),
            ("proxy-connection", "keep-alive"),
            ("x-end-to-end", "yes"),
        ],
    )
    .await;
    assert_eq!(backend_of(&reply), "fwd");
    let headers = &reply.json()["headers"];
    for name in ["x-hop", "keep-alive", "proxy-connection"] {
        assert!(headers.get(name).is_none(), "{name} must not reach the backend: {headers}");
    }
    if let Some(connection) = headers.get("connection") {
        assert!(!connection.to_string().contains("x-hop"), "Connection: x-hop must not reach the backend: {headers}");
    }
    assert_eq!(headers["x-end-to-end"], serde_json::json!(["yes"]), "{headers}");
}

#[tokio::test]
async fn credentials_cookies_and_custom_headers_pass_unchanged() {
    let (portier, _echo) = plain_backend_portier(&[], &[]).await;
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJl";
    let reply = https_get_with(
        &portier,
        "app.test",
        "/api/v1/login",
        &[("authorization", "Bearer abc.def.ghi"), ("cookie", "session=1; csrf=two"), ("jweToken", token)],
    )
    .await;
    assert_eq!(backend_of(&reply), "fwd");
    let headers = &reply.json()["headers"];
    assert_eq!(headers["authorization"], serde_json::json!(["Bearer abc.def.ghi"]));
    assert_eq!(headers["cookie"], serde_json::json!(["session=1; csrf=two"]));
    assert_eq!(headers["jwetoken"], serde_json::json!([token]));
}

#[tokio::test]
async fn server_header_is_added_when_the_backend_sends_none() {
    let (portier, _echo) = plain_backend_portier(&[], &[]).await;
    let reply = https_get(&portier, "app.test", "/").await;
    assert_eq!(backend_of(&reply), "fwd");
    assert_eq!(reply.header("server"), Some("portier"));
}

#[tokio::test]
async fn content_length_is_kept_and_a_mebibyte_body_arrives_whole() {
    let (portier, _echo) = plain_backend_portier(&[], &[]).await;
    let reply = https_get(&portier, "app.test", "/big?bytes=1048576").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), Some("1048576"));
    assert_eq!(reply.body.len(), 1_048_576);
    assert!(reply.body.iter().all(|b| *b == b'x'));
}
