//! Hot swap, end to end: manifest files created, modified, deleted, renamed and broken while
//! portier runs; many requests in flight while the manifests change; a request keeps the config
//! it started with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

const HOST: &str = "hot.invalid";
const GRACE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- manifests

/// An ExternalName Service `name` → `localhost:<echo port>`, its port named `web`, so that
/// Ingresses refer to it by name and keep working when the Service moves to another echo.
fn svc(name: &str, echo: &Echo) -> String {
    external_service(name, "localhost", echo.port(), Some("web"))
}

/// A host-less Ingress with one `Prefix` path to `service`'s port `web`.
fn ing(name: &str, path: &str, service: &str, annotations: &[(&str, &str)]) -> String {
    let text = ingress(name, annotations, None, &[(path, "Prefix", service, 1)]);
    assert!(text.contains("{number: 1}"), "the ingress builder changed its layout:\n{text}");
    text.replace("{number: 1}", "{name: web}")
}

/// A Service and an Ingress routing `path` to it, in one multi-document file.
fn route_file(name: &str, path: &str, echo: &Echo) -> String {
    format!("{}---\n{}", svc(name, echo), ing(name, path, name, &[]))
}

// ---------------------------------------------------------------- helpers

async fn https_get(portier: &Portier, path: &str) -> Reply {
    get(portier.https(), Via::Tls(None), HOST, path).await
}

