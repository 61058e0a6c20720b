//! The response on the wire, as hyper's server would write it: lower-case field names in
//! the map's order (an upstream's fields kept as bytes in the upstream's order, see
//! [`crate::upstream::fields`]), `date` unless the response has one, `content-length` from the body when
//! its size is known and `transfer-encoding: chunked` when it is not, no body for `HEAD`,
//! `1xx`, `204` and `304`; the body's bytes gathered into as few writes as it allows.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use http::response::Parts;
use http::{Response, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::body::Body;
use crate::upstream::fields;
use crate::upstream::h1;

/// Response bytes gathered before a write, and the data frame size above which a frame is
/// written as it is instead of copied.
const FLUSH_AT: usize = 64 * 1024;
const COPY_UP_TO: usize = 16 * 1024;

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
pub(super) async fn respond<IO>(
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

    // The upstream's fields, when they came as bytes (the map is then empty but for what
    // the gateway added).
    let raw = fields::of(body);
    let has_te = headers.contains_key(header::TRANSFER_ENCODING) || raw.is_some_and(|r| r.coded);
    let length = content_length(headers).or(raw.and_then(|r| r.length));
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
            te_ends_chunked = h1::ends_with_chunked(value.as_bytes());
        } else if name == header::CONNECTION && h1::lists_close(value.as_bytes()) {
            close_said = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(raw) = raw {
        out.extend_from_slice(raw.end_to_end());
        if raw.coded && keep_fields {
            te_ends_chunked = raw.chunked;
            out.extend_from_slice(raw.framing());
        } else if raw.length.is_some() && keep_fields && !has_te {
            out.extend_from_slice(raw.framing());
        }
    }
    if let Some(n) = own_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if framing == Framing::Chunked && !te_ends_chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !raw.is_some_and(|r| r.has_date) && !headers.contains_key(header::DATE) {
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

/// The response's `Content-Length`, if every copy of it is valid and they agree (the
/// upstream reader's rule, [`h1::content_length`]).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        let n = h1::content_length(v.as_bytes()).ok()?;
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
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
    use http::header::{HeaderName, HeaderValue};

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

    #[test]
    fn fields_kept_as_bytes_are_written_as_their_map_would_be() {
        // The same upstream head written from its bytes and from the map they make: the
        // same lines (in another order: the bytes keep the upstream's), framing and
        // keep-alive, for every framing field, status and method.
        use crate::upstream::direct::DirectBody;
        use crate::upstream::h1::{self, Fields, Parsed};
        let heads = [
            "content-length: 5\r\nserver: up\r\nDate: d\r\nConnection: keep-alive\r\n",
            "Transfer-Encoding: chunked\r\nx-a: 1\r\nx-a: 2\r\n",
            "transfer-encoding: gzip, chunked\r\n",
            "transfer-encoding: chunked, gzip\r\n",
            "content-length: 0\r\n",
            "x-only: 1\r\nConnection: close\r\n",
            "",
        ];
        for fields in heads {
            for status in [
                "200 OK",
                "204 No Content",
                "304 Not Modified",
                "404 Not Found",
            ] {
                for is_head in [false, true] {
                    let text = format!("HTTP/1.1 {status}\r\n{fields}\r\n");
                    let method = if is_head {
                        http::Method::HEAD
                    } else {
                        http::Method::GET
                    };
                    let Ok(Parsed::Final(head, _)) = h1::parse_head(text.as_bytes(), &method)
                    else {
                        panic!("{text}");
                    };
                    let Fields::Raw(raw) = head.fields else {
                        panic!("bytes expected: {text}");
                    };
                    let body = || {
                        (head.framing == h1::Framing::Length(5))
                            .then(|| bytes::Bytes::from_static(b"hello"))
                    };
                    let mut as_bytes = Response::new(Body::Direct(Box::new(DirectBody::whole(
                        body(),
                        Some(raw.clone()),
                    ))));
                    *as_bytes.status_mut() = head.status;
                    let mut as_map =
                        Response::new(Body::Direct(Box::new(DirectBody::whole(body(), None))));
                    *as_map.status_mut() = head.status;
                    raw.clone().append_to(as_map.headers_mut());
                    let (a, fa, ka) = head_of(as_bytes, is_head, false);
                    let (b, fb, kb) = head_of(as_map, is_head, false);
                    let lines = |s: &str| {
                        let mut l: Vec<String> = s.lines().map(str::to_owned).collect();
                        l.sort();
                        l
                    };
                    assert_eq!(lines(&a), lines(&b), "{text}");
                    assert_eq!((fa, ka), (fb, kb), "{text}");
                    // And the materialized response is the map one.
                    let mut m =
                        Response::new(Body::Direct(Box::new(DirectBody::whole(body(), Some(raw)))));
                    crate::upstream::fields::materialize(&mut m);
                    assert!(crate::upstream::fields::of(m.body()).is_none());
                    let mut expect = HeaderMap::new();
                    let Fields::Raw(again) = h1::parse_head(text.as_bytes(), &method)
                        .map(|p| match p {
                            Parsed::Final(h, _) => h.fields,
                            _ => unreachable!(),
                        })
                        .unwrap()
                    else {
                        unreachable!()
                    };
                    again.append_to(&mut expect);
                    assert_eq!(m.headers(), &expect, "{text}");
                }
            }
        }
    }
}
