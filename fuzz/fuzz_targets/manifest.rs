//! Manifest translation: YAML text → the file provider's objects (src/provider/file.rs,
//! `parse_manifest`) → `translate::translate` → a Config, as `--manifests` does.
//!
//! Input: the bytes of a manifest file (not UTF-8: refused before parsing, as the provider does).
//!
//! Properties: no YAML makes parsing or translation panic; translation is deterministic; every
//! Ingress that is selected but not served has a warning that refuses it, and no served one has;
//! every route belongs to a served Ingress, has a backend, a path starting with '/' (normalised
//! for prefixes) and a lower-case host, and is found by the router for its own host and path; and
//! a rewrite the translation accepted turns a valid request path into a valid request URI.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use portier::config::{MatchKind, PathRewrite};
use portier::provider::file::parse_manifest;
use portier::proxy::middleware::{rewrite, Rewritten};
use portier::state::{ClusterState, ObjectKey};
use portier::translate::{translate, TranslateOptions, DEFAULT_CLASSES};

/// A path and query that can be sent as is: it parses whole (the http crate drops a fragment, so
/// the parse must give back the same text).
fn is_request_uri(path_and_query: &str) -> bool {
    http::uri::PathAndQuery::try_from(path_and_query).is_ok_and(|p| p.as_str() == path_and_query)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(parsed) = parse_manifest(text) else { return };
    let mut state = ClusterState::default();
    for object in parsed.objects {
        state.insert(object);
    }
    let options = TranslateOptions::default();
    let config = translate(&state, &options);
    assert_eq!(config, translate(&state, &options), "translation is not deterministic");

    // Selection with the default options: no class, an empty one, or one of the defaults.
    let selected: BTreeSet<&ObjectKey> = state
        .ingresses
        .iter()
        .filter(|(_, ingress)| {
            let class = ingress
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/ingress.class"))
                .or_else(|| ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_ref()))
                .map(|c| c.trim());
            class.is_none_or(|c| c.is_empty() || DEFAULT_CLASSES.contains(&c))
        })
        .map(|(key, _)| key)
        .collect();
    let served: BTreeSet<&ObjectKey> = config.ingresses.iter().collect();
    assert!(served.is_subset(&selected), "served {served:?}, selected {selected:?}");
    let refused: BTreeSet<String> = config.warnings.iter().filter(|w| w.refused).map(|w| w.object.clone()).collect();
    for key in &selected {
        let named = refused.contains(&format!("Ingress {key}"));
        if served.contains(key) {
            assert!(!named, "Ingress {key} is served but has a refusal: {:?}", config.warnings);
        } else {
            assert!(named, "Ingress {key} is not served and has no refusal: {:?}", config.warnings);
        }
    }

    let default_route = config.router.default_route();
    if let Some(id) = default_route {
        assert!(id < config.routes.len());
    }
    for (id, route) in config.routes.iter().enumerate() {
        assert!(served.contains(&route.ingress), "route {} of an Ingress not served", route.id);
        assert!(route.backend < config.backends.len(), "route {} has no backend", route.id);
        assert!(route.path.starts_with('/'), "route {} path {:?}", route.id, route.path);
        if route.match_kind == MatchKind::Prefix {
            assert!(route.path == "/" || !route.path.ends_with('/'), "prefix {:?} not normalised", route.path);
        }
        if let Some(host) = &route.host {
            assert_eq!(host, &host.to_ascii_lowercase(), "route {} host", route.id);
        }
        if Some(id) != default_route {
            let host = match route.host.as_deref() {
                None => "no-such-host.invalid".to_string(),
                Some(h) => match h.strip_prefix("*.") {
                    Some(suffix) => format!("w.{suffix}"),
                    None => h.to_string(),
                },
            };
            let found = config.router.lookup(&host, &route.path);
            assert!(found.is_some_and(|f| f < config.routes.len()), "route {} not found: {found:?}", route.id);
        }
        // The proxy sends the rewritten path upstream: a valid request must stay valid.
        if is_request_uri(&route.path) {
            if let Rewritten::Forward { path_and_query, .. } = rewrite(route, &route.path, Some("q=1")) {
                assert!(
                    is_request_uri(&path_and_query),
                    "route {} turns {:?} into {path_and_query:?} ({:?})",
                    route.id,
                    route.path,
                    route.rewrite
                );
            }
        }
        if let PathRewrite::ReplacePrefix(t) | PathRewrite::ReplaceWhole(t) = &route.rewrite {
            assert!(t.is_empty() || t.starts_with('/'), "route {} rewrite target {t:?}", route.id);
        }
    }
});
