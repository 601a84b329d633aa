//! The real `portier` binary: its help and version, its startup errors (exit code and a message
//! naming the flag or file and the reason), and a run on the examples that serves, redirects,
//! logs JSON and stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portier");

/// Ephemeral loopback addresses for the three listeners, so that a run that unexpectedly gets
/// past its error does not try to bind port 80 or 443.
const EPHEMERAL: [&str; 6] =
    ["--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"];

/// Runs the binary to completion (killed after 20 s: a startup error must end the process).
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("portier {args:?} was still running after 20 s; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs a startup that must fail; returns its stderr.
fn startup_error(args: &[&str]) -> String {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "portier {args:?} should fail to start, exited {:?}; stderr:\n{stderr}", out.status);
    assert!(!stderr.trim().is_empty(), "portier {args:?} failed without saying why");
    stderr
}

fn args_with<'a>(manifests: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--manifests", manifests];
    args.extend(EPHEMERAL);
    args.extend(extra);
    args
}

fn manifests_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.yaml"), "# nothing yet\n").unwrap();
    dir
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------- help and version

#[test]
fn help_exits_zero_and_explains_every_flag() {
    let out = run(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "--help exited {:?}", out.status);
    let flags = [
        "--manifests",
        "--http-addr",
        "--https-addr",
        "--admin-addr",
        "--label-selector",
        "--ingress-class",
        "--tls-cert",
        "--tls-key",
        "--backend-ca",
        "--insecure-skip-verify",
        "--https-redirect-port",
        "--no-https-redirect",
        "--throttle",
        "--log-format",
        "--version",
    ];
    let lines: Vec<&str> = help.lines().collect();
    for flag in flags {
        // The option's own line: `      --flag <VALUE>` or `  -V, --version`.
        let at = lines.iter().position(|l| {
            let l = l.trim_start();
            l.split_whitespace().next() == Some(flag) || (l.starts_with('-') && l.contains(&format!(", {flag}")))
        });
        let at = at.unwrap_or_else(|| panic!("--help does not list {flag}:\n{help}"));
        // Its explanation: the rest of that line, or the next line when it is not another option.
        let rest: Vec<&str> =
            lines[at].split_whitespace().filter(|w| !w.starts_with('-') && !w.starts_with('<')).collect();
        let explanation = if rest.len() >= 2 {
            rest.join(" ")
        } else {
            lines.get(at + 1).map(|l| l.trim()).filter(|l| !l.starts_with('-')).unwrap_or_default().to_string()
        };
        assert!(explanation.split_whitespace().count() >= 2, "--help does not explain {flag}:\n{help}");
    }
    assert!(
        help.contains("0.0.0.0:80") && help.contains("0.0.0.0:443") && help.contains("127.0.0.1:8080"),
        "defaults are shown:\n{help}"
    );
}

#[test]
fn version_prints_the_name_and_crate_version() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "--version exited {:?}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), format!("portier {}", env!("CARGO_PKG_VERSION")));
    assert!(stdout.trim().split(' ').nth(1).unwrap().split('.').count() == 3, "a semver version: {stdout}");
}

// ---------------------------------------------------------------- startup errors

#[test]
fn missing_manifests_path_is_a_startup_error_naming_the_flag_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let stderr = startup_error(&args_with(path_str(&missing), &[]));
    assert!(stderr.contains("--manifests"), "{stderr}");
    assert!(stderr.contains(path_str(&missing)), "{stderr}");
    assert!(stderr.to_lowercase().contains("no such file"), "says why: {stderr}");
}

#[test]
fn malformed_label_selector_is_a_startup_error_naming_the_flag() {
    let dir = manifests_dir();
    let stderr = startup_error(&args_with(path_str(dir.path()), &["--label-selector", "app in (x"]));
    assert!(stderr.contains("--label-selector"), "{stderr}");
    assert!(stderr.contains("app in (x"), "quotes the selector: {stderr}");
    let lower = stderr.to_lowercase();
    assert!(lower.contains("unbalanced") || lower.contains("'('") || lower.contains("parenthes"), "says why: {stderr}");
}

#[test]
fn unparsable_throttle_is_a_startup_error_naming_the_flag() {
    let dir = manifests_dir();
    let stderr = startup_error(&args_with(path_str(dir.path()), &["--throttle", "soon"]));
    assert!(stderr.contains("--throttle"), "{stderr}");
    assert!(stderr.contains("soon"), "quotes the value: {stderr}");
}

