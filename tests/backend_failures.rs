//! Backend failures: a request that could not connect is sent once more to another endpoint when
//! that is safe (idempotent, no body); an endpoint that fails is skipped for a short, growing
//! time and comes back by itself; all counted in the metrics and shown in /api/backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::Full;

/// Two ready endpoints on the same port: 127.0.0.1 (an echo) and 127.0.0.2 (nothing listens).
async fn setup() -> (Portier, Echo, u16) {
    let live = echo_http("live").await;
    let port = live.port();
    let portier = portier_to_service("pair", port, &[("127.0.0.1", true), ("127.0.0.2", true)]).await;
    (portier, live, port)
}

/// The value of a counter in /metrics for `default/pair:80` (0 when absent).
async fn counter(portier: &Portier, name: &str) -> u64 {
    let text = admin_get(portier, "/metrics").await.text();
    let prefix = format!("{name}{{backend=\"default/pair:80\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_the_other_endpoint_and_that_endpoint_skipped() {
    let (portier, _live, port) = setup().await;
    for i in 0..20 {
        let reply = get(portier.http(), Via::Plain, "pair.test", &format!("/{i}")).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
        assert_eq!(reply.json()["backend"], "live");
    }
    let retries = counter(&portier, "portier_upstream_retries_total").await;
    let skips = counter(&portier, "portier_endpoint_skips_total").await;
    assert!(retries >= 1, "no retry counted");
    // Skipped after its first failure: not tried for every other request.
    assert!(retries <= 3, "{retries} retries for 20 requests: the failed endpoint was not skipped");
    assert_eq!(skips, retries, "each retry follows a skip");
    let backends = admin_get(&portier, "/api/backends").await.json();
    let failing = &backends[0]["failingEndpoints"];
    assert_eq!(failing[0]["address"], format!("127.0.0.2:{port}"), "{backends:#}");
    assert!(failing[0]["failures"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn a_request_with_a_body_is_not_sent_twice() {
    let (portier, _live, _port) = setup().await;
    let post =
        || request("POST", "pair.test", "/upload", Via::Plain).body(Full::new(Bytes::from_static(b"payload"))).unwrap();
    // Round robin: one of the first two POSTs goes to the dead endpoint and gets 502, not a retry.
    let first = send(portier.http(), Via::Plain, post()).await.status;
    let second = send(portier.http(), Via::Plain, post()).await.status;
    let mut statuses = [first, second];
    statuses.sort();
    assert_eq!(statuses, [200, 502]);
    assert_eq!(counter(&portier, "portier_upstream_retries_total").await, 0);
    // Now skipped: the next POSTs all reach the live endpoint.
    for _ in 0..4 {
        assert_eq!(send(portier.http(), Via::Plain, post()).await.status, 200);
    }
}

#[tokio::test]
async fn a_skipped_endpoint_comes_back_by_itself() {
    let (portier, _live, port) = setup().await;
    for _ in 0..4 {
        assert_eq!(get(portier.http(), Via::Plain, "pair.test", "/").await.status, 200);
    }
    assert!(counter(&portier, "portier_endpoint_skips_total").await >= 1);
    // The second endpoint starts listening: it gets requests again once its skip ends (1 s
    // after one failure), without any change to the config.
    let _revived = echo_http_on("revived", &format!("127.0.0.2:{port}")).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply = get(portier.http(), Via::Plain, "pair.test", "/").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        if reply.json()["backend"] == "revived" {
            break;
        }
        assert!(Instant::now() < deadline, "the endpoint never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let backends = admin_get(&portier, "/api/backends").await.json();
    assert_eq!(backends[0]["failingEndpoints"], serde_json::json!([]), "a success clears its record");
}

#[tokio::test]
async fn with_every_endpoint_down_the_client_gets_502_naming_the_backend() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let portier = portier_to_service("pair", port, &[("127.0.0.1", true), ("127.0.0.2", true)]).await;
    for _ in 0..3 {
        let reply = get(portier.http(), Via::Plain, "pair.test", "/").await;
        assert_eq!(reply.status, 502, "{}", reply.text());
        assert!(reply.text().contains("default/pair:80"), "{}", reply.text());
    }
}
