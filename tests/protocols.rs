//! Protocols end to end through portier: WebSocket (to HTTP and HTTPS backends, through
//! PathPrefixStrip, idle), streaming both ways, HTTP/2 and HTTP/1.1 from clients, TLS 1.2 and
//! 1.3, certificates by SNI from Ingress `spec.tls`, the default certificate, and certificate
//! rotation without restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const STRIP: (&str, &str) = ("traefik.ingress.kubernetes.io/rule-type", "PathPrefixStrip");

/// A minute is far more than anything here needs; it only stops a hung test.
const GUARD: Duration = Duration::from_secs(60);

async fn guarded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, fut).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

// ---------------------------------------------------------------- local helpers

/// An ExternalName Service to `localhost:port` whose port has this name (`https…` makes portier
/// speak TLS to it).
fn localhost_service(name: &str, port: u16, port_name: Option<&str>) -> String {
    external_service(name, "localhost", port, port_name)
}

/// An Ingress written by hand with `spec.tls` entries (hosts, secretName) and one rule per host,
/// each sending `/` (Prefix) to `service:port`.
fn tls_ingress(name: &str, tls: &[(&[&str], &str)], rule_hosts: &[&str], service: &str, port: u16) -> String {
    let mut y = format!("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  tls:\n");
    for (hosts, secret) in tls {
        let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
        y.push_str(&format!("  - hosts: [{}]\n    secretName: {secret}\n", hosts.join(", ")));
    }
    y.push_str("  rules:\n");
    for host in rule_hosts {
        y.push_str(&format!(
            "  - host: {host:?}\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend: {{service: {{name: {service}, port: {{number: {port}}}}}}}\n"
        ));
    }
    y
}

/// A client TLS configuration restricted to one protocol version.
fn client_tls_version(version: &'static rustls::SupportedProtocolVersion, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    client_tls_versions(&[version], alpn)
}

/// The certificate chain the server presents for this SNI (None: no SNI).
async fn presented_chain(addr: SocketAddr, sni: Option<&str>) -> Vec<CertificateDer<'static>> {
    let tls = tls_connect(addr, sni, &[b"http/1.1"]).await;
    tls.get_ref().1.peer_certificates().map(|c| c.to_vec()).unwrap_or_default()
}

/// DNS names of the certificate presented for this SNI.
async fn names_for(addr: SocketAddr, sni: Option<&str>) -> Vec<String> {
    let chain = presented_chain(addr, sni).await;
    assert!(!chain.is_empty(), "no certificate presented for SNI {sni:?}");
    cert_names(&chain[0])
}

/// An HTTP/1.1 connection over TLS (ALPN http/1.1) to portier's https entry.
async fn h1_sender(
    addr: SocketAddr,
    sni: &str,
) -> hyper::client::conn::http1::SendRequest<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    let tls = tls_connect(addr, Some(sni), &[b"http/1.1"]).await;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/2 connection over TLS (ALPN h2) to portier's https entry.
async fn h2_sender(addr: SocketAddr, sni: &str) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tls = tls_connect(addr, Some(sni), &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "server did not pick h2");
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// Reads a response body frame by frame: (time to the first data frame, time to the end, body),
/// times measured from `start`.
async fn timed_body(response: Response<Incoming>, start: Instant) -> (Duration, Duration, String) {
    let mut body = response.into_body();
    let mut first = None;
    let mut text = Vec::new();
    while let Some(frame) = guarded("reading the streamed body", body.frame()).await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            if !data.is_empty() && first.is_none() {
                first = Some(start.elapsed());
            }
            text.extend_from_slice(data);
        }
    }
    let total = start.elapsed();
    (first.expect("no data frame at all"), total, String::from_utf8_lossy(&text).into_owned())
}

