//! Test support: a CA and certificates, echo backends (HTTP, HTTPS, HTTP/2, websocket,
//! streaming), an in-process portier on ephemeral loopback ports, and a raw HTTP client that
//! does not follow redirects or normalise paths.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod fake_kube;
pub mod process;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portier::config::Config;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------- certificates

pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) }
    }

    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }
}

/// A self-signed certificate (no CA), like the kubernetes-dashboard's own.
pub fn self_signed(names: &[&str]) -> Leaf {
    let c = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    Leaf { cert_pem: c.cert.pem(), key_pem: c.signing_key.serialize_pem() }
}

fn server_tls(leaf: &Leaf, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(portier::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

// ---------------------------------------------------------------- echo backend

/// A backend that answers with what it received. Paths with a meaning:
/// `/stream?n=N&ms=M` N chunks M ms apart; `/status/NNN`; `/big?bytes=N`; `/slow?ms=N` (delay
/// before headers); `/ws` websocket echo. Anything else: JSON of method, uri, version,
/// headers and body, plus the backend's name.
pub struct Echo {
    pub addr: SocketAddr,
    pub name: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Echo {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

pub async fn echo_http(name: &str) -> Echo {
    start_echo(name, None, "127.0.0.1:0").await
}

/// An HTTP echo listening on `addr` (e.g. another loopback address, or a port just freed).
pub async fn echo_http_on(name: &str, addr: &str) -> Echo {
    start_echo(name, None, addr).await
}

/// An HTTPS echo that speaks HTTP/1.1 and, when asked by ALPN, HTTP/2.
pub async fn echo_https(name: &str, leaf: &Leaf) -> Echo {
    start_echo(name, Some(server_tls(leaf, &[b"h2", b"http/1.1"])), "127.0.0.1:0").await
}

async fn start_echo(name: &str, tls: Option<Arc<rustls::ServerConfig>>, bind: &str) -> Echo {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = name.to_string();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let backend = backend.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| echo(backend.clone(), req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    None => {
                        let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
                    }
                    Some(acceptor) => {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await;
                        }
                    }
                }
            });
        }
    });
    Echo { addr, name: name.to_string(), task }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn query_param(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix(&format!("{key}="))?.parse().ok())
}

async fn echo(backend: String, mut req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/ws" {
        return Ok(websocket_echo(&mut req));
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let mut r = Response::new(Full::new(Bytes::from("status\n")).boxed());
        *r.status_mut() = StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
        return Ok(r);
    }
    if path == "/stream" {
        let n = query_param(&req, "n").unwrap_or(3);
        let ms = query_param(&req, "ms").unwrap_or(200);
        let stream = futures_util::stream::unfold(0u64, move |i| async move {
            if i >= n {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(format!("chunk-{i}\n")))), i + 1))
        });
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(stream))));
    }
    if path == "/big" {
        let n = query_param(&req, "bytes").unwrap_or(1 << 20) as usize;
        let mut r = Response::new(Full::new(Bytes::from(vec![b'x'; n])).boxed());
        r.headers_mut().insert("content-length", n.into());
        return Ok(r);
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(query_param(&req, "ms").unwrap_or(1000))).await;
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.entry(k.as_str().to_string()).or_default().push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let method = req.method().to_string();
    let uri = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let version = format!("{:?}", req.version());
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let json = serde_json::json!({
        "backend": backend,
        "method": method,
        "uri": uri,
        "version": version,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut r = Response::new(Full::new(Bytes::from(json.to_string())).boxed());
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    Ok(r)
}

fn websocket_echo(req: &mut Request<Incoming>) -> Response<EchoBody> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let key = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes())).unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                use futures_util::SinkExt;
                if ws.send(msg).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut().insert("upgrade", "websocket".parse().unwrap());
    r.headers_mut().insert("connection", "Upgrade".parse().unwrap());
    r.headers_mut().insert("sec-websocket-accept", key.parse().unwrap());
    r
}

// ---------------------------------------------------------------- portier under test

pub struct Portier {
    pub dir: tempfile::TempDir,
    pub running: portier::app::Running,
}

