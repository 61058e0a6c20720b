//! The request head: taken by Keyway's loop only when it is exactly what hyper's server
//! would accept and read the same way, and free of anything that asks for hyper's handling
//! (a body, a connection option, an upgrade, an expectation). Everything else is deferred
//! with every byte, so hyper judges every malformed or ambiguous request.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};

use super::Limits;
use crate::body::Body;

/// Most header fields a head may have to be taken here; more go to hyper, under its own
/// limit.
const MAX_HEADERS: usize = 128;

/// What the start of the read buffer holds.
// The large variant is the common one: boxing it would allocate for every request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Parse {
    /// Not a whole head yet.
    Partial,
    /// A request this loop serves (its head has left the buffer).
    Request(Request<Body>),
    /// A request for hyper: the head, if it has already left the buffer, goes first.
    Defer(Option<Bytes>),
}

/// Most field names a connection remembers from its last request (see [`Scratch`]).
const REMEMBERED_NAMES: usize = 32;

/// What a connection keeps between requests, so that a request allocates neither its list
/// of fields nor, when its client sent the same names last time, its field names.
#[derive(Default)]
pub(super) struct Scratch {
    /// Where each field of the head being parsed sits.
    fields: Vec<Field>,
    /// The field names of the last request, by position. A keep-alive client sends the
    /// same names in the same order each time, and a name `http` has no constant for
    /// (`x-api-key`, say) costs an allocation and a copy to make; a remembered one costs
    /// a comparison and a reference count.
    names: Vec<HeaderName>,
}

/// Where a field's name and value sit in the head.
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

/// The name of the field at `position`, read from `raw`: the remembered one if `raw` spells
/// it, else a new one, remembered in its place. The result is what `HeaderName::from_bytes`
/// gives for `raw`: a remembered name is a valid name, already lower case, and only ASCII
/// letters differ by case, so `raw` spells it exactly when `from_bytes(raw)` would make it.
fn name_at(names: &mut Vec<HeaderName>, position: usize, raw: &[u8]) -> Option<HeaderName> {
    if let Some(known) = names.get(position) {
        if spells(known.as_str().as_bytes(), raw) {
            return Some(known.clone());
        }
    }
    let name = HeaderName::from_bytes(raw).ok()?;
    if let Some(slot) = names.get_mut(position) {
        *slot = name.clone();
    } else if position < REMEMBERED_NAMES {
        names.push(name.clone());
    }
    Some(name)
}

/// Whether `raw` is `lower` with any of its letters in either case. `lower` is a field name
/// as `http` keeps it: ASCII, letters in lower case. A word (four or eight bytes) at a
/// time: this runs for every field of every request, and `eq_ignore_ascii_case`, byte by
/// byte, cost as much as remembering the names saved.
fn spells(lower: &[u8], raw: &[u8]) -> bool {
    let n = lower.len();
    if n != raw.len() {
        return false;
    }
    // `raw` spells `lower` where `raw | letters(lower) == lower`: a letter's two cases differ
    // only in bit 5, and every other byte must match exactly. Words that overlap check some
    // bytes twice, which changes nothing.
    let same = |at: usize, width: usize| {
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..width].copy_from_slice(&b[at..at + width]);
            u64::from_le_bytes(w)
        };
        let l = word(lower);
        word(raw) | letters(l) == l
    };
    match n {
        0..4 => (0..n).all(|i| same(i, 1)),
        4..=8 => same(0, 4) && same(n - 4, 4),
        _ => (0..n - 8).step_by(8).all(|at| same(at, 8)) && same(n - 8, 8),
    }
}

/// `0x20` in each byte of `word` that is a lower-case ASCII letter, `0` in the others: the
/// bit that tells a letter's cases apart. Every byte must be ASCII (below `0x80`), so that no
/// sum below carries into the next byte.
fn letters(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // The top bit of each byte: set in `from_a` where the byte is `a` or above, in `past_z`
    // where it is above `z`.
    let from_a = word.wrapping_add(ONES * u64::from(0x80 - b'a'));
    let past_z = word.wrapping_add(ONES * u64::from(0x80 - b'z' - 1));
    (from_a & !past_z & (ONES * 0x80)) >> 2
}

