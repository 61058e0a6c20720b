//! The policy pass rule by rule: what attaches where, what is refused and with which
//! message, and what fails closed. Each case compiles a small snapshot and looks at the
//! compiled authentication of one rule and at the policy's conditions. These are the tests
//! mutation testing holds the policy compiler to (`mutants/run.sh`).

use keyway_compile::{compile, Compiled, Condition};
use keyway_model::Kind;
use keyway_store::{Auth, Route};

/// Gateway `gw` (listeners `a` on 80 and `b` on 81), HTTPRoute `r` (rules `one` on `/one`,
/// `two` on `/two`) labelled `tier: gold`, a Secret `keys` labelled `app: keys` holding
/// `alice: k-1`, all in `apps`; then `extra`.
fn compiled(extra: &str) -> Compiled {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: apps, labels: {{tier: gold}}}}\nspec:\n  gatewayClassName: any\n  listeners:\n  - {{name: a, port: 80, protocol: HTTP}}\n  - {{name: b, port: 81, protocol: HTTP}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: apps, labels: {{tier: gold}}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - name: one\n    matches: [{{path: {{value: /one}}}}]\n    backendRefs: [{{name: svc, port: 80}}]\n  - name: two\n    matches: [{{path: {{value: /two}}}}]\n    backendRefs: [{{name: svc, port: 80}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc, namespace: apps}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys, namespace: apps, labels: {{app: keys}}}}\nstringData: {{alice: k-1}}\n---\n{extra}"
    );
    let loaded =
        keyway_sources::files::load_str("t.yaml", &text).unwrap_or_else(|e| panic!("{e:#?}"));
    compile(&loaded.snapshot, &Default::default())
}

fn route<'c>(c: &'c Compiled, port: u16, path: &str) -> &'c Route {
    c.config.ports[&port].listeners[0].virtual_hosts[0]
        .routes
        .iter()
        .find(|r| r.matcher.path.matches(path))
        .unwrap_or_else(|| panic!("no route for {path} on {port}"))
}

/// `none`, `invalid` or `apikey:<policy>`.
fn auth(c: &Compiled, port: u16, path: &str) -> String {
    match &route(c, port, path).auth {
        Auth::None => "none".into(),
        Auth::Invalid { policy } => format!("invalid:{policy}"),
        Auth::ApiKey { policy } => format!("apikey:{}", policy.name),
    }
}

fn condition(c: &Compiled, policy: &str, type_: &str) -> Condition {
    c.report
        .get(Kind::TrafficPolicy, "apps", policy)
        .and_then(|s| s.condition(type_))
        .unwrap_or_else(|| panic!("no {type_} on {policy}"))
        .clone()
}

fn policy(name: &str, spec: &str) -> String {
    format!("apiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n{spec}\n---\n")
}

const ON_GW: &str = "  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]";
const KEYS: &str = "  apiKeyAuth: {secretRef: {name: keys}}";

#[test]
fn a_security_field_keyway_cannot_enforce_fails_closed_with_or_without_api_key_auth() {
    let c = compiled(&policy("p", &format!("{ON_GW}\n  extAuth: {{}}")));
    assert_eq!(auth(&c, 80, "/one"), "invalid:apps/p");
    let a = condition(&c, "p", "Accepted");
    assert!(
        a.message.contains("spec.extAuth: not supported by Keyway"),
        "{a}"
    );
    assert!(!a.message.contains("unknown field"), "{a}");
    let c = compiled(&policy("p", &format!("{ON_GW}\n{KEYS}\n  jwtAuth: {{}}")));
    assert_eq!(auth(&c, 80, "/one"), "invalid:apps/p");
}

