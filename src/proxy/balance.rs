//! Which endpoint a request goes to: round robin over a backend's ready endpoints, skipping the
//! ones that failed to connect lately (passive health). An endpoint that fails is skipped for a
//! time that doubles with each failure in a row (1 s, 2 s, 4 s … 30 s) and comes back by itself:
//! the first request after that time tries it again, and one success clears its record.
//! Kubernetes removes a dead pod from its EndpointSlice soon enough; this covers the seconds
//! before, and endpoints that are "ready" but refuse connections.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Backend, Endpoint, Target};

/// First skip after a failure.
pub const FIRST_SKIP: Duration = Duration::from_secs(1);
/// Longest skip, however many failures in a row.
pub const MAX_SKIP: Duration = Duration::from_secs(30);

/// One endpoint's record: failures in a row, and until when it is skipped (milliseconds on the
/// process clock). Kept across config swaps while the endpoint stays.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    failures: AtomicU32,
    skip_until_ms: AtomicU64,
}

impl EndpointHealth {
    fn skipped(&self, now_ms: u64) -> bool {
        self.skip_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// A connection to it failed: skip it for a while. Returns how long.
    pub fn failed(&self, now_ms: u64) -> Duration {
        let in_a_row = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let skip = FIRST_SKIP.saturating_mul(1u32 << (in_a_row - 1).min(16)).min(MAX_SKIP);
        self.skip_until_ms.store(now_ms + skip.as_millis() as u64, Ordering::Relaxed);
        skip
    }

    /// A request got a response from it.
    pub fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.skip_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Failures in a row, and the milliseconds it is still skipped for (0: not skipped).
    pub fn state(&self, now_ms: u64) -> (u32, u64) {
        let until = self.skip_until_ms.load(Ordering::Relaxed);
        (self.failures.load(Ordering::Relaxed), until.saturating_sub(now_ms))
    }
}

/// The endpoint chosen for an attempt; `index` into the backend's endpoints (None for an
/// ExternalName, which has one name and no record).
#[derive(Debug, Clone, Copy)]
pub struct Chosen<'a> {
    pub index: Option<usize>,
    pub endpoint: Endpoint<'a>,
}

/// The endpoint for the next request, round robin over those not skipped. When every endpoint is
/// skipped, round robin over all of them: a try is better than a certain 503.
/// `health` is indexed like the backend's endpoints (missing entries count as healthy);
/// `avoid`: an endpoint that just failed this request (a retry goes elsewhere, or nowhere).
pub fn pick<'a>(
    backend: &'a Backend,
    health: &[Arc<EndpointHealth>],
    now_ms: u64,
    avoid: Option<usize>,
) -> Option<Chosen<'a>> {
    let addrs = match &backend.target {
        Target::Endpoints(addrs) if !addrs.is_empty() => addrs,
        Target::ExternalName { host, port } if avoid.is_none() => {
            return Some(Chosen { index: None, endpoint: Endpoint::Name(host, *port) })
        }
        _ => return None,
    };
    let n = addrs.len();
    let start = backend.next.fetch_add(1, Ordering::Relaxed) % n;
    let usable = |i: usize| Some(i) != avoid && !health.get(i).is_some_and(|h| h.skipped(now_ms));
    // A retry only goes to another endpoint that is not skipped; a first attempt falls back to
    // the round-robin choice.
    let fallback = avoid.is_none().then_some(start);
    let index = (0..n).map(|k| (start + k) % n).find(|&i| usable(i)).or(fallback)?;
    addrs.get(index).map(|a| Chosen { index: Some(index), endpoint: Endpoint::Socket(*a) })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::config::{Scheme, Transport};
    use crate::state::ObjectKey;

    fn backend(ports: &[u16]) -> Backend {
        Backend {
            name: "default/b:80".into(),
            service: ObjectKey { namespace: "default".into(), name: "b".into() },
            transport: Transport { scheme: Scheme::Http, http2: false, verify: true, server_name: String::new() },
            target: Target::Endpoints(ports.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect()),
            authority: "b".into(),
            next: AtomicUsize::new(0),
        }
    }

    fn port(chosen: Option<Chosen<'_>>) -> Option<u16> {
        match chosen?.endpoint {
            Endpoint::Socket(a) => Some(a.port()),
            Endpoint::Name(..) => None,
        }
    }

    #[test]
    fn round_robin_skips_a_failed_endpoint_until_its_time_is_up() {
        let b = backend(&[1, 2, 3]);
        let health: Vec<_> = (0..3).map(|_| Arc::new(EndpointHealth::default())).collect();
        assert_eq!(health[1].failed(1000), Duration::from_secs(1));
        let picks: Vec<_> = (0..6).map(|_| port(pick(&b, &health, 1500, None)).unwrap()).collect();
        assert!(!picks.contains(&2), "{picks:?}");
        assert!(picks.contains(&1) && picks.contains(&3));
        // After a second, it is tried again.
        let later: Vec<_> = (0..3).map(|_| port(pick(&b, &health, 2001, None)).unwrap()).collect();
        assert!(later.contains(&2), "{later:?}");
    }

    #[test]
    fn skips_grow_with_failures_in_a_row_and_a_success_clears_them() {
        let h = EndpointHealth::default();
        let skips: Vec<u64> = (0..8).map(|_| h.failed(0).as_secs()).collect();
        assert_eq!(skips, [1, 2, 4, 8, 16, 30, 30, 30]);
        h.succeeded();
        assert_eq!(h.state(0), (0, 0));
        assert_eq!(h.failed(0), FIRST_SKIP);
    }

    #[test]
    fn all_skipped_still_tries_one_but_a_retry_never_goes_back_to_the_failed_one() {
        let b = backend(&[1, 2]);
        let health: Vec<_> = (0..2).map(|_| Arc::new(EndpointHealth::default())).collect();
        health[0].failed(0);
        health[1].failed(0);
        assert!(pick(&b, &health, 10, None).is_some());
        assert_eq!(pick(&b, &health, 10, Some(0)).map(|c| c.index), None);
        health[1].succeeded();
        assert_eq!(port(pick(&b, &health, 10, Some(0))), Some(2));
        let single = backend(&[7]);
        assert!(pick(&single, &[], 0, Some(0)).is_none(), "no other endpoint to retry on");
    }
}
