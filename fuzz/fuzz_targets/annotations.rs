//! Ingress annotations (src/translate/annotations.rs, `annotations::parse`).
//!
//! Input: UTF-8 text, one annotation a line, `key=value` (the first `=` splits; a line without
//! one is a key with an empty value).
//!
//! Properties: parsing never panics; an access-control annotation always refuses the Ingress;
//! values are read trimmed (surrounding whitespace changes nothing); what is accepted is usable
//! as is: the rewrite target is an absolute path that forms a valid request URI, the HSTS value
//! is a valid header value, a response timeout is not zero.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use portier::translate::annotations::{self, ACCESS_CONTROL, LEGACY_ACCESS_CONTROL};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let map: BTreeMap<String, String> = text
        .split('\n')
        .map(|l| l.split_once('=').unwrap_or((l, "")))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let result = annotations::parse(Some(&map));

    let access_control = map.keys().any(|k| {
        let short =
            k.strip_prefix("traefik.ingress.kubernetes.io/").or_else(|| k.strip_prefix("ingress.kubernetes.io/"));
        short.is_some_and(|s| ACCESS_CONTROL.contains(&s)) || LEGACY_ACCESS_CONTROL.contains(&k.as_str())
    });
    if access_control {
        assert!(
            result.as_ref().is_err_and(|e| e.contains("access control")),
            "an access-control annotation did not refuse the Ingress: {map:?}"
        );
    }

    // Only the values' surrounding whitespace differs: the outcome must not.
    let padded: BTreeMap<String, String> = map.iter().map(|(k, v)| (k.clone(), format!(" \t{v} "))).collect();
    let again = annotations::parse(Some(&padded));

    match (&result, &again) {
        (Err(e), Err(e2)) => assert_eq!(e, e2),
        (Ok(p), Ok(p2)) => {
            assert_eq!((&p.annotations, &p.notes), (&p2.annotations, &p2.notes));
            check_accepted(&map, p);
        }
        _ => panic!("padding values changed the outcome: {result:?} vs {again:?}"),
    }
});

fn check_accepted(map: &BTreeMap<String, String>, p: &annotations::Parsed) {
    let a = &p.annotations;
    if let Some(target) = &a.rewrite_target {
        assert!(target.starts_with('/'), "rewrite target {target:?}");
        // The proxy sends `target + rest of the path`: it must be a valid request URI, or every
        // request to the route would fail.
        let sent = format!("{target}/x?q=1");
        assert!(
            http::uri::PathAndQuery::try_from(sent.as_str()).is_ok_and(|p| p.as_str() == sent),
            "rewrite target {target:?} accepted, but {sent:?} cannot be sent"
        );
    }
    if let Some(hsts) = &a.hsts {
        assert!(http::HeaderValue::from_str(hsts).is_ok(), "HSTS value {hsts:?}");
        assert!(hsts.starts_with("max-age="), "HSTS value {hsts:?}");
    }
    if let Some(ms) = a.response_timeout_ms {
        assert!(ms > 0, "zero response timeout from {map:?}");
    }
}
