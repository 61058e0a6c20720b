//! What a black-box attack and a strict conformance run found, each pinned by a test over
//! real sockets against upstreams that report the wire (the raw recorder) or decode it
//! their own way (nginx, Python's `http.server`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support;
use crate::support::{gateway_with_rules, raw_exchange, responses, Harness, Req};
use keyway_dataplane::EscapedSlashes;
use keyway_testkit::external;
use keyway_testkit::raw::{RawUpstream, Reply};

/// Gateway-wide key auth (client id in `x-client-id`), switched off on the rule `public`.
fn gateway_policy_with_public_rule(upstream: SocketAddr) -> String {
    let rules = "  - name: public\n    matches: [{path: {type: PathPrefix, value: /public}}]\n    backendRefs: [{name: app, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: app, port: 80}]";
    format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys}}\nstringData: {{alice: k-alice-1, bob: k-bob-2}}\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: gw-auth}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  apiKeyAuth: {{secretRef: {{name: keys}}, clientIdHeader: x-client-id}}\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: public-open}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: public}}]\n  apiKeyAuth: {{disable: {{}}}}\n",
        gateway_with_rules(upstream, rules)
    )
}

/// One request with exactly this request-target, on its own connection.
async fn get_raw(addr: SocketAddr, target: &str, extra: &str) -> (u16, String) {
    let req = format!("GET {target} HTTP/1.1\r\nhost: h\r\nconnection: close\r\n{extra}\r\n");
    let raw = raw_exchange(addr, req.as_bytes(), Duration::from_secs(5)).await;
    let r = responses(&raw);
    assert_eq!(
        r.len(),
        1,
        "one response to {target}: {}",
        String::from_utf8_lossy(&raw)
    );
    (r[0].0, String::from_utf8_lossy(&r[0].1).into_owned())
}

const SLASH_TRICKS: [&str; 5] = [
    "/public/..%2fadmin",
    "/public/..%2Fadmin",
    "/public/%2e%2e%2fadmin",
    "/public/..%5cadmin",
    "/public/..\\admin",
];

#[tokio::test]
async fn encoded_slashes_never_reach_a_protected_file_on_nginx() {
    let nginx = external::nginx(&[("public/index.html", "PUBLIC"), ("admin", "ADMIN-SECRET")]);
    let manifests = gateway_policy_with_public_rule(nginx.addr());

    // The setup reproduces the attack: with `keep`, nginx decodes `%2F`, resolves `..`
    // and serves the protected file to a request that carries no key.
    let keep = Harness::start_with(&manifests, |o| {
        o.settings.escaped_slashes = EscapedSlashes::Keep
    })
    .await;
    let addr = keep.addr(80);
    assert_eq!(get_raw(addr, "/public/", "").await, (200, "PUBLIC".into()));
    assert_eq!(get_raw(addr, "/admin", "").await.0, 401);
    assert_eq!(
        get_raw(addr, "/public/..%2fadmin", "").await,
        (200, "ADMIN-SECRET".into()),
        "keep forwards the encoded slash, and nginx decodes it"
    );

    // Default: refused before routing, never forwarded.
    let reject = Harness::start(&manifests).await;
    let before = nginx.log("access.log").len();
    for target in SLASH_TRICKS {
        let (status, body) = get_raw(reject.addr(80), target, "").await;
        assert_eq!(status, 400, "{target}");
        assert!(body.contains("encoded slash"), "{target}: {body}");
    }
    assert_eq!(
        nginx.log("access.log").len(),
        before,
        "nothing reached nginx"
    );

    // `unescape`: decoded and normalised first, so the request is routed (and
    // authenticated) as the /admin nginx would serve.
    let unescape = Harness::start_with(&manifests, |o| {
        o.settings.escaped_slashes = EscapedSlashes::Unescape
    })
    .await;
    for target in SLASH_TRICKS {
        assert_eq!(
            get_raw(unescape.addr(80), target, "").await.0,
            401,
            "{target}"
        );
        let (status, body) = get_raw(unescape.addr(80), target, "api-key: k-alice-1\r\n").await;
        assert_eq!((status, body.as_str()), (200, "ADMIN-SECRET"), "{target}");
    }
    let last = nginx.log("access.log").pop().unwrap();
    assert!(last.starts_with("GET /admin HTTP/1.1|/admin"), "{last}");

    // Normalising never assembles an encoded slash out of a stray `%` and the escapes
    // after it (`%` `%32` `%46` must not become `%2F`), in any mode that normalises.
    for h in [&reject, &unescape] {
        let (status, body) = get_raw(h.addr(80), "/public/..%%32%46admin", "").await;
        assert_ne!(body, "ADMIN-SECRET");
        assert_eq!(
            status, 404,
            "nginx looked for a file literally named ..%2Fadmin"
        );
    }
}

