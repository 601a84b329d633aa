//! Chaos under load, end to end: the real portier binary on the (fake) Kubernetes API, two
//! Ingresses to two backends, steady load on both for the whole test, while backend A is killed
//! and restarted and the API server is cut and restored. Only requests to the dead backend fail,
//! only with 502 or 503, and everything recovers without anyone touching portier.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fake_kube::FakeKube;
use common::process::PortierProcess;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio::task::JoinSet;

/// Recovery is polled up to this long: a backend that kept failing may be skipped for a short,
/// growing time (capped around 30 s) before portier tries it again.
const RECOVERY: Duration = Duration::from_secs(30);
/// How long each phase keeps the load running before moving on.
const PHASE: Duration = Duration::from_secs(2);
/// Load tasks per route.
const TASKS_PER_ROUTE: usize = 2;

// ---------------------------------------------------------------- a backend that can die

/// An HTTP backend answering `{"backend": name}`, that can be killed (listener and every open
/// connection closed, so connects are refused) and started again on the same port.
struct Backend {
    name: &'static str,
    addr: SocketAddr,
    accept: Option<JoinSet<()>>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl Backend {
    async fn start(name: &'static str) -> Backend {
        let mut backend =
            Backend { name, addr: "127.0.0.1:0".parse().unwrap(), accept: None, connections: Default::default() };
        backend.listen().await;
        backend
    }

    async fn listen(&mut self) {
        // The port may be briefly held by a socket that used it as its own local port: retry.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            match socket.bind(self.addr).and_then(|()| socket.listen(128)) {
                Ok(listener) => break listener,
                Err(e) => assert!(Instant::now() < deadline, "cannot listen on {} again: {e}", self.addr),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.addr = listener.local_addr().unwrap();
        let name = self.name;
        let connections = self.connections.clone();
        let mut accept = JoinSet::new();
        accept.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let service = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                        json!({"backend": name}).to_string(),
                    ))))
                });
                let connection =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                let mut connections = connections.lock().unwrap();
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        self.accept = Some(accept);
    }

    /// Closes the listener and every open connection, and waits until they are closed.
    async fn kill(&mut self) {
        if let Some(mut accept) = self.accept.take() {
            accept.shutdown().await;
        }
        let mut connections = std::mem::take(&mut *self.connections.lock().unwrap());
        connections.shutdown().await;
    }

    async fn restart(&mut self) {
        self.listen().await;
    }
}

// ---------------------------------------------------------------- objects

fn service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    })
}

fn slice(service: &str, port: u16) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]
    })
}

fn ingress(name: &str, path: &str, service: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"rules": [{"http": {"paths": [{
            "path": path, "pathType": "Prefix",
            "backend": {"service": {"name": service, "port": {"number": 80}}}
        }]}}]}
    })
}

// ---------------------------------------------------------------- load

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Until the first sync, the routes do not exist yet: 404.
    Starting,
    Steady,
    BackendADead,
    BackendARestarted,
    BackendARecovered,
    ApiServerDown,
    ApiServerRestored,
}

const PHASES: [Phase; 7] = [
    Phase::Starting,
    Phase::Steady,
    Phase::BackendADead,
    Phase::BackendARestarted,
    Phase::BackendARecovered,
    Phase::ApiServerDown,
    Phase::ApiServerRestored,
];

/// What one request got: a status, or an error before any status (portier unreachable).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Status(u16),
    /// A 200 that did not come whole from the route's backend.
    WrongBackend(String),
    ClientError(String),
}

