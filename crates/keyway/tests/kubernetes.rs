//! Kubernetes mode end to end: `keyway run --kubernetes` processes against the
//! repository's fake API server (`keyway-fakeapi`), all on 127.0.0.1.
//!
//! Every test applies its objects to the fake, starts one or more replicas with their own
//! bearer token (so the request log tells them apart), and checks what they serve over
//! real sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::cluster::*;
use crate::support::{send, upstream, Req};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_served_until_every_kind_is_listed() {
    let up = upstream().await;
    let api = fake_with(up).await;
    api.faults().hold_list("TrafficPolicy", true);
    let replica = Replica::start(&api, "replica-a", &[]);
    // The route and the Secrets are listed; the policy protecting the route is not.
    let held = until(Duration::from_secs(10), || async {
        api.faults().held_lists("TrafficPolicy") > 0
    })
    .await;
    assert!(held.is_some(), "the TrafficPolicy list was never asked for");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(replica.readyz().await, 503);
    assert_eq!(
        replica.gateway(Duration::from_millis(10)).await,
        None,
        "a listener opened before the policies were read:\n{}",
        replica.output()
    );
    api.faults().hold_list("TrafficPolicy", false);
    let addr = replica.serving().await;
    assert_eq!(status_with(addr, None).await, 401);
    assert_eq!(status_with(addr, Some("k-alice")).await, 200);
    assert!(until(Duration::from_secs(5), || async {
        replica.readyz().await == 200
    })
    .await
    .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_served_one_object_per_page_are_read_whole() {
    let up = upstream().await;
    let api = fake_with(up).await;
    for i in 0..5 {
        api.apply(secret(
            &format!("more-{i}"),
            &[(&format!("c{i}"), &format!("k-{i}"))],
        ));
    }
    api.faults().set_max_page(Some(1));
    let replica = Replica::start(&api, "paged", &[]);
    let addr = replica.serving().await;
    for key in ["k-alice", "k-bob", "k-0", "k-4"] {
        assert_eq!(status_with(addr, Some(key)).await, 200, "{key}");
    }
    let continued = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/secrets") && r.query_param("continue").is_some())
        .count();
    assert!(
        continued >= 6,
        "the Secret list was not paged: {continued} continued pages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_reaches_every_replica_within_a_second() {
    let up = upstream().await;
    let api = fake_with(up).await;
    let replicas: Vec<Replica> = ["r1", "r2", "r3"]
        .iter()
        .map(|t| Replica::start(&api, t, &[]))
        .collect();
    let mut addrs = Vec::new();
    for r in &replicas {
        let a = r.serving().await;
        assert_eq!(status_with(a, Some("k-alice")).await, 200);
        assert_eq!(status_with(a, Some("k-bob")).await, 200);
        addrs.push(a);
    }
    // A key removed from its Secret, then a whole Secret deleted.
    api.apply(secret("alice", &[("alice-2", "k-alice-2")]));
    let mut latencies = refused_everywhere(&addrs, "k-alice", Instant::now()).await;
    assert!(api.delete("v1", "Secret", Some("apps"), "bob"));
    latencies.extend(refused_everywhere(&addrs, "k-bob", Instant::now()).await);
    eprintln!("revocation latencies: {latencies:?}");
    assert!(latencies.iter().all(Option::is_some), "{latencies:?}");
    for a in &addrs {
        assert_eq!(status_with(*a, Some("k-alice-2")).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_policy_refuses_its_targets() {
    let up = upstream().await;
    let api = fake_with(up).await;
    let replica = Replica::start(&api, "bad-policy", &[]);
    let addr = replica.serving().await;
    assert_eq!(status_with(addr, Some("k-alice")).await, 200);
    api.apply(serde_json::json!({"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": "TrafficPolicy",
        "metadata": {"name": "keys", "namespace": "apps"},
        "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "r"}],
                 "apiKeyAuth": {"secretSelector": {"matchLabels": {"keys": "demo"}}, "keySources": "header"}}}));
    let refused = until(Duration::from_secs(2), || async {
        status_with(addr, Some("k-alice")).await == 500
    })
    .await;
    assert!(refused.is_some(), "{}", replica.output());
    assert_eq!(status_with(addr, None).await, 500);
    let status = replica.admin_json("/status").await;
    assert!(status.to_string().contains("cannot be decoded"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_read_only_in_watched_namespaces() {
    let up = upstream().await;
    let api = fake_with(up).await;
    api.apply(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "elsewhere", "namespace": "other", "labels": {"keys": "demo"}},
        "stringData": {"eve": "k-eve"}}));
    let replica = Replica::start(&api, "scoped", &["--watch-namespace", "apps"]);
    let addr = replica.serving().await;
    assert_eq!(status_with(addr, Some("k-alice")).await, 200);
    let secret_requests: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.token.as_deref() == Some("scoped") && r.path.ends_with("/secrets"))
        .map(|r| r.path.clone())
        .collect();
    assert!(!secret_requests.is_empty());
    assert!(
        secret_requests
            .iter()
            .all(|p| p == "/api/v1/namespaces/apps/secrets"),
        "{secret_requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_of_other_controllers_are_not_served() {
    let up = upstream().await;
    let api = fake_with(up).await;
    // Only another controller's class: nothing to serve.
    api.apply(
        serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "keyway"}, "spec": {"controllerName": "example.com/other"}}),
    );
    let replica = Replica::start(&api, "other", &[]);
    assert!(
        until(Duration::from_secs(10), || async {
            replica.readyz().await == 200
        })
        .await
        .is_some(),
        "{}",
        replica.output()
    );
    assert_eq!(replica.gateway(Duration::from_millis(500)).await, None);
    // The class becomes ours: the Gateway is served.
    api.apply(
        serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "keyway"}, "spec": {"controllerName": CONTROLLER}}),
    );
    let addr = replica.serving().await;
    assert_eq!(status_with(addr, Some("k-bob")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_resource_version_relists_without_a_gap() {
    let up = upstream().await;
    let api = fake_with(up).await;
    let replica = Replica::start(&api, "relist", &[]);
    let addr = replica.serving().await;
    let generation = replica.admin_json("/status").await["generation"].clone();
    // A continuous probe over the relist.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(status_with(addr, Some("k-alice")).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        })
    };
    // Cut the streams (no last bookmark), move the resourceVersion on with a status-only
    // write (nothing the compiler reads), drop the history: every watch resumes from a
    // version the server no longer has.
    api.faults().refuse_connections(true);
    api.set_status(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        Some("apps"),
        "r",
        serde_json::json!({"parents": []}),
    );
    api.faults().compact();
    api.clear_requests();
    api.faults().refuse_connections(false);
    let relisted = until(Duration::from_secs(10), || async {
        api.requests()
            .iter()
            .filter(|r| !r.is_watch && r.path.ends_with("/httproutes"))
            .count()
            > 0
    })
    .await;
    assert!(
        relisted.is_some(),
        "no new LIST after 410: {:#?}",
        api.requests()
            .iter()
            .map(|r| format!("{} {}?{} {}", r.method, r.path, r.query, r.status))
            .collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = probe.await.unwrap();
    assert!(
        !seen.is_empty() && seen.iter().all(|s| *s == 200),
        "{seen:?}"
    );
    // Nothing changed: the relist did not even recompile.
    assert_eq!(
        replica.admin_json("/status").await["generation"],
        generation
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_watch_resumes_from_its_resource_version() {
    let up = upstream().await;
    let api = fake_with(up).await;
    api.faults()
        .set_bookmark_interval(Duration::from_millis(200));
    let replica = Replica::start(&api, "resume", &[]);
    let addr = replica.serving().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    api.clear_requests();
    api.faults().close_watches();
    let rewatched = until(Duration::from_secs(10), || async {
        api.requests()
            .iter()
            .filter(|r| r.is_watch && r.path.ends_with("/trafficpolicies"))
            .count()
            > 0
    })
    .await;
    assert!(rewatched.is_some(), "no new watch");
    let requests = api.requests();
    let lists: Vec<_> = requests.iter().filter(|r| !r.is_watch).collect();
    assert!(lists.is_empty(), "relisted after a clean close: {lists:?}");
    assert!(requests.iter().filter(|r| r.is_watch).all(|r| r
        .query_param("resourceVersion")
        .is_some_and(|v| v != "0" && !v.is_empty())));
    // Status-only updates change nothing the compiler reads: no recompile.
    let generation = replica.admin_json("/status").await["generation"].clone();
    api.set_status(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        Some("apps"),
        "r",
        serde_json::json!({"parents": []}),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        replica.admin_json("/status").await["generation"],
        generation
    );
    assert_eq!(status_with(addr, Some("k-alice")).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_serving_and_converges_after() {
    let up = upstream().await;
    let api = fake_with(up).await;
    let replicas: Vec<Replica> = ["o1", "o2"]
        .iter()
        .map(|t| Replica::start(&api, t, &[]))
        .collect();
    let mut addrs = Vec::new();
    for r in &replicas {
        addrs.push(r.serving().await);
    }
    api.faults().refuse_connections(true);
    // Changed and deleted while the replicas cannot see it.
    api.apply(secret("alice", &[("alice", "k-alice-new")]));
    assert!(api.delete("v1", "Secret", Some("apps"), "bob"));
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(60) {
        for (r, a) in replicas.iter().zip(&addrs) {
            assert_eq!(r.readyz().await, 200, "readiness dropped in the outage");
            assert_eq!(status_with(*a, Some("k-alice")).await, 200);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let status = replicas[0].admin_json("/status").await;
    let stale = status["source"]["state"]["watches"][0]["staleSeconds"]
        .as_f64()
        .unwrap();
    assert!(stale > 50.0, "staleness not reported: {status}");
    let metrics = send(replicas[0].admin, Req::get("l", "/metrics"))
        .await
        .text();
    assert!(
        metrics.contains("keyway_source_stale_seconds{view=\"secrets.v1\"}"),
        "{metrics}"
    );
    api.faults().refuse_connections(false);
    let back = Instant::now();
    for a in &addrs {
        let t = until(Duration::from_secs(35), || async {
            status_with(*a, Some("k-alice")).await == 401
                && status_with(*a, Some("k-bob")).await == 401
                && status_with(*a, Some("k-alice-new")).await == 200
        })
        .await;
        assert!(t.is_some(), "did not converge within 35 s");
    }
    eprintln!(
        "converged {:?} after the API server returned",
        back.elapsed()
    );
    // Every watch reconnects within the capped backoff, and its view reads as current.
    let current = until(Duration::from_secs(35), || async {
        let status = replicas[0].admin_json("/status").await;
        status["source"]["state"]["watches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["staleSeconds"].as_f64().unwrap() < 1.0)
    })
    .await;
    assert!(
        current.is_some(),
        "{}",
        replicas[0].admin_json("/status").await["source"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_are_retried_without_losing_the_config() {
    let up = upstream().await;
    let api = fake_with(up).await;
    let replica = Replica::start(&api, "errors", &[]);
    let addr = replica.serving().await;
    api.faults().close_watches();
    for code in [429, 500, 503] {
        api.faults().fail_all(Some(code));
        api.faults().close_watches();
        let phase = Instant::now();
        while phase.elapsed() < Duration::from_secs(10) {
            assert_eq!(status_with(addr, Some("k-alice")).await, 200);
            assert_eq!(replica.readyz().await, 200);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    api.faults().fail_all(None);
    let failed = api.requests().iter().filter(|r| r.status >= 429).count();
    assert!(failed > 3, "the errors were not retried: {failed}");
    api.apply(secret("alice", &[("alice", "k-after")]));
    assert!(until(Duration::from_secs(35), || async {
        status_with(addr, Some("k-after")).await == 200
    })
    .await
    .is_some());
    assert!(replica.child_alive());
}

impl Replica {
    fn child_alive(&self) -> bool {
        // `try_wait` needs `&mut`; the process table says as much.
        std::path::Path::new(&format!("/proc/{}", self.child.id())).exists()
    }
}
