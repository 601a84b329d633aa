//! The Kubernetes API as a source: kube-rs reflectors for Ingresses (server-side label
//! selector), Services, EndpointSlices and TLS Secrets, in all namespaces or the ones given.
//!
//! Reflectors keep the last complete view: a relist (410 Gone, expired watch, API server restart)
//! is swapped in whole when it completes, so routes never drop while the API server is away.

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::state::{key_of, ClusterState, ObjectKey};

/// Field selector for the only Secrets portier reads.
pub const TLS_SECRET_SELECTOR: &str = "type=kubernetes.io/tls";

#[derive(Debug, Clone, Default)]
pub struct KubeOptions {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// Empty: all namespaces.
    pub namespaces: Vec<String>,
    /// Server-side label selector for Ingresses.
    pub label_selector: Option<String>,
}

/// Connects the way kubectl would: in-cluster ServiceAccount, else `--kubeconfig`, else
/// `KUBECONFIG` / `~/.kube/config` (kube-rs `Config::infer`), with `--context`.
pub async fn connect(options: &KubeOptions) -> Result<Client, String> {
    let kube_options = KubeConfigOptions { context: options.context.clone(), ..Default::default() };
    let config = match (&options.kubeconfig, &options.context) {
        (Some(path), _) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube_options)
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        (None, Some(context)) => kube::Config::from_kubeconfig(&kube_options)
            .await
            .map_err(|e| format!("--context {context}: {e}"))?,
        (None, None) => kube::Config::infer().await.map_err(|e| {
            format!("no Kubernetes configuration found (in-cluster, KUBECONFIG or ~/.kube/config): {e}; give --kubeconfig, or --manifests to run without a cluster")
        })?,
    };
    Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

/// The reflector stores of every watched kind and namespace.
#[derive(Clone)]
pub struct KubeStores {
    ingresses: Vec<Store<Ingress>>,
    services: Vec<Store<Service>>,
    endpoint_slices: Vec<Store<EndpointSlice>>,
    secrets: Vec<Store<Secret>>,
    synced: Vec<Arc<AtomicBool>>,
}

impl KubeStores {
    /// True once every watch has completed its first list.
    pub fn synced(&self) -> bool {
        self.synced.iter().all(|s| s.load(Ordering::Acquire))
    }

    pub fn load(&self) -> ClusterState {
        // Collected whole, so each map is built from sorted keys at once rather than by 10,000
        // inserts.
        fn keyed<K>(stores: &[Store<K>]) -> std::collections::BTreeMap<ObjectKey, Arc<K>>
        where
            K: Resource + Clone + 'static,
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            stores.iter().flat_map(Store::state).map(|o| (key_of(o.meta()), o)).collect()
        }
        ClusterState {
            ingresses: keyed(&self.ingresses),
            services: keyed(&self.services),
            endpoint_slices: keyed(&self.endpoint_slices),
            secrets: keyed(&self.secrets),
        }
    }
}

/// Starts the watches. Each change (after the first complete list of a kind) sends a unit.
pub fn watch(client: Client, options: &KubeOptions, changes: std::sync::mpsc::Sender<()>) -> KubeStores {
    let mut stores = KubeStores {
        ingresses: Vec::new(),
        services: Vec::new(),
        endpoint_slices: Vec::new(),
        secrets: Vec::new(),
        synced: Vec::new(),
    };
    let namespaces: Vec<Option<&str>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let ingress_config = match &options.label_selector {
        Some(selector) => watcher::Config::default().labels(selector),
        None => watcher::Config::default(),
    };
    for ns in namespaces {
        let (store, synced) = spawn::<Ingress>(&client, ns, ingress_config.clone(), &changes);
        stores.ingresses.push(store);
        stores.synced.push(synced);
        let (store, synced) = spawn::<Service>(&client, ns, watcher::Config::default(), &changes);
        stores.services.push(store);
        stores.synced.push(synced);
        let (store, synced) = spawn::<EndpointSlice>(&client, ns, watcher::Config::default(), &changes);
        stores.endpoint_slices.push(store);
        stores.synced.push(synced);
        let secrets_config = watcher::Config::default().fields(TLS_SECRET_SELECTOR);
        let (store, synced) = spawn::<Secret>(&client, ns, secrets_config, &changes);
        stores.secrets.push(store);
        stores.synced.push(synced);
    }
    stores
}

fn spawn<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
    changes: &std::sync::mpsc::Sender<()>,
) -> (Store<K>, Arc<AtomicBool>)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let what = format!("{}{}", K::kind(&()), namespace.map(|n| format!(" in namespace {n}")).unwrap_or_default());
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let synced = Arc::new(AtomicBool::new(false));
    let flag = synced.clone();
    let changes = changes.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut healthy = true;
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    // `Init` starts every (re)list attempt, also ones that then fail: only a
                    // completed list or a watch event shows the API server is back.
                    let answered = !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_));
                    if !healthy && answered {
                        tracing::info!(watch = %what, "watch restored; resynced with the API server");
                        healthy = true;
                    }
                    match event {
                        watcher::Event::InitDone => {
                            flag.store(true, Ordering::Release);
                            let _ = changes.send(());
                        }
                        watcher::Event::Apply(_) | watcher::Event::Delete(_) => {
                            let _ = changes.send(());
                        }
                        watcher::Event::Init | watcher::Event::InitApply(_) => {}
                    }
                }
                Err(error) => {
                    // Once per outage, not per retry: the backoff keeps retrying quietly.
                    if healthy {
                        tracing::warn!(watch = %what, %error, "lost the watch; serving the last known routes and retrying with backoff");
                        healthy = false;
                    }
                }
            }
        }
    });
    (reader, synced)
}