#[test]
fn a_policy_without_api_key_auth_has_no_say() {
    // Only an ignored field: no effect, so the Gateway's key policy still decides.
    let c = compiled(&format!(
        "{}{}",
        policy("keys", &format!("{ON_GW}\n{KEYS}")),
        policy(
            "cors-only",
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n  cors: {allowOrigins: [\"*\"]}"
        )
    ));
    assert_eq!(auth(&c, 80, "/one"), "apikey:apps/keys");
    let a = condition(&c, "cors-only", "Accepted");
    assert!(a.status && a.message.contains("ignored"), "{a}");
}

#[test]
fn a_typo_in_spec_fails_closed() {
    let c = compiled(&policy(
        "p",
        &format!("{ON_GW}\n  apikeyAuth: {{secretRef: {{name: keys}}}}"),
    ));
    assert_eq!(auth(&c, 80, "/one"), "invalid:apps/p");
    let a = condition(&c, "p", "Accepted");
    assert!(a.message.contains("spec.apikeyAuth: unknown field"), "{a}");
}

#[test]
fn target_refs_are_limited_to_sixteen() {
    let refs = |n: usize| {
        let one = "{group: gateway.networking.k8s.io, kind: Gateway, name: gw}";
        format!("  targetRefs: [{}]\n{KEYS}", vec![one; n].join(", "))
    };
    let c = compiled(&policy("p", &refs(16)));
    assert!(condition(&c, "p", "Accepted").status);
    let c = compiled(&policy("p", &refs(17)));
    let a = condition(&c, "p", "Accepted");
    assert!(a.message.contains("17 entries, at most 16"), "{a}");
    assert_eq!(auth(&c, 80, "/one"), "invalid:apps/p");
}

#[test]
fn target_kinds_and_groups() {
    for (kind, ok) in [
        ("Gateway", true),
        ("HTTPRoute", true),
        ("Service", false),
        ("Backend", false),
    ] {
        let c = compiled(&policy(
            "p",
            &format!("  targetRefs: [{{group: gateway.networking.k8s.io, kind: {kind}, name: gw}}]\n{KEYS}"),
        ));
        let a = condition(&c, "p", "Accepted");
        let refused = a.message.contains("may only reference");
        assert_eq!(!refused, ok, "{kind}: {a}");
        let c = compiled(&policy(
            "p",
            &format!("  targetSelectors: [{{group: gateway.networking.k8s.io, kind: {kind}, matchLabels: {{tier: gold}}}}]\n{KEYS}"),
        ));
        let a = condition(&c, "p", "Accepted");
        let refused = a.message.contains("may only reference");
        assert_eq!(!refused, ok, "selector {kind}: {a}");
    }
    // The right kind in the wrong group attaches to nothing.
    for kind in ["Gateway", "HTTPRoute"] {
        let name = if kind == "Gateway" { "gw" } else { "r" };
        let c = compiled(&policy(
            "p",
            &format!("  targetRefs: [{{group: example.com, kind: {kind}, name: {name}}}]\n{KEYS}"),
        ));
        assert_eq!(auth(&c, 80, "/one"), "none", "{kind}");
        assert_eq!(condition(&c, "p", "Accepted").reason, "TargetNotFound");
    }
}

#[test]
fn selectors_pick_gateways_and_routes_by_label_in_the_policy_namespace_only() {
    for kind in ["Gateway", "HTTPRoute"] {
        let sel = |labels: &str| {
            policy(
                "p",
                &format!("  targetSelectors: [{{group: gateway.networking.k8s.io, kind: {kind}, matchLabels: {labels}}}]\n{KEYS}"),
            )
        };
        let c = compiled(&sel("{tier: gold}"));
        assert_eq!(auth(&c, 80, "/one"), "apikey:apps/p", "{kind}");
        let c = compiled(&sel("{tier: silver}"));
        assert_eq!(auth(&c, 80, "/one"), "none", "{kind}");
        let a = condition(&c, "p", "Accepted");
        assert!(
            a.message.contains(&format!("no {kind} in apps matches")),
            "{a}"
        );
        // A policy in another namespace selects nothing here.
        let other = sel("{tier: gold}").replace("namespace: apps}", "namespace: elsewhere}");
        let c = compiled(&other);
        assert_eq!(auth(&c, 80, "/one"), "none", "{kind} from elsewhere");
    }
    let c = compiled(&policy(
        "p",
        &format!("  targetSelectors: [{{group: gateway.networking.k8s.io, kind: Gateway, matchLabels: {{}}}}]\n{KEYS}"),
    ));
    assert!(condition(&c, "p", "Accepted")
        .message
        .contains("must not be empty"));
}

#[test]
fn section_names_attach_to_one_listener_or_one_rule() {
    let c = compiled(&policy(
        "p",
        &format!("  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: b}}]\n{KEYS}"),
    ));
    assert_eq!(auth(&c, 80, "/one"), "none");
    assert_eq!(auth(&c, 81, "/one"), "apikey:apps/p");
    let c = compiled(&policy(
        "p",
        &format!("  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: two}}]\n{KEYS}"),
    ));
    assert_eq!(auth(&c, 80, "/one"), "none");
    assert_eq!(auth(&c, 80, "/two"), "apikey:apps/p");
    for (kind, name) in [("Gateway", "gw"), ("HTTPRoute", "r")] {
        let c = compiled(&policy(
            "p",
            &format!("  targetRefs: [{{group: gateway.networking.k8s.io, kind: {kind}, name: {name}, sectionName: nope}}]\n{KEYS}"),
        ));
        assert_eq!(auth(&c, 80, "/one"), "none");
        let a = condition(&c, "p", "Accepted");
        assert!(a.message.contains("section nope not found"), "{a}");
    }
}

#[test]
fn no_targets_and_missing_targets_say_which() {
    let c = compiled(&policy("p", KEYS));
    let a = condition(&c, "p", "Accepted");
    assert_eq!(a.reason, "TargetNotFound");
    assert!(
        a.message.contains("has no targetRefs or targetSelectors"),
        "{a}"
    );
    let c = compiled(&policy(
        "p",
        &format!("  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gone}}]\n{KEYS}"),
    ));
    let a = condition(&c, "p", "Accepted");
    assert!(
        a.message
            .contains("Policy is not attached: Gateway apps/gone not found"),
        "{a}"
    );
}

#[test]
fn key_sources_limits_and_names() {
    let with = |sources: &str| {
        compiled(&policy(
            "p",
            &format!("{ON_GW}\n  apiKeyAuth: {{secretRef: {{name: keys}}, keySources: {sources}}}"),
        ))
    };
    let n = |count: usize| format!("[{}]", vec!["{header: x-k}"; count].join(", "));
    assert_eq!(auth(&with(&n(16)), 80, "/one"), "apikey:apps/p");
    let c = with(&n(17));
    assert!(condition(&c, "p", "Accepted")
        .message
        .contains("17 entries, at most 16"));
    assert_eq!(auth(&c, 80, "/one"), "invalid:apps/p");
    let long = "h".repeat(256);
    assert_eq!(
        auth(&with(&format!("[{{header: {long}}}]")), 80, "/one"),
        "apikey:apps/p"
    );
    let too_long = "h".repeat(257);
    for bad in [
        format!("[{{header: {too_long}}}]"),
        "[{query: ''}]".to_string(),
        format!("[{{cookie: {too_long}}}]"),
        "[{cookie: 'a b'}]".to_string(),
        "[{cookie: 'a;b'}]".to_string(),
        "[{header: 'a b'}]".to_string(),
        "[{}]".to_string(),
    ] {
        let c = with(&bad);
        assert_eq!(auth(&c, 80, "/one"), "invalid:apps/p", "{bad}");
    }
    for good in ["[{cookie: \"a!#$%&'*+-.^_`|~9\"}]", "[{query: 'k'}]"] {
        assert_eq!(auth(&with(good), 80, "/one"), "apikey:apps/p", "{good}");
    }
}

#[test]
fn the_client_id_header_cannot_be_one_that_frames_the_request() {
    let with = |h: &str| {
        compiled(&policy(
            "p",
            &format!("{ON_GW}\n  apiKeyAuth: {{secretRef: {{name: keys}}, clientIdHeader: '{h}'}}"),
        ))
    };
    for bad in [
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "content-length",
        "proxy-connection",
        "trailer",
        "",
        "bad name",
    ] {
        assert_eq!(auth(&with(bad), 80, "/one"), "invalid:apps/p", "{bad:?}");
    }
    assert_eq!(auth(&with("x-client-id"), 80, "/one"), "apikey:apps/p");
}

#[test]
fn secret_refs_must_name_a_core_secret() {
    for (r, ok) in [
        ("{name: keys}", true),
        ("{name: keys, group: '', kind: Secret}", true),
        ("{name: keys, group: apps}", false),
        ("{name: keys, kind: ConfigMap}", false),
        ("{name: ''}", false),
        ("{name: missing}", false),
    ] {
        let c = compiled(&policy(
            "p",
            &format!("{ON_GW}\n  apiKeyAuth: {{secretRef: {r}}}"),
        ));
        let want = if ok {
            "apikey:apps/p"
        } else {
            "invalid:apps/p"
        };
        assert_eq!(auth(&c, 80, "/one"), want, "{r}");
    }
}

#[test]
fn keys_are_trimmed_and_one_key_belongs_to_one_client() {
    let secret = |data: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: more, namespace: apps, labels: {{app: keys}}}}\nstringData: {{{data}}}\n---\n")
    };
    let sel = policy(
        "p",
        &format!("{ON_GW}\n  apiKeyAuth: {{secretSelector: {{matchLabels: {{app: keys}}}}}}"),
    );
    // Surrounding whitespace is not part of the key.
    let c = compiled(&format!("{}{sel}", secret("bob: \"  k-2 \\n\"")));
    let Auth::ApiKey { policy } = &route(&c, 80, "/one").auth else {
        panic!("{}", auth(&c, 80, "/one"));
    };
    assert_eq!(policy.client_for(b"k-2").map(|c| c.id()), Some("bob"));
    assert_eq!(policy.client_for(b"k-1").map(|c| c.id()), Some("alice"));
    assert!(policy.client_for(b"  k-2 \n").is_none());
    // The same key under another client: refused, naming both.
    let c = compiled(&format!("{}{sel}", secret("mallory: k-1")));
    assert_eq!(auth(&c, 80, "/one"), "invalid:apps/p");
    let a = condition(&c, "p", "Accepted");
    assert!(
        a.message.contains("\"alice\"") && a.message.contains("\"mallory\""),
        "{a}"
    );
    // The same client and key twice: one credential, no error.
    let c = compiled(&format!("{}{sel}", secret("alice: k-1")));
    assert_eq!(auth(&c, 80, "/one"), "apikey:apps/p");
}

