//! **Test double**: a protocol-level fake Kubernetes API server, for driving the real `kube` client
//! (`kube::Client`, `kube::runtime::watcher`, reflectors, `Api::patch_status`, event recorders)
//! over real HTTP on 127.0.0.1 without a cluster. It is not a Kubernetes implementation: there is
//! no admission, no validation beyond what the tests need, no authentication, no garbage
//! collection, no server-side-apply field ownership.
//!
//! What it implements:
//! - Storage: objects are `serde_json::Value`s keyed by (resource, namespace, name). One global,
//!   monotonically increasing resourceVersion (a decimal string in `metadata.resourceVersion`);
//!   every create, update, delete and status write bumps it and appends a watch event (with the
//!   previous object, for selector transitions) to a history log. Create sets `metadata.uid`,
//!   `metadata.creationTimestamp` (`2026-01-01T00:00:00Z` plus one second per created object, so
//!   ordering is stable) and, for kinds that have it, `metadata.generation`; updates keep uid and
//!   creationTimestamp and bump generation when `spec` changes. Writes through the HTTP API that
//!   change nothing are no-ops (no new resourceVersion, no event), as on a real API server; writes
//!   through the handle ([`FakeKube::apply`]) always record an event.
//! - Resources (all namespaced): `ingresses` (networking.k8s.io/v1), `services`, `secrets`,
//!   `events`, `configmaps`, `pods` (core v1), `endpointslices` (discovery.k8s.io/v1), `events`
//!   (events.k8s.io/v1, what `kube::runtime::events::Recorder` writes). Paths: cluster-wide
//!   `/<prefix>/<plural>`, namespaced `/<prefix>/namespaces/<ns>/<plural>`, objects
//!   `/<prefix>/namespaces/<ns>/<plural>/<name>` and the `/status` subresource for ingresses,
//!   services and pods.
//! - Verbs: LIST and WATCH on collections; POST create (with `metadata.generateName`, 201, 409
//!   AlreadyExists); GET; PUT replace (409 Conflict on a stale `metadata.resourceVersion`; the
//!   main resource keeps the old `.status` for kinds with a status subresource); PATCH with
//!   `application/merge-patch+json`, `application/strategic-merge-patch+json` (treated as a
//!   merge patch: lists are replaced, not merged by key), `application/apply-patch+yaml`
//!   (server-side apply approximated as a merge patch; creates the object when missing) and
//!   `application/json-patch+json` (add/remove/replace/test/copy/move); DELETE (200 with the
//!   object). `/status` PUT and PATCH change only `.status`.
//! - LIST: `{"kind":"<Kind>List","apiVersion":..,"metadata":{"resourceVersion":..},"items":[..]}`
//!   with `apiVersion`/`kind` on every item, sorted by namespace/name. `labelSelector` (evaluated
//!   with `portier::selector::LabelSelector`), `fieldSelector` (`=`, `==`, `!=`, comma-joined, any
//!   dotted path such as `metadata.name`, `metadata.namespace`, `type`, `involvedObject.name`).
//!   `limit`/`continue` are honoured, because kube's watcher pages its initial list with
//!   `limit=500`: later pages are served from the current state, with the first page's
//!   resourceVersion, and a continue token older than a [`FakeKube::compact`] gets 410 Expired.
//! - WATCH (`watch=true|1`): HTTP 200, `application/json`, chunked, one
//!   `{"type":..,"object":..}` per line. With `resourceVersion=N` (N > 0) the history after N is
//!   replayed, then events stream live; without one (or `0`) every current object is sent as
//!   ADDED first; `sendInitialEvents=true` adds the `k8s.io/initial-events-end` BOOKMARK after them
//!   (streaming lists). Selector transitions: an object that stops matching is sent as DELETED (its
//!   previous content with the new resourceVersion), one that starts matching as ADDED. A
//!   resourceVersion older than the last [`FakeKube::compact`] gets one ERROR event with a 410
//!   Expired `Status` and the stream ends. `allowWatchBookmarks=true` gets a BOOKMARK with the
//!   current resourceVersion every [`FakeKube::set_bookmark_interval`] (500 ms by default).
//!   `timeoutSeconds` ends the stream (default 1800 s).
//! - `GET /version`, `/healthz`, `/readyz`, `/livez`, minimal discovery (`/api`, `/apis`,
//!   `/api/v1`, `/apis/<group>/<version>`); anything else is a 404 `Status`.
//! - Control from tests: [`FakeKube::stop`] closes the listener and every open connection (watch
//!   streams end abruptly), [`FakeKube::restart`] listens again on the same port keeping all
//!   objects and history, [`FakeKube::expire_watches`] ends every watch with a 410 ERROR event,
//!   [`FakeKube::requests`] is a log of the requests received.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portier::selector::LabelSelector;
use serde_json::{json, Map, Value};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Default `timeoutSeconds` of a watch that does not send one.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

// ---------------------------------------------------------------- resource table

#[derive(Debug)]
struct ResourceType {
    kind: &'static str,
    api_version: &'static str,
    /// URL prefix: `/api/v1` or `/apis/<group>/<version>`.
    prefix: &'static str,
    plural: &'static str,
    status_subresource: bool,
    generation: bool,
}

