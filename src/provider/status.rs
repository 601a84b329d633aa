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
///
/// With `--publish-service`, the status is exactly that Service's addresses (plus any
/// `--publish-ip`/`--publish-hostname`): every replica computes the same set. Without it, each
/// replica only *adds* its own addresses and keeps the others': a DaemonSet publishing each
/// node's IP must not have its pods overwrite each other in a loop.
pub fn desired(state: &ClusterState, config: &Config, publish: &PublishOptions) -> Desired {
    let mut status_updates = Vec::new();
    if publish.is_set() {
        let own = published_addresses(state, publish);
        for key in &config.ingresses {
            let current = sorted(
                state
                    .ingresses
                    .get(key)
                    .and_then(|i| i.status.as_ref())
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.clone())
                    .unwrap_or_default(),
            );
            let wanted = if publish.service.is_some() {
                own.clone()
            } else {
                sorted(current.iter().chain(&own).cloned().collect())
            };
            if current != wanted {
                status_updates.push((key.clone(), wanted));
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
        // The same name from every replica: the Event is created once per reason, cluster-wide.
        "metadata": { "name": event_name(warning), "namespace": key.namespace },
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
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => Ok(()),
        // Another replica reported it already.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// `<ingress>.portier.<hash of uid and message>`: stable for one reason on one Ingress object.
fn event_name(warning: &IngressWarning) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    warning.uid.hash(&mut hasher);
    warning.message.hash(&mut hasher);
    format!("{}.portier.{:016x}", warning.ingress.name, hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::file::parse_manifest;
    use crate::state::Object;

    fn state_with_status(addresses: &str) -> (ClusterState, Config) {
        let yaml = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web}}\nspec: {{defaultBackend: {{service: {{name: s, port: {{number: 80}}}}}}}}\nstatus: {{loadBalancer: {{ingress: {addresses}}}}}\n"
        );
        let mut state = ClusterState::default();
        for o in parse_manifest(&yaml).unwrap().objects {
            if let Object::Ingress(_) = o {
                state.insert(o);
            }
        }
        let config = crate::translate::translate(&state, &Default::default());
        (state, config)
    }

    fn ip(s: &str) -> IngressLoadBalancerIngress {
        IngressLoadBalancerIngress { ip: Some(s.into()), ..Default::default() }
    }

    #[test]
    fn each_replica_adds_its_own_ip_and_keeps_the_others() {
        let publish = PublishOptions { ips: vec!["192.0.2.2".parse().unwrap()], ..Default::default() };
        let (state, config) = state_with_status("[{ip: 192.0.2.1}]");
        let d = desired(&state, &config, &publish);
        assert_eq!(d.status_updates, vec![(ObjectKey::new("default", "web"), vec![ip("192.0.2.1"), ip("192.0.2.2")])]);
        let (state, config) = state_with_status("[{ip: 192.0.2.2}, {ip: 192.0.2.1}]");
        assert!(desired(&state, &config, &publish).status_updates.is_empty(), "nothing to write: converged");
    }

    #[test]
    fn published_service_sets_exactly_its_addresses() {
        let publish = PublishOptions { service: Some(ObjectKey::new("default", "lb")), ..Default::default() };
        let (mut state, config) = state_with_status("[{ip: 192.0.2.9}]");
        let lb = parse_manifest(
            "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nstatus: {loadBalancer: {ingress: [{ip: 198.51.100.1}]}}\n",
        )
        .unwrap();
        for o in lb.objects {
            state.insert(o);
        }
        let d = desired(&state, &config, &publish);
        assert_eq!(d.status_updates, vec![(ObjectKey::new("default", "web"), vec![ip("198.51.100.1")])]);
    }
}