// ---------------------------------------------------------------- websocket

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// Opens a websocket to `wss://{host}{path}` through portier's https entry (SNI = host).
async fn ws_connect(portier: &Portier, host: &str, path: &str) -> Ws {
    let tls = tls_connect(portier.https(), Some(host), &[b"http/1.1"]).await;
    let url = format!("wss://{host}{path}");
    let (ws, response) = guarded("websocket handshake", tokio_tungstenite::client_async(url.as_str(), tls))
        .await
        .unwrap_or_else(|e| panic!("websocket handshake to {url} failed: {e}"));
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS, "{url}");
    ws
}

/// Sends one message and expects the same one back.
async fn ws_roundtrip(ws: &mut Ws, msg: Message) {
    ws.send(msg.clone()).await.unwrap();
    let got = guarded("websocket echo", ws.next()).await.expect("websocket closed").unwrap();
    assert_eq!(got, msg);
}

async fn ws_text_and_binary(ws: &mut Ws) {
    ws_roundtrip(ws, Message::text("hello through portier")).await;
    ws_roundtrip(ws, Message::binary(vec![0u8, 1, 2, 254, 255])).await;
    // Large enough to span many TLS records and TCP segments both ways.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    ws_roundtrip(ws, Message::binary(big)).await;
    ws_roundtrip(ws, Message::text("second text")).await;
}

/// An http echo at `ws.test`: `/` (Prefix) to it, and `/k8s` PathPrefixStrip to it.
async fn ws_setup() -> (Portier, Echo) {
    let backend = echo_http("ws-plain").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", localhost_service("ws-plain", backend.port(), None)),
            ("ing.yaml", ingress("ws", &[], Some("ws.test"), &[("/", "Prefix", "ws-plain", backend.port())])),
            (
                "strip.yaml",
                ingress(
                    "ws-strip",
                    &[STRIP],
                    Some("ws.test"),
                    &[("/k8s", "ImplementationSpecific", "ws-plain", backend.port())],
                ),
            ),
        ],
        &[],
    )
    .await;
    (portier, backend)
}

#[tokio::test]
async fn websocket_echoes_text_and_binary_through_https_entry() {
    let (portier, _backend) = ws_setup().await;
    let mut ws = ws_connect(&portier, "ws.test", "/ws").await;
    ws_text_and_binary(&mut ws).await;
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn websocket_through_prefix_strip_reaches_stripped_path() {
    let (portier, _backend) = ws_setup().await;
    // The echo answers the upgrade only on /ws: a handshake success proves the path was stripped.
    let mut ws = ws_connect(&portier, "ws.test", "/k8s/ws").await;
    ws_text_and_binary(&mut ws).await;
}

#[tokio::test]
async fn websocket_survives_three_idle_seconds() {
    let (portier, _backend) = ws_setup().await;
    let mut ws = ws_connect(&portier, "ws.test", "/ws").await;
    ws_roundtrip(&mut ws, Message::text("before the pause")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    ws_roundtrip(&mut ws, Message::text("after the pause")).await;
    ws_roundtrip(&mut ws, Message::binary(vec![7u8; 1000])).await;
}

#[tokio::test]
async fn websocket_to_https_backend_verified_with_backend_ca() {
    let ca = TestCa::new("backend ca");
    let backend = echo_https("ws-tls", &ca.leaf(&["localhost"])).await;
    let extra = tempfile::tempdir().unwrap();
    let ca_file = extra.path().join("backend-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let portier = Portier::start(
        &[
            ("svc.yaml", localhost_service("ws-tls", backend.port(), Some("https"))),
            ("ing.yaml", ingress("wss", &[], Some("wss.test"), &[("/", "Prefix", "ws-tls", backend.port())])),
        ],
        &["--backend-ca", ca_file.to_str().unwrap()],
    )
    .await;
    // A plain request first: proves the route really goes to the HTTPS echo.
    let reply = get(portier.https(), Via::Tls(Some("wss.test")), "wss.test", "/hello").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["backend"], "ws-tls");
    let mut ws = ws_connect(&portier, "wss.test", "/ws").await;
    ws_text_and_binary(&mut ws).await;
}

#[tokio::test]
async fn websocket_to_https_backend_with_skip_verify() {
    // A self-signed backend, like the kubernetes-dashboard.
    let backend = echo_https("ws-selfsigned", &self_signed(&["localhost"])).await;
    let portier = Portier::start(
        &[
            ("svc.yaml", localhost_service("ws-selfsigned", backend.port(), Some("https"))),
            (
                "ing.yaml",
                ingress(
                    "wss",
                    &[STRIP],
                    Some("wss.test"),
                    &[("/k8s", "ImplementationSpecific", "ws-selfsigned", backend.port())],
                ),
            ),
        ],
        &["--insecure-skip-verify"],
    )
    .await;
    let mut ws = ws_connect(&portier, "wss.test", "/k8s/ws").await;
    ws_text_and_binary(&mut ws).await;
}

#[tokio::test]
async fn websocket_to_untrusted_https_backend_is_refused_with_502() {
    // The counterpart of the two tests above: without --backend-ca or skip-verify the
    // self-signed backend is not trusted, and the upgrade is answered 502 naming the certificate.
    let backend = echo_https("ws-untrusted", &self_signed(&["localhost"])).await;
    let portier = Portier::start(
        &[
            ("svc.yaml", localhost_service("ws-untrusted", backend.port(), Some("https"))),
            ("ing.yaml", ingress("wss", &[], Some("wss.test"), &[("/", "Prefix", "ws-untrusted", backend.port())])),
        ],
        &[],
    )
    .await;
    let tls = tls_connect(portier.https(), Some("wss.test"), &[b"http/1.1"]).await;
    let refused = guarded("websocket handshake", tokio_tungstenite::client_async("wss://wss.test/ws", tls)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("certificate"), "502 body does not say certificate: {body}");
        }
        Err(e) => panic!("expected a 502 answer, got error {e}"),
        Ok(_) => panic!("the websocket reached an unverified backend"),
    }
}

