//! Keyway's own HTTP/1.1 server loop, for the request nearly every API client sends: a
//! `GET` or `HEAD` with no body and nothing asked of the connection.
//!
//! hyper's server is general: a state machine per connection, a task boundary between it
//! and the service, a body channel for each request. For the common request that generality
//! was most of the cost of proxying it. This loop reads a request head, runs
//! [`Gateway::handle`] on the connection's own task, and writes the response with its body,
//! then reads the next head.
//!
//! It serves only what it can serve exactly, and hands everything else to hyper: at the
//! first request it does not take, the connection (with every byte already read, that
//! request's included) goes to hyper's server for the rest of its life, as though hyper had
//! served it from that byte on. A request is taken only if it is
//!
//! - a whole, valid HTTP/1.1 head by the same parser and settings hyper uses (httparse,
//!   strict; no more fields than hyper's `max_headers`; no longer than its buffer limit);
//! - `GET` or `HEAD`;
//! - free of every field that asks something of the connection or frames a body:
//!   `Content-Length`, `Transfer-Encoding`, `Connection`, `Upgrade`, `Expect`, `TE`;
//! - and its target and every field name and value are valid for the `http` crate.
//!
//! A malformed or ambiguous request is therefore never judged here: hyper judges it,
//! byte for byte as before, which keeps the request-smuggling suite's answers unchanged.
//! HTTP/2 (prior knowledge) fails the HTTP/1.1 parse and goes to hyper the same way.
//!
//! Responses follow hyper's server in what reaches the wire: lower-case field names in the
//! map's order, a `date` field unless the response has one, `content-length` from the body
//! when it knows its size and `transfer-encoding: chunked` when it does not, no body for
//! `HEAD`, `204`, `304`. While a request is in progress the loop watches the client's side:
//! if it closes, the request is dropped (hyper's default, without half-close).

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::response::Parts;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::conn::Control;
use super::rewind::Rewind;
use crate::body::Body;
use crate::request::{ConnInfo, Gateway};

/// Most header fields a head may have to be taken here; more go to hyper, under its own
/// limit.
const MAX_HEADERS: usize = 128;
/// The read buffer's size, and the least room left in it before a read.
const READ_BUF: usize = 8192;
const MIN_READ: usize = 1024;
/// Response bytes gathered before a write, and the data frame size above which a frame is
/// written as it is instead of copied.
const FLUSH_AT: usize = 64 * 1024;
const COPY_UP_TO: usize = 16 * 1024;

/// What hyper's server is configured to accept, so that this loop takes nothing it would
/// not.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// hyper's `max_headers`.
    pub max_headers: usize,
    /// hyper's `max_buf_size`: the longest head.
    pub max_head: usize,
}

/// How the loop ended.
pub(crate) enum Ended<IO> {
    /// The connection is done.
    Closed,
    /// hyper serves the rest, starting with these bytes.
    Handoff(Rewind<IO>),
}

