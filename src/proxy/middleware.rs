//! Request and response rewriting: redirects (to https, trailing slash), strip and replace of the
//! path, forwarding headers, hop-by-hop headers. Pure functions over `http` types.

use std::borrow::Cow;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use ipnet::IpNet;

use crate::config::{MatchKind, PathRewrite, Route};
use crate::router::strip_port;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub const X_REPLACED_PATH: HeaderName = HeaderName::from_static("x-replaced-path");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// 301 for GET and HEAD, 308 for other methods (which must keep their body); with
/// `permanent = false`, 302 and 307 (Traefik's non-permanent redirects).
pub fn redirect_status(method: &Method, permanent: bool) -> StatusCode {
    let safe = method == Method::GET || method == Method::HEAD;
    match (permanent, safe) {
        (true, true) => StatusCode::MOVED_PERMANENTLY,
        (true, false) => StatusCode::PERMANENT_REDIRECT,
        (false, true) => StatusCode::FOUND,
        (false, false) => StatusCode::TEMPORARY_REDIRECT,
    }
}

/// `https://<host without port>[:port unless 443]<path and query>`, from what the client sent.
/// None when the host is missing or not a plain host name / IP literal.
pub fn https_location(host: &str, https_port: u16, path_and_query: &str) -> Option<String> {
    let host = strip_port(host);
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')),
    };
    if !valid {
        return None;
    }
    let path = if path_and_query.starts_with('/') { path_and_query } else { "/" };
    Some(if https_port == 443 { format!("https://{host}{path}") } else { format!("https://{host}:{https_port}{path}") })
}

/// What a route does with the path before proxying.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewritten<'a> {
    /// Send upstream with this path and query, and these headers.
    Forward { path_and_query: Cow<'a, str>, forwarded_prefix: Option<&'a str>, replaced_path: Option<&'a str> },
    /// The bare prefix of a strip route: redirect to `prefix/` so relative URLs resolve under it.
    SlashRedirect(String),
}

pub fn rewrite<'a>(route: &'a Route, path: &'a str, query: Option<&'a str>) -> Rewritten<'a> {
    let with_query = |p: &str| match query {
        Some(q) => format!("{p}?{q}"),
        None => p.to_string(),
    };
    let original = || match query {
        Some(_) => Cow::Owned(with_query(path)),
        None => Cow::Borrowed(path),
    };
    let rest = || {
        if route.path == "/" {
            path
        } else {
            path.get(route.path.len()..).unwrap_or("")
        }
    };
    match &route.rewrite {
        PathRewrite::None => {
            Rewritten::Forward { path_and_query: original(), forwarded_prefix: None, replaced_path: None }
        }
        PathRewrite::StripPrefix if route.path == "/" => {
            Rewritten::Forward { path_and_query: original(), forwarded_prefix: None, replaced_path: None }
        }
        PathRewrite::StripPrefix => {
            if route.match_kind == MatchKind::Prefix && path == route.path {
                return Rewritten::SlashRedirect(with_query(&format!("{path}/")));
            }
            let rest = rest();
            let stripped = if rest.is_empty() { "/" } else { rest };
            Rewritten::Forward {
                path_and_query: Cow::Owned(with_query(stripped)),
                forwarded_prefix: Some(route.path.trim_end_matches('/')),
                replaced_path: None,
            }
        }
        PathRewrite::ReplacePrefix(target) => {
            let replaced = format!("{target}{}", rest());
            let replaced = if replaced.is_empty() { "/".to_string() } else { replaced };
            Rewritten::Forward {
                path_and_query: Cow::Owned(with_query(&replaced)),
                forwarded_prefix: None,
                replaced_path: Some(path),
            }
        }
        PathRewrite::ReplaceWhole(target) => Rewritten::Forward {
            path_and_query: Cow::Owned(with_query(target)),
            forwarded_prefix: None,
            replaced_path: Some(path),
        },
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those the `Connection` header names.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive for tunnelling.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most requests and responses carry none: one pass over the names instead of a hashed
    // removal of each.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(&name);
        }
    }
    for name in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove(header::CONNECTION);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The fields [`strip_hop_by_hop`] always removes (besides those `Connection` names, which it
/// also removes).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        &header::CONNECTION,
        &header::UPGRADE,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::PROXY_AUTHENTICATE,
    ]
    .contains(&name)
}

