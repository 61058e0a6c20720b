//! Request path normalisation (RFC 3986 §6.2.2): what is routed, authenticated and
//! forwarded is one and the same path.

/// The normalised form of `path`, or `None` when it is already normal (the common case,
/// decided without allocating).
///
/// Percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded and `.` and
/// `..` segments removed (§5.2.4). Other escapes, encoded slashes included, are kept as
/// they are (hex digits uppercased), as Envoy does by default.
pub fn normalize(path: &str) -> Option<String> {
    if !needs_work(path) {
        return None;
    }
    let decoded = decode_unreserved(path);
    let out = remove_dot_segments(&decoded);
    (out != path).then_some(out)
}

fn needs_work(path: &str) -> bool {
    let b = path.as_bytes();
    if b.contains(&b'%') {
        return true;
    }
    // A `.` that starts a segment: `/.` or `/..` followed by `/` or the end.
    b.windows(2).enumerate().any(|(i, w)| {
        w == b"/." && {
            let rest = &b[i + 2..];
            rest.is_empty()
                || rest[0] == b'/'
                || (rest[0] == b'.' && (rest.len() == 1 || rest[1] == b'/'))
        }
    })
}

fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = (h << 4 | l) as char;
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~') {
                    out.push(c);
                } else {
                    out.push('%');
                    out.push(b[i + 1].to_ascii_uppercase() as char);
                    out.push(b[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate().skip(1) {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::normalize;

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
        ] {
            assert_eq!(normalize(p), None, "{p}");
        }
    }

    #[test]
    fn dot_segments_and_encoded_dots_are_resolved() {
        let n = |p: &str| normalize(p).unwrap_or_else(|| p.to_string());
        assert_eq!(n("/public/../admin"), "/admin");
        assert_eq!(n("/public/%2e%2e/admin"), "/admin");
        assert_eq!(n("/public/%2E%2e/admin"), "/admin");
        assert_eq!(n("/a/./b/."), "/a/b/");
        assert_eq!(n("/../../x"), "/x");
        assert_eq!(n("/a/.."), "/");
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/a%2Fb"), "/a%2Fb");
        assert_eq!(n("/100%"), "/100%");
    }
}
