//! Admin endpoints on `--admin-addr`: health, readiness, Prometheus metrics, the JSON API, the
//! "why" helper (`/api/explain`) and the dashboard page.
//!
//! Every page and link is relative, so all of it also works behind a PathPrefixStrip route
//! (`https://node/portier/`).

mod api;
mod explain;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::Shared;

pub use explain::{explain, Explanation};

/// The dashboard: one self-contained page (no external assets), relative URLs only.
const DASHBOARD: &str = include_str!("dashboard.html");

/// OpenMetrics text, which Prometheus scrapes natively (`# EOF` terminated).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let settings = &shared.settings;
    let builder = Arc::new(crate::proxy::entry::http_builder(crate::proxy::entry::HttpLimits {
        header_read_timeout: Some(settings.header_read_timeout),
        max_header_bytes: settings.max_header_bytes,
        max_headers: settings.max_headers,
        max_concurrent_streams: settings.http2_max_concurrent_streams,
    }));
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
        "/metrics" => match shared.metrics.encode() {
            Ok(text) => with_type(StatusCode::OK, text.into(), OPENMETRICS),
            Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot encode the metrics: {e}\n")),
        },
        "/api/routes" => json(&api::routes(&live)),
        "/api/backends" => json(&api::backends(&shared, &live)),
        "/api/warnings" => json(&live.config.warnings),
        "/api/certificates" => json(&live.config.certificates.certificates()),
        "/api/version" => json(&api::version(&shared, &live)),
        "/api/explain" => match explain::url_param(req.uri().query()) {
            Some(url) => match explain(&shared, &live, &url) {
                Ok(explanation) => json(&explanation),
                Err(e) => json_error(StatusCode::BAD_REQUEST, &e),
            },
            None => json_error(
                StatusCode::BAD_REQUEST,
                "give the URL to explain: api/explain?url=https://host/path (percent-encoded, or as the last parameter)",
            ),
        },
        "/" => html(DASHBOARD),
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    })
}

fn json<T: Serialize + ?Sized>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => with_type(StatusCode::OK, body.into(), "application/json"),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot serialise: {e}\n")),
    }
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = json(&serde_json::json!({ "error": message }));
    *response.status_mut() = status;
    response
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
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The dashboard polls these: always the live values, never a cached copy.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
