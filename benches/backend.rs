//! The load benchmark's backend: as fast as we can make it, so the proxy is what is measured.
//! Plain HTTP and HTTPS (HTTP/1.1), `/` answers 2 bytes, `/1m` answers 1 MiB.
//!
//! `bench_backend HTTP_PORT HTTPS_PORT CERT_DIR` writes `cert.pem` and `key.pem` (self-signed for
//! localhost and web.default.svc) into CERT_DIR, the certificate the proxies use too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

static MIB: [u8; 1 << 20] = [b'x'; 1 << 20];

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if req.uri().path() == "/1m" { Bytes::from_static(&MIB) } else { Bytes::from_static(b"ok") };
    Ok(Response::new(Full::new(body)))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (http_port, https_port, dir) = (args[1].parse::<u16>().unwrap(), args[2].parse::<u16>().unwrap(), &args[3]);
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into(), "web.default.svc".into()]).unwrap();
    std::fs::write(format!("{dir}/cert.pem"), generated.cert.pem()).unwrap();
    std::fs::write(format!("{dir}/key.pem"), generated.signing_key.serialize_pem()).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(generated.cert.pem().as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(generated.signing_key.serialize_pem().as_bytes()).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(portier::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let http = tokio::net::TcpListener::bind(("127.0.0.1", http_port)).await.unwrap();
        let https = tokio::net::TcpListener::bind(("127.0.0.1", https_port)).await.unwrap();
        let plain = tokio::spawn(async move {
            loop {
                let (stream, _) = http.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(answer))
                        .await;
                });
            }
        });
        loop {
            let (stream, _) = https.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service_fn(answer))
                        .await;
                }
            });
            if plain.is_finished() {
                break;
            }
        }
    });
}
