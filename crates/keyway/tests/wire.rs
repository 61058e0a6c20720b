//! What the upstream receives, byte for byte: read off a socket by the raw recorder, never
//! through an HTTP library that could join, sort, re-case or re-frame it on the way.

use std::time::Duration;

use crate::support;
use crate::support::{raw_exchange, Harness};
use keyway_testkit::raw::{Captured, RawUpstream, Reply};

/// A Gateway whose policy reads the key from a header, a query parameter and a cookie, sets
/// `x-client-id`, and (unless `forward`) strips the key.
async fn keyed(up: &RawUpstream, forward: bool) -> Harness {
    Harness::start(&format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys}}\nstringData: {{alice: k-alice-1}}\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  apiKeyAuth:\n    secretRef: {{name: keys}}\n    keySources: [{{header: x-api-key}}, {{query: api_key}}, {{cookie: auth}}]\n    clientIdHeader: x-client-id\n    forwardCredential: {forward}\n",
        support::one_route(up.addr())
    ))
    .await
}

/// Sends `request` (with `connection: close` added) and returns what the upstream got.
async fn through(h: &Harness, up: &RawUpstream, request: &str) -> (Vec<u16>, Captured) {
    let before = up.requests().len();
    let request = request.replacen("\r\n", "\r\nconnection: close\r\n", 1);
    let raw = raw_exchange(h.addr(80), request.as_bytes(), Duration::from_secs(5)).await;
    let statuses = support::statuses(&raw);
    let seen = up.requests();
    assert_eq!(
        seen.len(),
        before + 1,
        "one request upstream; client got {statuses:?}"
    );
    (statuses, seen[before].clone())
}

#[tokio::test]
async fn path_and_query_bytes_and_version_are_forwarded_exactly() {
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    let (st, seen) = through(
        &h,
        &up,
        "GET /a%20b/c%3Fd;p=1?x=%2F%20&y=a+b&&z&api_key=k-alice-1&w=%E2%82%AC HTTP/1.1\r\nhost: h\r\n\r\n",
    )
    .await;
    assert_eq!(st, [200]);
    // Only the key parameter is gone; every other byte of the query is as sent, in order.
    assert_eq!(
        seen.request_line,
        "GET /a%20b/c%3Fd;p=1?x=%2F%20&y=a+b&&z&w=%E2%82%AC HTTP/1.1"
    );
    // HTTP/1.0 clients are forwarded as HTTP/1.1 (Keyway frames the upstream request).
    let (st, seen) = through(
        &h,
        &up,
        "GET /ten HTTP/1.0\r\nhost: h\r\nx-api-key: k-alice-1\r\n\r\n",
    )
    .await;
    assert_eq!(st, [200]);
    assert_eq!(seen.version(), "HTTP/1.1");
}

#[tokio::test]
async fn duplicate_header_lines_stay_separate_and_in_order() {
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    let (_, seen) = through(
        &h,
        &up,
        "GET / HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\nx-dup: 1\r\nX-Dup: two, 2\r\nx-dup: 3\r\naccept: a/b\r\n\r\n",
    )
    .await;
    assert_eq!(seen.header_all("x-dup"), ["1", "two, 2", "3"]);
    assert_eq!(seen.header_all("accept"), ["a/b"]);
}

#[tokio::test]
async fn hop_by_hop_headers_and_those_connection_names_never_arrive() {
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    let (_, seen) = through(
        &h,
        &up,
        "GET / HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\nconnection: keep-alive, x-private, x-client-id\r\nkeep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nproxy-authorization: Basic abc\r\nte: trailers\r\nupgrade: websocket\r\nx-private: secret\r\nx-kept: yes\r\n\r\n",
    )
    .await;
    for gone in [
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "upgrade",
        "x-private",
    ] {
        assert_eq!(seen.header_all(gone), Vec::<String>::new(), "{gone}");
    }
    // `Connection` naming the client-id header cannot remove what Keyway sets.
    assert_eq!(seen.header_all("x-client-id"), ["alice"]);
    assert_eq!(seen.header_all("x-kept"), ["yes"]);
    // hyper adds its own `connection` only when it means to close; never the client's.
    assert!(seen
        .header_all("connection")
        .iter()
        .all(|v| !v.contains("x-private")));
}

