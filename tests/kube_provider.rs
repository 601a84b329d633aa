//! The Kubernetes provider end to end: the real portier binary, the real kube client, and a
//! protocol-level fake API server (tests/common/fake_kube.rs) that the tests drive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::fake_kube::FakeKube;
use common::process::PortierProcess;
use common::*;
use serde_json::{json, Value};

fn ingress_json(name: &str, labels: Value, annotations: Value, path: &str, service: &str, port: u16) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "labels": labels, "annotations": annotations},
        "spec": {"rules": [{"http": {"paths": [{
            "path": path, "pathType": "ImplementationSpecific",
            "backend": {"service": {"name": service, "port": {"number": port}}}
        }]}}]}
    })
}

fn strip_ingress(name: &str, path: &str, service: &str, port: u16) -> Value {
    ingress_json(
        name,
        json!({"app": "traefik"}),
        json!({"traefik.ingress.kubernetes.io/rule-type": "PathPrefixStrip"}),
        path,
        service,
        port,
    )
}

fn external_name(name: &str, host: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": host, "ports": [{"port": port}]}
    })
}

fn cluster_service(name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": port}]}
    })
}

fn slice(name: &str, service: &str, port: u16, ready: bool) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}]
    })
}

fn tls_secret_json(name: &str, leaf: &Leaf) -> Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"tls.crt": b64(&leaf.cert_pem), "tls.key": b64(&leaf.key_pem)}
    })
}

struct Setup {
    fake: FakeKube,
    portier: PortierProcess,
    _dir: tempfile::TempDir,
}

async fn start(fake: FakeKube, extra: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let mut args = vec!["--kubeconfig", kubeconfig.to_str().unwrap(), "--throttle", "50ms"];
    args.extend_from_slice(extra);
    let portier = PortierProcess::spawn(&args);
    Setup { fake, portier, _dir: dir }
}

