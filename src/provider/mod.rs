//! Sources of desired state. Each one only collects objects into a `ClusterState`.

pub mod file;