#[test]
fn an_empty_api_key_auth_and_conflicting_choices_fail_closed() {
    for body in [
        "  apiKeyAuth:",
        "  apiKeyAuth: {}",
        "  apiKeyAuth: {secretRef: {name: keys}, disable: {}}",
    ] {
        let c = compiled(&policy("p", &format!("{ON_GW}\n{body}")));
        assert_eq!(auth(&c, 80, "/one"), "invalid:apps/p", "{body}");
    }
    let c = compiled(&policy(
        "p",
        &format!("{ON_GW}\n  apiKeyAuth: {{disable: {{}}}}"),
    ));
    assert_eq!(auth(&c, 80, "/one"), "none");
}

#[test]
fn a_duplicate_key_names_the_secret_that_holds_it_first() {
    // `bob` has keys in `a-keys` and `b-keys`; `carol` in `c-keys` presents bob's second
    // key. The message must name `b-keys`, where that key is bob's, not another Secret
    // that merely has a client called bob or the Secret that repeats the key.
    let secrets = "apiVersion: v1\nkind: Secret\nmetadata: {name: a-keys, namespace: apps, labels: {set: dup}}\nstringData: {bob: k-a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: b-keys, namespace: apps, labels: {set: dup}}\nstringData: {bob: k-x}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: c-keys, namespace: apps, labels: {set: dup}}\nstringData: {carol: k-x}\n---\n";
    let c = compiled(&format!(
        "{secrets}{}",
        policy(
            "p",
            "  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}]\n  apiKeyAuth: {secretSelector: {matchLabels: {set: dup}}}"
        )
    ));
    assert_eq!(auth(&c, 80, "/one"), "invalid:apps/p");
    let accepted = condition(&c, "p", "Accepted");
    assert!(
        accepted.message.contains(
            "duplicate API key value shared by client \"bob\" in secret apps/b-keys and client \"carol\" in secret apps/c-keys"
        ),
        "{}",
        accepted.message
    );
    assert!(!accepted.message.contains("k-x"), "{}", accepted.message);
}