impl Portier {
    /// Starts portier on ephemeral loopback ports over a folder holding `files`.
    pub async fn start(files: &[(&str, String)], extra_args: &[&str]) -> Portier {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let running = Self::start_in(dir.path().to_path_buf(), extra_args).await.unwrap();
        Portier { dir, running }
    }

    pub async fn start_in(manifests: PathBuf, extra_args: &[&str]) -> Result<portier::app::Running, String> {
        let mut args: Vec<String> = vec![
            "portier".into(),
            "--manifests".into(),
            manifests.display().to_string(),
            "--http-addr".into(),
            "127.0.0.1:0".into(),
            "--https-addr".into(),
            "127.0.0.1:0".into(),
            "--admin-addr".into(),
            "127.0.0.1:0".into(),
            "--throttle".into(),
            "20ms".into(),
        ];
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let cli = <portier::cli::Cli as clap::Parser>::try_parse_from(args).map_err(|e| e.to_string())?;
        portier::app::start(cli).await
    }

    pub fn http(&self) -> SocketAddr {
        self.running.http_addr
    }
    pub fn https(&self) -> SocketAddr {
        self.running.https_addr
    }
    pub fn admin(&self) -> SocketAddr {
        self.running.admin_addr
    }

    pub fn write(&self, name: &str, content: &str) {
        std::fs::write(self.dir.path().join(name), content).unwrap();
    }

    /// Replaces a file atomically (write elsewhere, rename over it), as kubectl cp or a
    /// ConfigMap update would.
    pub fn replace(&self, name: &str, content: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.dir.path().join(name)).unwrap();
    }

    pub fn generation(&self) -> u64 {
        self.running.shared.live.load().generation
    }

    pub fn config(&self) -> Arc<Config> {
        self.running.shared.live.load().config.clone()
    }

    /// Waits (up to 10 s) until the live config satisfies `pred`.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Config) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pred(&self.config()) {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

// ---------------------------------------------------------------- manifests

pub fn ingress(
    name: &str,
    annotations: &[(&str, &str)],
    host: Option<&str>,
    paths: &[(&str, &str, &str, u16)],
) -> String {
    ingress_in("default", name, annotations, host, paths)
}

/// An Ingress with one rule; each path is (path, pathType, service, port number).
pub fn ingress_in(
    namespace: &str,
    name: &str,
    annotations: &[(&str, &str)],
    host: Option<&str>,
    paths: &[(&str, &str, &str, u16)],
) -> String {
    let annotations: String = annotations.iter().map(|(k, v)| format!("    {k}: {v:?}\n")).collect();
    let host = host.map(|h| format!("  - host: {h:?}\n    http:\n")).unwrap_or_else(|| "  - http:\n".into());
    let paths: String = paths
        .iter()
        .map(|(p, t, s, port)| {
            format!("      - path: {p}\n        pathType: {t}\n        backend: {{service: {{name: {s}, port: {{number: {port}}}}}}}\n")
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{app: traefik}}\n  annotations:\n{annotations}    x: \"y\"\nspec:\n  rules:\n{host}      paths:\n{paths}"
    )
}

/// An ExternalName Service pointing at `host:port`, with an optional port name.
pub fn external_service(name: &str, host: &str, port: u16, port_name: Option<&str>) -> String {
    let port_name = port_name.map(|n| format!(", name: {n}")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  type: ExternalName\n  externalName: {host}\n  ports: [{{port: {port}{port_name}}}]\n"
    )
}

/// A ClusterIP Service with one named port and an EndpointSlice listing `endpoints`
/// (address, ready) on `target_port`.
pub fn service_with_slice(
    name: &str,
    port: u16,
    port_name: &str,
    target_port: u16,
    endpoints: &[(&str, bool)],
) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(addr, ready)| format!("  - addresses: [\"{addr}\"]\n    conditions: {{ready: {ready}}}\n"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: {port_name}, port: {port}, targetPort: {target_port}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-abc\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: {port_name}, port: {target_port}}}]\nendpoints:\n{eps}"
    )
}

