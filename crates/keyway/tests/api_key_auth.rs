//! API key authentication over real sockets: the kgateway docs' walkthrough verbatim,
//! kgateway's own e2e manifests, and the edge cases of SPEC sections 2 to 5.

use crate::support::{kubectl_apply, service, shared_testdata, upstream, Harness, Req};

/// The key of the kgateway guide.
const KEY: &str = "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy";
const HOST: &str = "www.example.com";

/// The guide's Gateway, the httpbin Service (sent to a local echo upstream) and HTTPRoute.
fn docs_base(up: std::net::SocketAddr) -> String {
    format!(
        r#"
kind: Gateway
apiVersion: gateway.networking.k8s.io/v1
metadata:
  name: http
  namespace: kgateway-system
spec:
  gatewayClassName: kgateway
  listeners:
  - protocol: HTTP
    port: 8080
    name: http
    allowedRoutes:
      namespaces:
        from: All
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: httpbin
  namespace: httpbin
spec:
  parentRefs:
    - name: http
      namespace: kgateway-system
  hostnames:
    - "www.example.com"
  rules:
    - backendRefs:
        - name: httpbin
          port: 8000
---
apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: httpbin}}
spec:
  ports: [{{name: http, port: 8000, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: httpbin-x, namespace: httpbin, labels: {{kubernetes.io/service-name: httpbin}}}}
addressType: IPv4
ports: [{{name: http, port: {}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"#,
        up.port()
    )
}

const DOCS_SECRET: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: apikey
  namespace: kgateway-system
  labels:
    app: httpbin
type: extauth.solo.io/apikey
stringData:
  api-key: N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy
"#;

/// The guide's TrafficPolicy on Gateway `http` with the given `apiKeyAuth` block.
fn docs_policy(api_key_auth: &str) -> String {
    format!(
        r#"
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: apikey-auth
  namespace: kgateway-system
spec:
  targetRefs:
    - group: gateway.networking.k8s.io
      kind: Gateway
      name: http
{api_key_auth}"#
    )
}

async fn docs_gateway(api_key_auth: &str) -> Harness {
    let m = format!(
        "{}---{DOCS_SECRET}---{}",
        docs_base(upstream().await),
        docs_policy(api_key_auth)
    );
    Harness::start(&m).await
}

fn with_key(header: &str, value: &str) -> Req {
    Req::get(HOST, "/headers").header(header, value)
}

#[tokio::test]
async fn docs_step_4_to_6_secret_ref_on_the_gateway() {
    let h = docs_gateway("  apiKeyAuth:\n    secretRef:\n      name: apikey\n").await;
    // Step 5: no key.
    let r = h.get(8080, HOST, "/headers").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), "Client authentication failed.");
    assert_eq!(r.headers["content-type"], "text/plain");
    assert_eq!(r.headers["www-authenticate"], "APIKey");
    // Step 6: the key, with the Bearer scheme, in the default `api-key` header.
    let r = h
        .request(8080, with_key("api-key", &format!("Bearer {KEY}")))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.upstream_header("api-key"),
        None,
        "the key is removed before forwarding"
    );
    assert_eq!(r.upstream_header1("host").as_deref(), Some(HOST));
    // A wrong key.
    assert_eq!(
        h.request(8080, with_key("api-key", "Bearer nope"))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn docs_label_selector() {
    let h = docs_gateway(
        "  apiKeyAuth:\n    secretSelector:\n      matchLabels:\n        app: httpbin\n",
    )
    .await;
    assert_eq!(h.request(8080, with_key("api-key", KEY)).await.status, 200);
    assert_eq!(h.get(8080, HOST, "/headers").await.status, 401);
}

#[tokio::test]
async fn docs_custom_header_name() {
    let h = docs_gateway("  apiKeyAuth:\n    secretRef:\n      name: apikey\n    keySources:\n      - header: X-API-KEY\n").await;
    let r = h.request(8080, with_key("x-api-key", KEY)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-api-key"), None);
    assert_eq!(
        h.request(8080, with_key("api-key", KEY)).await.status,
        401,
        "only the configured header counts"
    );
}

#[tokio::test]
async fn docs_multiple_key_sources() {
    let h = docs_gateway(
        "  apiKeyAuth:\n    secretRef:\n      name: apikey\n    keySources:\n      - header: X-API-KEY\n      - query: api_key\n      - cookie: auth_token\n",
    )
    .await;
    let r = h.request(8080, with_key("X-API-KEY", KEY)).await;
    assert_eq!(r.status, 200);
    let r = h
        .get(8080, HOST, &format!("/headers?a=1&api_key={KEY}&b=2"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_query(),
        "a=1&b=2",
        "the rest of the query string is kept exactly"
    );
    let r = h
        .request(
            8080,
            Req::get(HOST, "/headers").header("cookie", &format!("auth_token={KEY}")),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("cookie"),
        None,
        "an emptied Cookie header is removed"
    );
}

#[tokio::test]
async fn docs_client_id_header() {
    let h = docs_gateway(
        "  apiKeyAuth:\n    secretRef:\n      name: apikey\n    clientIdHeader: x-client-id\n",
    )
    .await;
    let r = h
        .request(
            8080,
            with_key("api-key", KEY).header("x-client-id", "forged-by-client"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-client-id"),
        Some(vec!["api-key".to_string()]),
        "overwritten, never appended"
    );
}

#[tokio::test]
async fn docs_forward_credential() {
    let h = docs_gateway(
        "  apiKeyAuth:\n    secretRef:\n      name: apikey\n    forwardCredential: true\n",
    )
    .await;
    let r = h.request(8080, with_key("api-key", KEY)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header1("api-key").as_deref(), Some(KEY));
}

#[tokio::test]
async fn docs_disable_on_the_httproute() {
    let up = upstream().await;
    let gateway_policy = docs_policy("  apiKeyAuth:\n    secretRef:\n      name: apikey\n");
    // The guide's policy as printed lives in kgateway-system while the route lives in
    // httpbin: targetRefs are namespace-local, so it attaches to nothing and auth stays on.
    let verbatim = r#"
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata:
  name: apikey-auth-disable
  namespace: kgateway-system
spec:
  targetRefs:
    - group: gateway.networking.k8s.io
      kind: HTTPRoute
      name: httpbin
  apiKeyAuth:
    disable: {}
"#;
    let m = format!(
        "{}---{DOCS_SECRET}---{gateway_policy}---{verbatim}",
        docs_base(up)
    );
    let h = Harness::start(&m).await;
    assert_eq!(h.get(8080, HOST, "/headers").await.status, 401);
    let report = h.app.state.report();
    let st = report
        .get(
            keyway_model::Kind::TrafficPolicy,
            "kgateway-system",
            "apikey-auth-disable",
        )
        .unwrap();
    assert_eq!(st.condition("Accepted").unwrap().reason, "TargetNotFound");
    assert!(st
        .condition("Accepted")
        .unwrap()
        .message
        .contains("HTTPRoute kgateway-system/httpbin not found"));

    // In the route's namespace it turns auth off for that route.
    let fixed = verbatim.replace("namespace: kgateway-system", "namespace: httpbin");
    h.rewrite(&format!(
        "{}---{DOCS_SECRET}---{gateway_policy}---{fixed}",
        docs_base(up)
    ))
    .await;
    assert_eq!(h.get(8080, HOST, "/headers").await.status, 200);
}

// ---------------------------------------------------------------------------------------
// kgateway's own e2e manifests, unchanged, on its setup Gateway.

async fn kgateway_e2e(files: &[&str]) -> Harness {
    let up = upstream().await;
    let mut docs = vec![shared_testdata("kgateway-apikeyauth/setup.yaml")];
    docs.push(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gateway, namespace: kgateway-base}\nspec:\n  gatewayClassName: kgateway\n  listeners: [{name: http, port: 8081, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]\n".into(),
    );
    for ns in ["default", "kgateway-base"] {
        docs.push(
            service(ns, "httpbin", &[up]).replace("port: 80, targetPort", "port: 8000, targetPort"),
        );
    }
    for f in files {
        docs.push(if f.contains('\n') {
            f.to_string()
        } else {
            shared_testdata(&format!("kgateway-apikeyauth/{f}"))
        });
    }
    let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
    Harness::start(&kubectl_apply(&refs)).await
}

#[tokio::test]
async fn kgateway_e2e_header_sources_and_client_id() {
    let h = kgateway_e2e(&["api-key-auth.yaml"]).await;
    assert_eq!(h.get(8080, "httpbin", "/get").await.status, 401);
    let r = h
        .request(8080, Req::get("httpbin", "/get").header("api-key", "k-123"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header1("x-client-id").as_deref(),
        Some("client1")
    );
    assert_eq!(
        r.upstream_header1("api-key").as_deref(),
        Some("k-123"),
        "forwardCredential: true"
    );
    let r = h
        .request(
            8080,
            Req::get("httpbin", "/status/200").header("authorization", "Bearer k-456"),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn kgateway_e2e_query_source() {
    let h = kgateway_e2e(&["api-key-auth-query.yaml"]).await;
    assert_eq!(h.get(8080, "httpbin", "/get").await.status, 401);
    let r = h.get(8080, "httpbin", "/get?api-key=k-123").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_query(),
        "api-key=k-123",
        "forwardCredential: true keeps it"
    );
    assert_eq!(
        h.get(8080, "httpbin", "/get?api-key=k-999").await.status,
        401
    );
}

#[tokio::test]
async fn kgateway_e2e_cookie_source() {
    let h = kgateway_e2e(&["api-key-auth-cookie.yaml"]).await;
    assert_eq!(h.get(8080, "httpbin", "/get").await.status, 401);
    let r = h
        .request(
            8080,
            Req::get("httpbin", "/get").header("cookie", "api-key=k-456"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header1("cookie").as_deref(),
        Some("api-key=k-456")
    );
}

#[tokio::test]
async fn kgateway_e2e_rule_section_name() {
    let h = kgateway_e2e(&["api-key-auth-section.yaml"]).await;
    assert_eq!(
        h.get(8080, "httpbin", "/get").await.status,
        401,
        "rule httpbin-get is protected"
    );
    assert_eq!(
        h.get(8080, "httpbin", "/status/200").await.status,
        200,
        "the other rule is not"
    );
    assert_eq!(
        code(
            &h,
            8080,
            Req::get("httpbin", "/get").header("api-key", "k-123")
        )
        .await,
        200
    );
}

#[tokio::test]
async fn kgateway_e2e_route_rule_policy_replaces_gateway_policy() {
    let h = kgateway_e2e(&["api-key-auth-override.yaml"]).await;
    let get = |path: &'static str, k: &'static str| Req::get("httpbin", path).header("api-key", k);
    // /status/200: the rule has no name, so the Gateway policy (client1/client2) applies.
    assert_eq!(
        h.request(8080, get("/status/200", "k-123")).await.status,
        200
    );
    assert_eq!(
        h.request(8080, get("/status/200", "k-789")).await.status,
        401
    );
    // /get is rule1: the rule-level policy replaces the Gateway's, keys included.
    assert_eq!(h.request(8080, get("/get", "k-789")).await.status, 200);
    assert_eq!(h.request(8080, get("/get", "k-123")).await.status, 401);
}

#[tokio::test]
async fn kgateway_e2e_disable_by_rule_section() {
    let h = kgateway_e2e(&["api-key-auth-disable.yaml"]).await;
    assert_eq!(
        h.get(8080, "httpbin", "/get").await.status,
        200,
        "rule public-route has auth disabled"
    );
    assert_eq!(
        h.get(8080, "httpbin", "/status/200").await.status,
        401,
        "the other rule keeps the Gateway policy"
    );
    let r = h
        .request(
            8080,
            Req::get("httpbin", "/status/200").header("api-key", "k-456"),
        )
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn kgateway_e2e_secret_update_rotates_keys() {
    let h = kgateway_e2e(&["api-key-auth-secret-update.yaml"]).await;
    let get = |k: &'static str| Req::get("httpbin", "/status/200").header("api-key", k);
    assert_eq!(h.request(8080, get("k-123")).await.status, 200);
    let step2 = shared_testdata("kgateway-apikeyauth/suite-secret-update-step2.yaml");
    let current = std::fs::read_to_string(h.config_path()).unwrap();
    h.rewrite(&kubectl_apply(&[&current, &step2])).await;
    assert_eq!(
        h.request(8080, get("k-123")).await.status,
        401,
        "the old key is revoked"
    );
    assert_eq!(
        h.request(8080, get("k-789")).await.status,
        200,
        "the new key works"
    );
}

#[tokio::test]
async fn kgateway_e2e_selector_gains_and_loses_secrets() {
    let h = kgateway_e2e(&["api-key-auth-secret-selector.yaml"]).await;
    let get = |k: &'static str| Req::get("httpbin", "/status/200").header("api-key", k);
    assert_eq!(h.request(8081, get("k-sel-111")).await.status, 200);
    assert_eq!(h.request(8081, get("k-sel-222")).await.status, 200);
    assert_eq!(
        h.request(8081, get("k-sel-333")).await.status,
        401,
        "unselected Secret"
    );
    let current = std::fs::read_to_string(h.config_path()).unwrap();
    let step3 = shared_testdata("kgateway-apikeyauth/suite-secret-selector-step3.yaml");
    h.rewrite(&kubectl_apply(&[&current, &step3])).await;
    assert_eq!(
        h.request(8081, get("k-sel-333")).await.status,
        200,
        "gained by relabelling"
    );
    let current = std::fs::read_to_string(h.config_path()).unwrap();
    let step4 = shared_testdata("kgateway-apikeyauth/suite-secret-selector-step4.yaml");
    h.rewrite(&kubectl_apply(&[&current, &step4])).await;
    assert_eq!(
        h.request(8081, get("k-sel-333")).await.status,
        401,
        "lost again"
    );
    assert_eq!(h.request(8081, get("k-sel-111")).await.status, 200);
}

#[tokio::test]
async fn kgateway_e2e_duplicate_key_values_fail_closed_and_recover() {
    let h = kgateway_e2e(&["api-key-auth-duplicate.yaml"]).await;
    let get = |k: &'static str| Req::get("httpbin", "/status/200").header("api-key", k);
    assert_eq!(h.request(8081, get("k-dup-111")).await.status, 200);
    let base = std::fs::read_to_string(h.config_path()).unwrap();
    let step2 = shared_testdata("kgateway-apikeyauth/suite-duplicate-step2-new-client.yaml");
    h.rewrite(&kubectl_apply(&[&base, &step2])).await;
    assert_eq!(h.request(8081, get("k-dup-222")).await.status, 200);
    let with_new = std::fs::read_to_string(h.config_path()).unwrap();
    let step3 = shared_testdata("kgateway-apikeyauth/suite-duplicate-step3-conflict.yaml");
    h.rewrite(&kubectl_apply(&[&with_new, &step3])).await;
    let r = h.request(8081, get("k-dup-111")).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.text(),
        "invalid route configuration detected and replaced with a direct response."
    );
    assert_eq!(
        h.get(8081, "httpbin", "/status/200").await.status,
        500,
        "fail closed even without a key"
    );
    let report = h.app.state.report();
    let st = report
        .get(
            keyway_model::Kind::TrafficPolicy,
            "kgateway-base",
            "api-key-auth-policy-duplicate",
        )
        .unwrap();
    let accepted = st.condition("Accepted").unwrap();
    assert_eq!(
        (accepted.status, accepted.reason.as_str()),
        (false, "Invalid")
    );
    assert!(
        accepted.message.contains("\"client1\"") && accepted.message.contains("\"client3\""),
        "{}",
        accepted.message
    );
    assert!(
        accepted
            .message
            .contains("kgateway-base/api-keys-duplicate-conflict"),
        "{}",
        accepted.message
    );
    assert!(
        !accepted.message.contains("k-dup-111"),
        "the key never appears: {}",
        accepted.message
    );
    // Removing the conflicting Secret brings the route back.
    h.rewrite(&with_new).await;
    assert_eq!(h.request(8081, get("k-dup-111")).await.status, 200);
}

// ---------------------------------------------------------------------------------------
// Edge cases (SPEC sections 2 to 5).

/// A Gateway with two listeners, a route per listener (the second with two named rules),
/// Secret `keys` (client1 = k-123, client2 = k-456), and the given extra documents.
async fn edge(extra: &str) -> Harness {
    let up = upstream().await;
    let m = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: apps}}
spec:
  gatewayClassName: any
  listeners:
  - {{name: one, port: 80, protocol: HTTP}}
  - {{name: two, port: 8080, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r1, namespace: apps, labels: {{tier: gold}}}}
spec:
  parentRefs: [{{name: gw, sectionName: one}}]
  rules:
  - name: main
    backendRefs: [{{name: app, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r2, namespace: apps}}
spec:
  parentRefs: [{{name: gw, sectionName: two}}]
  rules:
  - name: private
    matches: [{{path: {{type: PathPrefix, value: /private}}}}]
    backendRefs: [{{name: app, port: 80}}]
  - name: public
    matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs: [{{name: app, port: 80}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: keys, namespace: apps, labels: {{set: a}}}}
stringData: {{client1: k-123, client2: k-456}}
{}
{extra}"#,
        service("apps", "app", &[up])
    );
    Harness::start(&m).await
}

/// The status code of a request.
async fn code(h: &Harness, port: u16, req: Req) -> u16 {
    h.request(port, req).await.status.as_u16()
}

/// The status code of a GET with `api-key: key`.
async fn key_status(h: &Harness, port: u16, path: &str, key: &str) -> u16 {
    h.request(port, Req::get("h", path).header("api-key", key))
        .await
        .status
        .as_u16()
}

/// A TrafficPolicy's `Accepted` condition.
fn accepted_condition(h: &Harness, ns: &str, name: &str) -> keyway_compile::Condition {
    let report = h.app.state.report();
    let status = report
        .get(keyway_model::Kind::TrafficPolicy, ns, name)
        .expect("policy status");
    status
        .condition("Accepted")
        .expect("Accepted condition")
        .clone()
}

fn policy(name: &str, targets: &str, auth: &str) -> String {
    format!(
        "---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  targetRefs: {targets}\n  apiKeyAuth: {auth}\n"
    )
}

const ON_GW: &str = "[{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]";

#[tokio::test]
async fn key_in_two_sources_and_repeated_sources() {
    let h = edge(&policy(
        "p",
        ON_GW,
        "{secretRef: {name: keys}, keySources: [{header: x-key}, {query: key}, {cookie: key}]}",
    ))
    .await;
    // Header wins over query; both are removed.
    let r = h
        .request(
            80,
            Req::get("h", "/?key=k-456&z=1")
                .header("x-key", "k-123")
                .header("x-client-id", "x"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_query(), "z=1");
    assert_eq!(r.upstream_header("x-key"), None);
    // Header wrong, query right: the header is chosen, so it is refused.
    assert_eq!(
        code(
            &h,
            80,
            Req::get("h", "/?key=k-123").header("x-key", "wrong")
        )
        .await,
        401
    );
    // Repeated with different values: refused; repeated with the same value: fine.
    assert_eq!(
        code(
            &h,
            80,
            Req::get("h", "/")
                .header("x-key", "k-123")
                .header("x-key", "k-456")
        )
        .await,
        401
    );
    assert_eq!(
        code(
            &h,
            80,
            Req::get("h", "/")
                .header("x-key", "k-123")
                .header("x-key", "k-123")
        )
        .await,
        200
    );
    assert_eq!(h.get(80, "h", "/?key=k-123&key=k-456").await.status, 401);
    assert_eq!(h.get(80, "h", "/?key=k-123&key=k-123").await.status, 200);
    // Percent-encoded key in the query.
    assert_eq!(h.get(80, "h", "/?key=k%2D123").await.status, 200);
    // A cookie among others: only it is removed.
    let r = h
        .request(
            80,
            Req::get("h", "/").header("cookie", "a=1; key=k-123; b=2"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header1("cookie").as_deref(), Some("a=1; b=2"));
    // An empty header value is no key at all.
    assert_eq!(
        code(&h, 80, Req::get("h", "/").header("x-key", "")).await,
        401
    );
    // Lowercase scheme.
    assert_eq!(
        code(&h, 80, Req::get("h", "/").header("x-key", "bearer k-456")).await,
        200
    );
    // Keys are case-sensitive.
    assert_eq!(
        code(&h, 80, Req::get("h", "/").header("x-key", "K-123")).await,
        401
    );
}

#[tokio::test]
async fn secret_values_are_trimmed_and_empty_ones_skipped() {
    // `echo k-789 | base64` carries a newline: "ay03ODkK".
    let extra = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: newline, namespace: apps}}\ndata: {{client9: ay03ODkK, empty: \"\"}}\n{}",
        policy("p", ON_GW, "{secretRef: {name: newline}}")
    );
    let h = edge(&extra).await;
    assert_eq!(key_status(&h, 80, "/", "k-789").await, 200);
    assert_eq!(key_status(&h, 80, "/", "").await, 401);
}

#[tokio::test]
async fn same_level_policies_are_ordered_by_weight_then_age_then_name() {
    let other_secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: other, namespace: apps}\nstringData: {c: k-other}\n";
    // Two Gateway-level policies: "a" sorts first by name, but "b" is heavier.
    let a = policy("a", ON_GW, "{secretRef: {name: keys}}");
    let b = policy("b", ON_GW, "{secretRef: {name: other}}").replace(
        "name: b, namespace: apps}",
        "name: b, namespace: apps, annotations: {kgateway.dev/policy-weight: \"10\"}}",
    );
    let h = edge(&format!("{other_secret}{a}{b}")).await;
    assert_eq!(key_status(&h, 80, "/", "k-other").await, 200);
    assert_eq!(key_status(&h, 80, "/", "k-123").await, 401);
    let report = h.app.state.report();
    let st = report
        .get(keyway_model::Kind::TrafficPolicy, "apps", "a")
        .unwrap();
    assert_eq!(st.condition("Attached").unwrap().reason, "Overridden");

    // Without weights: the older one wins.
    let a = policy("a", ON_GW, "{secretRef: {name: keys}}").replace(
        "name: a, namespace: apps}",
        "name: a, namespace: apps, creationTimestamp: \"2025-06-01T00:00:00Z\"}",
    );
    let b = policy("b", ON_GW, "{secretRef: {name: other}}").replace(
        "name: b, namespace: apps}",
        "name: b, namespace: apps, creationTimestamp: \"2024-06-01T00:00:00Z\"}",
    );
    let h = edge(&format!("{other_secret}{a}{b}")).await;
    assert_eq!(key_status(&h, 80, "/", "k-other").await, 200);
    // Same age: namespace/name decides ("a" before "b").
    let a = policy("a", ON_GW, "{secretRef: {name: keys}}");
    let b = policy("b", ON_GW, "{secretRef: {name: other}}");
    let h = edge(&format!("{other_secret}{a}{b}")).await;
    assert_eq!(key_status(&h, 80, "/", "k-123").await, 200);
}

#[tokio::test]
async fn a_route_policy_replaces_the_gateway_policy_as_a_whole() {
    let other_secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: route-keys, namespace: apps}\nstringData: {route-client: k-route}\n";
    let gw = policy("gw-policy", ON_GW, "{secretRef: {name: keys}}");
    let route = policy(
        "route-policy",
        "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r1}]",
        "{secretRef: {name: route-keys}, keySources: [{header: x-route-key}], clientIdHeader: x-client}",
    );
    let h = edge(&format!("{other_secret}{gw}{route}")).await;
    // r1: only the route policy's source and keys.
    assert_eq!(key_status(&h, 80, "/", "k-123").await, 401);
    assert_eq!(
        code(&h, 80, Req::get("h", "/").header("x-route-key", "k-123")).await,
        401
    );
    let r = h
        .request(80, Req::get("h", "/").header("x-route-key", "k-route"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header1("x-client").as_deref(),
        Some("route-client")
    );
    // r2 keeps the Gateway policy.
    assert_eq!(key_status(&h, 8080, "/", "k-123").await, 200);
    assert_eq!(
        code(
            &h,
            8080,
            Req::get("h", "/").header("x-route-key", "k-route")
        )
        .await,
        401
    );
}

#[tokio::test]
async fn invalid_policies_fail_closed_at_gateway_and_route_level() {
    // Gateway level, missing Secret: every route of the Gateway answers 500.
    let h = edge(&policy("p", ON_GW, "{secretRef: {name: missing}}")).await;
    for (port, path) in [(80, "/"), (8080, "/private"), (8080, "/x")] {
        let r = h
            .request(port, Req::get("h", path).header("api-key", "k-123"))
            .await;
        assert_eq!(r.status, 500, "{port}{path}");
        assert_eq!(
            r.text(),
            "invalid route configuration detected and replaced with a direct response."
        );
    }
    let accepted = accepted_condition(&h, "apps", "p");
    assert_eq!(accepted.reason, "Invalid");
    assert_eq!(
        accepted.message,
        "API key secret missing: Secret apps/missing not found"
    );

    // Route level: only that route; the other keeps working.
    let h = edge(&policy(
        "p",
        "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r1}]",
        "{secretRef: {name: keys}, disable: {}}",
    ))
    .await;
    assert_eq!(h.get(80, "h", "/").await.status, 500);
    assert_eq!(h.get(8080, "h", "/").await.status, 200);
    let msg = accepted_condition(&h, "apps", "p").message;
    assert!(
        msg.contains("exactly one of secretRef, secretSelector and disable"),
        "{msg}"
    );

    // A security feature Keyway does not implement is refused, not ignored.
    let ext = "---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: ext, namespace: apps}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r1}]\n  extAuth: {extensionRef: {name: authz}}\n";
    let h = edge(ext).await;
    assert_eq!(h.get(80, "h", "/").await.status, 500);
    // No usable key at all.
    let h = edge(&format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: blank, namespace: apps}}\nstringData: {{a: '  '}}\n{}",
        policy("p", ON_GW, "{secretRef: {name: blank}}")
    ))
    .await;
    assert_eq!(h.get(80, "h", "/").await.status, 500);
    // Validation: a key source with nothing set, too many sources.
    let h = edge(&policy(
        "p",
        ON_GW,
        "{secretRef: {name: keys}, keySources: [{}]}",
    ))
    .await;
    assert_eq!(h.get(80, "h", "/").await.status, 500);
    let msg = h
        .app
        .state
        .report()
        .get(keyway_model::Kind::TrafficPolicy, "apps", "p")
        .unwrap()
        .condition("Accepted")
        .unwrap()
        .message
        .clone();
    assert!(
        msg.contains(
            "spec.apiKeyAuth.keySources[0]: at least one of header, query and cookie must be set"
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn policy_targeting_a_missing_route_is_target_not_found() {
    let h = edge(&policy(
        "p",
        "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: nope}]",
        "{secretRef: {name: keys}}",
    ))
    .await;
    let report = h.app.state.report();
    let st = report
        .get(keyway_model::Kind::TrafficPolicy, "apps", "p")
        .unwrap();
    let accepted = st.condition("Accepted").unwrap();
    assert_eq!(
        (accepted.status, accepted.reason.as_str()),
        (false, "TargetNotFound")
    );
    assert!(
        accepted.message.contains("HTTPRoute apps/nope not found"),
        "{}",
        accepted.message
    );
    assert_eq!(st.condition("Attached").unwrap().reason, "TargetNotFound");
    assert_eq!(h.get(80, "h", "/").await.status, 200);
}

#[tokio::test]
async fn listener_and_rule_section_names() {
    let h = edge(&format!(
        "{}{}",
        policy(
            "listener",
            "[{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: one}]",
            "{secretRef: {name: keys}}"
        ),
        policy(
            "rule",
            "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r2, sectionName: private}]",
            "{secretRef: {name: keys}}"
        ),
    ))
    .await;
    assert_eq!(
        h.get(80, "h", "/").await.status,
        401,
        "listener one is protected"
    );
    assert_eq!(
        h.get(8080, "h", "/public").await.status,
        200,
        "listener two is not"
    );
    assert_eq!(
        h.get(8080, "h", "/private").await.status,
        401,
        "rule private is"
    );
    assert_eq!(key_status(&h, 8080, "/private", "k-456").await, 200);
}

#[tokio::test]
async fn target_selectors_and_extension_refs() {
    let sel = "---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: sel, namespace: apps}\nspec:\n  targetSelectors: [{group: gateway.networking.k8s.io, kind: HTTPRoute, matchLabels: {tier: gold}}]\n  apiKeyAuth: {secretRef: {name: keys}}\n";
    let h = edge(sel).await;
    assert_eq!(
        h.get(80, "h", "/").await.status,
        401,
        "r1 carries tier=gold"
    );
    assert_eq!(h.get(8080, "h", "/").await.status, 200);

    // ExtensionRef from a rule counts as rule level.
    let up = upstream().await;
    let m = format!(
        "{}{}",
        service("apps", "app", &[up]),
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec: {gatewayClassName: any, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /foo}}]
    filters: [{type: ExtensionRef, extensionRef: {group: gateway.kgateway.dev, kind: TrafficPolicy, name: by-ref}}]
    backendRefs: [{name: app, port: 80}]
  - backendRefs: [{name: app, port: 80}]
---
apiVersion: v1
kind: Secret
metadata: {name: keys, namespace: apps}
stringData: {c: k-1}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: by-ref, namespace: apps}
spec:
  apiKeyAuth: {secretRef: {name: keys}}
"#
    );
    let h = Harness::start(&m).await;
    assert_eq!(h.get(80, "h", "/foo").await.status, 401);
    assert_eq!(key_status(&h, 80, "/foo", "k-1").await, 200);
    assert_eq!(h.get(80, "h", "/bar").await.status, 200);
    let report = h.app.state.report();
    assert_eq!(
        report
            .get(keyway_model::Kind::TrafficPolicy, "apps", "by-ref")
            .unwrap()
            .condition("Accepted")
            .unwrap()
            .reason,
        "Valid"
    );
}

#[tokio::test]
async fn cross_namespace_secrets_need_a_reference_grant() {
    let vault = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: shared, namespace: vault, labels: {keys: shared}}\nstringData: {c: k-shared}\n";
    let by_ref = policy("p", ON_GW, "{secretRef: {name: shared, namespace: vault}}");
    let h = edge(&format!("{vault}{by_ref}")).await;
    assert_eq!(key_status(&h, 80, "/", "k-shared").await, 500);
    let msg = h
        .app
        .state
        .report()
        .get(keyway_model::Kind::TrafficPolicy, "apps", "p")
        .unwrap()
        .condition("Accepted")
        .unwrap()
        .message
        .clone();
    assert!(msg.contains("no ReferenceGrant"), "{msg}");
    let grant = "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: vault}\nspec:\n  from: [{group: gateway.kgateway.dev, kind: TrafficPolicy, namespace: apps}]\n  to: [{group: \"\", kind: Secret}]\n";
    let h = edge(&format!("{vault}{by_ref}{grant}")).await;
    assert_eq!(key_status(&h, 80, "/", "k-shared").await, 200);
    // A selector reaches granted namespaces too.
    let by_sel = policy(
        "p",
        ON_GW,
        "{secretSelector: {matchExpressions: [{key: keys, operator: In, values: [shared]}]}}",
    );
    let h = edge(&format!("{vault}{by_sel}{grant}")).await;
    assert_eq!(key_status(&h, 80, "/", "k-shared").await, 200);
    assert_eq!(
        key_status(&h, 80, "/", "k-123").await,
        401,
        "keys has no label keys=shared"
    );
}

#[tokio::test]
async fn metrics_count_clients_and_denial_reasons() {
    let h = edge(&policy("p", ON_GW, "{secretRef: {name: keys}}")).await;
    h.request(80, Req::get("h", "/").header("api-key", "k-123"))
        .await;
    h.request(80, Req::get("h", "/").header("api-key", "k-123"))
        .await;
    h.get(80, "h", "/").await;
    h.request(80, Req::get("h", "/").header("api-key", "nope"))
        .await;
    h.request(
        80,
        Req::get("h", "/")
            .header("api-key", "a")
            .header("api-key", "b"),
    )
    .await;
    let m = h.admin("/metrics").await.text();
    for line in [
        r#"keyway_api_key_allowed_total{policy="apps/p",client="client1"} 2"#,
        r#"keyway_api_key_denied_total{policy="apps/p",reason="missing_api_key"} 1"#,
        r#"keyway_api_key_denied_total{policy="apps/p",reason="unknown_api_key"} 1"#,
        r#"keyway_api_key_denied_total{policy="apps/p",reason="ambiguous_api_key"} 1"#,
    ] {
        assert!(m.contains(line), "missing {line} in\n{m}");
    }
    let h = edge(&policy("p", ON_GW, "{secretRef: {name: missing}}")).await;
    h.get(80, "h", "/").await;
    let m = h.admin("/metrics").await.text();
    assert!(
        m.contains(r#"keyway_api_key_denied_total{policy="apps/p",reason="invalid_policy"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_client_cannot_drop_the_client_id_header_or_sneak_past_with_dot_segments() {
    let h = edge(&policy(
        "p",
        "[{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r2, sectionName: private}]",
        "{secretRef: {name: keys}, clientIdHeader: x-client}",
    ))
    .await;
    let r = h
        .request(
            8080,
            Req::get("h", "/private")
                .header("api-key", "k-123")
                .header("connection", "x-client"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header1("x-client").as_deref(), Some("client1"));
    // The public rule cannot be used to reach the private one.
    for path in ["/public/../private", "/public/%2e%2e/private", "/./private"] {
        assert_eq!(h.get(8080, "h", path).await.status, 401, "{path}");
    }
}

#[tokio::test]
async fn typos_fail_closed_or_fail_to_load() {
    // An unknown spec field (a misspelt apiKeyAuth) makes the policy invalid: 500.
    let typo = "---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p, namespace: apps}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n  apikeyAuth: {secretRef: {name: keys}}\n";
    let h = edge(typo).await;
    assert_eq!(h.get(80, "h", "/").await.status, 500);
    let msg = h
        .app
        .state
        .report()
        .get(keyway_model::Kind::TrafficPolicy, "apps", "p")
        .unwrap()
        .condition("Accepted")
        .unwrap()
        .message
        .clone();
    assert!(msg.contains("spec.apikeyAuth: unknown field"), "{msg}");
    // An empty targetSelectors matchLabels would select every route: the policy is invalid
    // and attaches nowhere, so its `disable` switches nothing off.
    let empty = "---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p, namespace: apps}\nspec:\n  targetSelectors: [{group: gateway.networking.k8s.io, kind: HTTPRoute, matchLabels: {}}]\n  apiKeyAuth: {disable: {}}\n";
    let h = edge(&format!(
        "{}{empty}",
        policy("gw", ON_GW, "{secretRef: {name: keys}}")
    ))
    .await;
    assert_eq!(h.get(80, "h", "/").await.status, 401);
    let msg = h
        .app
        .state
        .report()
        .get(keyway_model::Kind::TrafficPolicy, "apps", "p")
        .unwrap()
        .condition("Accepted")
        .unwrap()
        .message
        .clone();
    assert!(
        msg.contains("targetSelectors[0].matchLabels: must not be empty"),
        "{msg}"
    );
    // A misspelt field inside apiKeyAuth is a load error naming file, line and column.
    let inner = policy("p", ON_GW, "{secretRef: {name: keys}, clientIDHeader: x}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), &inner).unwrap();
    let err = keyway_sources::files::load(&[dir.path().to_path_buf()]).unwrap_err();
    let text = err[0].to_string();
    assert!(
        text.contains("TrafficPolicy apps/p") && text.contains("clientIDHeader"),
        "{text}"
    );
    assert!(err[0].line.is_some() && err[0].column.is_some(), "{text}");
}
