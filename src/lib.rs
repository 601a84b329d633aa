//! portier: a Kubernetes ingress reverse proxy. See DESIGN notes in the README.
//!
//! Pure core: [`translate`] and [`router`] (no IO). Thin shell: [`provider`], [`proxy`],
//! [`admin`], wired in [`app`].

pub mod access_log;
pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod provider;
pub mod proxy;
pub mod reload;
pub mod router;
pub mod selector;
pub mod state;
pub mod tls;
pub mod translate;
