//! An upstream response's header fields kept as the bytes they arrived in, for the writer
//! that can copy them to the client as they are.
//!
//! Why: building a `HeaderMap` of the upstream's fields (a hashed insert and a copied
//! value per field), stripping its hop-by-hop fields (hashed removals) and walking it again
//! to write it was a sixth of the instructions of a proxied request (`bench/instructions.sh`),
//! for fields the gateway only passes on. Here the head parser writes each end-to-end field
//! once, as `name: value\r\n` with its name in lower case (as hyper writes names), into one
//! buffer, and drops the hop-by-hop fields on the way (RFC 9110 §7.6.1, the rules of
//! [`crate::headers::strip_hop_by_hop`]).
//!
//! Only responses whose fields need no decision beyond that take this form; the parser
//! builds a `HeaderMap` for the rest (a `Connection` list naming an end-to-end field, or
//! more than one framing field: two of a kind, or one of each). Whoever needs the fields as a map (a
//! route's response header filters, hyper's server for HTTP/2 and the connections it
//! serves) calls [`materialize`], which gives the map the parser would have built.
//!
//! The fields travel with the response's body ([`super::direct::DirectBody`]), which
//! came from the same head, leaving the response's `HeaderMap` empty: one allocation
//! fewer than a response extension would take.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Response;

use super::h1::{self, Malformed};
use crate::body::Body;

/// The longest field name the `http` crate accepts.
const MAX_NAME: usize = 1 << 16;

/// End-to-end fields of an upstream response, as bytes.
#[derive(Clone, Debug)]
pub struct RawFields {
    /// Every end-to-end field as `name: value\r\n`, names in lower case, in the order
    /// received; the framing field (`Content-Length` or `Transfer-Encoding`), if any, last.
    /// Kept unfrozen: `freeze` of a buffer not filled to its capacity allocates the shared
    /// header that `Bytes` needs, one allocation per response for a buffer only copied
    /// from (until [`RawFields::append_to`], which freezes it).
    lines: BytesMut,
    /// Where the framing field starts in `lines`.
    framing_at: usize,
    /// The value of `Content-Length`, when that is the framing field.
    pub length: Option<u64>,
    /// Whether `Transfer-Encoding` is the framing field...
    pub coded: bool,
    /// ...and its last coding is `chunked`.
    pub chunked: bool,
    /// Whether a `Date` field is among them.
    pub has_date: bool,
}

impl RawFields {
    /// The fields that are not framing fields.
    pub fn end_to_end(&self) -> &[u8] {
        &self.lines[..self.framing_at]
    }

    /// The framing field, `Content-Length` or `Transfer-Encoding` (empty if none).
    pub fn framing(&self) -> &[u8] {
        &self.lines[self.framing_at..]
    }

    /// Appends every field to `map`, as the head parser would have built it.
    pub fn append_to(self, map: &mut HeaderMap) {
        let lines = self.lines.freeze();
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], &line[colon + 2..]);
            let start = value.as_ptr() as usize - lines.as_ptr() as usize;
            let value = lines.slice(start..start + value.len());
            // Both were checked when the fields were read.
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(value),
            ) {
                map.append(n, v);
            }
        }
    }
}

/// Moves the fields a response carries as bytes, if any, into its `HeaderMap`.
pub fn materialize(resp: &mut Response<Body>) {
    if let Body::Direct(d) = resp.body_mut() {
        if let Some(raw) = d.take_fields() {
            raw.append_to(resp.headers_mut());
        }
    }
}

/// The fields a response carries as bytes, if any.
pub fn of(body: &Body) -> Option<&RawFields> {
    match body {
        Body::Direct(d) => d.fields(),
        _ => None,
    }
}

/// What the head parser learns of a field's name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Name {
    ContentLength,
    TransferEncoding,
    Connection,
    Date,
    /// A hop-by-hop field other than `Connection`: dropped.
    HopByHop,
    /// A field named `close`: a `Connection: close` would name it.
    Close,
    Other,
}

/// Classifies a field name given in lower case: one comparison of bytes per candidate of
/// the same length.
pub(super) fn classify(lower: &[u8]) -> Name {
    match lower {
        b"te"
        | b"upgrade"
        | b"keep-alive"
        | b"proxy-connection"
        | b"proxy-authenticate"
        | b"proxy-authorization" => Name::HopByHop,
        b"date" => Name::Date,
        b"close" => Name::Close,
        b"connection" => Name::Connection,
        b"content-length" => Name::ContentLength,
        b"transfer-encoding" => Name::TransferEncoding,
        _ => Name::Other,
    }
}

