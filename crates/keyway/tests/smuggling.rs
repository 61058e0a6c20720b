//! Request smuggling and malformed requests, over raw sockets: for each, what the client
//! gets and what the upstream receives.
//!
//! The gateway protects `/protected` with an API key and forwards everything else. Every
//! attack below tries to get a request for `/protected` to the upstream without a key, by
//! hiding it where the gateway and the upstream might disagree about where one request
//! ends: in a body whose length is ambiguous, behind a malformed header, after a refused
//! request. The gateway parses each request once and frames it anew for the upstream, so
//! the upstream can only ever see requests the gateway itself parsed, routed and checked.
//! Each case pins what the client gets back and the exact request lines that reached the
//! upstream (recorded off the wire, not by an HTTP library).

use std::time::Duration;

use crate::support;
use crate::support::{gateway_with_rules, raw_exchange, Harness};
use keyway_testkit::raw::RawUpstream;

async fn gateway(up: &RawUpstream) -> Harness {
    let rules = "  - name: protected\n    matches: [{path: {type: PathPrefix, value: /protected}}]\n    backendRefs: [{name: app, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: app, port: 80}]";
    Harness::start(&format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys}}\nstringData: {{alice: k-alice-1}}\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r, sectionName: protected}}]\n  apiKeyAuth: {{secretRef: {{name: keys}}}}\n",
        gateway_with_rules(up.addr(), rules)
    ))
    .await
}

const SMUGGLED: &str = "GET /protected/secret HTTP/1.1\r\nhost: h\r\n\r\n";

