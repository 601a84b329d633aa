//! Admin endpoints: health, and the JSON view of the live config, also after a swap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

#[tokio::test]
async fn admin_endpoints_describe_the_live_config() {
    let leaf = self_signed(&["dash.test"]);
    let ingress_yaml = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: dash
  annotations: {traefik.ingress.kubernetes.io/rule-type: PathPrefixStrip}
spec:
  tls: [{hosts: [dash.test], secretName: dash-tls}]
  rules:
  - host: dash.test
    http:
      paths:
      - {path: /k8s, pathType: ImplementationSpecific, backend: {service: {name: dash, port: {number: 443}}}}
      - {path: /missing, pathType: Prefix, backend: {service: {name: nope, port: {number: 80}}}}
"#;
    let portier = Portier::start(
        &[
            ("svc.yaml", external_service("dash", "localhost", 443, None)),
            ("ing.yaml", ingress_yaml.to_string()),
            ("secret.yaml", tls_secret("dash-tls", &leaf)),
        ],
        &[],
    )
    .await;

    let health = admin_get(&portier, "/healthz").await;
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    assert_eq!(admin_get(&portier, "/readyz").await.status, 200);

    let routes = admin_get(&portier, "/api/routes").await.json();
    let strip = &routes[0];
    assert_eq!(strip["id"], "default/dash#0.0");
    assert_eq!(strip["host"], "dash.test");
    assert_eq!(strip["path"], "/k8s");
    assert_eq!(strip["match"], "Prefix");
    assert_eq!(strip["ruleType"], "PathPrefixStrip");
    assert_eq!(strip["rewrite"]["kind"], "StripPrefix");
    assert_eq!(strip["backendName"], "default/dash:443");
    assert_eq!(strip["scheme"], "https");
    assert_eq!(strip["tlsSecret"]["name"], "dash-tls");
    assert_eq!(strip["target"]["kind"], "externalName");
    assert_eq!(routes[1]["target"]["kind"], "unavailable");

    let backends = admin_get(&portier, "/api/backends").await.json();
    assert_eq!(backends[0]["transport"]["serverName"], "localhost");
    assert_eq!(backends[0]["transport"]["verify"], true);

    let certs = admin_get(&portier, "/api/certificates").await;
    let certs_json = certs.json();
    assert_eq!(certs_json[0]["names"], serde_json::json!(["dash.test"]));
    assert!(certs_json[0]["notAfter"].as_i64().unwrap() > 0);
    assert!(!certs.text().contains("PRIVATE KEY"), "key material must never be served");

    let warnings = admin_get(&portier, "/api/warnings").await.json();
    assert!(warnings.as_array().unwrap().iter().any(|w| w["object"] == "Ingress default/dash"
        && w["message"].as_str().unwrap().contains("Service default/nope not found")));

    let version = admin_get(&portier, "/api/version").await.json();
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    let generation = version["generation"].as_u64().unwrap();

    let index = admin_get(&portier, "/").await;
    assert!(index.text().contains("href=\"api/routes\""), "links must be relative to work behind a prefix");

    portier.write("ing.yaml", &ingress_yaml.replace("/k8s", "/dashboard"));
    portier.wait_for("route renamed", |c| c.routes.first().is_some_and(|r| r.path == "/dashboard")).await;
    let routes = admin_get(&portier, "/api/routes").await.json();
    assert_eq!(routes[0]["path"], "/dashboard");
    let version = admin_get(&portier, "/api/version").await.json();
    assert!(version["generation"].as_u64().unwrap() > generation);
}
