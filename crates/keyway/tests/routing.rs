//! Gateway API routing over real sockets: attachment, hostnames, matches, precedence,
//! filters, backends, and the statuses that go with them.

use crate::support;
use crate::support::{service, tally, upstream, Harness, Req};

const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: any
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces: {from: All}
"#;

fn route(ns: &str, name: &str, body: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n{body}"
    )
}

#[tokio::test]
async fn path_matches_and_precedence_across_routes() {
    let (a, b, c) = (upstream().await, upstream().await, upstream().await);
    let m = format!(
        "{GATEWAY}{}{}{}{}{}{}",
        service("apps", "a", &[a]),
        service("apps", "b", &[b]),
        service("apps", "c", &[c]),
        route("apps", "prefix", "  rules:\n  - matches: [{path: {type: PathPrefix, value: /api}}]\n    backendRefs: [{name: a, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /api/v2/}}]\n    backendRefs: [{name: b, port: 80}]\n"),
        route("apps", "exact", "  rules:\n  - matches: [{path: {type: Exact, value: /api/v2/exact}}]\n    backendRefs: [{name: c, port: 80}]\n"),
        route("apps", "regex", "  rules:\n  - matches: [{path: {type: RegularExpression, value: '/re/[0-9]+'}}]\n    backendRefs: [{name: c, port: 80}]\n"),
    );
    let h = Harness::start(&m).await;
    let served = |r: &support::Resp| r.json()["server"].as_str().unwrap().to_string();
    let cases = [
        ("/api", a),
        ("/api/", a),
        ("/api/x", a),
        ("/api/v2", b),
        ("/api/v2/x", b),
        ("/api/v2/exact", c),
        ("/api/v2/exact/more", b),
        ("/re/123", c),
    ];
    for (path, want) in cases {
        let r = h.get(80, "any.example", path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(served(&r), want.to_string(), "{path}");
        assert_eq!(r.upstream_path(), path);
    }
    for path in ["/apiary", "/re/12a", "/"] {
        assert_eq!(h.get(80, "any.example", path).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn header_query_and_method_matches() {
    let (a, b, c, d) = (
        upstream().await,
        upstream().await,
        upstream().await,
        upstream().await,
    );
    let m = format!(
        "{GATEWAY}{}{}{}{}{}",
        service("apps", "a", &[a]),
        service("apps", "b", &[b]),
        service("apps", "c", &[c]),
        service("apps", "d", &[d]),
        route(
            "apps",
            "r",
            "  rules:\n  - matches: [{headers: [{name: Version, value: two}]}]\n    backendRefs: [{name: b, port: 80}]\n  - matches: [{queryParams: [{name: animal, value: whale}]}]\n    backendRefs: [{name: c, port: 80}]\n  - matches: [{method: POST}]\n    backendRefs: [{name: d, port: 80}]\n  - matches: [{headers: [{name: x-re, type: RegularExpression, value: 'v[0-9]'}]}]\n    backendRefs: [{name: c, port: 80}]\n  - matches: [{path: {type: Exact, value: /getonly}, method: GET}]\n    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-rule, value: getonly}]}}]\n    backendRefs: [{name: a, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: a, port: 80}]\n"
        ),
    );
    let h = Harness::start(&m).await;
    let served = |r: support::Resp| r.json()["server"].as_str().unwrap().to_string();
    assert_eq!(
        served(
            h.request(80, Req::get("h", "/").header("version", "two"))
                .await
        ),
        b.to_string()
    );
    assert_eq!(
        served(
            h.request(80, Req::get("h", "/").header("version", "three"))
                .await
        ),
        a.to_string()
    );
    assert_eq!(
        served(h.get(80, "h", "/?animal=whale").await),
        c.to_string()
    );
    assert_eq!(
        served(h.get(80, "h", "/?animal=dolphin").await),
        a.to_string()
    );
    assert_eq!(
        served(h.request(80, Req::get("h", "/").method("POST")).await),
        d.to_string()
    );
    // HEAD does not match a GET rule: it falls through to the catch-all rule.
    let head = h
        .request(80, Req::get("h", "/getonly").method("HEAD"))
        .await;
    assert_eq!(head.status, 200);
    assert!(head.headers.get("x-rule").is_none());
    assert_eq!(
        h.get(80, "h", "/getonly").await.headers["x-rule"],
        "getonly"
    );
    assert_eq!(
        served(h.request(80, Req::get("h", "/").header("x-re", "v7")).await),
        c.to_string()
    );
    assert_eq!(
        served(
            h.request(80, Req::get("h", "/").header("x-re", "v77"))
                .await
        ),
        a.to_string()
    );
}

#[tokio::test]
async fn hostnames_intersect_and_listeners_are_isolated() {
    let (a, b, c, d) = (
        upstream().await,
        upstream().await,
        upstream().await,
        upstream().await,
    );
    let gw = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: any
  listeners:
  - {name: any, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: wild, port: 80, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {namespaces: {from: All}}}
  - {name: exact, port: 80, protocol: HTTP, hostname: "foo.example.com", allowedRoutes: {namespaces: {from: All}}}
"#;
    let m = format!(
        "{gw}{}{}{}{}{}{}{}{}",
        service("apps", "a", &[a]),
        service("apps", "b", &[b]),
        service("apps", "c", &[c]),
        service("apps", "d", &[d]),
        // Attaches to the wildcard listener only (and to "any", for other hosts).
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: wild, namespace: apps}\nspec:\n  parentRefs: [{name: gw, namespace: infra, sectionName: wild}]\n  rules: [{backendRefs: [{name: a, port: 80}]}]\n",
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: exact, namespace: apps}\nspec:\n  parentRefs: [{name: gw, namespace: infra, sectionName: exact}]\n  rules: [{backendRefs: [{name: b, port: 80}]}]\n",
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: anyhost, namespace: apps}\nspec:\n  parentRefs: [{name: gw, namespace: infra, sectionName: any}]\n  rules: [{backendRefs: [{name: c, port: 80}]}]\n",
        // Route hostname narrower than the wildcard listener.
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: narrow, namespace: apps}\nspec:\n  parentRefs: [{name: gw, namespace: infra, sectionName: wild}]\n  hostnames: [\"bar.example.com\", \"unrelated.org\"]\n  rules: [{backendRefs: [{name: d, port: 80}]}]\n",
    );
    let h = Harness::start(&m).await;
    let served = |r: support::Resp| r.json()["server"].as_str().unwrap().to_string();
    assert_eq!(
        served(h.get(80, "foo.example.com", "/").await),
        b.to_string()
    );
    assert_eq!(
        served(h.get(80, "FOO.example.com:80", "/").await),
        b.to_string()
    );
    assert_eq!(served(h.get(80, "x.example.com", "/").await), a.to_string());
    assert_eq!(
        served(h.get(80, "x.y.example.com", "/").await),
        a.to_string()
    );
    assert_eq!(
        served(h.get(80, "bar.example.com", "/").await),
        d.to_string()
    );
    // `*.example.com` never matches the bare domain: it falls to the listener without hostname.
    assert_eq!(served(h.get(80, "example.com", "/").await), c.to_string());
    assert_eq!(served(h.get(80, "unrelated.org", "/").await), c.to_string());
}

#[tokio::test]
async fn allowed_routes_namespaces_and_parent_refs() {
    let a = upstream().await;
    let gw = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: any
  listeners:
  - {name: same, port: 80, protocol: HTTP, hostname: same.test}
  - name: selected
    port: 80
    protocol: HTTP
    hostname: selected.test
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: a}}}}
  - {name: other-port, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - name: no-http-routes
    port: 8080
    protocol: HTTP
    hostname: grpc.test
    allowedRoutes: {namespaces: {from: All}, kinds: [{kind: GRPCRoute}]}
"#;
    let r = |ns: &str, name: &str, parent: &str| {
        format!("---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  parentRefs: [{parent}]\n  rules: [{{backendRefs: [{{name: a, port: 80}}]}}]\n")
    };
    let m = format!(
        "{gw}{}{}{}{}{}{}{}{}{}{}",
        service("infra", "a", &[a]),
        service("team-a", "a", &[a]),
        service("team-b", "a", &[a]),
        r("infra", "same-ns", "{name: gw, sectionName: same}"),
        r(
            "team-a",
            "from-a",
            "{name: gw, namespace: infra, sectionName: selected}"
        ),
        r(
            "team-b",
            "from-b",
            "{name: gw, namespace: infra, sectionName: selected}"
        ),
        r("team-b", "port", "{name: gw, namespace: infra, port: 8080}"),
        r(
            "team-b",
            "bad-section",
            "{name: gw, namespace: infra, sectionName: nope}"
        ),
        r(
            "team-b",
            "bad-port",
            "{name: gw, namespace: infra, port: 9999}"
        ),
        r("team-b", "no-gw", "{name: missing, namespace: infra}"),
    );
    let h = Harness::start(&m).await;
    assert_eq!(h.get(80, "same.test", "/").await.status, 200);
    assert_eq!(h.get(80, "selected.test", "/").await.status, 200);
    assert_eq!(h.get(8080, "whatever", "/").await.status, 200);
    assert_eq!(
        h.get(8080, "grpc.test", "/").await.status,
        404,
        "kinds excludes HTTPRoute"
    );

    let report = h.app.state.report();
    let reason = |ns: &str, name: &str| {
        let s = report.get(keyway_model::Kind::HttpRoute, ns, name).unwrap();
        s.sections[0]
            .conditions
            .iter()
            .find(|c| c.type_ == "Accepted")
            .unwrap()
            .reason
            .clone()
    };
    assert_eq!(reason("team-a", "from-a"), "Accepted");
    assert_eq!(reason("team-b", "from-b"), "NotAllowedByListeners");
    assert_eq!(reason("team-b", "bad-section"), "NoMatchingParent");
    assert_eq!(reason("team-b", "bad-port"), "NoMatchingParent");
    assert_eq!(reason("team-b", "no-gw"), "NoMatchingParent");
    let gw = report
        .get(keyway_model::Kind::Gateway, "infra", "gw")
        .unwrap();
    let listener = gw
        .sections
        .iter()
        .find(|s| s.section == "listener no-http-routes")
        .unwrap();
    assert_eq!(
        listener
            .conditions
            .iter()
            .find(|c| c.type_ == "ResolvedRefs")
            .unwrap()
            .reason,
        "InvalidRouteKinds"
    );
    let selected = gw
        .sections
        .iter()
        .find(|s| s.section == "listener selected")
        .unwrap();
    assert_eq!(selected.attached_routes, Some(1));
}

