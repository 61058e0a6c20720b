//! API key authentication on the request path (SPEC section 4).
//!
//! One pass finds the key (header sources in list order, then query sources, then cookie
//! sources; the first present wins), one SHA-256 digest and one hash lookup check it, and
//! on success the key is removed from every configured source unless the policy forwards
//! it. The key itself is never logged, counted or copied beyond the digest input.

use std::borrow::Cow;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};

use keyway_store::auth::Client;
use keyway_store::ApiKeyPolicy;
use percent_encoding::percent_decode_str;

/// Why a request was refused. Shown in metrics and the access log, never to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No configured source carried a key.
    Missing,
    /// A key was presented but is not known.
    Unknown,
    /// The chosen source was present twice with different values.
    Ambiguous,
    /// The key is known but its `expiresAt` has passed.
    Expired,
}

impl Denied {
    /// Metric label / log value.
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::Missing => "missing_api_key",
            Denied::Unknown => "unknown_api_key",
            Denied::Ambiguous => "ambiguous_api_key",
            Denied::Expired => "expired_api_key",
        }
    }
}

/// Checks the request against `policy`; on success returns the client's record, having
/// set the client-id and metadata headers and removed the key as the policy says.
pub fn authenticate<'p>(policy: &'p ApiKeyPolicy, parts: &mut Parts) -> Result<Client<'p>, Denied> {
    let client = {
        let key = find_key(policy, parts)?;
        policy.client_for(&key).ok_or(Denied::Unknown)?
    };
    // Checked on every request: a key expires at its instant, not at the next reload. The
    // clock is read only for keys that can expire.
    if client.expires_at().is_some() && client.expired(SystemTime::now()) {
        return Err(Denied::Expired);
    }
    if let Some(h) = &policy.client_id_header {
        // `insert` replaces every value the client sent under this name; should the id not
        // be a header value (the reader admits none such), the client's values still go.
        match HeaderValue::from_str(client.id()) {
            Ok(v) => {
                parts.headers.insert(h.clone(), v);
            }
            Err(_) => {
                parts.headers.remove(h);
            }
        }
    }
    for (name, h) in &policy.metadata_headers {
        // Set from the record, or gone: never a value the client sent.
        match client.metadata(name) {
            Some(v) => {
                parts.headers.insert(h.clone(), v.clone());
            }
            None => {
                parts.headers.remove(h);
            }
        }
    }
    if !policy.forward_credential && !strip(policy, parts) {
        // The key could not be removed: refuse rather than forward it.
        return Err(Denied::Unknown);
    }
    Ok(client)
}

/// Finds the presented key, per SPEC 4.1: header sources, then query sources, then cookie
/// sources, each in list order; the first source present decides. The key is compared as
/// bytes: nothing is lost or replaced in decoding, so one key has one spelling.
fn find_key<'a>(policy: &ApiKeyPolicy, parts: &'a Parts) -> Result<Cow<'a, [u8]>, Denied> {
    for name in &policy.headers {
        let values = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| Cow::Borrowed(strip_bearer(v.as_bytes())));
        if let Some(key) = one_value(values)? {
            return Ok(key);
        }
    }
    if let Some(query) = parts.uri.query() {
        for name in &policy.queries {
            let values = query_pairs(query)
                .filter(|(k, _)| percent_decode_str(k).eq(name.bytes()))
                .map(|(_, v)| Cow::from(percent_decode_str(v)));
            if let Some(key) = one_value(values)? {
                return Ok(key);
            }
        }
    }
    for name in &policy.cookies {
        let values = cookies(parts)
            .filter(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| Cow::Borrowed(trim_quotes(v)));
        if let Some(key) = one_value(values)? {
            return Ok(key);
        }
    }
    Err(Denied::Missing)
}

/// The one non-empty value a source carries: `None` if it carries none, an error if it
/// carries two different ones (never resolved by "first wins").
fn one_value<'a>(
    values: impl Iterator<Item = Cow<'a, [u8]>>,
) -> Result<Option<Cow<'a, [u8]>>, Denied> {
    let mut found: Option<Cow<'a, [u8]>> = None;
    for v in values {
        if v.is_empty() {
            continue;
        }
        match &found {
            None => found = Some(v),
            Some(prev) if *prev == v => {}
            Some(_) => return Err(Denied::Ambiguous),
        }
    }
    Ok(found)
}

