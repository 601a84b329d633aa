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
