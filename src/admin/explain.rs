//! `/api/explain?url=https://host/path?q`: what portier does with a GET of that URL — the route
//! that matches and what is sent upstream (path after strip or rewrite, the headers portier
//! sets, backend, addresses, scheme, verification), or the redirect it answers, or why no route
//! matches. It calls the functions the proxy itself calls (`entry_redirect`, `route_request`,
//! `upstream_host`, `set_forwarding_headers`), so it cannot drift from what the proxy does.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri};
use serde::Serialize;

use super::api::{addresses, verification};
use crate::config::{MatchKind, Route, RouteId, RuleType, Scheme};
use crate::proxy::middleware::{self, ClientInfo};
use crate::proxy::{self, EntryKind, Live, RedirectReason, Routed, Shared};
use crate::router::{normalise_host, prefix_matches, MAX_HOST_LEN};
use crate::state::ObjectKey;

/// Redirects followed (http → https → trailing slash needs two).
const MAX_REDIRECTS_FOLLOWED: usize = 3;
/// Placeholder for values that depend on the client's connection.
const CLIENT_ADDRESS: &str = "(the client's address)";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation<'a> {
    pub url: String,
    /// The entry the URL reaches: `http` or `https`.
    pub entry: &'static str,
    pub host: String,
    pub path: String,
    pub query: Option<String>,
    /// `forward`, `redirect`, `noRoute`, `unavailable` (no backend address: 503) or `badRequest`.
    pub outcome: &'static str,
    /// A route matched (also when it answers a redirect or 503).
    pub matched: bool,
    /// The status portier answers itself; null when the request is forwarded.
    pub status: Option<u16>,
    /// One sentence: what happens, or why nothing matches.
    pub reason: String,
    pub route: Option<&'a Route>,
    /// The route is the cluster's `spec.defaultBackend`, chosen because nothing else matched.
    pub default_backend: bool,
    pub redirect: Option<RedirectView>,
    pub upstream: Option<UpstreamView<'a>>,
    /// With no match: the routes of that host (and those for any host) that were tried.
    pub candidates: Vec<Candidate<'a>>,
    /// Hints about near misses (segment boundaries, trailing slashes).
    pub hints: Vec<String>,
    /// For a redirect: the explanation of where it leads.
    pub then: Option<Box<Explanation<'a>>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectView {
    pub status: u16,
    pub location: String,
    /// `https` or `trailingSlash`.
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamView<'a> {
    pub backend: &'a str,
    pub service: &'a ObjectKey,
    pub scheme: &'static str,
    pub addresses: Vec<String>,
    /// `verify`, `skip` or `none` (plain http).
    pub verification: &'static str,
    /// SNI and verification name (https only).
    pub server_name: Option<&'a str>,
    pub http2: bool,
    /// Path and query sent upstream, after strip or rewrite.
    pub path_and_query: String,
    /// The request line's target with the first address (round robin picks among all).
    pub url: Option<String>,
    /// Headers portier sets (lower-case names); every other request header passes unchanged,
    /// except hop-by-hop ones.
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    #[serde(rename = "match")]
    pub match_kind: MatchKind,
    pub rule_type: RuleType,
}

/// The `url` parameter: percent-decoded (as a form or `encodeURIComponent` sends it), or taken
/// raw up to the end of the query when it is written unencoded (`?url=https://h/p?a=1&b=2`).
pub fn url_param(query: Option<&str>) -> Option<String> {
    let query = query?;
    let start = if query.starts_with("url=") { 4 } else { query.find("&url=")? + 5 };
    let value = query.get(start..)?;
    if value.contains("://") {
        return Some(value.to_string());
    }
    let value = value.split('&').next().unwrap_or("");
    Some(percent_decode(value))
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|h| char::from(*h).to_digit(16));
        match b {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Explains a GET of `url` against the live config. Err: the URL is not an absolute http(s) URL.
pub fn explain<'a>(shared: &Shared, live: &'a Live, url: &str) -> Result<Explanation<'a>, String> {
    explain_at(shared, live, url.trim(), 0)
}

