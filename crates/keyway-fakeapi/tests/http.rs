//! The fake API server over plain HTTP: each test checks one convention on the wire.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::{gateway, names, rv, secret, End, Http};
use http::Method;
use keyway_fakeapi::{Decision, FakeApiServer};
use serde_json::{json, Value};

const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways";

#[tokio::test]
async fn paging_reads_one_snapshot_and_sees_every_object_once() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let mut expected = BTreeSet::new();
    for ns in ["a", "b", "c"] {
        for i in 0..7 {
            server.apply(secret(ns, &format!("s{i}"), json!({})));
            expected.insert(format!("{ns}/s{i}"));
        }
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/secrets?limit=5".to_string();
    let mut first_rv = None;
    let mut pages = 0;
    loop {
        let page = http.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert_eq!(page.body["kind"], "SecretList");
        assert_eq!(page.body["apiVersion"], "v1");
        let list_rv = page.body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            *first_rv.get_or_insert(list_rv.clone()),
            list_rv,
            "every page reads the first page's snapshot"
        );
        for item in page.body["items"].as_array().unwrap() {
            assert!(
                item.get("kind").is_none(),
                "built-in list items carry no kind"
            );
            seen.push(format!(
                "{}/{}",
                item["metadata"]["namespace"].as_str().unwrap(),
                item["metadata"]["name"].as_str().unwrap()
            ));
        }
        pages += 1;
        // Writes between pages do not show up in the paged list.
        server.apply(secret("a", &format!("late{pages}"), json!({})));
        server.delete("v1", "Secret", Some("c"), "s6");
        match page.body["metadata"]["continue"].as_str() {
            Some(token) => {
                assert!(
                    page.body["metadata"]["remainingItemCount"]
                        .as_u64()
                        .unwrap()
                        > 0
                );
                path = format!("/api/v1/secrets?limit=5&continue={token}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 5);
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no object twice");
    assert_eq!(unique, expected);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "sorted by namespace, then name");
}

#[tokio::test]
async fn max_page_caps_what_the_client_asks_for() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    for i in 0..3 {
        server.apply(secret("default", &format!("s{i}"), json!({})));
    }
    server.faults().set_max_page(Some(1));
    let page = http.get(&format!("{SECRETS}?limit=500")).await;
    assert_eq!(names(&page.body), ["s0"]);
    assert_eq!(page.body["metadata"]["remainingItemCount"], 2);
    // Without a limit the cap still applies: a server may always return less.
    let page = http.get(SECRETS).await;
    assert_eq!(names(&page.body).len(), 1);
    assert!(page.body["metadata"]["continue"].is_string());
    // resourceVersion=0 is served from the "cache": no paging at all.
    let page = http
        .get(&format!("{SECRETS}?resourceVersion=0&limit=1"))
        .await;
    assert_eq!(names(&page.body).len(), 3);
    assert!(page.body["metadata"].get("continue").is_none());
}

#[tokio::test]
async fn compacted_or_garbled_continue_tokens_are_refused() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    for i in 0..3 {
        server.apply(secret("default", &format!("s{i}"), json!({})));
    }
    let page = http.get(&format!("{SECRETS}?limit=1")).await;
    let token = page.body["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    server.apply(secret("default", "after", json!({})));
    server.faults().compact();
    let expired = http
        .get(&format!("{SECRETS}?limit=1&continue={token}"))
        .await;
    assert_eq!(expired.status, 410);
    assert_eq!(expired.body["kind"], "Status");
    assert_eq!(expired.body["reason"], "Expired");
    assert_eq!(expired.body["code"], 410);
    assert!(
        expired.body["metadata"]["continue"].is_string(),
        "an inconsistent continuation is offered"
    );
    let garbled = http
        .get(&format!("{SECRETS}?limit=1&continue=nonsense"))
        .await;
    assert_eq!(garbled.status, 400);
    assert_eq!(garbled.body["reason"], "BadRequest");
}

#[tokio::test]
async fn exact_reads_show_the_past() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    server.apply(secret("default", "a", json!({})));
    let then = server.resource_version();
    server.apply(secret("default", "b", json!({})));
    server.delete("v1", "Secret", None, "a");
    let past = http
        .get(&format!(
            "{SECRETS}?resourceVersion={then}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(names(&past.body), ["a"]);
    assert_eq!(past.body["metadata"]["resourceVersion"], then.to_string());
    let now = http
        .get(&format!(
            "{SECRETS}?resourceVersion={then}&resourceVersionMatch=NotOlderThan"
        ))
        .await;
    assert_eq!(names(&now.body), ["b"]);
    server.faults().compact();
    let gone = http
        .get(&format!(
            "{SECRETS}?resourceVersion={then}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(gone.status, 410);
}

#[tokio::test]
async fn label_and_field_selectors() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    server.apply(secret(
        "default",
        "web",
        json!({"app": "web", "tier": "front"}),
    ));
    server.apply(secret("default", "db", json!({"app": "db"})));
    server.apply(secret("default", "bare", json!({})));
    server.apply(secret("other", "web", json!({"app": "web"})));
    let cases = [
        ("labelSelector=app%3Dweb", vec!["web"]),
        ("labelSelector=app%3D%3Dweb", vec!["web"]),
        ("labelSelector=app!%3Dweb", vec!["bare", "db"]),
        ("labelSelector=app%20in%20(web,db)", vec!["db", "web"]),
        ("labelSelector=app%20notin%20(web)", vec!["bare", "db"]),
        ("labelSelector=app", vec!["db", "web"]),
        ("labelSelector=!app", vec!["bare"]),
        ("labelSelector=app%3Dweb,tier%3Dfront", vec!["web"]),
        ("fieldSelector=metadata.name%3Ddb", vec!["db"]),
        ("fieldSelector=metadata.name!%3Ddb", vec!["bare", "web"]),
        (
            "fieldSelector=metadata.namespace%3D%3Ddefault,metadata.name%3Dweb",
            vec!["web"],
        ),
        (
            "fieldSelector=type%3DOpaque&labelSelector=app%3Ddb",
            vec!["db"],
        ),
    ];
    for (query, want) in cases {
        assert_eq!(
            http.names(&format!("{SECRETS}?{query}")).await,
            want,
            "{query}"
        );
    }
    let all = http
        .get("/api/v1/secrets?fieldSelector=metadata.namespace%3Dother")
        .await;
    assert_eq!(names(&all.body), ["web"]);
    let unsupported = http
        .get(&format!("{SECRETS}?fieldSelector=spec.foo%3Dbar"))
        .await;
    assert_eq!(unsupported.status, 400);
    assert_eq!(
        unsupported.body["message"],
        "field label not supported: spec.foo"
    );
    let unparsable = http
        .get(&format!("{SECRETS}?labelSelector=app%20in%20web"))
        .await;
    assert_eq!(unparsable.status, 400);
}

#[tokio::test]
async fn watch_from_a_resource_version_replays_history() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let a = server.apply(secret("default", "a", json!({})));
    let from = rv(&a);
    let mut changed = a.clone();
    changed["stringData"] = json!({"key": "changed"});
    let modified = server.apply(changed);
    server.apply(secret("default", "b", json!({})));
    server.apply(secret("other", "c", json!({})));
    server.delete("v1", "Secret", Some("default"), "a");
    let deleted_at = server.resource_version();

    let mut watch = http
        .watch(&format!("{SECRETS}?watch=true&resourceVersion={from}"))
        .await;
    assert_eq!(watch.status, 200);
    let e = watch.next().await;
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("MODIFIED"), Some("a"))
    );
    assert_eq!(
        e["object"]["kind"], "Secret",
        "watch events carry kind and apiVersion"
    );
    assert_eq!(rv(&e["object"]), rv(&modified));
    let e = watch.next().await;
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("b"))
    );
    let e = watch.next().await;
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("DELETED"), Some("a"))
    );
    assert_eq!(
        rv(&e["object"]),
        deleted_at,
        "a deletion carries its own resourceVersion"
    );
    // Then live events.
    server.apply(secret("default", "d", json!({})));
    let e = watch.next().await;
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("d"))
    );
}

