//! Request path normalisation (RFC 3986 §6.2.2): what is routed, authenticated and
//! forwarded is one and the same path.
//!
//! The danger is a path that Keyway and the upstream read differently. `..` segments are
//! resolved here, so `/public/%2e%2e/admin` is authenticated as `/admin`. An encoded slash
//! is harder: `/public/..%2fadmin` is one segment to an RFC 3986 reader, but nginx, many
//! application frameworks and some storage backends decode `%2F` and then resolve `..`,
//! serving `/admin`. [`EscapedSlashes`] says what to do with such paths; the default refuses
//! them. A backslash counts as a slash: several servers treat it as one.
//!
//! Everything works on bytes: a path may hold UTF-8 (`/café`), and only ASCII escapes are
//! ever decoded, so the output stays valid UTF-8 whenever the input was.

/// What to do with `%2F`, `%5C` and `\` in a request path (Envoy's
/// `path_with_escaped_slashes_action`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Refuse the request with 400 (the default): the only choice that is safe whatever
    /// the upstream does with them.
    #[default]
    Reject,
    /// Decode them to `/`, then normalise again, so routing and the upstream see plain
    /// slashes. Changes the path for upstreams that gave `%2F` a meaning of its own.
    Unescape,
    /// Forward them untouched. Unsafe with upstreams that decode them: a rule that turns
    /// authentication off for `/public` then also covers `/public/..%2Fadmin`.
    Keep,
}

/// The path holds an encoded slash or a backslash, and the policy is to refuse it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EscapedSlash;

/// The normalised form of `path`, `Ok(None)` when it is already normal (the common case,
/// decided without allocating), or an error when `escaped` refuses it.
///
/// Percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, other
/// escapes have their hex digits uppercased, and `.` and `..` segments are removed
/// (RFC 3986 §5.2.4).
pub fn normalize(path: &str, escaped: EscapedSlashes) -> Result<Option<String>, EscapedSlash> {
    let b = path.as_bytes();
    if escaped != EscapedSlashes::Keep && has_escaped_slash(b) {
        if escaped == EscapedSlashes::Reject {
            return Err(EscapedSlash);
        }
    } else if !needs_work(b) {
        return Ok(None);
    }
    let decoded = decode(b, escaped == EscapedSlashes::Unescape);
    let out = remove_dot_segments(&decoded);
    // Only ASCII escapes were decoded into ASCII bytes: UTF-8 in, UTF-8 out.
    let out = String::from_utf8(out).expect("normalising keeps UTF-8 intact");
    Ok((out != path).then_some(out))
}

/// `%2F`, `%5C` (any case) or a raw `\`.
fn has_escaped_slash(b: &[u8]) -> bool {
    b.iter().enumerate().any(|(i, &c)| {
        c == b'\\'
            || (c == b'%'
                && matches!(
                    (b.get(i + 1), b.get(i + 2).map(u8::to_ascii_uppercase)),
                    (Some(b'2'), Some(b'F')) | (Some(b'5'), Some(b'C'))
                ))
    })
}

/// Whether there is an escape or a dot segment (`/.` or `/..` followed by `/` or the end).
fn needs_work(b: &[u8]) -> bool {
    if b.contains(&b'%') {
        return true;
    }
    b.windows(2).enumerate().any(|(i, w)| {
        w == b"/." && {
            let rest = &b[i + 2..];
            rest.is_empty()
                || rest[0] == b'/'
                || (rest[0] == b'.' && (rest.len() == 1 || rest[1] == b'/'))
        }
    })
}

