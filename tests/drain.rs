//! Graceful drain on SIGTERM: requests already accepted finish, new connections are refused,
//! readiness turns 503 while draining, and the process exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::process::PortierProcess;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let backend = echo_http("slow").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("svc.yaml"), external_service("slow", "localhost", backend.port(), None)).unwrap();
    std::fs::write(dir.path().join("ing.yaml"), ingress("slow", &[], None, &[("/", "Prefix", "slow", backend.port())]))
        .unwrap();
    let mut portier = PortierProcess::spawn(&["--manifests", dir.path().to_str().unwrap(), "--grace-period", "20s"]);
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
