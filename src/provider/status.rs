//! Writing back to the cluster: `status.loadBalancer.ingress` of the Ingresses portier serves,
//! and Warning Events on the Ingresses it refuses or cannot fully serve.
//!
//! The reload thread computes what should be there (pure); this task only compares and writes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::config::Config;
use crate::state::{ClusterState, ObjectKey};

/// `--publish-*`: the addresses written into the status of served Ingresses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishOptions {
    pub ips: Vec<IpAddr>,
    pub hostname: Option<String>,
    /// `namespace/name` of a Service whose load-balancer addresses are copied.
    pub service: Option<ObjectKey>,
}

impl PublishOptions {
    pub fn is_set(&self) -> bool {
        !self.ips.is_empty() || self.hostname.is_some() || self.service.is_some()
    }
}

/// What the cluster should show after one rebuild.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Served Ingresses whose status differs from the published addresses, with their new status.
    pub status_updates: Vec<(ObjectKey, Vec<IngressLoadBalancerIngress>)>,
    /// Current warnings on Ingresses.
    pub warnings: Vec<IngressWarning>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngressWarning {
    pub ingress: ObjectKey,
    pub uid: Option<String>,
    pub message: String,
    /// The whole Ingress was refused (reason `Refused`), or only part of it (`Degraded`).
    pub refused: bool,
}

/// Compares the published addresses with each served Ingress's status, and lists the warnings.
pub fn desired(state: &ClusterState, config: &Config, publish: &PublishOptions) -> Desired {
    let mut status_updates = Vec::new();
    if publish.is_set() {
        let addresses = published_addresses(state, publish);
        for key in &config.ingresses {
            let current = state
                .ingresses
                .get(key)
                .and_then(|i| i.status.as_ref())
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.clone())
                .unwrap_or_default();
            if sorted(current) != addresses {
                status_updates.push((key.clone(), addresses.clone()));
            }
        }
    }
    let warnings = config
        .warnings
        .iter()
        .filter_map(|w| {
            let text = w.object.strip_prefix("Ingress ")?;
            let (namespace, name) = text.split_once('/')?;
            let key = ObjectKey::new(namespace, name);
            let uid = state.ingresses.get(&key).and_then(|i| i.metadata.uid.clone());
            Some(IngressWarning { ingress: key, uid, message: w.message.clone(), refused: w.refused })
        })
        .collect();
    Desired { status_updates, warnings }
}

fn published_addresses(state: &ClusterState, publish: &PublishOptions) -> Vec<IngressLoadBalancerIngress> {
    let mut out: Vec<IngressLoadBalancerIngress> = publish
        .ips
        .iter()
        .map(|ip| IngressLoadBalancerIngress { ip: Some(ip.to_string()), ..Default::default() })
        .collect();
    if let Some(hostname) = &publish.hostname {
        out.push(IngressLoadBalancerIngress { hostname: Some(hostname.clone()), ..Default::default() });
    }
    if let Some(key) = &publish.service {
        let lb = state
            .services
            .get(key)
            .and_then(|s| s.status.as_ref())
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for address in lb.into_iter().flatten() {
            out.push(IngressLoadBalancerIngress {
                ip: address.ip.clone(),
                hostname: address.hostname.clone(),
                ..Default::default()
            });
        }
    }
    sorted(out)
}

fn sorted(mut addresses: Vec<IngressLoadBalancerIngress>) -> Vec<IngressLoadBalancerIngress> {
    addresses.sort_by(|a, b| (&a.ip, &a.hostname).cmp(&(&b.ip, &b.hostname)));
    addresses.dedup();
    addresses
}

/// Applies each `Desired` it receives: patches statuses, and creates one Warning Event per
/// (Ingress, reason) — not again while that reason stays, again if it goes and comes back.
pub async fn run(client: Client, mut updates: tokio::sync::mpsc::UnboundedReceiver<Desired>) {
    let mut reported: BTreeSet<(ObjectKey, String)> = BTreeSet::new();
    let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "portier".into());
    while let Some(mut desired) = updates.recv().await {
        // Only the latest matters when several queued up.
        while let Ok(newer) = updates.try_recv() {
            desired = newer;
        }
        for (key, addresses) in &desired.status_updates {
            let api: Api<Ingress> = Api::namespaced(client.clone(), &key.namespace);
            let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": addresses } } });
            match api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => tracing::debug!(ingress = %key, "status updated"),
                Err(e) => tracing::warn!(ingress = %key, error = %e, "cannot update the Ingress status"),
            }
        }
        let current: BTreeMap<(ObjectKey, String), IngressWarning> =
            desired.warnings.into_iter().map(|w| ((w.ingress.clone(), w.message.clone()), w)).collect();
        reported.retain(|k| current.contains_key(k));
        for (id, warning) in current {
            if reported.contains(&id) {
                continue;
            }
            match create_event(&client, &warning, &instance).await {
                Ok(()) => {
                    reported.insert(id);
                }
                Err(e) => tracing::warn!(ingress = %warning.ingress, error = %e, "cannot create a Warning Event"),
            }
        }
    }
}

async fn create_event(client: &Client, warning: &IngressWarning, instance: &str) -> Result<(), String> {
    let key = &warning.ingress;
    let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let event: Event = serde_json::from_value(serde_json::json!({
        "metadata": { "generateName": format!("{}.", key.name), "namespace": key.namespace },
        "involvedObject": {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "namespace": key.namespace,
            "name": key.name,
            "uid": warning.uid,
        },
        "type": "Warning",
        "reason": if warning.refused { "Refused" } else { "Degraded" },
        "message": warning.message,
        "source": { "component": "portier", "host": instance },
        "reportingComponent": "portier",
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }))
    .map_err(|e| e.to_string())?;
    let api: Api<Event> = Api::namespaced(client.clone(), &key.namespace);
    api.create(&PostParams::default(), &event).await.map(|_| ()).map_err(|e| e.to_string())
}
