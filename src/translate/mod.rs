//! ClusterState + options → Config, and the warnings for what was refused. A pure function: no
//! IO, no clock, the same input always gives the same output.

pub mod annotations;
pub mod backend;

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use self::annotations::{IngressAnnotations, INGRESS_CLASS};
use self::backend::{BackendRequest, BackendSpec};
use crate::config::{quoted, Backend, BackendId, Config, MatchKind, PathRewrite, Route, RuleType, Warning};
use crate::router::Router;
use crate::selector::LabelSelector;
use crate::state::{ClusterState, ObjectKey};
use crate::tls::{load_pem_pair, CertStore, StoredCert};

/// Classes accepted when `--ingress-class` is not set (besides none and empty).
pub const DEFAULT_CLASSES: &[&str] = &["traefik", "portier"];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TranslateOptions {
    pub label_selector: LabelSelector,
    /// `None`: no class, empty, or one of `DEFAULT_CLASSES`; `Some(c)`: exactly `c`.
    pub ingress_class: Option<String>,
    /// `--insecure-skip-verify`: verify no HTTPS backend.
    pub insecure_skip_verify: bool,
    /// `--allow-external-name=false`: ExternalName Services (the way across namespaces) refused.
    pub forbid_external_name: bool,
    /// `--allow-node-local-external-name`: accept ExternalName IP literals in the loopback and
    /// link-local ranges, which reach the node itself (refused by default against SSRF).
    pub allow_node_local_external_name: bool,
}

/// Builds the whole config. Ingresses are taken oldest first, then by namespace/name, which
/// decides every tie.
pub fn translate(state: &ClusterState, options: &TranslateOptions) -> Config {
    // The map is in namespace/name order, which a stable sort by age keeps among equals.
    let mut ingresses: Vec<(&ObjectKey, &Ingress)> =
        state.ingresses.iter().map(|(k, i)| (k, i.as_ref())).filter(|(_, i)| selected(i, options)).collect();
    ingresses.sort_by(|(_, a), (_, b)| {
        let age = |i: &Ingress| i.metadata.creation_timestamp.as_ref().map(|t| t.0);
        // Ingresses with a timestamp are older than those without (manifests often have none).
        match (age(a), age(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    });

    let mut builder = Builder::default();
    let mut resolved = Resolved::default();
    for (key, ingress) in ingresses {
        builder.add_ingress(state, options, &mut resolved, key, ingress);
    }
    builder.finish()
}

fn selected(ingress: &Ingress, options: &TranslateOptions) -> bool {
    if !options.label_selector.matches(ingress.metadata.labels.as_ref()) {
        return false;
    }
    let class = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INGRESS_CLASS))
        .or_else(|| ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_ref()))
        .map(|c| c.trim());
    match (&options.ingress_class, class) {
        (Some(wanted), class) => class == Some(wanted.as_str()),
        (None, None) => true,
        (None, Some(class)) => class.is_empty() || DEFAULT_CLASSES.contains(&class),
    }
}

/// What one Ingress backend reference asks for: namespace, Service, port number or name, protocol
/// annotation, verification. The rest of a resolution is the same for the whole translation.
type ResolveKey<'a> = (&'a str, &'a str, Option<i32>, Option<&'a str>, Option<annotations::BackendProtocol>, bool);

/// Backends resolved so far in this translation: Ingresses naming the same Service port resolve
/// it once (10,000 Ingresses often share a handful of Services).
type Resolved<'a> = HashMap<ResolveKey<'a>, Arc<BackendSpec>>;

#[derive(Default)]
struct Builder {
    routes: Vec<Route>,
    backends: Vec<Backend>,
    backend_ids: HashMap<(String, crate::config::Transport), BackendId>,
    /// The same ids by the address of a resolution (see [`Resolved`]), so routes after the first
    /// to a backend find it without building its key again.
    resolution_ids: HashMap<usize, BackendId>,
    certificates: CertStore,
    warnings: Vec<Warning>,
    default_route: Option<(ObjectKey, usize)>,
    served: Vec<ObjectKey>,
}

/// One Ingress's contribution, collected before anything is added so a refusal leaves no trace.
struct Draft {
    routes: Vec<(Route, Arc<BackendSpec>)>,
    default_backend: Option<(Route, Arc<BackendSpec>)>,
    certs: Vec<(ObjectKey, Vec<String>, Result<crate::tls::LoadedCert, String>)>,
    notes: Vec<String>,
}

