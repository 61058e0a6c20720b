//! One test per promise of the README that had none: signals and reloads, upstream failure
//! handling, HTTP/2 pings and `:authority`, key-source precedence, refused and ignored
//! policy fields, the command-line flags, the access log's fields, and the sample upstream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{raw_exchange, Binary, BinaryOptions, Harness, Req};
use keyway_testkit::raw::{RawUpstream, Reply};

fn keyed(up: SocketAddr, keys: &str) -> String {
    format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys}}\nstringData: {{{keys}}}\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  apiKeyAuth: {{secretRef: {{name: keys}}}}\n",
        support::one_route(up)
    )
}

async fn status(addr: SocketAddr, key: &str) -> u16 {
    support::send(addr, Req::get("h", "/").header("api-key", key))
        .await
        .status
        .as_u16()
}

// ---------------------------------------------------------------------------------------
// Signals and reloads.

#[test]
fn sighup_reloads_when_files_are_not_watched() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(RawUpstream::start());
    let bin = Binary::start_with(
        &support::on_port(keyed(up.addr(), "a: k-1")),
        BinaryOptions {
            run_args: &["--no-watch"],
            ..Default::default()
        },
    );
    let file = bin.dir.path().join("manifests.yaml");
    rt.block_on(async {
        bin.ready().await;
        assert_eq!(status(bin.gateway, "k-1").await, 200);
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replace("a: k-1", "a: k-2")).unwrap();
        // Not watched: the edit waits for SIGHUP.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            status(bin.gateway, "k-1").await,
            200,
            "applied without SIGHUP"
        );
        bin.signal("HUP");
        let start = Instant::now();
        while status(bin.gateway, "k-1").await != 401 {
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "SIGHUP did not reload"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status(bin.gateway, "k-2").await, 200);
    });
    let (st, logs) = bin.stop();
    assert!(st.success());
    assert!(logs.contains("SIGHUP: reloading configuration"), "{logs}");
}

#[test]
fn sigint_drains_until_the_drain_timeout_then_exits_0() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(RawUpstream::with(|req| {
        let delay = if req.target() == "/slow" { 5000 } else { 300 };
        Reply::ok().after(Duration::from_millis(delay))
    }));
    let bin = Binary::start_with(
        &support::on_port(support::one_route(up.addr())),
        BinaryOptions {
            run_args: &["--drain-timeout", "1s"],
            ..Default::default()
        },
    );
    let gw = bin.gateway;
    let (quick, slow, start) = rt.block_on(async {
        bin.ready().await;
        let quick = tokio::spawn(support::try_send(gw, Req::get("h", "/quick")));
        let slow = tokio::spawn(support::try_send(gw, Req::get("h", "/slow")));
        up.wait_for(2).await;
        bin.signal("INT");
        let start = Instant::now();
        (quick.await.unwrap(), slow, start)
    });
    let (st, _) = bin.wait();
    let took = start.elapsed();
    assert!(st.success(), "{st:?}");
    assert_eq!(quick.unwrap().status, 200, "an in-flight request finishes");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "exited {took:?} after SIGINT; the drain timeout is 1 s"
    );
    let slow = rt.block_on(slow).unwrap();
    assert!(
        slow.is_err(),
        "the request outliving the drain timeout is cut: {slow:?}"
    );
}

