//! Key entries beyond kgateway (SPEC section 10) over real sockets: hashed keys, expiry
//! on an open connection, per-client metadata headers, `keyway keygen`'s output applied
//! as it is, and malformed entries failing closed.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::support::{send, service, upstream, Harness, Req};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Gateway `gw` on port 80 (bound to a free port), a route to the echo upstream, and a policy on the
/// Gateway reading Secret `apps/keys` (entries given), with `extra` under `apiKeyAuth`.
fn manifests(up: SocketAddr, entries: &str, extra: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: apps}}\nspec:\n  gatewayClassName: any\n  listeners: [{{name: h, port: 80, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: apps}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys, namespace: apps}}\nstringData:\n{entries}---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p, namespace: apps}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  apiKeyAuth:\n    secretRef: {{name: keys}}\n{extra}{}",
        service("apps", "app", &[up])
    )
}

fn sha256(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn with_key(key: &str) -> Req {
    Req::get("h", "/").header("api-key", key)
}

#[tokio::test]
async fn hashed_and_plain_entries_authenticate_alike() {
    let up = upstream().await;
    let entries = format!(
        "  alice: k-alice-plain\n  bob: '{{\"keyHash\": \"sha256:{}\"}}'\n  carol: '{{\"key\": \"k-carol-json\"}}'\n",
        sha256("k-bob-hashed")
    );
    let h = Harness::start(&manifests(up, &entries, "    clientIdHeader: x-client\n")).await;
    let addr = h.addr(80);
    for (key, client) in [
        ("k-alice-plain", "alice"),
        ("k-bob-hashed", "bob"),
        ("k-carol-json", "carol"),
    ] {
        let r = send(addr, with_key(key)).await;
        assert_eq!(r.status, 200, "{key}");
        assert_eq!(r.upstream_header1("x-client").as_deref(), Some(client));
        assert_eq!(r.upstream_header("api-key"), None, "the key is stripped");
    }
    // The hash itself is not a key.
    let r = send(
        addr,
        with_key(&format!("sha256:{}", sha256("k-bob-hashed"))),
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_hashed_and_a_plain_entry_of_one_key_under_two_clients_is_a_duplicate() {
    let up = upstream().await;
    let entries = format!(
        "  alice: k-shared\n  bob: '{{\"keyHash\": \"sha256:{}\"}}'\n",
        sha256("k-shared")
    );
    let h = Harness::start(&manifests(up, &entries, "")).await;
    assert_eq!(send(h.addr(80), with_key("k-shared")).await.status, 500);
    let report = h.app.state.report();
    let policy = report
        .get(keyway_model::Kind::TrafficPolicy, "apps", "p")
        .unwrap();
    let accepted = policy.condition("Accepted").unwrap();
    assert!(
        accepted.message.contains("duplicate API key value"),
        "{}",
        accepted.message
    );
    assert!(!accepted.message.contains("k-shared"));
}

#[tokio::test]
async fn malformed_entries_fail_the_policy_closed_naming_secret_and_entry() {
    let up = upstream().await;
    for (entry, why) in [
        (r#"'{"keyHash": "sha256:ABC"}'"#, "keyHash"),
        (
            r#"'{"key": "k-1", "keyHash": "sha256:00"}'"#,
            "both key and keyHash",
        ),
        (r#"'{"metadata": {}}'"#, "neither key nor keyHash"),
        (
            r#"'{"key": "k-1", "metadata": {"tier": 1}}'"#,
            "metadata.tier",
        ),
        (r#"'{"key": "k-1"'"#, "not valid JSON"),
    ] {
        let entries = format!("  ok: k-fine\n  broken: {entry}\n");
        let h = Harness::start(&manifests(up, &entries, "")).await;
        // Fail closed: even the good key gets 500.
        assert_eq!(
            send(h.addr(80), with_key("k-fine")).await.status,
            500,
            "{entry}"
        );
        let report = h.app.state.report();
        let policy = report
            .get(keyway_model::Kind::TrafficPolicy, "apps", "p")
            .unwrap();
        let message = &policy.condition("Accepted").unwrap().message;
        assert!(
            message.contains("secret apps/keys: entry \"broken\""),
            "{message}"
        );
        assert!(message.contains(why), "{entry}: {message}");
        assert!(
            !message.contains("k-1") && !message.contains("ABC"),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_expires_at_its_instant_on_an_open_connection() {
    let up = upstream().await;
    // Whole seconds, as RFC 3339 is written here: at least 1.5 s from now.
    let at = SystemTime::now() + Duration::from_millis(2500);
    let entries = format!(
        "  alice: '{{\"key\": \"k-expiring\", \"expiresAt\": \"{}\"}}'\n  bob: k-forever\n",
        rfc3339(at)
    );
    let h = Harness::start(&manifests(up, &entries, "")).await;
    let tcp = tokio::net::TcpStream::connect(h.addr(80)).await.unwrap();
    let (mut conn, driver) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(driver);
    let get = |key: &str| {
        http::Request::get("/")
            .header("host", "h")
            .header("api-key", key)
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let r = conn.send_request(get("k-expiring")).await.unwrap();
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();
    let generation = h.app.state.generation();
    // No reload happens: the same config refuses the key once its instant has passed.
    let wait = humantime::parse_rfc3339(&rfc3339(at))
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    conn.ready().await.unwrap();
    let r = conn.send_request(get("k-expiring")).await.unwrap();
    assert_eq!(r.status(), 401, "on the same keep-alive connection");
    r.into_body().collect().await.unwrap();
    // The connection stays open after the 401: wait until it takes the next request.
    conn.ready().await.unwrap();
    let r = conn.send_request(get("k-forever")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.app.state.generation(), generation, "no reload was needed");
    let metrics = send(h.app.admin_addr.unwrap(), Req::get("l", "/metrics"))
        .await
        .text();
    assert!(
        metrics.contains(r#"reason="expired_api_key""#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("denied"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn metadata_headers_come_from_the_record_only() {
    let up = upstream().await;
    let entries = "  alice: '{\"key\": \"k-alice\", \"metadata\": {\"tier\": \"gold\", \"org\": \"acme\"}}'\n  bob: k-bob\n";
    let extra = "    metadataHeaders: {tier: x-client-tier, org: x-org}\n";
    let h = Harness::start(&manifests(up, entries, extra)).await;
    let addr = h.addr(80);
    let forged = |key: &str| {
        with_key(key)
            .header("x-client-tier", "platinum")
            .header("x-org", "evil")
    };
    let r = send(addr, forged("k-alice")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.upstream_header("x-client-tier"),
        Some(vec!["gold".to_string()])
    );
    assert_eq!(r.upstream_header("x-org"), Some(vec!["acme".to_string()]));
    // A client without that metadata: the forged headers go, nothing replaces them.
    let r = send(addr, forged("k-bob")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-client-tier"), None);
    assert_eq!(r.upstream_header("x-org"), None);
}

#[tokio::test]
async fn keys_expiring_within_a_week_are_reported_without_the_key() {
    let up = upstream().await;
    let soon = SystemTime::now() + Duration::from_secs(3 * 86_400);
    let later = SystemTime::now() + Duration::from_secs(30 * 86_400);
    let entries = format!(
        "  alice: '{{\"key\": \"k-soon-secret\", \"expiresAt\": \"{}\"}}'\n  bob: '{{\"key\": \"k-later\", \"expiresAt\": \"{}\"}}'\n",
        rfc3339(soon),
        rfc3339(later)
    );
    let text = manifests(up, &entries, "");
    let h = Harness::start(&text).await;
    let status = send(h.app.admin_addr.unwrap(), Req::get("l", "/status"))
        .await
        .text();
    let want = format!(
        "client \\\"alice\\\" in secret apps/keys: key expires at {}",
        rfc3339(soon)
    );
    assert!(status.contains(&want), "{status}");
    assert!(
        !status.contains("\\\"bob\\\" in secret"),
        "bob expires in 30 days"
    );
    assert!(!status.contains("k-soon-secret"));
    // `keyway check` says the same, and still succeeds: it is a warning.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.yaml"), &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["check", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&want.replace("\\\"", "\"")), "{printed}");
    assert!(out.status.success(), "{printed}");
}

#[tokio::test]
async fn keygen_output_applies_as_a_file() {
    let up = upstream().await;
    for hash in [true, false] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"));
        cmd.args([
            "keygen",
            "--client",
            "gen",
            "--secret",
            "generated",
            "--namespace",
            "apps",
        ]);
        if hash {
            cmd.args(["--hash", "--expires-in", "90d"]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success());
        let manifest = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let key = stderr.lines().last().unwrap().trim().to_string();
        assert!(key.starts_with("kw_") && key.len() == 67, "{stderr}");
        assert_eq!(manifest.contains(&key), !hash, "{manifest}");
        // Applied as it is, next to the other manifests; the policy reads it.
        let base = manifests(up, "  other: k-other\n", "")
            .replace("secretRef: {name: keys}", "secretRef: {name: generated}");
        let text = format!("{base}---\n{manifest}");
        let h = Harness::start(&text).await;
        assert_eq!(
            send(h.addr(80), with_key(&key)).await.status,
            200,
            "hash: {hash}"
        );
        assert_eq!(send(h.addr(80), with_key("kw_0")).await.status, 401);
    }
}
