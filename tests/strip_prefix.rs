//! PathPrefixStrip and friends, end to end: the dashboard's `/k8s` story.

mod common;

use common::*;

const STRIP: (&str, &str) = ("traefik.ingress.kubernetes.io/rule-type", "PathPrefixStrip");

async fn dashboard_setup() -> (Portier, Echo) {
    let backend = echo_http("dash").await;
    let portier = Portier::start(
        &[
            (
                "svc.yaml",
                external_service("dash", "127.0.0.1.nip.invalid", backend.port(), None)
                    .replace("127.0.0.1.nip.invalid", "localhost"),
            ),
            (
                "ing.yaml",
                ingress("dash", &[STRIP], None, &[("/k8s", "ImplementationSpecific", "dash", backend.port())]),
            ),
        ],
        &[],
    )
    .await;
    (portier, backend)
}

#[tokio::test]
async fn prefix_strip_redirects_bare_prefix_to_slash() {
    let (portier, _backend) = dashboard_setup().await;
    let reply = get(portier.https(), Via::Tls(Some("node.example")), "node.example", "/k8s").await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("/k8s/"));
    let reply = get(portier.https(), Via::Tls(Some("node.example")), "node.example", "/k8s?a=1&b=2").await;
    assert_eq!(reply.status, 301);
    assert_eq!(reply.header("location"), Some("/k8s/?a=1&b=2"));
    let post = request("POST", "node.example", "/k8s", Via::Tls(None)).body("x".into()).unwrap();
    let reply = send(portier.https(), Via::Tls(None), post).await;
    assert_eq!(reply.status, 308, "a POST must keep its body across the redirect");
}

#[tokio::test]
async fn prefix_strip_sends_the_rest_and_the_prefix_header() {
    let (portier, _backend) = dashboard_setup().await;
    let cases = [("/k8s/", "/"), ("/k8s/api/v1/x?y=1", "/api/v1/x?y=1"), ("/k8s/a%2Fb", "/a%2Fb")];
    for (sent, upstream) in cases {
        let reply = get(portier.https(), Via::Tls(None), "node.example", sent).await;
        assert_eq!(reply.status, 200, "{sent}: {}", reply.text());
        let echo = reply.json();
        assert_eq!(echo["uri"], upstream, "{sent}");
        assert_eq!(echo["headers"]["x-forwarded-prefix"][0], "/k8s", "{sent}");
    }
}

#[tokio::test]
async fn prefix_strip_does_not_match_across_segment_boundaries() {
    let (portier, _backend) = dashboard_setup().await;
    let reply = get(portier.https(), Via::Tls(None), "node.example", "/k8sfoo").await;
    assert_eq!(reply.status, 404, "{}", reply.text());
}

#[tokio::test]
async fn client_supplied_forwarded_prefix_is_replaced() {
    let (portier, _backend) = dashboard_setup().await;
    let req = request("GET", "node.example", "/k8s/x", Via::Tls(None))
        .header("x-forwarded-prefix", "/evil")
        .body(Default::default())
        .unwrap();
    let reply = send(portier.https(), Via::Tls(None), req).await;
    assert_eq!(reply.json()["headers"]["x-forwarded-prefix"], serde_json::json!(["/k8s"]));
}