/// One attack, and what must come of it.
struct Case {
    name: &'static str,
    bytes: String,
    /// Status of every response the client gets, in order.
    client: &'static [u16],
    /// Every request line the upstream receives, in order.
    upstream: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let c = |name, bytes: String, client, upstream| Case {
        name,
        bytes,
        client,
        upstream,
    };
    let post = |headers: &str, body: &str| {
        format!("POST /public HTTP/1.1\r\nhost: h\r\n{headers}\r\n{body}")
    };
    vec![
        c("cl-and-te", post("content-length: 4\r\ntransfer-encoding: chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), &[200], &["POST /public HTTP/1.1"]),
        c("te-and-cl", post("transfer-encoding: chunked\r\ncontent-length: 70\r\n", &format!("0\r\n\r\n{SMUGGLED}")), &[200], &["POST /public HTTP/1.1"]),
        c("te-xchunked", post("transfer-encoding: xchunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), &[400], &[]),
        c("te-space-before-colon", post("transfer-encoding : chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), &[400], &[]),
        c("te-tab", post("transfer-encoding:\tchunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")), &[200, 401], &["POST /public HTTP/1.1"]),
        c("te-chunked-then-identity", post("transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n", &format!("0\r\n\r\n{SMUGGLED}")), &[400], &[]),
        c("te-chunked-gzip", post("transfer-encoding: chunked, gzip\r\n", &format!("0\r\n\r\n{SMUGGLED}")), &[400], &[]),
        c("te-on-http10", format!("POST /public HTTP/1.0\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}"), &[400], &[]),
        c("cl-duplicate-different", post("content-length: 4\r\ncontent-length: 47\r\n", &format!("abcd{SMUGGLED}")), &[400], &[]),
        c("cl-list", post("content-length: 4, 47\r\n", &format!("abcd{SMUGGLED}")), &[400], &[]),
        c("cl-plus-sign", post("content-length: +4\r\n", &format!("abcd{SMUGGLED}")), &[400], &[]),
        c("cl-negative", post("content-length: -1\r\n", SMUGGLED), &[400], &[]),
        c("cl-hex", post("content-length: 0x4\r\n", &format!("abcd{SMUGGLED}")), &[400], &[]),
        c("cl-huge", post("content-length: 99999999999999999999999\r\n", SMUGGLED), &[400], &[]),
        c("chunk-size-negative", post("transfer-encoding: chunked\r\n", &format!("-1\r\nx\r\n0\r\n\r\n{SMUGGLED}")), &[400], &[]),
        c("chunk-size-0x", post("transfer-encoding: chunked\r\n", &format!("0x4\r\nabcd\r\n0\r\n\r\n{SMUGGLED}")), &[400], &[]),
        c("chunk-size-overflow", post("transfer-encoding: chunked\r\n", &format!("fffffffffffffffff\r\nx\r\n0\r\n\r\n{SMUGGLED}")), &[400], &[]),
        c("chunk-size-trailing-garbage", post("transfer-encoding: chunked\r\n", &format!("4 x\r\nabcd\r\n0\r\n\r\n{SMUGGLED}")), &[400], &[]),
        c("chunk-extension", post("transfer-encoding: chunked\r\n", &format!("4;ext=\"a\\\"b\"\r\nabcd\r\n0\r\n\r\n{SMUGGLED}")), &[200, 401], &["POST /public HTTP/1.1"]),
        c("chunk-bare-lf", post("transfer-encoding: chunked\r\n", &format!("4\nabcd\n0\n\n{SMUGGLED}")), &[400], &[]),
        c("chunk-data-too-long", post("transfer-encoding: chunked\r\n", &format!("2\r\nabcd\r\n0\r\n\r\n{SMUGGLED}")), &[400], &[]),
        c("head-bare-lf", format!("GET /public HTTP/1.1\nhost: h\n\n{SMUGGLED}"), &[200, 401], &["GET /public HTTP/1.1"]),
        c("obs-fold", format!("GET /public HTTP/1.1\r\nhost: h\r\nx-a: a\r\n b\r\n\r\n{SMUGGLED}"), &[400], &[]),
        c("space-in-header-name", format!("GET /public HTTP/1.1\r\nhost: h\r\nx a: b\r\n\r\n{SMUGGLED}"), &[400], &[]),
        c("nul-in-header-value", format!("GET /public HTTP/1.1\r\nhost: h\r\nx-a: a\0b\r\n\r\n{SMUGGLED}"), &[400], &[]),
        c("cr-in-header-value", format!("GET /public HTTP/1.1\r\nhost: h\r\nx-a: a\rb\r\n\r\n{SMUGGLED}"), &[400], &[]),
        c("space-in-target", format!("GET /public /x HTTP/1.1\r\nhost: h\r\n\r\n{SMUGGLED}"), &[400], &[]),
        c("two-hosts", format!("GET /public HTTP/1.1\r\nhost: h\r\nhost: other\r\n\r\n{SMUGGLED}"), &[400, 401], &[]),
        c("http09", format!("GET /public\r\n\r\n{SMUGGLED}"), &[400], &[]),
        c("unknown-version", format!("GET /public HTTP/1.2\r\nhost: h\r\n\r\n{SMUGGLED}"), &[400], &[]),
        c("refused-with-body", format!("POST /protected/x HTTP/1.1\r\nhost: h\r\ncontent-length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()), &[401], &[]),
        c("refused-with-chunked-body", format!("POST /protected/x HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n{SMUGGLED}", SMUGGLED.len()), &[401, 401], &[]),
        c("pipelined-after-401", format!("GET /protected/a HTTP/1.1\r\nhost: h\r\n\r\nGET /public/b HTTP/1.1\r\nhost: h\r\n\r\n{SMUGGLED}"), &[401, 200, 401], &["GET /public/b HTTP/1.1"]),
        c("expect-100-refused", format!("POST /protected/x HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()), &[401], &[]),
    ]
}

#[tokio::test]
async fn no_malformed_or_ambiguous_request_smuggles_a_request_past_the_key_check() {
    let up = RawUpstream::start().await;
    let h = gateway(&up).await;
    let mut wrong = Vec::new();
    for case in cases() {
        let before = up.requests().len();
        // The upstream records a request before it answers, and the client's answers come
        // after the upstream's: once the client has read everything, the record is complete.
        let raw = raw_exchange(
            h.addr(80),
            case.bytes.as_bytes(),
            Duration::from_millis(400),
        )
        .await;
        let client = support::statuses(&raw);
        let upstream: Vec<String> = up.requests()[before..]
            .iter()
            .map(|r| r.request_line.clone())
            .collect();
        assert!(
            !upstream.iter().any(|l| l.contains("/protected")),
            "{}: a request without a key reached the upstream: {upstream:?}",
            case.name
        );
        if client != case.client || upstream != case.upstream {
            wrong.push(format!(
                "{}: client got {client:?} (want {:?}), upstream got {upstream:?} (want {:?})",
                case.name, case.client, case.upstream
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn an_aborted_body_never_completes_upstream() {
    use tokio::io::AsyncWriteExt;
    let up = RawUpstream::start().await;
    let h = gateway(&up).await;
    for framing in ["content-length: 100\r\n", "transfer-encoding: chunked\r\n"] {
        let mut s = tokio::net::TcpStream::connect(h.addr(80)).await.unwrap();
        let body = if framing.starts_with("content") {
            "0123456789"
        } else {
            "64\r\n0123456789"
        };
        s.write_all(format!("POST /public HTTP/1.1\r\nhost: h\r\n{framing}\r\n{body}").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    }
    // Both were being streamed upstream, and the connections that carried them end.
    for _ in 0..300 {
        if up.connections() >= 1 && up.closed() == up.connections() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(up.connections() >= 1);
    assert_eq!(up.closed(), up.connections());
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
}