const RESOURCES: &[ResourceType] = &[
    ResourceType {
        kind: "Ingress",
        api_version: "networking.k8s.io/v1",
        prefix: "/apis/networking.k8s.io/v1",
        plural: "ingresses",
        status_subresource: true,
        generation: true,
    },
    ResourceType {
        kind: "Service",
        api_version: "v1",
        prefix: "/api/v1",
        plural: "services",
        status_subresource: true,
        generation: false,
    },
    ResourceType {
        kind: "Secret",
        api_version: "v1",
        prefix: "/api/v1",
        plural: "secrets",
        status_subresource: false,
        generation: false,
    },
    ResourceType {
        kind: "EndpointSlice",
        api_version: "discovery.k8s.io/v1",
        prefix: "/apis/discovery.k8s.io/v1",
        plural: "endpointslices",
        status_subresource: false,
        generation: true,
    },
    ResourceType {
        kind: "Event",
        api_version: "v1",
        prefix: "/api/v1",
        plural: "events",
        status_subresource: false,
        generation: false,
    },
    ResourceType {
        kind: "Event",
        api_version: "events.k8s.io/v1",
        prefix: "/apis/events.k8s.io/v1",
        plural: "events",
        status_subresource: false,
        generation: false,
    },
    ResourceType {
        kind: "ConfigMap",
        api_version: "v1",
        prefix: "/api/v1",
        plural: "configmaps",
        status_subresource: false,
        generation: false,
    },
    ResourceType {
        kind: "Pod",
        api_version: "v1",
        prefix: "/api/v1",
        plural: "pods",
        status_subresource: true,
        generation: true,
    },
];

/// Resource indexes for a kind as tests name it: `Ingress`, `ingresses`, `Event` (both event
/// APIs), `events.k8s.io/Event` or `v1/Event` (one of them). Case-insensitive.
fn resources_named(kind: &str) -> Vec<usize> {
    let (api_version, kind) = match kind.rsplit_once('/') {
        Some((group, kind)) => (Some(group), kind),
        None => (None, kind),
    };
    RESOURCES
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind.eq_ignore_ascii_case(kind) || r.plural.eq_ignore_ascii_case(kind))
        .filter(|(_, r)| api_version.is_none_or(|v| r.api_version == v || r.api_version.split('/').next() == Some(v)))
        .map(|(i, _)| i)
        .collect()
}

fn resource_for_object(object: &Value) -> Option<usize> {
    let kind = object.get("kind")?.as_str()?;
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    RESOURCES.iter().position(|r| r.kind == kind && api_version.is_none_or(|v| v == r.api_version))
}

// ---------------------------------------------------------------- storage

type Key = (usize, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

struct HistoryEntry {
    rv: u64,
    res: usize,
    kind: EventType,
    object: Value,
    /// The object before a MODIFIED, for label/field selector transitions.
    previous: Option<Value>,
}

struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: Vec<HistoryEntry>,
    /// Watches and continue tokens from a resourceVersion below this get 410 Expired.
    compacted_at: u64,
    created: u64,
    generated_names: u64,
    requests: Vec<String>,
    bookmark_interval: Duration,
}

/// An API error, rendered as a `Status` object.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into() }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    fn not_found(res: usize, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", RESOURCES[res].plural))
    }
    fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

fn too_old() -> ApiError {
    ApiError::expired("too old resource version")
}

fn meta(object: &Value, field: &str) -> Option<String> {
    object.get("metadata")?.get(field)?.as_str().map(str::to_string)
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    let map = object.as_object_mut().unwrap();
    let metadata = map.entry("metadata").or_insert_with(|| json!({}));
    if !metadata.is_object() {
        *metadata = json!({});
    }
    metadata.as_object_mut().unwrap()
}

fn set_rv(object: &mut Value, rv: u64) {
    meta_mut(object).insert("resourceVersion".into(), Value::String(rv.to_string()));
}

