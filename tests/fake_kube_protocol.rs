//! The fake Kubernetes API server (tests/common/fake_kube.rs) speaks the protocol the real `kube`
//! client expects: list+watch with resourceVersions, paging, label and field selectors with
//! selector transitions, bookmarks, 410 Gone and relist, stop/restart recovery, the status
//! subresource, and Events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fmt::Debug;
use std::time::Duration;

use common::fake_kube::FakeKube;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

const DEADLINE: Duration = Duration::from_secs(15);

async fn client(fake: &FakeKube, dir: &std::path::Path) -> Client {
    let path = fake.kubeconfig(dir);
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(config).unwrap()
}

fn ingress(name: &str, labels: Value, host: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": { "name": name, "namespace": "default", "labels": labels },
        "spec": { "rules": [{ "host": host }] },
    })
}

fn secret(name: &str, type_: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name, "namespace": "default" },
        "type": type_,
        "data": { "tls.crt": "", "tls.key": "" },
    })
}

fn host(ing: &Ingress) -> String {
    ing.spec.as_ref().and_then(|s| s.rules.as_ref()).and_then(|r| r[0].host.clone()).unwrap_or_default()
}

/// A reflector fed by a real `kube` watcher (with the default backoff), and a log of what the
/// watcher emitted, so tests can wait for states with a deadline and report what happened.
struct Watched<K: Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: Store<K>,
    events: mpsc::UnboundedReceiver<String>,
    log: Vec<String>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Watched<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn start(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        let (tx, events) = mpsc::unbounded_channel();
        let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let line = match event {
                    Ok(watcher::Event::Init) => "init".to_string(),
                    Ok(watcher::Event::InitApply(o)) => format!("init-apply {}", o.name_any()),
                    Ok(watcher::Event::InitDone) => "init-done".to_string(),
                    Ok(watcher::Event::Apply(o)) => {
                        format!("apply {} rv={}", o.name_any(), o.resource_version().unwrap_or_default())
                    }
                    Ok(watcher::Event::Delete(o)) => format!("delete {}", o.name_any()),
                    Err(e) => format!("error {e}"),
                };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { store, events, log: Vec::new(), task }
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.store.state().iter().map(|o| o.name_any()).collect();
        names.sort();
        names
    }

    fn get(&self, name: &str) -> Option<K> {
        self.store.state().into_iter().find(|o| o.name_any() == name).map(|o| (*o).clone())
    }

    /// Waits until `pred` holds on the store, re-checking after every watcher event.
    async fn wait(&mut self, what: &str, pred: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let ready = matches!(self.store.wait_until_ready().now_or_never(), Some(Ok(())));
            if ready && pred(self) {
                return;
            }
            match timeout(deadline.saturating_duration_since(Instant::now()), self.events.recv()).await {
                Ok(Some(line)) => self.log.push(line),
                Ok(None) => panic!("watcher ended while waiting for {what}; events: {:#?}", self.log),
                Err(_) => panic!("timed out waiting for {what}; store: {:?}; events: {:#?}", self.names(), self.log),
            }
        }
    }

    /// Waits for a watcher event line starting with `prefix`.
    async fn wait_event(&mut self, prefix: &str) -> String {
        if let Some(line) = self.log.iter().find(|l| l.starts_with(prefix)) {
            return line.clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            match timeout(deadline.saturating_duration_since(Instant::now()), self.events.recv()).await {
                Ok(Some(line)) => {
                    self.log.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Ok(None) => panic!("watcher ended while waiting for {prefix:?}; events: {:#?}", self.log),
                Err(_) => panic!("timed out waiting for {prefix:?}; events: {:#?}", self.log),
            }
        }
    }

    fn clear_log(&mut self) {
        while let Ok(line) = self.events.try_recv() {
            self.log.push(line);
        }
        self.log.clear();
    }
}