#[tokio::test]
async fn unchanged_files_are_not_applied_again() {
    let up = RawUpstream::start().await;
    let text = keyed(up.addr(), "a: k-1");
    let h = Harness::start_watching(&text).await;
    let first = h.app.state.generation();
    // Rewritten with the same bytes, and touched: nothing is applied.
    for _ in 0..3 {
        std::fs::write(h.config_path(), &text).unwrap();
    }
    let f = std::fs::File::options()
        .append(true)
        .open(h.config_path())
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    drop(f);
    // A change after them: the watcher did run, and applied exactly one generation.
    tokio::time::sleep(Duration::from_millis(400)).await;
    std::fs::write(h.config_path(), keyed(up.addr(), "a: k-2")).unwrap();
    let start = Instant::now();
    while status(h.addr(80), "k-2").await != 200 {
        assert!(start.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.app.state.generation(), first + 1);
}

// ---------------------------------------------------------------------------------------
// Upstream failures.

#[tokio::test]
async fn a_broken_upstream_is_502_and_never_retried() {
    // Reads the request, then closes without a word.
    let up = RawUpstream::with(|_| Reply::raw(Vec::new()).closing()).await;
    let other = RawUpstream::start().await;
    let h = Harness::start(&support::one_route(up.addr())).await;
    let r = h
        .request(80, Req::get("h", "/").method("POST").body("once"))
        .await;
    assert_eq!(r.status, 502);
    assert_eq!(up.requests().len(), 1, "sent once, never again");
    assert!(other.requests().is_empty());
    // A response that is not HTTP: 502 too.
    let garbage = RawUpstream::with(|_| Reply::raw("SSH-2.0-OpenSSH\r\n")).await;
    let h = Harness::start(&support::one_route(garbage.addr())).await;
    assert_eq!(h.get(80, "h", "/").await.status, 502);
    assert_eq!(garbage.requests().len(), 1);
}

#[tokio::test]
async fn a_refusing_endpoint_is_skipped_for_the_ejection_time_then_tried_again() {
    assert_eq!(
        keyway_dataplane::Settings::default().eject_for,
        Duration::from_secs(5),
        "the README's 5 s"
    );
    let up = RawUpstream::start().await;
    let (_held, dead) = support::refusing_addr();
    let slice = |name: &str, addr: SocketAddr| {
        format!("---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, labels: {{kubernetes.io/service-name: app}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n", addr.port())
    };
    let manifests = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: any\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: app}}\nspec:\n  ports: [{{name: http, port: 80}}]\n{}{}",
        slice("alive", up.addr()),
        slice("dead", dead)
    );
    let eject_for = Duration::from_millis(400);
    let h = Harness::start_with(&manifests, |o| o.settings.eject_for = eject_for).await;
    let mut codes = Vec::new();
    for _ in 0..2 {
        codes.push(h.get(80, "h", "/").await.status.as_u16());
    }
    assert_eq!(codes.iter().filter(|&&c| c == 503).count(), 1, "{codes:?}");
    let ejected_at = Instant::now();
    // Skipped while ejected: no request is sent its way (no retries either: the one that
    // met the refusal got its 503).
    while ejected_at.elapsed() < eject_for - Duration::from_millis(100) {
        assert_eq!(h.get(80, "h", "/").await.status, 200);
    }
    // Then tried again.
    tokio::time::sleep(eject_for).await;
    let mut again = Vec::new();
    for _ in 0..2 {
        again.push(h.get(80, "h", "/").await.status.as_u16());
    }
    assert_eq!(again.iter().filter(|&&c| c == 503).count(), 1, "{again:?}");
}

#[tokio::test]
async fn the_connect_timeout_bounds_a_connect_that_hangs() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so a connect
    // hangs until its timeout (all on loopback).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let h = Harness::start_with(&support::one_route(addr), |o| {
        o.settings.connect_timeout = Duration::from_millis(400)
    })
    .await;
    let start = Instant::now();
    let r = h.get(80, "h", "/").await;
    let took = start.elapsed();
    assert_eq!(r.status, 503);
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(listener);
}

// ---------------------------------------------------------------------------------------
// HTTP/2.

#[tokio::test]
async fn http2_connections_are_pinged() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = RawUpstream::start().await;
    let h = Harness::start_with(&support::one_route(up.addr()), |o| {
        o.server.http2_keepalive = Duration::from_millis(200)
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(h.addr(80)).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    // Read frames until a PING (type 6) that is not an ACK arrives.
    let start = Instant::now();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut chunk))
            .await
            .expect("frames within 2 s")
            .unwrap();
        assert!(n > 0, "closed before a ping");
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while buf.len() >= at + 9 {
            let len = u32::from_be_bytes([0, buf[at], buf[at + 1], buf[at + 2]]) as usize;
            let (kind, flags) = (buf[at + 3], buf[at + 4]);
            if kind == 6 && flags & 1 == 0 {
                assert!(start.elapsed() < Duration::from_secs(1));
                return;
            }
            at += 9 + len;
        }
    }
}

