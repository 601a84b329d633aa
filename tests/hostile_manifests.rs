//! Hostile manifests, end to end against the file provider: huge objects, thousands of paths,
//! regex-like and invalid paths and hosts, duplicate names, wrong kinds, YAML bombs, non-UTF-8
//! and binary files. Each is refused (or ignored, where Kubernetes tooling would ignore it) with a
//! warning that names the file or Ingress and says why; the good routes of other files keep
//! serving throughout, and a later good change still swaps in promptly.
//!
//! Decisions worth knowing:
//! - Kinds portier does not read (Deployment, ConfigMap, …) are ignored without a warning: a
//!   manifests folder is what `kubectl apply -f` takes, and that holds whole applications.
//! - An Ingress in `extensions/v1beta1` or `networking.k8s.io/v1beta1` is refused with a warning
//!   saying how to convert it. Both were removed in Kubernetes 1.22, so the Kubernetes provider
//!   never sees them either; Traefik 1.7 read only `extensions/v1beta1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use portier::config::Warning;

const HOST: &str = "good.test";
/// How long a reload may take before it counts as a stall. Generous: the tests run unoptimised
/// on a busy machine; a stall is a reload that never comes.
const PROMPT: Duration = Duration::from_secs(20);

/// A portier serving one good route (`/good` on `good.test`) from `good.yaml`.
struct Scene {
    portier: Portier,
    _echo: Echo,
    changes: AtomicU32,
}

impl Scene {
    async fn start() -> Scene {
        let echo = echo_http("good").await;
        let good = format!("{}\n---\n{}", backend(&echo), good_ingress("good", "/good"));
        let portier = Portier::start(&[("good.yaml", good)], &[]).await;
        let scene = Scene { portier, _echo: echo, changes: AtomicU32::new(0) };
        scene.assert_good_route_serves().await;
        scene
    }

