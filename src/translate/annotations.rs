//! The annotations portier reads from an Ingress, parsed once into one typed struct.
//!
//! Names follow Traefik 1.7's lookup order: `ingress.kubernetes.io/<name>`, then
//! `traefik.ingress.kubernetes.io/<name>`, then the legacy `traefik.frontend.*` label alias.

use std::collections::BTreeMap;

use crate::config::{quoted, RedirectKind, RuleType};

pub const RULE_TYPE: &[&str] =
    &["ingress.kubernetes.io/rule-type", "traefik.ingress.kubernetes.io/rule-type", "traefik.frontend.rule.type"];
pub const REWRITE_TARGET: &[&str] =
    &["ingress.kubernetes.io/rewrite-target", "traefik.ingress.kubernetes.io/rewrite-target"];
pub const PRIORITY: &[&str] =
    &["ingress.kubernetes.io/priority", "traefik.ingress.kubernetes.io/priority", "traefik.frontend.priority"];
pub const PRESERVE_HOST: &[&str] = &[
    "ingress.kubernetes.io/preserve-host",
    "traefik.ingress.kubernetes.io/preserve-host",
    "traefik.frontend.passHostHeader",
];
pub const PROTOCOL: &[&str] = &["ingress.kubernetes.io/protocol", "traefik.ingress.kubernetes.io/protocol"];
pub const REDIRECT_ENTRY_POINT: &[&str] = &[
    "ingress.kubernetes.io/redirect-entry-point",
    "traefik.ingress.kubernetes.io/redirect-entry-point",
    "traefik.frontend.redirect.entryPoint",
];
pub const REDIRECT_PERMANENT: &[&str] = &[
    "ingress.kubernetes.io/redirect-permanent",
    "traefik.ingress.kubernetes.io/redirect-permanent",
    "traefik.frontend.redirect.permanent",
];
/// portier's own: Traefik 1.7 only had the global `insecureSkipVerify`.
pub const INSECURE_SKIP_VERIFY: &[&str] = &["portier.io/insecure-skip-verify"];
pub const HSTS_MAX_AGE: &[&str] = &["ingress.kubernetes.io/hsts-max-age", "traefik.ingress.kubernetes.io/hsts-max-age"];
pub const HSTS_INCLUDE_SUBDOMAINS: &[&str] =
    &["ingress.kubernetes.io/hsts-include-subdomains", "traefik.ingress.kubernetes.io/hsts-include-subdomains"];
pub const HSTS_PRELOAD: &[&str] = &["ingress.kubernetes.io/hsts-preload", "traefik.ingress.kubernetes.io/hsts-preload"];
/// portier's own: Traefik 1.7 only had global forwarding timeouts.
pub const RESPONSE_TIMEOUT: &[&str] = &["portier.io/response-timeout"];
pub const INGRESS_CLASS: &str = "kubernetes.io/ingress.class";

/// Traefik 1.7 annotations that restrict who may reach a route. portier does not implement
/// them, and serving such an Ingress without them would open what the user meant to close.
pub const ACCESS_CONTROL: &[&str] = &[
    "auth-type",
    "auth-secret",
    "auth-url",
    "auth-realm",
    "auth-header-field",
    "auth-remove-header",
    "auth-trust-headers",
    "auth-response-headers",
    "auth-tls-secret",
    "auth-tls-insecure",
    "whitelist-source-range",
    "whitelist-x-forwarded-for",
];
pub const LEGACY_ACCESS_CONTROL: &[&str] = &["traefik.frontend.whitelistSourceRange", "traefik.frontend.auth.basic"];
/// The `<name>` part of the `[traefik.]ingress.kubernetes.io/<name>` annotations portier reads.
const SUPPORTED: &[&str] = &[
    "rule-type",
    "rewrite-target",
    "priority",
    "preserve-host",
    "protocol",
    "redirect-entry-point",
    "redirect-permanent",
    "hsts-max-age",
    "hsts-include-subdomains",
    "hsts-preload",
];

/// How to talk to the backend, from the `protocol` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    Http,
    Https,
    /// HTTP/2 without TLS.
    H2c,
    /// HTTP/2 over TLS (portier's addition).
    H2,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IngressAnnotations {
    /// The Traefik rule type, when the Ingress names one.
    pub rule_type: Option<RuleType>,
    pub rewrite_target: Option<String>,
    pub priority: i32,
    pub preserve_host: bool,
    pub protocol: Option<BackendProtocol>,
    pub insecure_skip_verify: bool,
    pub redirect_to_https: Option<RedirectKind>,
    pub response_timeout_ms: Option<u64>,
    /// `Strict-Transport-Security` value for https responses (`hsts-*` annotations, opt-in).
    pub hsts: Option<String>,
}