impl Builder {
    fn add_ingress<'a>(
        &mut self,
        state: &ClusterState,
        options: &TranslateOptions,
        resolved: &mut Resolved<'a>,
        key: &'a ObjectKey,
        ingress: &'a Ingress,
    ) {
        match draft(state, options, resolved, ingress, key) {
            Err(reason) => self.warnings.push(Warning::ingress(key, reason, true)),
            Ok(draft) => self.accept(key, draft),
        }
    }

    fn accept(&mut self, key: &ObjectKey, draft: Draft) {
        self.served.push(key.clone());
        for note in draft.notes {
            self.warnings.push(Warning::ingress(key, note, false));
        }
        for (secret, names, loaded) in draft.certs {
            match loaded {
                Err(problem) => self.warnings.push(Warning::ingress(
                    key,
                    format!("TLS Secret {secret}: {problem}; the default certificate is served instead"),
                    false,
                )),
                Ok(loaded) => match self.certificates.contains_secret(&secret) {
                    Some(index) => self.certificates.add_names(index, &names),
                    None => {
                        let mut all_names = loaded.info.dns_names.clone();
                        for n in names {
                            if !all_names.contains(&n) {
                                all_names.push(n);
                            }
                        }
                        self.certificates.add(StoredCert {
                            secret,
                            names: all_names,
                            info: loaded.info.clone(),
                            loaded,
                        });
                    }
                },
            }
        }
        for (route, spec) in draft.routes {
            self.push_route(key, route, spec);
        }
        if let Some((route, spec)) = draft.default_backend {
            match &self.default_route {
                Some((owner, _)) => self.warnings.push(Warning::ingress(
                    key,
                    format!("spec.defaultBackend ignored: Ingress {owner} already provides the default backend (only one is allowed)"),
                    false,
                )),
                None => {
                    let id = self.push_route(key, route, spec);
                    self.default_route = Some((key.clone(), id));
                }
            }
        }
    }

    fn push_route(&mut self, key: &ObjectKey, mut route: Route, spec: Arc<BackendSpec>) -> usize {
        if let Some(problem) = &spec.problem {
            self.warnings.push(Warning::ingress(key, format!("route {}: {problem}; it answers 503", route.id), false));
        }
        let next_id = self.backends.len();
        // Different references (a `protocol` annotation or not, say) can resolve to the same
        // backend: they share it, as its name and transport say.
        let id = match self.resolution_ids.get(&(Arc::as_ptr(&spec) as usize)) {
            Some(id) => *id,
            None => {
                let id = *self.backend_ids.entry((spec.name.clone(), spec.transport.clone())).or_insert(next_id);
                self.resolution_ids.insert(Arc::as_ptr(&spec) as usize, id);
                id
            }
        };
        if id == next_id {
            let spec = Arc::unwrap_or_clone(spec);
            self.backends.push(Backend {
                name: spec.name,
                service: spec.service,
                transport: spec.transport,
                target: spec.target,
                authority: spec.authority,
                next: Default::default(),
            });
        }
        route.backend = id;
        self.routes.push(route);
        self.routes.len() - 1
    }

    fn finish(mut self) -> Config {
        let default_route = self.default_route.as_ref().map(|(_, id)| *id);
        let (router, conflicts) = Router::build(&self.routes, default_route);
        for conflict in conflicts {
            if let (Some(winner), Some(loser)) = (self.routes.get(conflict.winner), self.routes.get(conflict.loser)) {
                self.warnings.push(Warning::ingress(
                    &loser.ingress,
                    format!(
                        "route {} (host {}, path {}) is shadowed by route {} of Ingress {}, which is older or sorts first; give one a different path or a priority annotation",
                        loser.id,
                        loser.host.as_deref().unwrap_or("*"),
                        loser.path,
                        winner.id,
                        winner.ingress
                    ),
                    false,
                ));
            }
        }
        Config {
            routes: self.routes,
            backends: self.backends,
            router,
            certificates: self.certificates,
            warnings: self.warnings,
            ingresses: self.served,
        }
    }
}