#[tokio::test]
async fn watch_without_a_resource_version_starts_with_the_current_state() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    server.apply(secret("default", "a", json!({})));
    server.apply(secret("default", "b", json!({})));
    for query in ["watch=1", "watch=true&resourceVersion=0"] {
        let mut watch = http.watch(&format!("{SECRETS}?{query}")).await;
        let first = watch.next().await;
        let second = watch.next().await;
        assert_eq!([&first["type"], &second["type"]], ["ADDED", "ADDED"]);
        assert_eq!(
            [
                &first["object"]["metadata"]["name"],
                &second["object"]["metadata"]["name"]
            ],
            ["a", "b"]
        );
    }
}

#[tokio::test]
async fn streaming_list_ends_initial_events_with_an_annotated_bookmark() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    server.apply(secret("default", "a", json!({})));
    let mut watch = http
        .watch(&format!("{SECRETS}?watch=true&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=0"))
        .await;
    assert_eq!(watch.next().await["type"], "ADDED");
    let bookmark = watch.next().await;
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(rv(&bookmark["object"]), server.resource_version());
    let refused = http
        .get(&format!(
            "{SECRETS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        ))
        .await;
    assert_eq!(refused.status, 422, "sendInitialEvents needs bookmarks");
}

#[tokio::test]
async fn compaction_makes_old_resource_versions_expire_in_stream() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let a = server.apply(secret("default", "a", json!({})));
    server.apply(secret("default", "b", json!({})));
    let mut live = http
        .watch(&format!(
            "{SECRETS}?watch=true&resourceVersion={}",
            server.resource_version()
        ))
        .await;
    server.faults().compact();
    let compacted_at = server.resource_version();

    let mut watch = http
        .watch(&format!("{SECRETS}?watch=true&resourceVersion={}", rv(&a)))
        .await;
    assert_eq!(watch.status, 200, "the expiry is reported in the stream");
    let error = watch.next().await;
    assert_eq!(
        error,
        json!({"type": "ERROR", "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {} ({compacted_at})", rv(&a)),
            "reason": "Expired", "code": 410,
        }})
    );
    assert_eq!(
        watch.next_within(Duration::from_secs(5)).await,
        Err(End::Clean)
    );

    // An open stream is not affected, and resuming from the present works.
    server.apply(secret("default", "c", json!({})));
    assert_eq!(live.next_change().await["object"]["metadata"]["name"], "c");
    let mut resumed = http
        .watch(&format!(
            "{SECRETS}?watch=true&resourceVersion={compacted_at}"
        ))
        .await;
    assert_eq!(
        resumed.next_change().await["object"]["metadata"]["name"],
        "c"
    );
}

