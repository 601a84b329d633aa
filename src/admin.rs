//! Admin endpoints on `--admin-addr`: health, readiness and the JSON view of the current config.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Backend, Config, Route};
use crate::proxy::Shared;

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => { tokio::time::sleep(std::time::Duration::from_millis(50)).await; continue }
            },
            _ = crate::proxy::stopped(&mut shutdown) => return,
        };
        let shared = shared.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(shared.clone(), req));
            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn respond(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n"));
    }
    let live = shared.live.load_full();
    Ok(match req.uri().path() {
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" if shared.ready.load(std::sync::atomic::Ordering::Acquire) => plain(StatusCode::OK, "ready\n"),
        "/readyz" => plain(StatusCode::SERVICE_UNAVAILABLE, "not ready: waiting for the first complete sync\n"),
        "/api/routes" => json(&routes_view(&live.config)),
        "/api/backends" => json(&live.config.backends),
        "/api/warnings" => json(&live.config.warnings),
        "/api/certificates" => json(&live.config.certificates.certificates()),
        "/api/version" => {
            json(&serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "generation": live.generation }))
        }
        "/" => html(INDEX),
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// Relative links only: this page also works behind a PathPrefixStrip route.
const INDEX: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>portier</title></head>
<body><h1>portier</h1><ul>
<li><a href="api/routes">api/routes</a></li><li><a href="api/backends">api/backends</a></li>
<li><a href="api/certificates">api/certificates</a></li><li><a href="api/warnings">api/warnings</a></li>
<li><a href="api/version">api/version</a></li><li><a href="healthz">healthz</a></li></ul></body></html>
"#;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RouteView<'a> {
    #[serde(flatten)]
    route: &'a Route,
    backend_name: &'a str,
    scheme: &'static str,
    target: Option<&'a crate::config::Target>,
    is_default: bool,
}

fn routes_view(config: &Config) -> Vec<RouteView<'_>> {
    config
        .routes
        .iter()
        .enumerate()
        .map(|(id, route)| {
            let backend: Option<&Backend> = config.backends.get(route.backend);
            RouteView {
                route,
                backend_name: backend.map(|b| b.name.as_str()).unwrap_or_default(),
                scheme: backend.map(|b| b.transport.scheme.as_str()).unwrap_or_default(),
                target: backend.map(|b| &b.target),
                is_default: config.router.default_route() == Some(id),
            }
        })
        .collect()
}

fn json<T: Serialize + ?Sized>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => with_type(StatusCode::OK, body.into(), "application/json"),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot serialise: {e}\n")),
    }
}

fn html(body: &'static str) -> Response<Full<Bytes>> {
    with_type(StatusCode::OK, Bytes::from_static(body.as_bytes()), "text/html; charset=utf-8")
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(status, Bytes::copy_from_slice(body.as_bytes()), "text/plain; charset=utf-8")
}

fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