/// Serves requests on `io` until the connection ends or a request goes to hyper.
pub(crate) async fn serve<IO>(
    mut io: IO,
    gateway: &Arc<Gateway>,
    info: &Arc<ConnInfo>,
    control: &Arc<Control>,
    limits: Limits,
) -> Ended<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_BUF);
    let mut fields = Vec::new();
    let mut out = Vec::with_capacity(4096);
    loop {
        // 1. A request head, unless the connection is asked to close first.
        let req = loop {
            if !buf.is_empty() {
                match parse(&mut buf, limits, &mut fields) {
                    Parse::Request(req) => break req,
                    Parse::Partial => {}
                    Parse::Defer(head) => return Ended::Handoff(rewind(head, buf, io)),
                }
            }
            reserve(&mut buf);
            let read = poll_fn(|cx| {
                if control.poll_stop(cx) {
                    return Poll::Ready(None);
                }
                poll_read_buf(Pin::new(&mut io), cx, &mut buf).map(Some)
            })
            .await;
            match read {
                Some(Ok(n)) if n > 0 => {}
                _ => return Ended::Closed,
            }
        };

        // 2. Serve it, dropping it if the client goes away meanwhile.
        let is_head = req.method() == Method::HEAD;
        let in_flight = control.begin();
        let handler = gateway.clone().handle(info.clone(), req);
        tokio::pin!(handler);
        let resp = poll_fn(|cx| {
            if let Poll::Ready(r) = handler.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            // Only while nothing is buffered: a pipelined request waits its turn.
            if buf.is_empty() {
                reserve(&mut buf);
                match poll_read_buf(Pin::new(&mut io), cx, &mut buf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) | Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        let Some(resp) = resp else {
            return Ended::Closed;
        };

        // 3. The response.
        let keep_alive = respond(&mut io, resp, is_head, !control.is_running(), &mut out).await;
        drop(in_flight);
        if !keep_alive || !control.is_running() {
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(READ_BUF);
    }
}

fn rewind<IO>(head: Option<Bytes>, rest: BytesMut, io: IO) -> Rewind<IO> {
    let prefix = match head {
        None => rest.freeze(),
        Some(head) => {
            let mut all = BytesMut::with_capacity(head.len() + rest.len());
            all.extend_from_slice(&head);
            all.extend_from_slice(&rest);
            all.freeze()
        }
    };
    Rewind::new(prefix, io)
}

/// What the start of the read buffer holds.
// The large variant is the common one: boxing it would allocate for every request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Parse {
    /// Not a whole head yet.
    Partial,
    /// A request this loop serves (its head has left the buffer).
    Request(Request<Body>),
    /// A request for hyper: the head, if it has already left the buffer, goes first.
    Defer(Option<Bytes>),
}

/// Where a field's name and value sit in the head.
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

/// Parses the request head at the start of `buf`. `fields` is scratch space, kept by the
/// connection so no request allocates it.
fn parse(buf: &mut BytesMut, limits: Limits, fields: &mut Vec<Field>) -> Parse {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let slots = &mut slots[..limits.max_headers.min(MAX_HEADERS)];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < limits.max_head => return Parse::Partial,
        _ => return Parse::Defer(None),
    };
    if len > limits.max_head || req.version != Some(1) {
        return Parse::Defer(None);
    }
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parse::Defer(None),
    };
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start, start + s.len())
    };
    let target = at(req.path.unwrap_or_default().as_bytes());
    fields.clear();
    for h in req.headers.iter() {
        fields.push(Field {
            name: at(h.name.as_bytes()),
            value: at(h.value),
        });
    }
    let head = buf.split_to(len).freeze();

    let Ok(uri) = Uri::from_maybe_shared(head.slice(target.0..target.1)) else {
        return Parse::Defer(Some(head));
    };
    // Room for the fields the request path adds (request id, forwarding, client id).
    let mut headers = HeaderMap::with_capacity(fields.len() + 6);
    for f in fields.iter() {
        let Ok(name) = HeaderName::from_bytes(&head[f.name.0..f.name.1]) else {
            return Parse::Defer(Some(head));
        };
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || name == header::UPGRADE
            || name == header::EXPECT
            || name == header::TE
        {
            return Parse::Defer(Some(head));
        }
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(f.value.0..f.value.1)) else {
            return Parse::Defer(Some(head));
        };
        headers.append(name, value);
    }
    let mut req = Request::new(Body::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Parse::Request(req)
}

