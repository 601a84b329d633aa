//! Synthetic clusters for the benchmarks and the allocation test: a mix of exact hosts, wildcard
//! hosts, host-less rules, Exact, Prefix and PathPrefixStrip paths.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use portier::state::ClusterState;
use serde_json::json;

/// `n` Ingresses (one route each) and the ExternalName Service they all use.
pub fn cluster(n: usize) -> ClusterState {
    let mut state = ClusterState::default();
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "web.example", "ports": [{"port": 80}]}});
    state
        .services
        .insert(portier::state::ObjectKey::new("default", "web"), Arc::new(serde_json::from_value(service).unwrap()));
    for i in 0..n {
        let (host, path, path_type, annotations) = match i % 4 {
            0 => (Some(format!("h{i}.example.com")), "/app".to_string(), "Prefix", json!({})),
            1 => (
                Some(format!("*.w{i}.example.com")),
                "/k8s".to_string(),
                "ImplementationSpecific",
                json!({"traefik.ingress.kubernetes.io/rule-type": "PathPrefixStrip"}),
            ),
            2 => (None, format!("/p{i}"), "Prefix", json!({})),
            _ => (Some(format!("h{i}.example.com")), format!("/e{i}"), "Exact", json!({})),
        };
        let mut rule = json!({"http": {"paths": [{"path": path, "pathType": path_type,
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}});
        if let Some(host) = host {
            rule["host"] = json!(host);
        }
        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": format!("ing-{i}"), "namespace": "default", "annotations": annotations},
            "spec": {"rules": [rule]}});
        state.ingresses.insert(
            portier::state::ObjectKey::new("default", format!("ing-{i}")),
            Arc::new(serde_json::from_value(ingress).unwrap()),
        );
    }
    state
}

/// Requests that hit routes of a cluster of at least 4 Ingresses, and requests that miss.
pub const HITS: &[(&str, &str)] = &[
    ("h0.example.com", "/app/x/y"),
    ("x.w1.example.com", "/k8s/api/v1/namespaces"),
    ("anything.example.com", "/p2/z"),
    ("H3.Example.COM:443", "/e3"),
];
pub const MISSES: &[(&str, &str)] =
    &[("nohost.example.com", "/nothing/here/at/all"), ("h0.example.com", "/zzz"), ("y.x.w1.example.com", "/q")];