fn labels(object: &Value) -> BTreeMap<String, String> {
    object
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// `2026-01-01T00:00:00Z` plus `seconds`.
fn timestamp(seconds: u64) -> String {
    // Days since 1970-01-01 of 2026-01-01.
    const BASE_DAYS: u64 = 20454;
    let days = BASE_DAYS + seconds / 86400;
    let secs = seconds % 86400;
    // Civil-from-days (Howard Hinnant's algorithm), for dates after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

impl Store {
    fn new() -> Self {
        Self {
            objects: BTreeMap::new(),
            rv: 0,
            history: Vec::new(),
            compacted_at: 0,
            created: 0,
            generated_names: 0,
            requests: Vec::new(),
            bookmark_interval: Duration::from_millis(500),
        }
    }

    /// Appends an event with a new resourceVersion and applies it to the object map.
    fn record(&mut self, res: usize, kind: EventType, mut object: Value, previous: Option<Value>) -> Value {
        self.rv += 1;
        set_rv(&mut object, self.rv);
        let key = (res, meta(&object, "namespace").unwrap_or_default(), meta(&object, "name").unwrap_or_default());
        match kind {
            EventType::Deleted => {
                self.objects.remove(&key);
            }
            _ => {
                self.objects.insert(key, object.clone());
            }
        }
        self.history.push(HistoryEntry { rv: self.rv, res, kind, object: object.clone(), previous });
        object
    }

    /// Fills in what the server owns on a new object.
    fn prepare_create(&mut self, res: usize, namespace: &str, object: &mut Value) -> Result<(), ApiError> {
        let r = &RESOURCES[res];
        if !object.is_object() {
            return Err(ApiError::bad_request("the body is not an object"));
        }
        let map = object.as_object_mut().unwrap();
        map.insert("apiVersion".into(), Value::String(r.api_version.into()));
        map.insert("kind".into(), Value::String(r.kind.into()));
        let created = self.created;
        let generated_name = match (meta(object, "name").filter(|n| !n.is_empty()), meta(object, "generateName")) {
            (Some(_), _) => None,
            (None, Some(prefix)) => loop {
                let name = format!("{prefix}{}", generated_suffix(self.generated_names));
                self.generated_names += 1;
                if !self.objects.contains_key(&(res, namespace.to_string(), name.clone())) {
                    break Some(name);
                }
            },
            (None, None) => return Err(ApiError::new(422, "Invalid", "name or generateName is required")),
        };
        let m = meta_mut(object);
        match m.get("namespace").and_then(Value::as_str) {
            Some(ns) if ns != namespace => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({ns}) does not match the namespace sent on the request \
                     ({namespace})"
                )))
            }
            _ => {
                m.insert("namespace".into(), Value::String(namespace.into()));
            }
        }
        if let Some(name) = generated_name {
            m.insert("name".into(), Value::String(name));
        }
        m.insert("uid".into(), Value::String(format!("00000000-0000-4000-8000-{:012x}", created + 1)));
        m.insert("creationTimestamp".into(), Value::String(timestamp(created)));
        if r.generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        m.remove("resourceVersion");
        m.remove("deletionTimestamp");
        self.created += 1;
        Ok(())
    }

    fn create(&mut self, res: usize, namespace: &str, mut object: Value) -> Result<Value, ApiError> {
        self.prepare_create(res, namespace, &mut object)?;
        let name = meta(&object, "name").unwrap_or_default();
        if self.objects.contains_key(&(res, namespace.to_string(), name.clone())) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", RESOURCES[res].plural),
            ));
        }
        Ok(self.record(res, EventType::Added, object, None))
    }

    /// Replaces an existing object with `new`, keeping what the server owns. `always` records an
    /// event even when nothing changed (the test handle); API writes that change nothing are
    /// no-ops.
    fn update(&mut self, key: &Key, mut new: Value, keep_status: bool, always: bool) -> Result<Value, ApiError> {
        let (res, namespace, name) = key;
        let r = &RESOURCES[*res];
        let Some(old) = self.objects.get(key).cloned() else {
            return Err(ApiError::not_found(*res, name));
        };
        if !new.is_object() {
            return Err(ApiError::bad_request("the body is not an object"));
        }
        let old_rv = meta(&old, "resourceVersion").unwrap_or_default();
        if let Some(rv) = meta(&new, "resourceVersion").filter(|rv| !rv.is_empty()) {
            if rv != old_rv {
                return Err(ApiError::new(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply \
                         your changes to the latest version and try again",
                        r.plural
                    ),
                ));
            }
        }
        if meta(&new, "name").is_some_and(|n| &n != name) {
            return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
        }
        if meta(&new, "namespace").is_some_and(|n| &n != namespace) {
            return Err(ApiError::bad_request("the namespace of the object does not match the namespace on the URL"));
        }
        {
            let map = new.as_object_mut().unwrap();
            map.insert("apiVersion".into(), Value::String(r.api_version.into()));
            map.insert("kind".into(), Value::String(r.kind.into()));
            if keep_status {
                match old.get("status") {
                    Some(status) => map.insert("status".into(), status.clone()),
                    None => map.remove("status"),
                };
            }
        }
        let generation = old.get("metadata").and_then(|m| m.get("generation")).and_then(Value::as_i64);
        let spec_changed = old.get("spec") != new.get("spec");
        let m = meta_mut(&mut new);
        m.insert("name".into(), Value::String(name.clone()));
        m.insert("namespace".into(), Value::String(namespace.clone()));
        for field in ["uid", "creationTimestamp"] {
            match old.get("metadata").and_then(|o| o.get(field)) {
                Some(v) => m.insert(field.into(), v.clone()),
                None => m.remove(field),
            };
        }
        match generation {
            Some(g) if r.generation => m.insert("generation".into(), json!(if spec_changed { g + 1 } else { g })),
            _ => m.remove("generation"),
        };
        m.insert("resourceVersion".into(), Value::String(old_rv));
        if new == old && !always {
            return Ok(old);
        }
        Ok(self.record(*res, EventType::Modified, new, Some(old)))
    }

    fn delete(&mut self, key: &Key) -> Option<Value> {
        let old = self.objects.get(key)?.clone();
        Some(self.record(key.0, EventType::Deleted, old, None))
    }
}

