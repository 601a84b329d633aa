//! Measurements for the Kubernetes provider, run by hand (not in CI; they time things):
//!
//! ```sh
//! cargo test --release --test kube_measure -- --ignored --nocapture --test-threads=1
//! ```
//!
//! - propagation: Ingress created in the (fake) API server → first request served by its route;
//! - time to first ready with 10,000 Ingresses in the API server;
//! - one rebuild and swap with 10,000 Ingresses (one of them changed), from portier's own log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::fake_kube::FakeKube;
use common::process::PortierProcess;
use common::*;
use serde_json::json;

fn ingress(i: usize, port: u16) -> serde_json::Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": format!("ing-{i}"), "namespace": "default", "labels": {"app": "traefik"},
                     "annotations": {"traefik.ingress.kubernetes.io/rule-type": "PathPrefixStrip"}},
        "spec": {"rules": [{"host": format!("h{}.test", i % 100), "http": {"paths": [{
            "path": format!("/p{i}"), "pathType": "ImplementationSpecific",
            "backend": {"service": {"name": "web", "port": {"number": port}}}}]}}]}
    })
}

/// A fake API server holding 10,000 Ingresses to one ExternalName Service.
async fn fake_with_10000_ingresses() -> FakeKube {
    let fake = FakeKube::start().await;
    fake.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"port": 8080}]}}));
    for i in 0..10_000 {
        fake.apply(ingress(i, 8080));
    }
    fake
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn propagation(throttle: &str, changes: usize) {
    let backend = echo_http("web").await;
    let fake = FakeKube::start().await;
    fake.apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "localhost", "ports": [{"port": backend.port()}]}}));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let portier = PortierProcess::spawn(&["--kubeconfig", kubeconfig.to_str().unwrap(), "--throttle", throttle]);
    let mut samples = Vec::with_capacity(changes);
    for i in 0..changes {
        let host = format!("h{}.test", i % 100);
        let path = format!("/p{i}/");
        let started = Instant::now();
        fake.apply(ingress(i, backend.port()));
        loop {
            if get(portier.https, Via::Tls(None), &host, &path).await.status == 200 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "change {i} never propagated");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(started.elapsed());
        // Spread changes so each one is measured on its own, not coalesced with the next.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples.sort();
    println!(
        "propagation (--throttle {throttle}, {changes} Ingress creations): median {:?}, p99 {:?}, max {:?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn measure_propagation() {
    propagation("200ms", 200).await;
    propagation("50ms", 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn measure_time_to_ready_with_10000_ingresses() {
    let fake = fake_with_10000_ingresses().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let started = Instant::now();
    let portier = PortierProcess::spawn(&["--kubeconfig", kubeconfig.to_str().unwrap()]);
    loop {
        if get(portier.admin, Via::Plain, "localhost", "/readyz").await.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready = started.elapsed();
    let routes = get(portier.admin, Via::Plain, "localhost", "/api/version").await.json();
    let rss = std::fs::read_to_string(format!("/proc/{}/status", portier.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .unwrap();
    let count = get(portier.admin, Via::Plain, "localhost", "/api/routes").await.json().as_array().unwrap().len();
    println!(
        "10,000 Ingresses: process start → ready in {ready:?} (generation {}), {count} routes, RSS {} MiB",
        routes["generation"],
        rss / 1024
    );
    assert_eq!(count, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn measure_rebuild_and_swap_with_10000_ingresses() {
    let fake = fake_with_10000_ingresses().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let portier = PortierProcess::spawn(&["--kubeconfig", kubeconfig.to_str().unwrap()]);
    let started = Instant::now();
    while get(portier.admin, Via::Plain, "localhost", "/readyz").await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(60), "not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rebuilds = || -> Vec<f64> {
        portier
            .log_lines_with("configuration swapped")
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["fields"]["rebuild_ms"].as_f64())
            .collect()
    };
    let before = rebuilds().len();
    let changes = 30;
    for n in 0..changes {
        let mut changed = ingress(0, 8080);
        changed["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!(format!("/changed-{n}"));
        fake.apply(changed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while rebuilds().len() < before + n + 1 {
            assert!(Instant::now() < deadline, "change {n} was not swapped in");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut samples: Vec<Duration> =
        rebuilds()[before..].iter().map(|ms| Duration::from_secs_f64(ms / 1000.0)).collect();
    samples.sort();
    println!(
        "rebuild+swap with 10,000 Ingresses ({changes} changes of one): median {:?}, p90 {:?}, max {:?}",
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        samples[samples.len() - 1]
    );
}
