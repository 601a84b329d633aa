//! Mid-body disconnects on both sides, with raw sockets: a client that leaves mid-upload or
//! mid-download, a backend that closes mid-response or before answering. portier passes the
//! failure on (never a response that looks complete), frees the other side, and keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What a raw backend does with each connection, after it has read the request head.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reads the request body until EOF and reports how many bytes came.
    CountBody,
    /// Answers `Content-Length: 100000` with only 1000 bytes, then closes.
    CloseMidResponse,
    /// Closes without answering.
    CloseBeforeAnswer,
    /// Streams chunks every 50 ms until writing fails, then reports how many it wrote.
    StreamForever,
}

/// A backend on raw sockets; each connection's outcome (a byte or chunk count) is sent on the
/// channel. Requests to `/ok` are answered 200 normally, whatever the behaviour.
async fn raw_backend(behaviour: Behaviour) -> (u16, mpsc::UnboundedReceiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (head, mut rest) = read_head(&mut s).await;
                if head.starts_with("GET /ok ") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                    return;
                }
                match behaviour {
                    Behaviour::CountBody => {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            rest += n;
                        }
                        let _ = tx.send(rest);
                    }
                    Behaviour::CloseMidResponse => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n").await;
                        let _ = s.write_all(&[b'x'; 1000]).await;
                    }
                    Behaviour::CloseBeforeAnswer => {}
                    Behaviour::StreamForever => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
                        let mut chunks = 0;
                        while s.write_all(b"5\r\nhello\r\n").await.is_ok() {
                            chunks += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        let _ = tx.send(chunks);
                    }
                }
            });
        }
    });
    (port, rx)
}

/// Reads up to the end of the request head; returns it and how many body bytes came with it.
async fn read_head(s: &mut TcpStream) -> (String, usize) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return (String::from_utf8_lossy(&got).into_owned(), 0);
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            return (String::from_utf8_lossy(&got[..end]).into_owned(), got.len() - end - 4);
        }
    }
}

async fn portier_to(port: u16) -> Portier {
    Portier::start(
        &[
            ("svc.yaml", external_service("raw", "localhost", port, None)),
            ("ing.yaml", ingress("raw", &[], None, &[("/", "Prefix", "raw", port)])),
        ],
        &["--no-https-redirect"],
    )
    .await
}

async fn still_serving(portier: &Portier) {
    assert_eq!(get(portier.http(), Via::Plain, "raw.test", "/ok").await.status, 200, "portier stopped serving");
}

#[tokio::test]
async fn a_client_leaving_mid_upload_ends_the_backend_request_short() {
    let (port, mut outcomes) = raw_backend(Behaviour::CountBody).await;
    let portier = portier_to(port).await;
    let mut client = TcpStream::connect(portier.http()).await.unwrap();
    client.write_all(b"POST /upload HTTP/1.1\r\nHost: raw.test\r\nContent-Length: 100000\r\n\r\n").await.unwrap();
    client.write_all(&[b'a'; 1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(client);
    // The backend's connection is closed (not left waiting for the rest) with a short body.
    let received = tokio::time::timeout(Duration::from_secs(5), outcomes.recv()).await.expect("backend left hanging");
    assert!(received.unwrap() < 100_000, "the backend got a complete body");
    still_serving(&portier).await;
}

#[tokio::test]
async fn a_backend_closing_mid_response_is_not_passed_on_as_complete() {
    let (port, _outcomes) = raw_backend(Behaviour::CloseMidResponse).await;
    let portier = portier_to(port).await;
    let mut client = TcpStream::connect(portier.http()).await.unwrap();
    client.write_all(b"GET /file HTTP/1.1\r\nHost: raw.test\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the client connection was left open after the backend failed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = answer.len() - text.find("\r\n\r\n").unwrap() - 4;
    assert!(body < 100_000, "a truncated response must not arrive whole ({body} bytes)");
    // The same over HTTP/2: the stream is reset, the body read fails.
    let via = Via::H2(None);
    let tls = tls_connect(portier.https(), None, &[b"h2"]).await;
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let response = h2.send_request(
        request("GET", "raw.test", "/file", via).body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap(),
    );
    let response = response.await.unwrap();
    use http_body_util::BodyExt;
    assert!(response.into_body().collect().await.is_err(), "HTTP/2 body ended cleanly");
    still_serving(&portier).await;
}

#[tokio::test]
async fn a_backend_closing_before_answering_gets_502() {
    let (port, _outcomes) = raw_backend(Behaviour::CloseBeforeAnswer).await;
    let portier = portier_to(port).await;
    let reply = get(portier.http(), Via::Plain, "raw.test", "/x").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.text().contains("default/raw"), "{}", reply.text());
    still_serving(&portier).await;
}

#[tokio::test]
async fn a_client_leaving_mid_download_frees_the_backend() {
    let (port, mut outcomes) = raw_backend(Behaviour::StreamForever).await;
    let portier = portier_to(port).await;
    let mut client = TcpStream::connect(portier.http()).await.unwrap();
    client.write_all(b"GET /follow HTTP/1.1\r\nHost: raw.test\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let n = client.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);
    // portier stops reading from the backend and closes that connection: its writes fail soon.
    let chunks = tokio::time::timeout(Duration::from_secs(10), outcomes.recv()).await.expect("backend still streaming");
    assert!(chunks.unwrap() < 200);
    still_serving(&portier).await;
}
