//! Translation tables: real Ingress YAML in, routes, backends and warnings out.

use super::*;
use crate::config::{RedirectKind, Scheme, Target};
use crate::provider::file::parse_manifest;

fn state(yaml: &str) -> ClusterState {
    let parsed = parse_manifest(yaml).unwrap();
    assert!(parsed.refused.is_empty(), "{:?}", parsed.refused);
    let mut state = ClusterState::default();
    for object in parsed.objects {
        assert!(state.insert(object));
    }
    state
}

fn translate_yaml(yaml: &str) -> Config {
    translate(&state(yaml), &TranslateOptions::default())
}

const DASHBOARD: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: kubernetes-dashboard, namespace: kube-system}
spec:
  type: ExternalName
  externalName: kubernetes-dashboard.kubernetes-dashboard.svc.cluster.local
  ports: [{port: 443}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: kubernetes-dashboard
  namespace: kube-system
  labels: {app: traefik}
  annotations:
    traefik.ingress.kubernetes.io/rule-type: PathPrefixStrip
    portier.io/insecure-skip-verify: "true"
spec:
  rules:
  - http:
      paths:
      - path: /k8s
        pathType: ImplementationSpecific
        backend: {service: {name: kubernetes-dashboard, port: {number: 443}}}
"#;

#[test]
fn dashboard_ingress_becomes_a_strip_route_to_an_https_external_name() {
    let config = translate_yaml(DASHBOARD);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let route = &config.routes[0];
    assert_eq!(route.id, "kube-system/kubernetes-dashboard#0.0");
    assert_eq!((route.host.as_deref(), route.path.as_str()), (None, "/k8s"));
    assert_eq!((route.match_kind, route.rule_type), (MatchKind::Prefix, RuleType::PathPrefixStrip));
    assert_eq!(route.rewrite, PathRewrite::StripPrefix);
    let backend = &config.backends[route.backend];
    assert_eq!(backend.name, "kube-system/kubernetes-dashboard:443");
    assert_eq!(backend.transport.scheme, Scheme::Https);
    assert!(!backend.transport.verify);
    assert_eq!(backend.transport.server_name, "kubernetes-dashboard.kubernetes-dashboard.svc.cluster.local");
    assert_eq!(
        backend.target,
        Target::ExternalName { host: "kubernetes-dashboard.kubernetes-dashboard.svc.cluster.local".into(), port: 443 }
    );
    assert_eq!(config.router.lookup("node", "/k8s/api"), Some(0));
}

#[test]
fn translation_is_deterministic_and_equal_inputs_give_equal_configs() {
    assert_eq!(translate_yaml(DASHBOARD), translate_yaml(DASHBOARD));
}

fn with_ingress(annotations: &str, path: &str, path_type: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec: {{type: ExternalName, externalName: web.example, ports: [{{port: 80, name: http}}, {{port: 8443, name: https-alt}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  annotations: {{{annotations}}}
spec:
  rules:
  - host: Web.Example.COM
    http:
      paths:
      - {{path: "{path}", pathType: {path_type}, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
"#
    )
}

#[test]
fn path_types_and_rule_types_table() {
    use MatchKind::*;
    let strip = "traefik.ingress.kubernetes.io/rule-type: PathPrefixStrip";
    let cases: &[(&str, &str, &str, MatchKind, RuleType, PathRewrite, &str)] = &[
        ("", "/a/", "Prefix", Prefix, RuleType::Prefix, PathRewrite::None, "/a"),
        ("", "/a", "Exact", Exact, RuleType::Exact, PathRewrite::None, "/a"),
        ("", "/a", "ImplementationSpecific", Prefix, RuleType::PathPrefix, PathRewrite::None, "/a"),
        (strip, "/k8s/", "ImplementationSpecific", Prefix, RuleType::PathPrefixStrip, PathRewrite::StripPrefix, "/k8s"),
        // A Traefik manifest moved to pathType Prefix keeps its strip.
        (strip, "/k8s", "Prefix", Prefix, RuleType::PathPrefixStrip, PathRewrite::StripPrefix, "/k8s"),
        (
            "traefik.frontend.rule.type: Path",
            "/p",
            "ImplementationSpecific",
            Exact,
            RuleType::Path,
            PathRewrite::None,
            "/p",
        ),
        (
            "ingress.kubernetes.io/rule-type: PathStrip",
            "/p",
            "ImplementationSpecific",
            Exact,
            RuleType::PathStrip,
            PathRewrite::StripPrefix,
            "/p",
        ),
        (
            "traefik.ingress.kubernetes.io/rule-type: ReplacePath",
            "/fixed",
            "ImplementationSpecific",
            Prefix,
            RuleType::ReplacePath,
            PathRewrite::ReplaceWhole("/fixed".into()),
            "/",
        ),
        (
            "traefik.ingress.kubernetes.io/rewrite-target: /new/",
            "/old",
            "Prefix",
            Prefix,
            RuleType::Prefix,
            PathRewrite::ReplacePrefix("/new".into()),
            "/old",
        ),
        ("", "", "ImplementationSpecific", Prefix, RuleType::PathPrefix, PathRewrite::None, "/"),
    ];
    for (annotations, path, path_type, kind, rule_type, rewrite, normalised) in cases {
        let config = translate_yaml(&with_ingress(annotations, path, path_type));
        assert!(config.warnings.iter().all(|w| !w.refused), "{annotations} {path}: {:?}", config.warnings);
        let route = &config.routes[0];
        let got =
            (route.match_kind, route.rule_type, route.rewrite.clone(), route.path.as_str(), route.host.as_deref());
        assert_eq!(
            got,
            (*kind, *rule_type, rewrite.clone(), *normalised, Some("web.example.com")),
            "{annotations} {path} {path_type}"
        );
    }
}

#[test]
fn invalid_annotation_refuses_that_ingress_alone() {
    let yaml = format!(
        "{}\n---\n{}",
        with_ingress("traefik.ingress.kubernetes.io/rule-type: Regex", "/a", "Prefix"),
        with_ingress("", "/b", "Prefix")
            .replace("name: web\n  annotations", "name: other\n  annotations")
            .split("---")
            .nth(1)
            .unwrap()
    );
    let config = translate_yaml(&yaml);
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.routes[0].ingress.to_string(), "default/other");
    let refused: Vec<_> = config.warnings.iter().filter(|w| w.refused).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].object, "Ingress default/web");
    assert!(refused[0].message.contains("Regex"));
}

#[test]
fn https_detection_by_port_name_and_protocol_annotation() {
    let yaml = with_ingress("ingress.kubernetes.io/protocol: h2c", "/", "Prefix");
    let backend = &translate_yaml(&yaml).backends[0];
    assert_eq!((backend.transport.scheme, backend.transport.http2), (Scheme::Http, true));

    let yaml = with_ingress("", "/", "Prefix").replace("port: {number: 80}", "port: {name: https-alt}");
    let backend = &translate_yaml(&yaml).backends[0];
    assert_eq!(backend.transport.scheme, Scheme::Https);
    assert_eq!(backend.target, Target::ExternalName { host: "web.example".into(), port: 8443 });
    assert_eq!(backend.authority, "web.example:8443");
    assert_eq!(backend.name, "default/web:https-alt");
}

#[test]
fn missing_service_and_missing_port_answer_503_with_a_warning() {
    let yaml =
        with_ingress("", "/", "Prefix").replace("name: web, port: {number: 80}", "name: nope, port: {number: 80}");
    let config = translate_yaml(&yaml);
    assert!(
        matches!(&config.backends[0].target, Target::Unavailable(r) if r.contains("Service default/nope not found"))
    );
    assert!(config
        .warnings
        .iter()
        .any(|w| w.object == "Ingress default/web" && w.message.contains("not found") && !w.refused));

    let yaml = with_ingress("", "/", "Prefix").replace("port: {number: 80}", "port: {number: 81}");
    let config = translate_yaml(&yaml);
    assert!(matches!(&config.backends[0].target, Target::Unavailable(r) if r.contains("has no port 81")));
}

#[test]
fn endpoint_slices_give_ready_addresses_on_the_named_port() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: apps}
spec: {ports: [{name: web, port: 80, targetPort: 8080}, {name: metrics, port: 9090}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: api-1, namespace: apps, labels: {kubernetes.io/service-name: api}}
addressType: IPv4
ports: [{name: web, port: 8080}, {name: metrics, port: 9090}]
endpoints:
- addresses: ["10.0.0.2"]
  conditions: {ready: true}
- addresses: ["10.0.0.1"]
- addresses: ["10.0.0.3"]
  conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other, namespace: apps, labels: {kubernetes.io/service-name: not-api}}
addressType: IPv4
ports: [{name: web, port: 1}]
endpoints: [{addresses: ["10.9.9.9"]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: api, namespace: apps}
spec:
  defaultBackend: {service: {name: api, port: {name: web}}}
"#;
    let config = translate_yaml(yaml);
    let backend = &config.backends[0];
    assert_eq!(
        backend.target,
        Target::Endpoints(vec!["10.0.0.1:8080".parse().unwrap(), "10.0.0.2:8080".parse().unwrap()])
    );
    assert_eq!(backend.transport.server_name, "api.apps.svc");
    assert_eq!(config.router.lookup("any", "/x"), Some(0));
    assert_eq!(config.router.default_route(), Some(0));
}

#[test]
fn second_default_backend_is_ignored_naming_both() {
    let one = |name: &str, ts: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, creationTimestamp: \"{ts}\"}}\nspec:\n  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}\n"
        )
    };
    let yaml = format!(
        "{}---\n{}---\n{}",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: ExternalName, externalName: w.example, ports: [{port: 80}]}\n",
        one("young", "2024-05-01T00:00:00Z"),
        one("old", "2020-01-01T00:00:00Z")
    );
    let config = translate_yaml(&yaml);
    let default = config.router.default_route().map(|id| config.routes[id].ingress.name.clone());
    assert_eq!(default.as_deref(), Some("old"));
    let w = config.warnings.iter().find(|w| w.message.contains("defaultBackend")).unwrap();
    assert_eq!(w.object, "Ingress default/young");
    assert!(w.message.contains("default/old"));
}

