//! RBAC enforced over HTTP: the fake server with an [`RbacAuthorizer`] answers what the rules
//! do not allow with the 403 a real server sends.

use std::sync::Arc;

use crate::common;
use crate::common::{secret, Http};
use keyway_fakeapi::{FakeApiServer, RbacAuthorizer};
use serde_json::json;

/// `common::Http` authenticates every request with this token.
const TOKEN: &str = "test-token";

const RBAC: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secret-reader, namespace: default}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: keyway-secret-reader, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: secret-reader}
subjects:
- {kind: ServiceAccount, name: keyway, namespace: keyway}
"#;

#[tokio::test]
async fn rbac_allows_what_the_rules_grant_and_forbids_the_rest() {
    let server = FakeApiServer::start().await;
    server.apply(secret("default", "tls", json!({})));
    let mut rbac = RbacAuthorizer::from_yaml(RBAC).unwrap();
    rbac.add_bootstrap_policy();
    rbac.bind_service_account(TOKEN, "keyway", "keyway");
    let rbac = Arc::new(rbac);
    server.set_authorizer(Some(rbac.clone()));
    let http = Http::new(&server);

    let list = http.get("/api/v1/namespaces/default/secrets").await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(common::names(&list.body), ["tls"]);
    let get = http.get("/api/v1/namespaces/default/secrets/tls").await;
    assert_eq!(get.status, 200, "{}", get.body);
    // Discovery, through the bootstrap policy.
    assert_eq!(http.get("/apis").await.status, 200);
    rbac.assert_no_denials();

    // The Role is in `default` only: listing across namespaces needs a ClusterRoleBinding.
    let all = http.get("/api/v1/secrets").await;
    assert_eq!(all.status, 403, "{}", all.body);
    assert_eq!(all.body["kind"], "Status");
    assert_eq!(all.body["status"], "Failure");
    assert_eq!(all.body["reason"], "Forbidden");
    assert_eq!(all.body["code"], 403);
    let message = all.body["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "secrets is forbidden: User \"test-token\" cannot list resource \"secrets\" in API group \"\" at the cluster scope: RBAC: user \"system:serviceaccount:keyway:keyway\""
        ),
        "{message}"
    );

    // Nothing grants writes.
    let create = http
        .post(
            "/api/v1/namespaces/default/secrets",
            &secret("default", "new", json!({})),
        )
        .await;
    assert_eq!(create.status, 403, "{}", create.body);
    assert_eq!(create.body["reason"], "Forbidden");
    assert!(server.get("v1", "Secret", Some("default"), "new").is_none());

    let denials = rbac.denials();
    assert_eq!(denials.len(), 2, "{denials:#?}");
    assert_eq!(denials[0].verb, "list");
    assert_eq!(denials[0].resource.as_ref().unwrap().namespace, None);
    assert_eq!(denials[1].verb, "create");
}
