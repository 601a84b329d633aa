//! The path matcher and the strip/replace rewrite (src/router.rs `Router::build` and `lookup`,
//! src/proxy/middleware.rs `rewrite`), together as the proxy uses them.
//!
//! Input: structured (`arbitrary`): routes shaped as `translate` gives them (lower-case host or
//! `*.suffix` or none; a path starting with '/', without a trailing slash for prefixes; a rewrite
//! target starting with '/'), an optional default route, and a request (host, path, query).
//!
//! Properties: lookup never panics and returns a route id < routes.len(); it returns exactly what a
//! plain linear scan of the documented precedence returns (exact host, then wildcard, then any
//! host, then the default; Exact paths before prefixes, longer prefixes first, then priority, then
//! order); and the rewritten path starts with '/', keeps the query, is the documented strip or
//! replace of the request path, and is a valid request URI when the request's was.
#![no_main]

use std::borrow::Cow;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portier::config::{MatchKind, PathRewrite, Route, RuleType};
use portier::proxy::middleware::{rewrite, Rewritten};
use portier::router::{prefix_matches, strip_port, Router};
use portier::state::ObjectKey;

/// Path segments from a small vocabulary, so that routes and requests share prefixes often.
#[derive(Arbitrary, Debug)]
enum Segment {
    K8s,
    K8sUpper,
    Api,
    Empty,
    Dot,
    Encoded,
    Free(String),
}