fn generated_suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    // A fixed-width, stable, non-sequential-looking suffix like the API server's 5 characters.
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ n;
    let mut out = String::new();
    for _ in 0..5 {
        out.push(ALPHABET[(x % ALPHABET.len() as u64) as usize] as char);
        x /= ALPHABET.len() as u64;
    }
    out
}

// ---------------------------------------------------------------- selectors

#[derive(Clone, Debug, Default)]
struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: Vec<(String, bool, String)>,
}

fn field_value(object: &Value, path: &str) -> String {
    let mut v = object;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Filter {
    fn from_query(namespace: Option<&str>, query: &[(String, String)]) -> Result<Self, ApiError> {
        let labels = match query_get(query, "labelSelector") {
            Some(s) => LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
            None => LabelSelector::everything(),
        };
        let mut fields = Vec::new();
        for term in query_get(query, "fieldSelector").unwrap_or_default().split(',') {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!("invalid field selector: {term:?}")));
            };
            fields.push((key.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(Self { namespace: namespace.map(str::to_string), labels, fields })
    }

    fn matches(&self, object: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if meta(object, "namespace").as_deref() != Some(ns.as_str()) {
                return false;
            }
        }
        self.labels.matches(Some(&labels(object)))
            && self.fields.iter().all(|(path, equal, value)| (field_value(object, path) == *value) == *equal)
    }
}

// ---------------------------------------------------------------- the handle

struct Shared {
    store: Mutex<Store>,
    /// The resourceVersion after every change, for watch streams.
    changes: watch::Sender<u64>,
    /// Bumped by [`FakeKube::expire_watches`].
    expiry: watch::Sender<u64>,
    /// Bumped on every change and every request, for [`FakeKube::wait_for`].
    activity: watch::Sender<u64>,
    open_watches: AtomicUsize,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the store and wakes watches if it changed anything.
    fn mutate<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let (out, rv) = {
            let mut store = self.store();
            let before = store.rv;
            let out = f(&mut store);
            (out, (store.rv != before).then_some(store.rv))
        };
        if let Some(rv) = rv {
            self.changes.send_replace(rv);
        }
        self.activity.send_modify(|n| *n += 1);
        out
    }
}

struct Server {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A running fake API server; see the module documentation.
pub struct FakeKube {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Mutex<Option<Server>>,
}

impl FakeKube {
    /// Starts a server on `127.0.0.1:0`.
    pub async fn start() -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the fake API server");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            changes: watch::channel(0).0,
            expiry: watch::channel(0).0,
            activity: watch::channel(0).0,
            open_watches: AtomicUsize::new(0),
        });
        let server = spawn_server(listener, shared.clone());
        FakeKube { shared, addr, server: Mutex::new(Some(server)) }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes `dir/kubeconfig` (cluster `fake` at [`Self::url`], context `fake` with namespace
    /// `default`, current-context `fake`, a user without credentials) and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: \
             fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: \
             fake\nusers:\n- name: fake\n  user: {{}}\npreferences: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// Creates or updates an object (ADDED or MODIFIED, always a new resourceVersion). The
    /// resource comes from `kind` (and `apiVersion` when it is set, which tells the two Event
    /// APIs apart); the namespace defaults to `default`. Server-owned metadata (uid,
    /// creationTimestamp, generation, resourceVersion) is set here; everything else, `status`
    /// included, is taken as given. Returns the stored object.
    pub fn apply(&self, object: Value) -> Value {
        let res = resource_for_object(&object).unwrap_or_else(|| panic!("fake kube: unknown kind in {object}"));
        let namespace = meta(&object, "namespace").unwrap_or_else(|| "default".into());
        let name = meta(&object, "name").unwrap_or_else(|| panic!("fake kube: no metadata.name in {object}"));
        let key = (res, namespace.clone(), name);
        self.shared.mutate(|store| {
            let mut object = object;
            meta_mut(&mut object).remove("resourceVersion");
            let result = if store.objects.contains_key(&key) {
                store.update(&key, object, false, true)
            } else {
                store.create(res, &namespace, object)
            };
            result.unwrap_or_else(|e| panic!("fake kube: apply failed: {}", e.message))
        })
    }

    /// [`Self::apply`] for each document of a YAML stream.
    pub fn apply_yaml(&self, yaml: &str) -> Vec<Value> {
        use serde::Deserialize;
        serde_yaml_ng::Deserializer::from_str(yaml)
            .map(|doc| Value::deserialize(doc).expect("fake kube: invalid YAML"))
            .filter(|v| !v.is_null())
            .map(|v| self.apply(v))
            .collect()
    }

    /// Deletes an object (DELETED); false when there was none.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.shared.mutate(|store| {
            resources_named(kind)
                .into_iter()
                .any(|res| store.delete(&(res, namespace.to_string(), name.to_string())).is_some())
        })
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store();
        resources_named(kind)
            .into_iter()
            .find_map(|res| store.objects.get(&(res, namespace.to_string(), name.to_string())).cloned())
    }

    /// Every object of a kind in every namespace, e.g. `list("Event")` (both event APIs),
    /// sorted by namespace and name within each API.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let store = self.shared.store();
        let kinds = resources_named(kind);
        store.objects.iter().filter(|((res, _, _), _)| kinds.contains(res)).map(|(_, v)| v.clone()).collect()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv
    }

    /// The interval between BOOKMARK events on watches that allow them (500 ms by default);
    /// applies to watches started afterwards.
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared.store().bookmark_interval = interval;
    }

    /// Closes the listener and every open connection; watch streams end abruptly (no final
    /// chunk). Objects and history are kept.
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap().take();
        if let Some(server) = server {
            let _ = server.shutdown.send(());
            let _ = server.task.await;
        }
    }

    /// Listens again on the same port (after [`Self::stop`]), with all objects and history.
    pub async fn restart(&self) {
        self.stop().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            let bound = TcpSocket::new_v4().and_then(|socket| {
                socket.set_reuseaddr(true)?;
                socket.bind(self.addr)?;
                socket.listen(1024)
            });
            match bound {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("fake kube: cannot listen on {} again: {e}", self.addr),
            }
        };
        *self.server.lock().unwrap() = Some(spawn_server(listener, self.shared.clone()));
    }

    /// Forgets the history: watches and continue tokens from an older resourceVersion get 410.
    pub fn compact(&self) {
        self.shared.mutate(|store| {
            store.history.clear();
            store.compacted_at = store.rv;
        });
    }

    /// Sends an ERROR 410 Expired event on every open watch and ends them.
    pub fn expire_watches(&self) {
        self.shared.expiry.send_modify(|n| *n += 1);
    }

    /// Watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// `METHOD path?query` of every request received, oldest first, with the query
    /// percent-decoded (`GET /apis/networking.k8s.io/v1/ingresses?labelSelector=app=traefik&limit=500`).
    pub fn requests(&self) -> Vec<String> {
        self.shared.store().requests.clone()
    }

    /// Waits until `pred` holds (re-checked on every change and request), at most `timeout`;
    /// returns whether it held.
    pub async fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&FakeKube) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut activity = self.shared.activity.subscribe();
        loop {
            activity.borrow_and_update();
            if pred(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let tick = Instant::now() + Duration::from_millis(100);
            tokio::select! {
                _ = activity.changed() => {}
                _ = tokio::time::sleep_until(deadline.min(tick)) => {}
            }
        }
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(server) = self.server.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            server.task.abort();
        }
    }
}