fn draft<'a>(
    state: &ClusterState,
    options: &TranslateOptions,
    resolved: &mut Resolved<'a>,
    ingress: &'a Ingress,
    key: &'a ObjectKey,
) -> Result<Draft, String> {
    let parsed = annotations::parse(ingress.metadata.annotations.as_ref())?;
    let a = parsed.annotations;
    let mut notes = parsed.notes;
    let spec = ingress.spec.as_ref().ok_or("it has no spec")?;
    let verify = !(options.insecure_skip_verify || a.insecure_skip_verify);

    let mut certs = Vec::new();
    let mut host_secrets: Vec<(String, ObjectKey)> = Vec::new();
    for tls in spec.tls.as_deref().unwrap_or_default() {
        let hosts: Vec<String> = tls.hosts.iter().flatten().map(|h| h.trim().to_ascii_lowercase()).collect();
        let Some(secret_name) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            continue;
        };
        let secret_key = ObjectKey::new(&key.namespace, secret_name);
        let loaded = match state.secrets.get(&secret_key) {
            None => Err("not found".to_string()),
            Some(secret) => load_secret(secret),
        };
        if let Ok(loaded) = &loaded {
            for name in hosts.iter().chain(&loaded.info.dns_names) {
                host_secrets.push((name.clone(), secret_key.clone()));
            }
        }
        certs.push((secret_key, hosts, loaded));
    }
    let secret_for = |host: &Option<String>| -> Option<ObjectKey> {
        let host = host.as_deref()?;
        let parent = host.split_once('.').map(|(_, p)| format!("*.{p}"));
        host_secrets
            .iter()
            .find(|(n, _)| n == host)
            .or_else(|| host_secrets.iter().find(|(n, _)| Some(n) == parent.as_ref()))
            .map(|(_, s)| s.clone())
    };

    let mut resolve = |backend: &'a IngressBackend| -> Result<Arc<BackendSpec>, String> {
        let service = backend.service.as_ref().ok_or_else(|| {
            "a backend names a resource instead of a service; only service backends are supported".to_string()
        })?;
        let port = service.port.as_ref();
        let wanted = (
            key.namespace.as_str(),
            service.name.as_str(),
            port.and_then(|p| p.number),
            port.and_then(|p| p.name.as_deref()),
            a.protocol,
            verify,
        );
        let spec = resolved.entry(wanted).or_insert_with(|| {
            Arc::new(backend::resolve(
                state,
                &BackendRequest {
                    namespace: &key.namespace,
                    service: &service.name,
                    port,
                    protocol: a.protocol,
                    verify,
                    forbid_external_name: options.forbid_external_name,
                    allow_node_local: options.allow_node_local_external_name,
                },
            ))
        });
        Ok(spec.clone())
    };

    let mut routes = Vec::new();
    for (rule_index, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match rule.host.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
            None => None,
            Some(h) => Some(ingress_host(h)?),
        };
        let Some(http) = rule.http.as_ref() else { continue };
        for (path_index, path) in http.paths.iter().enumerate() {
            let id = format!("{key}#{rule_index}.{path_index}");
            let (match_kind, rule_type, rewrite, normalised) =
                route_shape(path.path.as_deref(), &path.path_type, &a, &mut notes, &id)?;
            let spec = resolve(&path.backend)?;
            routes.push((
                Route {
                    id,
                    ingress: key.clone(),
                    tls_secret: secret_for(&host),
                    host: host.clone(),
                    path: normalised,
                    match_kind,
                    rule_type,
                    rewrite,
                    backend: 0,
                    preserve_host: a.preserve_host,
                    redirect_to_https: a.redirect_to_https,
                    priority: a.priority,
                    response_timeout_ms: a.response_timeout_ms,
                    hsts: a.hsts.clone(),
                },
                spec,
            ));
        }
    }

    let default_backend = match spec.default_backend.as_ref() {
        None => None,
        Some(backend) => Some((
            Route {
                id: format!("{key}#default"),
                ingress: key.clone(),
                host: None,
                path: "/".into(),
                match_kind: MatchKind::Prefix,
                rule_type: RuleType::Prefix,
                rewrite: PathRewrite::None,
                backend: 0,
                preserve_host: a.preserve_host,
                redirect_to_https: a.redirect_to_https,
                priority: a.priority,
                tls_secret: None,
                response_timeout_ms: a.response_timeout_ms,
                hsts: a.hsts.clone(),
            },
            resolve(backend)?,
        )),
    };
    if routes.is_empty() && default_backend.is_none() {
        notes.push("it has no rules with paths and no default backend: nothing to serve".into());
    }
    Ok(Draft { routes, default_backend, certs, notes })
}

fn load_secret(secret: &Secret) -> Result<crate::tls::LoadedCert, String> {
    let get = |name: &str| -> Option<Vec<u8>> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|b| b.0.clone())
            .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(name)).map(|s| s.as_bytes().to_vec()))
            .filter(|b| !b.is_empty())
    };
    let cert = get("tls.crt").ok_or("it has no tls.crt")?;
    let key = get("tls.key").ok_or("it has no tls.key")?;
    load_pem_pair(&cert, &key)
}

/// Hosts are DNS names, lower-cased; `*.` may only start a wildcard host.
pub(crate) fn valid_host(host: &str) -> Result<String, String> {
    let lower = host.to_ascii_lowercase();
    let name = lower.strip_prefix("*.").unwrap_or(&lower);
    let labels = || name.split('.');
    let problem = if name.len() > 253 {
        Some("it is longer than 253 characters".to_string())
    } else if let Some(c) = name.chars().find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.')) {
        Some(format!(
            "it contains {c:?}; a DNS name has letters, digits, '-' and '.', and a wildcard only a leading '*.'"
        ))
    } else if labels().any(str::is_empty) {
        Some("it has an empty label (a leading, trailing or doubled '.')".to_string())
    } else if labels().any(|label| label.len() > 63) {
        Some("a label is longer than 63 characters".to_string())
    } else {
        None
    };
    match problem {
        None => Ok(lower),
        Some(problem) => Err(format!("host {} is not a valid DNS name (or *.wildcard): {problem}", quoted(host))),
    }
}

