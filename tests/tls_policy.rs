//! TLS policy: minimum version, and HSTS opt-in per Ingress.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rustls::pki_types::ServerName;

async fn setup(annotations: &[(&str, &str)], args: &[&str]) -> (Portier, Echo) {
    let backend = echo_http("a").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("a", "localhost", backend.port(), None)),
            ("ing.yaml", ingress("a", annotations, Some("hsts.test"), &[("/", "Prefix", "a", backend.port())])),
            ("plain.yaml", ingress("plain", &[], Some("plain.test"), &[("/", "Prefix", "a", backend.port())])),
        ],
        args,
    )
    .await;
    (portier, backend)
}

#[tokio::test]
async fn hsts_is_sent_on_https_only_for_ingresses_that_ask() {
    let hsts =
        [("ingress.kubernetes.io/hsts-max-age", "31536000"), ("ingress.kubernetes.io/hsts-include-subdomains", "true")];
    let (portier, _b) = setup(&hsts, &["--no-https-redirect"]).await;
    let reply = get(portier.https(), Via::Tls(Some("hsts.test")), "hsts.test", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("strict-transport-security"), Some("max-age=31536000; includeSubDomains"));
    let other = get(portier.https(), Via::Tls(Some("plain.test")), "plain.test", "/").await;
    assert_eq!(other.header("strict-transport-security"), None, "only where the Ingress opts in");
    let http = get(portier.http(), Via::Plain, "hsts.test", "/").await;
    assert_eq!(http.status, 200);
    assert_eq!(http.header("strict-transport-security"), None, "never over plain http (RFC 6797)");
}

async fn handshake(portier: &Portier, version: &'static rustls::SupportedProtocolVersion) -> bool {
    let tcp = tokio::net::TcpStream::connect(portier.https()).await.unwrap();
    let config = client_tls_versions(&[version], &[b"http/1.1"]);
    let name = ServerName::try_from("a.test".to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.is_ok()
}

#[tokio::test]
async fn tls_min_version_13_refuses_tls_12_clients() {
    let (portier, _b) = setup(&[], &[]).await;
    assert!(handshake(&portier, &rustls::version::TLS12).await, "TLS 1.2 accepted by default");
    let (strict, _b2) = setup(&[], &["--tls-min-version", "1.3"]).await;
    assert!(!handshake(&strict, &rustls::version::TLS12).await, "TLS 1.2 refused with --tls-min-version 1.3");
    assert!(handshake(&strict, &rustls::version::TLS13).await);
}