// ---------------------------------------------------------------- streaming

async fn stream_setup() -> (Portier, Echo) {
    let backend = echo_http("streamer").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", localhost_service("streamer", backend.port(), None)),
            ("ing.yaml", ingress("stream", &[], Some("stream.test"), &[("/", "Prefix", "streamer", backend.port())])),
        ],
        &[],
    )
    .await;
    (portier, backend)
}

const STREAMED: &str = "chunk-0\nchunk-1\nchunk-2\nchunk-3\n";

fn assert_not_buffered(first: Duration, total: Duration, body: &str) {
    assert_eq!(body, STREAMED);
    // The echo sends chunk-0 at once and the others 700 ms apart (2.1 s in all).
    assert!(total >= Duration::from_secs(2), "the whole stream took only {total:?}");
    assert!(first < Duration::from_millis(1500), "first chunk arrived after {first:?} (total {total:?}): buffered");
}

#[tokio::test]
async fn streamed_response_chunks_arrive_as_sent_http1() {
    let (portier, _backend) = stream_setup().await;
    let mut sender = h1_sender(portier.https(), "stream.test").await;
    let req =
        Request::get("/stream?n=4&ms=700").header("host", "stream.test").body(Full::new(Bytes::new()).boxed()).unwrap();
    let start = Instant::now();
    let response = guarded("response headers", sender.send_request(req)).await.unwrap();
    assert_eq!(response.status(), 200);
    let (first, total, body) = timed_body(response, start).await;
    assert_not_buffered(first, total, &body);
}

#[tokio::test]
async fn streamed_response_chunks_arrive_as_sent_http2() {
    let (portier, _backend) = stream_setup().await;
    let mut sender = h2_sender(portier.https(), "stream.test").await;
    let req = Request::get("https://stream.test/stream?n=4&ms=700").body(Full::new(Bytes::new())).unwrap();
    let start = Instant::now();
    let response = guarded("response headers", sender.send_request(req)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_2);
    let (first, total, body) = timed_body(response, start).await;
    assert_not_buffered(first, total, &body);
}