fn explain_at<'a>(shared: &Shared, live: &'a Live, url: &str, depth: usize) -> Result<Explanation<'a>, String> {
    let uri: Uri = url.parse().map_err(|e| format!("{url:?} is not a URL ({e}); give one like https://node/k8s/"))?;
    let entry = match uri.scheme_str() {
        Some("https") => EntryKind::Https,
        Some("http") => EntryKind::Http,
        _ => return Err(format!("{url:?}: give an absolute http:// or https:// URL, like https://node/k8s/")),
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    // The Host header never carries user information.
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let path = uri.path();
    let query = uri.query();
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let settings = &shared.settings;
    let mut out = Explanation {
        url: url.to_string(),
        entry: entry.as_str(),
        host: host.to_string(),
        path: path.to_string(),
        query: query.map(str::to_string),
        outcome: "forward",
        matched: false,
        status: None,
        reason: String::new(),
        route: None,
        default_backend: false,
        redirect: None,
        upstream: None,
        candidates: Vec::new(),
        hints: Vec::new(),
        then: None,
    };
    let follow = |location: &str| -> Option<Box<Explanation<'a>>> {
        if depth >= MAX_REDIRECTS_FOLLOWED {
            return None;
        }
        let absolute = if location.starts_with('/') {
            format!("{}://{authority}{location}", entry.as_str())
        } else {
            location.to_string()
        };
        explain_at(shared, live, &absolute, depth + 1).ok().map(Box::new)
    };

    // Step 2: the http entry's redirect, before routing.
    if let Some((status, location)) = proxy::entry_redirect(settings, entry, &Method::GET, host, path_and_query) {
        let Some(location) = location else {
            return Ok(bad_host(out));
        };
        out.outcome = "redirect";
        out.status = Some(status.as_u16());
        out.reason = format!(
            "the http entry redirects every request to https, keeping host, path and query, before routing (--no-https-redirect turns this off): {} to {location}",
            status.as_u16()
        );
        out.then = follow(&location);
        out.redirect = Some(RedirectView { status: status.as_u16(), location, kind: "https" });
        return Ok(out);
    }

    // Steps 3 and 4: route and rewrite.
    let config = &live.config;
    let routed = proxy::route_request(config, settings, entry, &Method::GET, host, path, query);
    let route_of = |id: RouteId| config.routes.get(id);
    match routed {
        Routed::NoRoute => {
            out.outcome = "noRoute";
            out.status = Some(StatusCode::NOT_FOUND.as_u16());
            no_match(&mut out, live, host, path);
        }
        Routed::Redirect { route, status, location, reason } => {
            out.matched = true;
            out.route = route_of(route);
            out.default_backend = config.router.default_route() == Some(route);
            let Some(location) = location else {
                return Ok(bad_host(out));
            };
            let id = out.route.map(|r| r.id.as_str()).unwrap_or_default();
            let (kind, why) = match reason {
                RedirectReason::Https => ("https", format!("route {id} redirects http to https (redirect-entry-point)")),
                RedirectReason::TrailingSlash => (
                    "trailingSlash",
                    format!("route {id} strips its prefix: the bare prefix redirects to the prefix with a slash, so relative links resolve under it"),
                ),
            };
            out.outcome = "redirect";
            out.status = Some(status.as_u16());
            out.reason = format!("{why}: {} to {location}", status.as_u16());
            out.then = follow(&location);
            out.redirect = Some(RedirectView { status: status.as_u16(), location, kind });
        }
        Routed::Forward { route: id, path_and_query, forwarded_prefix, replaced_path } => {
            let Some(route) = route_of(id) else {
                return Err("internal: the router returned an unknown route".into());
            };
            out.matched = true;
            out.route = Some(route);
            out.default_backend = config.router.default_route() == Some(id);
            let Some(backend) = config.backends.get(route.backend) else {
                return Err(format!("internal: route {} has no backend", route.id));
            };
            let addresses = addresses(backend);
            let mut headers = HeaderMap::new();
            let port = uri.port_u16().unwrap_or(match entry {
                EntryKind::Http => shared.entries.http.port(),
                EntryKind::Https => shared.entries.https.port(),
            });
            let client = ClientInfo::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), entry.as_str(), port, false);
            let host_value = HeaderValue::from_str(host).ok();
            middleware::set_forwarding_headers(&mut headers, &client, host_value.as_ref());
            let mut headers: BTreeMap<String, String> = headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            for name in [middleware::X_FORWARDED_FOR, middleware::X_REAL_IP] {
                headers.insert(name.as_str().to_string(), CLIENT_ADDRESS.to_string());
            }
            if let Some(prefix) = forwarded_prefix {
                headers.insert(middleware::X_FORWARDED_PREFIX.as_str().to_string(), prefix.to_string());
            }
            if let Some(original) = replaced_path {
                headers.insert(middleware::X_REPLACED_PATH.as_str().to_string(), original.to_string());
            }
            if let Some(host_header) = proxy::upstream_host(route, backend, host) {
                headers.insert(header::HOST.as_str().to_string(), host_header.to_string());
            }
            let scheme = backend.transport.scheme.as_str();
            let default = if out.default_backend { " (the default backend: nothing else matched)" } else { "" };
            if addresses.is_empty() {
                out.outcome = "unavailable";
                out.status = Some(StatusCode::SERVICE_UNAVAILABLE.as_u16());
                out.reason = format!(
                    "route {}{default} matches, but backend {} has no address: {}",
                    route.id,
                    backend.name,
                    proxy::unavailable_reason(backend)
                );
            } else {
                out.reason = format!(
                    "route {}{default} matches: sent to backend {} ({scheme}) as {path_and_query}",
                    route.id, backend.name
                );
            }
            out.upstream = Some(UpstreamView {
                backend: &backend.name,
                service: &backend.service,
                scheme,
                url: addresses.first().map(|a| format!("{scheme}://{a}{path_and_query}")),
                addresses,
                verification: verification(backend),
                server_name: (backend.transport.scheme == Scheme::Https)
                    .then_some(backend.transport.server_name.as_str()),
                http2: backend.transport.http2,
                path_and_query: path_and_query.into_owned(),
                headers,
            });
        }
    }
    Ok(out)
}