#[tokio::test]
async fn bounded_history_expires_old_resource_versions() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    server.faults().set_history_limit(2);
    let start = server.resource_version();
    for i in 0..4 {
        server.apply(secret("default", &format!("s{i}"), json!({})));
    }
    let mut watch = http
        .watch(&format!("{SECRETS}?watch=true&resourceVersion={start}"))
        .await;
    assert_eq!(watch.next().await["object"]["code"], 410);
    let recent = server.resource_version() - 2;
    let mut watch = http
        .watch(&format!("{SECRETS}?watch=true&resourceVersion={recent}"))
        .await;
    assert_eq!(watch.next().await["object"]["metadata"]["name"], "s2");
}

#[tokio::test]
async fn bookmarks_arrive_and_timeout_seconds_ends_the_stream() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    server
        .faults()
        .set_bookmark_interval(Duration::from_millis(100));
    server.apply(secret("default", "a", json!({})));
    let now = server.resource_version();
    let started = std::time::Instant::now();
    let mut watch = http
        .watch(&format!(
            "{SECRETS}?watch=true&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion={now}"
        ))
        .await;
    let bookmark = watch.next().await;
    assert_eq!(
        bookmark,
        json!({"type": "BOOKMARK", "object": {
            "kind": "Secret", "apiVersion": "v1", "metadata": {"resourceVersion": now.to_string()}
        }})
    );
    let mut last = bookmark;
    loop {
        match watch.next_within(Duration::from_secs(3)).await {
            Ok(event) => last = event,
            Err(end) => {
                assert_eq!(end, End::Clean);
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(last["type"], "BOOKMARK", "the stream ends with a bookmark");

    // Without allowWatchBookmarks, no bookmarks.
    let mut quiet = http
        .watch(&format!(
            "{SECRETS}?watch=true&timeoutSeconds=1&resourceVersion={now}"
        ))
        .await;
    assert_eq!(
        quiet.next_within(Duration::from_secs(3)).await,
        Err(End::Clean)
    );
}

#[tokio::test]
async fn selector_watches_see_objects_leave_and_enter() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let mut watch = http
        .watch(&format!(
            "{SECRETS}?watch=true&labelSelector=app%3Dweb&resourceVersion={}",
            server.resource_version()
        ))
        .await;
    server.apply(secret("default", "x", json!({"app": "db"})));
    server.apply(secret("default", "x", json!({"app": "web"})));
    let e = watch.next().await;
    assert_eq!(
        (
            e["type"].as_str(),
            e["object"]["metadata"]["labels"]["app"].as_str()
        ),
        (Some("ADDED"), Some("web"))
    );
    server.apply(secret("default", "x", json!({"app": "web", "more": "x"})));
    assert_eq!(watch.next().await["type"], "MODIFIED");
    server.apply(secret("default", "x", json!({"app": "db"})));
    let e = watch.next().await;
    assert_eq!(e["type"], "DELETED");
    assert_eq!(
        e["object"]["metadata"]["labels"]["app"], "web",
        "the last matching state"
    );
    assert_eq!(rv(&e["object"]), server.resource_version());
    server.delete("v1", "Secret", None, "x");
    assert!(watch.quiet_for(Duration::from_millis(200)).await);
}

#[tokio::test]
async fn stalled_and_closed_watches() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let faults = server.faults();
    let mut secrets = http
        .watch(&format!(
            "{SECRETS}?watch=true&allowWatchBookmarks=true&resourceVersion={}",
            server.resource_version()
        ))
        .await;
    let mut gateways = http
        .watch(&format!(
            "{GATEWAYS}?watch=true&resourceVersion={}",
            server.resource_version()
        ))
        .await;
    faults.set_bookmark_interval(Duration::from_millis(50));
    faults.stall_watches("secrets", true);
    server.apply(secret("default", "a", json!({})));
    server.apply(gateway("default", "g", "kw"));
    assert_eq!(
        gateways.next().await["type"],
        "ADDED",
        "other kinds keep flowing"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), secrets.next())
            .await
            .is_err(),
        "nothing at all while stalled"
    );
    faults.stall_watches("Secret", false);
    assert_eq!(
        secrets.next_change().await["object"]["metadata"]["name"],
        "a"
    );

    faults.close_watches();
    let mut last = Value::Null;
    while let Ok(event) = secrets.next_within(Duration::from_secs(5)).await {
        last = event;
    }
    assert_eq!(last["type"], "BOOKMARK");
    assert_eq!(
        gateways.next_within(Duration::from_secs(5)).await,
        Err(End::Clean)
    );
}

