//! Graceful drain on SIGTERM: requests already accepted finish, new connections are refused,
//! readiness turns 503 while draining, and the process exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::process::PortierProcess;
use common::*;

/// The real binary with `--grace-period grace`, routing everything to an echo backend named `name`.
async fn portier_to_echo(name: &str, grace: &str) -> (Echo, tempfile::TempDir, PortierProcess) {
    let backend = echo_http(name).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("svc.yaml"), external_service(name, "localhost", backend.port(), None)).unwrap();
    std::fs::write(dir.path().join("ing.yaml"), ingress(name, &[], None, &[("/", "Prefix", name, backend.port())]))
        .unwrap();
    let portier = PortierProcess::spawn(&["--manifests", dir.path().to_str().unwrap(), "--grace-period", grace]);
    (backend, dir, portier)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let (_backend, _dir, mut portier) = portier_to_echo("slow", "20s").await;
    let https = portier.https;
    let admin = portier.admin;
    assert_eq!(get(https, Via::Tls(None), "d.test", "/").await.status, 200);

    let in_flight: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { get(https, Via::Tls(None), "d.test", "/slow?ms=2500").await }))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let pid = portier.pid();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();

    // While draining: not ready, and no new connections on the entries.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let ready = get(admin, Via::Plain, "localhost", "/readyz").await;
        if ready.status == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "readyz still {} while draining", ready.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = tokio::net::TcpStream::connect(https).await;
    assert!(refused.is_err(), "a new connection was accepted while draining");

    for request in in_flight {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, 200, "an accepted request failed during the drain: {}", reply.text());
    }
    let status = portier.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() >= Duration::from_millis(1500), "it waited for the in-flight requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_upgraded_connections_the_grace_period_then_exits_zero() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let (_backend, _dir, mut portier) = portier_to_echo("ws", "3s").await;
    let tls = tls_connect(portier.https, Some("ws.test"), &[b"http/1.1"]).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://ws.test/ws", tls).await.unwrap();
    ws.send(Message::text("before")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

    let started = Instant::now();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(portier.pid().to_string()).status();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Draining: the tunnel still carries messages.
    ws.send(Message::text("during the drain")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(2), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(echoed, Message::text("during the drain"));

    let status = portier.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2500), "exited after {took:?}, before the grace period ended");
    // Then the tunnel is closed.
    let after = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap();
    assert!(!matches!(after, Some(Ok(Message::Text(_)))), "the tunnel outlived the process: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_only_idle_keep_alive_connections_exits_at_once() {
    let (_backend, _dir, mut portier) = portier_to_echo("idle", "20s").await;
    // An idle keep-alive HTTP/1.1 connection and an idle HTTP/2 connection.
    let tls = tls_connect(portier.https, Some("idle.test"), &[b"http/1.1"]).await;
    let (mut h1, conn1) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    let conn1 = tokio::spawn(conn1);
    let req =
        request("GET", "idle.test", "/", Via::Tls(None)).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    assert_eq!(h1.send_request(req).await.unwrap().status(), 200);
    let tls = tls_connect(portier.https, Some("idle.test"), &[b"h2"]).await;
    let (mut h2, conn2) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let conn2 = tokio::spawn(conn2);
    let req =
        request("GET", "idle.test", "/", Via::H2(None)).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    assert_eq!(h2.send_request(req).await.unwrap().status(), 200);

    let started = Instant::now();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(portier.pid().to_string()).status();
    let status = portier.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(5), "idle connections held the drain: {:?}", started.elapsed());
    let _ = tokio::time::timeout(Duration::from_secs(2), conn1).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), conn2).await;
}
