//! Clients to backends: a connection pool per endpoint for HTTP/1.1 (`pool.rs`; upgrades too), a
//! multiplexing hyper client per transport for HTTP/2 backends, the connectors behind both (scheme,
//! TLS verification and server name), a DNS cache for ExternalName hosts, and the classification
//! of failures into 502/504 answers a person can act on.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::Uri;
use hyper::body::Incoming;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::config::{Scheme, Transport};
use crate::proxy::pool::EndpointPool;
use crate::tls::crypto_provider;

/// Upstream TCP connect timeout (Traefik's `dialTimeout` default is 30s; 5s fails faster on a dead
/// endpoint, which matters when a dashboard polls).
pub const DEFAULT_CONNECT_TIMEOUT: &str = "5s";
/// The TLS handshake with an HTTPS backend (as on the https entry).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: &str = "10s";
/// Time allowed between sending a request and the response headers (nginx's proxy_read_timeout
/// is 60s). Bodies and upgraded connections have no timeout.
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: &str = "60s";
/// Idle pooled connections are closed after this (Go's http.Transport default).
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a resolved ExternalName is reused before asking DNS again (kube-dns' default TTL is
/// 30s; half of it keeps Service moves quick).
pub const DNS_CACHE_TTL: Duration = Duration::from_secs(15);

pub type Connector = Bounded<HttpsConnector<HttpConnector<CachingResolver>>>;
/// What is sent upstream: the client's body, or none (a request that may be retried keeps no
/// body, so it can be sent twice).
pub type UpstreamBody = http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>;
pub type UpstreamClient = Client<Connector, UpstreamBody>;

/// How requests reach one backend.
#[derive(Clone, Debug, Default)]
pub struct BackendClients {
    /// HTTP/1.1 connections per endpoint, in the order of the backend's endpoints (one for an
    /// ExternalName): every request of an HTTP/1.1 backend, and upgrades on any backend.
    pub pools: Vec<Arc<EndpointPool>>,
    /// HTTP/2 backends (h2c, or ALPN h2): one multiplexing client for the transport.
    pub http2: Option<UpstreamClient>,
}

/// `--upstream-connect-timeout` and `--upstream-tls-handshake-timeout`.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub tls_handshake: Duration,
}

/// Makes clients, and keeps them across config swaps so pools stay warm.
pub struct Upstreams {
    verified: Arc<ClientConfig>,
    insecure: Arc<ClientConfig>,
    resolver: CachingResolver,
    timeouts: UpstreamTimeouts,
    cache: Mutex<HashMap<Transport, UpstreamClient>>,
    pools: Mutex<HashMap<(Transport, Authority), Arc<EndpointPool>>>,
}

impl Upstreams {
    /// `extra_roots`: `--backend-ca` files, added to the system and webpki roots.
    pub fn new(extra_roots: &[PathBuf], timeouts: UpstreamTimeouts) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        for file in extra_roots {
            let certs = CertificateDer::pem_file_iter(file)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--backend-ca {}: {e}", file.display()))?;
            if certs.is_empty() {
                return Err(format!("--backend-ca {}: no CERTIFICATE block found", file.display()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("--backend-ca {}: {e}", file.display()))?;
            }
        }
        let builder = || {
            ClientConfig::builder_with_provider(crypto_provider())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .map_err(|e| format!("backend TLS configuration: {e}"))
        };
        let verified = builder()?.with_root_certificates(roots).with_no_client_auth();
        let insecure =
            builder()?.dangerous().with_custom_certificate_verifier(Arc::new(SkipVerification)).with_no_client_auth();
        Ok(Self {
            verified: Arc::new(verified),
            insecure: Arc::new(insecure),
            resolver: CachingResolver::default(),
            timeouts,
            cache: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
        })
    }

    /// The pools of `authorities` (the backend's endpoints) and, for an HTTP/2 backend, its client;
    /// made once and kept across swaps, so connections stay warm.
    pub fn clients_for(&self, transport: &Transport, authorities: &[Authority]) -> Result<BackendClients, String> {
        let http2 = if transport.http2 { Some(self.http2_client(transport)?) } else { None };
        let mut cached = self.pools.lock().map_err(|_| "upstream pool cache poisoned".to_string())?;
        let mut pools = Vec::with_capacity(authorities.len());
        for authority in authorities {
            let key = (transport.clone(), authority.clone());
            let pool = match cached.get(&key) {
                Some(pool) => pool.clone(),
                None => {
                    let scheme = match transport.scheme {
                        Scheme::Http => http::uri::Scheme::HTTP,
                        Scheme::Https => http::uri::Scheme::HTTPS,
                    };
                    let target = Uri::builder()
                        .scheme(scheme)
                        .authority(authority.clone())
                        .path_and_query("/")
                        .build()
                        .map_err(|e| format!("endpoint {authority}: {e}"))?;
                    let pool = EndpointPool::new(self.connector(transport, false)?, target);
                    cached.insert(key, pool.clone());
                    pool
                }
            };
            pools.push(pool);
        }
        Ok(BackendClients { pools, http2 })
    }

