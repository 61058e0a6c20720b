//! Routes: how a request is matched, and what happens to it once matched.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde::{Serialize, Serializer};

use crate::auth::Auth;
use crate::upstream::WeightedBackend;

/// One match of one HTTPRoute rule, with everything needed to serve it.
#[derive(Debug, Serialize)]
pub struct Route {
    /// `namespace/name` of the HTTPRoute.
    pub route: Arc<str>,
    /// Index of the rule within the route.
    pub rule: usize,
    /// The rule's `name`, when it has one.
    pub rule_name: Option<Arc<str>>,
    /// When this route applies.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// API key authentication (or its absence, or a policy that failed to build).
    pub auth: Auth,
    /// What to do with a matched request (shared by the copies of a rule on each listener).
    pub action: Arc<Action>,
    /// Upstream response timeout; the gateway default when `None`.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Option<Duration>,
}

fn ser_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&format!("{}ms", d.as_millis())),
        None => s.serialize_none(),
    }
}

/// The conditions of one HTTPRoute match: all must hold.
#[derive(Debug, Clone, Serialize)]
pub struct RouteMatch {
    /// Path condition (`PathPrefix /` when the manifest sets none).
    pub path: PathMatch,
    /// Required method.
    #[serde(serialize_with = "ser_method")]
    pub method: Option<Method>,
    /// Header conditions (names case-insensitive).
    pub headers: Vec<HeaderMatch>,
    /// Query parameter conditions.
    pub query: Vec<QueryMatch>,
}

fn ser_method<S: Serializer>(m: &Option<Method>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_some(m.as_str()),
        None => s.serialize_none(),
    }
}

impl RouteMatch {
    /// Whether a request matches. `query` is the raw query string, if any.
    pub fn matches(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> bool {
        if !self.path.matches(path) {
            return false;
        }
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        if !self.headers.iter().all(|h| h.matches(headers)) {
            return false;
        }
        self.query.iter().all(|q| q.matches(query))
    }
}

/// A path condition.
#[derive(Debug, Clone)]
pub enum PathMatch {
    /// The whole path, exactly.
    Exact(String),
    /// Whole leading segments: `/api` matches `/api` and `/api/x`, not `/apiary`.
    /// Stored without a trailing slash (`/` is stored as the empty string).
    Prefix(String),
    /// A regular expression that must match the whole path.
    Regex(regex::Regex),
}

impl PathMatch {
    /// Whether `path` (without query) satisfies the condition.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

impl Serialize for PathMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PathMatch::Exact(p) => s.collect_str(&format_args!("Exact {p}")),
            PathMatch::Prefix(p) if p.is_empty() => s.serialize_str("PathPrefix /"),
            PathMatch::Prefix(p) => s.collect_str(&format_args!("PathPrefix {p}")),
            PathMatch::Regex(r) => {
                let src = r.as_str();
                let inner = src.strip_prefix("^(?:").and_then(|x| x.strip_suffix(")$"));
                s.collect_str(&format_args!("RegularExpression {}", inner.unwrap_or(src)))
            }
        }
    }
}

/// How a header or query value is compared.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// Byte-for-byte equal.
    Exact(String),
    /// A regular expression matching the whole value.
    Regex(regex::Regex),
}

impl ValueMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(v) => v == value,
            ValueMatch::Regex(r) => r.is_match(value),
        }
    }
}

impl Serialize for ValueMatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ValueMatch::Exact(v) => s.serialize_str(v),
            ValueMatch::Regex(r) => s.collect_str(&format_args!("~{}", r.as_str())),
        }
    }
}

/// A header condition. Several values of one header are joined with `,`, as Envoy does.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderMatch {
    /// Header name.
    #[serde(serialize_with = "ser_header_name")]
    pub name: HeaderName,
    /// Value condition.
    pub value: ValueMatch,
}

impl HeaderMatch {
    fn matches(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.name).iter();
        let Some(first) = values.next() else {
            return false;
        };
        match values.next() {
            None => first.to_str().is_ok_and(|v| self.value.matches(v)),
            Some(second) => {
                let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
                for v in std::iter::once(second).chain(values) {
                    joined.push(',');
                    joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
                self.value.matches(&joined)
            }
        }
    }
}

/// A query parameter condition on the first occurrence of the parameter (percent-decoded).
#[derive(Debug, Clone, Serialize)]
pub struct QueryMatch {
    /// Parameter name, exact.
    pub name: String,
    /// Value condition.
    pub value: ValueMatch,
}

impl QueryMatch {
    fn matches(&self, query: Option<&str>) -> bool {
        let Some(query) = query else { return false };
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if percent_decode(name) == self.name {
                return self.value.matches(&percent_decode(value));
            }
        }
        false
    }
}

/// Decodes `%XX` escapes in a query component. `+` stays `+`: keys are often base64.
pub fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy()
}

fn ser_header_name<S: Serializer>(n: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(n.as_str())
}

/// What a matched request gets.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Proxy to a backend.
    Forward(Forward),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly (a rule with no usable backend, an invalid policy, ...).
    Direct {
        /// Status code.
        #[serde(serialize_with = "ser_status")]
        status: StatusCode,
        /// Body, sent as `text/plain`.
        #[serde(serialize_with = "ser_bytes")]
        body: Bytes,
    },
}

fn ser_status<S: Serializer>(c: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(c.as_u16())
}

