//! kube-rs 4.2, a client we did not write, against the fake server: what Keyway's
//! Kubernetes mode will do, end to end through a kubeconfig.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service};
use keyway_fakeapi::FakeApiServer;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, Config, ResourceExt};
use serde_json::json;

fn scratch_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "keyway-fakeapi-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A client configured the way Keyway will be: from a kubeconfig file.
async fn client(server: &FakeApiServer, token: &str) -> Client {
    let path = server.write_kubeconfig(&scratch_dir(), token);
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    Client::try_from(config).unwrap()
}

fn secret(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"}, "stringData": {"k": name}})
}

/// The next watcher event that is not an error (errors are retried by the watcher).
async fn next<K, S>(stream: &mut S) -> Event<K>
where
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    loop {
        let item = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a watcher event within 20 s")
            .expect("the watcher stream does not end");
        match item {
            Ok(event) => return event,
            // The watcher recovers by itself on the next poll.
            Err(e) => eprintln!("watcher error: {e}"),
        }
    }
}

fn describe<K: ResourceExt>(event: &Event<K>) -> String {
    match event {
        Event::Init => "Init".into(),
        Event::InitApply(o) => format!("InitApply {}", o.name_any()),
        Event::InitDone => "InitDone".into(),
        Event::Apply(o) => format!("Apply {}", o.name_any()),
        Event::Delete(o) => format!("Delete {}", o.name_any()),
    }
}

#[tokio::test]
async fn kube_watcher_sees_applies_and_deletes_and_its_token_is_recorded() {
    let server = FakeApiServer::start().await;
    server.apply(secret("a"));
    let api: Api<Secret> = Api::default_namespaced(client(&server, "token-a").await);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next(&mut events).await));
    }
    assert_eq!(seen, ["Init", "InitApply a", "InitDone"]);

    server.apply(secret("b"));
    assert_eq!(describe(&next(&mut events).await), "Apply b");
    server.delete("v1", "Secret", Some("default"), "b");
    assert_eq!(describe(&next(&mut events).await), "Delete b");

    let log = server.requests();
    let list = log.iter().find(|r| !r.is_watch).expect("a LIST");
    let watch = log.iter().find(|r| r.is_watch).expect("a WATCH");
    eprintln!("kube LIST  {} ?{}", list.path, list.query);
    eprintln!("kube WATCH {} ?{}", watch.path, watch.query);
    assert!(log.iter().all(|r| r.token.as_deref() == Some("token-a")));
    assert_eq!(list.path, "/api/v1/namespaces/default/secrets");
    assert_eq!(list.query, "&limit=500");
    assert_eq!(
        watch.query_param("allowWatchBookmarks").as_deref(),
        Some("true")
    );
    assert_eq!(watch.query_param("timeoutSeconds").as_deref(), Some("290"));
    let list_rv: u64 = watch
        .query_param("resourceVersion")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        list_rv > 0,
        "the watch resumes from the list's resourceVersion"
    );
}

#[tokio::test]
async fn kube_watcher_pages_through_a_capped_list() {
    let server = FakeApiServer::start().await;
    for i in 0..5 {
        server.apply(secret(&format!("s{i}")));
    }
    server.faults().set_max_page(Some(2));
    let api: Api<Secret> = Api::all(client(&server, "t").await);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    loop {
        let event = describe(&next(&mut events).await);
        let done = event == "InitDone";
        seen.push(event);
        if done {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            "Init",
            "InitApply s0",
            "InitApply s1",
            "InitApply s2",
            "InitApply s3",
            "InitApply s4",
            "InitDone"
        ]
    );
    let lists: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| !r.is_watch)
        .collect();
    assert_eq!(lists.len(), 3);
    assert!(lists[1].query_param("continue").is_some());
    assert!(
        lists[1].query_param("resourceVersion").is_none(),
        "kube drops resourceVersion when continuing"
    );
}

#[tokio::test]
async fn kube_watcher_relists_after_compaction() {
    let server = FakeApiServer::start().await;
    server.apply(secret("a"));
    let api: Api<Secret> = Api::default_namespaced(client(&server, "t").await);
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    for _ in 0..3 {
        next(&mut events).await;
    }
    // Once this arrives the watch is established.
    server.apply(secret("b"));
    assert_eq!(describe(&next(&mut events).await), "Apply b");
    let faults = server.faults();
    // The server goes away; meanwhile something changes and history is compacted.
    faults.refuse_connections(true);
    server.apply(secret("c"));
    server.apply(secret("d"));
    faults.compact();
    faults.refuse_connections(false);
    let mut seen = Vec::new();
    loop {
        let event = describe(&next(&mut events).await);
        let done = event == "InitDone";
        seen.push(event);
        if done {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            "Init",
            "InitApply a",
            "InitApply b",
            "InitApply c",
            "InitApply d",
            "InitDone"
        ]
    );
    let watches = server.requests().into_iter().filter(|r| r.is_watch).count();
    assert!(
        watches >= 2,
        "the watcher re-watched, got 410, and relisted"
    );
}