#[tokio::test]
async fn five_mib_request_body_reaches_backend_whole() {
    let (portier, _backend) = stream_setup().await;
    let size = 5 << 20;
    let body = Bytes::from(vec![b'a'; size]);
    let req = request("POST", "stream.test", "/upload", Via::Tls(Some("stream.test"))).body(Full::new(body)).unwrap();
    let reply = guarded("5 MiB upload", send(portier.https(), Via::Tls(Some("stream.test")), req)).await;
    assert_eq!(reply.status, 200, "{}", &reply.text()[..reply.text().len().min(300)]);
    let echo = reply.json();
    assert_eq!(echo["method"], "POST");
    let echoed = echo["body"].as_str().unwrap();
    assert_eq!(echoed.len(), size);
    assert!(echoed.bytes().all(|b| b == b'a'));
}

#[tokio::test]
async fn chunked_request_body_without_length_reaches_backend_whole() {
    let (portier, _backend) = stream_setup().await;
    let chunk = 64 * 1024;
    let chunks = 80; // 5 MiB
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |i| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'a' + (i % 26) as u8; chunk])))),
    );
    let mut sender = h1_sender(portier.https(), "stream.test").await;
    let req =
        Request::post("/upload").header("host", "stream.test").body(BodyExt::boxed(StreamBody::new(stream))).unwrap();
    let response = guarded("chunked upload", sender.send_request(req)).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = guarded("upload reply", response.into_body().collect()).await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let echoed = echo["body"].as_str().unwrap();
    assert_eq!(echoed.len(), chunk * chunks);
    let expected: String = (0..chunks).map(|i| ((b'a' + (i % 26) as u8) as char).to_string().repeat(chunk)).collect();
    assert!(echoed == expected, "the body arrived altered or reordered");
}

/// A backend that reports, for a request body, how long passed between its first byte and its
/// end (a proxy that buffers request bodies makes this zero).
async fn upload_timer() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    let mut body = req.into_body();
                    let mut first = None;
                    let mut len = 0usize;
                    while let Some(Ok(frame)) = body.frame().await {
                        if let Some(data) = frame.data_ref() {
                            if !data.is_empty() && first.is_none() {
                                first = Some(Instant::now());
                            }
                            len += data.len();
                        }
                    }
                    let gap = first.map(|f| f.elapsed().as_millis()).unwrap_or(0);
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("bytes={len} gap_ms={gap}")))))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn request_body_is_streamed_to_backend_not_buffered() {
    let (addr, task) = upload_timer().await;
    let portier = Portier::start(
        &[
            ("svc.yaml", localhost_service("timer", addr.port(), None)),
            ("ing.yaml", ingress("timer", &[], Some("up.test"), &[("/", "Prefix", "timer", addr.port())])),
        ],
        &[],
    )
    .await;
    // First part now, the rest 1.5 s later.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    let body = StreamBody::new(tokio_stream_from(rx));
    let mut sender = h1_sender(portier.https(), "up.test").await;
    let req = Request::post("/upload").header("host", "up.test").body(BodyExt::boxed(body)).unwrap();
    let feeder = tokio::spawn(async move {
        tx.send(Ok(Frame::data(Bytes::from(vec![b'x'; 1000])))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tx.send(Ok(Frame::data(Bytes::from(vec![b'y'; 1000])))).await.unwrap();
    });
    let response = guarded("upload", sender.send_request(req)).await.unwrap();
    feeder.await.unwrap();
    assert_eq!(response.status(), 200);
    let text = String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let (bytes, gap) = text.split_once(' ').unwrap();
    assert_eq!(bytes, "bytes=2000");
    let gap: u64 = gap.strip_prefix("gap_ms=").unwrap().parse().unwrap();
    assert!(gap >= 700, "the backend got the first part only {gap} ms before the end: the request body was buffered");
    task.abort();
}

/// An mpsc receiver as a Stream (no tokio-stream dependency).
fn tokio_stream_from<T: Send + 'static>(rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

// ---------------------------------------------------------------- HTTP versions, TLS versions

async fn h2_setup() -> (Portier, Echo) {
    let backend = echo_http("versions").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", localhost_service("versions", backend.port(), None)),
            ("ing.yaml", ingress("versions", &[], Some("h2.test"), &[("/", "Prefix", "versions", backend.port())])),
        ],
        &[],
    )
    .await;
    (portier, backend)
}