fn spawn_server(listener: TcpListener, shared: Arc<Shared>) -> Server {
    let (shutdown, mut stop) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let shared = shared.clone();
                        connections.spawn(async move {
                            let service = service_fn(move |req| handle(shared.clone(), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        // Dropping a connection's future closes its socket mid-stream.
        connections.shutdown().await;
    });
    Server { shutdown, task }
}

// ---------------------------------------------------------------- HTTP

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(pair), String::new()),
        })
        .collect()
}

fn query_get<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(value).unwrap()))
        .unwrap()
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.status())
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or_default());
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    {
        let mut line = format!("{method} {path}");
        if !query.is_empty() {
            let pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line.push('?');
            line.push_str(&pairs.join("&"));
        }
        shared.store().requests.push(line);
        shared.activity.send_modify(|n| *n += 1);
    }
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Ok(error_response(&ApiError::bad_request(format!("reading the body: {e}")))),
    };
    Ok(match route(&shared, &method, &path, &query, &content_type, &body) {
        Ok(response) => response,
        Err(error) => error_response(&error),
    })
}

struct Target {
    res: usize,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_target(path: &str) -> Option<Target> {
    for (res, r) in RESOURCES.iter().enumerate() {
        let Some(rest) = path.strip_prefix(r.prefix).and_then(|p| p.strip_prefix('/')) else { continue };
        let parts: Vec<&str> = rest.split('/').collect();
        let target = match parts.as_slice() {
            [plural] if *plural == r.plural => Target { res, namespace: None, name: None, status: false },
            ["namespaces", ns, plural] if *plural == r.plural => {
                Target { res, namespace: Some(ns.to_string()), name: None, status: false }
            }
            ["namespaces", ns, plural, name] if *plural == r.plural => {
                Target { res, namespace: Some(ns.to_string()), name: Some(name.to_string()), status: false }
            }
            ["namespaces", ns, plural, name, "status"] if *plural == r.plural && r.status_subresource => {
                Target { res, namespace: Some(ns.to_string()), name: Some(name.to_string()), status: true }
            }
            _ => continue,
        };
        return Some(target);
    }
    None
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &[(String, String)],
    content_type: &str,
    body: &Bytes,
) -> Result<Response<Body>, ApiError> {
    if method == Method::GET {
        if let Some(response) = discovery(path) {
            return Ok(response);
        }
    }
    let not_found = || ApiError::new(404, "NotFound", "the server could not find the requested resource");
    let target = parse_target(path).ok_or_else(not_found)?;
    let Target { res, namespace, name, status } = target;
    let watching = matches!(query_get(query, "watch"), Some("true" | "1"));
    match (method, namespace, name) {
        (&Method::GET, ns, None) if watching => watch(shared, res, ns.as_deref(), query),
        (&Method::GET, ns, None) => list(shared, res, ns.as_deref(), query),
        (&Method::POST, Some(ns), None) => {
            let object = parse_body(body)?;
            let created = shared.mutate(|store| store.create(res, &ns, object))?;
            Ok(json_response(201, &created))
        }
        (&Method::GET, Some(ns), Some(name)) => {
            let store = shared.store();
            let object = store.objects.get(&(res, ns, name.clone())).ok_or_else(|| ApiError::not_found(res, &name))?;
            Ok(json_response(200, object))
        }
        (&Method::PUT, Some(ns), Some(name)) => {
            let new = parse_body(body)?;
            let key = (res, ns, name);
            let updated = shared.mutate(|store| {
                let new = if status {
                    let old = store.objects.get(&key).ok_or_else(|| ApiError::not_found(res, &key.2))?;
                    with_status_of(old, &new)
                } else {
                    new
                };
                store.update(&key, new, !status && RESOURCES[res].status_subresource, false)
            })?;
            Ok(json_response(200, &updated))
        }
        (&Method::PATCH, Some(ns), Some(name)) => {
            let patch = parse_patch_body(content_type, body)?;
            let key = (res, ns, name);
            let (code, object) = shared.mutate(|store| patch_object(store, &key, status, content_type, &patch))?;
            Ok(json_response(code, &object))
        }
        (&Method::DELETE, Some(ns), Some(name)) => {
            let key = (res, ns, name);
            let deleted = shared.mutate(|store| store.delete(&key)).ok_or_else(|| ApiError::not_found(res, &key.2))?;
            Ok(json_response(200, &deleted))
        }
        _ => Err(ApiError::new(405, "MethodNotAllowed", format!("{method} is not supported on {path}"))),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    Ok(value)
}

fn parse_patch_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice(body) {
        Ok(value) => Ok(value),
        Err(_) if content_type == "application/apply-patch+yaml" => {
            serde_yaml_ng::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid YAML apply patch: {e}")))
        }
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON patch body: {e}"))),
    }
}

/// `old` with the status (only) of `new`.
fn with_status_of(old: &Value, new: &Value) -> Value {
    let mut result = old.clone();
    let map = result.as_object_mut().unwrap();
    match new.get("status") {
        Some(status) => map.insert("status".into(), status.clone()),
        None => map.remove("status"),
    };
    if let Some(rv) = meta(new, "resourceVersion") {
        meta_mut(&mut result).insert("resourceVersion".into(), Value::String(rv));
    }
    result
}

fn patch_object(
    store: &mut Store,
    key: &Key,
    status: bool,
    content_type: &str,
    patch: &Value,
) -> Result<(u16, Value), ApiError> {
    let (res, namespace, name) = key;
    let apply = content_type.starts_with("application/apply-patch");
    let Some(old) = store.objects.get(key).cloned() else {
        if apply && !status {
            let mut object = patch.clone();
            meta_mut(&mut object).insert("name".into(), Value::String(name.clone()));
            return Ok((201, store.create(*res, namespace, object)?));
        }
        return Err(ApiError::not_found(*res, name));
    };
    let mut patched = old.clone();
    match content_type {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            // A resourceVersion in the patch is a precondition; without one it applies to the latest.
            meta_mut(&mut patched).remove("resourceVersion");
            merge_patch(&mut patched, patch)
        }
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            meta_mut(&mut patched).remove("resourceVersion");
            let mut patch = patch.clone();
            if let Some(map) = patch.as_object_mut() {
                map.remove("apiVersion");
                map.remove("kind");
            }
            merge_patch(&mut patched, &patch)
        }
        "application/json-patch+json" => json_patch(&mut patched, patch)?,
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the patch type {other:?} is not supported"),
            ))
        }
    }
    let new = if status { with_status_of(&old, &patched) } else { patched };
    Ok((200, store.update(key, new, !status && RESOURCES[*res].status_subresource, false)?))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let map = target.as_object_mut().unwrap();
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// RFC 6902 JSON patch (add, remove, replace, test, copy, move).
fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let invalid = |m: String| ApiError::new(422, "Invalid", m);
    let ops = patch.as_array().ok_or_else(|| ApiError::bad_request("a JSON patch must be an array"))?;
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let path = op.get("path").and_then(Value::as_str).ok_or_else(|| invalid("op without path".into()))?;
        let value = || op.get("value").cloned().ok_or_else(|| invalid(format!("{name} without value")));
        match name {
            "add" => pointer_add(target, path, value()?),
            "replace" => {
                pointer_remove(target, path).ok_or_else(|| invalid(format!("replace: no {path}")))?;
                pointer_add(target, path, value()?)
            }
            "remove" => pointer_remove(target, path).map(|_| ()),
            "test" => (target.pointer(path) == Some(&value()?)).then_some(()),
            "copy" | "move" => {
                let from = op.get("from").and_then(Value::as_str).ok_or_else(|| invalid(format!("{name}: no from")))?;
                let v = if name == "move" { pointer_remove(target, from) } else { target.pointer(from).cloned() };
                let v = v.ok_or_else(|| invalid(format!("{name}: no {from}")))?;
                pointer_add(target, path, v)
            }
            other => return Err(invalid(format!("unknown JSON patch op {other:?}"))),
        }
        .ok_or_else(|| invalid(format!("JSON patch {name} {path} failed")))?;
    }
    Ok(())
}

