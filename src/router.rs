//! Host index and path matcher. Built once per config; lookups do not allocate or lock.
//!
//! Order of precedence: exact host, then wildcard host (`*.a.com` = exactly one more label), then
//! rules without host, then the default backend. Within a host: Exact paths before prefixes,
//! longer prefixes before shorter, then higher priority, then the order routes were given in
//! (translate gives them oldest Ingress first, then namespace/name).

use std::collections::HashMap;

use crate::config::{MatchKind, Route, RouteId};

/// Keys are hosts and paths from the config, not from requests, so a fast hasher is safe here.
type Map<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// Longest host name accepted for matching (DNS names are at most 253 bytes).
pub(crate) const MAX_HOST_LEN: usize = 255;

#[derive(Debug, Default, PartialEq)]
pub struct Router {
    exact_hosts: Map<PathTable>,
    wildcard_hosts: Map<PathTable>,
    any_host: PathTable,
    default_route: Option<RouteId>,
}

#[derive(Debug, Default, PartialEq)]
struct PathTable {
    exact: Map<RouteId>,
    /// Prefix (no trailing slash, or `/`) → (priority, route): the best route for that prefix.
    prefixes: Map<(i32, RouteId)>,
}

/// Two routes with the same host, path and match kind: only `winner` is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    pub winner: RouteId,
    pub loser: RouteId,
}

impl Router {
    /// Builds the index. `routes` must be in tie-break order (earlier wins a full tie). The
    /// default route only serves what nothing else matches, so it is not indexed.
    pub fn build(routes: &[Route], default_route: Option<RouteId>) -> (Self, Vec<Conflict>) {
        let mut router = Router { default_route, ..Default::default() };
        let mut conflicts = Vec::new();
        for (id, route) in routes.iter().enumerate() {
            if Some(id) == default_route {
                continue;
            }
            let table = match route.host.as_deref() {
                None => &mut router.any_host,
                Some(host) => match host.strip_prefix("*.") {
                    Some(suffix) => router.wildcard_hosts.entry(suffix.into()).or_default(),
                    None => router.exact_hosts.entry(host.into()).or_default(),
                },
            };
            match route.match_kind {
                MatchKind::Exact => {
                    if let Some(&winner) = table.exact.get(route.path.as_str()) {
                        conflicts.push(Conflict { winner, loser: id });
                    } else {
                        table.exact.insert(route.path.as_str().into(), id);
                    }
                }
                MatchKind::Prefix => match table.prefixes.get_mut(route.path.as_str()) {
                    None => {
                        table.prefixes.insert(route.path.as_str().into(), (route.priority, id));
                    }
                    Some(best) if route.priority > best.0 => *best = (route.priority, id),
                    Some(best) if route.priority == best.0 => conflicts.push(Conflict { winner: best.1, loser: id }),
                    // A lower priority on the same prefix is shadowed on purpose.
                    Some(_) => {}
                },
            }
        }
        (router, conflicts)
    }

    /// The route for a request's host (any case, port allowed) and raw path.
    pub fn lookup(&self, host: &str, path: &str) -> Option<RouteId> {
        let path = if path.is_empty() { "/" } else { path };
        let mut buf = [0u8; MAX_HOST_LEN];
        if let Some(host) = normalise_host(host, &mut buf) {
            if let Some(id) = self.exact_hosts.get(host).and_then(|t| t.lookup(path)) {
                return Some(id);
            }
            if !self.wildcard_hosts.is_empty() {
                let parent = host.split_once('.').map(|(_, rest)| rest);
                if let Some(id) = parent.and_then(|p| self.wildcard_hosts.get(p)).and_then(|t| t.lookup(path)) {
                    return Some(id);
                }
            }
        }
        self.any_host.lookup(path).or(self.default_route)
    }

    pub fn default_route(&self) -> Option<RouteId> {
        self.default_route
    }
}

impl PathTable {
    /// Exact first; then the prefixes the path could be under, longest first: `/a/b/c` tries
    /// `/a/b/c`, `/a/b`, `/a`, `/`. One hash lookup per path segment, whatever the table size.
    fn lookup(&self, path: &str) -> Option<RouteId> {
        if let Some(&id) = self.exact.get(path) {
            return Some(id);
        }
        if self.prefixes.is_empty() {
            return None;
        }
        let mut candidate = path.strip_suffix('/').unwrap_or(path);
        loop {
            let key = if candidate.is_empty() { "/" } else { candidate };
            if let Some(&(_, id)) = self.prefixes.get(key) {
                return Some(id);
            }
            if candidate.is_empty() {
                return None;
            }
            candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
        }
    }
}

