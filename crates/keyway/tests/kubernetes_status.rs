//! Kubernetes mode, the writing side: status written by one leader, the Lease, and the
//! least-privilege install, against the repository's fake API server.
//!
//! Every test runs its replicas under the RBAC rules `keyway manifests` prints, enforced by
//! the fake for the service account the replicas authenticate as: a request those rules do
//! not allow is answered 403, and the test fails on it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::cluster::*;
use crate::support::upstream;
use keyway::kubernetes::lease::{LeaseError, LeaseLock, LEASE_NAME};
use keyway_fakeapi::rbac::RbacAuthorizer;
use keyway_fakeapi::FakeApiServer;
use serde_json::{json, Value};

const NS: &str = "keyway";
const GW: &str = "gateway.networking.k8s.io/v1";
const TP: &str = "gateway.kgateway.dev/v1alpha1";

/// Enforces the RBAC of `keyway manifests --namespace keyway <args>` for `tokens`, each
/// the service account `keyway/keyway`.
fn enforce_rbac(api: &FakeApiServer, tokens: &[&str], args: &[&str]) -> Arc<RbacAuthorizer> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["manifests", "--namespace", NS])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut authz = RbacAuthorizer::from_yaml(&String::from_utf8(out.stdout).unwrap()).unwrap();
    for t in tokens {
        authz.bind_service_account(t, NS, "keyway");
    }
    let authz = Arc::new(authz);
    api.set_authorizer(Some(authz.clone()));
    authz
}

fn assert_no_denials(authz: &RbacAuthorizer) {
    let denied = authz.denials();
    assert!(
        denied.is_empty(),
        "requests outside the RBAC of `keyway manifests`: {denied:#?}"
    );
}

/// `keyway run --kubernetes` flags for a replica named `name` in namespace `keyway`, with a
/// 5 s Lease.
fn replica_args<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    replica_args_with(name, "5s", extra)
}

fn replica_args_with<'a>(name: &'a str, lease: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--pod-name",
        name,
        "--pod-namespace",
        NS,
        "--service",
        "keyway/keyway",
        "--lease-duration",
        lease,
    ];
    args.extend_from_slice(extra);
    args
}

fn front_service(status: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "keyway", "namespace": NS},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80}]},
        "status": status})
}

fn lease_holder(api: &FakeApiServer) -> Option<String> {
    api.get("coordination.k8s.io/v1", "Lease", Some(NS), LEASE_NAME)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
        .filter(|h| !h.is_empty())
}

fn status_of(
    api: &FakeApiServer,
    api_version: &str,
    kind: &str,
    ns: Option<&str>,
    name: &str,
) -> Value {
    api.get(api_version, kind, ns, name)
        .map(|o| o["status"].clone())
        .unwrap_or(Value::Null)
}

/// The statuses of the objects of [`base`].
fn base_statuses(api: &FakeApiServer) -> Vec<Value> {
    vec![
        status_of(api, GW, "GatewayClass", None, "keyway"),
        status_of(api, GW, "Gateway", Some("apps"), "gw"),
        status_of(api, GW, "HTTPRoute", Some("apps"), "r"),
        status_of(api, TP, "TrafficPolicy", Some("apps"), "keys"),
    ]
}

fn condition<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// Whether Keyway's verdicts on [`base`] are all written.
fn base_converged(s: &[Value]) -> bool {
    condition(&s[0]["conditions"], "Accepted")["status"] == "True"
        && condition(&s[1]["conditions"], "Programmed")["status"] == "True"
        && s[1]["listeners"][0]["attachedRoutes"] == 1
        && condition(&s[2]["parents"][0]["conditions"], "Accepted")["status"] == "True"
        && condition(&s[3]["ancestors"][0]["conditions"], "Accepted")["status"] == "True"
}

fn without_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

/// Every status write in the request log: `(token, path, status code)`.
fn status_writes(api: &FakeApiServer) -> Vec<(String, String, u16)> {
    api.requests()
        .into_iter()
        .filter(|r| {
            matches!(r.method.as_str(), "PUT" | "PATCH" | "POST") && r.path.ends_with("/status")
        })
        .map(|r| (r.token.unwrap_or_default(), r.path, r.status))
        .collect()
}

