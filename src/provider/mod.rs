//! Sources of desired state. Each one only collects objects into a `ClusterState`.

pub mod file;
pub mod kube;
pub mod status;

use crate::config::Warning;
use crate::state::ClusterState;

/// Where the objects come from: manifest files, or the Kubernetes API.
pub enum Source {
    Files(file::ManifestSource),
    Kube(kube::KubeStores),
}

impl Source {
    /// The current objects, or None while a first complete sync is still missing.
    pub fn load(&mut self) -> Option<(ClusterState, Vec<Warning>)> {
        match self {
            Source::Files(files) => Some(files.load()),
            Source::Kube(stores) => stores.synced().then(|| (stores.load(), Vec::new())),
        }
    }

    /// The last load saw something mid-change; load again soon even without an event.
    pub fn unsettled(&self) -> bool {
        match self {
            Source::Files(files) => files.unsettled(),
            Source::Kube(_) => false,
        }
    }
}