impl Default for IngressAnnotations {
    fn default() -> Self {
        Self {
            rule_type: None,
            rewrite_target: None,
            priority: 0,
            preserve_host: true,
            protocol: None,
            insecure_skip_verify: false,
            redirect_to_https: None,
            response_timeout_ms: None,
            hsts: None,
        }
    }
}

/// Parsed annotations plus notes on values that were ignored (Traefik logged and used the default).
#[derive(Debug, Default)]
pub struct Parsed {
    pub annotations: IngressAnnotations,
    pub notes: Vec<String>,
}

/// Errors refuse the whole Ingress; notes are warnings with a default used instead.
pub fn parse(map: Option<&BTreeMap<String, String>>) -> Result<Parsed, String> {
    let empty = BTreeMap::new();
    let map = map.unwrap_or(&empty);
    let get = |names: &'static [&'static str]| lookup(map, names);
    let mut parsed = Parsed::default();
    let a = &mut parsed.annotations;
    let notes = &mut parsed.notes;

    for key in map.keys() {
        let short =
            key.strip_prefix("traefik.ingress.kubernetes.io/").or_else(|| key.strip_prefix("ingress.kubernetes.io/"));
        if short.is_some_and(|s| ACCESS_CONTROL.contains(&s)) || LEGACY_ACCESS_CONTROL.contains(&key.as_str()) {
            return Err(format!(
                "annotation {key} (access control) is not supported by portier; the Ingress is refused rather than served unprotected"
            ));
        }
        if let Some(short) = short.filter(|s| !SUPPORTED.contains(s)) {
            let why = if short == "ssl-redirect" { " (the http entry already redirects to https)" } else { "" };
            notes.push(format!("annotation {key} is not supported by portier and is ignored{why}"));
        }
    }

    if let Some((name, value)) = get(RULE_TYPE) {
        let rule_type = RuleType::from_traefik_name(value).ok_or_else(|| {
            format!(
                "annotation {name}: {shown} is not one of PathPrefix, PathPrefixStrip, Path, PathStrip, ReplacePath",
                shown = quoted(value)
            )
        })?;
        a.rule_type = Some(rule_type);
    }
    if let Some((name, value)) = get(REWRITE_TARGET) {
        // The proxy sends it upstream as is: anything a request path cannot hold (`<`, `>`, a
        // backquote) would make every rewritten request fail.
        if !value.starts_with('/')
            || value.contains(['?', '#', ' '])
            || value.chars().any(|c| c.is_control())
            || value.parse::<http::uri::PathAndQuery>().is_err()
        {
            return Err(format!(
                "annotation {name}: {shown} must be a path starting with '/', without '?', '#', spaces, control characters or characters a URL path cannot hold (<, >, `)",
                shown = quoted(value)
            ));
        }
        if a.rule_type == Some(RuleType::ReplacePath) {
            return Err(format!("annotation {name} cannot be combined with rule-type ReplacePath"));
        }
        a.rewrite_target = Some(value.to_string());
    }
    if let Some((name, value)) = get(PRIORITY) {
        match value.parse::<i32>() {
            Ok(p) => a.priority = p,
            Err(_) => {
                notes.push(format!("annotation {name}: {shown} is not an integer; ignored", shown = quoted(value)))
            }
        }
    }
    if let Some((name, value)) = get(PRESERVE_HOST) {
        a.preserve_host = parse_bool(name, value, true, notes);
    }
    if let Some((name, value)) = get(PROTOCOL) {
        a.protocol = Some(match value.to_ascii_lowercase().as_str() {
            "http" => BackendProtocol::Http,
            "https" => BackendProtocol::Https,
            "h2c" => BackendProtocol::H2c,
            "h2" => BackendProtocol::H2,
            _ => {
                return Err(format!(
                    "annotation {name}: {shown} is not one of http, https, h2c, h2",
                    shown = quoted(value)
                ))
            }
        });
    }
    if let Some((name, value)) = get(RESPONSE_TIMEOUT) {
        match humantime::parse_duration(value) {
            // Under a millisecond would round to a zero timeout: every request would answer 504.
            Ok(d) if d.as_millis() > 0 => {
                a.response_timeout_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            _ => {
                return Err(format!(
                    "annotation {name}: {shown} is not a duration of 1ms or more, such as 30s or 5m",
                    shown = quoted(value)
                ))
            }
        }
    }
    if let Some((name, value)) = get(HSTS_MAX_AGE) {
        let age: u64 = value
            .parse()
            .map_err(|_| format!("annotation {name}: {shown} is not a number of seconds", shown = quoted(value)))?;
        let mut hsts = format!("max-age={age}");
        if get(HSTS_INCLUDE_SUBDOMAINS).is_some_and(|(n, v)| parse_bool(n, v, false, notes)) {
            hsts.push_str("; includeSubDomains");
        }
        if get(HSTS_PRELOAD).is_some_and(|(n, v)| parse_bool(n, v, false, notes)) {
            hsts.push_str("; preload");
        }
        a.hsts = Some(hsts);
    } else if get(HSTS_INCLUDE_SUBDOMAINS).or(get(HSTS_PRELOAD)).is_some() {
        notes.push("hsts-include-subdomains and hsts-preload need hsts-max-age; ignored".into());
    }
    if let Some((name, value)) = get(INSECURE_SKIP_VERIFY) {
        a.insecure_skip_verify = parse_bool(name, value, false, notes);
    }
    if let Some((name, value)) = get(REDIRECT_ENTRY_POINT) {
        if value.eq_ignore_ascii_case("https") {
            let permanent = get(REDIRECT_PERMANENT).is_some_and(|(n, v)| parse_bool(n, v, false, notes));
            a.redirect_to_https = Some(RedirectKind { permanent });
        } else if !value.eq_ignore_ascii_case("http") {
            notes.push(format!(
                "annotation {name}: entry point {shown} does not exist (use https); ignored",
                shown = quoted(value)
            ));
        }
    }
    Ok(parsed)
}