#[test]
fn a_zero_timeout_is_a_startup_error_naming_the_flag() {
    let dir = manifests_dir();
    for flag in ["--idle-timeout", "--upstream-response-timeout", "--header-read-timeout"] {
        let stderr = startup_error(&args_with(path_str(dir.path()), &[flag, "0s"]));
        assert!(stderr.contains(flag), "{stderr}");
        assert!(stderr.contains("at least 1ms"), "says why: {stderr}");
    }
}

#[test]
fn missing_tls_cert_file_is_a_startup_error_naming_the_file() {
    let dir = manifests_dir();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, self_signed(&["localhost"]).key_pem).unwrap();
    let cert = dir.path().join("missing-cert.pem");
    let stderr =
        startup_error(&args_with(path_str(dir.path()), &["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)]));
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    assert!(stderr.contains(path_str(&cert)), "{stderr}");
    assert!(stderr.to_lowercase().contains("no such file"), "says why: {stderr}");
}

#[test]
fn tls_cert_that_is_not_pem_is_a_startup_error_naming_the_file() {
    let dir = manifests_dir();
    let key = dir.path().join("key.pem");
    std::fs::write(&key, self_signed(&["localhost"]).key_pem).unwrap();
    let cert = dir.path().join("certificate.txt");
    std::fs::write(&cert, "this is not a certificate\n").unwrap();
    let stderr =
        startup_error(&args_with(path_str(dir.path()), &["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)]));
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    assert!(stderr.contains(path_str(&cert)), "{stderr}");
    assert!(stderr.contains("PEM") || stderr.contains("CERTIFICATE"), "says why: {stderr}");
}

#[test]
fn http_addr_already_in_use_is_a_startup_error_naming_the_flag() {
    let dir = manifests_dir();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let args = [
        "--manifests",
        path_str(dir.path()),
        "--http-addr",
        &addr,
        "--https-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ];
    let stderr = startup_error(&args);
    assert!(stderr.contains("--http-addr"), "{stderr}");
    assert!(stderr.contains(&addr), "names the address: {stderr}");
    assert!(stderr.to_lowercase().contains("in use"), "says why: {stderr}");
    drop(taken);
}

#[test]
fn tls_cert_without_tls_key_is_a_startup_error() {
    let dir = manifests_dir();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, self_signed(&["localhost"]).cert_pem).unwrap();
    let stderr = startup_error(&args_with(path_str(dir.path()), &["--tls-cert", path_str(&cert)]));
    assert!(stderr.contains("--tls-key"), "names the missing flag: {stderr}");
    assert!(stderr.to_lowercase().contains("required"), "says why: {stderr}");
}

// ---------------------------------------------------------------- a real run

/// Picks a free loopback port (bind, read, drop).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The examples folder, copied with portier's admin port (8080 in the examples) replaced by
/// `admin_port`, so the run uses free ports. Without usable examples, an equivalent manifest:
/// an ExternalName Service `localhost` on the admin port and a PathPrefixStrip `/portier`.
fn examples_for(admin_port: u16, into: &Path) -> bool {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found = false;
    if examples.is_dir() {
        copy_yaml(&examples, into, admin_port, &mut found);
    }
    if !found {
        let own = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: portier-admin, namespace: default}}\n\
             spec: {{type: ExternalName, externalName: localhost, ports: [{{name: http, port: {admin_port}}}]}}\n\
             ---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\n\
             metadata:\n  name: portier-admin\n  namespace: default\n  annotations:\n    traefik.ingress.kubernetes.io/rule-type: PathPrefixStrip\n\
             spec:\n  rules:\n  - http:\n      paths:\n      - path: /portier\n        pathType: ImplementationSpecific\n        backend: {{service: {{name: portier-admin, port: {{number: {admin_port}}}}}}}\n"
        );
        std::fs::write(into.join("portier-admin.yaml"), own).unwrap();
    }
    found
}

/// Copies the YAML files of `from` (recursively); `found` tells whether one routed `/portier`
/// to the admin port 8080.
fn copy_yaml(from: &Path, to: &Path, admin_port: u16, found: &mut bool) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_yaml(&path, &target, admin_port, found);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains("/portier") && text.contains("8080") {
                *found = true;
            }
            std::fs::write(target, text.replace("8080", &admin_port.to_string())).unwrap();
        }
    }
}