#[tokio::test]
async fn http2_authority_wins_over_a_conflicting_host_header() {
    let up = RawUpstream::start().await;
    let h = Harness::start(&format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: any\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [a.example]\n  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]\n---\n{}",
        support::service("default", "app", &[up.addr()])
    ))
    .await;
    let stream = tokio::net::TcpStream::connect(h.addr(80)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .version(http::Version::HTTP_2)
        .uri("http://a.example/x")
        .header("host", "b.example")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "routed by :authority, not by Host");
    assert_eq!(up.only().header_all("host"), ["a.example"]);
}

// ---------------------------------------------------------------------------------------
// Policies.

fn sources_policy(up: SocketAddr, sources: &str) -> String {
    format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys}}\nstringData: {{alice: good}}\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  apiKeyAuth: {{secretRef: {{name: keys}}, keySources: {sources}}}\n",
        support::one_route(up)
    )
}

#[tokio::test]
async fn headers_beat_queries_beat_cookies_whatever_the_list_order() {
    let up = RawUpstream::start().await;
    // Listed cookie first, header last: the kgateway docs' type order still decides.
    let h = Harness::start(&sources_policy(
        up.addr(),
        "[{cookie: c}, {query: q}, {header: h1}, {header: h2}]",
    ))
    .await;
    let code = |path: &'static str, headers: &'static [(&'static str, &'static str)]| {
        let h = &h;
        async move {
            let mut r = Req::get("h", path);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            h.request(80, r).await.status.as_u16()
        }
    };
    // Every source present: the first header source decides.
    assert_eq!(
        code(
            "/?q=bad",
            &[("h1", "good"), ("h2", "bad"), ("cookie", "c=bad")]
        )
        .await,
        200
    );
    assert_eq!(
        code(
            "/?q=good",
            &[("h1", "bad"), ("h2", "good"), ("cookie", "c=good")]
        )
        .await,
        401
    );
    // No first header: the second header source.
    assert_eq!(code("/?q=bad", &[("h2", "good")]).await, 200);
    // No header: the query beats the cookie.
    assert_eq!(code("/?q=good", &[("cookie", "c=bad")]).await, 200);
    assert_eq!(code("/?q=bad", &[("cookie", "c=good")]).await, 401);
    // Only the cookie.
    assert_eq!(code("/", &[("cookie", "c=good")]).await, 200);
}