    fn write_bytes(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.portier.dir.path().join(name), bytes).unwrap();
    }

    /// Waits until a warning about `object` (a file name or `Ingress namespace/name`) says
    /// `why`, and returns it.
    async fn warning(&self, object: &str, why: &str) -> Warning {
        let deadline = Instant::now() + PROMPT;
        loop {
            let config = self.portier.config();
            if let Some(w) = config.warnings.iter().find(|w| w.object.contains(object) && w.message.contains(why)) {
                return w.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no warning about {object} saying {why:?}; warnings: {:#?}",
                config.warnings
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn warnings_about(&self, object: &str) -> Vec<Warning> {
        self.portier.config().warnings.iter().filter(|w| w.object.contains(object)).cloned().collect()
    }

    async fn assert_good_route_serves(&self) {
        let reply = get(self.portier.https(), Via::Tls(Some(HOST)), HOST, "/good/x").await;
        assert_eq!(reply.status, 200, "the good route keeps serving: {}", reply.text());
        assert_eq!(reply.json()["backend"], "good");
    }

    /// Adds a new file with a new route and waits until it serves: the table did not stall.
    async fn assert_later_change_swaps_in(&self) {
        let n = self.changes.fetch_add(1, Ordering::Relaxed);
        let path = format!("/later{n}");
        self.portier.write(&format!("later{n}.yaml"), &good_ingress(&format!("later{n}"), &path));
        let started = Instant::now();
        loop {
            let reply = get(self.portier.https(), Via::Tls(Some(HOST)), HOST, &path).await;
            if reply.status == 200 {
                break;
            }
            assert!(
                started.elapsed() < PROMPT,
                "a later good change did not swap in: {} {}",
                reply.status,
                reply.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.assert_good_route_serves().await;
    }

    async fn status(&self, host: &str, path: &str) -> u16 {
        get(self.portier.https(), Via::Tls(Some(HOST)), host, path).await.status
    }
}

/// Service `good` (port 80) with an EndpointSlice pointing at the echo backend.
fn backend(echo: &Echo) -> String {
    service_with_slice("good", 80, "http", echo.port(), &[("127.0.0.1", true)])
}

fn good_ingress(name: &str, path: &str) -> String {
    ingress(name, &[], Some(HOST), &[(path, "Prefix", "good", 80)])
}

/// An Ingress on `good.test` whose one rule has these raw YAML lines as `paths` items.
fn ingress_with_paths(name: &str, host: &str, paths: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n  rules:\n  - host: {host}\n    http:\n      paths:\n{paths}"
    )
}

fn path_item(path_yaml: &str) -> String {
    format!("      - path: {path_yaml}\n        pathType: Prefix\n        backend: {{service: {{name: good, port: {{number: 80}}}}}}\n")
}

// ---------------------------------------------------------------- size

#[tokio::test]
async fn an_ingress_with_five_thousand_paths_is_served_and_lookups_still_work() {
    let scene = Scene::start().await;
    let paths: String = (0..5000).map(|i| path_item(&format!("/p{i}"))).collect();
    scene.portier.write("many.yaml", &ingress_with_paths("many", HOST, &paths));
    scene
        .portier
        .wait_for("5,000 routes", |c| c.routes.iter().filter(|r| r.ingress.name == "many").count() == 5000)
        .await;

    for i in [0, 1, 2500, 4999] {
        let reply = get(scene.portier.https(), Via::Tls(Some(HOST)), HOST, &format!("/p{i}/deep?q=1")).await;
        assert_eq!(reply.status, 200, "/p{i}: {}", reply.text());
        assert_eq!(reply.json()["uri"], format!("/p{i}/deep?q=1"));
    }
    assert_eq!(scene.status(HOST, "/p5000").await, 404, "no path beyond the last");
    assert_eq!(scene.status(HOST, "/p12345").await, 404);
    assert!(scene.warnings_about("many").is_empty(), "{:#?}", scene.warnings_about("many"));
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;
}

// ---------------------------------------------------------------- paths and hosts

#[tokio::test]
async fn invalid_paths_refuse_their_ingress_alone_saying_why() {
    let scene = Scene::start().await;
    let long = format!("/{}", "a".repeat(10_000));
    let huge_relative = "r".repeat(100_000);
    // (Ingress name, path as YAML, what the warning says)
    let refused = [
        ("bracket", r#""[""#, "must start with '/'"),
        ("relative", "foo/bar", "must start with '/'"),
        ("star", r#""*""#, "must start with '/'"),
        ("control", r#""/a\u0001b""#, "control characters"),
        ("query", r#""/a?b=c""#, "'?'"),
        ("space", r#""/a b""#, "spaces"),
        ("huge-relative", huge_relative.as_str(), "(100000 bytes) must start with '/'"),
    ];
    let mut file = String::new();
    for (name, path, _) in &refused {
        file.push_str(&ingress_with_paths(name, HOST, &path_item(path)));
        file.push_str("---\n");
    }
    file.push_str(&ingress_with_paths("long", HOST, &path_item(&long)));
    file.push_str("---\n");
    file.push_str(&ingress_with_paths("percent", HOST, &path_item("/bad%zz")));
    for (name, path) in [("regex", "/(.*)"), ("glob", "/files/*"), ("template", "/api/{id:[0-9]+}")] {
        file.push_str("---\n");
        file.push_str(&ingress_with_paths(name, HOST, &path_item(&format!("{path:?}"))));
    }
    scene.portier.write("paths.yaml", &file);

    for (name, _, why) in refused {
        let w = scene.warning(&format!("Ingress default/{name}"), why).await;
        assert!(w.refused, "{w:?}");
        assert!(w.message.contains("path"), "the warning names the path: {w:?}");
        assert!(w.message.len() < 400, "a long path is quoted briefly: {} bytes", w.message.len());
    }
    // Kubernetes accepts these; they match literally.
    assert_eq!(scene.status(HOST, &format!("{long}/x")).await, 200, "a 10,000-byte path is served");
    assert_eq!(scene.status(HOST, "/bad%zz").await, 200, "an invalid percent-escape matches literally");
    // Regular expressions, globs and Traefik templates are served literally, with a note saying so.
    for name in ["regex", "glob", "template"] {
        let w = scene.warning(&format!("Ingress default/{name}"), "matches literally").await;
        assert!(!w.refused, "{w:?}");
    }
    assert_eq!(scene.status(HOST, "/(.*)").await, 200);
    assert_eq!(scene.status(HOST, "/anything").await, 404, "/(.*) is not a catch-all");
    assert_eq!(scene.status(HOST, "/files/readme").await, 404, "/files/* is not a glob");
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;
}

#[tokio::test]
async fn invalid_hosts_refuse_their_ingress_alone_saying_why() {
    let scene = Scene::start().await;
    let label_300 = format!("{}.example.com", "a".repeat(300));
    let label_64 = format!("{}.example.com", "a".repeat(64));
    let huge_host = "h".repeat(100_000);
    // (Ingress name, host as YAML, what the warning says)
    let refused = [
        ("double-wildcard", "\"*.*.example.com\"", "contains '*'"),
        ("space", "\"exa mple.com\"", "contains ' '"),
        ("trailing-dot", "\"example.com.\"", "empty label"),
        ("label-300", label_300.as_str(), "longer than 253"),
        ("label-64", label_64.as_str(), "a label is longer than 63"),
        ("huge", huge_host.as_str(), "longer than 253"),
        ("port", "\"example.com:8080\"", "contains ':'"),
        ("ipv6", "\"[::1]\"", "contains '['"),
        ("ipv4", "10.1.2.3", "is an IP address; Ingress hosts are DNS names"),
    ];
    let mut file = String::new();
    for (name, host, _) in &refused {
        file.push_str(&ingress_with_paths(name, host, &path_item(&format!("/{name}"))));
        file.push_str("---\n");
    }
    file.push_str(&ingress_with_paths("upper", "UPPER.Example.COM", &path_item("/upper")));
    scene.portier.write("hosts.yaml", &file);

    for (name, _, why) in refused {
        let w = scene.warning(&format!("Ingress default/{name}"), why).await;
        assert!(w.refused && w.message.starts_with("host "), "{w:?}");
        assert!(w.message.len() < 400, "the warning quotes a long host briefly: {w:?}");
    }
    // Upper case is lower-cased, as DNS names compare without case.
    scene.portier.wait_for("upper-case host served", |c| c.routes.iter().any(|r| r.ingress.name == "upper")).await;
    assert_eq!(scene.status("upper.example.com", "/upper").await, 200);
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;
}

// ---------------------------------------------------------------- names and kinds

#[tokio::test]
async fn duplicate_ingress_names_keep_the_first_and_warn_about_the_copy() {
    let scene = Scene::start().await;
    scene.portier.write(
        "twice.yaml",
        &format!("{}---\n{}", ingress_with_paths("twice", HOST, &path_item("/first")), {
            ingress_with_paths("twice", HOST, &path_item("/second"))
        }),
    );
    let w = scene.warning("twice.yaml", "Ingress default/twice").await;
    assert!(w.refused && w.message.contains("defined twice in this file; the later copy is ignored"), "{w:?}");
    assert_eq!(scene.status(HOST, "/first").await, 200);
    assert_eq!(scene.status(HOST, "/second").await, 404, "the second copy is not served");

    // Across files: the file that sorts first wins; the other names it.
    scene.portier.write("z-copy.yaml", &good_ingress("good", "/copy"));
    let w = scene.warning("z-copy.yaml", "Ingress default/good").await;
    assert!(w.message.contains("good.yaml"), "names the file with the first copy: {w:?}");
    assert_eq!(scene.status(HOST, "/copy").await, 404);
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;
}

// ---------------------------------------------------------------- YAML and bytes

#[tokio::test]
async fn billion_laughs_is_refused_quickly() {
    let scene = Scene::start().await;
    let mut bomb = String::from("a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"]) {
        let refs = vec![format!("*{prev}"); 10].join(",");
        bomb.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    scene.portier.write("laughs.yaml", &bomb);
    let w = scene.warning("laughs.yaml", "YAML").await;
    assert!(w.refused && w.message.contains("aliases"), "{w:?}");
    let listed = admin_get(&scene.portier, "/api/warnings").await;
    assert!(listed.text().contains("laughs.yaml"), "the admin API lists it: {}", listed.text());
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;
}

#[tokio::test]
async fn deeply_nested_yaml_is_refused() {
    let scene = Scene::start().await;
    let depth = 20_000;
    scene.portier.write("deep.yaml", &format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
    let w = scene.warning("deep.yaml", "recursion limit").await;
    assert!(w.refused && w.message.contains("nested more than 128 levels"), "{w:?}");
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;
}

#[tokio::test]
async fn binary_and_control_character_files_are_refused() {
    let scene = Scene::start().await;
    let binary: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    scene.write_bytes("binary.yaml", &binary);
    scene.write_bytes("nul.yaml", &[0; 64]);
    let w = scene.warning("binary.yaml", "UTF-8").await;
    assert!(w.refused, "{w:?}");
    scene.warning("nul.yaml", "control characters").await;
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;
}

#[tokio::test]
async fn empty_files_and_bare_separators_are_quietly_empty() {
    let scene = Scene::start().await;
    scene.portier.write("empty.yaml", "");
    scene.portier.write("dashes.yaml", "---\n");
    scene.portier.write("many-dashes.yml", "---\n---\n# only a comment\n---\n");
    scene.assert_later_change_swaps_in().await;
    for name in ["empty.yaml", "dashes.yaml", "many-dashes.yml"] {
        assert!(scene.warnings_about(name).is_empty(), "{name}: {:#?}", scene.warnings_about(name));
    }
}

#[tokio::test]
async fn one_anchor_aliased_ten_thousand_times_is_refused_without_expanding_it() {
    let scene = Scene::start().await;
    // 50 KB of text that would expand to 10^8 values (tens of gigabytes) if aliases were copied
    // without a limit. serde_yaml_ng's own limit on alias jumps does not catch it.
    let bomb = format!("a: &a [{}]\nb: [{}]\n", "lol,".repeat(10_000), "*a,".repeat(10_000));
    scene.portier.write("wide-bomb.yaml", &bomb);
    let w = scene.warning("wide-bomb.yaml", "aliases").await;
    assert!(w.refused && w.message.contains("expand"), "{w:?}");
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;
}

#[tokio::test]
async fn a_file_turned_non_utf8_keeps_its_routes_and_the_warning_gives_the_line() {
    let scene = Scene::start().await;
    let text = good_ingress("latin", "/latin");
    scene.portier.write("latin.yaml", &text);
    scene.portier.wait_for("/latin served", |c| c.routes.iter().any(|r| r.path == "/latin")).await;

    // Saved as Latin-1: "café" in a comment on line 2. (A write caught half-way can also end
    // inside a multi-byte character.)
    let mut latin1 = b"# owner:\n# caf\xe9\n".to_vec();
    latin1.extend_from_slice(text.as_bytes());
    scene.write_bytes("latin.yaml", &latin1);
    let w = scene.warning("latin.yaml", "not UTF-8").await;
    assert!(w.message.contains("line 2") && w.message.contains("previous contents are kept"), "{w:?}");
    assert_eq!(scene.status(HOST, "/latin").await, 200, "the last good contents keep serving");
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;

    // Fixed: the warning goes.
    scene.portier.write("latin.yaml", &format!("# owner:\n# café\n{text}"));
    scene.portier.wait_for("warning gone", |c| !c.warnings.iter().any(|w| w.object.contains("latin.yaml"))).await;
    assert_eq!(scene.status(HOST, "/latin").await, 200);
}

#[tokio::test]
async fn a_ten_megabyte_file_is_served_and_later_changes_still_swap_in() {
    let scene = Scene::start().await;
    // A bundle: a ConfigMap holding 10 MB (ignored: portier does not read ConfigMaps) and an
    // Ingress portier serves.
    let blob = "x".repeat(10 << 20);
    let bundle = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata:\n  blob: {blob}\n---\n{}",
        good_ingress("bundled", "/bundled")
    );
    scene.portier.write("bundle.yaml", &bundle);
    scene.portier.wait_for("/bundled served", |c| c.routes.iter().any(|r| r.path == "/bundled")).await;
    assert_eq!(scene.status(HOST, "/bundled").await, 200);
    assert!(scene.warnings_about("bundle.yaml").is_empty(), "{:#?}", scene.warnings_about("bundle.yaml"));
    // Each later change reads every file again, but parses only what changed.
    scene.assert_later_change_swaps_in().await;
    scene.assert_later_change_swaps_in().await;
}

#[tokio::test]
async fn a_file_over_the_size_limit_is_refused_unread_and_its_last_contents_kept() {
    let scene = Scene::start().await;
    scene.portier.write("growing.yaml", &good_ingress("growing", "/growing"));
    scene.portier.wait_for("/growing served", |c| c.routes.iter().any(|r| r.path == "/growing")).await;

    let limit = portier::provider::file::MAX_MANIFEST_BYTES as usize;
    let padding = "#".repeat(limit);
    scene.portier.write("growing.yaml", &format!("{}\n{padding}\n", good_ingress("growing", "/growing")));
    let w = scene.warning("growing.yaml", "split it").await;
    assert!(w.refused && w.message.contains("more than the 16 MiB"), "{w:?}");
    assert!(w.message.contains("previous contents are kept"), "{w:?}");
    assert_eq!(scene.status(HOST, "/growing").await, 200);
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;
}

#[tokio::test]
async fn an_ingress_with_a_five_megabyte_annotation_is_refused_as_kubernetes_would() {
    let scene = Scene::start().await;
    let blob = "b".repeat(5 << 20);
    let huge = ingress("huge", &[("example.com/blob", blob.as_str())], Some(HOST), &[("/huge", "Prefix", "good", 80)]);
    let fine = good_ingress("beside-huge", "/beside-huge");
    scene.portier.write("huge.yaml", &format!("{huge}\n---\n{fine}"));
    let w = scene.warning("huge.yaml", "annotations take").await;
    assert!(w.refused, "{w:?}");
    assert!(w.message.contains("\"huge\"") && w.message.contains("example.com/blob"), "names the Ingress: {w:?}");
    assert!(w.message.len() < 400, "the value is not repeated: {} bytes", w.message.len());
    assert_eq!(scene.status(HOST, "/huge").await, 404);
    assert_eq!(scene.status(HOST, "/beside-huge").await, 200, "the other Ingress of the file serves");
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;
}

#[tokio::test]
async fn wrong_kinds_are_ignored_or_refused_and_only_non_objects_and_old_ingresses_warn() {
    let scene = Scene::start().await;
    let docs = [
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec: {replicas: 1}\n".to_string(),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n".to_string(),
        "apiVersion: v1\nmetadata: {name: no-kind}\n".to_string(),
        "kind: Service\nmetadata: {name: no-api-version}\n".to_string(),
        "just some text\n".to_string(),
        "apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old}\nspec:\n  rules:\n  - http:\n      paths:\n      - {path: /old, backend: {serviceName: good, servicePort: 80}}\n".to_string(),
        "apiVersion: networking.k8s.io/v1beta1\nkind: Ingress\nmetadata: {name: older}\nspec: {}\n".to_string(),
        good_ingress("current", "/current"),
    ];
    scene.portier.write("kinds.yaml", &docs.join("---\n"));
    scene.portier.wait_for("/current served", |c| c.routes.iter().any(|r| r.path == "/current")).await;

    let mut messages: Vec<String> = scene.warnings_about("kinds.yaml").into_iter().map(|w| w.message).collect();
    messages.sort();
    assert_eq!(messages.len(), 5, "{messages:#?}");
    assert!(messages[0].starts_with("document 3 (object \"no-kind\"): it has no kind"), "{messages:#?}");
    assert!(messages[1].starts_with("document 4 (Service \"no-api-version\"): it has no apiVersion"), "{messages:#?}");
    assert!(messages[2].starts_with("document 5: it is not a Kubernetes object"), "{messages:#?}");
    for (message, version) in messages[3..].iter().zip(["extensions/v1beta1", "networking.k8s.io/v1beta1"]) {
        assert!(message.contains(version) && message.contains("removed in Kubernetes 1.22"), "{message}");
        assert!(message.contains("backend.service.name"), "says how to convert: {message}");
    }
    assert_eq!(scene.status(HOST, "/old").await, 404);
    scene.assert_good_route_serves().await;
    scene.assert_later_change_swaps_in().await;
}

// ---------------------------------------------------------------- the Kubernetes provider

/// The same 5,000-path Ingress from the (fake) API server, to the real binary: listed, watched
/// and served like a small one.
#[tokio::test]
async fn kube_provider_serves_an_ingress_with_five_thousand_paths() {
    use common::fake_kube::FakeKube;
    use common::process::PortierProcess;
    use serde_json::json;

    let echo = echo_http("good").await;
    let fake = FakeKube::start().await;
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "good", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80}]}
    }));
    fake.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "good-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "good"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": echo.port()}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]
    }));
    let ingress = |name: &str, paths: Vec<String>| {
        let paths: Vec<_> = paths
            .iter()
            .map(|p| json!({"path": p, "pathType": "Prefix", "backend": {"service": {"name": "good", "port": {"number": 80}}}}))
            .collect();
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"rules": [{"host": HOST, "http": {"paths": paths}}]}
        })
    };
    fake.apply(ingress("many", (0..5000).map(|i| format!("/p{i}")).collect()));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let portier = PortierProcess::spawn(&["--kubeconfig", kubeconfig.to_str().unwrap(), "--throttle", "50ms"]);

    let status = |path: &'static str| {
        let addr = portier.https;
        async move { get(addr, Via::Tls(Some(HOST)), HOST, path).await.status }
    };
    let deadline = Instant::now() + PROMPT;
    while status("/p4999/x").await != 200 {
        assert!(Instant::now() < deadline, "the 5,000-path Ingress was not served: {:#?}", portier.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status("/p0").await, 200);
    assert_eq!(status("/p2500/deep").await, 200);
    assert_eq!(status("/p5000").await, 404);

    fake.apply(ingress("later", vec!["/later".into()]));
    let deadline = Instant::now() + PROMPT;
    while status("/later").await != 200 {
        assert!(Instant::now() < deadline, "a later Ingress did not swap in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status("/p4999").await, 200);
}