/// Outcomes by (route, phase), counting only requests that started and ended in the same phase
/// with no change under way; requests in flight while something changed are counted apart.
#[derive(Default)]
struct Tally {
    within: BTreeMap<(&'static str, Phase), BTreeMap<Outcome, usize>>,
    across: BTreeMap<&'static str, BTreeMap<Outcome, usize>>,
}

struct Load {
    phase: AtomicUsize,
    /// True while the test is changing something (killing a backend, stopping the API server).
    changing: AtomicBool,
    stop: AtomicBool,
    tally: Mutex<Tally>,
}

impl Load {
    /// The current phase, or None while a change is under way.
    fn phase(&self) -> Option<Phase> {
        let changing = self.changing.load(Ordering::SeqCst);
        let phase = PHASES[self.phase.load(Ordering::SeqCst)];
        let still_changing = self.changing.load(Ordering::SeqCst);
        (!changing && !still_changing).then_some(phase)
    }

    /// Runs `change`, then enters `phase`; requests in flight meanwhile count as transitional.
    async fn change<F: std::future::Future<Output = ()>>(&self, phase: Phase, change: F) {
        self.changing.store(true, Ordering::SeqCst);
        change.await;
        self.phase.store(PHASES.iter().position(|p| *p == phase).unwrap(), Ordering::SeqCst);
        self.changing.store(false, Ordering::SeqCst);
    }

    fn record(&self, route: &'static str, started: Option<Phase>, outcome: Outcome) {
        let ended = self.phase();
        let mut tally = self.tally.lock().unwrap();
        let counts = if let (Some(started), true) = (started, started == ended) {
            tally.within.entry((route, started)).or_default()
        } else {
            tally.across.entry(route).or_default()
        };
        *counts.entry(outcome).or_default() += 1;
    }

    fn counts(&self, route: &'static str, phase: Phase) -> BTreeMap<Outcome, usize> {
        self.tally.lock().unwrap().within.get(&(route, phase)).cloned().unwrap_or_default()
    }
}

/// Requests `path` on a keep-alive connection pool until told to stop, recording each outcome.
async fn load(load: Arc<Load>, portier: SocketAddr, route: &'static str, path: &'static str) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    while !load.stop.load(Ordering::SeqCst) {
        let started = load.phase();
        let request = http::Request::get(format!("http://{portier}{path}"))
            .header("host", "chaos.test")
            .body(Empty::new())
            .unwrap();
        let outcome = match tokio::time::timeout(Duration::from_secs(20), client.request(request)).await {
            Err(_) => Outcome::ClientError("no answer within 20 s".into()),
            Ok(Err(e)) => Outcome::ClientError(format!("{e:?}")),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let backend =
                    serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["backend"].as_str().map(String::from));
                match (status, backend) {
                    (200, Some(b)) if b == route => Outcome::Status(200),
                    (200, other) => Outcome::WrongBackend(format!("{other:?}")),
                    _ => Outcome::Status(status),
                }
            }
        };
        load.record(route, started, outcome);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (at most `within`) until requests to `route` that started and ended in `phase` have