#[tokio::test]
async fn put_with_a_stale_resource_version_conflicts() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let created = http.post(GATEWAYS, &gateway("default", "g", "kw")).await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["metadata"]["generation"], 1);
    assert!(created.body["metadata"]["uid"].is_string());
    assert!(created.body["metadata"]["creationTimestamp"].is_string());
    let again = http.post(GATEWAYS, &gateway("default", "g", "kw")).await;
    assert_eq!(
        (again.status, again.body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    let mut v1 = created.body.clone();
    v1["spec"]["gatewayClassName"] = "other".into();
    let updated = http.put(&format!("{GATEWAYS}/g"), &v1).await;
    assert_eq!(updated.status, 200);
    assert_eq!(updated.body["metadata"]["generation"], 2);
    let stale = http.put(&format!("{GATEWAYS}/g"), &v1).await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.body["reason"], "Conflict");
    assert_eq!(
        stale.body["message"],
        "Operation cannot be fulfilled on gateways.gateway.networking.k8s.io \"g\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let mut unconditional = updated.body.clone();
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let refused = http.put(&format!("{GATEWAYS}/g"), &unconditional).await;
    assert_eq!(
        refused.status, 422,
        "custom resources need a resourceVersion on update"
    );
    let missing = http
        .put(
            &format!("{GATEWAYS}/nope"),
            &gateway("default", "nope", "kw"),
        )
        .await;
    assert_eq!(
        (missing.status, missing.body["reason"].as_str()),
        (404, Some("NotFound"))
    );

    // Built-ins allow unconditional updates.
    let s = http.post(SECRETS, &secret("default", "s", json!({}))).await;
    let mut s = s.body;
    s["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    s["data"] = json!({"key": "YQ=="});
    assert_eq!(http.put(&format!("{SECRETS}/s"), &s).await.status, 200);
}

#[tokio::test]
async fn merge_patch_and_status_patch_move_generation_only_on_spec_changes() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let created = http
        .post(GATEWAYS, &gateway("default", "g", "kw"))
        .await
        .body;
    let path = format!("{GATEWAYS}/g");
    let merge = "application/merge-patch+json";

    let labelled = http
        .patch(&path, merge, &json!({"metadata": {"labels": {"a": "b"}}}))
        .await
        .body;
    assert_eq!(
        labelled["metadata"]["generation"], 1,
        "metadata changes keep the generation"
    );
    assert!(rv(&labelled) > rv(&created));

    let status = http.patch(&format!("{path}/status"), merge, &json!({"status": {"conditions": [{"type": "Accepted", "status": "True"}]}, "spec": {"gatewayClassName": "ignored"}})).await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(status.body["metadata"]["generation"], 1);
    assert_eq!(
        status.body["spec"]["gatewayClassName"], "kw",
        "/status changes only status"
    );
    assert_eq!(status.body["status"]["conditions"][0]["type"], "Accepted");

    let spec = http
        .patch(
            &path,
            merge,
            &json!({"spec": {"gatewayClassName": "new"}, "status": null}),
        )
        .await
        .body;
    assert_eq!(spec["metadata"]["generation"], 2);
    assert_eq!(
        spec["status"]["conditions"][0]["type"], "Accepted",
        "the main resource ignores status"
    );

    let same = http
        .patch(&path, merge, &json!({"spec": {"gatewayClassName": "new"}}))
        .await
        .body;
    assert_eq!(rv(&same), rv(&spec), "a no-op patch writes nothing");

    let stale = http.patch(&path, merge, &json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"gatewayClassName": "x"}})).await;
    assert_eq!(
        stale.status, 409,
        "a resourceVersion in a patch is a precondition"
    );

    let json_patch = http
        .patch(
            &path,
            "application/json-patch+json",
            &json!([{"op": "replace", "path": "/spec/gatewayClassName", "value": "jp"}]),
        )
        .await;
    assert_eq!(json_patch.body["spec"]["gatewayClassName"], "jp");
    assert_eq!(json_patch.body["metadata"]["generation"], 3);
    let failed_test = http
        .patch(
            &path,
            "application/json-patch+json",
            &json!([{"op": "test", "path": "/spec/gatewayClassName", "value": "no"}]),
        )
        .await;
    assert_eq!(failed_test.status, 422);

    let strategic = http
        .patch(
            &path,
            "application/strategic-merge-patch+json",
            &json!({"spec": {}}),
        )
        .await;
    assert_eq!(
        strategic.status, 415,
        "custom resources have no strategic merge patch"
    );
    http.post(SECRETS, &secret("default", "s", json!({}))).await;
    let strategic = http
        .patch(
            &format!("{SECRETS}/s"),
            "application/strategic-merge-patch+json",
            &json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await;
    assert_eq!(strategic.status, 200);
    assert_eq!(strategic.body["metadata"]["labels"]["x"], "y");
}