#[test]
fn label_selector_and_class_choose_ingresses() {
    let yaml = |labels: &str, class: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: i, labels: {{{labels}}}, annotations: {{{class}}}}}\nspec:\n  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}\n"
        )
    };
    let count = |yaml: &str, selector: &str, class: Option<&str>| {
        let options = TranslateOptions {
            label_selector: LabelSelector::parse(selector).unwrap(),
            ingress_class: class.map(String::from),
            ..Default::default()
        };
        translate(&state(yaml), &options).routes.len()
    };
    assert_eq!(count(&yaml("app: traefik", ""), "app=traefik", None), 1);
    assert_eq!(count(&yaml("app: other", ""), "app=traefik", None), 0);
    assert_eq!(count(&yaml("", "kubernetes.io/ingress.class: traefik"), "", None), 1);
    assert_eq!(count(&yaml("", "kubernetes.io/ingress.class: portier"), "", None), 1);
    assert_eq!(count(&yaml("", "kubernetes.io/ingress.class: \"\""), "", None), 1);
    assert_eq!(count(&yaml("", "kubernetes.io/ingress.class: nginx"), "", None), 0);
    assert_eq!(count(&yaml("", "kubernetes.io/ingress.class: nginx"), "", Some("nginx")), 1);
    assert_eq!(count(&yaml("", ""), "", Some("nginx")), 0);
    let by_spec = yaml("", "").replace("spec:\n", "spec:\n  ingressClassName: nginx\n");
    assert_eq!(count(&by_spec, "", None), 0);
    assert_eq!(count(&by_spec, "", Some("nginx")), 1);
}