/// Removes a leading `Bearer ` auth scheme, matched case-insensitively (RFC 9110 §11.1).
fn strip_bearer(v: &[u8]) -> &[u8] {
    let v = v.trim_ascii();
    match v.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => v[7..].trim_ascii_start(),
        _ => v,
    }
}

/// A cookie value may be quoted (RFC 6265 §4.1.1).
fn trim_quotes(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    }
}

fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// `name=value` pairs of every `Cookie` header, on bytes: a header with non-ASCII bytes in
/// some other cookie is still searched (and stripped) like any other.
fn cookies(parts: &Parts) -> impl Iterator<Item = (&[u8], &[u8])> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(|c| {
            let eq = c.iter().position(|b| *b == b'=')?;
            Some((c[..eq].trim_ascii(), c[eq + 1..].trim_ascii()))
        })
}

/// Removes the key from every configured source; `false` if that was not possible.
fn strip(policy: &ApiKeyPolicy, parts: &mut Parts) -> bool {
    for name in &policy.headers {
        parts.headers.remove(name);
    }
    if !policy.queries.is_empty() {
        if let Some(query) = parts.uri.query() {
            let drop = |pair: &str| {
                let name = pair.split_once('=').map_or(pair, |(k, _)| k);
                policy
                    .queries
                    .iter()
                    .any(|q| percent_decode_str(name).eq(q.bytes()))
            };
            if query.split('&').any(drop) {
                let kept: Vec<&str> = query.split('&').filter(|p| !drop(p)).collect();
                let path = parts.uri.path();
                let pq = if kept.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{}", kept.join("&"))
                };
                let Ok(pq) = PathAndQuery::try_from(pq) else {
                    return false;
                };
                let mut up = std::mem::take(&mut parts.uri).into_parts();
                up.path_and_query = Some(pq);
                match Uri::from_parts(up) {
                    Ok(uri) => parts.uri = uri,
                    Err(_) => return false,
                }
            }
        }
    }
    if !policy.cookies.is_empty() && parts.headers.contains_key(header::COOKIE) {
        let is_key = |pair: &[u8]| {
            let name = pair
                .iter()
                .position(|b| *b == b'=')
                .map_or(pair, |eq| &pair[..eq])
                .trim_ascii();
            policy.cookies.iter().any(|n| n.as_bytes() == name)
        };
        let mut kept_headers = Vec::new();
        for v in parts.headers.get_all(header::COOKIE) {
            let kept: Vec<&[u8]> = v
                .as_bytes()
                .split(|b| *b == b';')
                .filter(|c| !is_key(c))
                .map(<[u8]>::trim_ascii)
                .filter(|c| !c.is_empty())
                .collect();
            if kept.is_empty() {
                continue;
            }
            match HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
                Ok(v) => kept_headers.push(v),
                Err(_) => return false,
            }
        }
        parts.headers.remove(header::COOKIE);
        for v in kept_headers {
            parts.headers.append(header::COOKIE, v);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
    use keyway_store::auth::{digest, Credentials};
    use std::sync::Arc;

    fn policy(headers: &[&str], queries: &[&str], cookies: &[&str], forward: bool) -> ApiKeyPolicy {
        let credentials = Credentials::from_iter([
            (digest(b"k-123"), Arc::from("client1")),
            (digest(b"k+456/="), Arc::from("client2")),
        ]);
        ApiKeyPolicy {
            name: Arc::from("default/p"),
            headers: headers
                .iter()
                .map(|h| HeaderName::from_bytes(h.as_bytes()).unwrap())
                .collect(),
            queries: queries.iter().map(|s| s.to_string()).collect(),
            cookies: cookies.iter().map(|s| s.to_string()).collect(),
            forward_credential: forward,
            client_id_header: Some(HeaderName::from_static("x-client-id")),
            metadata_headers: Vec::new(),
            credentials,
        }
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        super::super::test_parts("GET", uri, headers)
    }

    #[test]
    fn header_with_bearer_any_case() {
        let p = policy(&["api-key"], &[], &[], false);
        for v in ["k-123", "Bearer k-123", "bearer k-123", "BEARER  k-123"] {
            let mut r = parts("/", &[("api-key", v), ("x-client-id", "forged")]);
            assert_eq!(authenticate(&p, &mut r).unwrap().id(), "client1", "{v}");
            assert_eq!(r.headers["x-client-id"], "client1");
            assert!(r.headers.get("api-key").is_none());
        }
    }

    #[test]
    fn denials() {
        let p = policy(&["api-key"], &["api_key"], &["auth"], false);
        assert_eq!(authenticate(&p, &mut parts("/", &[])), Err(Denied::Missing));
        assert_eq!(
            authenticate(&p, &mut parts("/", &[("api-key", "")])),
            Err(Denied::Missing)
        );
        assert_eq!(
            authenticate(&p, &mut parts("/", &[("api-key", "nope")])),
            Err(Denied::Unknown)
        );
        assert_eq!(
            authenticate(&p, &mut parts("/", &[("api-key", "K-123")])),
            Err(Denied::Unknown)
        );
        let mut two = parts("/", &[("api-key", "k-123"), ("api-key", "other")]);
        assert_eq!(authenticate(&p, &mut two), Err(Denied::Ambiguous));
        let mut same = parts("/", &[("api-key", "k-123"), ("api-key", "k-123")]);
        assert!(authenticate(&p, &mut same).is_ok());
        assert_eq!(
            authenticate(&p, &mut parts("/?api_key=a&api_key=b", &[])),
            Err(Denied::Ambiguous)
        );
    }

    #[test]
    fn header_beats_query_beats_cookie_and_all_are_stripped() {
        let p = policy(&["x-api-key"], &["api_key"], &["auth_token"], false);
        let mut r = parts(
            "/get?a=1&api_key=wrong&b=%20x",
            &[
                ("x-api-key", "k-123"),
                ("cookie", "x=1; auth_token=wrong; y=2"),
            ],
        );
        assert_eq!(authenticate(&p, &mut r).unwrap().id(), "client1");
        assert_eq!(r.uri.to_string(), "/get?a=1&b=%20x");
        assert_eq!(r.headers["cookie"], "x=1; y=2");
        assert!(r.headers.get("x-api-key").is_none());
    }

    #[test]
    fn percent_encoded_query_key_and_cookie_alone() {
        let p = policy(&[], &["api_key"], &["auth_token"], false);
        let mut r = parts("/x?api_key=k%2B456%2F%3D", &[]);
        assert_eq!(authenticate(&p, &mut r).unwrap().id(), "client2");
        assert_eq!(r.uri.to_string(), "/x");
        let mut c = parts("/", &[("cookie", "auth_token=k-123")]);
        assert_eq!(authenticate(&p, &mut c).unwrap().id(), "client1");
        assert!(c.headers.get("cookie").is_none());
    }

    #[test]
    fn cookies_with_non_ascii_neighbours_are_still_found_and_stripped() {
        let p = policy(&["api-key"], &[], &["auth"], false);
        let mut r = parts("/", &[("api-key", "k-123")]);
        r.headers.append(
            "cookie",
            http::HeaderValue::from_bytes("auth=k-456; n=\u{e9}".as_bytes()).unwrap(),
        );
        assert_eq!(authenticate(&p, &mut r).unwrap().id(), "client1");
        assert_eq!(r.headers["cookie"].as_bytes(), "n=\u{e9}".as_bytes());
        // The same cookie twice with different values, one in a non-ASCII header: refused.
        let p = policy(&[], &[], &["auth"], false);
        let mut r = parts("/", &[("cookie", "auth=k-123")]);
        r.headers.append(
            "cookie",
            http::HeaderValue::from_bytes("auth=k-456; n=\u{e9}".as_bytes()).unwrap(),
        );
        assert_eq!(authenticate(&p, &mut r), Err(Denied::Ambiguous));
    }

    #[test]
    fn keys_are_compared_as_bytes_not_as_lossy_text() {
        let credentials =
            Credentials::from_iter([(digest("k\u{FFFD}".as_bytes()), Arc::from("client1"))]);
        let p = ApiKeyPolicy {
            credentials,
            ..policy(&["api-key"], &["k"], &["c"], false)
        };
        // `%FF` is not U+FFFD: a lossy decoder would have accepted it.
        assert_eq!(
            authenticate(&p, &mut parts("/?k=k%FF", &[])),
            Err(Denied::Unknown)
        );
        assert!(authenticate(&p, &mut parts("/?k=k%EF%BF%BD", &[])).is_ok());
    }

    #[test]
    fn quoted_cookie_values_and_bearer_on_bytes() {
        let p = policy(&["api-key"], &[], &["c"], false);
        assert!(authenticate(&p, &mut parts("/", &[("cookie", "c=\"k-123\"")])).is_ok());
        let mut r = parts("/", &[]);
        r.headers.insert(
            "api-key",
            http::HeaderValue::from_bytes(b"Bearer k-123\xff").unwrap(),
        );
        assert_eq!(authenticate(&p, &mut r), Err(Denied::Unknown));
    }

    #[test]
    fn denial_reasons_as_logged() {
        assert_eq!(Denied::Missing.as_str(), "missing_api_key");
        assert_eq!(Denied::Unknown.as_str(), "unknown_api_key");
        assert_eq!(Denied::Ambiguous.as_str(), "ambiguous_api_key");
    }

    #[test]
    fn only_the_bearer_scheme_is_removed() {
        let p = policy(&["api-key"], &[], &[], false);
        for v in ["Xearer k-123", "Basic k-123", "Bearerk-123", "Token: k-123"] {
            let mut r = parts("/", &[("api-key", v)]);
            assert_eq!(authenticate(&p, &mut r), Err(Denied::Unknown), "{v}");
        }
    }

    #[test]
    fn without_cookie_sources_the_cookie_header_is_not_touched() {
        let p = policy(&["api-key"], &["k"], &[], false);
        let mut r = parts(
            "/?k=k-123",
            &[("cookie", "a=1;b=2 ;  c=3"), ("cookie", "d=4")],
        );
        assert!(authenticate(&p, &mut r).is_ok());
        let all: Vec<_> = r.headers.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1;b=2 ;  c=3", "d=4"]);
    }

    #[test]
    fn forward_credential_keeps_everything() {
        let p = policy(&["api-key"], &["k"], &[], true);
        let mut r = parts("/a?k=k-123&z=1", &[("api-key", "k-123")]);
        authenticate(&p, &mut r).unwrap();
        assert_eq!(r.headers["api-key"], "k-123");
        assert_eq!(r.uri.to_string(), "/a?k=k-123&z=1");
    }

    /// A policy over JSON entries: `gold` (metadata tier, org), `old` (expired), `fresh`
    /// (expires in a year), with `tier` and `org` as metadata headers.
    fn record_policy() -> ApiKeyPolicy {
        let table = keyway_store::auth::SecretKeys::from_entries(
            [
                (
                    "gold",
                    &br#"{"key": "k-gold", "metadata": {"tier": "gold", "org": "acme"}}"#[..],
                ),
                (
                    "old",
                    br#"{"key": "k-old", "expiresAt": "2001-01-01T00:00:00Z"}"#,
                ),
                (
                    "fresh",
                    br#"{"key": "k-fresh", "expiresAt": "2999-01-01T00:00:00Z"}"#,
                ),
            ]
            .into_iter(),
        );
        assert!(table.problems.is_empty(), "{:?}", table.problems);
        let (credentials, _) = Credentials::compose(vec![Arc::new(table)]);
        ApiKeyPolicy {
            metadata_headers: vec![
                (Box::from("tier"), HeaderName::from_static("x-tier")),
                (Box::from("org"), HeaderName::from_static("x-org")),
            ],
            credentials,
            ..policy(&["api-key"], &[], &[], false)
        }
    }

    #[test]
    fn expired_keys_are_refused_and_others_pass() {
        let p = record_policy();
        let mut r = parts("/", &[("api-key", "k-old")]);
        assert_eq!(authenticate(&p, &mut r), Err(Denied::Expired));
        assert_eq!(Denied::Expired.as_str(), "expired_api_key");
        let mut r = parts("/", &[("api-key", "k-fresh")]);
        assert_eq!(authenticate(&p, &mut r).unwrap().id(), "fresh");
    }

    #[test]
    fn metadata_headers_replace_or_remove_what_the_client_sent() {
        let p = record_policy();
        let forged = [
            ("api-key", "k-gold"),
            ("x-tier", "platinum"),
            ("x-org", "evil"),
        ];
        let mut r = parts("/", &forged);
        assert_eq!(authenticate(&p, &mut r).unwrap().id(), "gold");
        assert_eq!(
            r.headers.get_all("x-tier").iter().collect::<Vec<_>>(),
            ["gold"]
        );
        assert_eq!(r.headers["x-org"], "acme");
        assert_eq!(r.headers["x-client-id"], "gold");
        let mut r = parts(
            "/",
            &[
                ("api-key", "k-fresh"),
                ("x-tier", "platinum"),
                ("x-org", "evil"),
            ],
        );
        assert_eq!(authenticate(&p, &mut r).unwrap().id(), "fresh");
        assert!(r.headers.get("x-tier").is_none());
        assert!(r.headers.get("x-org").is_none());
    }
}