async fn generations(replicas: &[&Replica]) -> Vec<u64> {
    let mut out = Vec::new();
    for r in replicas {
        out.push(
            r.admin_json("/status").await["generation"]
                .as_u64()
                .unwrap(),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_status_stays_idle_and_a_successor_takes_over() {
    let up = upstream().await;
    let api = fake_with(up).await;
    api.apply(front_service(
        json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}),
    ));
    let names = ["s1", "s2", "s3"];
    let authz = enforce_rbac(&api, &names, &[]);
    let mut replicas: Vec<Option<Replica>> = names
        .iter()
        .map(|n| Some(Replica::start(&api, n, &replica_args(n, &[]))))
        .collect();
    for r in replicas.iter().flatten() {
        r.serving().await;
    }
    // The fake API server logs a request when its response is complete, as a real one's
    // audit log does at ResponseComplete: a status can be visible before its write is on
    // record, so wait for both.
    let converged = until(Duration::from_secs(20), || async {
        base_converged(&base_statuses(&api)) && status_writes(&api).len() >= 4
    })
    .await;
    assert!(
        converged.is_some(),
        "status never converged: {:#?}",
        base_statuses(&api)
    );
    let statuses = base_statuses(&api);
    assert_eq!(
        statuses[1]["addresses"],
        json!([{"type": "IPAddress", "value": "203.0.113.7"}])
    );
    assert_eq!(statuses[2]["parents"][0]["controllerName"], CONTROLLER);
    assert_eq!(
        statuses[3]["ancestors"][0]["ancestorRef"],
        json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "apps", "name": "gw"})
    );
    assert_eq!(
        condition(&statuses[1]["conditions"], "Accepted")["observedGeneration"],
        1
    );

    // One writer: the Lease holder.
    let holder = lease_holder(&api).expect("a Lease holder");
    let writes = status_writes(&api);
    assert!(writes.len() >= 4, "{writes:?}");
    for (token, path, code) in &writes {
        assert_eq!(
            token, &holder,
            "{path} written by a replica not holding the Lease"
        );
        assert!((200..300).contains(code), "{path}: {code}");
    }

    // Converged and idle: no status write, no recompile, nothing moves, for 60 s.
    let live: Vec<&Replica> = replicas.iter().flatten().collect();
    let before = base_statuses(&api);
    let gens = generations(&live).await;
    api.clear_requests();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(status_writes(&api), vec![], "status written while idle");
    assert_eq!(generations(&live).await, gens, "recompiled while idle");
    assert_eq!(base_statuses(&api), before, "status moved while idle");
    assert_eq!(lease_holder(&api).as_deref(), Some(holder.as_str()));

    // The leader dies without a word; some statuses are lost meanwhile.
    let leader = names.iter().position(|n| *n == holder).unwrap();
    let mut dead = replicas[leader].take().unwrap();
    dead.child.kill().unwrap();
    let killed = Instant::now();
    drop(dead);
    api.set_status(GW, "HTTPRoute", Some("apps"), "r", json!({}));
    api.set_status(GW, "Gateway", Some("apps"), "gw", json!({}));
    api.clear_requests();
    let took = until(Duration::from_secs(5 + 3), || async {
        lease_holder(&api).is_some_and(|h| h != holder)
    })
    .await
    .expect("no replica took the Lease over");
    let successor = lease_holder(&api).unwrap();
    println!(
        "lease taken over {:?} after the leader was killed",
        killed.elapsed()
    );
    assert!(took <= Duration::from_secs(5 + 2), "took {took:?}");
    // As above: wait for the writes to be on record too.
    let restored = until(Duration::from_secs(5), || async {
        without_times(&Value::from(base_statuses(&api)))
            == without_times(&Value::from(before.clone()))
            && status_writes(&api).len() >= 2
    })
    .await;
    assert!(
        restored.is_some(),
        "statuses not rewritten: {:#?}",
        base_statuses(&api)
    );
    let after = base_statuses(&api);
    assert_eq!(after[0], before[0], "an untouched status was rewritten");
    assert_eq!(after[3], before[3], "an untouched status was rewritten");
    let writes = status_writes(&api);
    assert_eq!(
        writes.len(),
        2,
        "only the two lost statuses are written: {writes:?}"
    );
    for (token, path, _) in &writes {
        assert_eq!(token, &successor, "{path}");
    }
    assert_no_denials(&authz);
}

