//! Edge cases of requests found in review: HTTP/2 cookies, user info in absolute-form URIs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn http2_cookies_reach_an_http1_backend_as_one_header() {
    let backend = echo_http("a").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("a", "localhost", backend.port(), None)),
            ("ing.yaml", ingress("a", &[], None, &[("/", "Prefix", "a", backend.port())])),
        ],
        &[],
    )
    .await;
    let via = Via::H2(Some("c.test"));
    let req = request("GET", "c.test", "/", via)
        .header("cookie", "session=abc")
        .header("cookie", "theme=dark")
        .body(Default::default())
        .unwrap();
    let reply = send(portier.https(), via, req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["headers"]["cookie"], serde_json::json!(["session=abc; theme=dark"]));
}

#[tokio::test]
async fn user_info_in_an_absolute_uri_does_not_change_the_host() {
    let a = echo_http("a").await;
    let other = echo_http("other").await;
    let portier = Portier::start(
        &[
            (
                "svc.yaml",
                format!(
                    "{}---\n{}",
                    external_service("a", "localhost", a.port(), None),
                    external_service("other", "localhost", other.port(), None)
                ),
            ),
            ("a.yaml", ingress("a", &[], Some("a.test"), &[("/", "Prefix", "a", a.port())])),
            ("other.yaml", ingress("other", &[], None, &[("/", "Prefix", "other", other.port())])),
        ],
        &["--no-https-redirect"],
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(portier.http()).await.unwrap();
    stream.write_all(b"GET http://x@a.test/p HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"backend\":\"a\""), "routed by the host, not by user@host: {answer}");
    assert!(!answer.contains("x@a.test"), "user info is not forwarded: {answer}");
}

#[tokio::test]
async fn a_host_header_naming_another_host_than_the_target_is_refused() {
    let a = echo_http("a").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("a", "localhost", a.port(), None)),
            ("a.yaml", ingress("a", &[], None, &[("/", "Prefix", "a", a.port())])),
        ],
        &["--no-https-redirect"],
    )
    .await;
    let http = portier.http();
    let raw = |request: &'static [u8]| async move {
        let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer).await;
        answer
    };
    let mismatch = raw(b"GET http://a.test/p HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n").await;
    assert!(mismatch.starts_with("HTTP/1.1 400"), "{mismatch}");
    assert!(!mismatch.contains("\"backend\""), "nothing reached the backend: {mismatch}");
    let same = raw(b"GET http://A.test:80/p HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n").await;
    assert!(same.starts_with("HTTP/1.1 200"), "same host, other case and explicit port: {same}");

    // HTTP/2: :authority and a Host header that disagree.
    let via = Via::H2(Some("a.test"));
    let req = request("GET", "a.test", "/", via).header("host", "b.test").body(Default::default()).unwrap();
    assert_eq!(send(portier.https(), via, req).await.status, 400);
    assert_eq!(get(portier.https(), via, "a.test", "/").await.status, 200);
}