#[tokio::test]
async fn http2_client_is_served_and_backend_gets_http1() {
    let (portier, _backend) = h2_setup().await;
    let reply = get(portier.https(), Via::H2(Some("h2.test")), "h2.test", "/over/h2?x=1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.version, Version::HTTP_2);
    let echo = reply.json();
    assert_eq!(echo["backend"], "versions");
    assert_eq!(echo["uri"], "/over/h2?x=1");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(
        reply.echoed_header("host").as_deref(),
        Some("h2.test"),
        "the :authority must reach the backend as Host"
    );
}

#[tokio::test]
async fn http2_client_post_body_reaches_backend() {
    let (portier, _backend) = h2_setup().await;
    let req =
        request("POST", "h2.test", "/form", Via::H2(Some("h2.test"))).body(Full::new(Bytes::from("a=1&b=2"))).unwrap();
    let reply = send(portier.https(), Via::H2(Some("h2.test")), req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.version, Version::HTTP_2);
    assert_eq!(reply.json()["body"], "a=1&b=2");
    assert_eq!(reply.json()["method"], "POST");
}

#[tokio::test]
async fn http2_many_streams_on_one_connection() {
    let (portier, _backend) = h2_setup().await;
    let sender = h2_sender(portier.https(), "h2.test").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get(format!("https://h2.test/n/{i}")).body(Full::new(Bytes::new())).unwrap();
            let response = sender.send_request(req).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(echo["uri"], format!("/n/{i}"));
        }));
    }
    for t in tasks {
        guarded("concurrent h2 streams", t).await.unwrap();
    }
}

#[tokio::test]
async fn http1_over_tls_is_served() {
    let (portier, _backend) = h2_setup().await;
    let reply = get(portier.https(), Via::Tls(Some("h2.test")), "h2.test", "/over/h1").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.version, Version::HTTP_11);
    assert_eq!(reply.json()["uri"], "/over/h1");
    assert_eq!(reply.json()["version"], "HTTP/1.1");
}

async fn request_with_tls_version(
    portier: &Portier,
    version: &'static rustls::SupportedProtocolVersion,
    alpn: &[u8],
) -> (Option<rustls::ProtocolVersion>, u16, Version, serde_json::Value) {
    let tcp = TcpStream::connect(portier.https()).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_tls_version(version, &[alpn]));
    let tls = guarded("TLS handshake", connector.connect(ServerName::try_from("h2.test").unwrap(), tcp))
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {:?} refused: {e}", version.version));
    let negotiated = tls.get_ref().1.protocol_version();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    let (status, http_version, body) = if alpn == b"h2" {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get("https://h2.test/tls").body(Full::new(Bytes::new())).unwrap();
        let r = sender.send_request(req).await.unwrap();
        let (status, v) = (r.status().as_u16(), r.version());
        (status, v, r.into_body().collect().await.unwrap().to_bytes())
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get("/tls").header("host", "h2.test").body(Full::new(Bytes::new())).unwrap();
        let r = sender.send_request(req).await.unwrap();
        let (status, v) = (r.status().as_u16(), r.version());
        (status, v, r.into_body().collect().await.unwrap().to_bytes())
    };
    (negotiated, status, http_version, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn tls12_client_is_accepted() {
    let (portier, _backend) = h2_setup().await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let (negotiated, status, version, echo) =
            request_with_tls_version(&portier, &rustls::version::TLS12, alpn).await;
        assert_eq!(negotiated, Some(rustls::ProtocolVersion::TLSv1_2));
        assert_eq!(status, 200);
        assert_eq!(version, if alpn == b"h2" { Version::HTTP_2 } else { Version::HTTP_11 });
        assert_eq!(echo["uri"], "/tls");
    }
}

