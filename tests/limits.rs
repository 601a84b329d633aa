//! Request limits as flags: header bytes and count (431), request-target length (414), HTTP/2
//! concurrent streams; the defaults let a dashboard's large cookies and tokens through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup(args: &[&str]) -> (Portier, Echo) {
    let backend = echo_http("lim").await;
    let mut all = vec!["--no-https-redirect"];
    all.extend_from_slice(args);
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("lim", "localhost", backend.port(), None)),
            ("ing.yaml", ingress("lim", &[], None, &[("/", "Prefix", "lim", backend.port())])),
        ],
        &all,
    )
    .await;
    (portier, backend)
}

/// Sends raw bytes on the http entry and returns the status code of the answer.
async fn raw_status(portier: &Portier, request: String) -> String {
    let mut stream = tokio::net::TcpStream::connect(portier.http()).await.unwrap();
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(answer.get(9..12).unwrap_or_default()).into_owned()
}

fn with_headers(count: usize, value_len: usize) -> String {
    let headers: String = (0..count).map(|i| format!("X-H{i}: {}\r\n", "v".repeat(value_len))).collect();
    format!("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{headers}\r\n")
}

#[tokio::test]
async fn max_headers_flag_sets_the_header_count_limit() {
    let (portier, _backend) = setup(&["--max-headers", "10"]).await;
    // Host and Connection count too: 8 more make 10.
    assert_eq!(raw_status(&portier, with_headers(8, 1)).await, "200");
    assert_eq!(raw_status(&portier, with_headers(9, 1)).await, "431");
}

#[tokio::test]
async fn max_header_bytes_flag_sets_the_head_size_limit() {
    let (portier, _backend) = setup(&["--max-header-bytes", "16384"]).await;
    assert_eq!(raw_status(&portier, with_headers(1, 12_000)).await, "200");
    assert_eq!(raw_status(&portier, with_headers(1, 20_000)).await, "431");
}

#[tokio::test]
async fn max_uri_length_flag_answers_414() {
    let (portier, _backend) = setup(&["--max-uri-length", "100"]).await;
    let path = |n: usize| format!("GET /{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "a".repeat(n));
    assert_eq!(raw_status(&portier, path(99)).await, "200");
    assert_eq!(raw_status(&portier, path(100)).await, "414");
    // The query counts too, and HTTP/2 is held to the same limit.
    let long_query = format!("/?q={}", "x".repeat(200));
    assert_eq!(get(portier.https(), Via::H2(None), "a", &long_query).await.status, 414);
    assert_eq!(get(portier.https(), Via::H2(None), "a", "/?q=short").await.status, 200);
}

#[tokio::test]
async fn defaults_let_a_dashboard_sized_token_and_cookies_through_on_both_protocols() {
    let (portier, _backend) = setup(&[]).await;
    // A kubernetes-dashboard JWE token in a cookie plus a bearer token: about 24 KiB together,
    // above hyper's HTTP/2 default header list size (16 KiB).
    let token = "t".repeat(12 * 1024);
    for via in [Via::Tls(None), Via::H2(None)] {
        let req = request("GET", "a", "/", via)
            .header("cookie", format!("jweToken={token}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = send(portier.https(), via, req).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.echoed_header("authorization").map(|v| v.len()), Some(token.len() + 7));
    }
    // And a 100 KiB head is refused.
    assert_eq!(raw_status(&portier, with_headers(1, 100 * 1024)).await, "431");
}

#[tokio::test]
async fn http2_concurrent_streams_are_limited_by_the_flag() {
    let (portier, _backend) = setup(&["--http2-max-concurrent-streams", "2"]).await;
    let tls = tls_connect(portier.https(), Some("a"), &[b"h2"]).await;
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    // A client that sends before it has the server's SETTINGS gets streams over the limit refused
    // (REFUSED_STREAM, safe to retry); after one exchange, hyper's client knows the limit and queues.
    let warm_up = request("GET", "a", "/", Via::H2(None)).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(sender.clone().send_request(warm_up).await.unwrap().status(), 200);
    let started = Instant::now();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let req = request("GET", "a", "/slow?ms=700", Via::H2(None)).body(Full::new(Bytes::new())).unwrap();
                sender.send_request(req).await.map(|r| r.status().as_u16())
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    // Six 700 ms requests, two at a time: three rounds. Without the limit they take one round.
    assert!(started.elapsed() >= Duration::from_millis(2000), "streams ran more than two at a time");
}