fn ser_bytes<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// Proxying: rule-level filters, then a weighted choice of backend.
#[derive(Debug, Serialize)]
pub struct Forward {
    /// Rule-level `RequestHeaderModifier`.
    #[serde(skip_serializing_if = "HeaderFilter::is_empty")]
    pub request_headers: HeaderFilter,
    /// Rule-level `ResponseHeaderModifier`.
    #[serde(skip_serializing_if = "HeaderFilter::is_empty")]
    pub response_headers: HeaderFilter,
    /// Rule-level `URLRewrite`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Backends with a weight above zero.
    pub backends: Vec<WeightedBackend>,
    /// Sum of the backends' weights (never zero).
    pub total_weight: u32,
}

impl Forward {
    /// Picks a backend by weight from a uniformly random number in `0..total_weight`.
    pub fn pick(&self, random: u32) -> &WeightedBackend {
        let mut r = random % self.total_weight.max(1);
        for b in &self.backends {
            if r < b.weight {
                return b;
            }
            r -= b.weight;
        }
        &self.backends[self.backends.len() - 1]
    }
}

/// `RequestHeaderModifier` / `ResponseHeaderModifier`, applied set, add, remove.
#[derive(Debug, Default, Clone, Serialize)]
pub struct HeaderFilter {
    /// Replace the header.
    #[serde(serialize_with = "ser_pairs")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append to the header: joined to an existing value with `,`.
    #[serde(serialize_with = "ser_pairs")]
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove the header.
    #[serde(serialize_with = "ser_names")]
    pub remove: Vec<HeaderName>,
}

fn ser_pairs<S: Serializer>(p: &[(HeaderName, HeaderValue)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(
        p.iter()
            .map(|(n, v)| format!("{}: {}", n, String::from_utf8_lossy(v.as_bytes()))),
    )
}

fn ser_names<S: Serializer>(p: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(p.iter().map(|n| n.as_str()))
}

impl HeaderFilter {
    /// Whether the filter does nothing (skipped on the request path).
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the filter to a header map.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            let mut existing = headers.get_all(name).iter().peekable();
            if existing.peek().is_none() {
                headers.insert(name.clone(), value.clone());
                continue;
            }
            let mut joined: Vec<u8> = Vec::new();
            for v in existing {
                joined.extend_from_slice(v.as_bytes());
                joined.push(b',');
            }
            joined.extend_from_slice(value.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                headers.insert(name.clone(), v);
            }
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }
}

/// How a path is rewritten (redirects and `URLRewrite`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRewrite {
    /// Replace the whole path.
    Full(String),
    /// Replace the prefix the route matched (its `PathPrefix`) with this.
    Prefix(String),
}

impl PathRewrite {
    /// The rewritten path; `matched` is the route's path condition.
    pub fn apply(&self, path: &str, matched: &PathMatch) -> String {
        match self {
            PathRewrite::Full(p) => p.clone(),
            PathRewrite::Prefix(replacement) => {
                let prefix_len = match matched {
                    PathMatch::Prefix(p) => p.len(),
                    _ => 0,
                };
                let rest = path.get(prefix_len..).unwrap_or("");
                let replacement = replacement.trim_end_matches('/');
                let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
                out.push_str(replacement);
                if !rest.is_empty() && !rest.starts_with('/') {
                    out.push('/');
                }
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                }
                out
            }
        }
    }
}

/// `RequestRedirect`.
#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    /// `http` or `https`; the request's scheme when unset.
    pub scheme: Option<String>,
    /// New hostname; the request's when unset.
    pub hostname: Option<String>,
    /// Explicit port.
    pub port: Option<u16>,
    /// Path replacement.
    pub path: Option<PathRewrite>,
    /// 301, 302 (default), 303, 307 or 308.
    #[serde(serialize_with = "ser_status")]
    pub status: StatusCode,
}

/// `URLRewrite`.
#[derive(Debug, Clone, Serialize)]
pub struct Rewrite {
    /// New `Host`.
    pub hostname: Option<String>,
    /// Path replacement.
    pub path: Option<PathRewrite>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_whole_segments() {
        let p = PathMatch::Prefix("/api".into());
        assert!(p.matches("/api"));
        assert!(p.matches("/api/"));
        assert!(p.matches("/api/x"));
        assert!(!p.matches("/apiary"));
        assert!(PathMatch::Prefix(String::new()).matches("/anything"));
    }

    #[test]
    fn prefix_rewrite_keeps_the_rest() {
        let r = |m: &str, rep: &str, p: &str| {
            PathRewrite::Prefix(rep.into()).apply(p, &PathMatch::Prefix(m.into()))
        };
        assert_eq!(r("/prefix/one", "/one", "/prefix/one/two"), "/one/two");
        assert_eq!(r("/prefix/one", "/", "/prefix/one/two"), "/two");
        assert_eq!(r("/prefix/one", "/", "/prefix/one"), "/");
        assert_eq!(r("/strip-slash", "/", "/strip-slash/"), "/");
        assert_eq!(r("", "/foo", "/bar"), "/foo/bar");
    }

    #[test]
    fn header_add_joins_without_space() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("1"));
        let f = HeaderFilter {
            add: vec![(
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("2"),
            )],
            ..Default::default()
        };
        f.apply(&mut h);
        assert_eq!(h["x-a"], "1,2");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b+c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("k%2D1"), "k-1");
    }
}
