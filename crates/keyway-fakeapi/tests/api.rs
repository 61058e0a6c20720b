//! The test-facing Rust API: shaping the server's state directly.

use std::time::Duration;

use crate::common::{rv, Http};
use keyway_fakeapi::FakeApiServer;
use serde_json::json;

#[tokio::test]
async fn apply_get_set_status_delete() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let start = server.resource_version();
    let mut watch = http
        .watch(&format!(
            "/apis/gateway.networking.k8s.io/v1/gateways?watch=true&resourceVersion={start}"
        ))
        .await;

    let applied = server.apply_yaml(
        "
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: keyway
spec:
  controllerName: keyway.dev/gateway
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: apps
spec:
  gatewayClassName: keyway
  listeners: [{name: http, port: 80, protocol: HTTP}]
status:
  conditions: [{type: Programmed, status: Unknown}]
---
",
    );
    assert_eq!(applied.len(), 2);
    assert!(
        applied[0]["metadata"].get("namespace").is_none(),
        "cluster-scoped"
    );
    assert_eq!(
        applied[1]["status"]["conditions"][0]["type"], "Programmed",
        "apply keeps the given status"
    );
    assert_eq!(server.resource_version(), start + 2);
    let added = watch.next().await;
    assert_eq!(
        (added["type"].as_str(), rv(&added["object"])),
        (Some("ADDED"), start + 2)
    );

    server.set_status(
        "gateway.networking.k8s.io/v1",
        "Gateway",
        Some("apps"),
        "gw",
        json!({"conditions": [{"type": "Programmed", "status": "True"}]}),
    );
    let modified = watch.next().await;
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(
        modified["object"]["status"]["conditions"][0]["status"],
        "True"
    );
    assert_eq!(modified["object"]["metadata"]["generation"], 1);

    // Re-applying without status keeps the stored status; a spec change moves generation.
    let mut changed = applied[1].clone();
    changed.as_object_mut().unwrap().remove("status");
    changed["spec"]["gatewayClassName"] = "other".into();
    let reapplied = server.apply(changed.clone());
    assert_eq!(reapplied["metadata"]["generation"], 2);
    assert_eq!(reapplied["status"]["conditions"][0]["status"], "True");
    assert_eq!(reapplied["metadata"]["uid"], applied[1]["metadata"]["uid"]);
    assert_eq!(watch.next().await["type"], "MODIFIED");
    let rv_before = server.resource_version();
    server.apply(changed);
    assert_eq!(
        server.resource_version(),
        rv_before,
        "an unchanged apply writes nothing"
    );

    let got = server
        .get(
            "gateway.networking.k8s.io/v1",
            "Gateway",
            Some("apps"),
            "gw",
        )
        .unwrap();
    assert_eq!(got, reapplied);
    assert!(server.delete(
        "gateway.networking.k8s.io/v1",
        "Gateway",
        Some("apps"),
        "gw"
    ));
    assert!(!server.delete(
        "gateway.networking.k8s.io/v1",
        "Gateway",
        Some("apps"),
        "gw"
    ));
    assert_eq!(watch.next().await["type"], "DELETED");
    assert!(server
        .get(
            "gateway.networking.k8s.io/v1",
            "Gateway",
            Some("apps"),
            "gw"
        )
        .is_none());
}

#[tokio::test]
async fn secrets_and_namespaces_get_their_server_side_defaults() {
    let server = FakeApiServer::start().await;
    let secret = server.apply(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"},
        "stringData": {"tls.crt": "cert"}
    }));
    assert_eq!(secret["metadata"]["namespace"], "default");
    assert_eq!(secret["data"]["tls.crt"], "Y2VydA==");
    assert_eq!(secret["type"], "Opaque");
    assert!(secret.get("stringData").is_none());
    let ns = server
        .apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}));
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "apps"
    );
    assert_eq!(ns["status"]["phase"], "Active");
}

#[tokio::test]
async fn requests_are_logged_and_cleared() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    http.get("/api/v1/namespaces/default/secrets?limit=1&labelSelector=a%3Db")
        .await;
    let log = server.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/api/v1/namespaces/default/secrets");
    assert_eq!(log[0].query, "limit=1&labelSelector=a%3Db");
    assert_eq!(log[0].query_param("labelSelector").as_deref(), Some("a=b"));
    assert_eq!(log[0].token.as_deref(), Some("test-token"));
    assert_eq!((log[0].status, log[0].is_watch), (200, false));
    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn dropping_the_server_shuts_it_down() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let addr = server.addr();
    let mut watch = http.watch("/api/v1/secrets?watch=true").await;
    drop(server);
    assert!(watch.next_within(Duration::from_secs(5)).await.is_err());
    let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn kubeconfig_names_the_server_and_token() {
    let server = FakeApiServer::start().await;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = server.write_kubeconfig(&dir, "token-a");
    let b = server.write_kubeconfig(&dir, "sa/b:c");
    assert_ne!(a, b, "one file per token");
    let text = std::fs::read_to_string(&a).unwrap();
    let config: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(config["clusters"][0]["cluster"]["server"], server.url());
    assert_eq!(config["users"][0]["user"]["token"], "token-a");
    assert_eq!(config["contexts"][0]["context"]["namespace"], "default");
    assert!(server.url().starts_with("http://127.0.0.1:"));
}