/// HTTP/2 clients send each cookie as its own field; HTTP/1.1 backends expect one `Cookie`
/// header, so they are joined with "; " (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

/// True for an HTTP/1.1 upgrade request (`Connection: upgrade` plus `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// What the proxy knows about a client connection, for the forwarding headers: built once per
/// connection, so a request only clones the values (no formatting, no allocation).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The client's address (X-Forwarded-For, X-Real-Ip).
    pub ip: HeaderValue,
    /// `http` or `https` (X-Forwarded-Proto).
    pub proto: HeaderValue,
    /// The entry's port the client connected to (X-Forwarded-Port).
    pub port: HeaderValue,
    /// The client is a trusted proxy: keep the X-Forwarded-* it sent, append to X-Forwarded-For.
    pub trusted: bool,
}

impl ClientInfo {
    pub fn new(ip: IpAddr, proto: &'static str, port: u16, trusted: bool) -> Self {
        Self {
            ip: HeaderValue::try_from(ip.to_string()).unwrap_or(HeaderValue::from_static("")),
            proto: HeaderValue::from_static(proto),
            port: HeaderValue::from(port),
            trusted,
        }
    }
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&ip))
}

/// Sets X-Forwarded-For/-Proto/-Host/-Port and X-Real-Ip. Values from untrusted clients are
/// replaced; X-Forwarded-Prefix and X-Replaced-Path are always portier's own.
pub fn set_forwarding_headers(headers: &mut HeaderMap, client: &ClientInfo, host: Option<&HeaderValue>) {
    let prior_for = if client.trusted {
        let values: Vec<&str> = headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(", "))
    } else {
        None
    };
    let xff = match prior_for {
        Some(prior) => client.ip.to_str().ok().and_then(|ip| HeaderValue::try_from(format!("{prior}, {ip}")).ok()),
        None => Some(client.ip.clone()),
    };
    // Set only by portier, from the route: a client's own are dropped.
    if headers.keys().any(|n| n == X_FORWARDED_PREFIX || n == X_REPLACED_PATH) {
        headers.remove(&X_FORWARDED_PREFIX);
        headers.remove(&X_REPLACED_PATH);
    }
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let mut set = |name: HeaderName, value: &HeaderValue| {
        if !(client.trusted && headers.contains_key(&name)) {
            headers.insert(name, value.clone());
        }
    };
    set(X_FORWARDED_PROTO, &client.proto);
    set(X_FORWARDED_HOST, host.unwrap_or(&HeaderValue::from_static("")));
    set(X_FORWARDED_PORT, &client.port);
    set(X_REAL_IP, &client.ip);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleType;
    use crate::state::ObjectKey;

    fn route(path: &str, kind: MatchKind, rewrite: PathRewrite) -> Route {
        Route {
            id: "r".into(),
            ingress: ObjectKey::new("ns", "i"),
            host: None,
            path: path.into(),
            match_kind: kind,
            rule_type: RuleType::PathPrefixStrip,
            rewrite,
            backend: 0,
            preserve_host: true,
            redirect_to_https: None,
            priority: 0,
            tls_secret: None,
            response_timeout_ms: None,
            hsts: None,
        }
    }

    fn forwarded(r: Rewritten<'_>) -> (String, Option<String>, Option<String>) {
        match r {
            Rewritten::Forward { path_and_query, forwarded_prefix, replaced_path } => {
                (path_and_query.into_owned(), forwarded_prefix.map(String::from), replaced_path.map(String::from))
            }
            Rewritten::SlashRedirect(l) => panic!("unexpected redirect to {l}"),
        }
    }

    #[test]
    fn prefix_strip_cases() {
        let r = route("/k8s", MatchKind::Prefix, PathRewrite::StripPrefix);
        assert_eq!(rewrite(&r, "/k8s", None), Rewritten::SlashRedirect("/k8s/".into()));
        assert_eq!(rewrite(&r, "/k8s", Some("a=1")), Rewritten::SlashRedirect("/k8s/?a=1".into()));
        assert_eq!(forwarded(rewrite(&r, "/k8s/", None)), ("/".into(), Some("/k8s".into()), None));
        assert_eq!(forwarded(rewrite(&r, "/k8s/a/b", Some("q"))), ("/a/b?q".into(), Some("/k8s".into()), None));
        assert_eq!(forwarded(rewrite(&r, "/k8s/a%2Fb", None)).0, "/a%2Fb");
    }

    #[test]
    fn path_strip_is_exact() {
        let r = route("/k8s", MatchKind::Exact, PathRewrite::StripPrefix);
        assert_eq!(forwarded(rewrite(&r, "/k8s", Some("x=1"))), ("/?x=1".into(), Some("/k8s".into()), None));
    }

    #[test]
    fn replace_prefix_and_whole() {
        let r = route("/old", MatchKind::Prefix, PathRewrite::ReplacePrefix("/new".into()));
        assert_eq!(forwarded(rewrite(&r, "/old/x", Some("q=1"))), ("/new/x?q=1".into(), None, Some("/old/x".into())));
        assert_eq!(forwarded(rewrite(&r, "/old", None)).0, "/new");
        let r = route("/old", MatchKind::Prefix, PathRewrite::ReplacePrefix("".into()));
        assert_eq!(forwarded(rewrite(&r, "/old", None)).0, "/");
        assert_eq!(forwarded(rewrite(&r, "/old/x", None)).0, "/x");
        let r = route("/", MatchKind::Prefix, PathRewrite::ReplacePrefix("/app".into()));
        assert_eq!(forwarded(rewrite(&r, "/x", None)).0, "/app/x");
        let r = route("/", MatchKind::Prefix, PathRewrite::ReplaceWhole("/fixed".into()));
        assert_eq!(
            forwarded(rewrite(&r, "/any/thing", Some("q"))),
            ("/fixed?q".into(), None, Some("/any/thing".into()))
        );
    }

    #[test]
    fn https_location_cases() {
        assert_eq!(https_location("a.com", 443, "/k8s/x?y=1").as_deref(), Some("https://a.com/k8s/x?y=1"));
        assert_eq!(https_location("a.com:80", 8443, "/").as_deref(), Some("https://a.com:8443/"));
        assert_eq!(https_location("[::1]:80", 443, "/p").as_deref(), Some("https://[::1]/p"));
        assert_eq!(https_location("", 443, "/"), None);
        assert_eq!(https_location("evil.com/x", 443, "/"), None);
        assert_eq!(https_location("a.com", 443, "*").as_deref(), Some("https://a.com/"));
        assert_eq!(https_location("a.com:80:90", 443, "/"), None);
        assert_eq!(https_location("a.com]", 443, "/"), None);
        assert_eq!(https_location("[::1", 443, "/"), None);
    }

    #[test]
    fn redirect_statuses() {
        assert_eq!(redirect_status(&Method::GET, true), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(redirect_status(&Method::HEAD, true), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(redirect_status(&Method::POST, true), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(redirect_status(&Method::GET, false), StatusCode::FOUND);
        assert_eq!(redirect_status(&Method::PUT, false), StatusCode::TEMPORARY_REDIRECT);
    }

    #[test]
    fn http2_cookies_are_joined_for_http1_backends() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().collect::<Vec<_>>(), vec!["a=1; b=2"]);
        let mut one = HeaderMap::new();
        one.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one[header::COOKIE], "a=1");
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn forwarding_headers_replace_untrusted_values() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        h.insert(X_FORWARDED_PREFIX, HeaderValue::from_static("/spoofed"));
        let client = ClientInfo::new("10.0.0.1".parse().unwrap(), "https", 443, false);
        let host = HeaderValue::from_static("a.com");
        set_forwarding_headers(&mut h, &client, Some(&host));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "a.com");
        assert_eq!(h[&X_FORWARDED_PORT], "443");
        assert_eq!(h[&X_REAL_IP], "10.0.0.1");
        assert!(!h.contains_key(&X_FORWARDED_PREFIX));

        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        let client = ClientInfo { trusted: true, ..client };
        set_forwarding_headers(&mut h, &client, Some(&host));
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn trust_matches_cidrs_and_mapped_v4() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted("10.1.2.3".parse().unwrap(), &nets));
        assert!(is_trusted("::ffff:10.1.2.3".parse().unwrap(), &nets));
        assert!(!is_trusted("11.0.0.1".parse().unwrap(), &nets));
    }
}