/// Decodes escapes of unreserved characters (and, with `slashes`, `%2F`, `%5C` and `\` to
/// `/`); every other escape is kept with uppercase hex digits, and a `%` that starts no
/// escape becomes `%25`. Without that last rule, decoding could make a new escape out of a
/// stray `%` and the characters after it: `%%32%46` would come out as `%2F`, an encoded
/// slash that was never checked for.
fn decode(b: &[u8], slashes: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let v = h << 4 | l;
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v);
                } else if slashes && matches!(v, b'/' | b'\\') {
                    out.push(b'/');
                } else {
                    out.extend_from_slice(&[
                        b'%',
                        b[i + 1].to_ascii_uppercase(),
                        b[i + 2].to_ascii_uppercase(),
                    ]);
                }
                i += 3;
                continue;
            }
        }
        if c == b'%' {
            out.extend_from_slice(b"%25");
            i += 1;
            continue;
        }
        out.push(if slashes && c == b'\\' { b'/' } else { c });
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let segments: Vec<&[u8]> = path.split(|&c| c == b'/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&[u8]> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate().skip(1) {
        match *seg {
            b"." => {
                if i == last {
                    out.push(b"");
                }
            }
            b".." => {
                out.pop();
                if i == last {
                    out.push(b"");
                }
            }
            s => out.push(s),
        }
    }
    let mut s = Vec::with_capacity(path.len());
    for seg in &out {
        s.push(b'/');
        s.extend_from_slice(seg);
    }
    if s.is_empty() {
        s.push(b'/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::EscapedSlashes::{Keep, Reject, Unescape};
    use super::*;

    fn n(p: &str, mode: EscapedSlashes) -> String {
        normalize(p, mode)
            .expect("not refused")
            .unwrap_or_else(|| p.to_string())
    }

    #[test]
    fn normal_paths_are_left_alone() {
        for p in [
            "/",
            "/a/b",
            "/a.b/c",
            "/.well-known/x",
            "/a/..b",
            "/a/b.",
            "/a//b",
            "/café",
        ] {
            for mode in [Reject, Unescape, Keep] {
                assert_eq!(normalize(p, mode), Ok(None), "{p} {mode:?}");
            }
        }
    }

    #[test]
    fn dot_segments_and_encoded_dots_are_resolved() {
        assert_eq!(n("/public/../admin", Reject), "/admin");
        assert_eq!(n("/public/%2e%2e/admin", Reject), "/admin");
        assert_eq!(n("/public/%2E%2e/admin", Reject), "/admin");
        assert_eq!(n("/a/./b/.", Reject), "/a/b/");
        assert_eq!(n("/../../x", Reject), "/x");
        assert_eq!(n("/a/..", Reject), "/");
        assert_eq!(n("/.", Reject), "/");
        assert_eq!(n("/..", Reject), "/");
        assert_eq!(n("/a/.", Reject), "/a/");
        assert_eq!(n("/a/b/..", Reject), "/a/");
        assert_eq!(n("/%61dmin", Reject), "/admin");
        assert_eq!(n("/100%", Reject), "/100%25");
        assert_eq!(n("/a%zzb", Reject), "/a%25zzb");
        assert_eq!(n("/a%3fb%20c", Reject), "/a%3Fb%20c");
    }

    #[test]
    fn decoding_never_makes_a_new_escape() {
        // `%` `%32`=`2` `%46`=`F`: decoding must not assemble `%2F`.
        assert_eq!(n("/public/..%%32%46admin", Reject), "/public/..%252Fadmin");
        assert_eq!(
            n("/public/..%%32%46admin", Unescape),
            "/public/..%252Fadmin"
        );
        assert_eq!(n("/x%%41", Reject), "/x%25A");
        for p in ["/public/..%%32%46admin", "/x%%41b", "/%%%", "/a%2"] {
            let once = n(p, Reject);
            assert_eq!(normalize(&once, Reject), Ok(None), "{p} -> {once}");
        }
    }

    #[test]
    fn utf8_survives_normalising() {
        assert_eq!(n("/café/%41", Reject), "/café/A");
        assert_eq!(n("/日本/./語", Reject), "/日本/語");
        assert_eq!(n("/ü/../%C3%BC", Reject), "/%C3%BC");
    }

    #[test]
    fn escaped_slashes_are_refused_by_default() {
        for p in [
            "/public/..%2fadmin",
            "/public/..%2Fadmin",
            "/public/%2e%2e%2fadmin",
            "/public/..%5cadmin",
            "/public/..%5Cadmin",
            "/public/..\\admin",
            "/a%2Fb",
        ] {
            assert_eq!(normalize(p, Reject), Err(EscapedSlash), "{p}");
        }
        // An escaped percent sign is not an escaped slash.
        assert_eq!(n("/a%252Fb", Reject), "/a%252Fb");
    }

    #[test]
    fn unescape_decodes_then_normalises() {
        assert_eq!(n("/public/..%2fadmin", Unescape), "/admin");
        assert_eq!(n("/public/%2e%2e%2Fadmin", Unescape), "/admin");
        assert_eq!(n("/public/..%5cadmin", Unescape), "/admin");
        assert_eq!(n("/public/..\\admin", Unescape), "/admin");
        assert_eq!(n("/a%2Fb", Unescape), "/a/b");
        assert_eq!(n("/a%252Fb", Unescape), "/a%252Fb");
    }

    #[test]
    fn keep_forwards_them_as_they_are() {
        assert_eq!(n("/public/..%2fadmin", Keep), "/public/..%2Fadmin");
        assert_eq!(n("/a%2Fb", Keep), "/a%2Fb");
        assert_eq!(n("/a\\b", Keep), "/a\\b");
    }
}