fn split_pointer(path: &str) -> Option<(String, String)> {
    let (parent, last) = path.rsplit_once('/')?;
    Some((parent.to_string(), last.replace("~1", "/").replace("~0", "~")))
}

fn pointer_add(target: &mut Value, path: &str, value: Value) -> Option<()> {
    if path.is_empty() {
        *target = value;
        return Some(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent)? {
        Value::Object(map) => {
            map.insert(last, value);
        }
        Value::Array(list) if last == "-" => list.push(value),
        Value::Array(list) => {
            let index: usize = last.parse().ok()?;
            (index <= list.len()).then(|| list.insert(index, value))?;
        }
        _ => return None,
    }
    Some(())
}

fn pointer_remove(target: &mut Value, path: &str) -> Option<Value> {
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(&parent)? {
        Value::Object(map) => map.remove(&last),
        Value::Array(list) => {
            let index: usize = last.parse().ok()?;
            (index < list.len()).then(|| list.remove(index))
        }
        _ => None,
    }
}

// ---------------------------------------------------------------- list and watch

fn with_type(res: usize, object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(RESOURCES[res].api_version.into()));
        map.insert("kind".into(), Value::String(RESOURCES[res].kind.into()));
    }
    object
}

fn list(
    shared: &Arc<Shared>,
    res: usize,
    namespace: Option<&str>,
    query: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(namespace, query)?;
    let limit = query_get(query, "limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
    let store = shared.store();
    let (list_rv, after) = match query_get(query, "continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let mut parts = token.splitn(3, '|');
            let (Some(rv), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ApiError::bad_request("invalid continue token"));
            };
            let rv: u64 = rv.parse().map_err(|_| ApiError::bad_request("invalid continue token"))?;
            if rv < store.compacted_at {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a \
                     new list without the continue parameter.",
                ));
            }
            (rv, Some((ns.to_string(), name.to_string())))
        }
        None => (store.rv, None),
    };
    let start = match &after {
        Some((ns, name)) => std::ops::Bound::Excluded((res, ns.clone(), name.clone())),
        None => std::ops::Bound::Included((res, String::new(), String::new())),
    };
    let mut matching = store
        .objects
        .range((start, std::ops::Bound::Unbounded))
        .take_while(|((r, _, _), _)| *r == res)
        .filter(|(_, object)| filter.matches(object));
    let mut items = Vec::new();
    let mut last = None;
    for (key, object) in matching.by_ref() {
        items.push(with_type(res, object));
        last = Some(key);
        if limit.is_some_and(|l| items.len() >= l) {
            break;
        }
    }
    let mut metadata = json!({ "resourceVersion": list_rv.to_string() });
    if matching.next().is_some() {
        let (_, ns, name) = last.unwrap();
        metadata["continue"] = Value::String(format!("{list_rv}|{ns}|{name}"));
    }
    let r = &RESOURCES[res];
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", r.kind),
            "apiVersion": r.api_version,
            "metadata": metadata,
            "items": items,
        }),
    ))
}