#[tokio::test]
async fn upstreams_get_origin_form_targets() {
    let up = RawUpstream::start().await;
    let h = Harness::start(&support::one_route(up.addr())).await;
    let addr = h.addr(80);
    assert_eq!(get_raw(addr, "/x/y?a=1&b=%20", "").await.0, 200);
    // An absolute-form request from the client is forwarded in origin-form too, its
    // authority becoming `Host`.
    let raw = raw_exchange(
        addr,
        b"GET http://other.example:8080/abs?q HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(support::statuses(&raw), [200]);
    let seen = up.wait_for(2).await;
    assert_eq!(seen[0].request_line, "GET /x/y?a=1&b=%20 HTTP/1.1");
    assert_eq!(seen[0].header("host").as_deref(), Some("h"));
    assert_eq!(seen[1].request_line, "GET /abs?q HTTP/1.1");
    assert_eq!(
        seen[1].header("host").as_deref(),
        Some("other.example:8080")
    );
}

#[tokio::test]
async fn python_http_server_serves_what_keyway_forwards() {
    // Python's http.server takes the request-target literally: an absolute-form target
    // would be a 404.
    let py = external::python_http_server(&[("x.txt", "from python"), ("d/y.txt", "deeper")]);
    let h = Harness::start(&support::one_route(py.addr())).await;
    for (path, body) in [
        ("/x.txt", "from python"),
        ("/d/y.txt", "deeper"),
        ("/d/../x.txt", "from python"),
    ] {
        let r = h.get(80, "h", path).await;
        assert_eq!(
            (r.status.as_u16(), r.text().as_str()),
            (200, body),
            "{path}"
        );
    }
}

#[tokio::test]
async fn idle_and_silent_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = RawUpstream::start().await;
    let h = Harness::start_with(&support::one_route(up.addr()), |o| {
        o.server.header_read_timeout = Duration::from_millis(500)
    })
    .await;
    let addr = h.addr(80);

    // Connections that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // An HTTP/2 connection parked in the middle of a header block: the preface, SETTINGS,
    // then HEADERS without END_HEADERS and no CONTINUATION ever.
    let mut h2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    // HEADERS, stream 1, flags END_STREAM only, one literal field `:method: GET`.
    h2.write_all(&[0, 0, 1, 1, 0x01, 0, 0, 0, 1, 0x82])
        .await
        .unwrap();
    // An HTTP/1.1 client that served one request, then went quiet.
    let mut keep_alive = tokio::net::TcpStream::connect(addr).await.unwrap();
    keep_alive
        .write_all(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n")
        .await
        .unwrap();

    let start = Instant::now();
    let closed_within = |mut s: tokio::net::TcpStream| async move {
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    };
    for s in silent {
        assert!(closed_within(s).await, "a silent connection stayed open");
    }
    assert!(
        closed_within(h2).await,
        "a parked HTTP/2 header block kept its connection"
    );
    assert!(
        closed_within(keep_alive).await,
        "an idle keep-alive connection stayed open"
    );
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    // And the port still serves.
    assert_eq!(h.get(80, "h", "/").await.status, 200);
}

#[tokio::test]
async fn connections_above_the_limit_are_closed_at_once_and_others_still_served() {
    use tokio::io::AsyncReadExt;
    let up = RawUpstream::start().await;
    let h = Harness::start_with(&support::one_route(up.addr()), |o| {
        o.server.max_connections = 20;
        o.server.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = h.addr(80);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    wait_until(|| h.app.server.open_connections() == 20).await;
    // The 21st is accepted and closed straight away: EOF, no hanging in the backlog.
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_millis(500), extra.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let metrics = h.admin("/metrics").await.text();
    assert!(
        metrics.contains("keyway_connections_refused_total 1"),
        "{metrics}"
    );
    // The admin port is not counted against the limit.
    assert_eq!(h.admin("/readyz").await.status, 200);
    // Once the silent ones time out, new clients are served again.
    drop(held);
    wait_until(|| h.app.server.open_connections() == 0).await;
    assert_eq!(h.get(80, "h", "/").await.status, 200);
}

#[tokio::test]
async fn an_empty_api_key_auth_fails_closed() {
    let up = RawUpstream::start().await;
    for cut in ["  apiKeyAuth:\n", "  apiKeyAuth: ~\n"] {
        let manifests = format!(
            "{}---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n{cut}",
            support::one_route(up.addr())
        );
        let h = Harness::start(&manifests).await;
        let r = h.get(80, "h", "/").await;
        assert_eq!(r.status, 500, "{cut:?}");
        assert_eq!(r.text(), keyway_compile::INVALID_ROUTE_BODY);
        let status = h.admin("/status").await.json();
        let policy = status["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == "TrafficPolicy")
            .unwrap()
            .clone();
        let text = policy.to_string();
        assert!(
            text.contains("Invalid") && text.contains("apiKeyAuth"),
            "{text}"
        );
    }
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn a_secret_error_never_shows_its_value_and_clears_when_fixed() {
    let up = RawUpstream::start().await;
    let good = gateway_policy_with_public_rule(up.addr());
    let h = Harness::start(&good).await;
    let key = "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy";
    let bad = good.replace(
        "stringData: {alice: k-alice-1, bob: k-bob-2}",
        &format!("stringData: {key}"),
    );
    std::fs::write(h.config_path(), &bad).unwrap();
    let err = h.app.reload().await.unwrap_err();
    let status = h.admin("/status").await.text();
    for surface in [&err, &status] {
        assert!(surface.contains("Secret default/keys"), "{surface}");
        for w in key.as_bytes().windows(8) {
            let w = std::str::from_utf8(w).unwrap();
            assert!(!surface.contains(w), "{surface} repeats {w}");
        }
    }
    let summary = h.admin("/status").await.json();
    assert_eq!(summary["stale"], true);
    std::fs::write(h.config_path(), &good).unwrap();
    h.app.reload().await.unwrap();
    let summary = h.admin("/status").await.json();
    assert_eq!(summary["stale"], false);
    assert!(summary["last_error"].is_null(), "{summary}");
}

#[tokio::test]
async fn a_slow_upload_is_not_cut_by_the_response_timeout() {
    use tokio::io::AsyncWriteExt;
    let up = RawUpstream::start().await;
    let h = Harness::start_with(&support::one_route(up.addr()), |o| {
        o.settings.upstream_timeout = Duration::from_millis(700);
        o.settings.body_idle_timeout = Duration::from_millis(600);
    })
    .await;
    let addr = h.addr(80);
    // 12 chunks of 64 KiB, 200 ms apart: 2.2 s of upload, three times the response
    // timeout, never pausing as long as the body idle timeout.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b'u'; 64 * 1024];
    for _ in 0..12 {
        s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        s.write_all(&chunk).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let raw = read_to_end(s).await;
    assert_eq!(
        support::statuses(&raw),
        [200],
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(up.only().body.len(), 12 * 64 * 1024);

    // A body that stops is cut by the body idle timeout: 408, not 504.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /stall HTTP/1.1\r\nhost: h\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let start = Instant::now();
    let raw = read_to_end(s).await;
    assert_eq!(
        support::statuses(&raw),
        [408],
        "{}",
        String::from_utf8_lossy(&raw)
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        up.requests().len(),
        1,
        "the stalled request never completed upstream"
    );

    // Once the request is complete, the response timeout still applies.
    let slow = RawUpstream::with(|_| Reply::ok().after(Duration::from_secs(2))).await;
    let h = Harness::start_with(&support::one_route(slow.addr()), |o| {
        o.settings.upstream_timeout = Duration::from_millis(500)
    })
    .await;
    let r = h
        .request(80, Req::get("h", "/").method("POST").body(vec![b'x'; 1000]))
        .await;
    assert_eq!(r.status, 504);
}

async fn read_to_end(mut s: tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn identity_headers_never_arrive_as_the_client_sent_them() {
    let up = RawUpstream::start().await;
    let h = Harness::start(&gateway_policy_with_public_rule(up.addr())).await;
    // A public route: the client's copy is removed, no other is set.
    let r = h
        .request(
            80,
            Req::get("h", "/public/x").header("x-client-id", "admin"),
        )
        .await;
    assert_eq!(r.status, 200);
    // An authenticated route: only Keyway's value, once.
    let r = h
        .request(
            80,
            Req::get("h", "/private")
                .header("x-client-id", "admin")
                .header("X-Client-Id", "root")
                .header("api-key", "k-bob-2"),
        )
        .await;
    assert_eq!(r.status, 200);
    let seen = up.wait_for(2).await;
    assert_eq!(seen[0].header_all("x-client-id"), Vec::<String>::new());
    assert_eq!(seen[1].header_all("x-client-id"), ["bob"]);
}

#[tokio::test]
async fn utf8_paths_survive_normalising() {
    let up = RawUpstream::start().await;
    let h = Harness::start(&support::one_route(up.addr())).await;
    let raw = raw_exchange(
        h.addr(80),
        "GET /café/%41/./x HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n".as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(support::statuses(&raw), [200]);
    assert_eq!(up.only().request_line, "GET /café/A/x HTTP/1.1");
}

#[tokio::test]
async fn client_metric_series_are_capped() {
    let up = RawUpstream::start().await;
    let clients: Vec<String> = (0..10).map(|i| format!("c{i}: key-{i}")).collect();
    let manifests = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys}}\nstringData: {{{}}}\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  apiKeyAuth: {{secretRef: {{name: keys}}}}\n",
        support::one_route(up.addr()),
        clients.join(", ")
    );
    let h = Harness::start_with(&manifests, |o| o.settings.metrics_max_clients = 3).await;
    for i in 0..10 {
        for _ in 0..2 {
            let r = h
                .request(
                    80,
                    Req::get("h", "/").header("api-key", &format!("key-{i}")),
                )
                .await;
            assert_eq!(r.status, 200);
        }
    }
    let metrics = h.admin("/metrics").await.text();
    let allowed: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("keyway_api_key_allowed_total{"))
        .collect();
    assert_eq!(allowed.len(), 4, "3 clients and _other: {allowed:#?}");
    let other = allowed
        .iter()
        .find(|l| l.contains("client=\"_other\""))
        .expect("an _other series");
    assert!(
        other.ends_with(" 14"),
        "7 clients, 2 requests each: {other}"
    );
    for i in 0..3 {
        assert!(
            allowed
                .iter()
                .any(|l| l.contains(&format!("client=\"c{i}\"")) && l.ends_with(" 2")),
            "{allowed:#?}"
        );
    }
}

async fn plain_gateway(up: &RawUpstream) -> Harness {
    Harness::start(&support::one_route(up.addr())).await
}

#[tokio::test]
async fn only_framing_keyway_produces_reaches_the_upstream() {
    let up = RawUpstream::start().await;
    let h = plain_gateway(&up).await;
    let body = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    for te in [
        "transfer-encoding: chunked\r\n",
        "Transfer-Encoding: CHUNKED\r\n",
        "transfer-encoding: identity, chunked\r\n",
    ] {
        let req = format!("POST /te HTTP/1.1\r\nhost: h\r\n{te}connection: close\r\n\r\n{body}");
        let raw = raw_exchange(h.addr(80), req.as_bytes(), Duration::from_secs(5)).await;
        let got = support::statuses(&raw);
        if got == [400] {
            continue; // refusing is fine too; forwarding the client's codings is not
        }
        assert_eq!(got, [200], "{te:?}");
    }
    for seen in up.requests() {
        assert_eq!(
            seen.header_all("transfer-encoding"),
            ["chunked"],
            "{seen:#?}"
        );
        assert_eq!(seen.header_all("content-length"), Vec::<String>::new());
        assert_eq!(seen.body, b"hello world");
    }
    assert!(!up.requests().is_empty());
    // Two Transfer-Encoding lines: never forwarded as two.
    let req = format!("POST /te2 HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{body}");
    let before = up.requests().len();
    let raw = raw_exchange(h.addr(80), req.as_bytes(), Duration::from_secs(5)).await;
    for seen in &up.requests()[before..] {
        assert!(seen.header_all("transfer-encoding").len() <= 1, "{seen:#?}");
    }
    assert!(!support::statuses(&raw).is_empty());
    // A Content-Length body keeps its length.
    let r = h
        .request(80, Req::get("h", "/cl").method("POST").body("0123456789"))
        .await;
    assert_eq!(r.status, 200);
    let last = up.requests().pop().unwrap();
    assert_eq!(last.header_all("content-length"), ["10"]);
    assert_eq!(last.header_all("transfer-encoding"), Vec::<String>::new());
}

#[tokio::test]
async fn every_forwarded_for_line_is_kept() {
    let up = RawUpstream::start().await;
    let h = plain_gateway(&up).await;
    let (status, _) = get_raw(
        h.addr(80),
        "/",
        "X-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2, 10.0.0.3\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        up.only().header_all("x-forwarded-for"),
        ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
    );
}

/// Sends `req` over HTTP/2 with prior knowledge and returns the status.
async fn h2_send(addr: SocketAddr, req: http::Request<http_body_util::Full<bytes::Bytes>>) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender.send_request(req).await.unwrap().status().as_u16()
}

fn h2_request(addr: SocketAddr, path: &str) -> http::request::Builder {
    http::Request::builder()
        .version(http::Version::HTTP_2)
        .uri(format!("http://{addr}{path}"))
}

#[tokio::test]
async fn http2_cookie_crumbs_reach_http1_as_one_line() {
    let up = RawUpstream::start().await;
    let h = plain_gateway(&up).await;
    let req = h2_request(h.addr(80), "/c")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(Default::default())
        .unwrap();
    assert_eq!(h2_send(h.addr(80), req).await, 200);
    let seen = up.only();
    assert_eq!(seen.header_all("cookie"), ["a=1; b=2; c=3"]);
    assert_eq!(seen.version(), "HTTP/1.1");
}

#[tokio::test]
async fn one_header_count_limit_for_http1_and_http2() {
    let up = RawUpstream::start().await;
    let h = plain_gateway(&up).await;
    let addr = h.addr(80);
    for (n, want) in [(50, 200), (150, 431)] {
        let extra: String = (0..n).map(|i| format!("x-h{i}: v\r\n")).collect();
        assert_eq!(
            get_raw(addr, "/", &extra).await.0,
            want,
            "HTTP/1.1, {n} headers"
        );
        let mut b = h2_request(addr, "/");
        for i in 0..n {
            b = b.header(format!("x-h{i}"), "v");
        }
        assert_eq!(
            h2_send(addr, b.body(Default::default()).unwrap()).await,
            want,
            "HTTP/2, {n} headers"
        );
    }
    assert_eq!(
        up.requests().len(),
        2,
        "only the requests within the limit were forwarded"
    );
}

#[tokio::test]
async fn connect_is_refused_unless_a_route_asks_for_it() {
    let up =
        RawUpstream::with(|_| Reply::raw("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"))
            .await;
    let h = Harness::start(&format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys}}\nstringData: {{alice: k-alice-1}}\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  apiKeyAuth: {{secretRef: {{name: keys}}}}\n",
        support::one_route(up.addr())
    ))
    .await;
    let connect = b"CONNECT h:443 HTTP/1.1\r\nhost: h:443\r\napi-key: k-alice-1\r\n\r\n";
    let raw = raw_exchange(h.addr(80), connect, Duration::from_secs(2)).await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert_eq!(support::statuses(&raw), [405], "{text}");
    assert!(text.contains("\r\nallow: "), "{text}");
    assert!(up.requests().is_empty());

    // A route that matches CONNECT explicitly gets it, in authority-form.
    let h = Harness::start(&gateway_with_rules(
        up.addr(),
        "  - matches: [{method: CONNECT}]\n    backendRefs: [{name: app, port: 80}]",
    ))
    .await;
    let raw = raw_exchange(h.addr(80), connect, Duration::from_secs(2)).await;
    assert_eq!(support::statuses(&raw), [403]);
    assert_eq!(up.only().request_line, "CONNECT h:443 HTTP/1.1");
}

#[tokio::test]
async fn an_ejected_endpoint_stays_ejected_across_a_reload() {
    let up = RawUpstream::start().await;
    let (_held, dead) = support::refusing_addr();
    let service = support::service("default", "app", &[up.addr()]);
    // Two endpoints on different ports need two slices (one port each).
    let dead_slice = format!(
        "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: app-dead\n  labels: {{kubernetes.io/service-name: app}}\naddressType: IPv4\nports:\n- {{name: http, port: {}}}\nendpoints:\n- addresses: [\"127.0.0.1\"]\n  conditions: {{ready: true}}\n",
        dead.port()
    );
    let manifests = |label: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: any\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, labels: {{v: \"{label}\"}}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]\n---\n{service}{dead_slice}"
        )
    };
    let h = Harness::start(&manifests("1")).await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(h.get(80, "h", "/").await.status.as_u16());
    }
    assert_eq!(codes.iter().filter(|&&c| c == 503).count(), 1, "{codes:?}");
    // A reload with the same endpoints keeps the ejection: no second 503.
    for i in 2..5 {
        h.rewrite(&manifests(&i.to_string())).await;
        for _ in 0..4 {
            assert_eq!(h.get(80, "h", "/").await.status, 200, "after reload {i}");
        }
    }
}