#[tokio::test]
async fn server_side_apply_creates_then_merges() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let path = "/apis/gateway.kgateway.dev/v1alpha1/namespaces/default/trafficpolicies/tp";
    let apply = "application/apply-patch+yaml";
    let body = json!({"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": "TrafficPolicy", "metadata": {"name": "tp"}, "spec": {"a": 1}});
    let missing_manager = http.patch(path, apply, &body).await;
    assert_eq!(missing_manager.status, 400);
    let created = http
        .patch(
            &format!("{path}?fieldManager=test&force=true"),
            apply,
            &body,
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["metadata"]["namespace"], "default");
    assert_eq!(created.body["metadata"]["generation"], 1);

    let yaml = "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata:\n  name: tp\nspec:\n  b: 2\n";
    let merged = http
        .send(
            Method::PATCH,
            &format!("{path}?fieldManager=test"),
            &[("content-type", apply)],
            yaml.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(merged.status, 200, "{}", merged.body);
    assert_eq!(merged.body["spec"], json!({"a": 1, "b": 2}));
    assert_eq!(merged.body["metadata"]["generation"], 2);

    let status = http.patch(&format!("{path}/status?fieldManager=test"), apply, &json!({"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": "TrafficPolicy", "metadata": {"name": "tp"}, "status": {"ok": true}})).await;
    assert_eq!(status.body["status"], json!({"ok": true}));
    assert_eq!(status.body["metadata"]["generation"], 2);

    let precondition = http.patch(&format!("{path}?fieldManager=test"), apply, &json!({"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": "TrafficPolicy", "metadata": {"name": "tp", "resourceVersion": "1"}})).await;
    assert_eq!(precondition.status, 409);
}

