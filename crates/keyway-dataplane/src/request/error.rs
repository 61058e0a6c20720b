//! Every way the request path can end without the upstream's answer, and the one place
//! each becomes a response and an access-log reason.
//!
//! Phases return `Err(ProxyError)`; [`super::Gateway::handle`] turns it into the response
//! with [`ProxyError::into_response`] and logs [`ProxyError::reason`]. Response bodies are
//! fixed strings: nothing a client sent, and never which check failed, is echoed back.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use keyway_store::INVALID_ROUTE_BODY;

use super::auth::Denied;
use crate::body::Body;

/// Body of every 401, as Envoy's `api_key_auth` sends it.
pub const UNAUTHORIZED_BODY: &str = "Client authentication failed.";

/// Why a request was answered by Keyway itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// The request contradicts itself or HTTP (two `Host` headers, a bad path).
    BadRequest(&'static str),
    /// An encoded slash or backslash in the path, refused by `--escaped-slashes reject`.
    EscapedSlash,
    /// More header fields than `--max-headers` (the same limit for HTTP/1.1 and HTTP/2).
    TooManyHeaders,
    /// `CONNECT` on a route that does not match it explicitly.
    MethodNotAllowed,
    /// No listener on this port serves the host.
    NoListener,
    /// A listener serves the host, but no route matched.
    NoRoute,
    /// HTTPS: the `Host` belongs to another listener than the one the connection's TLS
    /// server name chose (and whose certificate it got).
    Misdirected,
    /// API key authentication refused the request.
    Unauthorized(Denied),
    /// The policy that protects the route could not be built: fail closed.
    InvalidPolicy,
    /// The chosen backend reference did not resolve.
    InvalidBackend,
    /// The upstream has no endpoint.
    NoHealthyUpstream,
    /// No connection to the endpoint could be made.
    UpstreamConnect,
    /// No response headers within the route's timeout after the request was sent.
    UpstreamTimeout,
    /// The upstream connection broke before response headers.
    UpstreamReset,
    /// The client stopped sending its request body for longer than the body idle timeout.
    RequestBodyTimeout,
    /// The client's request body could not be read (malformed chunked framing, cut short).
    BadRequestBody,
}

impl ProxyError {
    /// The status code the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::EscapedSlash | ProxyError::BadRequestBody => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NoListener | ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::InvalidPolicy | ProxyError::InvalidBackend => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ProxyError::NoHealthyUpstream | ProxyError::UpstreamConnect => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UpstreamReset => StatusCode::BAD_GATEWAY,
            ProxyError::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The access log's `reason` (and, for authentication, the metric's `reason` label).
    pub fn reason(self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::EscapedSlash => "escaped_slash",
            ProxyError::TooManyHeaders => "too_many_headers",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::NoListener | ProxyError::NoRoute => "no_route",
            ProxyError::Misdirected => "misdirected_request",
            ProxyError::Unauthorized(d) => d.as_str(),
            ProxyError::InvalidPolicy => "invalid_policy",
            ProxyError::InvalidBackend => "invalid_backend",
            ProxyError::NoHealthyUpstream => "no_healthy_upstream",
            ProxyError::UpstreamConnect => "upstream_connect_failure",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamReset => "upstream_reset",
            ProxyError::RequestBodyTimeout => "request_body_timeout",
            ProxyError::BadRequestBody => "bad_request_body",
        }
    }

    fn body(self) -> &'static str {
        match self {
            ProxyError::BadRequest(why) => why,
            ProxyError::EscapedSlash => "encoded slash or backslash in the request path",
            ProxyError::TooManyHeaders => "too many request header fields",
            ProxyError::MethodNotAllowed => "method not allowed",
            ProxyError::NoListener | ProxyError::NoRoute => "",
            ProxyError::Misdirected => "misdirected request",
            ProxyError::Unauthorized(_) => UNAUTHORIZED_BODY,
            ProxyError::InvalidPolicy => INVALID_ROUTE_BODY,
            ProxyError::InvalidBackend => "backend reference could not be resolved",
            ProxyError::NoHealthyUpstream => "no healthy upstream",
            ProxyError::UpstreamConnect => "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            ProxyError::UpstreamTimeout => "upstream request timeout",
            ProxyError::UpstreamReset => "upstream connect error or disconnect/reset before headers",
            ProxyError::RequestBodyTimeout => "request body timeout",
            ProxyError::BadRequestBody => "malformed request body",
        }
    }

    /// The response the client gets.
    pub fn into_response(self) -> Response<Body> {
        let mut r = text(self.status(), Bytes::from_static(self.body().as_bytes()));
        match self {
            ProxyError::Unauthorized(_) => {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("APIKey"));
            }
            ProxyError::MethodNotAllowed => {
                r.headers_mut().insert(
                    header::ALLOW,
                    HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                );
            }
            ProxyError::RequestBodyTimeout | ProxyError::BadRequestBody => {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        r
    }
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut r = Response::new(if body.is_empty() {
        Body::Empty
    } else {
        Body::full(body)
    });
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_says_nothing_about_why() {
        for d in [Denied::Missing, Denied::Unknown, Denied::Ambiguous] {
            let r = ProxyError::Unauthorized(d).into_response();
            assert_eq!(r.status(), 401);
            assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "APIKey");
            assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain");
            assert!(matches!(r.body(), Body::Full(Some(b)) if b == UNAUTHORIZED_BODY));
        }
    }

    #[test]
    fn invalid_policy_is_kgateways_direct_response() {
        let r = ProxyError::InvalidPolicy.into_response();
        assert_eq!(r.status(), 500);
        assert!(matches!(r.body(), Body::Full(Some(b)) if b == INVALID_ROUTE_BODY));
    }
}