#[tokio::test]
async fn pooled_connections_close_when_idle_or_when_their_endpoint_leaves() {
    let a = RawUpstream::start().await;
    let b = RawUpstream::start().await;
    let route = |up: &RawUpstream| support::one_route(up.addr());
    let h = Harness::start_with(&route(&a), |o| {
        o.settings.upstream_idle_timeout = Duration::from_millis(400)
    })
    .await;
    let pool = || h.app.server.gateway().upstream_client().idle_connections();
    assert_eq!(h.get(80, "h", "/").await.status, 200);
    assert_eq!(pool().get(&a.addr().to_string()), Some(&1), "{:?}", pool());
    // Endpoint `a` leaves the config: its pooled connection is closed at once.
    h.rewrite(&route(&b)).await;
    assert!(!pool().contains_key(&a.addr().to_string()), "{:?}", pool());
    wait_until(|| a.closed() == 1).await;
    // Idle past the timeout: closed too.
    assert_eq!(h.get(80, "h", "/").await.status, 200);
    assert_eq!(pool().get(&b.addr().to_string()), Some(&1));
    wait_until(|| b.closed() == 1).await;
    assert!(pool().is_empty(), "{:?}", pool());
}

async fn wait_until(f: impl Fn() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 3 s");
}

fn pid_limits(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap()
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(RawUpstream::start());
    let manifests = support::on_port(support::one_route(up.addr()));
    let bin = support::Binary::start_with(
        &manifests,
        support::BinaryOptions {
            wrapper: &["prlimit", "--nofile=256:4096", "--"],
            ..Default::default()
        },
    );
    rt.block_on(bin.ready());
    let limits = pid_limits(bin.child.id());
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[3..5], ["4096", "4096"], "{line}");
    let (status, logs) = bin.stop();
    assert!(status.success());
    assert!(
        logs.contains("max_connections=1984"),
        "(4096 - 128) / 2: {logs}"
    );
}