/// been answered 200 at least `n` times.
async fn wait_for_successes(load: &Load, route: &'static str, phase: Phase, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let counts = load.counts(route, phase);
        if counts.get(&Outcome::Status(200)).copied().unwrap_or(0) >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{route} had no {n} successes in {phase:?} within {within:?}: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn only(counts: &BTreeMap<Outcome, usize>, allowed: &[u16]) -> bool {
    counts.keys().all(|o| matches!(o, Outcome::Status(s) if allowed.contains(s)))
}

fn total(counts: &BTreeMap<Outcome, usize>) -> usize {
    counts.values().sum()
}

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_dead_backend_fails_and_everything_recovers_by_itself() {
    let mut a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let fake = FakeKube::start().await;
    for (name, backend) in [("a", &a), ("b", &b)] {
        fake.apply(service(name));
        fake.apply(slice(name, backend.addr.port()));
        fake.apply(ingress(name, &format!("/{name}"), name));
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let portier = PortierProcess::spawn(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--throttle",
        "50ms",
        "--no-https-redirect",
    ]);

    let load_state = Arc::new(Load {
        phase: AtomicUsize::new(0),
        changing: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        tally: Default::default(),
    });
    let mut workers = JoinSet::new();
    for _ in 0..TASKS_PER_ROUTE {
        workers.spawn(load(load_state.clone(), portier.http, "a", "/a/x"));
        workers.spawn(load(load_state.clone(), portier.http, "b", "/b/x"));
    }

    // Steady: both routes serve.
    wait_for_successes(&load_state, "a", Phase::Starting, 1, Duration::from_secs(30)).await;
    wait_for_successes(&load_state, "b", Phase::Starting, 1, Duration::from_secs(30)).await;
    load_state.change(Phase::Steady, async {}).await;
    tokio::time::sleep(PHASE).await;

    // A dies: its requests fail with 502 or 503 only; B is untouched.
    load_state.change(Phase::BackendADead, a.kill()).await;
    tokio::time::sleep(PHASE).await;

    // A comes back on the same port: it serves again, with nothing done to portier.
    load_state.change(Phase::BackendARestarted, a.restart()).await;
    wait_for_successes(&load_state, "a", Phase::BackendARestarted, 1, RECOVERY).await;
    load_state.change(Phase::BackendARecovered, async {}).await;
    tokio::time::sleep(PHASE).await;

    // The API server goes away: both routes keep serving.
    load_state.change(Phase::ApiServerDown, fake.stop()).await;
    tokio::time::sleep(PHASE).await;

    // It comes back, with a change made meanwhile: the change is served, the routes never stop.
    fake.apply(ingress("c", "/c", "b"));
    load_state.change(Phase::ApiServerRestored, fake.restart()).await;
    let deadline = Instant::now() + RECOVERY;
    loop {
        let reply = common::get(portier.http, common::Via::Plain, "chaos.test", "/c/x").await;
        if reply.status == 200 {
            assert_eq!(reply.json()["backend"], "b");
            break;
        }
        assert!(Instant::now() < deadline, "the Ingress added during the outage is not served: {}", reply.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(PHASE / 2).await;

    load_state.stop.store(true, Ordering::SeqCst);
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }

    let tally = load_state.tally.lock().unwrap();
    let report = format!("within phases: {:?}\nacross transitions: {:?}", tally.within, tally.across);
    drop(tally);
    for route in ["a", "b"] {
        let counts = load_state.counts(route, Phase::Starting);
        assert!(only(&counts, &[200, 404]), "{route} before the first sync: 404, then 200: {report}");
    }
    for phase in &PHASES[1..] {
        let phase = *phase;
        let b_counts = load_state.counts("b", phase);
        assert!(only(&b_counts, &[200]), "B never fails ({phase:?}): {report}");
        // The restarted phase lasts only until A's first success: it may see few requests.
        if phase != Phase::BackendARestarted {
            assert!(total(&b_counts) >= 5, "B was under load in {phase:?}: {report}");
        }
    }
    let across = load_state.tally.lock().unwrap().across.clone();
    assert!(
        only(&across.get("b").cloned().unwrap_or_default(), &[200]),
        "B never fails, even at transitions: {report}"
    );
    assert!(
        only(&across.get("a").cloned().unwrap_or_default(), &[200, 502, 503]),
        "A in flight at a transition: 200, 502 or 503 only: {report}"
    );

    let dead = load_state.counts("a", Phase::BackendADead);
    assert!(only(&dead, &[502, 503]), "a dead backend answers 502 or 503: {report}");
    assert!(total(&dead) >= 5, "A was under load while dead: {report}");
    let restarted = load_state.counts("a", Phase::BackendARestarted);
    assert!(only(&restarted, &[200, 502, 503]), "until it is tried again, 502 or 503: {report}");
    for phase in [Phase::Steady, Phase::BackendARecovered, Phase::ApiServerDown, Phase::ApiServerRestored] {
        let counts = load_state.counts("a", phase);
        assert!(only(&counts, &[200]), "A serves again ({phase:?}): {report}");
        assert!(total(&counts) >= 5, "A was under load in {phase:?}: {report}");
    }
}