#[tokio::test]
async fn racing_lease_updates_let_exactly_one_through() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let leases = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
    let lease = http
        .post(
            leases,
            &json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "keyway-leader"},
                "spec": {"holderIdentity": "nobody", "leaseDurationSeconds": 15}
            }),
        )
        .await
        .body;
    let claim = |holder: &str| {
        let mut l = lease.clone();
        l["spec"]["holderIdentity"] = holder.into();
        l
    };
    let (a, b) = (claim("a"), claim("b"));
    let path = format!("{leases}/keyway-leader");
    let (ra, rb) = tokio::join!(http.put(&path, &a), http.put(&path, &b));
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    let winner = if ra.status == 200 { "a" } else { "b" };
    let stored = server
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("default"),
            "keyway-leader",
        )
        .unwrap();
    assert_eq!(stored["spec"]["holderIdentity"], winner);
}

#[tokio::test]
async fn deletes_follow_preconditions_and_finalizers() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let s = http
        .post(SECRETS, &secret("default", "s", json!({})))
        .await
        .body;
    let stale = http.delete(&format!("{SECRETS}/s"), Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": "1"}}))).await;
    assert_eq!(
        (stale.status, stale.body["reason"].as_str()),
        (409, Some("Conflict"))
    );
    let dry = http.delete(&format!("{SECRETS}/s?dryRun=All"), None).await;
    assert_eq!(dry.status, 200);
    assert!(server.get("v1", "Secret", None, "s").is_some());
    let deleted = http.delete(&format!("{SECRETS}/s"), Some(&json!({"preconditions": {"resourceVersion": s["metadata"]["resourceVersion"], "uid": s["metadata"]["uid"]}}))).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.body["kind"], "Status",
        "built-ins answer a DELETE with a Status"
    );
    assert_eq!(deleted.body["status"], "Success");
    assert_eq!(http.delete(&format!("{SECRETS}/s"), None).await.status, 404);

    let mut g = gateway("default", "g", "kw");
    g["metadata"]["finalizers"] = json!(["keyway.dev/test"]);
    http.post(GATEWAYS, &g).await;
    let mut watch = http
        .watch(&format!(
            "{GATEWAYS}?watch=true&resourceVersion={}",
            server.resource_version()
        ))
        .await;
    let pending = http.delete(&format!("{GATEWAYS}/g"), None).await;
    assert_eq!(pending.status, 200);
    assert_eq!(
        pending.body["kind"], "Gateway",
        "custom resources answer with the object"
    );
    assert!(pending.body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(watch.next().await["type"], "MODIFIED");
    let gone = http
        .patch(
            &format!("{GATEWAYS}/g"),
            "application/merge-patch+json",
            &json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(gone.status, 200);
    assert_eq!(watch.next().await["type"], "DELETED");
    assert!(server
        .get("gateway.networking.k8s.io/v1", "Gateway", None, "g")
        .is_none());
}

#[tokio::test]
async fn refused_connections_then_the_same_port_again() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    server.apply(secret("default", "a", json!({})));
    let mut watch = http
        .watch(&format!(
            "{SECRETS}?watch=true&resourceVersion={}",
            server.resource_version()
        ))
        .await;
    server.faults().refuse_connections(true);
    let refused = tokio::net::TcpStream::connect(server.addr())
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(
        watch.next_within(Duration::from_secs(5)).await.is_err(),
        "open streams are cut"
    );

    server.faults().refuse_connections(false);
    let fresh = Http::new(&server);
    assert_eq!(
        fresh.names(SECRETS).await,
        ["a"],
        "served again on the same port, state intact"
    );
}

