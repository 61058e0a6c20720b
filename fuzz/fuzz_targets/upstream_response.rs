//! Upstream responses as Keyway's own HTTP/1 reader takes them (`upstream/h1.rs`): parsing
//! a head and decoding a chunked body (what follows the head) never panic, a head is found at the same length
//! however it arrives, and a chunked body decodes to the same bytes and trailers (or the
//! same error) whether it arrives whole or a few bytes at a time.
#![no_main]

use bytes::BytesMut;
use http::{HeaderMap, Method};
use keyway_dataplane::upstream::h1::{parse_head, Chunked, Framing, Malformed, Parsed, Step};
use libfuzzer_sys::fuzz_target;

/// Decodes `wire` as a chunked body fed `piece` bytes at a time: the data, the trailers and
/// how many bytes were left after the body, or the error.
fn decode(wire: &[u8], piece: usize) -> Result<Option<(Vec<u8>, HeaderMap, usize)>, Malformed> {
    let mut state = Chunked::Size;
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match state.step(&mut buf)? {
            Step::Data(d) => {
                assert!(!d.is_empty(), "an empty data frame");
                body.extend_from_slice(&d);
            }
            Step::End(t) => return Ok(Some((body, t, buf.len() + wire.len() - fed))),
            Step::More if fed == wire.len() => return Ok(None),
            Step::More => {
                let n = piece.min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, data)) = input.split_first() else {
        return;
    };
    let method = if control & 1 == 0 {
        Method::GET
    } else {
        Method::HEAD
    };
    let piece = usize::from(control >> 1).max(1);
    let len = match parse_head(data, &method) {
        Ok(Parsed::Final(head, len)) => {
            assert!(!head.status.is_informational());
            if method == Method::HEAD {
                assert_eq!(head.framing, Framing::Empty);
            }
            Some(len)
        }
        Ok(Parsed::Informational(len)) => Some(len),
        _ => None,
    };
    if let Some(len) = len {
        assert!(0 < len && len <= data.len());
        // Any shorter prefix is incomplete, never a different head.
        for cut in [0, len / 2, len - 1] {
            assert!(
                matches!(parse_head(&data[..cut], &method), Ok(Parsed::Partial)),
                "prefix {cut} of a {len}-byte head"
            );
        }
    }
    // What follows the head (or all of it) as a chunked body: fed whole and in pieces,
    // the same outcome.
    let body = &data[len.unwrap_or(0)..];
    let all = decode(body, body.len().max(1));
    let bits = decode(body, piece);
    match (&all, &bits) {
        (Ok(Some((a, at, al))), Ok(Some((b, bt, bl)))) => {
            assert_eq!(a, b);
            assert_eq!(at, bt);
            assert_eq!(al, bl);
            assert!(a.len() <= body.len());
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Ok(None), Ok(None)) => {}
        (a, b) => panic!("whole: {a:?}, pieces of {piece}: {b:?}"),
    }
});