struct Started {
    child: Child,
    http: SocketAddr,
    https: SocketAddr,
    stderr: PathBuf,
}

/// A failed check must not leave the process running.
impl Drop for Started {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts the binary on free ports, retrying when a port was taken in between.
async fn start_binary(manifests: &Path, logs: &Path) -> Started {
    for attempt in 0..5 {
        let (http, https, admin) = (free_port(), free_port(), free_port());
        if http == https || https == admin || http == admin {
            continue;
        }
        // The manifests route /portier to the admin port, so they depend on the port chosen.
        let _ = std::fs::remove_dir_all(manifests);
        std::fs::create_dir_all(manifests).unwrap();
        if !examples_for(admin, manifests) {
            eprintln!("examples/ has no /portier route to the admin port 8080; using an equivalent manifest");
        }
        let stderr = logs.join(format!("stderr-{attempt}.log"));
        let child = Command::new(BIN)
            .arg("--manifests")
            .arg(manifests)
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .args(["--https-addr", &format!("127.0.0.1:{https}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--log-format", "json"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut started = Started {
            child,
            http: format!("127.0.0.1:{http}").parse().unwrap(),
            https: format!("127.0.0.1:{https}").parse().unwrap(),
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = started.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&started.stderr).unwrap_or_default();
                if log.contains("cannot listen") {
                    break; // a port was taken meanwhile: try others
                }
                panic!("portier exited at startup ({status:?}):\n{log}");
            }
            if tokio::net::TcpStream::connect(started.http).await.is_ok() {
                return started;
            }
            if Instant::now() > deadline {
                panic!("portier did not listen on {} within 20 s", started.http);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("could not start portier on free ports after 5 attempts");
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn binary_serves_the_examples_redirects_to_https_and_stops_cleanly_on_sigterm() {
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("examples");
    let mut portier = start_binary(&manifests, work.path()).await;
    let (http, https) = (portier.http, portier.https);

    let result = async {
        // The http entry redirects everything to https, keeping path and query.
        let reply = get(http, Via::Plain, &format!("localhost:{}", http.port()), "/portier/healthz?x=1").await;
        assert_eq!(reply.status, 301, "{}", reply.text());
        assert_eq!(
            reply.header("location"),
            Some(format!("https://localhost:{}/portier/healthz?x=1", https.port()).as_str())
        );

        // The examples' PathPrefixStrip /portier reaches portier's own admin endpoints.
        let deadline = Instant::now() + Duration::from_secs(10);
        let reply = loop {
            let reply = get(https, Via::Tls(Some("localhost")), "localhost", "/portier/healthz").await;
            if reply.status == 200 || Instant::now() > deadline {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text().trim(), "ok");

        let reply = get(https, Via::Tls(Some("localhost")), "localhost", "/portier").await;
        assert_eq!(reply.status, 301, "{}", reply.text());
        assert_eq!(reply.header("location"), Some("/portier/"));

        // Also without SNI (a client connecting by IP): the admin API lists the route itself.
        let reply = get(https, Via::Tls(None), "127.0.0.1", "/portier/api/routes").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let routes = reply.json();
        assert!(
            routes.as_array().is_some_and(|r| r.iter().any(|r| r["path"] == "/portier")),
            "/api/routes lists /portier: {routes}"
        );
    };
    tokio::time::timeout(Duration::from_secs(60), result)
        .await
        .expect("the checks against the running binary timed out");

    Command::new("kill").arg("-TERM").arg(portier.child.id().to_string()).status().unwrap();
    let status = wait_exit(&mut portier.child, Duration::from_secs(10));
    let log = std::fs::read_to_string(&portier.stderr).unwrap_or_default();
    let Some(status) = status else {
        panic!("portier did not exit within 10 s of SIGTERM; log:\n{log}");
    };
    assert!(status.success(), "portier exited {status:?} on SIGTERM; log:\n{log}");

    // --log-format json: every log line is a JSON object with a message.
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log at all");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}\nlog:\n{log}"));
        assert!(value.is_object() && value.get("level").is_some(), "log line without a level: {line}");
    }
    assert!(log.contains(&https.to_string()), "the log says where it listens:\n{log}");
}
