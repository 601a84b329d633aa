//! Command-line flags. Names are a contract: tests, docs and users rely on them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;

use crate::selector::LabelSelector;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "portier",
    version,
    about = "A Kubernetes ingress reverse proxy: Traefik 1.7 Ingress semantics, forced HTTPS, one door to your dashboards.",
    long_about = None
)]
pub struct Cli {
    /// YAML files or folders of Kubernetes manifests (multi-document, .yaml/.yml, searched
    /// recursively). When given, no Kubernetes API is contacted. Watched for changes.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub manifests: Vec<PathBuf>,

    /// Kubeconfig file for the Kubernetes API. Default: in-cluster ServiceAccount, else
    /// KUBECONFIG, else ~/.kube/config.
    #[arg(long, value_name = "FILE", conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use.
    #[arg(long, value_name = "NAME", conflicts_with = "manifests")]
    pub context: Option<String>,

    /// Watch only these namespaces (repeatable). Default: all.
    #[arg(long = "namespace", value_name = "NS", num_args = 1.., conflicts_with = "manifests")]
    pub namespaces: Vec<String>,

    /// Address written into status.loadBalancer.ingress of served Ingresses (repeatable). The
    /// DaemonSet in deploy/ passes the node's IP.
    #[arg(long, value_name = "IP", num_args = 1.., conflicts_with = "manifests")]
    pub publish_ip: Vec<std::net::IpAddr>,

    /// Host name written into status.loadBalancer.ingress of served Ingresses.
    #[arg(long, value_name = "NAME", conflicts_with = "manifests")]
    pub publish_hostname: Option<String>,

    /// Copy the load-balancer addresses of this Service (NAMESPACE/NAME) into served Ingresses.
    #[arg(long, value_name = "NS/NAME", value_parser = parse_object_key, conflicts_with = "manifests")]
    pub publish_service: Option<crate::state::ObjectKey>,

    /// Address of the http entry, which redirects to https.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:80")]
    pub http_addr: SocketAddr,

    /// Address of the https entry, which terminates TLS and routes.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:443")]
    pub https_addr: SocketAddr,

    /// Address of the admin endpoints (/healthz, /readyz, /api/...). Keep it on loopback unless
    /// you protect it otherwise.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub admin_addr: SocketAddr,

    /// Only Ingresses whose labels match this Kubernetes label selector are used
    /// (a=b, a!=b, a in (x,y), a notin (x), a, !a; comma means and). Default: all.
    #[arg(long, value_name = "SELECTOR", value_parser = parse_selector)]
    pub label_selector: Option<LabelSelector>,

    /// Only Ingresses of exactly this class (annotation kubernetes.io/ingress.class or
    /// spec.ingressClassName). Unset: Ingresses with no class, an empty one, "traefik" or "portier".
    #[arg(long, value_name = "NAME")]
    pub ingress_class: Option<String>,

    /// Default certificate, PEM (the chain may follow the leaf). Without it, a self-signed one is
    /// generated at start.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key of --tls-cert, PEM (PKCS#1, PKCS#8 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Extra CA certificates (PEM) trusted for HTTPS backends, added to the system and webpki roots.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub backend_ca: Vec<PathBuf>,

    /// Do not verify the certificates of any HTTPS backend (Traefik's ssl.insecureSkipVerify).
    /// Prefer the per-Ingress annotation portier.io/insecure-skip-verify: "true".
    #[arg(long)]
    pub insecure_skip_verify: bool,

    /// Allow ExternalName Services, the documented way for a route to reach another namespace.
    /// `--allow-external-name=false` refuses them cluster-wide.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_external_name: bool,

    /// Accept ExternalName targets that are loopback or link-local IP literals (127.0.0.1,
    /// 169.254.169.254, ::1, fe80::…). Refused by default: they reach the node itself.
    #[arg(long)]
    pub allow_node_local_external_name: bool,

    /// Port written in https redirect Locations. Default: the port of --https-addr; omitted from
    /// the URL when it is 443.
    #[arg(long, value_name = "N")]
    pub https_redirect_port: Option<u16>,

    /// Serve routes on the http entry instead of redirecting every request to https.
    #[arg(long)]
    pub no_https_redirect: bool,

    /// Coalesce changes arriving within this window into one rebuild (e.g. 200ms, 1s).
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub throttle: Duration,

    /// Clients whose X-Forwarded-* headers are trusted (CIDR or IP, repeatable). Others have them
    /// replaced.
    #[arg(long, value_name = "CIDR", num_args = 1.., value_parser = parse_net)]
    pub forwarded_trusted_ips: Vec<IpNet>,