#[tokio::test]
async fn the_key_is_stripped_from_every_source_and_only_it() {
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    let (st, seen) = through(
        &h,
        &up,
        "GET /p?a=1&api_key=k-alice-1&b=2 HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\ncookie: x=1; auth=k-alice-1; y=2\r\ncookie: auth=k-alice-1\r\nx-client-id: forged\r\n\r\n",
    )
    .await;
    assert_eq!(st, [200]);
    assert_eq!(seen.request_line, "GET /p?a=1&b=2 HTTP/1.1");
    assert_eq!(seen.header_all("x-api-key"), Vec::<String>::new());
    assert_eq!(seen.header_all("cookie"), ["x=1; y=2"]);
    assert_eq!(seen.header_all("x-client-id"), ["alice"]);
    let head = String::from_utf8_lossy(&seen.head).into_owned();
    assert!(!head.contains("k-alice-1"), "{head}");

    // forwardCredential keeps all of it.
    let up = RawUpstream::start().await;
    let h = keyed(&up, true).await;
    let (_, seen) = through(
        &h,
        &up,
        "GET /p?api_key=k-alice-1 HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\ncookie: auth=k-alice-1\r\n\r\n",
    )
    .await;
    assert_eq!(seen.request_line, "GET /p?api_key=k-alice-1 HTTP/1.1");
    assert_eq!(seen.header_all("x-api-key"), ["k-alice-1"]);
    assert_eq!(seen.header_all("cookie"), ["auth=k-alice-1"]);
}