fn ancestors(c: &Compiled, policy: &str) -> Vec<String> {
    c.report
        .get(Kind::TrafficPolicy, "apps", policy)
        .unwrap()
        .ancestors
        .iter()
        .map(|a| {
            format!(
                "{}/{}/{}",
                a.kind.as_deref().unwrap_or("-"),
                a.namespace.as_deref().unwrap_or("-"),
                a.name
            )
        })
        .collect()
}

fn targeting(name: &str, kind: &str, target: &str) -> String {
    format!("apiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  targetRefs:\n  - group: gateway.networking.k8s.io\n    kind: {kind}\n    name: {target}\n  apiKeyAuth:\n    secretRef: {{name: keys}}\n")
}

#[test]
fn ancestors_are_the_gateways_a_policy_takes_effect_on() {
    let c = compiled(
        &[
            targeting("on-route", "HTTPRoute", "r"),
            targeting("on-gateway", "Gateway", "gw"),
            targeting("on-nothing", "HTTPRoute", "missing"),
        ]
        .join("---\n"),
    );
    assert_eq!(ancestors(&c, "on-route"), ["Gateway/apps/gw"]);
    assert_eq!(ancestors(&c, "on-gateway"), ["Gateway/apps/gw"]);
    // Nothing it names exists: the names themselves, to carry TargetNotFound.
    assert_eq!(ancestors(&c, "on-nothing"), ["HTTPRoute/apps/missing"]);
    assert_eq!(
        condition(&c, "on-nothing", "Accepted").reason,
        "TargetNotFound"
    );
}