#[test]
fn redirect_annotations_reach_the_route() {
    let yaml = with_ingress(
        "traefik.ingress.kubernetes.io/redirect-entry-point: https, traefik.ingress.kubernetes.io/redirect-permanent: \"true\"",
        "/",
        "Prefix",
    );
    assert_eq!(translate_yaml(&yaml).routes[0].redirect_to_https, Some(RedirectKind { permanent: true }));
}

#[test]
fn invalid_hosts_and_paths_are_refused() {
    for (from, to) in [("host: Web.Example.COM", "host: \"a..b\""), ("host: Web.Example.COM", "host: \"a.*.b\"")] {
        let config = translate_yaml(&with_ingress("", "/a", "Prefix").replace(from, to));
        assert!(config.routes.is_empty());
        assert!(config.warnings[0].refused && config.warnings[0].message.contains("not a valid DNS name"));
    }
    let config = translate_yaml(&with_ingress("", "nope", "Prefix"));
    assert!(config.warnings[0].refused && config.warnings[0].message.contains("must start with '/'"));
}

/// Found by the manifest fuzz target: a ReplacePath Ingress whose path holds a backquote was
/// served, and every request to it answered 400 (the rewritten URL is invalid).
#[test]
fn paths_a_request_cannot_carry_are_refused() {
    let replace = "traefik.ingress.kubernetes.io/rule-type: ReplacePath";
    for (annotations, path) in [(replace, "/fixed`"), ("", "/a<b>"), ("", "/a`")] {
        let config = translate_yaml(&with_ingress(annotations, path, "ImplementationSpecific"));
        assert!(config.routes.is_empty(), "{path}");
        assert!(config.warnings[0].refused && config.warnings[0].message.contains("cannot hold"), "{path}");
    }
    let config = translate_yaml(&with_ingress(replace, "/fixed/{id}|x", "ImplementationSpecific"));
    assert_eq!(config.routes[0].rewrite, PathRewrite::ReplaceWhole("/fixed/{id}|x".into()));
}

