//! The immutable routing table that `translate` builds and the proxy reads, one `Arc` per swap.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;

use serde::Serialize;

use crate::router::Router;
use crate::state::ObjectKey;
use crate::tls::CertStore;

/// Everything the data plane needs to answer requests. Built whole, never mutated.
#[derive(Debug, Default, PartialEq)]
pub struct Config {
    pub routes: Vec<Route>,
    pub backends: Vec<Backend>,
    pub router: Router,
    pub certificates: CertStore,
    pub warnings: Vec<Warning>,
    /// The Ingresses served (selected and not refused), in translation order.
    pub ingresses: Vec<ObjectKey>,
}

pub type RouteId = usize;
pub type BackendId = usize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Stable name: `namespace/ingress#rule.path` (or `#default`).
    pub id: String,
    pub ingress: ObjectKey,
    /// Lower-case host, `*.suffix` for a wildcard, `None` for any host.
    pub host: Option<String>,
    /// Normalised path: no trailing slash except for `/`.
    pub path: String,
    #[serde(rename = "match")]
    pub match_kind: MatchKind,
    /// How the Ingress asked for it: `Exact`, `Prefix`, or the Traefik rule type.
    pub rule_type: RuleType,
    pub rewrite: PathRewrite,
    pub backend: BackendId,
    pub preserve_host: bool,
    /// Redirect this route's http requests to https even with `--no-https-redirect`.
    pub redirect_to_https: Option<RedirectKind>,
    pub priority: i32,
    pub tls_secret: Option<ObjectKey>,
    /// `portier.io/response-timeout`, overriding `--upstream-response-timeout`.
    pub response_timeout_ms: Option<u64>,
    /// `Strict-Transport-Security` added to https responses (opt-in by annotation).
    pub hsts: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MatchKind {
    Exact,
    /// Element-wise prefix: `/foo` matches `/foo`, `/foo/`, `/foo/bar`, not `/foobar`.
    Prefix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RuleType {
    Exact,
    Prefix,
    PathPrefix,
    PathPrefixStrip,
    Path,
    PathStrip,
    ReplacePath,
}

impl RuleType {
    pub fn from_traefik_name(name: &str) -> Option<Self> {
        Some(match name {
            "PathPrefix" => Self::PathPrefix,
            "PathPrefixStrip" => Self::PathPrefixStrip,
            "Path" => Self::Path,
            "PathStrip" => Self::PathStrip,
            "ReplacePath" => Self::ReplacePath,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value")]
pub enum PathRewrite {
    None,
    /// Remove the matched prefix; the backend learns it from `X-Forwarded-Prefix`.
    StripPrefix,
    /// Replace the matched prefix with this (`rewrite-target`); original in `X-Replaced-Path`.
    ReplacePrefix(String),
    /// Replace the whole path (Traefik `ReplacePath`); original in `X-Replaced-Path`.
    ReplaceWhole(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RedirectKind {
    /// 301/308 when true, 302/307 otherwise (Traefik's `redirect-permanent`).
    pub permanent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// How a backend is reached: scheme, protocol and TLS settings, shared by all its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transport {
    pub scheme: Scheme,
    /// HTTP/2 to the backend: h2c for http, ALPN h2 for https.
    pub http2: bool,
    /// Verify the backend certificate (https only).
    pub verify: bool,
    /// SNI and verification name (https only).
    pub server_name: String,
}

#[derive(Debug, Serialize)]
pub struct Backend {
    /// `namespace/service:port`.
    pub name: String,
    pub service: ObjectKey,
    pub transport: Transport,
    pub target: Target,
    /// `Host` sent when the Ingress disables `preserve-host`.
    pub authority: String,
    /// Round-robin position (see `proxy::balance`).
    #[serde(skip)]
    pub next: AtomicUsize,
}

impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.service == other.service
            && self.transport == other.transport
            && self.target == other.target
            && self.authority == other.authority
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Endpoint<'a> {
    Socket(SocketAddr),
    Name(&'a str, u16),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "camelCase")]
pub enum Target {
    /// Ready endpoints from EndpointSlices, sorted.
    Endpoints(Vec<SocketAddr>),
    /// Resolved when dialling.
    ExternalName { host: String, port: u16 },
    /// The Service or its port could not be resolved; requests get 503 with this reason.
    Unavailable(String),
}

/// Something in the input that portier refused or ignored, with the object it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct Warning {
    /// `Ingress namespace/name`, `file path`, … ; empty when global.
    pub object: String,
    pub message: String,
    /// True when the whole object was refused (not served at all).
    pub refused: bool,
}

impl Warning {
    pub fn ingress(key: &ObjectKey, message: impl Into<String>, refused: bool) -> Self {
        Self { object: format!("Ingress {key}"), message: message.into(), refused }
    }
}

/// Longest part of a value from the input that a warning quotes.
const QUOTED_CHARS: usize = 80;

/// A value from the input, quoted for a warning: cut after `QUOTED_CHARS` characters, with its
/// full length, so that a hostile value cannot make a warning (and the log line, the admin API
/// and the Kubernetes Event that repeat it) megabytes long.
pub fn quoted(value: &str) -> String {
    match value.char_indices().nth(QUOTED_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &value[..cut], value.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::quoted;

    #[test]
    fn quoted_values_are_cut_on_a_character_boundary_with_their_length() {
        assert_eq!(quoted("a\"b"), r#""a\"b""#);
        let long = "é".repeat(100);
        let shown = quoted(&long);
        assert_eq!(shown, format!("{:?}… (200 bytes)", "é".repeat(80)));
    }
}
