//! The upstream exchange Keyway runs itself, for the common request shape: a `GET` or
//! `HEAD` without a body.
//!
//! Why not hyper's client for these: it runs every upstream connection as a task of its
//! own and hands each request and response across channels between that task and the
//! request's, waking both on every step. That machinery was about a third of the
//! instructions of a proxied request (`bench/instructions.sh`). Here the request's own
//! task writes the head in one `write`, reads and parses the response head with httparse,
//! and the response body is read from the socket as the client's connection asks for it.
//! The response's end-to-end fields stay bytes until something needs them as a map
//! ([`super::fields`]).
//! Requests with a body, whose upload races the response, stay on hyper's client.
//!
//! Only idempotent requests take this path, so a pooled connection the upstream closed
//! while the request was on its way can be retried on another without asking whether the
//! upstream saw it (as nginx and Go's client do).
//!
//! Response framing follows RFC 9112 §6.3, strictly:
//! - no body for `HEAD`, `204` and `304`; `1xx` heads before the final one are skipped;
//!   `101` (never asked for: `Upgrade` is not forwarded) is an error;
//! - `Transfer-Encoding` whose last coding is `chunked`: chunked, sizes in hex of at most
//!   16 digits, every line ended by CRLF (a bare LF or CR is an error), trailers passed on;
//!   any other `Transfer-Encoding`: the body runs to the end of the connection; none in an
//!   HTTP/1.0 response (an error, as hyper's client has it);
//! - else `Content-Length`: every value the same decimal number, or the response is an
//!   error; else the body runs to the end of the connection.
//!
//! A connection goes back to the pool only after a complete HTTP/1.1 response that did
//! not say `Connection: close`, was framed by its length or by chunks (not by both), and
//! left no byte unread behind it: anything else could leave the next response out of step.

use std::fmt;
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};

use super::fields::{self, RawFields};
use crate::headers::AddedFields;

/// The longest response head (and trailer section) accepted, as hyper's client allows.
pub const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Most header fields in a response head, as hyper's client allows.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// Whether a request takes this path: `GET` or `HEAD` with no body to send.
pub fn takes<B>(req: &Request<B>, has_body: bool) -> bool {
    !has_body && (req.method() == Method::GET || req.method() == Method::HEAD)
}