#[tokio::test]
async fn every_security_field_keyway_cannot_enforce_fails_closed() {
    let up = RawUpstream::start().await;
    for field in [
        "extAuth",
        "jwtAuth",
        "basicAuth",
        "rbac",
        "oauth2",
        "acl",
        "csrf",
    ] {
        let h = Harness::start(&format!(
            "{}---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  {field}: {{}}\n",
            support::one_route(up.addr())
        ))
        .await;
        assert_eq!(h.get(80, "h", "/").await.status, 500, "{field}");
        let report = h.app.state.report();
        let c = report
            .get(keyway_model::Kind::TrafficPolicy, "default", "p")
            .and_then(|s| s.condition("Accepted"))
            .unwrap()
            .clone();
        assert!(!c.status && c.reason == "Invalid", "{field}: {c}");
        assert!(c.message.contains(&format!("spec.{field}")), "{field}: {c}");
    }
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn other_kgateway_fields_are_reported_as_ignored() {
    let up = RawUpstream::start().await;
    let h = Harness::start(&format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys}}\nstringData: {{alice: good}}\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  apiKeyAuth: {{secretRef: {{name: keys}}}}\n  cors: {{allowOrigins: [\"*\"]}}\n  rateLimit: {{}}\n",
        support::one_route(up.addr())
    ))
    .await;
    let report = h.app.state.report();
    let c = report
        .get(keyway_model::Kind::TrafficPolicy, "default", "p")
        .and_then(|s| s.condition("Accepted"))
        .unwrap()
        .clone();
    assert!(c.status, "{c}");
    assert!(
        c.message
            .contains("ignored (not supported by Keyway): spec.cors, spec.rateLimit"),
        "{c}"
    );
    assert_eq!(
        status(h.addr(80), "good").await,
        200,
        "the policy still authenticates"
    );
}

#[test]
fn unknown_fields_in_target_refs_and_selectors_are_load_errors_with_their_line() {
    for (field, line) in [
        ("targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectonName: x}]", 5),
        ("targetSelectors: [{group: gateway.networking.k8s.io, kind: Gateway, matchLabel: {a: b}}]", 5),
    ] {
        let text = format!("apiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  {field}\n  apiKeyAuth: {{disable: {{}}}}\n");
        let errors = keyway_sources::files::load_str("p.yaml", &text).unwrap_err();
        let e = errors[0].to_string();
        assert!(e.starts_with(&format!("p.yaml:{line}:")), "{e}");
        assert!(e.contains("TrafficPolicy default/p") && e.contains("unknown field"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Command-line flags.

fn two_classes(up: SocketAddr) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: mine}}\nspec:\n  gatewayClassName: keyway\n  listeners: [{{name: http, port: {{PORT}}, protocol: HTTP, hostname: mine.example}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: theirs}}\nspec:\n  gatewayClassName: other\n  listeners: [{{name: http, port: {{PORT}}, protocol: HTTP, hostname: theirs.example}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{name: mine}}, {{name: theirs}}]\n  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]\n---\n{}",
        support::service("default", "app", &[up])
    )
}

#[test]
fn gateway_class_restricts_what_is_served() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(RawUpstream::start());
    let bin = Binary::start_with(
        &two_classes(up.addr()),
        BinaryOptions {
            run_args: &["--gateway-class", "keyway"],
            ..Default::default()
        },
    );
    rt.block_on(async {
        bin.ready().await;
        let get = |host: &'static str| support::send(bin.gateway, Req::get(host, "/"));
        assert_eq!(get("mine.example").await.status, 200);
        assert_eq!(get("theirs.example").await.status, 404);
    });
    bin.stop();
}

#[test]
fn max_header_bytes_and_max_headers_flags() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(RawUpstream::start());
    let bin = Binary::start_with(
        &support::on_port(support::one_route(up.addr())),
        BinaryOptions {
            run_args: &["--max-header-bytes", "8192", "--max-headers", "10"],
            ..Default::default()
        },
    );
    rt.block_on(async {
        bin.ready().await;
        let big = "v".repeat(9000);
        let r = support::send(bin.gateway, Req::get("h", "/").header("x-big", &big)).await;
        assert_eq!(r.status, 431);
        let small = "v".repeat(4000);
        let r = support::send(bin.gateway, Req::get("h", "/").header("x-big", &small)).await;
        assert_eq!(r.status, 200);
        let mut many = Req::get("h", "/");
        for i in 0..12 {
            many = many.header(&format!("x-{i}"), "v");
        }
        assert_eq!(support::send(bin.gateway, many).await.status, 431);
    });
    bin.stop();
}