/// portier over plain HTTP (no https redirect) sending every request to the Service `name`, whose
/// endpoints (address, ready) listen on `port`.
pub async fn portier_to_service(name: &str, port: u16, endpoints: &[(&str, bool)]) -> Portier {
    Portier::start(
        &[
            ("svc.yaml", service_with_slice(name, 80, "http", port, endpoints)),
            ("ing.yaml", ingress(name, &[], None, &[("/", "Prefix", name, 80)])),
        ],
        &["--no-https-redirect"],
    )
    .await
}

/// A kubernetes.io/tls Secret.
pub fn tls_secret(name: &str, leaf: &Leaf) -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        b64(&leaf.cert_pem),
        b64(&leaf.key_pem)
    )
}

// ---------------------------------------------------------------- client

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
    /// DNS names of the certificate the server presented (TLS only).
    pub cert_names: Vec<String>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// The echo backend's view of one request header (first value).
    pub fn echoed_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].get(0).and_then(|v| v.as_str()).map(String::from)
    }
}

/// How to reach the server.
#[derive(Clone, Copy)]
pub enum Via<'a> {
    Plain,
    /// TLS with this SNI; `None` sends no SNI (like a client connecting by IP).
    Tls(Option<&'a str>),
    /// TLS with ALPN h2 and HTTP/2.
    H2(Option<&'a str>),
}

/// Accepts any server certificate: the tests look at the certificate instead of trusting it.
#[derive(Debug)]
pub struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        portier::tls::crypto_provider().signature_verification_algorithms.supported_schemes()
    }
}

pub fn client_tls(alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    client_tls_versions(rustls::DEFAULT_VERSIONS, alpn)
}

/// A client TLS configuration restricted to these protocol versions, accepting any certificate.
pub fn client_tls_versions(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(portier::tls::crypto_provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Opens a TLS connection to `addr` with this SNI (None: no SNI) and ALPN.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: Option<&str>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    tokio_rustls::TlsConnector::from(client_tls(alpn)).connect(name, tcp).await.unwrap()
}

pub fn cert_names(der: &[u8]) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    names
}

/// Sends one request on a new connection and reads the whole response.
pub async fn send(addr: SocketAddr, via: Via<'_>, req: Request<Full<Bytes>>) -> Reply {
    match via {
        Via::Plain => {
            let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            read(sender.send_request(req).await.unwrap(), Vec::new()).await
        }
        Via::Tls(sni) => {
            let tls = tls_connect(addr, sni, &[b"http/1.1"]).await;
            let names = tls.get_ref().1.peer_certificates().map(|c| cert_names(&c[0])).unwrap_or_default();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            read(sender.send_request(req).await.unwrap(), names).await
        }
        Via::H2(sni) => {
            let tls = tls_connect(addr, sni, &[b"h2"]).await;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "server did not pick h2");
            let names = tls.get_ref().1.peer_certificates().map(|c| cert_names(&c[0])).unwrap_or_default();
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            read(sender.send_request(req).await.unwrap(), names).await
        }
    }
}

async fn read(response: Response<Incoming>, cert_names: Vec<String>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Reply { status: parts.status.as_u16(), headers: parts.headers, body, version: parts.version, cert_names }
}

/// A request builder: `get("a.com", "/k8s/")`. For HTTP/2 the URI carries the authority.
pub fn request(method: &str, host: &str, path: &str, via: Via<'_>) -> http::request::Builder {
    let builder = Request::builder().method(method);
    match via {
        Via::H2(_) => builder.uri(format!("https://{host}{path}")),
        _ => builder.uri(path).header("host", host),
    }
}

pub async fn get(addr: SocketAddr, via: Via<'_>, host: &str, path: &str) -> Reply {
    send(addr, via, request("GET", host, path, via).body(Full::new(Bytes::new())).unwrap()).await
}

/// GET on the admin address.
pub async fn admin_get(portier: &Portier, path: &str) -> Reply {
    get(portier.admin(), Via::Plain, "localhost", path).await
}
