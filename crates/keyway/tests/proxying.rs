//! Proxying over real sockets: headers, error statuses, limits, HTTP/2, streaming,
//! cancellation, the admin port, and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support;
use crate::support::{service, upstream, Harness, Req};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use keyway_testkit::raw::{RawUpstream, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn gateway_and_route(backends: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: any
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [example.test]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /slow}}}}]
    timeouts: {{request: 300ms}}
    backendRefs: [{{name: app, port: 80}}]
  - backendRefs: [{{name: app, port: 80}}]
{backends}"#
    )
}

async fn start_with_upstream(addr: SocketAddr) -> Harness {
    Harness::start(&gateway_and_route(&service("default", "app", &[addr]))).await
}

#[tokio::test]
async fn forwarding_headers_host_path_and_query() {
    let h = start_with_upstream(upstream().await).await;
    let r = h
        .request(
            80,
            Req::get("example.test:80", "/a/b%20c?x=1&y=%2F")
                .header("connection", "keep-alive, x-hop")
                .header("x-hop", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header("te", "trailers")
                .header("upgrade", "websocket")
                .header("x-forwarded-for", "203.0.113.9")
                .header("x-end-to-end", "kept"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.upstream_path(), "/a/b%20c");
    assert_eq!(r.upstream_query(), "x=1&y=%2F");
    assert_eq!(
        r.upstream_header1("host").as_deref(),
        Some("example.test:80")
    );
    for gone in ["x-hop", "keep-alive", "proxy-connection", "te", "upgrade"] {
        assert_eq!(
            r.upstream_header(gone),
            None,
            "{gone} must not be forwarded"
        );
    }
    assert_eq!(r.upstream_header1("x-end-to-end").as_deref(), Some("kept"));
    assert_eq!(
        r.upstream_header1("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(
        r.upstream_header1("x-forwarded-proto").as_deref(),
        Some("http")
    );
    let id = r.upstream_header1("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "{id}");

    let r = h
        .request(
            80,
            Req::get("example.test", "/").header("x-request-id", "my-id-1"),
        )
        .await;
    assert_eq!(
        r.upstream_header1("x-request-id").as_deref(),
        Some("my-id-1")
    );
}

#[tokio::test]
async fn error_statuses() {
    // No route for this host or path: 404.
    let h = start_with_upstream(upstream().await).await;
    assert_eq!(h.get(80, "other.test", "/").await.status, 404);

    // Upstream slower than the rule's timeout: 504.
    let r = h.get(80, "example.test", "/slow/delay/2000").await;
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "upstream request timeout");

    // Nothing listening: 503 (connect failure).
    let (_held, dead) = support::refusing_addr();
    let h = start_with_upstream(dead).await;
    assert_eq!(h.get(80, "example.test", "/").await.status, 503);

    // No ready endpoint at all: 503.
    let h = Harness::start(&gateway_and_route(&service("default", "app", &[]))).await;
    let r = h.get(80, "example.test", "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "no healthy upstream");
}

#[tokio::test]
async fn gateway_wide_upstream_timeout_is_configurable() {
    let m = gateway_and_route(&service("default", "app", &[upstream().await]));
    let h = Harness::start_with(&m, |o| {
        o.settings.upstream_timeout = Duration::from_millis(200)
    })
    .await;
    assert_eq!(h.get(80, "example.test", "/delay/1000").await.status, 504);
    assert_eq!(h.get(80, "example.test", "/delay/10").await.status, 200);
}

/// A pooled upstream connection keeps one timer from exchange to exchange, moved to each
/// request's deadline: earlier for a route with a short timeout, later again after it. A
/// timer left at the last deadline would cut the third request short, and one that did not
/// move earlier would hold the fourth for the gateway-wide 15 s.
#[tokio::test]
async fn each_request_on_a_pooled_connection_has_its_own_timeout() {
    let up = RawUpstream::with(|c| match c.target() {
        "/slow/late" => Reply::ok().after(Duration::from_secs(10)),
        "/late" => Reply::ok().after(Duration::from_millis(1500)),
        _ => Reply::ok(),
    })
    .await;
    // The /slow rule's timeout at 1 s: room for a loaded machine to answer /slow/fast.
    let manifests = gateway_and_route(&service("default", "app", &[up.addr()]))
        .replace("timeouts: {request: 300ms}", "timeouts: {request: 1s}");
    let h = Harness::start(&manifests).await;
    // The gateway-wide deadline (15 s), then the /slow rule's 1 s, on the same connection.
    assert_eq!(h.get(80, "example.test", "/fast").await.status, 200);
    assert_eq!(h.get(80, "example.test", "/slow/fast").await.status, 200);
    assert_eq!(
        up.connections(),
        1,
        "the second request reused the connection"
    );
    // 1.5 s is past the last deadline but well within this request's own.
    let r = h.get(80, "example.test", "/late").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // 1 s again, on the same connection, whose timer was last set 15 s out.
    let asked = std::time::Instant::now();
    let r = h.get(80, "example.test", "/slow/late").await;
    assert_eq!(r.status, 504, "{}", r.text());
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "cut at the route's 1 s, neither sooner nor much later: {waited:?}"
    );
    assert_eq!(
        up.connections(),
        1,
        "every request so far on one connection"
    );
    // The late connection is not reused; the next request dials anew.
    assert_eq!(h.get(80, "example.test", "/fast").await.status, 200);
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let h = start_with_upstream(upstream().await).await;
    let big = "x".repeat(80 * 1024);
    let mut s = TcpStream::connect(h.addr(80)).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nhost: example.test\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let m = gateway_and_route(&service("default", "app", &[upstream().await]));
    let h = Harness::start_with(&m, |o| {
        o.server.header_read_timeout = Duration::from_millis(300)
    })
    .await;
    let mut s = TcpStream::connect(h.addr(80)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: exa").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    let n = read
        .expect("the gateway closes a connection whose headers never finish")
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || head.starts_with("HTTP/1.1 408"), "{head}");
}

#[tokio::test]
async fn keep_alive_connections_serve_many_requests() {
    let h = start_with_upstream(upstream().await).await;
    let stream = TcpStream::connect(h.addr(80)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..20 {
        let req = http::Request::get(format!("/n/{i}"))
            .header("host", "example.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["path"], format!("/n/{i}"));
    }
}

#[tokio::test]
async fn http2_with_prior_knowledge() {
    let h = start_with_upstream(upstream().await).await;
    let stream = TcpStream::connect(h.addr(80)).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://example.test/h2?x=1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["path"], "/h2");
    assert_eq!(v["headers"]["Host"][0], "example.test");
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let h = start_with_upstream(upstream().await).await;
    // 24 MiB up: the upstream reports what it received.
    let chunk = Bytes::from(vec![7u8; 1024 * 1024]);
    let up = (0..24).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone())));
    let stream = TcpStream::connect(h.addr(80)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = StreamBody::new(IterStream(up));
    let req = http::Request::post("/upload")
        .header("host", "example.test")
        .body(body)
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["body_length"], 24 * 1024 * 1024);
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for _ in 0..24 {
        hasher.update(vec![7u8; 1024 * 1024]);
    }
    assert_eq!(v["body_sha256"], format!("{:x}", hasher.finalize()));

    // 48 MiB down.
    let r = h
        .get(80, "example.test", &format!("/bytes/{}", 48 * 1024 * 1024))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 48 * 1024 * 1024);
}

/// An upstream that echoes the request body back as it arrives, chunk by chunk.
async fn echo_stream_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(http::Response::new(req.into_body()))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn bodies_are_streamed_not_buffered() {
    // The client sends a chunk and waits to see it come back before sending the next: a
    // proxy that buffered either body would deadlock here.
    let h = start_with_upstream(echo_stream_upstream().await).await;
    let (body_tx, body_rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let body = StreamBody::new(ReceiverStream(body_rx));
    let stream = TcpStream::connect(h.addr(80)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/duplex")
        .header("host", "example.test")
        .body(body)
        .unwrap();
    body_tx
        .send(Ok(Frame::data(Bytes::from_static(b"ping-0"))))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req))
        .await
        .expect("response headers arrive before the request body ends")
        .unwrap();
    let mut resp_body = resp.into_body();
    for i in 0..5 {
        let mut got = Vec::new();
        while got.len() < 6 {
            let frame = tokio::time::timeout(Duration::from_secs(5), resp_body.frame())
                .await
                .expect("chunk echoed while the request is still open")
                .unwrap()
                .unwrap();
            if let Some(d) = frame.data_ref() {
                got.extend_from_slice(d);
            }
        }
        assert_eq!(got, format!("ping-{i}").as_bytes());
        if i < 4 {
            body_tx
                .send(Ok(Frame::data(Bytes::from(format!("ping-{}", i + 1)))))
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    // Upstream streams a never-ending response and counts how often its body is dropped.
    let dropped = Arc::new(AtomicUsize::new(0));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let d = dropped.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let d = d.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let d = d.clone();
                    async move {
                        let (tx, rx) =
                            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
                        tokio::spawn(async move {
                            loop {
                                if tx
                                    .send(Ok(Frame::data(Bytes::from_static(b"tick\n"))))
                                    .await
                                    .is_err()
                                {
                                    d.fetch_add(1, Ordering::SeqCst);
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        });
                        Ok::<_, Infallible>(http::Response::new(StreamBody::new(ReceiverStream(
                            rx,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let h = start_with_upstream(addr).await;
    let mut s = TcpStream::connect(h.addr(80)).await.unwrap();
    s.write_all(b"GET /forever HTTP/1.1\r\nhost: example.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(s);
    for _ in 0..100 {
        if dropped.load(Ordering::SeqCst) > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the upstream response kept streaming after the client went away");
}

#[tokio::test]
async fn admin_port_reports_health_metrics_config_and_status() {
    let h = start_with_upstream(upstream().await).await;
    assert_eq!(h.get(80, "example.test", "/x").await.status, 200);
    assert_eq!(h.admin("/healthz").await.status, 200);
    assert_eq!(h.admin("/readyz").await.status, 200);
    let metrics = h.admin("/metrics").await.text();
    assert!(
        metrics.contains(
            r#"keyway_requests_total{gateway="default/gw",route="default/r",code="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyway_upstream_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("keyway_config_generation 1"), "{metrics}");
    let dump = h.admin("/config_dump").await.json();
    assert_eq!(dump["generation"], 1);
    assert_eq!(
        dump["config"]["ports"]["80"]["listeners"][0]["gateway"],
        "default/gw"
    );
    let status = h.admin("/status").await.json();
    let objects = status["objects"].as_array().unwrap();
    assert!(
        objects
            .iter()
            .any(|o| o["kind"] == "HTTPRoute" && o["name"] == "r"),
        "{status}"
    );
    assert_eq!(h.admin("/nope").await.status, 404);
}

#[tokio::test]
async fn readyz_is_503_while_a_listener_port_cannot_be_bound() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let m = gateway_and_route(&service("default", "app", &[upstream().await]))
        .replace("port: 80, protocol", &format!("port: {port}, protocol"));
    let h = Harness::start_with(&m, |o| o.server.ephemeral_ports = false).await;
    let r = h.admin("/readyz").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("cannot bind"), "{}", r.text());
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let up = RawUpstream::with(|_| Reply::ok().after(Duration::from_millis(700))).await;
    let h = start_with_upstream(up.addr()).await;
    let addr = h.addr(80);
    let in_flight = tokio::spawn(support::send(addr, Req::get("example.test", "/")));
    up.wait_for(1).await;
    let started = std::time::Instant::now();
    h.app.shutdown().await;
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request finished");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
    assert_eq!(h.admin("/readyz").await.status, 503);
}

#[test]
fn the_binary_exits_0_on_sigterm_after_draining() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(RawUpstream::with(|_| {
        Reply::ok().after(Duration::from_millis(500))
    }));
    let m = gateway_and_route(&service("default", "app", &[up.addr()]))
        .replace("port: 80, protocol", "port: {PORT}, protocol");
    let bin = support::Binary::start(&m, &[], &[]);
    rt.block_on(async {
        bin.ready().await;
        let slow = tokio::spawn(support::send(bin.gateway, Req::get("example.test", "/")));
        up.wait_for(1).await;
        bin.signal("TERM");
        assert_eq!(
            slow.await.unwrap().status,
            200,
            "the in-flight request finished"
        );
    });
    let (status, _) = bin.stop();
    assert!(status.success(), "exit status {status:?}");
}

struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let m = gateway_and_route(&service("default", "app", &[upstream().await]));
    let h = Harness::start_with(&m, |o| {
        o.server.header_read_timeout = Duration::from_millis(300)
    })
    .await;
    let mut s = TcpStream::connect(h.addr(80)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: example.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Nothing more is sent: the gateway closes the idle connection.
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connection still open after 5 s");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_host_routed_is_the_host_forwarded() {
    let h = start_with_upstream(upstream().await).await;
    // Absolute-form target: its authority wins over a contradicting Host header.
    let mut s = TcpStream::connect(h.addr(80)).await.unwrap();
    s.write_all(b"GET http://example.test/x HTTP/1.1\r\nhost: other.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("\"example.test\""),
        "the upstream saw the routed host: {text}"
    );
    assert!(!text.contains("other.test"), "{text}");
    // Two Host headers, or none on HTTP/1.1: refused.
    for req in [
        &b"GET / HTTP/1.1\r\nhost: example.test\r\nhost: other.test\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\n\r\n"[..],
    ] {
        let mut s = TcpStream::connect(h.addr(80)).await.unwrap();
        s.write_all(req).await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 400"));
    }
}

#[tokio::test]
async fn paths_are_normalised_before_routing_and_forwarding() {
    let h = start_with_upstream(upstream().await).await;
    for (sent, seen) in [
        ("/a/../b", "/b"),
        ("/a/%2e%2e/c", "/c"),
        ("/x/./y", "/x/y"),
        ("/%61bc", "/abc"),
    ] {
        let r = h.get(80, "example.test", sent).await;
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(r.upstream_path(), seen, "{sent}");
    }
    // `slow` has its own 300 ms timeout: reaching it through a dot segment still counts.
    assert_eq!(
        h.get(80, "example.test", "/other/../slow/delay/1000")
            .await
            .status,
        504
    );
}

#[tokio::test]
async fn connection_header_cannot_remove_host() {
    let h = start_with_upstream(upstream().await).await;
    let r = h
        .request(
            80,
            Req::get("example.test", "/")
                .header("connection", "host, x-drop")
                .header("x-drop", "1"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header1("host").as_deref(), Some("example.test"));
    assert_eq!(r.upstream_header("x-drop"), None);
}

/// An upstream that counts its connections and closes each one after `per_conn` requests
/// (without saying so), like a server with a short keep-alive limit.
async fn counting_upstream(per_conn: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                for _ in 0..per_conn {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    // One write: a head and a body in two small writes wait on Nagle and
                    // the peer's delayed ACK.
                    let body = "{\"server\": \"counting\"}";
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
                // Close without `Connection: close`.
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let (addr, accepted) = counting_upstream(usize::MAX).await;
    let h = start_with_upstream(addr).await;
    for _ in 0..50 {
        assert_eq!(h.get(80, "example.test", "/").await.status, 200);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one keep-alive upstream connection for sequential requests"
    );
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_upstream_is_not_an_error() {
    let (addr, accepted) = counting_upstream(1).await;
    let h = start_with_upstream(addr).await;
    for i in 0..20 {
        let r = h.get(80, "example.test", "/").await;
        assert_eq!(r.status, 200, "request {i}");
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 20);
}
