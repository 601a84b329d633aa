//! Hostile requests on raw sockets: oversize and ambiguous messages are answered with the right
//! status before any byte reaches a backend, and portier keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup() -> (Portier, Echo) {
    let backend = echo_http("a").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("a", "localhost", backend.port(), None)),
            ("ing.yaml", ingress("a", &[], None, &[("/", "Prefix", "a", backend.port())])),
        ],
        &["--no-https-redirect"],
    )
    .await;
    (portier, backend)
}

/// Sends raw bytes on the http entry and returns what came back (status line first).
async fn raw(portier: &Portier, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(portier.http()).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> &str {
    answer.get(9..12).unwrap_or("")
}

#[tokio::test]
async fn hostile_requests_get_the_right_status_and_portier_keeps_serving() {
    let (portier, _backend) = setup().await;
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("200 headers", format!("GET / HTTP/1.1\r\nHost: a\r\n{many_headers}\r\n").into_bytes(), &["431"]),
        (
            "1 MiB header",
            format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "x".repeat(1 << 20)).into_bytes(),
            &["431"],
        ),
        (
            "100 KiB URI",
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100 << 10)).into_bytes(),
            &["414", "431"],
        ),
        (
            "conflicting Content-Length",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(),
            &["400"],
        ),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n".to_vec(), &["400"]),
        ("invalid header byte", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x01\r\n\r\n".to_vec(), &["400"]),
    ];
    for (what, request, expected) in cases {
        let answer = raw(&portier, &request).await;
        assert!(expected.contains(&status(&answer)), "{what}: expected {expected:?}, got {:?}", answer.lines().next());
    }
    assert_eq!(get(portier.http(), Via::Plain, "a", "/").await.status, 200, "still serving");
}

/// Content-Length with Transfer-Encoding, in either order: 400, the connection closed, nothing
/// sent to the backend. The same headers one at a time are served.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_the_connection_closed() {
    let (portier, _backend) = setup().await;
    for request in [
        &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            [..],
        &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            [..],
    ] {
        // No `Connection: close` from the client: portier closes by itself (raw() reads to EOF).
        let answer = raw(&portier, request).await;
        assert_eq!(status(&answer), "400", "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
        assert!(!answer.contains("\"backend\""), "the backend answered: {answer}");
    }
    let chunked_only = raw(
        &portier,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&chunked_only), "200", "{chunked_only}");
    assert!(chunked_only.contains("abc"), "{chunked_only}");
}