#[tokio::test]
async fn fail_all_answers_with_status_objects() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let faults = server.faults();
    faults.fail_all(Some(503));
    let failed = http.get(SECRETS).await;
    assert_eq!(
        (
            failed.status,
            failed.body["reason"].as_str(),
            failed.body["code"].as_u64()
        ),
        (503, Some("ServiceUnavailable"), Some(503))
    );
    faults.fail_all(Some(429));
    let limited = http.get(&format!("{SECRETS}?watch=true")).await;
    assert_eq!(
        (limited.status, limited.body["reason"].as_str()),
        (429, Some("TooManyRequests"))
    );
    assert_eq!(limited.headers["retry-after"], "1");
    faults.fail_all(Some(500));
    assert_eq!(http.get("/version").await.body["reason"], "InternalError");
    faults.fail_all(None);
    assert_eq!(http.get(SECRETS).await.status, 200);
    let log = server.requests();
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 429, 500, 200]
    );
    assert!(log[1].is_watch);
    assert_eq!(log[0].token.as_deref(), Some("test-token"));
}

#[tokio::test]
async fn held_lists_wait_for_release_and_watches_do_not() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let faults = server.faults();
    faults.hold_list("Secret", true);
    let list = http.get(SECRETS);
    tokio::pin!(list);
    assert!(tokio::time::timeout(Duration::from_millis(200), &mut list)
        .await
        .is_err());
    assert_eq!(faults.held_lists("secrets"), 1);
    let mut watch = http.watch(&format!("{SECRETS}?watch=true")).await;
    server.apply(secret("default", "during", json!({})));
    assert_eq!(watch.next().await["type"], "ADDED");
    assert_eq!(
        http.names(GATEWAYS).await,
        Vec::<String>::new(),
        "other kinds list normally"
    );
    faults.hold_list("Secret", false);
    let answer = list.await;
    assert_eq!(
        names(&answer.body),
        ["during"],
        "a held list reads the state at release"
    );
    assert_eq!(faults.held_lists("secrets"), 0);
}