/// The echo backend that answered, if it was one.
fn backend_of(reply: &Reply) -> Option<String> {
    if reply.status != 200 {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(&reply.body).ok()?["backend"].as_str().map(String::from)
}

/// Requests `path` until `pred` holds for the reply (up to 10 s), and returns that reply.
async fn poll_until(portier: &Portier, path: &str, what: &str, pred: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = Instant::now() + GRACE;
    loop {
        let reply = https_get(portier, path).await;
        if pred(&reply) {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last reply to {path}: {} {}",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_status(portier: &Portier, path: &str, status: u16) -> Reply {
    poll_until(portier, path, &format!("{path} to answer {status}"), |r| r.status == status).await
}

async fn wait_backend(portier: &Portier, path: &str, backend: &str) -> Reply {
    poll_until(portier, path, &format!("{path} to be served by {backend}"), |r| {
        backend_of(r).as_deref() == Some(backend)
    })
    .await
}

/// Makes sure every file event so far has been processed: writes a marker route in a new file
/// and waits until it answers (the reload that shows it read every file as they are now).
async fn barrier(portier: &Portier, marker: &Echo, n: u32) {
    let name = format!("barrier{n}");
    portier.write(&format!("{name}.yaml"), &route_file(&name, &format!("/{name}"), marker));
    wait_backend(portier, &format!("/{name}"), &marker.name).await;
}

// ---------------------------------------------------------------- file changes

#[tokio::test]
async fn new_manifest_file_adds_its_route_without_restart() {
    let a = echo_http("a").await;
    let b = echo_http("b").await;
    let portier = Portier::start(&[("one.yaml", route_file("one", "/one", &a))], &[]).await;
    assert_eq!(backend_of(&https_get(&portier, "/one").await).as_deref(), Some("a"));
    assert_eq!(https_get(&portier, "/two").await.status, 404, "no /two before its file exists");

    portier.write("two.yaml", &route_file("two", "/two", &b));
    let reply = wait_backend(&portier, "/two/x?y=1", "b").await;
    assert_eq!(reply.json()["uri"], "/two/x?y=1");
    assert_eq!(backend_of(&https_get(&portier, "/one").await).as_deref(), Some("a"), "the first file still serves");
}

#[tokio::test]
async fn modified_service_file_switches_the_routes_backend() {
    let a = echo_http("a").await;
    let b = echo_http("b").await;
    let portier =
        Portier::start(&[("svc.yaml", svc("stable", &a)), ("ing.yaml", ing("stable", "/stable", "stable", &[]))], &[])
            .await;
    assert_eq!(backend_of(&https_get(&portier, "/stable").await).as_deref(), Some("a"));

    portier.write("svc.yaml", &svc("stable", &b));
    wait_backend(&portier, "/stable", "b").await;
    // And back, this time replaced atomically.
    portier.replace("svc.yaml", &svc("stable", &a));
    wait_backend(&portier, "/stable", "a").await;
}

#[tokio::test]
async fn modified_ingress_file_changes_the_path() {
    let a = echo_http("a").await;
    let portier = Portier::start(&[("svc.yaml", svc("s", &a)), ("ing.yaml", ing("s", "/old", "s", &[]))], &[]).await;
    assert_eq!(https_get(&portier, "/old").await.status, 200);

    portier.write("ing.yaml", &ing("s", "/new", "s", &[]));
    wait_status(&portier, "/new", 200).await;
    assert_eq!(https_get(&portier, "/old").await.status, 404, "the old path is gone once the new one serves");
}

#[tokio::test]
async fn deleted_manifest_file_removes_its_route() {
    let a = echo_http("a").await;
    let portier = Portier::start(
        &[("gone.yaml", route_file("gone", "/gone", &a)), ("kept.yaml", route_file("kept", "/kept", &a))],
        &[],
    )
    .await;
    assert_eq!(https_get(&portier, "/gone").await.status, 200);

    portier.remove("gone.yaml");
    let reply = wait_status(&portier, "/gone", 404).await;
    assert_eq!(reply.status, 404);
    assert_eq!(backend_of(&https_get(&portier, "/kept").await).as_deref(), Some("a"), "the other file still serves");
}

#[tokio::test]
async fn renamed_manifest_file_keeps_its_route_until_it_is_no_longer_yaml() {
    let a = echo_http("a").await;
    let marker = echo_http("marker").await;
    let portier = Portier::start(&[("first.yaml", route_file("r", "/r", &a))], &[]).await;
    let dir = portier.dir.path().to_path_buf();
    assert_eq!(https_get(&portier, "/r").await.status, 200);

    std::fs::rename(dir.join("first.yaml"), dir.join("second.yaml")).unwrap();
    barrier(&portier, &marker, 1).await;
    assert_eq!(
        backend_of(&https_get(&portier, "/r").await).as_deref(),
        Some("a"),
        "a .yaml → .yaml rename keeps the route"
    );

    std::fs::rename(dir.join("second.yaml"), dir.join("third.yml")).unwrap();
    barrier(&portier, &marker, 2).await;
    assert_eq!(backend_of(&https_get(&portier, "/r").await).as_deref(), Some("a"), ".yml counts as well");

    std::fs::rename(dir.join("third.yml"), dir.join("third.yml.bak")).unwrap();
    wait_status(&portier, "/r", 404).await;

    std::fs::rename(dir.join("third.yml.bak"), dir.join("back.yaml")).unwrap();
    wait_backend(&portier, "/r", "a").await;
}

#[tokio::test]
async fn manifest_in_a_subfolder_is_watched() {
    let a = echo_http("a").await;
    let b = echo_http("b").await;
    let portier = Portier::start(&[("top.yaml", route_file("top", "/top", &a))], &[]).await;
    let sub = portier.dir.path().join("team").join("dashboards");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("deep.yaml"), route_file("deep", "/deep", &b)).unwrap();
    wait_backend(&portier, "/deep", "b").await;

    // Changing and deleting it inside the subfolder work too.
    std::fs::write(sub.join("deep.yaml"), route_file("deep", "/deeper", &b)).unwrap();
    wait_backend(&portier, "/deeper", "b").await;
    std::fs::remove_file(sub.join("deep.yaml")).unwrap();
    wait_status(&portier, "/deeper", 404).await;
    assert_eq!(https_get(&portier, "/top").await.status, 200);
}

#[tokio::test]
async fn single_manifest_file_replaced_atomically_is_picked_up() {
    let a = echo_http("a").await;
    let b = echo_http("b").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portier.yaml");
    std::fs::write(&file, route_file("single", "/single", &a)).unwrap();
    // A sibling in the same folder is not part of --manifests and must not be read.
    std::fs::write(dir.path().join("sibling.yaml"), route_file("sibling", "/sibling", &a)).unwrap();
    let running = Portier::start_in(file.clone(), &[]).await.unwrap();
    let https = running.https_addr;
    let fetch = |path: &'static str| async move { get(https, Via::Tls(None), HOST, path).await };
    assert_eq!(backend_of(&fetch("/single").await).as_deref(), Some("a"));
    assert_eq!(fetch("/sibling").await.status, 404, "a file next to the one given is not read");

    // Replace it the way a ConfigMap update or `mv` does: write elsewhere, rename over it.
    let tmp = dir.path().join("portier.yaml.new");
    std::fs::write(&tmp, format!("{}---\n{}", route_file("single", "/single", &b), route_file("more", "/more", &b)))
        .unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let deadline = Instant::now() + GRACE;
    loop {
        let (single, more) = (fetch("/single").await, fetch("/more").await);
        if backend_of(&single).as_deref() == Some("b") && backend_of(&more).as_deref() == Some("b") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replaced file was not picked up: /single {} /more {}",
            single.text(),
            more.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fetch("/sibling").await.status, 404);

    // A second replacement is seen too (the watch survives the rename).
    std::fs::write(&tmp, route_file("single", "/single", &a)).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let deadline = Instant::now() + GRACE;
    while fetch("/more").await.status != 404 {
        assert!(Instant::now() < deadline, "the second replacement was not picked up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(backend_of(&fetch("/single").await).as_deref(), Some("a"));
    running.shutdown().await;
}

// ---------------------------------------------------------------- broken files

#[tokio::test]
async fn broken_yaml_keeps_serving_its_last_good_contents_and_warns_naming_the_file() {
    let a = echo_http("a").await;
    let b = echo_http("b").await;
    let portier = Portier::start(
        &[("fragile.yaml", route_file("fragile", "/fragile", &a)), ("other.yaml", route_file("other", "/other", &b))],
        &[],
    )
    .await;
    assert_eq!(https_get(&portier, "/fragile").await.status, 200);
    let warnings = admin_get(&portier, "/api/warnings").await.text();
    assert!(!warnings.contains("fragile.yaml"), "no warning before the file breaks: {warnings}");

    portier.write("fragile.yaml", "apiVersion: v1\nkind: [Service\nmetadata: {name: fragile\n");
    let deadline = Instant::now() + GRACE;
    let warnings = loop {
        let reply = admin_get(&portier, "/api/warnings").await;
        assert_eq!(reply.status, 200);
        if reply.text().contains("fragile.yaml") {
            break reply.json();
        }
        assert!(Instant::now() < deadline, "no warning names fragile.yaml: {}", reply.text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let about: Vec<_> =
        warnings.as_array().unwrap().iter().filter(|w| w.to_string().contains("fragile.yaml")).collect();
    assert_eq!(about.len(), 1, "one warning about the broken file: {warnings}");
    assert!(!about[0]["message"].as_str().unwrap_or_default().is_empty(), "the warning says why: {warnings}");

    assert_eq!(
        backend_of(&https_get(&portier, "/fragile").await).as_deref(),
        Some("a"),
        "last good contents keep serving"
    );
    assert_eq!(backend_of(&https_get(&portier, "/other").await).as_deref(), Some("b"), "other files keep working");

    // Other files keep being followed while this one is broken.
    portier.write("other.yaml", &route_file("other", "/other2", &b));
    wait_backend(&portier, "/other2", "b").await;
    assert_eq!(
        backend_of(&https_get(&portier, "/fragile").await).as_deref(),
        Some("a"),
        "still the last good contents"
    );

    // Fixed: its new contents are used and the warning goes away.
    portier.write("fragile.yaml", &route_file("fragile", "/fixed", &a));
    wait_backend(&portier, "/fixed", "a").await;
    assert_eq!(https_get(&portier, "/fragile").await.status, 404);
    let warnings = admin_get(&portier, "/api/warnings").await.text();
    assert!(!warnings.contains("fragile.yaml"), "the warning is gone once the file is fixed: {warnings}");
}

// ---------------------------------------------------------------- under load

type Failures = Vec<String>;

#[derive(Default)]
struct Outcome {
    requests: usize,
    connections: usize,
    by_backend: BTreeMap<String, usize>,
    failures: Failures,
}

impl Outcome {
    fn check(&mut self, client: &str, status: u16, body: &[u8]) {
        let backend = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["backend"].as_str().map(String::from));
        match backend {
            Some(name) if status == 200 && (name == "a" || name == "b") => {
                *self.by_backend.entry(name).or_default() += 1
            }
            _ => self.failures.push(format!(
                "{client} request {}: {status} {}",
                self.requests,
                String::from_utf8_lossy(body)
            )),
        }
    }
}

fn stable_request(via: Via<'_>) -> http::Request<Full<Bytes>> {
    request("GET", HOST, "/stable", via).body(Full::new(Bytes::new())).unwrap()
}

/// Sequential requests over one HTTP/1.1 keep-alive TLS connection (a new one only if it breaks,
/// which counts as a failure).
async fn h1_client(addr: SocketAddr, id: usize, min: usize, done: Arc<AtomicBool>, deadline: Instant) -> Outcome {
    let client = format!("h1 client {id}");
    let mut out = Outcome::default();
    'connect: while out.requests < min || !done.load(Ordering::SeqCst) {
        let tls = tls_connect(addr, None, &[b"http/1.1"]).await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        out.connections += 1;
        while out.requests < min || !done.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                out.failures.push(format!("{client}: deadline passed after {} requests", out.requests));
                return out;
            }
            let result = async {
                sender.ready().await?;
                let response = sender.send_request(stable_request(Via::Tls(None))).await?;
                let status = response.status().as_u16();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            }
            .await;
            match result {
                Ok((status, body)) => out.check(&client, status, &body),
                Err(e) => {
                    out.failures.push(format!("{client} request {}: {e}", out.requests));
                    out.requests += 1;
                    continue 'connect;
                }
            }
            out.requests += 1;
        }
    }
    out
}

/// Sequential requests as streams of one HTTP/2 connection.
async fn h2_client(addr: SocketAddr, id: usize, min: usize, done: Arc<AtomicBool>, deadline: Instant) -> Outcome {
    let client = format!("h2 client {id}");
    let mut out = Outcome::default();
    'connect: while out.requests < min || !done.load(Ordering::SeqCst) {
        let tls = tls_connect(addr, None, &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "server did not pick h2");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        out.connections += 1;
        while out.requests < min || !done.load(Ordering::SeqCst) {
            if Instant::now() > deadline {
                out.failures.push(format!("{client}: deadline passed after {} requests", out.requests));
                return out;
            }
            let result = async {
                sender.ready().await?;
                let response = sender.send_request(stable_request(Via::H2(None))).await?;
                let status = response.status().as_u16();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, body))
            }
            .await;
            match result {
                Ok((status, body)) => out.check(&client, status, &body),
                Err(e) => {
                    out.failures.push(format!("{client} request {}: {e}", out.requests));
                    out.requests += 1;
                    continue 'connect;
                }
            }
            out.requests += 1;
        }
    }
    out
}

