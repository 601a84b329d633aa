//! Redirects to https (src/proxy/middleware.rs, `https_location` and `redirect_status`).
//!
//! Input: structured (`arbitrary`): the request method, the route's `redirect-permanent`, the
//! https port, the client's Host and the request's path and query.
//!
//! Properties: the status is the redirect the method and permanence call for; a Location, when
//! there is one, is a valid header value and absolute URI with scheme https, the client's host
//! (port stripped), the https port (implicit when 443), and the request's own path and query; and
//! there is a Location for every well-formed host name.
#![no_main]

use arbitrary::Arbitrary;
use http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use portier::proxy::middleware::{https_location, redirect_status};
use portier::router::strip_port;

#[derive(Arbitrary, Debug)]
enum MethodChoice {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: MethodChoice,
    permanent: bool,
    https_port: u16,
    host: String,
    path_and_query: String,
}

fuzz_target!(|input: Input| {
    let method = match &input.method {
        MethodChoice::Get => Method::GET,
        MethodChoice::Head => Method::HEAD,
        MethodChoice::Post => Method::POST,
        MethodChoice::Put => Method::PUT,
        MethodChoice::Delete => Method::DELETE,
        MethodChoice::Options => Method::OPTIONS,
        MethodChoice::Patch => Method::PATCH,
        MethodChoice::Other(name) => match Method::from_bytes(name.as_bytes()) {
            Ok(m) => m,
            Err(_) => return,
        },
    };
    let status = redirect_status(&method, input.permanent);
    let safe = method == Method::GET || method == Method::HEAD;
    let expected = match (input.permanent, safe) {
        (true, true) => StatusCode::MOVED_PERMANENTLY,
        (true, false) => StatusCode::PERMANENT_REDIRECT,
        (false, true) => StatusCode::FOUND,
        (false, false) => StatusCode::TEMPORARY_REDIRECT,
    };
    assert_eq!(status, expected, "{method} permanent={}", input.permanent);
    assert!(status.is_redirection());

    let (host, port, pq) = (input.host.as_str(), input.https_port, input.path_and_query.as_str());
    let location = https_location(host, port, pq);
    // The proxy only ever passes a path and query hyper accepted (or `*`).
    // (The http crate drops a fragment: the parse must give back the same text.)
    let request_pq = http::uri::PathAndQuery::try_from(pq).ok().filter(|p| p.as_str() == pq && pq.starts_with('/'));

    let bare = strip_port(host);
    let plain_name = !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
    if plain_name {
        assert!(location.is_some(), "no Location for host {host:?}");
    }
    let Some(location) = location else { return };
    let Some(request_pq) = request_pq else { return };
    assert!(http::HeaderValue::from_str(&location).is_ok(), "Location {location:?} is not a header value");
    let uri = match http::Uri::try_from(location.as_str()) {
        Ok(uri) => uri,
        Err(e) => panic!("Location {location:?} (host {host:?}, port {port}) is not a URI: {e}"),
    };
    assert_eq!(uri.to_string(), location, "Location parses as another URI");
    assert_eq!(uri.scheme_str(), Some("https"), "{location}");
    assert_eq!(uri.host(), Some(bare), "{location} for host {host:?}");
    let expected_port = (port != 443).then_some(port);
    assert_eq!(uri.port_u16(), expected_port, "{location} for port {port}");
    assert_eq!(uri.path_and_query().map(|p| p.as_str()), Some(request_pq.as_str()), "{location} for {pq:?}");
});
