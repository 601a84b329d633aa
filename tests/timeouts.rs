//! Timeouts as flags: upstream response headers (504, also per Ingress), header read (slowloris).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn slow_setup(annotations: &[(&str, &str)], args: &[&str]) -> (Portier, Echo) {
    let backend = echo_http("slow").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("slow", "localhost", backend.port(), None)),
            ("ing.yaml", ingress("slow", annotations, None, &[("/", "Prefix", "slow", backend.port())])),
        ],
        args,
    )
    .await;
    (portier, backend)
}

#[tokio::test]
async fn slow_response_headers_answer_504_after_the_flag() {
    let (portier, _backend) = slow_setup(&[], &["--upstream-response-timeout", "300ms"]).await;
    let started = Instant::now();
    let reply = get(portier.https(), Via::Tls(None), "t.test", "/slow?ms=3000").await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.text().contains("no response headers within 300ms"), "{}", reply.text());
    assert!(reply.text().contains("default/slow"), "names the backend: {}", reply.text());
    assert!(started.elapsed() < Duration::from_secs(2), "answered at the timeout, not after the backend");
    assert_eq!(get(portier.https(), Via::Tls(None), "t.test", "/slow?ms=10").await.status, 200);
}

#[tokio::test]
async fn response_timeout_annotation_overrides_the_flag_per_ingress() {
    let (portier, _backend) = slow_setup(&[("portier.io/response-timeout", "200ms")], &[]).await;
    let reply = get(portier.https(), Via::Tls(None), "t.test", "/slow?ms=2000").await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.text().contains("within 200ms"), "{}", reply.text());
}

#[tokio::test]
async fn a_client_trickling_headers_is_cut_after_the_header_read_timeout() {
    let (portier, _backend) = slow_setup(&[], &["--header-read-timeout", "500ms", "--no-https-redirect"]).await;
    let mut stream = tokio::net::TcpStream::connect(portier.http()).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: t.test\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was not cut within 5 s");
    assert!(started.elapsed() >= Duration::from_millis(400), "cut too early: {:?}", started.elapsed());
    // portier still serves others.
    assert_eq!(get(portier.http(), Via::Plain, "t.test", "/").await.status, 200);
}

#[tokio::test]
async fn connections_over_max_connections_are_closed_and_capacity_comes_back() {
    let (portier, _backend) = slow_setup(&[], &["--max-connections", "2", "--no-https-redirect"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(portier.http()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t.test\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let mut third = tokio::net::TcpStream::connect(portier.http()).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: t.test\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), third.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the third connection is closed unanswered: {buf:?}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = tokio::net::TcpStream::connect(portier.http()).await.unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: t.test\r\nConnection: close\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        if answer.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "capacity never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one request on `stream` and reads its (small, non-chunked) response.
async fn request_on(stream: &mut tokio::net::TcpStream) -> String {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: t.test\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let (portier, _backend) =
        slow_setup(&[], &["--idle-timeout", "700ms", "--header-read-timeout", "10s", "--no-https-redirect"]).await;
    let mut stream = tokio::net::TcpStream::connect(portier.http()).await.unwrap();
    assert!(request_on(&mut stream).await.starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed cleanly by portier: {read:?}");
    let idle_for = idle_from.elapsed();
    assert!(idle_for >= Duration::from_millis(600), "closed too early: {idle_for:?}");
    assert!(idle_for < Duration::from_secs(4), "closed late, not by the idle timeout: {idle_for:?}");
}

#[tokio::test]
async fn idle_timeout_and_header_read_timeout_are_separate() {
    // A connection idle longer than the header-read timeout is still served: the header timer
    // starts with the first byte of the next request, not when the previous one ended.
    let (portier, _backend) =
        slow_setup(&[], &["--idle-timeout", "30s", "--header-read-timeout", "500ms", "--no-https-redirect"]).await;
    let mut stream = tokio::net::TcpStream::connect(portier.http()).await.unwrap();
    assert!(request_on(&mut stream).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(request_on(&mut stream).await.starts_with("HTTP/1.1 200"), "the idle connection was closed");
    // A request that takes longer than both (the response is slow) is not cut either.
    stream.write_all(b"GET /slow?ms=1200 HTTP/1.1\r\nHost: t.test\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}

#[tokio::test]
async fn an_idle_http2_connection_gets_goaway_after_the_idle_timeout() {
    let (portier, _backend) = slow_setup(&[], &["--idle-timeout", "700ms"]).await;
    let tls = tls_connect(portier.https(), Some("t.test"), &[b"h2"]).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    // A request longer than the idle timeout keeps the connection: it is not idle meanwhile.
    let req = request("GET", "t.test", "/slow?ms=1200", Via::H2(None))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "the connection ended cleanly (GOAWAY): {ended:?}");
}

#[tokio::test]
async fn a_backend_that_never_finishes_the_tls_handshake_answers_504_after_the_flag() {
    // Accepts TCP, then says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("mute", "localhost", port, None)),
            (
                "ing.yaml",
                ingress("mute", &[("ingress.kubernetes.io/protocol", "https")], None, &[("/", "Prefix", "mute", port)]),
            ),
        ],
        &["--upstream-tls-handshake-timeout", "500ms", "--upstream-response-timeout", "30s"],
    )
    .await;
    let started = Instant::now();
    let reply = get(portier.https(), Via::Tls(None), "t.test", "/").await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.text().contains("TLS handshake not done within 500ms"), "{}", reply.text());
    assert!(started.elapsed() < Duration::from_secs(10), "answered at the handshake timeout");
    held.abort();
}

/// HTTP/1.1 requests on one client connection share one response timer (see
/// `connection::ResponseTimer`): each still gets its own route's timeout, whether shorter or longer
/// than the one before, and after one fired.
#[tokio::test]
async fn requests_on_one_connection_each_get_their_own_response_timeout() {
    const STRIP: (&str, &str) = ("traefik.ingress.kubernetes.io/rule-type", "PathPrefixStrip");
    let backend = echo_http("slow").await;
    let port = backend.port();
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("slow", "localhost", port, None)),
            ("long.yaml", ingress("long", &[STRIP], None, &[("/long", "Prefix", "slow", port)])),
            (
                "short.yaml",
                ingress(
                    "short",
                    &[STRIP, ("portier.io/response-timeout", "300ms")],
                    None,
                    &[("/short", "Prefix", "slow", port)],
                ),
            ),
        ],
        &["--no-https-redirect"],
    )
    .await;
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(portier.http()).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let mut send = async |path: &str| {
        let request = http::Request::get(path)
            .header("host", "t.test")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let started = Instant::now();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        http_body_util::BodyExt::collect(response.into_body()).await.unwrap();
        (status, started.elapsed())
    };
    // Armed for 60 s by the first request; the second's 300 ms is closer, and must win.
    assert_eq!(send("/long/slow?ms=10").await.0, 200);
    let (status, took) = send("/short/slow?ms=3000").await;
    assert_eq!(status, 504);
    assert!(took < Duration::from_secs(2), "the shorter timeout was not applied: {took:?}");
    // After it fired, a longer wait than 300 ms is fine on the long route, and the short route
    // still answers in time.
    assert_eq!(send("/long/slow?ms=700").await.0, 200);
    assert_eq!(send("/short/slow?ms=10").await.0, 200);
    let (status, took) = send("/short/slow?ms=3000").await;
    assert_eq!((status, took < Duration::from_secs(2)), (504, true), "{took:?}");
}