impl<K: Resource + Clone + 'static> Drop for Watched<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_watch_see_create_update_delete() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.apply(ingress("a", json!({}), "a.example"));
    let client = client(&fake, dir.path()).await;
    let api: Api<Ingress> = Api::all(client.clone());
    let mut w = Watched::start(api.clone(), watcher::Config::default());
    w.wait("a listed", |w| w.names() == ["a"]).await;

    // The object carries server-owned metadata.
    let a = w.get("a").unwrap();
    assert!(a.metadata.uid.is_some(), "{a:?}");
    assert!(a.metadata.creation_timestamp.is_some(), "{a:?}");
    assert_eq!(a.metadata.generation, Some(1));
    let rv_a: u64 = a.metadata.resource_version.clone().unwrap().parse().unwrap();

    fake.apply(ingress("b", json!({}), "b.example"));
    w.wait("b added", |w| w.names() == ["a", "b"]).await;
    fake.apply(ingress("a", json!({}), "a2.example"));
    w.wait("a modified", |w| w.get("a").is_some_and(|a| host(&a) == "a2.example")).await;
    let a2 = w.get("a").unwrap();
    assert_eq!(a2.metadata.uid, a.metadata.uid, "uid kept on update");
    assert_eq!(a2.metadata.creation_timestamp, a.metadata.creation_timestamp);
    assert_eq!(a2.metadata.generation, Some(2), "spec change bumps generation");
    assert!(a2.resource_version().unwrap().parse::<u64>().unwrap() > rv_a);
    fake.delete("Ingress", "default", "a");
    w.wait("a deleted", |w| w.names() == ["b"]).await;
    w.wait_event("delete a").await;

    // The watcher listed with limit=500 and then watched from the list's resourceVersion with
    // bookmarks.
    let requests = fake.requests();
    assert!(requests.iter().any(|r| r == "GET /apis/networking.k8s.io/v1/ingresses?limit=500"), "{requests:#?}");
    assert!(
        requests.iter().any(|r| r.starts_with("GET /apis/networking.k8s.io/v1/ingresses?watch=true")
            && r.contains("resourceVersion=1")
            && r.contains("allowWatchBookmarks=true")),
        "{requests:#?}"
    );

    // Plain GET and a 404 with a Status the client understands.
    assert_eq!(host(&Api::<Ingress>::namespaced(client.clone(), "default").get("b").await.unwrap()), "b.example");
    match Api::<Ingress>::namespaced(client.clone(), "default").get("a").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 404);
            assert_eq!(status.reason, "NotFound");
        }
        other => panic!("expected 404, got {other:?}"),
    }
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_list_and_namespaced_api() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..5 {
        fake.apply(ingress(&format!("i{i}"), json!({}), "x.example"));
    }
    let mut other = ingress("elsewhere", json!({}), "x.example");
    other["metadata"]["namespace"] = json!("other");
    fake.apply(other);
    let client = client(&fake, dir.path()).await;

    let mut w = Watched::start(Api::<Ingress>::all(client.clone()), watcher::Config::default().page_size(2));
    w.wait("all listed in pages", |w| w.names().len() == 6).await;
    let continued = fake.requests().iter().filter(|r| r.contains("continue=")).count();
    assert_eq!(continued, 2, "{:#?}", fake.requests());

    let ns: Api<Ingress> = Api::namespaced(client.clone(), "other");
    let list = ns.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.iter().map(|i| i.name_any()).collect::<Vec<_>>(), ["elsewhere"]);
    let fields = Api::<Ingress>::all(client).list(&ListParams::default().fields("metadata.name=i3")).await.unwrap();
    assert_eq!(fields.items.len(), 1);
    assert_eq!(fields.items[0].name_any(), "i3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selector_filters_and_transitions() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.apply(ingress("a", json!({ "app": "traefik" }), "a.example"));
    fake.apply(ingress("b", json!({ "app": "other" }), "b.example"));
    fake.apply(ingress("c", json!({}), "c.example"));
    let client = client(&fake, dir.path()).await;
    let api: Api<Ingress> = Api::all(client);
    let mut w = Watched::start(api.clone(), watcher::Config::default().labels("app=traefik"));
    w.wait("only a listed", |w| w.names() == ["a"]).await;

    // b starts matching: the watch sends it as ADDED.
    fake.apply(ingress("b", json!({ "app": "traefik" }), "b.example"));
    w.wait("b appears", |w| w.names() == ["a", "b"]).await;
    // a stops matching: the watch sends it as DELETED.
    fake.apply(ingress("a", json!({ "app": "other" }), "a.example"));
    w.wait("a disappears", |w| w.names() == ["b"]).await;
    w.wait_event("delete a").await;
    // Changes to non-matching objects are not sent.
    w.clear_log();
    fake.apply(ingress("c", json!({ "x": "y" }), "c2.example"));
    fake.apply(ingress("b", json!({ "app": "traefik" }), "b2.example"));
    w.wait("b modified", |w| w.get("b").is_some_and(|b| host(&b) == "b2.example")).await;
    assert!(!w.log.iter().any(|l| l.contains(" c")), "{:#?}", w.log);

    assert!(fake.requests().iter().any(|r| r.contains("watch=true") && r.contains("labelSelector=app=traefik")));
    // Set-based selectors through a plain list.
    let list = api.list(&ListParams::default().labels("app in (traefik,other),app!=other")).await.unwrap();
    assert_eq!(list.items.iter().map(|i| i.name_any()).collect::<Vec<_>>(), ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_selector_on_secret_type() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.apply(secret("tls", "kubernetes.io/tls"));
    fake.apply(secret("opaque", "Opaque"));
    let client = client(&fake, dir.path()).await;
    let api: Api<Secret> = Api::all(client);
    let mut w = Watched::start(api.clone(), watcher::Config::default().fields("type=kubernetes.io/tls"));
    w.wait("only the TLS secret", |w| w.names() == ["tls"]).await;
    fake.apply(secret("tls2", "kubernetes.io/tls"));
    fake.apply(secret("opaque2", "Opaque"));
    w.wait("tls2 added", |w| w.names() == ["tls", "tls2"]).await;
    fake.delete("Secret", "default", "tls");
    w.wait("tls deleted", |w| w.names() == ["tls2"]).await;
    assert!(!w.log.iter().any(|l| l.contains("opaque")), "{:#?}", w.log);

    let not_tls = api.list(&ListParams::default().fields("type!=kubernetes.io/tls,metadata.namespace=default")).await;
    let mut names: Vec<String> = not_tls.unwrap().items.iter().map(|s| s.name_any()).collect();
    names.sort();
    assert_eq!(names, ["opaque", "opaque2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_after_compaction_makes_the_watcher_relist() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.apply(ingress("a", json!({}), "a.example"));
    let client = client(&fake, dir.path()).await;
    let api: Api<Ingress> = Api::all(client);

    // A watch from a resourceVersion older than the compaction gets one ERROR 410 and ends.
    fake.apply(ingress("b", json!({}), "b.example"));
    fake.compact();
    let stream = api.watch(&WatchParams::default().timeout(10), "1").await.unwrap();
    let events: Vec<WatchEvent<Ingress>> =
        timeout(DEADLINE, stream.try_collect()).await.expect("the stream ends").unwrap();
    match events.as_slice() {
        [WatchEvent::Error(status)] => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected one ERROR event, got {other:?}"),
    }

    let lists = || fake.requests().iter().filter(|r| !r.contains("watch=")).count();
    let mut w = Watched::start(api.clone(), watcher::Config::default());
    w.wait("listed", |w| w.names() == ["a", "b"]).await;
    w.wait_event("init-done").await;

    // expire_watches: an ERROR 410 on the open watch; the watcher relists.
    assert!(fake.wait_for(DEADLINE, |f| f.open_watches() == 1).await);
    let before = lists();
    w.clear_log();
    fake.expire_watches();
    let error = w.wait_event("error").await;
    assert!(error.contains("Expired"), "{error}");
    w.wait_event("init-done").await;
    assert_eq!(lists(), before + 1, "{:#?}", fake.requests());

    // Compaction while the watcher is cut off: resuming from its resourceVersion gets 410, so it
    // relists and sees what changed.
    assert!(fake.wait_for(DEADLINE, |f| f.open_watches() == 1).await);
    fake.stop().await;
    fake.apply(ingress("c", json!({}), "c.example"));
    fake.delete("Ingress", "default", "a");
    fake.compact();
    w.clear_log();
    let before = lists();
    fake.restart().await;
    w.wait("relisted and continued", |w| w.names() == ["b", "c"]).await;
    assert!(w.log.iter().any(|l| l.contains("Expired")), "{:#?}", w.log);
    assert_eq!(lists(), before + 1, "{:#?}", fake.requests());
    fake.apply(ingress("d", json!({}), "d.example"));
    w.wait("watching again", |w| w.names() == ["b", "c", "d"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_recovers_from_stop_and_restart() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.apply(ingress("a", json!({}), "a.example"));
    fake.apply(ingress("b", json!({}), "b.example"));
    let client = client(&fake, dir.path()).await;
    let api: Api<Ingress> = Api::all(client.clone());
    let mut w = Watched::start(api, watcher::Config::default());
    w.wait("listed", |w| w.names() == ["a", "b"]).await;
    assert!(fake.wait_for(DEADLINE, |f| f.open_watches() == 1).await);

    fake.stop().await;
    assert_eq!(fake.open_watches(), 0, "stop ends every watch");
    assert!(client.apiserver_version().await.is_err(), "the server is down");
    fake.delete("Ingress", "default", "a");
    fake.apply(ingress("b", json!({}), "b2.example"));
    fake.apply(ingress("c", json!({}), "c.example"));
    // The watcher notices the outage (its watch ended, reconnecting fails) before the restart.
    w.wait_event("error").await;

    fake.restart().await;
    w.wait("changes made while down", |w| {
        w.names() == ["b", "c"] && w.get("b").is_some_and(|b| host(&b) == "b2.example")
    })
    .await;
    fake.apply(ingress("d", json!({}), "d.example"));
    w.wait("changes after the restart", |w| w.names() == ["b", "c", "d"]).await;
    assert_eq!(client.apiserver_version().await.unwrap().major, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_patch_and_replace() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.apply(ingress("a", json!({}), "a.example"));
    let client = client(&fake, dir.path()).await;
    let api: Api<Ingress> = Api::namespaced(client, "default");
    let mut w = Watched::start(api.clone(), watcher::Config::default());
    w.wait("listed", |w| w.names() == ["a"]).await;
    let before = fake.get("Ingress", "default", "a").unwrap();

    let status = json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "10.0.0.1" }] } } });
    let patched = api.patch_status("a", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let ip = |i: &Ingress| {
        i.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|l| l.iter().filter_map(|x| x.ip.clone()).collect::<Vec<_>>())
    };
    assert_eq!(ip(&patched), Some(vec!["10.0.0.1".to_string()]));
    w.wait("status seen by the watcher", |w| w.get("a").is_some_and(|a| ip(&a) == Some(vec!["10.0.0.1".to_string()])))
        .await;
    w.wait_event("apply a").await;
    let after = fake.get("Ingress", "default", "a").unwrap();
    assert_eq!(after["spec"], before["spec"], "only status changes");
    assert_eq!(after["metadata"]["generation"], before["metadata"]["generation"]);
    assert_ne!(after["metadata"]["resourceVersion"], before["metadata"]["resourceVersion"]);

    // The same patch again changes nothing: no new resourceVersion.
    let rv = fake.resource_version();
    api.patch_status("a", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    assert_eq!(fake.resource_version(), rv);

    // Server-side apply and replace of the status.
    let apply = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "status": { "loadBalancer": { "ingress": [{ "ip": "10.0.0.2" }] } },
    });
    let applied = api.patch_status("a", &PatchParams::apply("portier"), &Patch::Apply(&apply)).await.unwrap();
    assert_eq!(ip(&applied), Some(vec!["10.0.0.2".to_string()]));
    let mut current = api.get("a").await.unwrap();
    current.status.as_mut().unwrap().load_balancer.as_mut().unwrap().ingress.as_mut().unwrap()[0].ip =
        Some("10.0.0.3".into());
    current.spec = None; // ignored by the status subresource
    let replaced = api.replace_status("a", &PostParams::default(), &current).await.unwrap();
    assert_eq!(ip(&replaced), Some(vec!["10.0.0.3".to_string()]));
    assert_eq!(host(&replaced), "a.example");
    w.wait("replaced status seen", |w| w.get("a").is_some_and(|a| ip(&a) == Some(vec!["10.0.0.3".to_string()]))).await;

    // A stale resourceVersion is a conflict; a main-resource update keeps the status.
    let mut stale = current.clone();
    stale.metadata.resource_version = Some("1".into());
    match api.replace_status("a", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409),
        other => panic!("expected a conflict, got {other:?}"),
    }
    let spec = json!({ "spec": { "rules": [{ "host": "new.example" }] }, "status": null });
    let updated = api.patch("a", &PatchParams::default(), &Patch::Merge(&spec)).await.unwrap();
    assert_eq!(host(&updated), "new.example");
    assert_eq!(ip(&updated), Some(vec!["10.0.0.3".to_string()]));
    assert_eq!(updated.metadata.generation, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_created_and_listed() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let stored = fake.apply(ingress("a", json!({}), "a.example"));
    let client = client(&fake, dir.path()).await;
    let reference = ObjectReference {
        api_version: Some("networking.k8s.io/v1".into()),
        kind: Some("Ingress".into()),
        name: Some("a".into()),
        namespace: Some("default".into()),
        uid: stored["metadata"]["uid"].as_str().map(str::to_string),
        ..Default::default()
    };
    let event = CoreEvent {
        metadata: kube::api::ObjectMeta { generate_name: Some("a.".into()), ..Default::default() },
        involved_object: reference.clone(),
        reason: Some("BadAnnotation".into()),
        message: Some("refused".into()),
        type_: Some("Warning".into()),
        count: Some(1),
        ..Default::default()
    };
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let created = events.create(&PostParams::default(), &event).await.unwrap();
    assert!(created.name_any().starts_with("a."), "{created:?}");
    let listed = fake.list("Event");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["reason"], "BadAnnotation");
    assert_eq!(listed[0]["involvedObject"]["name"], "a");
    assert_eq!(listed[0]["type"], "Warning");

    // Patch the count, as event recorders do for repeats; a field selector finds it.
    events.patch(&created.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "count": 2 }))).await.unwrap();
    assert_eq!(fake.get("Event", "default", &created.name_any()).unwrap()["count"], 2);
    let found = events.list(&ListParams::default().fields("involvedObject.name=a,reason=BadAnnotation")).await;
    assert_eq!(found.unwrap().items.len(), 1);

    // kube's own recorder writes events.k8s.io/v1 Events.
    let recorder = kube::runtime::events::Recorder::new(client, "portier".into());
    let ev = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "MissingService".into(),
        note: Some("no such service".into()),
        action: "Refused".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    let listed = fake.list("Event");
    assert_eq!(listed.len(), 2, "{listed:#?}");
    assert!(listed.iter().any(|e| e["reason"] == "MissingService" && e["apiVersion"] == "events.k8s.io/v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_timeout_and_streaming_lists() {
    let fake = FakeKube::start().await;
    fake.set_bookmark_interval(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    fake.apply(ingress("a", json!({}), "a.example"));
    let client = client(&fake, dir.path()).await;
    let api: Api<Ingress> = Api::all(client.clone());
    let rv = fake.resource_version().to_string();

    // A raw watch: bookmarks at the current resourceVersion, live events, end at timeoutSeconds.
    let started = Instant::now();
    let mut stream = api.watch(&WatchParams::default().timeout(2), &rv).await.unwrap().boxed();
    match timeout(DEADLINE, stream.try_next()).await.unwrap().unwrap() {
        Some(WatchEvent::Bookmark(b)) => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    fake.apply(ingress("b", json!({}), "b.example"));
    let rest: Vec<WatchEvent<Ingress>> =
        timeout(DEADLINE, stream.try_collect()).await.expect("the watch ends at timeoutSeconds").unwrap();
    let added: Vec<String> = rest
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Added(i) => Some(i.name_any()),
            WatchEvent::Bookmark(_) => None,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(added, ["b"]);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10), "{elapsed:?}");

    // Without bookmarks there are none.
    let stream = api.watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv).await.unwrap().boxed();
    let seen: Vec<WatchEvent<Ingress>> = timeout(DEADLINE, stream.try_collect()).await.unwrap().unwrap();
    assert_eq!(seen.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>(), ["Added event"]);

    // The streaming-list strategy: initial ADDED events, then the initial-events-end bookmark.
    let mut w = Watched::start(api, watcher::Config::default().streaming_lists());
    w.wait("streamed", |w| w.names() == ["a", "b"]).await;
    w.wait_event("init-done").await;
    fake.apply(ingress("c", json!({}), "c.example"));
    w.wait("c", |w| w.names() == ["a", "b", "c"]).await;
    assert!(fake.requests().iter().any(|r| r.contains("sendInitialEvents=true")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_yaml_and_creation_semantics() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let applied = fake.apply_yaml(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: ExternalName\n  externalName: \
         example.org\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: other\ntype: Opaque\n",
    );
    assert_eq!(applied.len(), 2);
    assert_eq!(fake.get("Service", "default", "web").unwrap()["spec"]["externalName"], "example.org");
    assert_eq!(fake.list("Secret").len(), 1);
    let t0 = applied[0]["metadata"]["creationTimestamp"].as_str().unwrap().to_string();
    let t1 = applied[1]["metadata"]["creationTimestamp"].as_str().unwrap().to_string();
    assert_eq!(t0, "2026-01-01T00:00:00Z");
    assert!(t1 > t0);

    let client = client(&fake, dir.path()).await;
    let api: Api<Ingress> = Api::namespaced(client, "default");
    let body: Ingress = serde_json::from_value(ingress("x", json!({}), "x.example")).unwrap();
    let created = api.create(&PostParams::default(), &body).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    match api.create(&PostParams::default(), &body).await {
        Err(kube::Error::Api(status)) => assert_eq!((status.code, status.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let deleted = api.delete("x", &Default::default()).await.unwrap();
    assert!(deleted.is_left());
    assert!(fake.get("Ingress", "default", "x").is_none());
}
