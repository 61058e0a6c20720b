//! A tiny httpbin-like upstream for the quickstart and the tests: it answers every request
//! with its method, path, query and headers as JSON, the way httpbin's `/headers` and
//! `/anything` do, so you can see exactly what the gateway forwarded.
//!
//! `/status/N` answers with status N; `/bytes/N` streams N bytes; `/delay/MS` answers after
//! MS milliseconds; `/response-headers?k=v` (or a request header
//! `X-Echo-Set-Header: Name:value,...`) adds response headers; any request body is read (streamed, never held) and its length and
//! SHA-256 are reported, with the address of the server that answered.
//!
//! `path` is the request-target's path as it arrived, like the Gateway API conformance
//! suite's echo server (Go's `RequestURI`): an absolute-form target shows up whole
//! (`http://10.0.0.5:8080/x`), so a proxy that sends one cannot go unnoticed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Serves the echo upstream on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let local = local.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let local = local.clone();
                async move { Ok::<_, Infallible>(answer(req, peer, &local).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Binds `addr` and serves the echo upstream on it in the background.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener));
    Ok(local)
}

async fn answer(req: Request<Incoming>, peer: SocketAddr, server: &str) -> Response<EchoBody> {
    let (parts, mut body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if let Some(code) = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
    {
        let mut r = Response::new(Full::new(Bytes::new()).boxed());
        *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
        return r;
    }
    if let Some(n) = path
        .strip_prefix("/bytes/")
        .and_then(|c| c.parse::<usize>().ok())
    {
        return stream_bytes(n);
    }
    if let Some(ms) = path
        .rsplit_once("/delay/")
        .and_then(|(_, c)| c.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    len += d.len();
                    hasher.update(d);
                }
            }
            Err(_) => break,
        }
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(canonical(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let mut args: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let query = parts.uri.query().unwrap_or("").to_string();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.entry(k.to_string()).or_default().push(v.to_string());
    }
    // The target as received: a scheme and authority, if the client sent absolute-form.
    let as_received = match (parts.uri.scheme(), parts.uri.authority()) {
        (Some(scheme), Some(authority)) if parts.version < http::Version::HTTP_2 => {
            format!("{scheme}://{authority}{path}")
        }
        _ => path.clone(),
    };
    let json = serde_json::json!({
        "method": parts.method.as_str(),
        "path": as_received,
        "query": query,
        "args": args,
        "headers": headers,
        "origin": peer.ip().to_string(),
        "server": server,
        "body_length": len,
        "body_sha256": format!("{:x}", hasher.finalize()),
    });
    let mut r = Response::new(
        Full::new(Bytes::from(
            serde_json::to_vec_pretty(&json).unwrap_or_default(),
        ))
        .boxed(),
    );
    // Conformance-suite style: `X-Echo-Set-Header: Name:value,Name:value`.
    for spec in parts.headers.get_all("x-echo-set-header") {
        for pair in spec.to_str().unwrap_or("").split(',') {
            if let Some((k, v)) = pair.split_once(':') {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.trim().as_bytes()),
                    http::HeaderValue::from_str(v.trim()),
                ) {
                    r.headers_mut().append(k, v);
                }
            }
        }
    }
    if path == "/response-headers" {
        for (k, values) in &args {
            for v in values {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(v),
                ) {
                    r.headers_mut().append(k, v);
                }
            }
        }
    }
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; encoding=utf-8"),
    );
    r
}

fn stream_bytes(n: usize) -> Response<EchoBody> {
    const CHUNK: usize = 64 * 1024;
    let chunks = (0..n.div_ceil(CHUNK)).map(move |i| {
        let size = CHUNK.min(n - i * CHUNK);
        Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; size])))
    });
    let body = StreamBody::new(futures_lite_iter(chunks));
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    r
}

/// An iterator as a stream, without pulling in a futures crate for one adapter.
fn futures_lite_iter<I: Iterator + Unpin>(iter: I) -> IterStream<I> {
    IterStream(iter)
}

struct IterStream<I>(I);

impl<I: Iterator + Unpin> tokio_stream_shim::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

mod tokio_stream_shim {
    pub use futures_core::Stream;
}

/// `x-client-id` -> `X-Client-Id`, as Go's net/http (and so httpbin) shows header names.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}