/// How the response body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body (`HEAD`, `1xx`, `204`, `304`).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Writes `resp`; whether the connection may carry another request.
async fn respond<IO>(
    io: &mut IO,
    resp: Response<Body>,
    is_head: bool,
    closing: bool,
    out: &mut Vec<u8>,
) -> bool
where
    IO: AsyncWrite + Unpin,
{
    let (parts, mut body) = resp.into_parts();
    out.clear();
    let (framing, mut keep_alive) = encode_head(&parts, &body, is_head, closing, out);
    drop(parts);
    let mut left = match framing {
        Framing::None => {
            // Not read: hyper does not read it either. An upstream connection whose body
            // is unread is not reused.
            drop(body);
            return io.write_all(out).await.is_ok() && keep_alive;
        }
        Framing::Length(n) => n,
        Framing::Chunked => u64::MAX,
    };
    let chunked = framing == Framing::Chunked;
    let mut done = body.is_end_stream();
    while !done {
        // Whatever the body has ready goes out with the head in one write.
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    if io.write_all(out).await.is_err() {
                        return false;
                    }
                    out.clear();
                }
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; closing the connection");
                keep_alive = false;
                break;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers reach only clients that ask with `TE: trailers`, which this
                // loop leaves to hyper.
                Err(_) => continue,
            },
        };
        done = body.is_end_stream();
        if data.is_empty() {
            continue;
        }
        if !chunked {
            if data.len() as u64 > left {
                tracing::debug!("response body longer than its content-length");
                keep_alive = false;
                break;
            }
            left -= data.len() as u64;
        } else {
            let mut hex = [0u8; 16];
            out.extend_from_slice(hex_len(data.len(), &mut hex));
            out.extend_from_slice(b"\r\n");
        }
        if data.len() > COPY_UP_TO {
            if io.write_all(out).await.is_err() || io.write_all(&data).await.is_err() {
                return false;
            }
            out.clear();
        } else {
            out.extend_from_slice(&data);
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= FLUSH_AT {
            if io.write_all(out).await.is_err() {
                return false;
            }
            out.clear();
        }
    }
    if keep_alive {
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        } else if left != 0 {
            tracing::debug!("response body shorter than its content-length");
            keep_alive = false;
        }
    }
    io.write_all(out).await.is_ok() && keep_alive
}