/// Appends the request head as HTTP/1.1: the origin-form target, the headers in the
/// map's order, lower-case names (as hyper writes them), then the fields Keyway adds that
/// were kept out of the map.
pub fn encode_head<B>(req: &Request<B>, added: Option<&AddedFields>, out: &mut BytesMut) {
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(f) = added {
        f.write(out);
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// None (`HEAD`, `204`, `304`).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Up to the end of the connection.
    Close,
}

/// A final response head.
#[derive(Debug)]
pub struct Head {
    /// The status, never `1xx`.
    pub status: StatusCode,
    /// The upstream's HTTP version (of its hop only).
    pub version: Version,
    /// The fields: as bytes, or as a map where they need more than passing on.
    pub fields: Fields,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request once the body is read.
    pub reusable: bool,
}

/// A response head's fields, in the form [`parse_head`] found them to need.
#[derive(Debug)]
pub enum Fields {
    /// End-to-end fields only, as bytes (see [`super::fields`]).
    Raw(RawFields),
    /// Every field as received, for the general rules (`filter_response`).
    Map(HeaderMap),
}

impl Fields {
    /// The fields as a map, as the general rules would leave them.
    #[cfg(test)]
    pub fn into_map(self) -> HeaderMap {
        match self {
            Fields::Map(m) => m,
            Fields::Raw(r) => {
                let mut m = HeaderMap::new();
                r.append_to(&mut m);
                m
            }
        }
    }
}

/// Every field as received, in a map.
fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, Malformed> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for h in fields {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Malformed("header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| Malformed("header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// What the start of a buffer holds.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An informational (`1xx`) head of this many bytes, to skip.
    Informational(usize),
    /// The final head, of this many bytes.
    Final(Head, usize),
}

/// Why a response (head or body) was rejected. Never carries header values: they could
/// hold credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed upstream response: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// Parses the response head at the start of `buf`, for a request with `method`.
pub fn parse_head(buf: &[u8], method: &Method) -> Result<Parsed, Malformed> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(Malformed("too many header fields")),
        Err(_) => return Err(Malformed("invalid response head")),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Malformed("invalid status code"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Malformed("101 to a request that asked for no upgrade"));
    }
    if status.is_informational() {
        return Ok(Parsed::Informational(len));
    }
    let version = match resp.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let fields::Scan {
        length,
        coded,
        chunked,
        close,
        raw,
    } = fields::scan(resp.headers)?;
    let fields = match raw {
        Some(raw) => Fields::Raw(raw),
        None => Fields::Map(header_map(resp.headers)?),
    };
    if coded && version == Version::HTTP_10 {
        return Err(Malformed("Transfer-Encoding in an HTTP/1.0 response"));
    }
    let framing = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if coded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    // Framed by both: the coding wins, but nothing after it is trusted (RFC 9112 §6.3).
    let reusable = version == Version::HTTP_11
        && !close
        && framing != Framing::Close
        && !(coded && length.is_some());
    Ok(Parsed::Final(
        Head {
            status,
            version,
            fields,
            framing,
            reusable,
        },
        len,
    ))
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked`.
pub(crate) fn ends_with_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether a `Connection` value lists `close`.
pub(crate) fn lists_close(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// One `Content-Length` field: a decimal number, or a list of the same one.
pub(crate) fn content_length(value: &[u8]) -> Result<u64, Malformed> {
    let mut found: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let digits = part.trim_ascii();
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(Malformed("invalid Content-Length"));
        }
        let n = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(Malformed("differing Content-Length values"));
        }
        found = Some(n);
    }
    found.ok_or(Malformed("invalid Content-Length"))
}

/// Where a chunked body's decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
}

/// What the decoder took from the buffer.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The end of the body, with its trailer fields (often none).
    End(HeaderMap),
    /// Nothing more until more bytes arrive.
    More,
}

impl Chunked {
    /// Takes what it can from the start of `buf`.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        loop {
            match *self {
                Chunked::Size => {
                    let window = &buf[..buf.len().min(MAX_CHUNK_LINE + 2)];
                    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
                        if window.len() == MAX_CHUNK_LINE + 2 {
                            return Err(Malformed("chunk-size line too long"));
                        }
                        return Ok(Step::More);
                    };
                    if lf == 0 || buf[lf - 1] != b'\r' {
                        return Err(Malformed("chunk-size line not ended by CRLF"));
                    }
                    let size = chunk_size(&buf[..lf - 1])?;
                    buf.advance(lf + 1);
                    *self = if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = left.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    *self = if take == left {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left - take)
                    };
                    return Ok(Step::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(Malformed("chunk data not ended by CRLF"));
                        }
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("chunk data not ended by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    let mut slots = [httparse::EMPTY_HEADER; 32];
                    return match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete((n, _))) if n > MAX_HEAD => {
                            Err(Malformed("trailer section too long"))
                        }
                        Ok(httparse::Status::Complete((n, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| Malformed("trailer name"))?;
                                let value = HeaderValue::from_bytes(f.value)
                                    .map_err(|_| Malformed("trailer value"))?;
                                trailers.append(name, value);
                            }
                            buf.advance(n);
                            Ok(Step::End(trailers))
                        }
                        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => Ok(Step::More),
                        Ok(httparse::Status::Partial) => Err(Malformed("trailer section too long")),
                        Err(_) => Err(Malformed("invalid trailer section")),
                    };
                }
            }
        }
    }
}

/// A chunk-size line without its CRLF: 1 to 16 hex digits, then nothing or extensions
/// (`;` after optional whitespace) free of control characters.
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(Malformed("invalid chunk size"));
    }
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    if !rest.is_empty() && !ext.starts_with(b";") {
        return Err(Malformed("invalid chunk size"));
    }
    if rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Malformed("control character in chunk extension"));
    }
    Ok(line[..digits]
        .iter()
        .fold(0u64, |n, &d| (n << 4) | u64::from(hex(d))))
}

fn hex(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        _ => d - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a head as the general path reads it: a map of every field, then the
    /// hop-by-hop strip and the framing rule of `filter_response`.
    fn as_general_path(head: &[u8]) -> HeaderMap {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut slots);
        resp.parse(head).unwrap();
        let mut map = header_map(resp.headers).unwrap();
        crate::headers::strip_hop_by_hop(&mut map);
        if map.contains_key(http::header::TRANSFER_ENCODING) {
            map.remove(http::header::CONTENT_LENGTH);
        }
        map
    }

    #[test]
    fn fields_kept_as_bytes_are_what_the_general_path_would_pass_on() {
        // Random heads from fields that matter to the strip and the framing, in any case
        // and order: whenever the parser keeps the fields as bytes, they are the map the
        // general path would have left (per name, values in order).
        const NAMES: &[&str] = &[
            "Content-Length",
            "content-length",
            "Transfer-Encoding",
            "Connection",
            "connection",
            "Keep-Alive",
            "TE",
            "Upgrade",
            "Proxy-Connection",
            "Proxy-Authenticate",
            "Proxy-Authorization",
            "Date",
            "close",
            "Close",
            "Host",
            "X-A",
            "x-a",
            "Server",
            "Set-Cookie",
            "Trailer",
        ];
        const VALUES: &[&str] = &[
            "5",
            "5, 5",
            "0",
            "chunked",
            "gzip, chunked",
            "chunked, gzip",
            "close",
            "keep-alive",
            "Close",
            "x-a",
            "close, x-a",
            "Host",
            "te, upgrade",
            "keep-alive, Upgrade",
            "",
            "a b",
            "proxy-connection",
            "date",
            "content-length",
            "timeout=5",
            "\u{e9}",
        ];
        let mut rng = fastrand::Rng::with_seed(0x6b6579);
        let (mut as_bytes, mut as_map) = (0, 0);
        for _ in 0..5_000 {
            let mut head = String::from("HTTP/1.1 200 OK\r\n");
            for _ in 0..rng.usize(0..7) {
                let name = NAMES[rng.usize(..NAMES.len())];
                let value = VALUES[rng.usize(..VALUES.len())];
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let Ok(Parsed::Final(parsed, _)) = parse_head(head.as_bytes(), &Method::GET) else {
                continue;
            };
            match parsed.fields {
                Fields::Raw(raw) => {
                    as_bytes += 1;
                    let mut map = HeaderMap::new();
                    raw.clone().append_to(&mut map);
                    assert_eq!(map, as_general_path(head.as_bytes()), "{head}");
                    let te = map.contains_key(http::header::TRANSFER_ENCODING);
                    assert_eq!(raw.coded, te, "{head}");
                    let ends_chunked = map
                        .get(http::header::TRANSFER_ENCODING)
                        .is_some_and(|v| ends_with_chunked(v.as_bytes()));
                    assert_eq!(raw.chunked, ends_chunked, "{head}");
                    assert_eq!(
                        raw.length.is_some(),
                        map.contains_key(http::header::CONTENT_LENGTH),
                        "{head}"
                    );
                    assert_eq!(raw.has_date, map.contains_key(http::header::DATE), "{head}");
                }
                Fields::Map(_) => as_map += 1,
            }
        }
        // Both forms were exercised.
        assert!(
            as_bytes > 1_000 && as_map > 500,
            "{as_bytes} as bytes, {as_map} as maps"
        );
    }

    #[test]
    fn fields_need_a_map_only_where_the_strip_would_decide() {
        let form = |fields: &str| {
            let head = format!("HTTP/1.1 200 OK\r\n{fields}\r\n");
            match head_of(&head) {
                Fields::Raw(_) => "bytes",
                Fields::Map(_) => "map",
            }
        };
        // Bytes: nothing, or a `Connection` list of hop-by-hop names, `close`, `host`.
        assert_eq!(form(""), "bytes");
        assert_eq!(
            form("Connection: keep-alive, Upgrade, TE, host\r\nKeep-Alive: 5\r\n"),
            "bytes"
        );
        assert_eq!(form("Connection: close\r\ncontent-length: 1\r\n"), "bytes");
        assert_eq!(form("transfer-encoding: gzip, chunked\r\n"), "bytes");
        // A map: a list naming an end-to-end field, `close` naming a field called
        // `close`, two framing fields of either kind.
        assert_eq!(form("Connection: x-a\r\nx-a: 1\r\n"), "map");
        assert_eq!(form("Connection: close\r\nclose: 1\r\n"), "map");
        assert_eq!(form("content-length: 1\r\ncontent-length: 1\r\n"), "map");
        assert_eq!(
            form("transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n"),
            "map"
        );
        assert_eq!(
            form("content-length: 1\r\ntransfer-encoding: chunked\r\n"),
            "map"
        );
    }

    #[test]
    fn fields_as_bytes_are_lower_case_lines_with_the_framing_field_last() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: up\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Multi: 1\r\nDate: d\r\nX-Multi: 2\r\n\r\n";
        let Fields::Raw(raw) = head_of(head) else {
            panic!("bytes expected");
        };
        assert_eq!(
            raw.end_to_end(),
            b"server: up\r\nx-multi: 1\r\ndate: d\r\nx-multi: 2\r\n"
        );
        assert_eq!(raw.framing(), b"content-length: 2\r\n");
        assert_eq!(
            (raw.length, raw.coded, raw.chunked, raw.has_date),
            (Some(2), false, false, true)
        );
        let Fields::Raw(raw) = head_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        else {
            panic!("bytes expected");
        };
        assert_eq!(raw.end_to_end(), b"");
        assert_eq!(raw.framing(), b"transfer-encoding: chunked\r\n");
        assert_eq!((raw.length, raw.coded, raw.has_date), (None, true, false));
        assert!(raw.chunked);
        let Fields::Raw(raw) =
            head_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")
        else {
            panic!("bytes expected");
        };
        assert!(raw.coded && !raw.chunked);
    }

    fn head_of(s: &str) -> Fields {
        match parse_head(s.as_bytes(), &Method::GET).unwrap() {
            Parsed::Final(h, _) => h.fields,
            other => panic!("{other:?}"),
        }
    }

    fn head(bytes: &str, method: Method) -> Head {
        match parse_head(bytes.as_bytes(), &method).unwrap() {
            Parsed::Final(h, n) => {
                assert_eq!(n, bytes.find("\r\n\r\n").unwrap() + 4);
                h
            }
            other => panic!("{other:?}"),
        }
    }

    fn err(bytes: &str) -> &'static str {
        parse_head(bytes.as_bytes(), &Method::GET).unwrap_err().0
    }

    #[test]
    fn the_request_head_is_origin_form_http11_with_every_header_line() {
        let req = Request::get("/a/b?c=d")
            .header("host", "up")
            .header("x-multi", "1")
            .header("x-multi", "2")
            .body(())
            .unwrap();
        let mut out = BytesMut::new();
        encode_head(&req, None, &mut out);
        assert_eq!(
            &out[..],
            b"GET /a/b?c=d HTTP/1.1\r\nhost: up\r\nx-multi: 1\r\nx-multi: 2\r\n\r\n"
        );
        let bare = Request::head("http://h").body(()).unwrap();
        out.clear();
        encode_head(&bare, None, &mut out);
        assert_eq!(&out[..], b"HEAD / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn only_bodyless_get_and_head_take_this_path() {
        let get = Request::get("/").body(()).unwrap();
        assert!(takes(&get, false));
        assert!(!takes(&get, true));
        assert!(takes(&Request::head("/").body(()).unwrap(), false));
        for m in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT"] {
            let r = Request::builder().method(m).uri("/").body(()).unwrap();
            assert!(!takes(&r, false), "{m}");
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.reusable), (Framing::Length(5), true));
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.fields.into_map()["content-length"], "5");
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
            Method::GET,
        );
        assert_eq!(h.framing, Framing::Length(7));
        let h = head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            Method::GET,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, true));
        let h = head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            Method::GET,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        // Both: chunked wins, and the connection is not trusted with another response.
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            Method::GET,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::HEAD);
        assert_eq!((h.framing, h.reusable), (Framing::Empty, true));
        for s in ["204 No Content", "304 Not Modified"] {
            let h = head(
                &format!("HTTP/1.1 {s}\r\ncontent-length: 9\r\n\r\n"),
                Method::GET,
            );
            assert_eq!((h.framing, h.reusable), (Framing::Empty, true), "{s}");
        }
        let h = head(
            "HTTP/1.1 200 OK\r\nconnection: x, Close\r\ncontent-length: 0\r\n\r\n",
            Method::GET,
        );
        assert_eq!((h.framing, h.reusable), (Framing::Length(0), false));
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", Method::GET);
        assert_eq!((h.version, h.reusable), (Version::HTTP_10, false));
        assert_eq!(
            err("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"),
            "Transfer-Encoding in an HTTP/1.0 response"
        );
    }

    #[test]
    fn informational_heads_are_skipped_and_101_refused() {
        let s = "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n";
        match parse_head(s.as_bytes(), &Method::GET).unwrap() {
            Parsed::Informational(n) => assert_eq!(n, s.find("HTTP/1.1 200").unwrap()),
            other => panic!("{other:?}"),
        }
        assert!(err("HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n").contains("101"));
    }

    #[test]
    fn partial_heads_wait_and_bad_heads_are_errors() {
        let full = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n";
        for cut in 0..full.len() {
            assert!(
                matches!(
                    parse_head(&full.as_bytes()[..cut], &Method::GET),
                    Ok(Parsed::Partial)
                ),
                "{cut}"
            );
        }
        assert_eq!(
            err("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n"),
            "differing Content-Length values"
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\n"),
            "differing Content-Length values"
        );
        for v in ["-1", "+1", "1 1", "0x10", "", "99999999999999999999", "1,"] {
            assert_eq!(
                err(&format!("HTTP/1.1 200 OK\r\ncontent-length: {v}\r\n\r\n")),
                "invalid Content-Length",
                "{v:?}"
            );
        }
        assert_eq!(err("HTTP/1.1 2000 OK\r\n\r\n"), "invalid response head");
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nbad header\r\n\r\n"),
            "invalid response head"
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nx: a\rb\r\n\r\n"),
            "invalid response head"
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\n x: folded\r\n\r\n"),
            "invalid response head"
        );
        let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            err(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")),
            "too many header fields"
        );
    }

    /// Decodes `wire` fed `step` bytes at a time; the body and the trailers.
    fn decode(wire: &[u8], step: usize) -> Result<(Vec<u8>, HeaderMap, usize), Malformed> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match state.step(&mut buf)? {
                Step::Data(d) => body.extend_from_slice(&d),
                Step::End(t) => return Ok((body, t, buf.len() + wire.len() - fed)),
                Step::More => {
                    assert!(
                        fed < wire.len(),
                        "the decoder wants more than the whole body"
                    );
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_reads() {
        let wire = b"5\r\nhello\r\nA;name=val\r\n, chunked!\r\n0\r\nx-sum: abc\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, wire.len()] {
            let (body, trailers, left) = decode(wire, step).unwrap();
            assert_eq!(body, b"hello, chunked!", "{step}");
            assert_eq!(trailers["x-sum"], "abc");
            assert_eq!(left, 4, "what follows the body is left unread");
        }
        let (body, trailers, _) = decode(b"0\r\n\r\n", 1).unwrap();
        assert!(body.is_empty() && trailers.is_empty());
        assert_eq!(chunk_size(b"fFfF").unwrap(), 0xffff);
    }

    #[test]
    fn malformed_chunks_are_errors() {
        let cases: [(&[u8], &str); 10] = [
            (
                b"5\nhello\r\n0\r\n\r\n",
                "chunk-size line not ended by CRLF",
            ),
            (b"\r\n", "invalid chunk size"),
            (b"x\r\n", "invalid chunk size"),
            (b"5 5\r\nhello\r\n0\r\n\r\n", "invalid chunk size"),
            (b"-5\r\n", "invalid chunk size"),
            (b"11111111111111111\r\n", "invalid chunk size"),
            (
                b"5;a\x01b\r\nhello\r\n0\r\n\r\n",
                "control character in chunk extension",
            ),
            (b"5\r\nhelloX\r\n0\r\n\r\n", "chunk data not ended by CRLF"),
            (b"5\r\nhello\n0\r\n\r\n", "chunk data not ended by CRLF"),
            (b"0\r\nbad trailer\r\n\r\n", "invalid trailer section"),
        ];
        for (wire, want) in cases {
            for step in [1, wire.len()] {
                assert_eq!(
                    decode(wire, step).unwrap_err().0,
                    want,
                    "{:?}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
        let long = [b'1'; MAX_CHUNK_LINE + 3];
        let mut state = Chunked::Size;
        let mut buf = BytesMut::from(&long[..]);
        assert_eq!(
            state.step(&mut buf).unwrap_err().0,
            "chunk-size line too long"
        );
        // Sixteen digits is the most, and whitespace before extensions is allowed.
        assert_eq!(chunk_size(b"ffffffffffffffff").unwrap(), u64::MAX);
        assert_eq!(chunk_size(b"A \t;x=\"y z\"").unwrap(), 10);
    }
}