struct WatchRequest {
    res: usize,
    filter: Filter,
    /// None: start with the current state (resourceVersion absent or "0").
    since: Option<u64>,
    initial_events_end: bool,
    bookmarks: bool,
    timeout: Duration,
}

fn watch(
    shared: &Arc<Shared>,
    res: usize,
    namespace: Option<&str>,
    query: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    let filter = Filter::from_query(namespace, query)?;
    let since = match query_get(query, "resourceVersion").filter(|rv| !rv.is_empty()) {
        Some(rv) => {
            Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv}")))?)
        }
        None => None,
    }
    .filter(|rv| *rv > 0);
    let timeout = match query_get(query, "timeoutSeconds") {
        Some(t) => Duration::from_secs(t.parse().map_err(|_| ApiError::bad_request("invalid timeoutSeconds"))?),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let request = WatchRequest {
        res,
        filter,
        since,
        initial_events_end: query_get(query, "sendInitialEvents") == Some("true"),
        bookmarks: query_get(query, "allowWatchBookmarks") == Some("true"),
        timeout,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    shared.activity.send_modify(|n| *n += 1);
    // Subscribe now: an expire_watches() after this request arrived must reach it.
    let signals = WatchSignals {
        changes: shared.changes.subscribe(),
        expiry: shared.expiry.subscribe(),
        _guard: WatchGuard(shared.clone()),
    };
    let body = WatchBody { producer: Some(Box::pin(watch_stream(shared.clone(), request, tx, signals))), rx };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(StreamBody::new(body).boxed_unsync())
        .unwrap())
}

/// A watch response body that drives its own producer, so that dropping the connection (as
/// [`FakeKube::stop`] does) ends the watch at once, with no task left behind.
struct WatchBody {
    producer: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    rx: mpsc::Receiver<Bytes>,
}