#[tokio::test]
async fn conflicting_listeners_are_reported_not_dropped_silently() {
    let m = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: first, namespace: infra, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  gatewayClassName: any
  listeners: [{name: http, port: 80, protocol: HTTP, hostname: a.test}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: second, namespace: infra, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  gatewayClassName: any
  listeners:
  - {name: dup, port: 80, protocol: HTTP, hostname: a.test}
  - {name: ok, port: 80, protocol: HTTP, hostname: b.test}
  - {name: tls, port: 443, protocol: HTTPS, hostname: b.test}
  - {name: tcp, port: 9000, protocol: TCP}
"#;
    let h = Harness::start(m).await;
    let report = h.app.state.report();
    let second = report
        .get(keyway_model::Kind::Gateway, "infra", "second")
        .unwrap();
    let dup = second
        .sections
        .iter()
        .find(|s| s.section == "listener dup")
        .unwrap();
    let conflicted = dup
        .conditions
        .iter()
        .find(|c| c.type_ == "Conflicted")
        .unwrap();
    assert!(
        conflicted.status
            && conflicted
                .message
                .contains("Gateway infra/first listener http"),
        "{conflicted:?}"
    );
    let tls = second
        .sections
        .iter()
        .find(|s| s.section == "listener tls")
        .unwrap();
    // HTTPS without tls.certificateRefs: accepted, but its certificate is missing.
    let resolved = tls
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .unwrap();
    assert_eq!(resolved.reason, "InvalidCertificateRef");
    let tcp = second
        .sections
        .iter()
        .find(|s| s.section == "listener tcp")
        .unwrap();
    assert_eq!(tcp.conditions[0].reason, "UnsupportedProtocol");
    assert!(report.has_problems());
    let text = report.problems().join("\n");
    assert!(
        text.contains("Gateway infra/second [listener dup] Conflicted=True HostnameConflict"),
        "{text}"
    );
}

#[tokio::test]
async fn weighted_backends_split_traffic_and_weight_zero_gets_none() {
    let (a, b, z) = (upstream().await, upstream().await, upstream().await);
    let m = format!(
        "{GATEWAY}{}{}{}{}",
        service("apps", "a", &[a]),
        service("apps", "b", &[b]),
        service("apps", "z", &[z]),
        route("apps", "w", "  rules:\n  - backendRefs:\n    - {name: a, port: 80, weight: 3}\n    - {name: b, port: 80, weight: 1}\n    - {name: z, port: 80, weight: 0}\n"),
    );
    let h = Harness::start(&m).await;
    let mut served = Vec::new();
    for _ in 0..400 {
        served.push(
            h.get(80, "h", "/").await.json()["server"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let t = tally(served);
    assert!(!t.contains_key(&z.to_string()), "{t:?}");
    let (na, nb) = (t[&a.to_string()], t[&b.to_string()]);
    assert_eq!(na + nb, 400);
    assert!((250..=350).contains(&na), "3:1 split expected, got {t:?}");
}

#[tokio::test]
async fn endpoints_are_balanced_round_robin_and_failed_ones_skipped() {
    let (a, b) = (upstream().await, upstream().await);
    // A third endpoint that refuses connections.
    let (_held, dead) = support::refusing_addr();
    // Same port for all endpoints in one slice is not possible with distinct ports, so use
    // three slices.
    let slices = |name: &str, addr: std::net::SocketAddr| {
        format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: apps, labels: {{kubernetes.io/service-name: s}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"{}\"]}}]\n",
        addr.port(), addr.ip())
    };
    let m = format!(
        "{GATEWAY}---\napiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: apps}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n{}{}{}{}",
        slices("s1", a),
        slices("s2", b),
        slices("s3", dead),
        route("apps", "r", "  rules: [{backendRefs: [{name: s, port: 80}]}]\n"),
    );
    let h = Harness::start(&m).await;
    let mut statuses = Vec::new();
    let mut served = Vec::new();
    for _ in 0..30 {
        let r = h.get(80, "h", "/").await;
        statuses.push(r.status.as_u16());
        if r.status == 200 {
            served.push(r.json()["server"].as_str().unwrap().to_string());
        }
    }
    let failures = statuses.iter().filter(|s| **s == 503).count();
    assert!(
        failures <= 1,
        "the dead endpoint is tried at most once before it is skipped: {statuses:?}"
    );
    let t = tally(served);
    assert!(t[&a.to_string()] >= 13 && t[&b.to_string()] >= 13, "{t:?}");
}

#[tokio::test]
async fn request_and_response_header_modifiers() {
    let a = upstream().await;
    let m = format!(
        "{GATEWAY}{}{}",
        service("apps", "a", &[a]),
        route(
            "apps",
            "r",
            r#"  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: set-value}]
        add: [{name: X-Add, value: added}]
        remove: [X-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: X-Resp-Set, value: one}]
        add: [{name: Content-Type, value: extra}]
        remove: [X-Header-Remove]
    backendRefs:
    - name: a
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier:
          set: [{name: X-Backend, value: a}]
"#
        ),
    );
    let h = Harness::start(&m).await;
    let r = h
        .request(
            80,
            Req::get("h", "/response-headers?X-Header-Remove=1&X-Kept=2")
                .header("x-set", "client")
                .header("x-add", "client")
                .header("x-remove", "gone"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header1("x-set").as_deref(), Some("set-value"));
    assert_eq!(r.upstream_header1("x-add").as_deref(), Some("client,added"));
    assert_eq!(r.upstream_header("x-remove"), None);
    assert_eq!(r.upstream_header1("x-backend").as_deref(), Some("a"));
    assert_eq!(r.headers["x-resp-set"], "one");
    assert_eq!(
        r.headers["content-type"],
        "application/json; encoding=utf-8,extra"
    );
    assert!(r.headers.get("x-header-remove").is_none());
    assert_eq!(r.headers["x-kept"], "2");
}

#[tokio::test]
async fn redirects_follow_the_location_rules() {
    let gw = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: any
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
"#;
    let rule = |path: &str, filter: &str| {
        format!("  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    filters: [{{type: RequestRedirect, requestRedirect: {filter}}}]\n")
    };
    let m = format!(
        "{gw}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: infra}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{}{}{}{}{}{}",
        rule("/host", "{hostname: example.org}"),
        rule("/https", "{scheme: https}"),
        rule("/port", "{port: 8443}"),
        rule("/status", "{statusCode: 301}"),
        rule("/full", "{path: {type: ReplaceFullPath, replaceFullPath: /new}}"),
        rule("/prefix", "{scheme: http, port: 80, path: {type: ReplacePrefixMatch, replacePrefixMatch: /replaced}}"),
    );
    let h = Harness::start(&m).await;
    let loc = |r: support::Resp| {
        (
            r.status.as_u16(),
            r.headers["location"].to_str().unwrap().to_string(),
        )
    };
    let cases = [
        (
            "a.test",
            "/host/x?q=1",
            302,
            "http://example.org:8080/host/x?q=1",
        ),
        ("a.test", "/https", 302, "https://a.test/https"),
        ("a.test:8080", "/port", 302, "http://a.test:8443/port"),
        ("a.test", "/status", 301, "http://a.test:8080/status"),
        ("a.test", "/full/x", 302, "http://a.test:8080/new"),
        ("a.test", "/prefix/one", 302, "http://a.test/replaced/one"),
    ];
    for (host, path, status, location) in cases {
        assert_eq!(
            loc(h.get(8080, host, path).await),
            (status, location.to_string()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn url_rewrite_host_and_path() {
    let a = upstream().await;
    let m = format!(
        "{GATEWAY}{}{}",
        service("apps", "a", &[a]),
        route(
            "apps",
            "r",
            r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /strip}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: rewritten.test, path: {type: ReplaceFullPath, replaceFullPath: /all}}}]
    backendRefs: [{name: a, port: 80}]
"#
        ),
    );
    let h = Harness::start(&m).await;
    let r = h.get(80, "h", "/prefix/one/two?x=1").await;
    assert_eq!(
        (r.upstream_path(), r.upstream_query()),
        ("/one/two".into(), "x=1".into())
    );
    assert_eq!(h.get(80, "h", "/strip/a/b").await.upstream_path(), "/a/b");
    assert_eq!(h.get(80, "h", "/strip").await.upstream_path(), "/");
    let r = h.get(80, "h", "/full/x").await;
    assert_eq!(r.upstream_path(), "/all");
    assert_eq!(
        r.upstream_header1("host").as_deref(),
        Some("rewritten.test")
    );
}

#[tokio::test]
async fn unresolved_backends_answer_500_for_their_share_only() {
    let a = upstream().await;
    let m = format!(
        "{GATEWAY}{}{}{}",
        service("apps", "a", &[a]),
        service("other", "x", &[a]),
        route(
            "apps",
            "r",
            r#"  rules:
  - matches: [{path: {type: PathPrefix, value: /missing}}]
    backendRefs: [{name: nope, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /cross}}]
    backendRefs: [{name: x, namespace: other, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /kind}}]
    backendRefs: [{name: a, kind: ConfigMap, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /none}}]
  - matches: [{path: {type: PathPrefix, value: /half}}]
    backendRefs: [{name: a, port: 80}, {name: nope, port: 80}]
  - backendRefs: [{name: a, port: 80}]
"#
        ),
    );
    let h = Harness::start(&m).await;
    for p in ["/missing", "/cross", "/kind", "/none"] {
        assert_eq!(h.get(80, "h", p).await.status, 500, "{p}");
    }
    assert_eq!(h.get(80, "h", "/ok").await.status, 200);
    let mut codes = Vec::new();
    for _ in 0..100 {
        codes.push(h.get(80, "h", "/half").await.status.as_u16());
    }
    let t = tally(codes);
    assert!(t[&200] > 20 && t[&500] > 20, "{t:?}");
    let report = h.app.state.report();
    let s = report
        .get(keyway_model::Kind::HttpRoute, "apps", "r")
        .unwrap();
    let resolved = s.sections[0]
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .unwrap();
    assert!(!resolved.status);
    assert_eq!(resolved.reason, "BackendNotFound");
    assert!(
        resolved.message.contains("RefNotPermitted")
            || resolved.message.contains("no ReferenceGrant"),
        "{}",
        resolved.message
    );
    assert!(
        resolved.message.contains("ConfigMap"),
        "{}",
        resolved.message
    );

    // A ReferenceGrant makes the cross-namespace reference work.
    let granted = format!(
        "{m}---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: other}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}}]\n  to: [{{group: \"\", kind: Service}}]\n"
    );
    h.rewrite(&granted).await;
    assert_eq!(h.get(80, "h", "/cross").await.status, 200);
}

#[tokio::test]
async fn kgateway_static_backend() {
    let a = upstream().await;
    let m = format!(
        "{GATEWAY}---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: Backend\nmetadata: {{name: static, namespace: apps}}\nspec:\n  type: Static\n  static:\n    hosts: [{{host: 127.0.0.1, port: {}}}]\n{}",
        a.port(),
        route("apps", "r", "  rules: [{backendRefs: [{group: gateway.kgateway.dev, kind: Backend, name: static}]}]\n"),
    );
    let h = Harness::start(&m).await;
    let r = h.get(80, "h", "/anything").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["server"], a.to_string());
}