/// The first of `names` present, with its trimmed value.
fn lookup<'a>(map: &'a BTreeMap<String, String>, names: &'static [&'static str]) -> Option<(&'static str, &'a str)> {
    names.iter().find_map(|n| map.get(*n).map(|v| (*n, v.trim())))
}

/// Go's `strconv.ParseBool`, as Traefik used; anything else keeps the default with a note.
fn parse_bool(name: &str, value: &str, default: bool, notes: &mut Vec<String>) -> bool {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
        "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
        _ => {
            notes.push(format!("annotation {name}: {shown} is not a boolean; using {default}", shown = quoted(value)));
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_pairs(pairs: &[(&str, &str)]) -> Result<Parsed, String> {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(Some(&map))
    }

    #[test]
    fn reads_all_three_spellings_of_rule_type() {
        for name in RULE_TYPE {
            let p = parse_pairs(&[(name, "PathPrefixStrip")]).unwrap();
            assert_eq!(p.annotations.rule_type, Some(RuleType::PathPrefixStrip), "{name}");
        }
    }

    #[test]
    fn canonical_name_wins_over_traefik_prefix() {
        let p = parse_pairs(&[
            ("ingress.kubernetes.io/rule-type", "Path"),
            ("traefik.ingress.kubernetes.io/rule-type", "PathPrefixStrip"),
        ])
        .unwrap();
        assert_eq!(p.annotations.rule_type, Some(RuleType::Path));
    }

    #[test]
    fn refuses_unknown_rule_type_and_protocol() {
        let err = parse_pairs(&[("traefik.ingress.kubernetes.io/rule-type", "Regex")]).unwrap_err();
        assert!(err.contains("traefik.ingress.kubernetes.io/rule-type") && err.contains("Regex"), "{err}");
        let err = parse_pairs(&[("ingress.kubernetes.io/protocol", "grpc")]).unwrap_err();
        assert!(err.contains("grpc"), "{err}");
        let err = parse_pairs(&[
            ("traefik.ingress.kubernetes.io/rule-type", "ReplacePath"),
            ("traefik.ingress.kubernetes.io/rewrite-target", "/x"),
        ])
        .unwrap_err();
        assert!(err.contains("ReplacePath"), "{err}");
    }

    #[test]
    fn access_control_annotations_refuse_the_ingress() {
        for name in [
            "traefik.ingress.kubernetes.io/auth-type",
            "ingress.kubernetes.io/whitelist-source-range",
            "traefik.frontend.whitelistSourceRange",
        ] {
            let err = parse_pairs(&[(name, "basic")]).unwrap_err();
            assert!(err.contains(name) && err.contains("refused"), "{err}");
        }
    }

    #[test]
    fn unsupported_annotations_are_ignored_with_a_note() {
        let p = parse_pairs(&[
            ("traefik.ingress.kubernetes.io/custom-request-headers", "X-A:1"),
            ("ingress.kubernetes.io/ssl-redirect", "true"),
            ("nginx.ingress.kubernetes.io/rewrite-target", "/"),
        ])
        .unwrap();
        assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
        assert!(p.notes.iter().any(|n| n.contains("custom-request-headers")));
        assert!(p.notes.iter().any(|n| n.contains("already redirects")));
    }

    #[test]
    fn rewrite_target_must_be_a_plain_path() {
        // "/a`b" and "/a<b>": found by the annotations fuzz target, accepted before and every
        // rewritten request then failed with 400 (the rewritten URL is invalid).
        for bad in ["new", "/a?b", "/a b", "/a#b", "/a`b", "/a<b>"] {
            let err = parse_pairs(&[("traefik.ingress.kubernetes.io/rewrite-target", bad)]).unwrap_err();
            assert!(err.contains("rewrite-target"), "{err}");
        }
    }

    #[test]
    fn hsts_annotations_build_the_header_value() {
        let p = parse_pairs(&[
            ("ingress.kubernetes.io/hsts-max-age", "31536000"),
            ("ingress.kubernetes.io/hsts-include-subdomains", "true"),
            ("traefik.ingress.kubernetes.io/hsts-preload", "true"),
        ])
        .unwrap();
        assert_eq!(p.annotations.hsts.as_deref(), Some("max-age=31536000; includeSubDomains; preload"));
        assert!(p.notes.is_empty(), "{:?}", p.notes);
        assert!(parse_pairs(&[("ingress.kubernetes.io/hsts-max-age", "long")]).is_err());
    }

    /// Found by the annotations fuzz target: "5ns" passed the non-zero check but became a 0 ms
    /// timeout, so every request to the Ingress answered 504.
    #[test]
    fn response_timeout_must_be_at_least_a_millisecond() {
        for bad in ["0s", "5ns", "999us", "soon"] {
            let err = parse_pairs(&[("portier.io/response-timeout", bad)]).unwrap_err();
            assert!(err.contains("response-timeout") && err.contains("1ms or more"), "{err}");
        }
        let p = parse_pairs(&[("portier.io/response-timeout", "1ms")]).unwrap();
        assert_eq!(p.annotations.response_timeout_ms, Some(1));
        let p = parse_pairs(&[("portier.io/response-timeout", "1m 500ms")]).unwrap();
        assert_eq!(p.annotations.response_timeout_ms, Some(60_500));
    }

    #[test]
    fn bad_values_fall_back_with_a_note() {
        let p = parse_pairs(&[
            ("traefik.ingress.kubernetes.io/preserve-host", "nope"),
            ("traefik.ingress.kubernetes.io/priority", "high"),
        ])
        .unwrap();
        assert!(p.annotations.preserve_host);
        assert_eq!(p.annotations.priority, 0);
        assert_eq!(p.notes.len(), 2);
    }

    #[test]
    fn redirect_entry_point_and_permanent() {
        let p = parse_pairs(&[("traefik.ingress.kubernetes.io/redirect-entry-point", "https")]).unwrap();
        assert_eq!(p.annotations.redirect_to_https, Some(RedirectKind { permanent: false }));
        let p = parse_pairs(&[
            ("traefik.ingress.kubernetes.io/redirect-entry-point", "https"),
            ("traefik.ingress.kubernetes.io/redirect-permanent", "true"),
        ])
        .unwrap();
        assert_eq!(p.annotations.redirect_to_https, Some(RedirectKind { permanent: true }));
    }

    #[test]
    fn values_parse() {
        let p = parse_pairs(&[
            ("traefik.ingress.kubernetes.io/preserve-host", "false"),
            ("traefik.ingress.kubernetes.io/priority", "10"),
            ("ingress.kubernetes.io/protocol", "h2c"),
            ("portier.io/insecure-skip-verify", "true"),
            ("traefik.ingress.kubernetes.io/rewrite-target", "/new"),
        ])
        .unwrap();
        let a = p.annotations;
        assert!(!a.preserve_host && a.insecure_skip_verify);
        assert_eq!((a.priority, a.protocol), (10, Some(BackendProtocol::H2c)));
        assert_eq!(a.rewrite_target.as_deref(), Some("/new"));
    }
}