#[test]
fn a_policy_on_another_controllers_gateway_has_no_ancestor_of_ours() {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: theirs}}\nspec: {{controllerName: other.example/gw}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: apps}}\nspec:\n  gatewayClassName: theirs\n  listeners: [{{name: a, port: 80, protocol: HTTP}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys, namespace: apps}}\nstringData: {{alice: k-1}}\n---\n{}",
        targeting("theirs", "Gateway", "gw")
    );
    let loaded = keyway_sources::files::load_str("t.yaml", &text).unwrap();
    let options = keyway_compile::Options {
        controller_name: Some("keyway.dev/gateway-controller".into()),
        ..Default::default()
    };
    let c = compile(&loaded.snapshot, &options);
    assert_eq!(ancestors(&c, "theirs"), Vec::<String>::new());
    // Nor is the class or the Gateway reported as ours.
    assert!(c.report.get(Kind::GatewayClass, "", "theirs").is_none());
    assert!(c.report.get(Kind::Gateway, "apps", "gw").is_none());
}

#[test]
fn metadata_headers_are_validated_and_become_identity_headers() {
    let with = |m: &str, id: &str| {
        compiled(&policy(
            "p",
            &format!("{ON_GW}\n  apiKeyAuth: {{secretRef: {{name: keys}}, clientIdHeader: x-client, metadataHeaders: {{{m}}}}}{id}"),
        ))
    };
    let c = with("tier: x-tier, org: x-org", "");
    assert_eq!(auth(&c, 80, "/one"), "apikey:apps/p");
    let Auth::ApiKey { policy } = &route(&c, 80, "/one").auth else {
        unreachable!()
    };
    let names: Vec<(&str, &str)> = policy
        .metadata_headers
        .iter()
        .map(|(k, h)| (&**k, h.as_str()))
        .collect();
    assert_eq!(names, [("org", "x-org"), ("tier", "x-tier")]);
    // Stripped from every request on the Gateway, like the client id header.
    let listener = &c.config.ports[&80].listeners[0];
    let identity: Vec<&str> = listener
        .identity_headers
        .iter()
        .map(|h| h.as_str())
        .collect();
    for h in ["x-client", "x-tier", "x-org"] {
        assert!(identity.contains(&h), "{h} not in {identity:?}");
    }
    for (m, why) in [
        ("tier: host", "cannot carry client metadata"),
        ("tier: content-length", "cannot carry client metadata"),
        ("tier: x-client", "already set from the client's record"),
        (
            "tier: x-t, org: x-t",
            "already set from the client's record",
        ),
        ("tier: \"bad header\"", "not a valid HTTP header name"),
        ("tier: api-key", "also where the key is read from"),
    ] {
        let c = with(m, "");
        assert_eq!(auth(&c, 80, "/one"), "invalid:apps/p", "{m}");
        let a = condition(&c, "p", "Accepted");
        assert!(
            a.message.contains("spec.apiKeyAuth.metadataHeaders."),
            "{m}: {}",
            a.message
        );
        assert!(a.message.contains(why), "{m}: {}", a.message);
    }
}

