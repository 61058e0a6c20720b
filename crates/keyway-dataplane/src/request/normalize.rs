//! Phase 1: make the request say one thing about where it goes, before anything looks at
//! it. The host routing uses is the `Host` forwarded upstream, and the path routing matches
//! and authentication protects is the path forwarded upstream.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};

use super::error::ProxyError;
use super::path::{self, EscapedSlashes};

/// Normalises `parts` in place:
///
/// - more header fields than `max_headers` is 431 (HTTP/1.1 is held to the same limit by
///   the connection's parser; this catches HTTP/2, whose HPACK lists can be longer);
/// - an absolute-form target or HTTP/2 `:authority` wins over `Host` (RFC 9112 §3.2.2),
///   which is overwritten with it; two `Host` headers, or none on HTTP/1.1, are refused;
/// - the path is normalised ([`path::normalize`]): `/public/%2e%2e/admin` is routed,
///   checked and forwarded as `/admin`, and encoded slashes are handled as `escaped` says.
pub fn request(
    parts: &mut Parts,
    max_headers: usize,
    escaped: EscapedSlashes,
) -> Result<(), ProxyError> {
    if parts.headers.len() > max_headers {
        return Err(ProxyError::TooManyHeaders);
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let (first, second) = (hosts.next().is_some(), hosts.next().is_some());
    if second {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if let Some(authority) = parts.uri.authority() {
        let v = HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("bad authority"))?;
        parts.headers.insert(header::HOST, v);
    } else if !first && parts.version == http::Version::HTTP_11 {
        return Err(ProxyError::BadRequest("missing Host header"));
    }
    let normal =
        path::normalize(parts.uri.path(), escaped).map_err(|_| ProxyError::EscapedSlash)?;
    if let Some(normal) = normal {
        let pq = match parts.uri.query() {
            Some(q) => format!("{normal}?{q}"),
            None => normal,
        };
        set_path_and_query(parts, pq)?;
    }
    Ok(())
}

/// Replaces the request's path and query, keeping scheme and authority.
pub fn set_path_and_query(parts: &mut Parts, pq: String) -> Result<(), ProxyError> {
    let pq = PathAndQuery::try_from(pq).map_err(|_| ProxyError::BadRequest("bad request path"))?;
    let mut up = std::mem::take(&mut parts.uri).into_parts();
    up.path_and_query = Some(pq);
    parts.uri = Uri::from_parts(up).map_err(|_| ProxyError::BadRequest("bad request path"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        super::super::test_parts("GET", uri, headers)
    }

    #[test]
    fn authority_overrides_host() {
        let mut p = parts("http://b.example/x", &[("host", "a.example")]);
        request(&mut p, 100, EscapedSlashes::Reject).unwrap();
        assert_eq!(p.headers["host"], "b.example");
    }

    #[test]
    fn host_problems_are_400() {
        let mut two = parts("/", &[("host", "a"), ("host", "b")]);
        assert_eq!(
            request(&mut two, 100, EscapedSlashes::Reject),
            Err(ProxyError::BadRequest("more than one Host header"))
        );
        let mut none = parts("/", &[]);
        assert_eq!(
            request(&mut none, 100, EscapedSlashes::Reject),
            Err(ProxyError::BadRequest("missing Host header"))
        );
    }

    #[test]
    fn header_count_limit() {
        let headers: Vec<(String, String)> =
            (0..5).map(|i| (format!("x-{i}"), "v".into())).collect();
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut p = parts("http://h/", &refs);
        assert_eq!(
            request(&mut p, 4, EscapedSlashes::Reject),
            Err(ProxyError::TooManyHeaders)
        );
        let mut p = parts("http://h/", &refs);
        assert!(request(&mut p, 6, EscapedSlashes::Reject).is_ok());
        // Exactly the limit is within it.
        let mut p = parts("http://h/", &refs);
        assert!(request(&mut p, 5, EscapedSlashes::Reject).is_ok());
    }

    #[test]
    fn the_query_survives_path_normalising() {
        let mut p = parts("/a/../b?x=%2F&y", &[("host", "h")]);
        request(&mut p, 100, EscapedSlashes::Reject).unwrap();
        assert_eq!(p.uri.to_string(), "/b?x=%2F&y");
        let mut p = parts("/a%2Fb?x", &[("host", "h")]);
        assert_eq!(
            request(&mut p, 100, EscapedSlashes::Reject),
            Err(ProxyError::EscapedSlash)
        );
    }
}