#[tokio::test]
async fn least_request_balancing_prefers_the_idle_endpoint() {
    let slow = RawUpstream::with(|_| Reply::ok().after(Duration::from_millis(400))).await;
    let fast = RawUpstream::start().await;
    let slice = |name: &str, addr: SocketAddr| {
        format!("---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, labels: {{kubernetes.io/service-name: app}}}}\naddressType: IPv4\nports: [{{name: http, port: {}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n", addr.port())
    };
    let manifests = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: any\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: app}}\nspec:\n  ports: [{{name: http, port: 80}}]\n{}{}",
        slice("slow", slow.addr()),
        slice("fast", fast.addr())
    );
    let h = Harness::start_with(&manifests, |o| {
        o.compile.balance = keyway_store::Balance::LeastRequest
    })
    .await;
    // Two waves of 20 concurrent requests: slow requests pile up on the slow endpoint, so
    // least-request sends most of the rest to the fast one.
    for _ in 0..2 {
        let mut wave = Vec::new();
        for _ in 0..20 {
            wave.push(tokio::spawn(support::send(h.addr(80), Req::get("h", "/"))));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for r in wave {
            assert_eq!(r.await.unwrap().status, 200);
        }
    }
    let (s, f) = (slow.requests().len(), fast.requests().len());
    assert_eq!(s + f, 40);
    assert!(
        f >= 3 * s,
        "least-request sent {s} to the slow endpoint, {f} to the fast one"
    );
}

// ---------------------------------------------------------------------------------------
// The access log and the sample upstream.

#[test]
fn every_access_log_field() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(RawUpstream::start());
    let bin = Binary::start(
        &support::on_port(keyed(up.addr(), "alice: k-1")),
        &["--log-format", "json"],
        &[],
    );
    rt.block_on(async {
        bin.ready().await;
        let r = support::send(
            bin.gateway,
            Req::get("h", "/p?secret=query")
                .header("api-key", "k-1")
                .header("x-request-id", "rid-1"),
        )
        .await;
        assert_eq!(r.status, 200);
        // Without an id of its own, the one Keyway makes is logged and forwarded alike.
        let r = support::send(bin.gateway, Req::get("h", "/made").header("api-key", "k-1")).await;
        assert_eq!(r.status, 200);
    });
    let (_, logs) = bin.stop();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "keyway::access")
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    let made = up.requests()[1]
        .header("x-request-id")
        .expect("an id upstream");
    assert_eq!(made.len(), 36, "{made}");
    assert_eq!(lines[1]["path"], "/made");
    assert_eq!(lines[1]["request_id"], made.as_str());
    let line = &lines[0];
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/p", "never the query string");
    assert_eq!(line["status"], 200);
    assert!(line["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(line["gateway"], "default/gw");
    assert_eq!(line["route"], "default/r");
    assert_eq!(line["client"], "alice");
    assert_eq!(line["reason"], "-");
    assert_eq!(line["upstream"], "Service default/app:80");
    assert_eq!(line["request_id"], "rid-1");
    assert!(line["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(!logs.contains("secret=query"));
}

#[test]
fn the_sample_upstream_does_what_its_help_says() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["echo-server", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("a log line").unwrap();
            if let Some(at) = line.find("addr=") {
                break line[at + 5..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap();
            }
        }
    };
    rt.block_on(async {
        let r = support::send(addr, Req::get("h", "/anything?a=1").header("x-t", "v")).await;
        let v = r.json();
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/anything");
        assert_eq!(v["query"], "a=1");
        assert_eq!(v["headers"]["X-T"][0], "v");
        assert_eq!(
            support::send(addr, Req::get("h", "/status/418"))
                .await
                .status,
            418
        );
        assert_eq!(
            support::send(addr, Req::get("h", "/bytes/1000"))
                .await
                .body
                .len(),
            1000
        );
        let start = Instant::now();
        support::send(addr, Req::get("h", "/delay/200")).await;
        assert!(start.elapsed() >= Duration::from_millis(200));
        let r = support::send(addr, Req::get("h", "/response-headers?x-set=1")).await;
        assert_eq!(r.headers["x-set"], "1");
        let r = support::send(addr, Req::get("h", "/").method("POST").body("abc")).await;
        assert_eq!(r.json()["body_length"], 3);
        // The request-target as it arrived, absolute-form included.
        let raw = raw_exchange(
            addr,
            b"GET http://h/abs HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        let body = &support::responses(&raw)[0].1;
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["path"], "http://h/abs");
    });
    let _ = child.kill();
    let _ = child.wait();
}