#[test]
fn out_of_file_descriptors_the_gateway_stays_up_and_recovers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(RawUpstream::start());
    let manifests = support::on_port(support::one_route(up.addr()));

    // With the default cap, a flood of idle connections never starves the admin port.
    let bin = support::Binary::start_with(
        &manifests,
        support::BinaryOptions {
            wrapper: &["prlimit", "--nofile=256:256", "--"],
            run_args: &["--header-read-timeout", "2s"],
            ..Default::default()
        },
    );
    rt.block_on(async {
        bin.ready().await;
        let flood = silent_connections(bin.gateway, 400).await;
        assert_eq!(
            support::send(bin.admin, Req::get("l", "/readyz"))
                .await
                .status,
            200
        );
        let metrics = support::send(bin.admin, Req::get("l", "/metrics"))
            .await
            .text();
        assert!(
            metrics.contains("keyway_connections_refused_total"),
            "{metrics}"
        );
        // The silent ones are closed after the header-read timeout; new clients are served.
        served_within(bin.gateway, Duration::from_secs(10)).await;
        drop(flood);
    });
    let (status, logs) = bin.stop();
    assert!(status.success());
    assert_eq!(logs.matches("accept failed").count(), 0, "{logs}");

    // With a cap above what the descriptors allow, accepting fails: Keyway backs off,
    // logs at a bounded rate, and serves again once descriptors are free.
    let bin = support::Binary::start_with(
        &manifests,
        support::BinaryOptions {
            wrapper: &["prlimit", "--nofile=256:256", "--"],
            run_args: &["--header-read-timeout", "2s", "--max-connections", "100000"],
            ..Default::default()
        },
    );
    let flooded = rt.block_on(async {
        bin.ready().await;
        let flood = silent_connections(bin.gateway, 400).await;
        // Out of descriptors until the watchdog closes the silent connections (2 s); the
        // flood stays connected meanwhile, so only Keyway itself can recover.
        let start = Instant::now();
        served_within(bin.gateway, Duration::from_secs(10)).await;
        served_within(bin.admin, Duration::from_secs(10)).await;
        let flooded = start.elapsed();
        drop(flood);
        flooded
    });
    let (status, logs) = bin.stop();
    assert!(status.success());
    let lines = logs.matches("accept failed").count();
    assert!(lines >= 1, "the failure is reported: {logs}");
    // At most one line a second per listener (data port and admin port) while it lasts.
    let bound = 2 * (flooded.as_secs() as usize + 5);
    assert!(lines <= bound, "{lines} lines in about {flooded:?}: {logs}");
}

