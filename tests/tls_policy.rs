//! TLS policy: minimum version, cipher suite choice, session resumption, and HSTS opt-in per
//! Ingress.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::sync::Arc;

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

/// A client that offers these suites in this order (and the versions they belong to).
fn client_offering(suites: &[rustls::CipherSuite]) -> Arc<rustls::ClientConfig> {
    Arc::new(client_config_offering(suites))
}

fn client_config_offering(suites: &[rustls::CipherSuite]) -> rustls::ClientConfig {
    let mut provider = Arc::unwrap_or_clone(portier::tls::crypto_provider());
    provider.cipher_suites =
        suites.iter().map(|s| *provider.cipher_suites.iter().find(|c| c.suite() == *s).unwrap()).collect();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Completes a handshake with this client and tells the suite and whether the session resumed.
async fn negotiate(
    portier: &Portier,
    client: &Arc<rustls::ClientConfig>,
) -> (rustls::CipherSuite, rustls::HandshakeKind) {
    let tcp = tokio::net::TcpStream::connect(portier.https()).await.unwrap();
    let name = ServerName::try_from("a.test".to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client.clone()).connect(name, tcp).await.unwrap();
    // TLS 1.3 tickets arrive after the handshake: one exchange makes sure the client has them.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"GET / HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    assert!(response.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response));
    let conn = tls.get_ref().1;
    (conn.negotiated_cipher_suite().unwrap().suite(), conn.handshake_kind().unwrap())
}

#[tokio::test]
async fn cipher_suite_is_chosen_as_go_chooses_it() {
    use rustls::CipherSuite as S;
    let (portier, _b) = setup(&[], &[]).await;
    let aes = portier::tls::has_aes_hardware();
    // OpenSSL's order: AES-256 first. With AES hardware on both sides, AES-128-GCM wins (its
    // SHA-256 handshake is the cheaper one); without it here, ChaCha20.
    let openssl_like =
        client_offering(&[S::TLS13_AES_256_GCM_SHA384, S::TLS13_CHACHA20_POLY1305_SHA256, S::TLS13_AES_128_GCM_SHA256]);
    let expected = if aes { S::TLS13_AES_128_GCM_SHA256 } else { S::TLS13_CHACHA20_POLY1305_SHA256 };
    assert_eq!(negotiate(&portier, &openssl_like).await.0, expected);
    // A client without AES hardware says so by listing ChaCha20 first: it gets ChaCha20.
    let chacha_first =
        client_offering(&[S::TLS13_CHACHA20_POLY1305_SHA256, S::TLS13_AES_256_GCM_SHA384, S::TLS13_AES_128_GCM_SHA256]);
    assert_eq!(negotiate(&portier, &chacha_first).await.0, S::TLS13_CHACHA20_POLY1305_SHA256);
    // Suites the client does not offer are never chosen.
    let only_256 = client_offering(&[S::TLS13_AES_256_GCM_SHA384]);
    assert_eq!(negotiate(&portier, &only_256).await.0, S::TLS13_AES_256_GCM_SHA384);
    // TLS 1.2 follows the same rule (the generated default certificate is ECDSA).
    let tls12 = client_offering(&[
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ]);
    let expected12 =
        if aes { S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 } else { S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 };
    assert_eq!(negotiate(&portier, &tls12).await.0, expected12);
}

#[tokio::test]
async fn sessions_resume_under_either_cipher_preference() {
    use rustls::CipherSuite as S;
    let (portier, _b) = setup(&[], &[]).await;
    for suites in [
        &[S::TLS13_AES_256_GCM_SHA384, S::TLS13_AES_128_GCM_SHA256][..],
        &[S::TLS13_CHACHA20_POLY1305_SHA256, S::TLS13_AES_128_GCM_SHA256][..],
        &[S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256][..],
    ] {
        let client = client_offering(suites);
        let (first_suite, first) = negotiate(&portier, &client).await;
        assert_eq!(first, rustls::HandshakeKind::Full, "{suites:?}");
        let (again_suite, again) = negotiate(&portier, &client).await;
        assert_eq!(again, rustls::HandshakeKind::Resumed, "{suites:?}: the second connection resumes");
        assert_eq!(again_suite, first_suite);
    }
}

#[tokio::test]
async fn a_session_made_under_one_cipher_preference_resumes_under_the_other() {
    use rustls::CipherSuite as S;
    let (portier, _b) = setup(&[], &[]).await;
    let sessions = rustls::client::Resumption::store(Arc::new(rustls::client::ClientSessionMemoryCache::new(8)));
    // A lists AES-GCM first (the AES-first order); B lists a ChaCha20 suite first (the ChaCha20-first
    // order) but offers only AES-128-GCM for TLS 1.3: the same suite under the other order.
    let mut a = client_config_offering(&[S::TLS13_AES_128_GCM_SHA256]);
    a.resumption = sessions.clone();
    let mut b =
        client_config_offering(&[S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, S::TLS13_AES_128_GCM_SHA256]);
    b.resumption = sessions;
    // rustls resumes only between configurations with the same verifier and client credentials.
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = Arc::new(AcceptAny);
    a.dangerous().set_certificate_verifier(verifier.clone());
    b.dangerous().set_certificate_verifier(verifier);
    b.client_auth_cert_resolver = a.client_auth_cert_resolver.clone();
    let (a_suite, a_kind) = negotiate(&portier, &Arc::new(a)).await;
    assert_eq!((a_suite, a_kind), (S::TLS13_AES_128_GCM_SHA256, rustls::HandshakeKind::Full));
    let (b_suite, b_kind) = negotiate(&portier, &Arc::new(b)).await;
    assert_eq!(b_suite, S::TLS13_AES_128_GCM_SHA256);
    assert_eq!(b_kind, rustls::HandshakeKind::Resumed, "A's ticket opens under B's order too");
}

#[test]
fn aes_hardware_is_read_as_the_kernel_reports_it() {
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else { return };
    let Some(flags) = cpuinfo.lines().find(|l| l.starts_with("flags")) else { return };
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    assert_eq!(portier::tls::has_aes_hardware(), has("aes") && has("pclmulqdq"), "{flags}");
}