fn hex_len(n: usize, buf: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Appends the response head; returns the body's framing and whether the connection may
/// stay open after it.
fn encode_head(
    parts: &Parts,
    body: &Body,
    is_head: bool,
    closing: bool,
    out: &mut Vec<u8>,
) -> (Framing, bool) {
    let status = parts.status;
    let headers = &parts.headers;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");

    let has_te = headers.contains_key(header::TRANSFER_ENCODING);
    let length = content_length(headers);
    let exact = body.size_hint().exact();
    // (framing, keep the response's own framing fields, a length to write ourselves)
    let (framing, keep_fields, own_length) =
        if status.is_informational() || status == StatusCode::NO_CONTENT {
            (Framing::None, false, None)
        } else if is_head || status == StatusCode::NOT_MODIFIED {
            // The fields a `GET` would have had, no body.
            let implied = match (has_te || length.is_some(), exact) {
                (false, Some(n)) if n > 0 && is_head => Some(n),
                _ => None,
            };
            (Framing::None, true, implied)
        } else if has_te {
            (Framing::Chunked, true, None)
        } else if let Some(n) = length {
            (Framing::Length(n), true, None)
        } else if let Some(n) = exact {
            (Framing::Length(n), false, Some(n))
        } else {
            (Framing::Chunked, false, None)
        };

    let mut close_said = false;
    let mut te_ends_chunked = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            if !keep_fields || has_te {
                continue;
            }
        } else if name == header::TRANSFER_ENCODING {
            if !keep_fields {
                continue;
            }
            te_ends_chunked = ends_with_chunked(value);
        } else if name == header::CONNECTION && has_close(value) {
            close_said = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = own_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == Framing::Chunked && !te_ends_chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    if closing && !close_said {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, !closing && !close_said)
}

/// The response's `Content-Length`, if it has exactly one valid value (repeated copies of
/// it count as one).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let s = v.to_str().ok()?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = s.parse().ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

fn ends_with_chunked(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn has_close(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Appends the current time as an HTTP date, formatted at most once a second per thread.
fn date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_headers: 100,
        max_head: 8192,
    };

    fn parse_all(bytes: &[u8]) -> (Parse, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let p = parse(&mut buf, LIMITS, &mut Vec::new());
        (p, buf)
    }

    #[test]
    fn a_plain_get_is_taken_and_leaves_what_follows() {
        let (p, rest) = parse_all(
            b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Api-Key: k\r\nAccept: */*\r\n\r\nGET /next",
        );
        let Parse::Request(req) = p else {
            panic!("not taken: {p:?}")
        };
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "x");
        assert_eq!(req.headers()["x-api-key"], "k");
        assert_eq!(req.headers().len(), 3);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn a_head_is_taken_and_a_partial_one_waits() {
        assert!(matches!(
            parse_all(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n").0,
            Parse::Request(r) if r.method() == Method::HEAD
        ));
        for cut in 1..27 {
            let whole = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
            let (p, rest) = parse_all(&whole[..cut]);
            assert!(matches!(p, Parse::Partial), "{cut}: {p:?}");
            assert_eq!(rest.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn anything_else_goes_to_hyper_with_every_byte() {
        let deferred: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nconnection: keep-alive\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"get / HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        for raw in deferred {
            let (p, rest) = parse_all(raw);
            let Parse::Defer(head) = p else {
                panic!("{:?} was taken", String::from_utf8_lossy(raw))
            };
            let mut all = head.map(|h| h.to_vec()).unwrap_or_default();
            all.extend_from_slice(&rest);
            assert_eq!(all, *raw, "every byte goes to hyper");
        }
    }

    #[test]
    fn more_fields_or_bytes_than_hyper_allows_go_to_hyper() {
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(parse_all(&many).0, Parse::Defer(None)));

        let long = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(8200));
        assert!(matches!(parse_all(long.as_bytes()).0, Parse::Defer(None)));
        // Still partial, but already past the limit.
        assert!(matches!(
            parse_all(&long.as_bytes()[..8195]).0,
            Parse::Defer(None)
        ));
    }

    /// What hyper's server (configured as Keyway's) reads as the first request of a
    /// connection that sends `bytes` and ends: method, target and fields, if it took one.
    async fn hyper_reads(bytes: &[u8]) -> Option<(Method, String, Vec<(String, Vec<u8>)>)> {
        use std::convert::Infallible;
        use std::sync::Mutex;
        use tokio::io::AsyncWriteExt;
        let seen = Arc::new(Mutex::new(None));
        let into = seen.clone();
        let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let fields = req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect::<Vec<_>>();
            *into.lock().unwrap() = Some((req.method().clone(), req.uri().to_string(), fields));
            async { Ok::<_, Infallible>(Response::new(Body::Empty)) }
        });
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let conn = hyper::server::conn::http1::Builder::new()
            .max_headers(LIMITS.max_headers)
            .max_buf_size(LIMITS.max_head)
            .serve_connection(hyper_util::rt::TokioIo::new(server), service);
        client.write_all(bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), conn).await;
        let got = seen.lock().unwrap().take();
        got
    }

    /// Requests the loop takes, and near misses of them.
    const SEEDS: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"GET /a/b?c=d&e=%2F HTTP/1.1\r\nhost: h\r\nx-api-key: k\r\ncookie: a=b; c=d\r\n\r\n",
        b"HEAD /x HTTP/1.1\r\nHost: h:8080\r\nAccept: */*\r\nX-Obs: caf\xc3\xa9\t!\r\n\r\n",
        b"GET http://h/abs?q HTTP/1.1\r\nhost: other\r\nx-forwarded-for: 1.2.3.4\r\n\r\n",
        b"GET /p HTTP/1.1\nHost: h\nA:\n\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    ];
    const BYTES: &[u8] = b" \t\r\n:;,/?#%@[]\"\x00\x7f\x80\xffaZ0-_.~Hh";

    fn mutate(rng: &mut fastrand::Rng, seed: &[u8]) -> Vec<u8> {
        let mut v = seed.to_vec();
        for _ in 0..rng.usize(1..=3) {
            let at = rng.usize(..=v.len());
            let b = BYTES[rng.usize(..BYTES.len())];
            match rng.u8(..3) {
                0 => v.insert(at, b),
                1 if at < v.len() => {
                    v.remove(at);
                }
                _ if at < v.len() => v[at] = b,
                _ => v.push(b),
            }
        }
        v
    }

    /// The loop takes a request only if hyper's server would, and reads it as hyper does;
    /// a request it takes was never taken or refused earlier from a prefix of it, so how
    /// the bytes arrive does not change the decision.
    #[tokio::test]
    async fn what_the_loop_takes_hyper_takes_and_reads_the_same() {
        let mut rng = fastrand::Rng::with_seed(0x6b65_7977_6179);
        let mut taken = 0;
        for round in 0..4000 {
            let seed = SEEDS[round % SEEDS.len()];
            let input = if round < SEEDS.len() {
                seed.to_vec()
            } else {
                mutate(&mut rng, seed)
            };
            let (parsed, rest) = parse_all(&input);
            let Parse::Request(req) = parsed else {
                continue;
            };
            taken += 1;
            let len = input.len() - rest.len();
            let shown = String::from_utf8_lossy(&input).into_owned();
            let fields: Vec<(String, Vec<u8>)> = req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect();
            let ours = (req.method().clone(), req.uri().to_string(), fields);
            assert_eq!(
                hyper_reads(&input[..len]).await.as_ref(),
                Some(&ours),
                "{shown:?}"
            );
            for cut in 0..len {
                assert!(
                    matches!(parse_all(&input[..cut]).0, Parse::Partial),
                    "{shown:?} cut at {cut}"
                );
            }
        }
        // The mutations must leave enough requests whole for this to mean something.
        assert!(taken > 500, "only {taken} taken");
    }

    fn head_of(resp: Response<Body>, is_head: bool, closing: bool) -> (String, Framing, bool) {
        let (parts, body) = resp.into_parts();
        let mut out = Vec::new();
        let (f, keep) = encode_head(&parts, &body, is_head, closing, &mut out);
        (String::from_utf8(out).unwrap(), f, keep)
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: Body) -> Response<Body> {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    #[test]
    fn response_heads_frame_their_bodies() {
        let (h, f, keep) = head_of(
            resp(200, &[("x-a", "1")], Body::full("hello")),
            false,
            false,
        );
        assert!(h.starts_with("HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\ndate: "));
        assert!(h.ends_with(" GMT\r\n\r\n"));
        assert_eq!((f, keep), (Framing::Length(5), true));

        // A HEAD gets the length the GET would have, and no body.
        let (h, f, _) = head_of(resp(401, &[], Body::full("no")), true, false);
        assert!(h.contains("content-length: 2\r\n"), "{h}");
        assert_eq!(f, Framing::None);

        // The response's own length wins; a transfer coding wins over it.
        let (h, f, _) = head_of(
            resp(200, &[("content-length", "7"), ("date", "d")], Body::Empty),
            false,
            false,
        );
        assert_eq!(h, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: d\r\n\r\n");
        assert_eq!(f, Framing::Length(7));
        let (h, f, _) = head_of(
            resp(
                200,
                &[
                    ("transfer-encoding", "gzip"),
                    ("content-length", "7"),
                    ("date", "d"),
                ],
                Body::Empty,
            ),
            false,
            false,
        );
        assert_eq!(
            h,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ndate: d\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(f, Framing::Chunked);

        // Differing lengths are no length.
        let (h, f, _) = head_of(
            resp(
                200,
                &[
                    ("content-length", "7"),
                    ("content-length", "8"),
                    ("date", "d"),
                ],
                Body::Empty,
            ),
            false,
            false,
        );
        assert_eq!(h, "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(f, Framing::Length(0));

        // 204: no framing fields at all; 304 keeps the GET's.
        let (h, f, _) = head_of(
            resp(204, &[("content-length", "0"), ("date", "d")], Body::Empty),
            false,
            false,
        );
        assert_eq!(h, "HTTP/1.1 204 No Content\r\ndate: d\r\n\r\n");
        assert_eq!(f, Framing::None);
        let (h, f, _) = head_of(
            resp(304, &[("content-length", "9"), ("date", "d")], Body::Empty),
            false,
            false,
        );
        assert_eq!(
            h,
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\ndate: d\r\n\r\n"
        );
        assert_eq!(f, Framing::None);
    }

    #[test]
    fn closing_is_said_and_a_close_asked_for_is_kept() {
        let (h, _, keep) = head_of(resp(200, &[("date", "d")], Body::Empty), false, true);
        assert!(h.contains("connection: close\r\n"), "{h}");
        assert!(!keep);
        let (h, _, keep) = head_of(
            resp(408, &[("connection", "close"), ("date", "d")], Body::Empty),
            false,
            false,
        );
        assert_eq!(h.matches("connection").count(), 1, "{h}");
        assert!(!keep);
    }

    #[test]
    fn chunk_sizes_are_lower_case_hex() {
        let mut b = [0u8; 16];
        assert_eq!(hex_len(0, &mut b), b"0");
        assert_eq!(hex_len(255, &mut b), b"ff");
        assert_eq!(hex_len(0x10000, &mut b), b"10000");
    }
}
