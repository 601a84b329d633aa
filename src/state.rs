//! ClusterState: the Kubernetes objects portier cares about, keyed by namespace/name.
//! Providers fill it; `translate` reads it. Plain data, no IO.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;

/// `namespace/name` of an object; orders by namespace, then name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Namespace used for namespaced objects that do not name one (as `kubectl apply` does).
pub const DEFAULT_NAMESPACE: &str = "default";

/// One object of a kind portier reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Ingress(Arc<Ingress>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Secret(Arc<Secret>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Ingress(_) => "Ingress",
            Object::Service(_) => "Service",
            Object::EndpointSlice(_) => "EndpointSlice",
            Object::Secret(_) => "Secret",
        }
    }

    pub fn key(&self) -> ObjectKey {
        key_of(self.metadata())
    }

    pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::Ingress(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
        }
    }
}

pub fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    ObjectKey::new(meta.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE), meta.name.as_deref().unwrap_or_default())
}

/// Everything a translation needs, as last seen by the providers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterState {
    pub ingresses: BTreeMap<ObjectKey, Arc<Ingress>>,
    pub services: BTreeMap<ObjectKey, Arc<Service>>,
    pub endpoint_slices: BTreeMap<ObjectKey, Arc<EndpointSlice>>,
    pub secrets: BTreeMap<ObjectKey, Arc<Secret>>,
}

impl ClusterState {
    /// Inserts an object; returns false (and changes nothing) when one of the same kind and
    /// namespace/name is already present.
    pub fn insert(&mut self, object: Object) -> bool {
        let key = object.key();
        fn put<T>(map: &mut BTreeMap<ObjectKey, Arc<T>>, key: ObjectKey, value: Arc<T>) -> bool {
            match map.entry(key) {
                std::collections::btree_map::Entry::Occupied(_) => false,
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(value);
                    true
                }
            }
        }
        match object {
            Object::Ingress(o) => put(&mut self.ingresses, key, o),
            Object::Service(o) => put(&mut self.services, key, o),
            Object::EndpointSlice(o) => put(&mut self.endpoint_slices, key, o),
            Object::Secret(o) => put(&mut self.secrets, key, o),
        }
    }
}