/// Classifies a name in any case (a token of a `Connection` list).
fn classify_any_case(name: &[u8]) -> Name {
    const LONGEST: usize = "proxy-authorization".len();
    if name.len() > LONGEST {
        return Name::Other;
    }
    let mut lower = [0u8; LONGEST];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    classify(lower)
}

/// Whether every name a `Connection` value lists is one the strip removes anyway or keeps
/// anyway (a hop-by-hop field, `Host`), or `close`: then dropping the hop-by-hop fields is
/// the whole of the strip.
pub(super) fn lists_only_known(value: &[u8]) -> bool {
    value.split(|&b| b == b',').all(|t| {
        let t = t.trim_ascii();
        t.is_empty()
            || t.eq_ignore_ascii_case(b"host")
            || matches!(
                classify_any_case(t),
                Name::Connection | Name::HopByHop | Name::Close
            )
    })
}

/// What one pass over a response head's fields finds.
pub(super) struct Scan {
    /// The `Content-Length` every copy agrees on.
    pub length: Option<u64>,
    /// Whether a `Transfer-Encoding` field is present...
    pub coded: bool,
    /// ...and the last coding of the last one is `chunked` (RFC 9112 §6.3, rule 4).
    pub chunked: bool,
    /// Whether a `Connection` field lists `close`.
    pub close: bool,
    /// The fields as bytes, unless they need a `HeaderMap` (see the module docs).
    pub raw: Option<RawFields>,
}

/// Reads the framing facts of a head's fields and, in the same pass, writes its
/// end-to-end fields as bytes.
pub(super) fn scan(fields: &[httparse::Header<'_>]) -> Result<Scan, Malformed> {
    let mut length: Option<u64> = None;
    let (mut coded, mut chunked, mut close) = (false, false, false);
    let mut lines = BytesMut::with_capacity(
        fields
            .iter()
            .map(|h| h.name.len() + h.value.len() + 4)
            .sum(),
    );
    // Whether the fields can stay bytes, and the one framing field they may have.
    let mut as_bytes = true;
    let mut framing: Option<(Name, &[u8])> = None;
    let (mut has_date, mut named_close) = (false, false);
    for h in fields {
        let name = h.name.as_bytes();
        if name.len() > MAX_NAME {
            return Err(Malformed("header name"));
        }
        // The name goes into the block lower-cased, and is classified there: it stays only
        // if the field does.
        let at = lines.len();
        lines.extend_from_slice(name);
        lines[at..].make_ascii_lowercase();
        let kind = classify(&lines[at..]);
        if !as_bytes || !matches!(kind, Name::Date | Name::Close | Name::Other) {
            lines.truncate(at);
        }
        match kind {
            Name::ContentLength => {
                let n = h1::content_length(h.value)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Malformed("differing Content-Length values"));
                }
                length = Some(n);
            }
            Name::TransferEncoding => {
                coded = true;
                chunked = h1::ends_with_chunked(h.value);
            }
            Name::Connection => {
                close |= h1::lists_close(h.value);
                as_bytes &= lists_only_known(h.value);
                continue;
            }
            Name::HopByHop => continue,
            Name::Date => has_date = true,
            Name::Close => named_close = true,
            Name::Other => {}
        }
        if !as_bytes {
            continue;
        }
        if matches!(kind, Name::ContentLength | Name::TransferEncoding) {
            as_bytes &= framing.is_none();
            framing = Some((kind, h.value));
        } else {
            push_value(&mut lines, h.value);
        }
    }
    let raw = (as_bytes && !(named_close && close)).then(|| {
        let framing_at = lines.len();
        match framing {
            Some((Name::ContentLength, v)) => push(&mut lines, b"content-length", v),
            Some((_, v)) => push(&mut lines, b"transfer-encoding", v),
            None => {}
        }
        RawFields {
            lines,
            framing_at,
            length,
            coded,
            chunked,
            has_date,
        }
    });
    Ok(Scan {
        length,
        coded,
        chunked,
        close,
        raw,
    })
}

fn push(lines: &mut BytesMut, lower_name: &[u8], value: &[u8]) {
    lines.extend_from_slice(lower_name);
    push_value(lines, value);
}

/// Ends the field whose name was just written.
fn push_value(lines: &mut BytesMut, value: &[u8]) {
    lines.extend_from_slice(b": ");
    lines.extend_from_slice(value);
    lines.extend_from_slice(b"\r\n");
}