/// Element-wise prefix match: `/foo` matches `/foo`, `/foo/`, `/foo/bar`, not `/foobar`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Lower-cases `host` into `buf` without its port or trailing dot. None if it cannot be a host.
pub(crate) fn normalise_host<'b>(host: &str, buf: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b str> {
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    let len = host.len();
    if len == 0 || len > buf.len() {
        return None;
    }
    let out = &mut buf[..len];
    out.copy_from_slice(host.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`; a bare IPv6 literal is left alone.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PathRewrite, RuleType};
    use crate::state::ObjectKey;

    fn route(host: Option<&str>, path: &str, kind: MatchKind, priority: i32) -> Route {
        Route {
            id: format!("{host:?}{path}{kind:?}"),
            ingress: ObjectKey::new("ns", "ing"),
            host: host.map(str::to_string),
            path: path.to_string(),
            match_kind: kind,
            rule_type: RuleType::Prefix,
            rewrite: PathRewrite::None,
            backend: 0,
            preserve_host: true,
            redirect_to_https: None,
            priority,
            tls_secret: None,
            response_timeout_ms: None,
            hsts: None,
        }
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        assert!(prefix_matches("/k8s", "/k8s"));
        assert!(prefix_matches("/k8s", "/k8s/"));
        assert!(prefix_matches("/k8s", "/k8s/a/b"));
        assert!(!prefix_matches("/k8s", "/k8sfoo"));
        assert!(!prefix_matches("/k8s", "/k8"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn lookup_table() {
        use MatchKind::*;
        let routes = vec![
            route(Some("a.com"), "/k8s", Prefix, 0),     // 0
            route(Some("a.com"), "/k8s/api", Prefix, 0), // 1
            route(Some("a.com"), "/k8s", Exact, 0),      // 2
            route(Some("*.a.com"), "/", Prefix, 0),      // 3
            route(None, "/", Prefix, 0),                 // 4
            route(None, "/grafana", Prefix, 0),          // 5
            route(Some("b.com"), "/x", Prefix, 0),       // 6
            route(Some("b.com"), "/x", Prefix, 5),       // 7: higher priority wins a same-path tie
        ];
        let (router, conflicts) = Router::build(&routes, None);
        assert!(conflicts.is_empty());
        let cases = [
            ("a.com", "/k8s", Some(2)),
            ("A.COM:443", "/k8s/", Some(0)),
            ("a.com", "/k8s/api/v1", Some(1)),
            ("a.com", "/k8s/apix", Some(0)),
            ("a.com", "/k8sfoo", Some(4)),
            ("a.com.", "/k8s/x", Some(0)),
            ("x.a.com", "/k8s", Some(3)),
            ("y.x.a.com", "/k8s", Some(4)), // wildcard matches exactly one label
            ("other", "/grafana/d", Some(5)),
            ("other", "/grafanax", Some(4)),
            ("b.com", "/x/y", Some(7)),
            ("", "/", Some(4)),
            ("[::1]:8443", "/grafana", Some(5)),
        ];
        for (host, path, expected) in cases {
            assert_eq!(router.lookup(host, path), expected, "{host} {path}");
        }
    }

    #[test]
    fn default_route_serves_what_nothing_else_matches() {
        let routes = vec![route(Some("a.com"), "/x", MatchKind::Prefix, 0), route(None, "/", MatchKind::Prefix, 0)];
        let (router, _) = Router::build(&routes, Some(1));
        assert_eq!(router.lookup("a.com", "/x"), Some(0));
        assert_eq!(router.lookup("a.com", "/y"), Some(1));
        let (router, _) = Router::build(&routes[..1], None);
        assert_eq!(router.lookup("b.com", "/x"), None);
    }

    #[test]
    fn identical_routes_conflict_and_first_wins() {
        let routes = vec![
            route(Some("a.com"), "/x", MatchKind::Prefix, 0),
            route(Some("a.com"), "/x", MatchKind::Prefix, 0),
            route(Some("a.com"), "/e", MatchKind::Exact, 0),
            route(Some("a.com"), "/e", MatchKind::Exact, 0),
        ];
        let (router, conflicts) = Router::build(&routes, None);
        assert_eq!(conflicts, vec![Conflict { winner: 0, loser: 1 }, Conflict { winner: 2, loser: 3 }]);
        assert_eq!(router.lookup("a.com", "/x/1"), Some(0));
        assert_eq!(router.lookup("a.com", "/e"), Some(2));
    }

    #[test]
    fn strip_port_cases() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:443"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("::1"), "::1");
    }
}