/// Opens `n` connections that never send a byte (as many as the server lets in).
async fn silent_connections(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut open = Vec::new();
    for _ in 0..n {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            open.push(s);
        }
    }
    open
}

/// Polls with a short-lived request until one is answered 200, up to `limit`.
async fn served_within(addr: SocketAddr, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        let attempt = tokio::time::timeout(
            Duration::from_millis(500),
            support::try_send(addr, Req::get("h", "/readyz")),
        );
        if let Ok(Ok(r)) = attempt.await {
            if r.status == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} not serving within {limit:?}");
}

#[test]
fn a_stalled_log_output_never_stalls_requests() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(RawUpstream::start());
    let manifests = support::on_port(support::one_route(up.addr()));
    // stderr is a pipe nobody reads until the end: it fills after a few hundred lines.
    let bin = support::Binary::start_with(
        &manifests,
        support::BinaryOptions {
            env: &[("KEYWAY_LOG_BUFFER_LINES", "64")],
            stall_stderr: true,
            ..Default::default()
        },
    );
    rt.block_on(async {
        bin.ready().await;
        let stream = tokio::net::TcpStream::connect(bin.gateway).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let start = Instant::now();
        for i in 0..3000 {
            let req = http::Request::builder()
                .uri(format!("/request-{i}"))
                .header("host", "h")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            sender.ready().await.expect("the connection stays open");
            let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
                .await
                .expect("a request stalled behind the log")
                .unwrap();
            assert_eq!(resp.status(), 200);
            use http_body_util::BodyExt;
            resp.into_body().collect().await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(30));
        let metrics = support::send(bin.admin, Req::get("l", "/metrics"))
            .await
            .text();
        let dropped: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("keyway_log_lines_dropped_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(dropped > 0, "{metrics}");
    });
    let (status, _) = bin.stop();
    assert!(status.success());
}