#[test]
fn regex_like_paths_are_served_literally_with_a_note() {
    for (path, sign) in [("/(.*)", "*"), ("/api/{id:[0-9]+}", "{"), ("/files/*", "*"), ("/x(.+)", ".+"), ("/a$", "$")] {
        let config = translate_yaml(&with_ingress("", path, "Prefix"));
        assert_eq!(config.routes[0].path, path, "served literally");
        let note = &config.warnings[0];
        assert!(!note.refused && note.message.contains(&format!("contains {sign:?}")), "{path}: {note:?}");
    }
    for plain in ["/k8s", "/wiki/Foo_(bar)", "/c++", "/a.b/c-d~e"] {
        assert!(translate_yaml(&with_ingress("", plain, "Prefix")).warnings.is_empty(), "{plain} has no note");
    }
}

#[test]
fn ip_address_hosts_are_refused_as_kubernetes_does() {
    let config = translate_yaml(&with_ingress("", "/a", "Prefix").replace("host: Web.Example.COM", "host: 10.1.2.3"));
    assert!(config.routes.is_empty());
    assert!(config.warnings[0].refused && config.warnings[0].message.contains("is an IP address"));
    let config =
        translate_yaml(&with_ingress("", "/a", "Prefix").replace("host: Web.Example.COM", "host: 10.1.2.3.example"));
    assert_eq!(config.routes[0].host.as_deref(), Some("10.1.2.3.example"), "a name that starts with digits is fine");
}

#[test]
fn external_name_must_be_a_dns_name() {
    let config = translate_yaml(
        &with_ingress("", "/", "Prefix").replace("externalName: web.example", "externalName: \"bad name\""),
    );
    assert!(matches!(&config.backends[0].target, Target::Unavailable(r) if r.contains("not a valid DNS name")));
}

#[test]
fn node_local_external_names_are_refused_unless_allowed() {
    for ip in ["127.0.0.1", "169.254.169.254", "::1", "fe80::1"] {
        let yaml =
            with_ingress("", "/", "Prefix").replace("externalName: web.example", &format!("externalName: \"{ip}\""));
        let config = translate_yaml(&yaml);
        assert!(
            matches!(&config.backends[0].target, Target::Unavailable(r) if r.contains("reach the node itself")),
            "{ip}"
        );
        let options = TranslateOptions { allow_node_local_external_name: true, ..Default::default() };
        let allowed = translate(&state(&yaml), &options);
        assert!(!matches!(&allowed.backends[0].target, Target::Unavailable(r) if r.contains("reach the node")), "{ip}");
    }
    let yaml = with_ingress("", "/", "Prefix").replace("externalName: web.example", "externalName: \"10.1.2.3\"");
    assert!(!matches!(&translate_yaml(&yaml).backends[0].target, Target::Unavailable(_)));
}

#[test]
fn external_names_can_be_forbidden() {
    let options = TranslateOptions { forbid_external_name: true, ..Default::default() };
    let config = translate(&state(&with_ingress("", "/", "Prefix")), &options);
    assert!(matches!(&config.backends[0].target, Target::Unavailable(r) if r.contains("--allow-external-name=false")));
    assert!(config.warnings.iter().any(|w| w.message.contains("not allowed")));
}

#[test]
fn references_that_resolve_alike_share_one_backend() {
    // The same https port, once with `protocol: https` and once detected by its name: one backend,
    // as its name and transport are the same (and so its metrics and health).
    let plain = with_ingress("", "/a", "Prefix").replace("port: {number: 80}", "port: {name: https-alt}");
    let annotated = with_ingress("ingress.kubernetes.io/protocol: https", "/b", "Prefix")
        .replace("port: {number: 80}", "port: {name: https-alt}")
        .replace("  name: web\n  annotations", "  name: other\n  annotations");
    let config = translate_yaml(&format!("{plain}\n---\n{}", annotated.split("---").last().unwrap()));
    assert_eq!(config.routes.len(), 2, "{:?}", config.warnings);
    assert_eq!(config.backends.len(), 1, "{:?}", config.backends.iter().map(|b| &b.name).collect::<Vec<_>>());
    assert_eq!(config.routes[0].backend, config.routes[1].backend);
}
