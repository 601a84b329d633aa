//! Pooled HTTP/1.1 connections to backends: reused across requests and client connections,
//! never reused after the backend closed them or while a response is unread, and one pool per
//! endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw HTTP/1.1 backend that answers `ok` to every request and counts the connections it
/// accepted. With `close_after_response`, it closes each connection after its first response
/// without saying so (as a backend whose keep-alive timeout is very short would).
async fn counting_backend(close_after_response: bool) -> (u16, Arc<AtomicUsize>) {
    counting_backend_on("127.0.0.1:0", close_after_response).await
}

async fn counting_backend_on(bind: &str, close_after_response: bool) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(reply).await.is_err() {
                            return;
                        }
                        if close_after_response {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, accepted)
}

async fn portier_to(port: u16) -> Portier {
    portier_to_service("web", port, &[("127.0.0.1", true)]).await
}

#[tokio::test]
async fn one_backend_connection_serves_requests_from_many_client_connections() {
    let (port, accepted) = counting_backend(false).await;
    let portier = portier_to(port).await;
    for i in 0..30 {
        // Each on a new client connection, over plain HTTP and TLS alike.
        let via = if i % 2 == 0 { Via::Plain } else { Via::Tls(None) };
        let addr = if i % 2 == 0 { portier.http() } else { portier.https() };
        let reply = get(addr, via, "web.test", &format!("/{i}")).await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "ok"), "request {i}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "sequential requests should reuse one backend connection");
}

#[tokio::test]
async fn connections_the_backend_closed_are_not_reused() {
    let (port, accepted) = counting_backend(true).await;
    let portier = portier_to(port).await;
    for i in 0..40 {
        let reply = get(portier.http(), Via::Plain, "web.test", &format!("/{i}")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        if i % 4 == 0 {
            // Give the close time to arrive too, not only the race where it arrives late.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 40, "each request needed a new connection");
}

#[tokio::test]
async fn a_response_the_client_abandoned_does_not_reach_the_next_request() {
    let echo = echo_http("web").await;
    let portier = portier_to(echo.port()).await;
    for round in 0..3 {
        // Read a little of an 8 MiB response, then hang up.
        let mut client = TcpStream::connect(portier.http()).await.unwrap();
        client.write_all(b"GET /big?bytes=8388608 HTTP/1.1\r\nhost: web.test\r\n\r\n").await.unwrap();
        let mut got = vec![0u8; 64 * 1024];
        let mut read = 0;
        while read < got.len() {
            let n = client.read(&mut got[read..]).await.unwrap();
            assert!(n > 0, "round {round}: closed early");
            read += n;
        }
        drop(client);
        for i in 0..5 {
            let reply = get(portier.http(), Via::Plain, "web.test", &format!("/after/{i}")).await;
            assert_eq!(reply.status, 200, "round {round}, request {i}: {}", reply.text());
            assert_eq!(reply.json()["uri"], format!("/after/{i}"), "round {round}: a stale response was served");
        }
    }
}

#[tokio::test]
async fn each_endpoint_of_a_backend_has_its_own_connections() {
    let (port, first) = counting_backend(false).await;
    let (_, second) = counting_backend_on(&format!("127.0.0.2:{port}"), false).await;
    let portier = portier_to_service("web", port, &[("127.0.0.1", true), ("127.0.0.2", true)]).await;
    for i in 0..20 {
        let reply = get(portier.http(), Via::Plain, "web.test", &format!("/{i}")).await;
        assert_eq!(reply.status, 200, "request {i}");
    }
    // Requests alternate between the endpoints; each keeps reusing its one connection.
    assert_eq!((first.load(Ordering::SeqCst), second.load(Ordering::SeqCst)), (1, 1));
}