/// `count` extra Ingresses `/x0`.. on the stable Service, with a rule type that varies too.
fn extras(count: usize, strip: bool) -> String {
    if count == 0 {
        return "# no extra Ingresses right now\n".into();
    }
    let rule = if strip { "PathPrefixStrip" } else { "PathPrefix" };
    (0..count)
        .map(|k| {
            let text = ingress(
                &format!("extra{k}"),
                &[("traefik.ingress.kubernetes.io/rule-type", rule)],
                None,
                &[(&format!("/x{k}"), "ImplementationSpecific", "stable", 1)],
            );
            text.replace("{number: 1}", "{name: web}")
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn stable_ingress(preserve_host: bool) -> String {
    ing(
        "stable",
        "/stable",
        "stable",
        &[("traefik.ingress.kubernetes.io/preserve-host", if preserve_host { "true" } else { "false" })],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_fails_no_request() {
    const H1_CLIENTS: usize = 12;
    const H2_CLIENTS: usize = 4;
    const PER_CLIENT: usize = 250; // 16 × 250 = 4000 requests at least
    const REWRITES: usize = 60;

    let a = echo_http("a").await;
    let b = echo_http("b").await;
    let portier = Portier::start(
        &[
            ("stable-svc.yaml", svc("stable", &a)),
            ("stable-ing.yaml", stable_ingress(true)),
            ("extra.yaml", extras(1, false)),
        ],
        &[],
    )
    .await;
    assert_eq!(backend_of(&https_get(&portier, "/stable").await).as_deref(), Some("a"));
    assert_eq!(https_get(&portier, "/x0").await.status, 200);

    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let done = Arc::new(AtomicBool::new(false));
    let generation_before = portier.generation();
    let mut clients = Vec::new();
    for id in 0..H1_CLIENTS {
        clients.push(tokio::spawn(h1_client(portier.https(), id, PER_CLIENT, done.clone(), deadline)));
    }
    for id in 0..H2_CLIENTS {
        clients.push(tokio::spawn(h2_client(portier.https(), id, PER_CLIENT, done.clone(), deadline)));
    }

    // Rewrites: even steps replace atomically the files /stable depends on (switching its
    // Service between the two echoes, toggling an annotation on its Ingress); odd steps write
    // in place (or delete) the file of the other Ingresses, adding and removing them and
    // changing their annotations. In-place writes are kept to the file /stable does not depend
    // on: a reader may catch such a file truncated, which is a valid (empty) manifest.
    let (mut on_b, mut preserve_host) = (false, true);
    for i in 0..REWRITES {
        if i % 2 == 0 {
            if i % 4 == 0 {
                on_b = !on_b;
                portier.replace("stable-svc.yaml", &svc("stable", if on_b { &b } else { &a }));
            } else {
                preserve_host = !preserve_host;
                portier.replace("stable-ing.yaml", &stable_ingress(preserve_host));
            }
        } else if i % 8 == 7 {
            portier.remove("extra.yaml");
        } else {
            portier.write("extra.yaml", &extras((i / 2) % 4 + 1, (i / 8) % 2 == 1));
        }
        tokio::time::sleep(Duration::from_millis(20 + (i as u64 * 7) % 21)).await;
    }
    // Let the last change land while the clients are still busy.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let generation_after = portier.generation();
    done.store(true, Ordering::SeqCst);

    let mut total = Outcome::default();
    for client in clients {
        let out = client.await.unwrap();
        total.requests += out.requests;
        total.connections += out.connections;
        for (k, v) in out.by_backend {
            *total.by_backend.entry(k).or_default() += v;
        }
        total.failures.extend(out.failures);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{} requests on {} connections in {elapsed:?}, by backend {:?}, generations {generation_before} → {generation_after}",
        total.requests, total.connections, total.by_backend
    );
    assert!(
        total.failures.is_empty(),
        "{} of {} requests failed during hot swaps; first ones:\n{}",
        total.failures.len(),
        total.requests,
        total.failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(total.requests >= H1_CLIENTS * PER_CLIENT + H2_CLIENTS * PER_CLIENT);
    assert_eq!(total.connections, H1_CLIENTS + H2_CLIENTS, "keep-alive connections were not broken by swaps");
    assert!(
        generation_after >= generation_before + 20,
        "the config was swapped only {} times during the load",
        generation_after - generation_before
    );
    assert!(
        total.by_backend.get("a").copied().unwrap_or(0) > 0 && total.by_backend.get("b").copied().unwrap_or(0) > 0,
        "both backends served /stable during the load: {:?}",
        total.by_backend
    );
    // The manifests' final state is what serves now.
    wait_backend(&portier, "/stable", if on_b { "b" } else { "a" }).await;
}

// ---------------------------------------------------------------- in-flight requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_on_the_config_it_started_with() {
    let old = echo_http("old").await;
    let portier =
        Portier::start(&[("svc.yaml", svc("slow", &old)), ("ing.yaml", ing("slow", "/slow", "slow", &[]))], &[]).await;
    let addr = portier.https();

    // One keep-alive connection: a slow request on it, then a new one after the swap.
    let tls = tls_connect(addr, None, &[b"http/1.1"]).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let slow_request = request("GET", HOST, "/slow?ms=3000", Via::Tls(None)).body(Full::new(Bytes::new())).unwrap();
    let in_flight = tokio::spawn(async move {
        let response = sender.send_request(slow_request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body, sender)
    });
    tokio::time::sleep(Duration::from_millis(500)).await; // the request is now at the backend

    portier.replace("ing.yaml", &ing("slow", "/elsewhere", "slow", &[]));
    portier.wait_for("the /slow route to be removed", |c| !c.routes.iter().any(|r| r.path == "/slow")).await;
    let after = https_get(&portier, "/slow?ms=1").await;
    assert_eq!(after.status, 404, "a new request after the swap finds no route: {}", after.text());
    assert!(!in_flight.is_finished(), "the slow request ended before the swap; the test proves nothing");

    let (status, body, mut sender) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight request failed because of the swap: {}", String::from_utf8_lossy(&body));
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["backend"], "old");
    assert_eq!(echo["uri"], "/slow?ms=3000");

    // The next request on that same connection uses the new config.
    sender.ready().await.unwrap();
    let next = sender
        .send_request(request("GET", HOST, "/slow?ms=1", Via::Tls(None)).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(next.status(), 404, "the connection's next request sees the new config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_h2_stream_keeps_its_backend_while_new_streams_use_the_new_one() {
    let old = echo_http("old").await;
    let new = echo_http("new").await;
    let portier =
        Portier::start(&[("svc.yaml", svc("slow", &old)), ("ing.yaml", ing("slow", "/slow", "slow", &[]))], &[]).await;

    let tls = tls_connect(portier.https(), None, &[b"h2"]).await;
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let h2_get = |path: &str| {
        let mut sender = sender.clone();
        let req = request("GET", HOST, path, Via::H2(None)).body(Full::new(Bytes::new())).unwrap();
        async move {
            sender.ready().await.unwrap();
            let response = sender.send_request(req).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        }
    };
    let in_flight = tokio::spawn(h2_get("/slow?ms=3000"));
    tokio::time::sleep(Duration::from_millis(500)).await;

    portier.replace("svc.yaml", &svc("slow", &new));
    portier
        .wait_for("/slow to move to the new backend", |c| {
            c.backends
                .iter()
                .any(|b| matches!(&b.target, portier::config::Target::ExternalName { port, .. } if *port == new.port()))
        })
        .await;
    let (status, body) = h2_get("/slow?ms=1").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["backend"],
        "new",
        "a new stream uses the new config"
    );
    assert!(!in_flight.is_finished(), "the slow request ended before the swap; the test proves nothing");

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "the in-flight stream failed because of the swap: {}", String::from_utf8_lossy(&body));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["backend"], "old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_rewrites_of_unchanged_manifests_fail_no_request() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 100;
    const REWRITES: usize = 80;

    let a = echo_http("a").await;
    let portier =
        Portier::start(&[("stable-svc.yaml", svc("stable", &a)), ("stable-ing.yaml", stable_ingress(true))], &[]).await;
    assert_eq!(backend_of(&https_get(&portier, "/stable").await).as_deref(), Some("a"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(h1_client(portier.https(), id, PER_CLIENT, done.clone(), deadline)))
        .collect();

    // Saving a file in place with the very same contents, as an editor or `cat >` does: nothing
    // changes for users, so no request may fail.
    for i in 0..REWRITES {
        if i % 2 == 0 {
            portier.write("stable-svc.yaml", &svc("stable", &a));
        } else {
            portier.write("stable-ing.yaml", &stable_ingress(true));
        }
        tokio::time::sleep(Duration::from_millis(15 + (i as u64 * 7) % 16)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    done.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    let mut requests = 0;
    for client in clients {
        let out = client.await.unwrap();
        requests += out.requests;
        failures.extend(out.failures);
    }
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed while unchanged manifests were saved in place; first ones:\n{}",
        failures.len(),
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}
