//! `RequestRedirect`: the `Location` a redirect answers with.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::Response;
use keyway_store::{Listener, Redirect, Route};

use crate::body::Body;

/// Builds the redirect response. The scheme is the filter's, else the connection's
/// (`conn_scheme`: `https` on an HTTPS listener). The `Location` port is the listener's
/// unless the filter sets one or a scheme, and is omitted when it is the scheme's default.
pub fn response(
    r: &Redirect,
    route: &Route,
    listener: &Listener,
    conn_scheme: &str,
    host: &str,
    parts: &Parts,
) -> Response<Body> {
    let scheme = r.scheme.as_deref().unwrap_or(conn_scheme);
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => p,
        (None, Some(s)) if s == "https" => 443,
        (None, Some(_)) => 80,
        (None, None) => listener.port,
    };
    let default_port = matches!((scheme, port), ("http", 80) | ("https", 443));
    let hostname = r.hostname.as_deref().unwrap_or(host);
    let path = match &r.path {
        Some(p) => p.apply(parts.uri.path(), &route.matcher.path),
        None => parts.uri.path().to_string(),
    };
    let mut location = format!("{scheme}://{hostname}");
    if !default_port {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(&path);
    if let Some(q) = parts.uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = Response::new(Body::Empty);
    *resp.status_mut() = r.status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