#[tokio::test]
async fn tls13_client_is_accepted() {
    let (portier, _backend) = h2_setup().await;
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let (negotiated, status, version, echo) =
            request_with_tls_version(&portier, &rustls::version::TLS13, alpn).await;
        assert_eq!(negotiated, Some(rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(status, 200);
        assert_eq!(version, if alpn == b"h2" { Version::HTTP_2 } else { Version::HTTP_11 });
        assert_eq!(echo["uri"], "/tls");
    }
}

// ---------------------------------------------------------------- certificates by SNI

const DEFAULT_NAME: &str = "portier.default.invalid";

/// Secrets: `a` (a.test), `wild` (*.w.test), `exact` (e.w.test), `alias` (alias-cert.test,
/// named in spec.tls for only-in-hosts.test); the wildcard is listed before the exact one.
async fn sni_setup() -> (Portier, Echo) {
    let ca = TestCa::new("sni ca");
    let backend = echo_http("sni").await;
    let ing = tls_ingress(
        "certs",
        &[(&["a.test"], "a"), (&["*.w.test"], "wild"), (&["e.w.test"], "exact"), (&["only-in-hosts.test"], "alias")],
        &["a.test", "*.w.test", "e.w.test", "only-in-hosts.test"],
        "sni",
        backend.port(),
    );
    let secrets = [
        tls_secret("a", &ca.leaf(&["a.test"])),
        tls_secret("wild", &ca.leaf(&["*.w.test"])),
        tls_secret("exact", &ca.leaf(&["e.w.test"])),
        tls_secret("alias", &ca.leaf(&["alias-cert.test"])),
    ]
    .join("---\n");
    let portier = Portier::start(
        &[("svc.yaml", localhost_service("sni", backend.port(), None)), ("secrets.yaml", secrets), ("ing.yaml", ing)],
        &[],
    )
    .await;
    (portier, backend)
}

#[tokio::test]
async fn sni_selects_certificate_from_ingress_tls_secret() {
    let (portier, _backend) = sni_setup().await;
    let reply = get(portier.https(), Via::Tls(Some("a.test")), "a.test", "/").await;
    assert_eq!(reply.cert_names, vec!["a.test"]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["backend"], "sni");
    // Case does not matter in SNI.
    assert_eq!(names_for(portier.https(), Some("A.Test")).await, vec!["a.test"]);
}

#[tokio::test]
async fn sni_wildcard_certificate_serves_subdomain() {
    let (portier, _backend) = sni_setup().await;
    let reply = get(portier.https(), Via::Tls(Some("x.w.test")), "x.w.test", "/").await;
    assert_eq!(reply.cert_names, vec!["*.w.test"]);
    assert_eq!(reply.status, 200);
    // One label only: a.b.w.test is not covered by *.w.test.
    assert_eq!(names_for(portier.https(), Some("a.b.w.test")).await, vec![DEFAULT_NAME]);
}

#[tokio::test]
async fn sni_exact_certificate_beats_wildcard() {
    let (portier, _backend) = sni_setup().await;
    let reply = get(portier.https(), Via::Tls(Some("e.w.test")), "e.w.test", "/").await;
    assert_eq!(reply.cert_names, vec!["e.w.test"]);
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn sni_name_only_in_tls_hosts_selects_that_certificate() {
    let (portier, _backend) = sni_setup().await;
    let reply = get(portier.https(), Via::Tls(Some("only-in-hosts.test")), "only-in-hosts.test", "/").await;
    assert_eq!(reply.cert_names, vec!["alias-cert.test"]);
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn unknown_sni_and_no_sni_get_generated_default_certificate() {
    let (portier, _backend) = sni_setup().await;
    assert_eq!(names_for(portier.https(), Some("unknown.test")).await, vec![DEFAULT_NAME]);
    assert_eq!(names_for(portier.https(), None).await, vec![DEFAULT_NAME]);
    // A client by IP still reaches the routes (Host header decides).
    let reply = get(portier.https(), Via::Tls(None), "a.test", "/by-ip").await;
    assert_eq!(reply.cert_names, vec![DEFAULT_NAME]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["uri"], "/by-ip");
}

#[tokio::test]
async fn tls_cert_and_key_flags_replace_default_certificate() {
    let ca = TestCa::new("default ca");
    let leaf = ca.leaf(&["custom-default.test", "other-default.test"]);
    let extra = tempfile::tempdir().unwrap();
    let cert_file = extra.path().join("default.crt");
    let key_file = extra.path().join("default.key");
    // The chain (leaf then CA) is allowed in the certificate file.
    std::fs::write(&cert_file, format!("{}{}", leaf.cert_pem, ca.pem)).unwrap();
    std::fs::write(&key_file, &leaf.key_pem).unwrap();
    let sni_leaf = ca.leaf(&["a.test"]);
    let backend = echo_http("sni").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", localhost_service("sni", backend.port(), None)),
            ("secret.yaml", tls_secret("a", &sni_leaf)),
            ("ing.yaml", tls_ingress("certs", &[(&["a.test"], "a")], &["a.test"], "sni", backend.port())),
        ],
        &["--tls-cert", cert_file.to_str().unwrap(), "--tls-key", key_file.to_str().unwrap()],
    )
    .await;
    let want = vec!["custom-default.test", "other-default.test"];
    assert_eq!(names_for(portier.https(), None).await, want);
    assert_eq!(names_for(portier.https(), Some("unknown.test")).await, want);
    assert_eq!(presented_chain(portier.https(), None).await.len(), 2, "the chain from --tls-cert must be sent whole");
    // Secrets still win for their names.
    assert_eq!(names_for(portier.https(), Some("a.test")).await, vec!["a.test"]);
}

#[tokio::test]
async fn garbage_tls_secret_serves_default_certificate_with_warning() {
    let backend = echo_http("sni").await;
    let garbage = Leaf { cert_pem: "this is not a certificate".into(), key_pem: "nor a key".into() };
    let ca = TestCa::new("ok ca");
    let portier = Portier::start(
        &[
            ("svc.yaml", localhost_service("sni", backend.port(), None)),
            (
                "secrets.yaml",
                [tls_secret("bad-secret", &garbage), tls_secret("good", &ca.leaf(&["good.test"]))].join("---\n"),
            ),
            (
                "ing.yaml",
                tls_ingress(
                    "certs",
                    &[(&["bad.test"], "bad-secret"), (&["good.test"], "good")],
                    &["bad.test", "good.test"],
                    "sni",
                    backend.port(),
                ),
            ),
        ],
        &[],
    )
    .await;
    let reply = get(portier.https(), Via::Tls(Some("bad.test")), "bad.test", "/").await;
    assert_eq!(reply.cert_names, vec![DEFAULT_NAME]);
    assert_eq!(reply.status, 200, "the Ingress itself must still be served: {}", reply.text());
    // The rest of the Ingress's TLS is unaffected.
    assert_eq!(names_for(portier.https(), Some("good.test")).await, vec!["good.test"]);

    let warnings = admin_get(&portier, "/api/warnings").await;
    assert_eq!(warnings.status, 200);
    let list = warnings.json();
    let list = list.as_array().expect("warnings are a JSON array");
    assert!(
        list.iter().any(|w| w.to_string().contains("bad-secret")),
        "no warning names the bad Secret: {}",
        warnings.text()
    );
    assert!(
        !list.iter().any(|w| w.to_string().contains("good")),
        "the good Secret must not be warned about: {}",
        warnings.text()
    );
}

#[tokio::test]
async fn missing_tls_secret_serves_default_certificate_with_warning() {
    let backend = echo_http("sni").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", localhost_service("sni", backend.port(), None)),
            (
                "ing.yaml",
                tls_ingress(
                    "certs",
                    &[(&["nosecret.test"], "absent-secret")],
                    &["nosecret.test"],
                    "sni",
                    backend.port(),
                ),
            ),
        ],
        &[],
    )
    .await;
    let reply = get(portier.https(), Via::Tls(Some("nosecret.test")), "nosecret.test", "/").await;
    assert_eq!(reply.cert_names, vec![DEFAULT_NAME]);
    assert_eq!(reply.status, 200);
    let warnings = admin_get(&portier, "/api/warnings").await;
    assert!(warnings.text().contains("absent-secret"), "no warning names the missing Secret: {}", warnings.text());
}