impl Stream for WatchBody {
    type Item = Result<Frame<Bytes>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(producer) = this.producer.as_mut() {
            if producer.as_mut().poll(cx).is_ready() {
                this.producer = None;
            }
        }
        this.rx.poll_recv(cx).map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn bookmark(res: usize, rv: u64, initial_events_end: bool) -> Bytes {
    let r = &RESOURCES[res];
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    line("BOOKMARK", &json!({ "kind": r.kind, "apiVersion": r.api_version, "metadata": metadata }))
}

fn expired_line() -> Bytes {
    line("ERROR", &too_old().status())
}

/// What a watch with `filter` sees of a history entry.
fn watch_event(entry: &HistoryEntry, res: usize, filter: &Filter) -> Option<Bytes> {
    if entry.res != res {
        return None;
    }
    let now = filter.matches(&entry.object);
    match entry.kind {
        EventType::Added | EventType::Deleted => now.then(|| line(entry.kind.as_str(), &with_type(res, &entry.object))),
        EventType::Modified => {
            let before = entry.previous.as_ref().is_some_and(|p| filter.matches(p));
            match (before, now) {
                (true, true) => Some(line("MODIFIED", &with_type(res, &entry.object))),
                (false, true) => Some(line("ADDED", &with_type(res, &entry.object))),
                (true, false) => {
                    let mut gone = with_type(res, entry.previous.as_ref().unwrap());
                    set_rv(&mut gone, entry.rv);
                    Some(line("DELETED", &gone))
                }
                (false, false) => None,
            }
        }
    }
}

struct WatchGuard(Arc<Shared>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::SeqCst);
        self.0.activity.send_modify(|n| *n += 1);
    }
}

struct WatchSignals {
    changes: watch::Receiver<u64>,
    expiry: watch::Receiver<u64>,
    _guard: WatchGuard,
}

async fn watch_stream(shared: Arc<Shared>, request: WatchRequest, tx: mpsc::Sender<Bytes>, signals: WatchSignals) {
    let WatchSignals { mut changes, mut expiry, _guard } = signals;
    let WatchRequest { res, filter, since, initial_events_end, bookmarks, timeout } = request;
    let deadline = Instant::now() + timeout;

    let start = {
        changes.borrow_and_update();
        let store = shared.store();
        let interval = store.bookmark_interval;
        match since {
            Some(rv) if rv < store.compacted_at => None,
            Some(rv) => Some((rv, Vec::new(), interval)),
            None => {
                let mut lines: Vec<Bytes> = store
                    .objects
                    .range((res, String::new(), String::new())..)
                    .take_while(|((r, _, _), _)| *r == res)
                    .filter(|(_, object)| filter.matches(object))
                    .map(|(_, object)| line("ADDED", &with_type(res, object)))
                    .collect();
                if initial_events_end && bookmarks {
                    lines.push(bookmark(res, store.rv, true));
                }
                Some((store.rv, lines, interval))
            }
        }
    };
    let Some((mut cursor, initial, interval)) = start else {
        let _ = tx.send(expired_line()).await;
        return;
    };
    for line in initial {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        changes.borrow_and_update();
        let lines = {
            let store = shared.store();
            if cursor < store.compacted_at {
                // Events this watch has not seen yet were forgotten.
                None
            } else {
                let from = store.history.partition_point(|e| e.rv <= cursor);
                let lines: Vec<Bytes> =
                    store.history[from..].iter().filter_map(|e| watch_event(e, res, &filter)).collect();
                cursor = store.rv;
                Some(lines)
            }
        };
        let Some(lines) = lines else {
            let _ = tx.send(expired_line()).await;
            return;
        };
        for line in lines {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = expiry.changed() => {
                let _ = tx.send(expired_line()).await;
                return;
            }
            _ = ticker.tick(), if bookmarks => {
                if tx.send(bookmark(res, cursor, false)).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
        }
    }
}

// ---------------------------------------------------------------- discovery

fn discovery(path: &str) -> Option<Response<Body>> {
    let value = match path {
        "/version" => json!({
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0-fake",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }),
        "/healthz" | "/readyz" | "/livez" => {
            return Some(Response::builder().header(header::CONTENT_TYPE, "text/plain").body(full("ok")).unwrap())
        }
        "/api" => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443" }],
        }),
        "/apis" => {
            let mut groups: Vec<&str> = RESOURCES.iter().map(|r| r.api_version).filter(|v| v.contains('/')).collect();
            groups.dedup();
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|gv| {
                    let (group, version) = gv.split_once('/').unwrap();
                    let v = json!({ "groupVersion": gv, "version": version });
                    json!({ "name": group, "versions": [v.clone()], "preferredVersion": v })
                })
                .collect();
            json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
        }
        _ => {
            let group_version = match path.strip_prefix("/api/") {
                Some(v) => v.to_string(),
                None => path.strip_prefix("/apis/")?.to_string(),
            };
            let mut resources = Vec::new();
            for r in RESOURCES.iter().filter(|r| r.api_version == group_version) {
                resources.push(json!({
                    "name": r.plural,
                    "singularName": r.kind.to_lowercase(),
                    "namespaced": true,
                    "kind": r.kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                }));
                if r.status_subresource {
                    resources.push(json!({
                        "name": format!("{}/status", r.plural),
                        "singularName": "",
                        "namespaced": true,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }));
                }
            }
            if resources.is_empty() {
                return None;
            }
            json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources })
        }
    };
    Some(json_response(200, &value))
}