/// An Ingress rule's host: a DNS name, not an IP address (Kubernetes refuses IPs there too; a
/// rule without host is the way to match requests by address).
fn ingress_host(host: &str) -> Result<String, String> {
    let host = valid_host(host)?;
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!(
            "host {} is an IP address; Ingress hosts are DNS names (leave the host out to match requests by address)",
            quoted(&host)
        ));
    }
    Ok(host)
}

/// The first sign that a path was written as a regular expression, glob or Traefik 1.7 template
/// (`/(.*)`, `/api/*`, `/{id:[0-9]+}`), none of which portier (or the Ingress API) supports.
fn pattern_syntax(path: &str) -> Option<&str> {
    const SIGNS: &[&str] = &["*", ".+", "[", "]", "{", "}", "|", "\\", "^", "$"];
    let first = SIGNS.iter().filter_map(|s| path.find(s).map(|at| (at, *s))).min()?;
    Some(first.1)
}

/// Match kind, rule type, rewrite and normalised path of one Ingress path.
///
/// `pathType` decides matching (Exact, Prefix); `ImplementationSpecific` takes it from the Traefik
/// rule type. The rule type's strip or replace applies in all cases, so Traefik manifests that were
/// moved to `pathType: Prefix` keep their `PathPrefixStrip`.
fn route_shape(
    path: Option<&str>,
    path_type: &str,
    a: &IngressAnnotations,
    notes: &mut Vec<String>,
    id: &str,
) -> Result<(MatchKind, RuleType, PathRewrite, String), String> {
    let raw = path.map(str::trim).filter(|p| !p.is_empty()).unwrap_or("/");
    // A path a request cannot carry (`<`, `>`, a backquote) never matches, and as a ReplacePath
    // target it would make every request fail.
    if !raw.starts_with('/')
        || raw.contains(['?', '#', ' '])
        || raw.chars().any(char::is_control)
        || raw.parse::<http::uri::PathAndQuery>().is_err()
    {
        return Err(format!(
            "path {} must start with '/' and contain no '?', '#', spaces, control characters or characters a URL path cannot hold (<, >, `)",
            quoted(raw)
        ));
    }
    if let Some(pattern) = pattern_syntax(raw) {
        notes.push(format!(
            "route {id}: path {} contains {pattern:?}, which portier matches literally: paths are not regular \
             expressions, wildcards or Traefik {{name:regex}} templates, so only requests with exactly this text match",
            quoted(raw)
        ));
    }
    let trimmed = raw.trim_end_matches('/');
    let normalised = if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() };
    let traefik = a.rule_type.unwrap_or(RuleType::PathPrefix);
    let (match_kind, rule_type) = match path_type {
        "Exact" => (MatchKind::Exact, a.rule_type.unwrap_or(RuleType::Exact)),
        "Prefix" => (MatchKind::Prefix, a.rule_type.unwrap_or(RuleType::Prefix)),
        "ImplementationSpecific" | "" => match traefik {
            RuleType::Path | RuleType::PathStrip => (MatchKind::Exact, traefik),
            _ => (MatchKind::Prefix, traefik),
        },
        other => return Err(format!("pathType {} is not Exact, Prefix or ImplementationSpecific", quoted(other))),
    };
    // Exact paths keep what the Ingress wrote; prefixes drop a trailing slash (`/k8s/` = `/k8s`).
    let path = if match_kind == MatchKind::Exact { raw.to_string() } else { normalised.clone() };
    let mut rewrite = match a.rule_type {
        Some(RuleType::PathPrefixStrip | RuleType::PathStrip) => PathRewrite::StripPrefix,
        Some(RuleType::ReplacePath) => PathRewrite::ReplaceWhole(raw.to_string()),
        _ => PathRewrite::None,
    };
    let (path, match_kind) = if a.rule_type == Some(RuleType::ReplacePath) {
        // Traefik 1.7: ReplacePath is a modifier, not a matcher; the route takes every path.
        ("/".to_string(), MatchKind::Prefix)
    } else {
        (path, match_kind)
    };
    if let Some(target) = &a.rewrite_target {
        if rewrite == PathRewrite::StripPrefix {
            notes.push(format!(
                "route {id}: rewrite-target is ignored with rule-type {rule_type:?} (Traefik 1.7 behaved the same)"
            ));
        } else {
            rewrite = PathRewrite::ReplacePrefix(target.trim_end_matches('/').to_string());
        }
    }
    Ok((match_kind, rule_type, rewrite, path))
}

#[cfg(test)]
mod tests;