// ---------------------------------------------------------------- rotation

fn has_cert_name(config: &portier::config::Config, name: &str) -> bool {
    config.certificates.certificates().iter().any(|c| c.info.dns_names.iter().any(|n| n == name))
}

async fn rotation_setup(ca: &TestCa) -> (Portier, Echo) {
    let backend = echo_http("rot").await;
    let portier = Portier::start(
        &[
            ("svc.yaml", localhost_service("rot", backend.port(), None)),
            ("secret.yaml", tls_secret("rot", &ca.leaf(&["rot.test"]))),
            ("ing.yaml", tls_ingress("rot", &[(&["rot.test"], "rot")], &["rot.test"], "rot", backend.port())),
        ],
        &[],
    )
    .await;
    (portier, backend)
}

#[tokio::test]
async fn certificate_rotates_without_restart_when_secret_changes() {
    let ca = TestCa::new("rotation ca");
    let (portier, _backend) = rotation_setup(&ca).await;
    let old_der = presented_chain(portier.https(), Some("rot.test")).await[0].clone();
    assert_eq!(cert_names(&old_der), vec!["rot.test"]);

    portier.replace("secret.yaml", &tls_secret("rot", &ca.leaf(&["rot.test", "v2.rot.test"])));
    portier.wait_for("the rotated certificate", |c| has_cert_name(c, "v2.rot.test")).await;

    let new_der = presented_chain(portier.https(), Some("rot.test")).await[0].clone();
    assert_ne!(new_der, old_der, "the old certificate is still served");
    assert_eq!(cert_names(&new_der), vec!["rot.test", "v2.rot.test"]);
    let reply = get(portier.https(), Via::Tls(Some("rot.test")), "rot.test", "/after").await;
    assert_eq!(reply.cert_names, vec!["rot.test", "v2.rot.test"]);
    assert_eq!(reply.status, 200);
    // The new certificate's extra name selects it too.
    assert_eq!(names_for(portier.https(), Some("v2.rot.test")).await, vec!["rot.test", "v2.rot.test"]);
}