#[tokio::test]
async fn multi_version_resources_and_unserved_versions() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    let grant = json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
        "metadata": {"name": "rg", "namespace": "default"},
        "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "x"}], "to": [{"group": "", "kind": "Service"}]}
    });
    assert_eq!(
        server.apply(grant)["apiVersion"],
        "gateway.networking.k8s.io/v1beta1"
    );
    let v1 = http
        .get("/apis/gateway.networking.k8s.io/v1/namespaces/default/referencegrants")
        .await;
    assert_eq!(v1.body["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(
        v1.body["items"][0]["apiVersion"], "gateway.networking.k8s.io/v1",
        "custom resource items carry their apiVersion"
    );
    let one = http
        .get("/apis/gateway.networking.k8s.io/v1beta1/namespaces/default/referencegrants/rg")
        .await;
    assert_eq!(one.body["apiVersion"], "gateway.networking.k8s.io/v1beta1");

    server
        .faults()
        .serve_version("gateway.networking.k8s.io", "v1", false);
    let gone = http
        .get("/apis/gateway.networking.k8s.io/v1/namespaces/default/referencegrants")
        .await;
    assert_eq!(gone.status, 404);
    assert_eq!(gone.body["kind"], "Status");
    assert_eq!(
        http.get("/apis/gateway.networking.k8s.io/v1beta1/namespaces/default/referencegrants")
            .await
            .status,
        200
    );
    let group = http.get("/apis/gateway.networking.k8s.io").await.body;
    assert_eq!(group["preferredVersion"]["version"], "v1beta1");
    assert_eq!(
        http.get("/apis/gateway.networking.k8s.io/v1").await.status,
        404
    );
    server
        .faults()
        .serve_version("gateway.networking.k8s.io", "v1", true);
    assert_eq!(
        http.get("/apis/gateway.networking.k8s.io").await.body["preferredVersion"]["version"],
        "v1"
    );
}

#[tokio::test]
async fn unknown_paths_and_methods() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    for path in [
        "/api/v1/pods",
        "/apis/example.com/v1/things",
        "/api/v1/secrets/x",
        "/nope",
    ] {
        let answer = http.get(path).await;
        assert_eq!(
            (
                answer.status,
                answer.body["kind"].as_str(),
                answer.body["reason"].as_str()
            ),
            (404, Some("Status"), Some("NotFound")),
            "{path}"
        );
    }
    assert_eq!(
        http.get(&format!("{SECRETS}/missing")).await.body["message"],
        "secrets \"missing\" not found"
    );
    assert_eq!(
        http.post("/api/v1/secrets", &secret("default", "x", json!({})))
            .await
            .status,
        405
    );
    let invalid = http
        .post(SECRETS, &secret("default", "Not_Valid", json!({})))
        .await;
    assert_eq!(
        (invalid.status, invalid.body["reason"].as_str()),
        (422, Some("Invalid"))
    );
    let wrong_ns = http.post(SECRETS, &secret("other", "x", json!({}))).await;
    assert_eq!(wrong_ns.status, 400);
    let generated = http
        .post(SECRETS, &json!({"metadata": {"generateName": "gen-"}}))
        .await;
    assert_eq!(generated.status, 201);
    assert!(generated.body["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with("gen-"));
    assert_eq!(http.get("/healthz").await.body, "ok");
    assert_eq!(http.get("/version").await.body["major"], "1");
    let core = http.get("/api/v1").await.body;
    assert!(core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "services/status"));
}

#[tokio::test]
async fn metadata_only_representation() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    server.apply(secret("default", "a", json!({"x": "y"})));
    let list = http
        .send(
            Method::GET,
            SECRETS,
            &[(
                "accept",
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            )],
            Vec::new(),
        )
        .await
        .body;
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(list["items"][0]["metadata"]["labels"]["x"], "y");
    assert!(list["items"][0].get("data").is_none());
    let table = http
        .send(
            Method::GET,
            SECRETS,
            &[("accept", "application/json;as=Table;g=meta.k8s.io;v=v1")],
            Vec::new(),
        )
        .await;
    assert_eq!(table.status, 406);
}

#[tokio::test]
async fn the_authorizer_hook_sees_rbac_attributes() {
    let server = FakeApiServer::start().await;
    let http = Http::new(&server);
    server.set_authorizer(Some(std::sync::Arc::new(
        |a: &keyway_fakeapi::RequestAttributes| match &a.resource {
            Some(r) if r.resource == "secrets" && a.verb == "list" => Decision::Deny(String::new()),
            _ => Decision::Allow,
        },
    )));
    let denied = http.get(SECRETS).await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.body["message"],
        "secrets is forbidden: User \"test-token\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(http.get(GATEWAYS).await.status, 200);
}