#[tokio::test]
async fn forwarding_headers_are_set_as_envoy_sets_them() {
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    let (_, seen) = through(
        &h,
        &up,
        "GET / HTTP/1.1\r\nhost: h:8080\r\nx-api-key: k-alice-1\r\nx-forwarded-proto: https\r\nx-request-id: my-id-1\r\n\r\n",
    )
    .await;
    assert_eq!(seen.header_all("host"), ["h:8080"]);
    assert_eq!(seen.header_all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(
        seen.header_all("x-forwarded-proto"),
        ["http"],
        "the client's is overwritten"
    );
    assert_eq!(
        seen.header_all("x-request-id"),
        ["my-id-1"],
        "an incoming id is kept"
    );
    let (_, seen) = through(
        &h,
        &up,
        "GET / HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\n\r\n",
    )
    .await;
    let id = seen.header("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "a UUID is generated: {id}");
}

/// `x-forwarded-for`, `x-forwarded-proto` and a made `x-request-id` arrive once each,
/// whichever way the gateway sets them: written as the head's last lines (a bodyless `GET` with neither from the
/// client and no header filter), inserted for hyper's client (a request with a body),
/// merged with the client's own, or seen and changed by a rule's and a backend's header
/// filter.
#[tokio::test]
async fn forwarding_fields_arrive_once_on_every_path() {
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    let both = |seen: &Captured, xff: &str, proto: &str| {
        assert_eq!(seen.header_all("x-forwarded-for"), [xff], "{seen:?}");
        assert_eq!(seen.header_all("x-forwarded-proto"), [proto], "{seen:?}");
        let id = seen.header("x-request-id").expect("a request id");
        assert_eq!(id.len(), 36, "{id}");
    };
    let (st, seen) = through(
        &h,
        &up,
        "GET /a HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\nx-extra: 1\r\n\r\n",
    )
    .await;
    assert_eq!(st, [200]);
    both(&seen, "127.0.0.1", "http");
    let head = String::from_utf8(seen.head.clone()).unwrap();
    let id = seen.header("x-request-id").unwrap();
    assert!(
        head.ends_with(&format!(
            "x-request-id: {id}\r\nx-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        )),
        "{head}"
    );
    let (st, seen) = through(
        &h,
        &up,
        "POST /a HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\ncontent-length: 2\r\n\r\nhi",
    )
    .await;
    assert_eq!((st, &seen.body[..]), (vec![200], &b"hi"[..]));
    both(&seen, "127.0.0.1", "http");
    // The client's own: its x-forwarded-for is appended to, its x-forwarded-proto replaced.
    for (field, xff) in [
        ("X-Forwarded-For: 203.0.113.9", "203.0.113.9, 127.0.0.1"),
        ("X-Forwarded-Proto: https", "127.0.0.1"),
    ] {
        let request =
            format!("GET /a HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\n{field}\r\n\r\n");
        let (_, seen) = through(&h, &up, &request).await;
        both(&seen, xff, "http");
    }

    // Header filters run after the fields are set, and see them.
    let up = RawUpstream::start().await;
    let h = Harness::start(&support::gateway_with_rules(
        up.addr(),
        "  - matches: [{path: {type: PathPrefix, value: /rule}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-forwarded-proto, value: rule}], remove: [x-forwarded-for, x-request-id]}
    backendRefs: [{name: app, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /backend}}]
    backendRefs:
    - name: app
      port: 80
      filters:
      - type: RequestHeaderModifier
        requestHeaderModifier: {add: [{name: x-forwarded-for, value: 192.0.2.1}]}",
    ))
    .await;
    let (_, seen) = through(&h, &up, "GET /rule HTTP/1.1\r\nhost: h\r\n\r\n").await;
    assert!(seen.header_all("x-forwarded-for").is_empty(), "{seen:?}");
    assert!(seen.header_all("x-request-id").is_empty(), "{seen:?}");
    assert_eq!(seen.header_all("x-forwarded-proto"), ["rule"]);
    let (_, seen) = through(&h, &up, "GET /backend HTTP/1.1\r\nhost: h\r\n\r\n").await;
    // `add` appends to the value (as the conformance suite expects).
    both(&seen, "127.0.0.1,192.0.2.1", "http");
}

#[tokio::test]
async fn chunked_bodies_arrive_with_their_trailers() {
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    let (st, seen) = through(
        &h,
        &up,
        "POST /t HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n",
    )
    .await;
    assert_eq!(st, [200]);
    assert_eq!(seen.body, b"hello");
    assert_eq!(seen.header_all("transfer-encoding"), ["chunked"]);
    let framed = String::from_utf8_lossy(&seen.body_framed).into_owned();
    assert!(
        framed.ends_with("0\r\nx-checksum: abc\r\n\r\n"),
        "{framed:?}"
    );
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_keyway_and_not_passed_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    let mut s = tokio::net::TcpStream::connect(h.addr(80)).await.unwrap();
    s.write_all(b"PUT /up HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\nexpect: 100-continue\r\ncontent-length: 5\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    // The client waits for the interim response before it sends the body.
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("a 100 Continue")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue\r\n"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert_eq!(support::statuses(&rest), [200]);
    let seen = up.only();
    assert_eq!(seen.body, b"hello");
    assert_eq!(seen.header_all("expect"), Vec::<String>::new());

    // Refused before the body is sent: no 100, no body read, nothing upstream.
    let raw = raw_exchange(
        h.addr(80),
        b"PUT /up HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(support::statuses(&raw), [401]);
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn upstream_responses_come_back_as_sent_but_for_hop_by_hop() {
    let up = RawUpstream::with(|_| {
        Reply::raw("HTTP/1.1 201 Created\r\nx-a: 1\r\nX-A: 2\r\nconnection: x-secret\r\nx-secret: s\r\nkeep-alive: timeout=9\r\ncontent-length: 4\r\n\r\nmade")
    })
    .await;
    let h = keyed(&up, false).await;
    let raw = raw_exchange(
        h.addr(80),
        b"GET / HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 201 created\r\n"), "{text}");
    assert_eq!(text.matches("\r\nx-a: ").count(), 2, "{text}");
    assert!(
        !text.contains("x-secret") && !text.contains("keep-alive"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nmade"), "{text}");
}

/// `curl` (a client we did not write) against `addr` with these arguments; the status code.
fn curl(addr: std::net::SocketAddr, args: &[&str]) -> u16 {
    let out = std::process::Command::new(keyway_testkit::external::program("curl"))
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "host: h",
        ])
        .args(args)
        .arg(format!("http://{addr}/c?api_key=k-alice-1&x=1"))
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_as_the_client_over_http1_and_http2() {
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    let addr = h.addr(80);
    let statuses = tokio::task::spawn_blocking(move || {
        (
            curl(addr, &["--http1.1"]),
            curl(addr, &["--http2-prior-knowledge"]),
        )
    })
    .await
    .unwrap();
    assert_eq!(statuses, (200, 200));
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    for s in seen {
        assert_eq!(s.request_line, "GET /c?x=1 HTTP/1.1");
        assert_eq!(s.header_all("x-client-id"), ["alice"]);
        assert_eq!(s.header_all("host"), ["h"]);
    }
}

// ---------------------------------------------------------------------------------------
// Responses as the upstream frames them. A bodyless `GET` or `HEAD` is read by Keyway's
// own HTTP/1 reader (`upstream/h1.rs`), not hyper's client: every framing RFC 9112 allows
// must come back whole, and a connection goes back to the pool only when the next
// response on it cannot be out of step.

/// The responses the framing tests' upstream gives, by path; `/long` has `long` bytes.
fn framed(req: &Captured, long: usize) -> Reply {
    let body = "x".repeat(long);
    match req.target() {
        "/chunked" => Reply::raw(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n7;ext=\"a b\"\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n",
        ),
        "/long" => Reply::raw(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {long}\r\n\r\n{body}"
        )),
        "/empty" => Reply::raw("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
        "/head" => Reply::raw("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
        "/no-content" => Reply::raw("HTTP/1.1 204 No Content\r\n\r\n"),
        "/not-modified" => Reply::raw("HTTP/1.1 304 Not Modified\r\netag: \"e\"\r\n\r\n"),
        "/early" => Reply::raw(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
        ),
        "/to-the-end" => Reply::raw("HTTP/1.1 200 OK\r\n\r\nuntil the connection ends").closing(),
        "/close" => Reply::raw("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye"),
        "/http10" => Reply::raw("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold"),
        "/both" => Reply::raw(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        "/extra" => Reply::raw(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nforged",
        ),
        _ => Reply::ok(),
    }
}

/// `method path` on a keep-alive client connection of its own; the raw response.
async fn fetch(h: &Harness, method: &str, path: &str) -> Vec<u8> {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\nconnection: close\r\n\r\n"
    );
    raw_exchange(h.addr(80), req.as_bytes(), Duration::from_secs(5)).await
}

/// The body of the one response in `raw` (de-chunked), and the whole text.
fn one_body(raw: &[u8]) -> (u16, String, String) {
    let r = support::responses(raw);
    assert_eq!(r.len(), 1, "{}", String::from_utf8_lossy(raw));
    let (status, body) = r.into_iter().next().unwrap();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        String::from_utf8_lossy(raw).into_owned(),
    )
}

async fn every_framing_comes_back_whole(pieces: usize, long: usize) {
    let up = RawUpstream::with(move |r| framed(r, long).in_pieces(pieces)).await;
    let h = keyed(&up, false).await;
    // Reusable responses: all on the upstream's first connection.
    let (st, body, text) = one_body(&fetch(&h, "GET", "/chunked").await);
    assert_eq!((st, body.as_str()), (200, "hello, world"), "{text}");
    let (st, body, _) = one_body(&fetch(&h, "GET", "/long").await);
    assert_eq!((st, body.len()), (200, long));
    assert!(body.bytes().all(|b| b == b'x'));
    let (st, body, _) = one_body(&fetch(&h, "GET", "/empty").await);
    assert_eq!((st, body.as_str()), (200, ""));
    let raw = fetch(&h, "HEAD", "/head").await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("content-length: 5\r\n") && text.ends_with("\r\n\r\n"),
        "{text}"
    );
    let (st, _, text) = one_body(&fetch(&h, "GET", "/no-content").await);
    assert!(st == 204 && text.ends_with("\r\n\r\n"), "{text}");
    let (st, _, text) = one_body(&fetch(&h, "GET", "/not-modified").await);
    assert!(st == 304 && text.contains("etag: \"e\""), "{text}");
    let (st, body, text) = one_body(&fetch(&h, "GET", "/early").await);
    assert_eq!((st, body.as_str()), (200, "final"), "{text}");
    assert!(
        !text.contains("103") && !text.contains("100 Continue"),
        "{text}"
    );
    let seen = up.requests();
    assert_eq!(seen.len(), 7);
    assert!(
        seen.iter().all(|r| r.connection == 0),
        "every one of these responses leaves the connection reusable (pieces {pieces}): {:?}",
        seen.iter()
            .map(|r| (r.target().to_string(), r.connection))
            .collect::<Vec<_>>()
    );
    // Not reusable: each is the last on its connection.
    for (path, want) in [
        ("/to-the-end", "until the connection ends"),
        ("/close", "bye"),
        ("/http10", "old"),
        ("/both", "hello"),
        ("/extra", "ok"),
    ] {
        let before = up.requests().len();
        let (st, body, text) = one_body(&fetch(&h, "GET", path).await);
        assert_eq!((st, body.as_str()), (200, want), "{path}: {text}");
        let (st, _, _) = one_body(&fetch(&h, "GET", "/next").await);
        assert_eq!(st, 200);
        let seen = up.wait_for(before + 2).await;
        assert_ne!(
            seen[before].connection,
            seen[before + 1].connection,
            "after {path} (pieces {pieces}) the next request needs a new connection"
        );
    }
}

#[tokio::test]
async fn every_response_framing_comes_back_whole_and_reuses_only_safe_connections() {
    every_framing_comes_back_whole(0, 100_000).await;
}

#[tokio::test]
async fn responses_arriving_a_few_bytes_at_a_time_come_back_whole() {
    every_framing_comes_back_whole(7, 2_000).await;
}

#[tokio::test]
async fn responses_framed_ambiguously_or_wrongly_are_refused() {
    let up = RawUpstream::with(|r| match r.target() {
        "/two-lengths" => {
            Reply::raw("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc")
        }
        "/bad-length" => Reply::raw("HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nab"),
        "/switch" => Reply::raw("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n"),
        "/folded" => {
            Reply::raw("HTTP/1.1 200 OK\r\nx-a: 1\r\n continued\r\ncontent-length: 0\r\n\r\n")
        }
        "/cut-head" => Reply::raw("HTTP/1.1 200 OK\r\ncontent-le").closing(),
        "/bare-lf-chunk" => {
            Reply::raw("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n")
        }
        "/cut-body" => Reply::raw("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf").closing(),
        _ => Reply::ok(),
    })
    .await;
    let h = keyed(&up, false).await;
    for path in [
        "/two-lengths",
        "/bad-length",
        "/switch",
        "/folded",
        "/cut-head",
    ] {
        let (st, _, text) = one_body(&fetch(&h, "GET", path).await);
        assert_eq!(st, 502, "{path}: {text}");
    }
    // A body that breaks after its head: the client's connection closes before a complete
    // response (the head may have gone already), never completed with bytes the upstream
    // did not frame.
    let raw = String::from_utf8_lossy(&fetch(&h, "GET", "/bare-lf-chunk").await).into_owned();
    assert!(
        !raw.contains("hello") && !raw.ends_with("0\r\n\r\n"),
        "{raw}"
    );
    let raw = String::from_utf8_lossy(&fetch(&h, "GET", "/cut-body").await).into_owned();
    if let Some((head, body)) = raw.split_once("\r\n\r\n") {
        assert!(
            head.contains("content-length: 10") && body.len() < 10,
            "{raw}"
        );
    }
    // Each went once, and none of those connections was used again.
    let seen = up.requests();
    assert_eq!(seen.len(), 7, "{seen:#?}");
    let mut conns: Vec<usize> = seen.iter().map(|r| r.connection).collect();
    conns.dedup();
    assert_eq!(conns.len(), 7, "a connection per request: {conns:?}");
}

#[tokio::test]
async fn a_pooled_connection_closed_as_a_get_arrives_is_retried_once_on_a_new_one() {
    // Connection 0 answers `/first`, then closes on `/second` without a byte: the race of
    // an upstream closing an idle connection just as a request is sent on it.
    let up = RawUpstream::with(|r| match (r.connection, r.target()) {
        (0, "/second") | (_, "/always-closes") => Reply::raw(Vec::new()).closing(),
        _ => Reply::ok(),
    })
    .await;
    let h = keyed(&up, false).await;
    let (st, _, _) = one_body(&fetch(&h, "GET", "/first").await);
    assert_eq!(st, 200);
    let (st, body, text) = one_body(&fetch(&h, "GET", "/second").await);
    assert_eq!((st, body.as_str()), (200, "ok"), "{text}");
    let seen: Vec<(String, usize)> = up
        .requests()
        .iter()
        .map(|r| (r.target().to_string(), r.connection))
        .collect();
    assert_eq!(
        seen,
        [
            ("/first".into(), 0),
            ("/second".into(), 0),
            ("/second".into(), 1)
        ],
        "the GET went once more, on a new connection"
    );
    // On a new connection the same failure is the upstream's answer: 502, sent once.
    let (st, _, _) = one_body(&fetch(&h, "GET", "/always-closes").await);
    assert_eq!(st, 502);
    let (st, _, _) = one_body(&fetch(&h, "GET", "/always-closes").await);
    assert_eq!(st, 502);
    let tries = up
        .requests()
        .iter()
        .filter(|r| r.target() == "/always-closes")
        .count();
    // The first found connection 1 pooled (sent twice: there, then on a new one); the
    // second found the pool empty (sent once).
    assert_eq!(tries, 3, "never more than twice per request");
}

#[tokio::test]
async fn through_either_upstream_client_the_client_gets_one_framing_and_http11() {
    // `GET` takes Keyway's own exchange, `POST` hyper's client: the same response rules.
    let up = RawUpstream::with(|r| match r.target() {
        "/both" => Reply::raw(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        "/ten" => Reply::raw("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold"),
        _ => Reply::ok(),
    })
    .await;
    let h = keyed(&up, false).await;
    for method in ["GET", "POST"] {
        let (st, body, text) = one_body(&fetch(&h, method, "/both").await);
        assert_eq!((st, body.as_str()), (200, "hello"), "{method}: {text}");
        assert!(
            !text.to_ascii_lowercase().contains("content-length"),
            "{method}: {text}"
        );
        let (st, body, text) = one_body(&fetch(&h, method, "/ten").await);
        assert_eq!((st, body.as_str()), (200, "old"), "{method}: {text}");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{method}: {text}");
    }
}

// ---------------------------------------------------------------------------------------
// Keyway's own HTTP/1.1 server loop (`listener/http1.rs`) serves a keep-alive `GET` or
// `HEAD` with no body and no connection fields; everything else goes to hyper's server.
// The tests above mostly send `connection: close`, which is hyper's; these keep the
// connection open, so the loop answers.

/// `GET path` with a valid key and no connection field: a request the loop takes.
fn kept(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\n\r\n")
}

/// The last request of a pipelined run: it closes the connection (and is hyper's).
fn last(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\nconnection: close\r\n\r\n")
}

/// The response heads in `raw`, in order (bodies skipped by their framing).
fn heads(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    text.split("\r\n\r\n")
        .filter(|s| s.contains("HTTP/1.1 "))
        .map(|s| s[s.find("HTTP/1.1 ").unwrap()..].to_string())
        .collect()
}

#[tokio::test]
async fn keep_alive_requests_get_every_framing_back_whole_on_one_connection() {
    let up = RawUpstream::with(|r| framed(r, 100_000)).await;
    let h = keyed(&up, false).await;
    let paths = [
        "/chunked",
        "/long",
        "/empty",
        "/no-content",
        "/not-modified",
        "/early",
        "/to-the-end",
        "/close",
        "/http10",
        "/both",
        "/extra",
    ];
    let mut pipelined: String = paths.iter().map(|p| kept(p)).collect();
    pipelined.push_str(&last("/last"));
    let raw = raw_exchange(h.addr(80), pipelined.as_bytes(), Duration::from_secs(5)).await;
    let got = support::responses(&raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let bodies: Vec<(u16, String)> = got
        .iter()
        .map(|(s, b)| (*s, String::from_utf8_lossy(b).into_owned()))
        .collect();
    let long = "x".repeat(100_000);
    assert_eq!(
        bodies,
        [
            (200, "hello, world"),
            (200, long.as_str()),
            (200, ""),
            (204, ""),
            (304, ""),
            (200, "final"),
            (200, "until the connection ends"),
            (200, "bye"),
            (200, "old"),
            (200, "hello"),
            (200, "ok"),
            (200, "ok"),
        ]
        .map(|(s, b)| (s, b.to_string())),
        "{}",
        &text[..text.len().min(3000)]
    );
    // How each was framed for the client: as Keyway's server frames it.
    let heads = heads(&raw);
    assert_eq!(heads.len(), 12, "{heads:#?}");
    let has = |i: usize, field: &str| {
        assert!(heads[i].contains(field), "{}: {}", paths[i], heads[i]);
    };
    has(0, "\r\ntransfer-encoding: chunked");
    has(1, "\r\ncontent-length: 100000");
    has(2, "\r\ncontent-length: 0");
    assert!(
        !heads[3].contains("content-length") && !heads[3].contains("transfer-encoding"),
        "{}",
        heads[3]
    );
    // Close-delimited upstream: chunked to the client, whose connection stays open.
    has(6, "\r\ntransfer-encoding: chunked");
    // The upstream's `connection: close` and HTTP/1.0 are of its hop only.
    assert!(!heads[7].contains("connection"), "{}", heads[7]);
    assert!(heads[8].starts_with("HTTP/1.1 200 OK"), "{}", heads[8]);
    assert!(!heads[9].contains("content-length"), "{}", heads[9]);
    for head in &heads[..11] {
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(!head.contains("connection"), "{head}");
    }
    // Served in order, on the client's one connection.
    let targets: Vec<String> = up
        .requests()
        .iter()
        .map(|r| r.target().to_string())
        .collect();
    let mut want: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    want.push("/last".into());
    assert_eq!(targets, want);
}

#[tokio::test]
async fn field_names_arrive_as_each_request_on_a_connection_spelled_them() {
    // Keyway's loop remembers a connection's last field names by position and reuses one a
    // field spells again. Names that change, change case, move or grow in number from one
    // request to the next on one connection must each reach the upstream as that request
    // named them (in lower case, as Keyway writes every name).
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    let requests = [
        ("/1", "X-Api-Key: k-alice-1\r\nX-One: a\r\nX-Two: b\r\n"),
        ("/2", "x-api-key: k-alice-1\r\nX-Uno: a\r\nX-Two: b\r\n"),
        (
            "/3",
            "X-API-KEY: k-alice-1\r\nx-one: c\r\nX-Dos: d\r\nX-Three: e\r\n",
        ),
        ("/4", "X-Two: f\r\nX-Api-Key: k-alice-1\r\n"),
    ];
    let mut pipelined: String = requests
        .iter()
        .map(|(path, fields)| format!("GET {path} HTTP/1.1\r\nhost: h\r\n{fields}\r\n"))
        .collect();
    pipelined.push_str(&last("/last"));
    let raw = raw_exchange(h.addr(80), pipelined.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(support::statuses(&raw), [200; 5]);
    let seen = up.requests();
    assert_eq!(seen.len(), 5);
    let ours = ["x-one", "x-two", "x-uno", "x-dos", "x-three"];
    for ((path, fields), got) in requests.iter().zip(&seen) {
        assert_eq!(got.target(), *path);
        let sent: Vec<(String, String)> = fields
            .split("\r\n")
            .filter_map(|line| line.split_once(": "))
            .filter(|(name, _)| ours.contains(&name.to_ascii_lowercase().as_str()))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
            .collect();
        let received: Vec<(String, String)> = got
            .headers
            .iter()
            .filter(|(name, _)| ours.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
            .collect();
        assert_eq!(received, sent, "{path}");
        // The key is read under every spelling of its name, and stripped.
        assert!(
            got.headers
                .iter()
                .all(|(n, _)| !n.eq_ignore_ascii_case("x-api-key")),
            "{path}: {:?}",
            got.headers
        );
        assert!(got
            .headers
            .iter()
            .any(|(n, v)| n == "x-client-id" && v == b"alice"));
    }
}

/// The field lines of a response head, sorted, but for `connection`.
fn field_lines(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = head
        .split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty() && !l.starts_with("connection:"))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn upstream_fields_reach_the_client_alike_from_the_loop_and_from_hyper() {
    // The loop copies the upstream's end-to-end fields as bytes; hyper's server writes
    // them from a map. Both must send the same fields: lower-case names, repeated fields
    // in order, the upstream's `date`, no hop-by-hop field, one framing field.
    let up = RawUpstream::with(|_| {
        Reply::raw(
            "HTTP/1.1 200 OK\r\nServer: up\r\nX-A: 1\r\nConnection: keep-alive, Upgrade\r\nKeep-Alive: timeout=5\r\nSet-Cookie: s=1\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\nx-a: 2\r\nProxy-Connection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let h = keyed(&up, false).await;
    let both = format!("{}{}", kept("/loop"), last("/hyper"));
    let raw = raw_exchange(h.addr(80), both.as_bytes(), Duration::from_secs(5)).await;
    let heads = heads(&raw);
    assert_eq!(heads.len(), 2, "{heads:#?}");
    let (from_loop, from_hyper) = (field_lines(&heads[0]), field_lines(&heads[1]));
    assert_eq!(
        from_loop,
        [
            "content-length: 2",
            "date: Tue, 01 Dec 2026 10:00:00 GMT",
            "server: up",
            "set-cookie: s=1",
            "x-a: 1",
            "x-a: 2",
        ],
        "{heads:#?}"
    );
    assert_eq!(from_loop, from_hyper, "{heads:#?}");
    for head in &heads {
        let a: Vec<&str> = head
            .split("\r\n")
            .filter(|l| l.starts_with("x-a:"))
            .collect();
        assert_eq!(a, ["x-a: 1", "x-a: 2"], "{head}");
    }
    assert!(!heads[0].contains("connection"), "{}", heads[0]);
    assert_eq!(support::responses(&raw).len(), 2);
}

#[tokio::test]
async fn a_head_request_kept_alive_gets_the_fields_of_a_get_and_no_body() {
    let up = RawUpstream::with(|r| framed(r, 10)).await;
    let h = keyed(&up, false).await;
    // HEAD first: a body sent after its head would be read as the next response.
    let req = format!(
        "HEAD /head HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\n\r\nHEAD /head HTTP/1.1\r\nhost: h\r\n\r\n{}",
        last("/long")
    );
    let raw = raw_exchange(h.addr(80), req.as_bytes(), Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&raw);
    let parts: Vec<&str> = text.split("\r\n\r\n").collect();
    // Head 1, head 2 (Keyway's own 401: its length, no body), head 3, body 3.
    assert_eq!(parts.len(), 4, "{text}");
    assert!(
        parts[0].starts_with("HTTP/1.1 200 OK") && parts[0].contains("content-length: 5"),
        "{text}"
    );
    assert!(
        parts[1].starts_with("HTTP/1.1 401 Unauthorized")
            && parts[1].contains("content-length: ")
            && parts[1].contains("www-authenticate: APIKey"),
        "{text}"
    );
    assert!(parts[2].starts_with("HTTP/1.1 200 OK"), "{text}");
    assert_eq!(parts[3], "xxxxxxxxxx", "{text}");
}

#[tokio::test]
async fn a_connection_goes_to_hypers_server_at_the_first_request_the_loop_does_not_take() {
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    // In one write: the loop takes the first, hyper the rest (a body, then plain GETs).
    let req = format!(
        "{}POST /b HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\ncontent-length: 5\r\n\r\nhello{}{}",
        kept("/a"),
        kept("/c"),
        last("/d")
    );
    let raw = raw_exchange(h.addr(80), req.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(support::statuses(&raw), [200, 200, 200, 200]);
    let seen = up.requests();
    let targets: Vec<&str> = seen.iter().map(|r| r.target()).collect();
    assert_eq!(targets, ["/a", "/b", "/c", "/d"]);
    assert_eq!(seen[1].body, b"hello");

    // A head that arrives in pieces, its framing field in the second: all of it reaches
    // hyper, which frames the body by it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(h.addr(80)).await.unwrap();
    s.write_all(b"POST /e HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\ncontent-le")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"ngth: 3\r\nconnection: close\r\n\r\nabc")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(support::statuses(&out), [200]);
    let e = up.requests().pop().unwrap();
    assert_eq!((e.target(), e.body.as_slice()), ("/e", &b"abc"[..]));
}

#[tokio::test]
async fn smuggling_shapes_after_a_kept_alive_request_are_judged_by_hyper() {
    let up = RawUpstream::start().await;
    let h = keyed(&up, false).await;
    // After one request the loop served: a request framed both ways, as the smuggling
    // suite's `cl-and-te`. hyper frames it by its chunks, answers it and closes: the
    // request hidden behind it never reaches the upstream.
    let req = format!(
        "{}POST /x HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: h\r\nx-api-key: k-alice-1\r\n\r\n",
        kept("/a")
    );
    let raw = raw_exchange(h.addr(80), req.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(support::statuses(&raw), [200, 200]);
    let seen = up.requests();
    let lines: Vec<&str> = seen.iter().map(|r| r.request_line.as_str()).collect();
    assert_eq!(lines, ["GET /a HTTP/1.1", "POST /x HTTP/1.1"]);
    assert!(seen[1].body.is_empty());
}

#[tokio::test]
async fn a_client_that_leaves_mid_request_has_its_upstream_exchange_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that never answers, and tells when its connection closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    let closed = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    let h = Harness::start(&support::one_route(up_addr)).await;
    let mut client = tokio::net::TcpStream::connect(h.addr(80)).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: h\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);
    // Well inside the 15 s upstream timeout: the exchange went with the client.
    tokio::time::timeout(Duration::from_secs(3), closed)
        .await
        .expect("the upstream connection closes once the client has gone")
        .unwrap();
}

/// Python's `http.client` (a client we did not write, strict about framing: it reads a
/// `HEAD` answer's length without a body, de-chunks, and drops a connection the server
/// says it will close) keeps one connection through Keyway's own loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_client_keeps_one_connection_through_every_framing() {
    let up = RawUpstream::with(|r| framed(r, 1000)).await;
    let h = keyed(&up, false).await;
    let script = format!(
        r#"
import http.client
c = http.client.HTTPConnection("127.0.0.1", {port}, timeout=5)
connects = 0
connect = c.connect
def counted():
    global connects
    connects += 1
    connect()
c.connect = counted
for method, path in [("GET", "/chunked"), ("HEAD", "/head"), ("GET", "/long"),
                     ("GET", "/no-content"), ("GET", "/to-the-end"), ("GET", "/close")]:
    c.request(method, path, headers={{"host": "h", "x-api-key": "k-alice-1"}})
    r = c.getresponse()
    body = r.read()
    print(method, path, r.status, len(body), r.version)
print("connects", connects)
"#,
        port = h.addr(80).port()
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(keyway_testkit::external::program("python3"))
            .args(["-c", &script])
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "GET /chunked 200 12 11",
            "HEAD /head 200 0 11",
            "GET /long 200 1000 11",
            "GET /no-content 204 0 11",
            "GET /to-the-end 200 25 11",
            "GET /close 200 3 11",
            "connects 1",
        ]
    );
}
