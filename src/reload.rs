//! Rebuild and hot swap: collect objects, translate, skip when nothing changed, attach backend
//! clients, swap atomically. In-flight requests keep the config they started with.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{Config, Warning};
use crate::metrics::{Metrics, Observers};
use crate::provider::status::{self, Desired, PublishOptions};
use crate::provider::Source;
use crate::proxy::upstream::Upstreams;
use crate::proxy::{Live, Shared};
use crate::translate::{translate, TranslateOptions};

pub struct Reloader {
    source: Source,
    options: TranslateOptions,
    upstreams: Upstreams,
    shared: Arc<Shared>,
    /// Where to send statuses and warnings to write back to the cluster (Kubernetes mode).
    cluster_writer: Option<(PublishOptions, tokio::sync::mpsc::UnboundedSender<Desired>)>,
}

impl Reloader {
    pub fn new(source: Source, options: TranslateOptions, upstreams: Upstreams, shared: Arc<Shared>) -> Self {
        Self { source, options, upstreams, shared, cluster_writer: None }
    }

    pub fn write_back(&mut self, publish: PublishOptions, to: tokio::sync::mpsc::UnboundedSender<Desired>) {
        self.cluster_writer = Some((publish, to));
    }

    /// Reads, translates and swaps if the result differs. Returns whether it swapped. Does
    /// nothing until the source has completed its first sync.
    pub fn reload(&mut self) -> bool {
        let started = std::time::Instant::now();
        let Some((state, source_warnings)) = self.source.load() else {
            return false;
        };
        let mut config = translate(&state, &self.options);
        config.warnings.splice(0..0, source_warnings);
        if let Some((publish, to)) = &self.cluster_writer {
            let _ = to.send(status::desired(&state, &config, publish));
        }
        let swapped = self.swap_if_changed(config, started);
        self.shared.ready.store(true, std::sync::atomic::Ordering::Release);
        swapped
    }

    /// `started`: when the rebuild began (reading the source), for the rebuild time.
    fn swap_if_changed(&mut self, config: Config, started: std::time::Instant) -> bool {
        let current = self.shared.live.load_full();
        if *current.config == config {
            return false;
        }
        log_new_warnings(&current.config.warnings, &config.warnings);
        match link(config, &self.upstreams, &current, &self.shared.metrics) {
            Ok(live) => {
                let (routes, generation) = (live.config.routes.len(), live.generation);
                self.shared.metrics.swapped(&live.config, generation, live.swapped_at);
                self.shared.live.store(Arc::new(live));
                let rebuild = started.elapsed();
                self.shared.metrics.rebuilt(rebuild);
                let live = self.shared.live.load();
                let in_use: Vec<_> =
                    live.config.backends.iter().zip(&live.authorities).map(|(b, a)| (&b.transport, &a[..])).collect();
                self.upstreams.retain(&in_use);
                let rebuild_ms = rebuild.as_secs_f64() * 1000.0;
                tracing::info!(generation, routes, rebuild_ms, "configuration swapped");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "new configuration not applied; the previous one keeps serving");
                false
            }
        }
    }

    /// Reloads after each burst of changes: it waits until `throttle` passes with no new change
    /// (so a file being written is read once written), but never more than twice `throttle`
    /// after the first, so a steady stream of changes still propagates.
    pub fn run(mut self, changes: std::sync::mpsc::Receiver<()>, throttle: Duration) {
        use std::sync::mpsc::RecvTimeoutError;
        while changes.recv().is_ok() {
            let first = std::time::Instant::now();
            loop {
                let left = (throttle * 2).saturating_sub(first.elapsed());
                match changes.recv_timeout(throttle.min(left)) {
                    Ok(()) if !left.is_zero() => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                    _ => break,
                }
            }
            if self.reload() {
                self.shared.metrics.change_swapped(first);
            }
            while self.source.unsettled() {
                std::thread::sleep(throttle);
                while changes.try_recv().is_ok() {}
                if self.reload() {
                    self.shared.metrics.change_swapped(first);
                }
            }
        }
    }
}

/// The empty config a process starts from, before the first load.
pub fn empty_live() -> Live {
    Live {
        config: Arc::new(Config::default()),
        clients: Vec::new(),
        authorities: Vec::new(),
        generation: 0,
        swapped_at: SystemTime::now(),
        observers: Observers::default(),
    }
}

/// Attaches to a new config what serving it needs: the clients of its backends, and the metric
/// handles of its routes and backends (resolved here, once, so requests never look them up).
/// `previous`: the config serving now, whose metric handles are reused for routes that stay.
fn link(config: Config, upstreams: &Upstreams, previous: &Live, metrics: &Metrics) -> Result<Live, String> {
    let generation = previous.generation + 1;
    let authorities: Vec<_> = config.backends.iter().map(|b| crate::proxy::upstream::authorities(&b.target)).collect();
    let clients = config
        .backends
        .iter()
        .zip(&authorities)
        .map(|(b, addrs)| upstreams.clients_for(&b.transport, addrs).map_err(|e| format!("backend {}: {e}", b.name)))
        .collect::<Result<Vec<_>, _>>()?;
    let observers = metrics.observers_for(&config, Some((&previous.config, &previous.observers)));
    Ok(Live { config: Arc::new(config), clients, authorities, generation, swapped_at: SystemTime::now(), observers })
}

/// Each warning is logged once, when it first appears, not on every rebuild.
fn log_new_warnings(before: &[Warning], after: &[Warning]) {
    let known: BTreeSet<&Warning> = before.iter().collect();
    for w in after.iter().filter(|w| !known.contains(w)) {
        if w.refused {
            tracing::warn!(object = %w.object, "refused: {}", w.message);
        } else {
            tracing::warn!(object = %w.object, "{}", w.message);
        }
    }
}