    /// Oldest TLS version the https entry accepts (rustls has no TLS 1.1 or older at all).
    #[arg(long, value_enum, value_name = "VERSION", default_value_t = TlsVersion::V1_2)]
    pub tls_min_version: TlsVersion,

    /// Concurrent client connections per entry; more are closed at once.
    #[arg(long, value_name = "N", default_value = crate::proxy::entry::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// A TLS handshake on the https entry must finish within this.
    #[arg(long, value_name = "DURATION", default_value = crate::proxy::entry::DEFAULT_TLS_HANDSHAKE_TIMEOUT, value_parser = parse_timeout)]
    pub tls_handshake_timeout: Duration,

    /// A request's head (request line and headers) must arrive within this from its first byte
    /// (against slowloris); the connection is closed otherwise.
    #[arg(long, value_name = "DURATION", default_value = crate::proxy::entry::DEFAULT_HEADER_READ_TIMEOUT, value_parser = parse_timeout)]
    pub header_read_timeout: Duration,

    /// A keep-alive client connection with no request in flight is closed after this (HTTP/2:
    /// with GOAWAY).
    #[arg(long, value_name = "DURATION", default_value = crate::proxy::connection::DEFAULT_IDLE_TIMEOUT, value_parser = parse_timeout)]
    pub idle_timeout: Duration,

    /// Largest request head in bytes, request line and headers together (HTTP/2: the header
    /// list); larger gets 431. At least 8192.
    #[arg(long, value_name = "BYTES", default_value = crate::proxy::entry::DEFAULT_MAX_HEADER_BYTES, value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,

    /// Most header fields in one HTTP/1.1 request; more gets 431.
    #[arg(long, value_name = "N", default_value = crate::proxy::entry::DEFAULT_MAX_HEADERS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_headers: u32,

    /// Longest request target (path and query) in bytes; longer gets 414.
    #[arg(long, value_name = "BYTES", default_value = crate::proxy::entry::DEFAULT_MAX_URI_LENGTH, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_uri_length: u32,

    /// Concurrent streams a client may open on one HTTP/2 connection (advertised in SETTINGS;
    /// streams over it are refused).
    #[arg(long, value_name = "N", default_value = crate::proxy::entry::DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_concurrent_streams: u32,

    /// Connecting to a backend must succeed within this (else 504).
    #[arg(long, value_name = "DURATION", default_value = crate::proxy::upstream::DEFAULT_CONNECT_TIMEOUT, value_parser = parse_timeout)]
    pub upstream_connect_timeout: Duration,

    /// The TLS handshake with an HTTPS backend must finish within this (else 504).
    #[arg(long, value_name = "DURATION", default_value = crate::proxy::upstream::DEFAULT_TLS_HANDSHAKE_TIMEOUT, value_parser = parse_timeout)]
    pub upstream_tls_handshake_timeout: Duration,

    /// A backend must send its response headers within this (else 504); per Ingress with the
    /// annotation portier.io/response-timeout. Bodies and upgraded connections have no timeout.
    #[arg(long, value_name = "DURATION", default_value = crate::proxy::upstream::DEFAULT_RESPONSE_HEADER_TIMEOUT, value_parser = parse_timeout)]
    pub upstream_response_timeout: Duration,

    /// On SIGTERM/SIGINT: stop accepting, answer /readyz 503, let open requests and upgraded
    /// connections finish for at most this long, then exit 0.
    #[arg(long, value_name = "DURATION", default_value = crate::proxy::entry::DEFAULT_GRACE_PERIOD, value_parser = humantime::parse_duration)]
    pub grace_period: Duration,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log level or filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,

    /// Write one line per request to stdout (method, host, path without the query, status, bytes,
    /// durations, route, backend). Never headers, so never Authorization or Cookie values.
    #[arg(long)]
    pub access_log: bool,

    /// Access log format: json, or common (Common Log Format followed by host, route, backend
    /// address and durations).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = AccessLogFormat::Json)]
    pub access_log_format: AccessLogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    V1_2,
    #[value(name = "1.3")]
    V1_3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessLogFormat {
    Json,
    Common,
}

/// A timeout: a duration of at least 1ms (zero would fail every connection or request at once).
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.as_millis() == 0 {
        return Err("a timeout must be at least 1ms".into());
    }
    Ok(d)
}

fn parse_selector(s: &str) -> Result<LabelSelector, String> {
    LabelSelector::parse(s).map_err(|e| e.to_string())
}

fn parse_object_key(s: &str) -> Result<crate::state::ObjectKey, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(crate::state::ObjectKey::new(ns, name))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (10.0.0.0/8) or an IP address"))
}