#[test]
fn keys_expiring_within_a_week_are_noted_as_of_the_compile_time() {
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: apps}}\nspec:\n  gatewayClassName: any\n  listeners: [{{name: a, port: 80, protocol: HTTP}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys, namespace: apps}}\nstringData:\n  old: '{{\"key\": \"k-o\", \"expiresAt\": \"2027-01-01T00:00:00Z\"}}'\n  soon: '{{\"key\": \"k-s\", \"expiresAt\": \"2027-01-08T00:00:00Z\"}}'\n  edge: '{{\"key\": \"k-e\", \"expiresAt\": \"2027-01-09T00:00:00Z\"}}'\n  later: '{{\"key\": \"k-l\", \"expiresAt\": \"2027-01-09T00:00:01Z\"}}'\n  never: k-n\n---\n{}",
        policy("p", &format!("{ON_GW}\n{KEYS}"))
    );
    let loaded = keyway_sources::files::load_str("t.yaml", &text).unwrap();
    let now: std::time::SystemTime = humantime::parse_rfc3339("2027-01-02T00:00:00Z").unwrap();
    let options = keyway_compile::Options {
        now: Some(now),
        ..Default::default()
    };
    let c = compile(&loaded.snapshot, &options);
    let msg = condition(&c, "p", "Accepted").message;
    assert!(
        msg.contains("client \"old\" in secret apps/keys: key expired at 2027-01-01T00:00:00Z"),
        "{msg}"
    );
    assert!(
        msg.contains("client \"soon\" in secret apps/keys: key expires at 2027-01-08T00:00:00Z"),
        "{msg}"
    );
    // Exactly seven days ahead is within the week; a second later is not.
    assert!(msg.contains("client \"edge\""), "{msg}");
    assert!(
        !msg.contains("\"later\"") && !msg.contains("\"never\""),
        "{msg}"
    );
    assert!(!msg.contains("k-o") && !msg.contains("k-s"), "{msg}");
    // Without a time, nothing is said (the compile stays a function of its inputs).
    let c = compile(&loaded.snapshot, &Default::default());
    assert!(!condition(&c, "p", "Accepted").message.contains("expire"));
}

#[test]
fn at_most_ten_expiring_keys_are_named() {
    let entries: String = (0..12)
        .map(|i| {
            format!(
                "  c{i:02}: '{{\"key\": \"k-{i}\", \"expiresAt\": \"2027-01-03T00:00:00Z\"}}'\n"
            )
        })
        .collect();
    let mk = |n: usize| {
        let entries: String = entries.lines().take(n).map(|l| format!("{l}\n")).collect();
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: apps}}\nspec:\n  gatewayClassName: any\n  listeners: [{{name: a, port: 80, protocol: HTTP}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys, namespace: apps}}\nstringData:\n{entries}---\n{}",
            policy("p", &format!("{ON_GW}\n{KEYS}"))
        )
    };
    let now: std::time::SystemTime = humantime::parse_rfc3339("2027-01-02T00:00:00Z").unwrap();
    let options = keyway_compile::Options {
        now: Some(now),
        ..Default::default()
    };
    for (n, named, more) in [(10, 10, None), (12, 10, Some("and 2 more keys expiring"))] {
        let loaded = keyway_sources::files::load_str("t.yaml", &mk(n)).unwrap();
        let c = compile(&loaded.snapshot, &options);
        let msg = condition(&c, "p", "Accepted").message;
        assert_eq!(msg.matches("key expires at").count(), named, "{msg}");
        match more {
            Some(m) => assert!(msg.contains(m), "{msg}"),
            None => assert!(!msg.contains("more keys expiring"), "{msg}"),
        }
    }
}