/// Polls until `check` holds for a fresh GET on the https entry (10 s at most).
async fn eventually(
    portier: &PortierProcess,
    host: &str,
    path: &str,
    what: &str,
    check: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = get(portier.https, Via::Tls(Some(host)), host, path).await;
        if check(&reply) {
            return reply;
        }
        assert!(Instant::now() < deadline, "{what}: last reply {} {}", reply.status, reply.text());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn admin_json(portier: &PortierProcess, path: &str) -> Value {
    get(portier.admin, Via::Plain, "localhost", path).await.json()
}

async fn wait_ready(portier: &PortierProcess) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(portier.admin, Via::Plain, "localhost", "/readyz").await.status != 200 {
        assert!(Instant::now() < deadline, "portier never became ready");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An echo backend behind ExternalName Service `web` and a PathPrefixStrip Ingress at `/web`,
/// served by a started portier.
async fn routed_web() -> (Echo, Setup) {
    let a = echo_http("a").await;
    let fake = FakeKube::start().await;
    fake.apply(external_name("web", "localhost", a.port()));
    fake.apply(strip_ingress("web", "/web", "web", a.port()));
    let s = start(fake, &[]).await;
    eventually(&s.portier, "n.test", "/web/", "routed", |r| r.status == 200).await;
    (a, s)
}

#[tokio::test]
async fn ingress_lifecycle_follows_the_api_server() {
    let a = echo_http("a").await;
    let b = echo_http("b").await;
    let fake = FakeKube::start().await;
    fake.apply(external_name("web", "localhost", a.port()));
    let s = start(fake, &["--label-selector", "app=traefik"]).await;
    wait_ready(&s.portier).await;

    // Created → routed.
    s.fake.apply(strip_ingress("web", "/web", "web", a.port()));
    let reply = eventually(&s.portier, "node.test", "/web/x?q=1", "created Ingress routed", |r| r.status == 200).await;
    assert_eq!(reply.json()["backend"], "a");
    assert_eq!(reply.json()["uri"], "/x?q=1");

    // ExternalName changed → new target (the Service's port moves to backend b).
    s.fake.apply(external_name("web", "localhost", b.port()));
    s.fake.apply(strip_ingress("web", "/web", "web", b.port()));
    eventually(&s.portier, "node.test", "/web/", "new ExternalName target", |r| {
        r.status == 200 && r.json()["backend"] == "b"
    })
    .await;

    // Label no longer matches the selector → gone.
    let mut unlabelled = strip_ingress("web", "/web", "web", b.port());
    unlabelled["metadata"]["labels"] = json!({"app": "something-else"});
    s.fake.apply(unlabelled);
    eventually(&s.portier, "node.test", "/web/", "unlabelled Ingress dropped", |r| r.status == 404).await;

    // Labelled again, then deleted → 404.
    s.fake.apply(strip_ingress("web", "/web", "web", b.port()));
    eventually(&s.portier, "node.test", "/web/", "relabelled Ingress routed", |r| r.status == 200).await;
    s.fake.delete("Ingress", "default", "web");
    eventually(&s.portier, "node.test", "/web/", "deleted Ingress dropped", |r| r.status == 404).await;
}

#[tokio::test]
async fn readiness_waits_for_the_first_complete_sync() {
    let fake = FakeKube::start().await;
    fake.stop().await;
    let s = start(fake, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = get(s.portier.admin, Via::Plain, "localhost", "/readyz").await;
    assert_eq!(reply.status, 503, "not ready before any sync: {}", reply.text());
    assert_eq!(get(s.portier.admin, Via::Plain, "localhost", "/healthz").await.status, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lost = s.portier.log_lines_with("lost the watch");
    assert!(lost.len() <= 4, "an unreachable API server is logged once per watch, not per retry: {lost:#?}");
    let kube_errors = s.portier.log_lines_with("\"level\":\"ERROR\"");
    assert!(kube_errors.is_empty(), "no error per retry: {kube_errors:#?}");
    s.fake.restart().await;
    wait_ready(&s.portier).await;
}

#[tokio::test]
async fn endpoint_slice_readiness_moves_traffic() {
    let a = echo_http("a").await;
    let b = echo_http("b").await;
    let fake = FakeKube::start().await;
    fake.apply(cluster_service("api", 80));
    fake.apply(slice("api-a", "api", a.port(), true));
    fake.apply(slice("api-b", "api", b.port(), false));
    fake.apply(strip_ingress("api", "/api", "api", 80));
    let s = start(fake, &[]).await;
    eventually(&s.portier, "n.test", "/api/", "routed to a", |r| r.status == 200 && r.json()["backend"] == "a").await;

    s.fake.apply(slice("api-a", "api", a.port(), false));
    s.fake.apply(slice("api-b", "api", b.port(), true));
    eventually(&s.portier, "n.test", "/api/", "traffic follows readiness to b", |r| {
        r.status == 200 && r.json()["backend"] == "b"
    })
    .await;
    for _ in 0..5 {
        assert_eq!(get(s.portier.https, Via::Tls(None), "n.test", "/api/").await.json()["backend"], "b");
    }

    s.fake.apply(slice("api-b", "api", b.port(), false));
    let reply = eventually(&s.portier, "n.test", "/api/", "no ready endpoints", |r| r.status == 503).await;
    assert!(reply.text().contains("no ready endpoints"), "{}", reply.text());
}

#[tokio::test]
async fn tls_secret_rotation_serves_the_new_certificate() {
    let a = echo_http("a").await;
    let old = self_signed(&["rot.test"]);
    let new = self_signed(&["rot.test", "v2.rot.test"]);
    let fake = FakeKube::start().await;
    fake.apply(external_name("web", "localhost", a.port()));
    fake.apply(tls_secret_json("rot-tls", &old));
    let mut ingress = strip_ingress("web", "/web", "web", a.port());
    ingress["spec"]["tls"] = json!([{"hosts": ["rot.test"], "secretName": "rot-tls"}]);
    fake.apply(ingress);
    let s = start(fake, &[]).await;
    let reply = eventually(&s.portier, "rot.test", "/web/", "served with the Secret's certificate", |r| {
        r.cert_names == ["rot.test"]
    })
    .await;
    assert_eq!(reply.status, 200);

    s.fake.apply(tls_secret_json("rot-tls", &new));
    eventually(&s.portier, "rot.test", "/web/", "rotated certificate", |r| r.cert_names == ["rot.test", "v2.rot.test"])
        .await;
}

#[tokio::test]
async fn api_server_outage_keeps_routes_and_later_changes_are_picked_up() {
    let (a, s) = routed_web().await;

    s.fake.stop().await;
    // Routes keep serving throughout the outage.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        let reply = get(s.portier.https, Via::Tls(None), "n.test", "/web/").await;
        assert_eq!(reply.status, 200, "served during the outage: {}", reply.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(s.portier.admin, Via::Plain, "localhost", "/readyz").await.status, 200, "still ready");

    // Changed while the server was away, then it comes back: portier resyncs.
    s.fake.apply(strip_ingress("web2", "/web2", "web", a.port()));
    s.fake.restart().await;
    eventually(&s.portier, "n.test", "/web2/", "change made during the outage", |r| r.status == 200).await;
    assert_eq!(get(s.portier.https, Via::Tls(None), "n.test", "/web/").await.status, 200);

    // The outage was logged once per watch, not once per retry.
    let lost = s.portier.log_lines_with("lost the watch");
    assert!(!lost.is_empty(), "the outage is logged");
    assert!(lost.len() <= 4, "logged once per watched kind, not per retry: {lost:#?}");
}

#[tokio::test]
async fn expired_watches_and_410_gone_resync_without_dropping_routes() {
    let (a, s) = routed_web().await;

    s.fake.compact();
    s.fake.expire_watches();
    assert_eq!(get(s.portier.https, Via::Tls(None), "n.test", "/web/").await.status, 200);
    s.fake.apply(strip_ingress("web3", "/web3", "web", a.port()));
    eventually(&s.portier, "n.test", "/web3/", "change after 410 Gone", |r| r.status == 200).await;
    assert_eq!(get(s.portier.https, Via::Tls(None), "n.test", "/web/").await.status, 200);
}

#[tokio::test]
async fn unrelated_changes_do_not_swap_the_config() {
    let (a, s) = routed_web().await;
    let generation = admin_json(&s.portier, "/api/version").await["generation"].as_u64().unwrap();

    for i in 0..5 {
        s.fake.apply(external_name(&format!("unrelated-{i}"), "localhost", 1000 + i));
        s.fake.apply(slice(&format!("unrelated-{i}"), &format!("unrelated-{i}"), 1000 + i, true));
    }
    // A referenced change afterwards proves the unrelated ones were processed first.
    s.fake.apply(strip_ingress("marker", "/marker", "web", a.port()));
    eventually(&s.portier, "n.test", "/marker/", "marker routed", |r| r.status == 200).await;
    let after = admin_json(&s.portier, "/api/version").await["generation"].as_u64().unwrap();
    assert_eq!(after, generation + 1, "only the marker Ingress caused a swap");
}

#[tokio::test]
async fn status_is_published_and_refused_ingresses_get_one_warning_event() {
    let a = echo_http("a").await;
    let fake = FakeKube::start().await;
    fake.apply(external_name("web", "localhost", a.port()));
    fake.apply(strip_ingress("web", "/web", "web", a.port()));
    let mut bad = strip_ingress("bad", "/bad", "web", a.port());
    bad["metadata"]["annotations"] = json!({"traefik.ingress.kubernetes.io/rule-type": "Regex"});
    fake.apply(bad.clone());
    let s = start(fake, &["--publish-ip", "192.0.2.10", "--publish-hostname", "node.example"]).await;
    eventually(&s.portier, "n.test", "/web/", "routed", |r| r.status == 200).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = s.fake.get("Ingress", "default", "web").unwrap()["status"]["loadBalancer"]["ingress"].clone();
        if status == json!([{"ip": "192.0.2.10"}, {"hostname": "node.example"}])
            || status == json!([{"hostname": "node.example"}, {"ip": "192.0.2.10"}])
        {
            break;
        }
        assert!(Instant::now() < deadline, "status not published: {status}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let bad_status = s.fake.get("Ingress", "default", "bad").unwrap()["status"]["loadBalancer"]["ingress"].clone();
    assert!(bad_status.is_null(), "a refused Ingress is not served, so no status: {bad_status}");

    let warnings_for_bad = |fake: &FakeKube| -> Vec<Value> {
        fake.list("Event")
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == "bad" && e["type"] == "Warning")
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while warnings_for_bad(&s.fake).is_empty() {
        assert!(Instant::now() < deadline, "no Warning Event for the refused Ingress");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let events = warnings_for_bad(&s.fake);
    assert_eq!(events[0]["involvedObject"]["kind"], "Ingress");
    assert_eq!(events[0]["reason"], "Refused");
    assert!(events[0]["message"].as_str().unwrap().contains("Regex"));

    // Other changes cause rebuilds; the unchanged reason is not reported again.
    for i in 0..3 {
        s.fake.apply(strip_ingress(&format!("more-{i}"), &format!("/more{i}"), "web", a.port()));
    }
    eventually(&s.portier, "n.test", "/more2/", "more routed", |r| r.status == 200).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(warnings_for_bad(&s.fake).len(), 1, "not repeated while the reason is unchanged");
}

#[tokio::test]
async fn namespace_flag_restricts_the_watches() {
    let a = echo_http("a").await;
    let fake = FakeKube::start().await;
    let mut other_svc = external_name("web", "localhost", a.port());
    other_svc["metadata"]["namespace"] = json!("other");
    let mut other_ing = strip_ingress("web", "/other", "web", a.port());
    other_ing["metadata"]["namespace"] = json!("other");
    fake.apply(other_svc);
    fake.apply(other_ing);
    fake.apply(external_name("web", "localhost", a.port()));
    fake.apply(strip_ingress("web", "/mine", "web", a.port()));
    let s = start(fake, &["--namespace", "default"]).await;
    eventually(&s.portier, "n.test", "/mine/", "own namespace routed", |r| r.status == 200).await;
    assert_eq!(get(s.portier.https, Via::Tls(None), "n.test", "/other/").await.status, 404);
    let requests = s.fake.requests();
    assert!(requests.iter().all(|r| r.contains("/namespaces/default/")), "only namespaced calls: {requests:#?}");
}