#[tokio::test]
async fn certificate_rotates_when_secret_file_is_rewritten_in_place() {
    let ca = TestCa::new("rotation ca");
    let (portier, _backend) = rotation_setup(&ca).await;
    assert_eq!(names_for(portier.https(), Some("rot.test")).await, vec!["rot.test"]);
    portier.write("secret.yaml", &tls_secret("rot", &ca.leaf(&["rot.test", "v2.rot.test"])));
    portier.wait_for("the rotated certificate", |c| has_cert_name(c, "v2.rot.test")).await;
    assert_eq!(names_for(portier.https(), Some("rot.test")).await, vec!["rot.test", "v2.rot.test"]);
}

#[tokio::test]
async fn deleting_tls_secret_falls_back_to_default_certificate() {
    let ca = TestCa::new("rotation ca");
    let (portier, _backend) = rotation_setup(&ca).await;
    assert_eq!(names_for(portier.https(), Some("rot.test")).await, vec!["rot.test"]);
    portier.remove("secret.yaml");
    portier.wait_for("the certificate gone", |c| !has_cert_name(c, "rot.test")).await;
    assert_eq!(names_for(portier.https(), Some("rot.test")).await, vec![DEFAULT_NAME]);
    let reply = get(portier.https(), Via::Tls(Some("rot.test")), "rot.test", "/").await;
    assert_eq!(reply.status, 200, "routes keep working without their Secret");
}