fn bad_host(mut out: Explanation<'_>) -> Explanation<'_> {
    out.outcome = "badRequest";
    out.status = Some(StatusCode::BAD_REQUEST.as_u16());
    out.reason = format!("{:?} is not a valid host for a redirect: portier answers 400", out.host);
    out
}

/// Router host semantics: exact (any case, port ignored), `*.suffix` for exactly one more label,
/// no host for any host.
fn host_matches(route_host: Option<&str>, host: &str) -> bool {
    let Some(route_host) = route_host else { return true };
    let mut buf = [0u8; MAX_HOST_LEN];
    let Some(host) = normalise_host(host, &mut buf) else { return false };
    match route_host.strip_prefix("*.") {
        Some(suffix) => host.split_once('.').is_some_and(|(_, parent)| parent == suffix),
        None => route_host == host,
    }
}

fn no_match<'a>(out: &mut Explanation<'a>, live: &'a Live, host: &str, path: &str) {
    let config = &live.config;
    let default = config.router.default_route();
    let tried: Vec<&Route> = config
        .routes
        .iter()
        .enumerate()
        .filter(|(id, r)| Some(*id) != default && host_matches(r.host.as_deref(), host))
        .map(|(_, r)| r)
        .collect();
    let for_host = tried.iter().filter(|r| r.host.is_some()).count();
    out.candidates = tried
        .iter()
        .map(|r| Candidate {
            id: &r.id,
            host: r.host.as_deref(),
            path: &r.path,
            match_kind: r.match_kind,
            rule_type: r.rule_type,
        })
        .collect();
    out.reason = if tried.is_empty() {
        let mut hosts: Vec<&str> = config.routes.iter().filter_map(|r| r.host.as_deref()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        let known = match hosts.len() {
            0 => "no route names a host".to_string(),
            n if n > 20 => format!("hosts with routes include {}, …", hosts[..20].join(", ")),
            _ => format!("hosts with routes: {}", hosts.join(", ")),
        };
        format!("no route for host {host:?}: no Ingress rule names this host and none is for any host ({known}); portier answers 404")
    } else {
        let whose = if for_host > 0 {
            format!("host {host:?} has {for_host} route(s)")
        } else {
            "no route names this host".into()
        };
        format!("{whose}, {} for any host; none matches path {path:?}; portier answers 404", tried.len() - for_host)
    };
    for r in &tried {
        match r.match_kind {
            MatchKind::Prefix
                if r.path != "/" && path.starts_with(r.path.as_str()) && !prefix_matches(&r.path, path) =>
            {
                out.hints
                    .push(format!("prefixes match whole path segments: {} matches {0} and {0}/…, not {path}", r.path));
            }
            MatchKind::Exact if r.path.trim_end_matches('/') == path.trim_end_matches('/') => {
                out.hints.push(format!("route {} matches exactly {}, and {path} is a different path", r.id, r.path));
            }
            _ => {}
        }
        if r.path.eq_ignore_ascii_case(path) && r.path != path {
            out.hints.push(format!("paths are case-sensitive: route {} has {}", r.id, r.path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_param_decodes_forms_and_takes_raw_urls_whole() {
        assert_eq!(
            url_param(Some("url=https%3A%2F%2Fnode%2Fk8s%2F%3Fa%3D1")).as_deref(),
            Some("https://node/k8s/?a=1")
        );
        assert_eq!(url_param(Some("url=https://node/k8s/?a=1&b=2")).as_deref(), Some("https://node/k8s/?a=1&b=2"));
        assert_eq!(url_param(Some("x=1&url=http%3A%2F%2Fa+b&y=2")).as_deref(), Some("http://a b"));
        assert_eq!(url_param(Some("x=1")), None);
        assert_eq!(url_param(None), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn host_matching_follows_the_router() {
        assert!(host_matches(None, "anything"));
        assert!(host_matches(Some("a.com"), "A.COM:8443"));
        assert!(host_matches(Some("*.a.com"), "x.a.com"));
        assert!(!host_matches(Some("*.a.com"), "y.x.a.com"));
        assert!(!host_matches(Some("a.com"), "b.com"));
    }
}