async fn client(api: &FakeApiServer, dir: &Path, token: &str) -> kube::Client {
    let path = api.write_kubeconfig(dir, token);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contenders_for_an_expired_lease_get_one_success_and_one_conflict() {
    let api = FakeApiServer::start().await;
    let authz = enforce_rbac(&api, &["a", "b", "c"], &[]);
    api.apply(
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": NS},
        "spec": {"holderIdentity": "gone", "leaseDurationSeconds": 1,
                 "renewTime": "2020-01-01T00:00:00.000000Z"}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let second = Duration::from_secs(1);
    let a = LeaseLock::new(
        client(&api, dir.path(), "a").await,
        NS,
        LEASE_NAME,
        "a",
        second,
    );
    let b = LeaseLock::new(
        client(&api, dir.path(), "b").await,
        NS,
        LEASE_NAME,
        "b",
        second,
    );
    let seen_a = a.read().await.unwrap().unwrap();
    let seen_b = b.read().await.unwrap().unwrap();
    api.clear_requests();
    let (ra, rb) = tokio::join!(a.claim(&seen_a), b.claim(&seen_b));
    let won = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{ra:?} {rb:?}");
    let loser = if ra.is_ok() { &rb } else { &ra };
    assert!(matches!(loser, Err(LeaseError::Conflict)), "{loser:?}");
    let mut codes: Vec<u16> = api
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with(LEASE_NAME))
        .map(|r| r.status)
        .collect();
    codes.sort_unstable();
    assert_eq!(codes, vec![200, 409]);
    let winner = if ra.is_ok() { "a" } else { "b" };
    assert_eq!(lease_holder(&api).as_deref(), Some(winner));

    // A third replica finds the Lease held by someone whose last renewal, by the Lease's
    // own clock, was years ago. Clocks are not compared: it waits until the Lease has stood
    // still for the duration by its own clock, then takes it.
    api.apply(
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": NS},
        "spec": {"holderIdentity": "live", "leaseDurationSeconds": 1,
                 "renewTime": "2020-01-01T00:00:00.000000Z"}}),
    );
    let mut c = keyway::kubernetes::lease::Elector::new(LeaseLock::new(
        client(&api, dir.path(), "c").await,
        NS,
        LEASE_NAME,
        "c",
        second,
    ));
    let first_seen = Instant::now();
    assert!(
        !c.step().await,
        "took a Lease on the strength of its renewTime"
    );
    let mut led = false;
    for _ in 0..40 {
        tokio::time::sleep_until(c.next_step().into()).await;
        if c.step().await {
            led = true;
            break;
        }
    }
    assert!(led, "an expired Lease was not taken");
    let waited = first_seen.elapsed();
    assert!(
        waited >= second,
        "took the Lease after {waited:?}, before it expired"
    );
    assert!(
        waited < 3 * second,
        "took {waited:?} to take an expired Lease"
    );
    assert_eq!(lease_holder(&api).as_deref(), Some("c"));
    let held = ra.or(rb).unwrap();
    let old = if winner == "a" { &a } else { &b };
    assert!(matches!(old.renew(&held).await, Err(LeaseError::Conflict)));
    assert_no_denials(&authz);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_controllers_parent_entry_is_kept_byte_for_byte_in_place() {
    let up = upstream().await;
    let api = fake_with(up).await;
    api.apply_yaml(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: other}\nspec: {controllerName: other.example/gateway}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: other-gw, namespace: apps}\nspec:\n  gatewayClassName: other\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: shared, namespace: apps}\nspec:\n  parentRefs: [{name: other-gw}, {name: gw}]\n  rules:\n  - backendRefs: [{name: app, port: 80}]\n",
    );
    let theirs = json!({"parentRef": {"name": "other-gw"}, "controllerName": "other.example/gateway",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
            "message": "théirs, «as written»", "observedGeneration": 1,
            "lastTransitionTime": "2024-02-29T12:00:00Z"}]});
    api.set_status(
        GW,
        "HTTPRoute",
        Some("apps"),
        "shared",
        json!({"parents": [theirs]}),
    );
    api.apply(front_service(json!({})));
    let authz = enforce_rbac(&api, &["solo"], &[]);
    let replica = Replica::start(&api, "solo", &replica_args("solo", &[]));
    replica.serving().await;
    let parents = || status_of(&api, GW, "HTTPRoute", Some("apps"), "shared")["parents"].clone();
    let both = until(Duration::from_secs(20), || async {
        parents().as_array().is_some_and(|p| p.len() == 2)
    })
    .await;
    assert!(both.is_some(), "{:#}", parents());
    let p = parents();
    assert_eq!(
        p[0], theirs,
        "the other controller's entry changed or moved"
    );
    assert_eq!(p[1]["parentRef"], json!({"name": "gw"}));
    assert_eq!(p[1]["controllerName"], CONTROLLER);

    // The other controller rewrites its entry; then our verdict changes (the backend goes
    // away): ours is updated where it stands, theirs is left as they wrote it.
    let mut theirs2 = theirs.clone();
    theirs2["conditions"][0]["message"] = "rewritten by them".into();
    api.set_status(
        GW,
        "HTTPRoute",
        Some("apps"),
        "shared",
        json!({"parents": [theirs2, p[1]]}),
    );
    let mut route = api.get(GW, "HTTPRoute", Some("apps"), "shared").unwrap();
    route["spec"]["rules"][0]["backendRefs"][0]["name"] = "missing".into();
    api.apply(route);
    let updated = until(Duration::from_secs(10), || async {
        condition(&parents()[1]["conditions"], "ResolvedRefs")["reason"] == "BackendNotFound"
    })
    .await;
    assert!(updated.is_some(), "{:#}", parents());
    let p = parents();
    assert_eq!(p.as_array().unwrap().len(), 2);
    assert_eq!(p[0], theirs2);
    assert_eq!(
        condition(&p[1]["conditions"], "ResolvedRefs")["observedGeneration"],
        2
    );
    assert_no_denials(&authz);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_addresses_follow_the_front_service() {
    let up = upstream().await;
    let api = fake_with(up).await;
    api.apply(front_service(
        json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}),
    ));
    // Secrets of one namespace only: the grant has no cluster-wide Secret read.
    let authz = enforce_rbac(&api, &["addr"], &["--watch-namespace", "apps"]);
    let replica = Replica::start(
        &api,
        "addr",
        &replica_args("addr", &["--watch-namespace", "apps"]),
    );
    replica.serving().await;
    let gateway = || status_of(&api, GW, "Gateway", Some("apps"), "gw");
    let expect = |addresses: Value, programmed: &'static str, reason: &'static str| {
        let api = &api;
        async move {
            let ok = until(Duration::from_secs(10), || async {
                let g = status_of(api, GW, "Gateway", Some("apps"), "gw");
                let p = condition(&g["conditions"], "Programmed");
                g.get("addresses").cloned().unwrap_or(Value::Null) == addresses
                    && p["status"] == programmed
                    && p["reason"] == reason
            })
            .await;
            ok.is_some()
        }
    };
    let ip = json!([{"type": "IPAddress", "value": "203.0.113.7"}]);
    assert!(expect(ip, "True", "Programmed").await, "{:#}", gateway());
    api.set_status(
        "v1",
        "Service",
        Some(NS),
        "keyway",
        json!({"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}),
    );
    let host = json!([{"type": "Hostname", "value": "lb.example.com"}]);
    assert!(expect(host, "True", "Programmed").await, "{:#}", gateway());
    api.set_status("v1", "Service", Some(NS), "keyway", json!({}));
    let cluster = json!([{"type": "IPAddress", "value": "10.96.0.10"}]);
    assert!(
        expect(cluster, "True", "Programmed").await,
        "{:#}",
        gateway()
    );
    assert!(api.delete("v1", "Service", Some(NS), "keyway"));
    assert!(
        expect(Value::Null, "False", "AddressNotAssigned").await,
        "{:#}",
        gateway()
    );
    let programmed = condition(&gateway()["conditions"], "Programmed").clone();
    assert_eq!(programmed["message"], "Service keyway/keyway not found");
    // Serving is not a matter of status: the listener still answers.
    assert_eq!(
        status_with(replica.serving().await, Some("k-alice")).await,
        200
    );
    let cluster_wide = api
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/secrets")
        .count();
    assert_eq!(cluster_wide, 0);
    assert_no_denials(&authz);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_policy_says_why_without_the_key_and_its_routes_answer_500() {
    let up = upstream().await;
    let api = fake_with(up).await;
    api.apply(secret("carol", &[("carol", "k-alice")]));
    api.apply(front_service(json!({})));
    let authz = enforce_rbac(&api, &["inv"], &[]);
    let replica = Replica::start(&api, "inv", &replica_args("inv", &[]));
    let addr = replica.serving().await;
    assert_eq!(status_with(addr, Some("k-alice")).await, 500);
    assert_eq!(status_with(addr, None).await, 500);
    let policy = || status_of(&api, TP, "TrafficPolicy", Some("apps"), "keys");
    let written = until(Duration::from_secs(20), || async {
        condition(&policy()["ancestors"][0]["conditions"], "Accepted")["status"] == "False"
    })
    .await;
    assert!(written.is_some(), "{:#}", policy());
    let accepted = condition(&policy()["ancestors"][0]["conditions"], "Accepted").clone();
    assert_eq!(accepted["reason"], "Invalid");
    let message = accepted["message"].as_str().unwrap();
    for name in ["alice", "carol", "apps/alice", "apps/carol"] {
        assert!(message.contains(name), "{name} not named: {message}");
    }
    let whole = policy().to_string();
    assert!(
        !whole.contains("k-alice"),
        "the key is in the status: {whole}"
    );
    assert_no_denials(&authz);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_conditions_match_keyway_check_on_the_same_objects() {
    let manifests = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: keyway}}\nspec: {{controllerName: {CONTROLLER}}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: apps}}\nspec:\n  gatewayClassName: keyway\n  listeners:\n  - {{name: http, port: {port}, protocol: HTTP}}\n  - {{name: http-again, port: {port}, protocol: HTTP}}\n  - {{name: https, port: 8443, protocol: HTTPS, tls: {{certificateRefs: [{{name: missing-cert}}]}}}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: broken, namespace: apps}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{{name: nowhere, port: 80}}]\n",
        port = support::LISTENER_PORT
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("objects.yaml"), &manifests).unwrap();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["check", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8(check.stdout).unwrap();

    let api = FakeApiServer::start().await;
    api.apply_yaml(&manifests);
    api.apply(front_service(json!({})));
    let authz = enforce_rbac(&api, &["chk"], &[]);
    let replica = Replica::start(&api, "chk", &replica_args("chk", &["--port-map", "8443=0"]));
    replica.serving().await;
    let route = || status_of(&api, GW, "HTTPRoute", Some("apps"), "broken");
    let gateway = || status_of(&api, GW, "Gateway", Some("apps"), "gw");
    let written = until(Duration::from_secs(20), || async {
        route()["parents"][0]["conditions"].is_array()
            && gateway()["listeners"][1]["conditions"].is_array()
    })
    .await;
    assert!(written.is_some(), "{:#} {:#}", route(), gateway());

    let line = |head: &str, c: &Value| {
        let mut l = format!(
            "{head} {}={} {}",
            c["type"].as_str().unwrap(),
            c["status"].as_str().unwrap(),
            c["reason"].as_str().unwrap()
        );
        let message = c["message"].as_str().unwrap();
        if !message.is_empty() {
            l.push_str(&format!(": {message}"));
        }
        l
    };
    let mut compared = 0;
    for c in route()["parents"][0]["conditions"].as_array().unwrap() {
        let want = line("HTTPRoute apps/broken [parent Gateway apps/gw]", c);
        assert!(
            printed.contains(&want),
            "`keyway check` does not say\n  {want}\nit says:\n{printed}"
        );
        compared += 1;
    }
    for l in gateway()["listeners"].as_array().unwrap() {
        let head = format!("Gateway apps/gw [listener {}]", l["name"].as_str().unwrap());
        for c in l["conditions"].as_array().unwrap() {
            let want = line(&head, c);
            assert!(
                printed.contains(&want),
                "`keyway check` does not say\n  {want}\nit says:\n{printed}"
            );
            compared += 1;
        }
    }
    // The objects' own conditions: the Gateway's (its Service has an address, so
    // `Programmed` is the compiler's) and the GatewayClass's.
    let class = status_of(&api, GW, "GatewayClass", None, "keyway");
    for (head, conditions) in [
        ("Gateway apps/gw ", gateway()["conditions"].clone()),
        ("GatewayClass ", class["conditions"].clone()),
    ] {
        for c in conditions.as_array().unwrap() {
            let want = line("", c);
            let found = printed.lines().any(|l| {
                l.trim_start().starts_with(head) && !l.contains(" [") && l.contains(want.trim())
            });
            assert!(
                found,
                "`keyway check` does not say {head}{want}\nit says:\n{printed}"
            );
            compared += 1;
        }
    }
    assert!(
        printed.contains("ResolvedRefs=False BackendNotFound"),
        "{printed}"
    );
    // An HTTPS listener whose Secret does not exist, in the listener's status.
    let https = gateway()["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "https")
        .cloned()
        .unwrap();
    assert_eq!(
        condition(&https["conditions"], "ResolvedRefs")["reason"],
        "InvalidCertificateRef"
    );
    assert_eq!(
        condition(&https["conditions"], "Programmed")["status"],
        "False"
    );
    assert!(
        printed.contains("Conflicted=True HostnameConflict"),
        "{printed}"
    );
    assert!(compared >= 12, "{compared}");
    assert_no_denials(&authz);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_shuts_down_hands_the_lease_over_at_once() {
    let up = upstream().await;
    let api = fake_with(up).await;
    api.apply(front_service(json!({})));
    let names = ["h1", "h2"];
    let authz = enforce_rbac(&api, &names, &[]);
    let replicas: Vec<Replica> = names
        .iter()
        .map(|n| Replica::start(&api, n, &replica_args_with(n, "30s", &[])))
        .collect();
    for r in &replicas {
        r.serving().await;
    }
    let holder = until(Duration::from_secs(10), || async {
        lease_holder(&api).is_some()
    })
    .await;
    assert!(holder.is_some(), "nobody took the Lease");
    let holder = lease_holder(&api).unwrap();
    let leader = &replicas[names.iter().position(|n| *n == holder).unwrap()];
    let term = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &leader.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Released on the way out: the other replica need not wait out the 30 s duration.
    let took = until(Duration::from_secs(10), || async {
        lease_holder(&api).is_some_and(|h| h != holder)
    })
    .await;
    assert!(
        took.is_some(),
        "the Lease was not handed over: {:?}",
        lease_holder(&api)
    );
    println!("lease handed over {:?} after SIGTERM", term.elapsed());
    assert_no_denials(&authz);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_leader_puts_status_right_and_stops_when_it_loses_the_lease() {
    let up = upstream().await;
    let api = fake_with(up).await;
    api.apply(front_service(json!({})));
    let authz = enforce_rbac(&api, &["steady"], &[]);
    let replica = Replica::start(
        &api,
        "steady",
        &replica_args("steady", &["--status-resync", "2s"]),
    );
    replica.serving().await;
    let parents = || status_of(&api, GW, "HTTPRoute", Some("apps"), "r")["parents"].clone();
    let accepted =
        || async { condition(&parents()[0]["conditions"], "Accepted")["status"] == "True" };
    assert!(
        until(Duration::from_secs(20), accepted).await.is_some(),
        "{:#}",
        parents()
    );

    // Someone wipes a status: the next resync puts it back.
    api.set_status(GW, "HTTPRoute", Some("apps"), "r", json!({}));
    assert!(
        until(Duration::from_secs(6), accepted).await.is_some(),
        "not put back"
    );

    // The route is deleted and created again, the same: the new object gets its status.
    let route = api.get(GW, "HTTPRoute", Some("apps"), "r").unwrap();
    assert!(api.delete(GW, "HTTPRoute", Some("apps"), "r"));
    let mut again = route.clone();
    again.as_object_mut().unwrap().remove("status");
    again["metadata"].as_object_mut().unwrap().remove("uid");
    api.apply(again);
    assert!(
        until(Duration::from_secs(6), accepted).await.is_some(),
        "the new route has no status"
    );

    // The Lease is taken from under it: once its renewal is refused it writes nothing,
    // whatever changes, until it takes the Lease back when the usurper lets it expire.
    api.apply(
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": NS},
        "spec": {"holderIdentity": "usurper", "leaseDurationSeconds": 5,
                 "renewTime": "2030-01-01T00:00:00.000000Z"}}),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    api.clear_requests();
    let mut route = api.get(GW, "HTTPRoute", Some("apps"), "r").unwrap();
    route["spec"]["rules"][0]["backendRefs"][0]["name"] = "missing".into();
    api.apply(route);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status_writes(&api), vec![], "written without the Lease");
    let unresolved = until(Duration::from_secs(10), || async {
        condition(&parents()[0]["conditions"], "ResolvedRefs")["reason"] == "BackendNotFound"
    })
    .await;
    assert!(
        unresolved.is_some(),
        "never written after the Lease came back: {:#}",
        parents()
    );
    assert_eq!(lease_holder(&api).as_deref(), Some("steady"));
    assert_no_denials(&authz);
}