    /// Drops the clients and pools no current backend uses (their idle connections close).
    pub fn retain(&self, in_use: &[(&Transport, &[Authority])]) {
        let transports: std::collections::HashSet<&Transport> = in_use.iter().map(|(t, _)| *t).collect();
        let endpoints: std::collections::HashSet<(&Transport, &Authority)> =
            in_use.iter().flat_map(|(t, addrs)| addrs.iter().map(move |a| (*t, a))).collect();
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|t, _| transports.contains(t));
        }
        if let Ok(mut pools) = self.pools.lock() {
            pools.retain(|(t, a), _| endpoints.contains(&(t, a)));
        }
    }

    fn connector(&self, transport: &Transport, http2: bool) -> Result<Connector, String> {
        let mut http = HttpConnector::new_with_resolver(self.resolver.clone());
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.timeouts.connect));
        // ALPN is set by the connector builder from the HTTP versions enabled below.
        let tls = if transport.verify { (*self.verified).clone() } else { (*self.insecure).clone() };
        let server_name = ServerName::try_from(transport.server_name.clone())
            .map_err(|e| format!("backend server name {:?}: {e}", transport.server_name))?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .with_server_name_resolver(FixedServerNameResolver::new(server_name));
        let connector = if http2 {
            builder.enable_all_versions().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        Ok(Bounded { inner: connector, limit: (transport.scheme == Scheme::Https).then_some(self.timeouts) })
    }

    fn http2_client(&self, transport: &Transport) -> Result<UpstreamClient, String> {
        let mut cache = self.cache.lock().map_err(|_| "upstream client cache poisoned".to_string())?;
        if let Some(client) = cache.get(transport) {
            return Ok(client.clone());
        }
        let mut client = Client::builder(TokioExecutor::new());
        client.pool_idle_timeout(DEFAULT_POOL_IDLE_TIMEOUT).pool_timer(TokioTimer::new()).timer(TokioTimer::new());
        if transport.scheme == Scheme::Http {
            client.http2_only(true);
        }
        let client = client.build(self.connector(transport, true)?);
        cache.insert(transport.clone(), client.clone());
        Ok(client)
    }
}

/// A connector whose TLS handshake is bounded: the TCP connect has its own timeout inside, so the
/// whole is given the connect timeout plus the handshake timeout.
#[derive(Clone, Debug)]
pub struct Bounded<C> {
    inner: C,
    /// None for plain HTTP backends (the connect timeout is all there is).
    limit: Option<UpstreamTimeouts>,
}

impl<C> tower_service::Service<http::Uri> for Bounded<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
    C::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    type Response = C::Response;
    type Error = Box<dyn StdError + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let Some(limit) = self.limit else { return Box::pin(async move { connecting.await.map_err(Into::into) }) };
        Box::pin(async move {
            match tokio::time::timeout(limit.connect + limit.tls_handshake, connecting).await {
                Ok(done) => done.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "TLS handshake not done within {} (after up to {} to connect)",
                        humantime::format_duration(limit.tls_handshake),
                        humantime::format_duration(limit.connect)
                    ),
                )) as Box<dyn StdError + Send + Sync>),
            }
        })
    }
}

/// The authorities requests to `target` are sent to, in the order of its endpoints (one for an
/// ExternalName; none when unavailable).
pub fn authorities(target: &crate::config::Target) -> Vec<http::uri::Authority> {
    use crate::config::Target;
    match target {
        Target::Endpoints(addrs) => {
            addrs.iter().filter_map(|a| http::uri::Authority::try_from(a.to_string()).ok()).collect()
        }
        Target::ExternalName { host, port } => {
            http::uri::Authority::try_from(format!("{host}:{port}")).ok().into_iter().collect()
        }
        Target::Unavailable(_) => Vec::new(),
    }
}

/// `--insecure-skip-verify` / `portier.io/insecure-skip-verify`: any certificate is accepted, but
/// handshake signatures are still checked so the session is at least bound to that certificate.
#[derive(Debug)]
struct SkipVerification;

impl ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &crypto_provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &crypto_provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crypto_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// Resolved addresses of a host name, with the time they were looked up.
type DnsCache = HashMap<String, (Instant, Vec<SocketAddr>)>;

/// System DNS with a short cache, so a busy ExternalName backend does not ask DNS per connection.
#[derive(Clone, Default)]
pub struct CachingResolver {
    cache: Arc<Mutex<DnsCache>>,
}