impl Segment {
    fn as_str(&self) -> &str {
        match self {
            Segment::K8s => "k8s",
            Segment::K8sUpper => "K8s",
            Segment::Api => "api",
            Segment::Empty => "",
            Segment::Dot => "..",
            Segment::Encoded => "a%2Fb",
            Segment::Free(s) => s,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct PathSpec {
    segments: Vec<Segment>,
    trailing_slash: bool,
}

impl PathSpec {
    fn render(&self) -> String {
        let mut path = String::new();
        for s in &self.segments {
            path.push('/');
            path.push_str(s.as_str());
        }
        if self.trailing_slash || path.is_empty() {
            path.push('/');
        }
        path
    }
}

#[derive(Arbitrary, Debug)]
enum HostChoice {
    A,
    SubA,
    OtherSubA,
    B,
    Free(String),
}

impl HostChoice {
    fn as_str(&self) -> &str {
        match self {
            HostChoice::A => "a.com",
            HostChoice::SubA => "x.a.com",
            HostChoice::OtherSubA => "y.x.a.com",
            HostChoice::B => "b.com",
            HostChoice::Free(s) => s,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum RouteHost {
    Any,
    Exact(HostChoice),
    Wildcard(HostChoice),
}

#[derive(Arbitrary, Debug)]
enum RewriteSpec {
    None,
    Strip,
    ReplacePrefix(PathSpec),
    ReplaceWhole(PathSpec),
}

#[derive(Arbitrary, Debug)]
struct RouteSpec {
    host: RouteHost,
    path: PathSpec,
    exact: bool,
    priority: i8,
    rewrite: RewriteSpec,
}

#[derive(Arbitrary, Debug)]
enum RequestPath {
    Segments(PathSpec),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    routes: Vec<RouteSpec>,
    /// `spec.defaultBackend`: translate adds it as a `/` prefix route without rewrite.
    default_route: bool,
    host: HostChoice,
    port: Option<u16>,
    upper_case_host: bool,
    trailing_dot: bool,
    path: RequestPath,
    query: Option<String>,
}

/// Refused by translate: a path (or rewrite target) must start with '/' and contain no '?', '#',
/// spaces or control characters.
fn acceptable(path: &str) -> bool {
    path.starts_with('/') && !path.contains(['?', '#', ' ']) && !path.chars().any(char::is_control)
}

fn route(
    index: usize,
    host: Option<String>,
    path: String,
    kind: MatchKind,
    rewrite: PathRewrite,
    priority: i32,
) -> Route {
    Route {
        id: format!("ns/fuzz#{index}"),
        ingress: ObjectKey::new("ns", "fuzz"),
        host,
        path,
        match_kind: kind,
        rule_type: RuleType::Prefix,
        rewrite,
        backend: 0,
        preserve_host: true,
        redirect_to_https: None,
        priority,
        tls_secret: None,
        response_timeout_ms: None,
        hsts: None,
    }
}

fn build_routes(input: &Input) -> (Vec<Route>, Option<usize>) {
    let mut routes = Vec::new();
    for spec in &input.routes {
        let host = match &spec.host {
            RouteHost::Any => None,
            RouteHost::Exact(h) => Some(h.as_str().to_ascii_lowercase()),
            RouteHost::Wildcard(h) => Some(format!("*.{}", h.as_str().to_ascii_lowercase())),
        };
        let raw = spec.path.render();
        if !acceptable(&raw) {
            continue;
        }
        let kind = if spec.exact { MatchKind::Exact } else { MatchKind::Prefix };
        let path = match kind {
            MatchKind::Exact => raw,
            MatchKind::Prefix => match raw.trim_end_matches('/') {
                "" => "/".to_string(),
                trimmed => trimmed.to_string(),
            },
        };
        let rewrite = match &spec.rewrite {
            RewriteSpec::None => PathRewrite::None,
            RewriteSpec::Strip => PathRewrite::StripPrefix,
            RewriteSpec::ReplacePrefix(t) | RewriteSpec::ReplaceWhole(t) => {
                let target = t.render();
                if !acceptable(&target) {
                    continue;
                }
                if matches!(spec.rewrite, RewriteSpec::ReplaceWhole(_)) {
                    PathRewrite::ReplaceWhole(target)
                } else {
                    PathRewrite::ReplacePrefix(target.trim_end_matches('/').to_string())
                }
            }
        };
        routes.push(route(routes.len(), host, path, kind, rewrite, spec.priority.into()));
    }
    let default = input.default_route.then(|| {
        routes.push(route(routes.len(), None, "/".into(), MatchKind::Prefix, PathRewrite::None, 0));
        routes.len() - 1
    });
    (routes, default)
}

/// The documented precedence as a linear scan over the routes.
fn reference(routes: &[Route], default: Option<usize>, host: &str, path: &str) -> Option<usize> {
    let path = if path.is_empty() { "/" } else { path };
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let host = Some(host).filter(|h| !h.is_empty() && h.len() <= 255);
    let parent = host.as_deref().and_then(|h| h.split_once('.')).map(|(_, p)| p.to_string());
    let tiers: [&dyn Fn(&Route) -> bool; 3] = [
        &|r| host.is_some() && r.host.as_deref().is_some_and(|rh| !rh.starts_with("*.")) && r.host == host,
        &|r| parent.is_some() && r.host.as_deref().and_then(|rh| rh.strip_prefix("*.")) == parent.as_deref(),
        &|r| r.host.is_none(),
    ];
    for in_tier in tiers {
        let candidates = routes.iter().enumerate().filter(|(i, r)| Some(*i) != default && in_tier(r));
        let mut best: Option<(usize, i32, usize)> = None;
        for (i, r) in candidates {
            match r.match_kind {
                MatchKind::Exact if r.path == path => return Some(i),
                MatchKind::Exact => {}
                MatchKind::Prefix if prefix_matches(&r.path, path) => {
                    let better = match best {
                        None => true,
                        Some((len, priority, _)) => (r.path.len(), r.priority) > (len, priority),
                    };
                    if better {
                        best = Some((r.path.len(), r.priority, i));
                    }
                }
                MatchKind::Prefix => {}
            }
        }
        // An Exact match returned above: a prefix only wins a tier without one.
        if let Some((_, _, i)) = best {
            return Some(i);
        }
    }
    default
}

/// A path and query that can be sent as is: it parses whole (the http crate drops a fragment, so
/// the parse must give back the same text).
fn is_request_uri(path_and_query: &str) -> bool {
    http::uri::PathAndQuery::try_from(path_and_query).is_ok_and(|p| p.as_str() == path_and_query)
}

fuzz_target!(|input: Input| {
    let (routes, default) = build_routes(&input);
    let (router, _conflicts) = Router::build(&routes, default);

    let mut host = input.host.as_str().to_string();
    if input.trailing_dot {
        host.push('.');
    }
    if input.upper_case_host {
        host = host.to_ascii_uppercase();
    }
    if let Some(port) = input.port {
        host = format!("{host}:{port}");
    }
    let path = match &input.path {
        RequestPath::Segments(p) => p.render(),
        RequestPath::Raw(s) => s.clone(),
    };
    let query = input.query.as_deref();

    let found = router.lookup(&host, &path);
    if let Some(id) = found {
        assert!(id < routes.len(), "route id {id} of {}", routes.len());
    }
    let expected = reference(&routes, default, &host, &path);
    assert_eq!(found, expected, "host {host:?} path {path:?} routes {routes:#?}");

    let Some(id) = found else { return };
    let route = &routes[id];
    let request_pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let request_valid = path.starts_with('/')
        && http::uri::PathAndQuery::try_from(request_pq.as_str())
            .is_ok_and(|p| p.as_str() == request_pq && p.path() == path && p.query() == query);
    let with_query = |p: &str| match query {
        Some(q) => format!("{p}?{q}"),
        None => p.to_string(),
    };
    // What follows the route's path in the request path (the route matched, so it is a prefix).
    let rest = || if route.path == "/" { path.as_str() } else { &path[route.path.len()..] };

    match rewrite(route, &path, query) {
        Rewritten::SlashRedirect(location) => {
            assert_eq!(route.rewrite, PathRewrite::StripPrefix);
            assert_eq!((route.match_kind, path.as_str()), (MatchKind::Prefix, route.path.as_str()));
            assert_eq!(location, with_query(&format!("{path}/")));
        }
        Rewritten::Forward { path_and_query, forwarded_prefix, replaced_path } => {
            if path.starts_with('/') {
                assert!(path_and_query.starts_with('/'), "{path:?} became {path_and_query:?} via {route:?}");
            }
            if let Some(q) = query {
                assert!(path_and_query.ends_with(&format!("?{q}")), "query lost: {path_and_query:?}");
            }
            if request_valid {
                let targets_valid = match &route.rewrite {
                    PathRewrite::ReplacePrefix(t) | PathRewrite::ReplaceWhole(t) => t.is_empty() || is_request_uri(t),
                    _ => true,
                };
                if targets_valid {
                    assert!(is_request_uri(&path_and_query), "{request_pq:?} became {path_and_query:?} via {route:?}");
                }
            }
            let expected: Cow<str> = match &route.rewrite {
                PathRewrite::None => Cow::Borrowed(&request_pq),
                PathRewrite::StripPrefix if route.path == "/" => Cow::Borrowed(&request_pq),
                PathRewrite::StripPrefix => {
                    assert_eq!(forwarded_prefix, Some(route.path.trim_end_matches('/')));
                    let rest = rest();
                    Cow::Owned(with_query(if rest.is_empty() { "/" } else { rest }))
                }
                PathRewrite::ReplacePrefix(t) => {
                    assert_eq!(replaced_path, Some(path.as_str()));
                    let replaced = format!("{t}{}", rest());
                    Cow::Owned(with_query(if replaced.is_empty() { "/" } else { &replaced }))
                }
                PathRewrite::ReplaceWhole(t) => {
                    assert_eq!(replaced_path, Some(path.as_str()));
                    Cow::Owned(with_query(t))
                }
            };
            assert_eq!(path_and_query, expected, "{route:?}");
        }
    }
});