#[tokio::test]
async fn kube_streaming_list_and_metadata_watchers() {
    let server = FakeApiServer::start().await;
    server.apply(secret("a"));
    let client = client(&server, "t").await;
    let api: Api<Secret> = Api::default_namespaced(client.clone());
    let mut streaming = watcher(api, watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(describe(&next(&mut streaming).await));
    }
    // kube-rs 4.2 emits no `Init` before a streaming list's initial events.
    assert_eq!(seen, ["InitApply a", "InitDone"]);
    let initial = server.requests().into_iter().find(|r| r.is_watch).unwrap();
    eprintln!("kube streaming-list WATCH ?{}", initial.query);
    assert_eq!(
        initial.query_param("sendInitialEvents").as_deref(),
        Some("true")
    );

    let metadata_api: Api<PartialObjectMeta<Secret>> = Api::default_namespaced(client);
    let mut metadata = watcher(metadata_api, watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next(&mut metadata).await));
    }
    assert_eq!(seen, ["Init", "InitApply a", "InitDone"]);
    server.apply(secret("b"));
    assert_eq!(describe(&next(&mut streaming).await), "Apply b");
    assert_eq!(describe(&next(&mut metadata).await), "Apply b");
}

#[tokio::test]
async fn kube_typed_writes() {
    let server = FakeApiServer::start().await;
    let client = client(&server, "t").await;

    // Leases: optimistic concurrency decides between racing candidates.
    let leases: Api<Lease> = Api::default_namespaced(client.clone());
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"}, "spec": {"holderIdentity": "none"}
    }))
    .unwrap();
    let lease = leases.create(&PostParams::default(), &lease).await.unwrap();
    let claim = |who: &str| {
        let mut l = lease.clone();
        l.spec.as_mut().unwrap().holder_identity = Some(who.into());
        l
    };
    let (a, b) = (claim("a"), claim("b"));
    let pp = PostParams::default();
    let (ra, rb) = tokio::join!(
        leases.replace("leader", &pp, &a),
        leases.replace("leader", &pp, &b)
    );
    let conflict = match (ra, rb) {
        (Ok(_), Err(kube::Error::Api(s))) | (Err(kube::Error::Api(s)), Ok(_)) => s,
        other => panic!("expected one winner: {other:?}"),
    };
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

    // Server-side apply creates; status patches leave the generation alone.
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let applied = services
        .patch(
            "web",
            &PatchParams::apply("keyway").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"ports": [{"port": 80}]}
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.metadata.generation, Some(1));
    let status = services
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
            })),
        )
        .await
        .unwrap();
    assert_eq!(status.metadata.generation, Some(1));
    assert_eq!(
        status
            .status
            .unwrap()
            .load_balancer
            .unwrap()
            .ingress
            .unwrap()[0]
            .ip
            .as_deref(),
        Some("192.0.2.1")
    );
    let spec = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ports": [{"port": 8080}]}})),
        )
        .await
        .unwrap();
    assert_eq!(spec.metadata.generation, Some(2));

    // A Secret written with stringData reads back as data; deleting answers a Status.
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let created = secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(secret("s")).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(created.data.unwrap()["k"].0, b"s");
    let deleted = secrets.delete("s", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right(), "built-ins answer DELETE with a Status");
    let missing = secrets.get("s").await.unwrap_err();
    assert!(matches!(missing, kube::Error::Api(s) if s.code == 404));
    assert!(secrets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn kube_retries_503_but_not_500() {
    let server = FakeApiServer::start().await;
    server.apply(secret("a"));
    let api: Api<Secret> = Api::default_namespaced(client(&server, "t").await);
    let faults = server.faults();
    faults.fail_all(Some(500));
    let failed = api.get("a").await.unwrap_err();
    assert!(matches!(failed, kube::Error::Api(s) if s.code == 500 && s.reason == "InternalError"));

    faults.fail_all(Some(503));
    let get = tokio::spawn(async move { api.get("a").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    faults.fail_all(None);
    let secret = get
        .await
        .unwrap()
        .expect("kube's default client retries 503s");
    assert_eq!(secret.name_any(), "a");
    let retried = server.requests().iter().filter(|r| r.status == 503).count();
    assert!(retried >= 2, "retried {retried} times");
}

#[tokio::test]
async fn several_clients_with_their_own_tokens() {
    let server = FakeApiServer::start().await;
    let mut streams = Vec::new();
    for token in ["keyway-1", "keyway-2", "keyway-3"] {
        let api: Api<Secret> = Api::all(client(&server, token).await);
        let mut events = watcher(api, watcher::Config::default()).boxed();
        assert_eq!(describe(&next(&mut events).await), "Init");
        assert_eq!(describe(&next(&mut events).await), "InitDone");
        streams.push(events);
    }
    server.apply(secret("shared"));
    for events in &mut streams {
        assert_eq!(describe(&next(events).await), "Apply shared");
    }
    let tokens: std::collections::BTreeSet<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.is_watch)
        .filter_map(|r| r.token)
        .collect();
    assert_eq!(
        tokens.into_iter().collect::<Vec<_>>(),
        ["keyway-1", "keyway-2", "keyway-3"]
    );
}