/// Parses the request head at the start of `buf`.
pub(super) fn parse(buf: &mut BytesMut, limits: Limits, scratch: &mut Scratch) -> Parse {
    let Scratch { fields, names } = scratch;
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
    let mut headers = crate::header_maps::with_capacity(fields.len() + 6);
    for (position, f) in fields.iter().enumerate() {
        let Some(name) = name_at(names, position, &head[f.name.0..f.name.1]) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;
    use std::sync::Arc;

    const LIMITS: Limits = Limits {
        max_headers: 100,
        max_head: 8192,
    };

    fn parse_all(bytes: &[u8]) -> (Parse, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let p = parse(&mut buf, LIMITS, &mut Scratch::default());
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

    #[test]
    fn spells_is_eq_ignore_ascii_case_against_a_lower_case_name() {
        // Every ASCII byte for `lower` (a name holds only some of them, but the word trick
        // must be right for all), every byte for `raw`, in every place of names of every
        // length up to two words and a bit (each length reads its words differently).
        let lower_name = b"abcdefgh-xyz0123w";
        let raw_name = b"ABCdefGH-xYz0123W";
        for len in 1..=lower_name.len() {
            for at in 0..len {
                for l in 0u8..0x80 {
                    for r in 0u8..=0xff {
                        let mut lower = lower_name[..len].to_vec();
                        let mut raw = raw_name[..len].to_vec();
                        lower[at] = l.to_ascii_lowercase();
                        raw[at] = r;
                        assert_eq!(
                            spells(&lower, &raw),
                            lower.eq_ignore_ascii_case(&raw),
                            "{lower:?} vs {raw:?}"
                        );
                    }
                }
            }
        }
        assert!(!spells(b"abc", b"ab"));
        assert!(!spells(b"ab", b"abc"));
        assert!(spells(b"", b""));
        assert!(spells(b"accept-encoding", b"Accept-Encoding"));
        assert!(!spells(b"accept-encoding", b"Accept-Encodinf"));
        assert!(!spells(b"accept-encoding", b"Bccept-Encoding"));
    }

    #[test]
    fn letters_marks_exactly_the_lower_case_letters() {
        for b in 0u8..0x80 {
            for at in 0..8 {
                let word = u64::from(b) << (8 * at) | 0x2d2d_2d2d_2d2d_2d2d & !(0xff << (8 * at));
                let want = u64::from(u8::from(b.is_ascii_lowercase()) << 5) << (8 * at);
                assert_eq!(letters(word), want, "{b:#x} at {at}");
            }
        }
        assert_eq!(letters(u64::from_le_bytes(*b"az`{AZ09")), 0x2020);
    }

    fn names(scratch: &Scratch) -> Vec<&str> {
        scratch.names.iter().map(|n| n.as_str()).collect()
    }

    #[test]
    fn a_remembered_name_is_what_from_bytes_makes() {
        let spellings: &[&[u8]] = &[
            b"x-api-key",
            b"X-Api-Key",
            b"X-API-KEY",
            b"x-api-kez",
            b"x-api-ke",
            b"x-api-keyy",
            b"x_api_key",
            b"x-api key",
            b"x-api-k\xc5y",
            b"host",
            b"HOST",
            b"h0st",
            b"",
            b"x-api-k\x7fy",
            b"x-api-k:y",
            b"x-api-kEy",
        ];
        for first in spellings {
            for then in spellings {
                let mut remembered = Vec::new();
                let made = name_at(&mut remembered, 0, first);
                assert_eq!(made, HeaderName::from_bytes(first).ok());
                assert_eq!(
                    name_at(&mut remembered, 0, then),
                    HeaderName::from_bytes(then).ok(),
                    "{:?} after {:?}",
                    String::from_utf8_lossy(then),
                    String::from_utf8_lossy(first),
                );
                // Whatever is remembered is the last valid name seen in that place.
                let last = HeaderName::from_bytes(then).ok().or(made);
                assert_eq!(remembered.first(), last.as_ref());
            }
        }
    }

    #[test]
    fn a_connection_remembers_its_last_request_names_in_place() {
        let mut scratch = Scratch::default();
        let mut buf =
            BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\nX-Api-Key: k\r\nX-B: 1\r\n\r\n"[..]);
        assert!(matches!(
            parse(&mut buf, LIMITS, &mut scratch),
            Parse::Request(_)
        ));
        assert_eq!(names(&scratch), ["host", "x-api-key", "x-b"]);
        // Different names in the same places replace the remembered ones, and the request
        // carries its own names, not the remembered ones.
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\nX-Other: k\r\n\r\n"[..]);
        let Parse::Request(req) = parse(&mut buf, LIMITS, &mut scratch) else {
            panic!("not taken")
        };
        let got: Vec<&str> = req.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(got, ["host", "x-other"]);
        assert_eq!(names(&scratch), ["host", "x-other", "x-b"]);
        // A head with more fields than are remembered is read whole; the first 32 names
        // are kept.
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&many[..]);
        let Parse::Request(req) = parse(&mut buf, LIMITS, &mut scratch) else {
            panic!("not taken")
        };
        assert_eq!(req.headers().len(), 40);
        assert!(req.headers().contains_key("x-39"));
        let kept: Vec<String> = (0..REMEMBERED_NAMES).map(|i| format!("x-{i}")).collect();
        assert_eq!(names(&scratch), kept);
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

    /// A `GET` head of exactly `len` bytes.
    fn head_of_len(len: usize) -> Vec<u8> {
        let frame = "GET / HTTP/1.1\r\nx: \r\n\r\n".len();
        format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(len - frame)).into_bytes()
    }

    #[tokio::test]
    async fn the_size_limit_is_hypers_to_the_byte() {
        let max = LIMITS.max_head;
        // A whole head of the limit: hyper takes it, and so does the loop.
        let at = head_of_len(max);
        assert!(matches!(parse_all(&at).0, Parse::Request(_)));
        assert!(hyper_reads(&at).await.is_some());
        // One byte more: hyper refuses it, and the loop leaves it to hyper.
        let over = head_of_len(max + 1);
        assert!(matches!(parse_all(&over).0, Parse::Defer(None)));
        assert!(hyper_reads(&over).await.is_none());
        // Unfinished at the limit: it can only grow past it, so it goes to hyper now.
        assert!(matches!(parse_all(&over[..max]).0, Parse::Defer(None)));
        assert!(matches!(parse_all(&over[..max - 1]).0, Parse::Partial));
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
        let mut kept = Scratch::default();
        for round in 0..4000 {
            let seed = SEEDS[round % SEEDS.len()];
            let input = if round < SEEDS.len() {
                seed.to_vec()
            } else {
                mutate(&mut rng, seed)
            };
            let (parsed, rest) = parse_all(&input);
            // A connection's scratch, remembering the names of every earlier round, reads
            // each head as a fresh one does.
            let mut again = BytesMut::from(&input[..]);
            let remembering = parse(&mut again, LIMITS, &mut kept);
            assert_eq!(format!("{remembering:?}"), format!("{parsed:?}"));
            assert_eq!(again, rest);
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
}