impl tower_service::Service<Name> for CachingResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let cache = self.cache.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            if let Some((at, addrs)) = cache.lock().ok().and_then(|c| c.get(&host).cloned()) {
                if at.elapsed() < DNS_CACHE_TTL {
                    return Ok(addrs.into_iter());
                }
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Ok(mut c) = cache.lock() {
                c.insert(host, (Instant::now(), addrs.clone()));
            }
            Ok(addrs.into_iter())
        })
    }
}

/// Why a request got no response from its backend: the `kind` label of
/// `portier_upstream_errors_total` and of a backend's last error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamErrorKind {
    /// TCP connect refused or reset, DNS failure.
    Connect = 0,
    /// TLS handshake or certificate verification.
    Tls = 1,
    /// Connect timeout, or no response headers in time.
    Timeout = 2,
    /// Anything else (the connection closed before a response, a protocol error).
    Other = 3,
    /// No endpoint to send it to (Service, port or ready endpoints missing).
    Unavailable = 4,
}

impl UpstreamErrorKind {
    pub const ALL: [Self; 5] = [Self::Connect, Self::Tls, Self::Timeout, Self::Other, Self::Unavailable];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Other => "other",
            Self::Unavailable => "unavailable",
        }
    }
}

/// How a request to a backend failed, for the status code, the body and the metrics.
#[derive(Debug, PartialEq, Eq)]
pub struct UpstreamFailure {
    pub kind: UpstreamErrorKind,
    pub detail: String,
}

impl UpstreamFailure {
    pub fn new(kind: UpstreamErrorKind, detail: String) -> Self {
        Self { kind, detail }
    }

    /// 504 for timeouts, 503 when there is no endpoint, 502 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self.kind {
            UpstreamErrorKind::Timeout => http::StatusCode::GATEWAY_TIMEOUT,
            UpstreamErrorKind::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }
}

/// `connect`: the failure happened while connecting (nothing was sent).
pub fn classify(error: &(dyn StdError + 'static), connect: bool) -> UpstreamFailure {
    let mut io_kind = None;
    let mut tls = None;
    let mut messages: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        // io::Error hides its inner error from `source()`: look inside it explicitly.
        let mut next = e.source();
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
            }
        }
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            tls.get_or_insert_with(|| r.clone());
        }
        let text = e.to_string();
        if !text.is_empty() && !messages.iter().any(|m| m.contains(&text)) {
            messages.push(text);
        }
        current = next;
    }
    let detail = messages.last().cloned().unwrap_or_else(|| "unknown error".into());
    if let Some(tls) = tls {
        return UpstreamFailure::new(
            UpstreamErrorKind::Tls,
            match tls {
                rustls::Error::InvalidCertificate(reason) => {
                    format!("TLS certificate verification failed: {reason:?} (trust it with --backend-ca, or skip verification with portier.io/insecure-skip-verify)")
                }
                other => format!("TLS handshake failed: {other}"),
            },
        );
    }
    if io_kind == Some(std::io::ErrorKind::TimedOut) {
        return UpstreamFailure::new(UpstreamErrorKind::Timeout, format!("connect timed out: {detail}"));
    }
    if connect {
        return UpstreamFailure::new(UpstreamErrorKind::Connect, format!("connection failed: {detail}"));
    }
    UpstreamFailure::new(UpstreamErrorKind::Other, format!("request failed: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport() -> Transport {
        Transport { scheme: Scheme::Http, http2: false, verify: true, server_name: "web.default.svc".into() }
    }

    #[test]
    fn pools_are_kept_across_swaps_while_their_endpoint_is_in_use() {
        let timeouts = UpstreamTimeouts { connect: Duration::from_secs(1), tls_handshake: Duration::from_secs(1) };
        let upstreams = Upstreams::new(&[], timeouts).unwrap();
        let (a, b): (Authority, Authority) = ("10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
        let first = upstreams.clients_for(&transport(), &[a.clone(), b.clone()]).unwrap();
        assert_eq!(first.pools.len(), 2);
        assert!(first.http2.is_none(), "an HTTP/1.1 backend needs no HTTP/2 client");

        // The next swap keeps endpoint a only: its pool (and idle connections) stay, b's goes.
        upstreams.retain(&[(&transport(), std::slice::from_ref(&a))]);
        let second = upstreams.clients_for(&transport(), &[a.clone(), b.clone()]).unwrap();
        assert!(Arc::ptr_eq(&first.pools[0], &second.pools[0]), "the pool of a kept endpoint was replaced");
        assert!(!Arc::ptr_eq(&first.pools[1], &second.pools[1]), "the pool of a dropped endpoint was kept");

        let h2 = Transport { http2: true, ..transport() };
        assert!(upstreams.clients_for(&h2, &[a]).unwrap().http2.is_some());
    }
}
