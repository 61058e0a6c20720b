//! Finds the route for a request: listener by host (most specific hostname first), virtual
//! host by host, then the first route in precedence order whose match holds.

use std::sync::Arc;

use http::request::Parts;
use keyway_store::{Config, Listener, Route};

/// What routing found.
pub enum Routed<'c> {
    /// A route matched.
    Route(&'c Arc<Listener>, &'c Arc<Route>),
    /// A listener serves the host, but no route matched.
    NoRoute(&'c Arc<Listener>),
    /// Nothing on this port serves the host.
    NoListener,
}

/// The request's host without port: `Host` for HTTP/1, `:authority` for HTTP/2.
pub fn request_host(parts: &Parts) -> &str {
    let raw = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    strip_port(raw)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether a request for `host` on a TLS connection to `port` whose handshake named
/// `server_name` belongs to another listener than the one the handshake chose (RFC 9110
/// section 15.5.20: 421 Misdirected Request).
pub fn misdirected(config: &Config, port: u16, server_name: Option<&str>, host: &str) -> bool {
    let Some(p) = config.port(port) else {
        return false;
    };
    match (p.listener(server_name.unwrap_or("")), p.listener(host)) {
        (Some(by_name), Some(by_host)) => !Arc::ptr_eq(by_name, by_host),
        // The handshake chose no listener (it would have failed) or no listener serves
        // the host (that is a 404, not a misdirection).
        _ => false,
    }
}

/// Routes a request that arrived on `port`.
pub fn route<'c>(config: &'c Config, port: u16, host: &str, parts: &Parts) -> Routed<'c> {
    let Some(listener) = config.port(port).and_then(|p| p.listener(host)) else {
        return Routed::NoListener;
    };
    let Some(vhost) = listener.virtual_host(host) else {
        return Routed::NoRoute(listener);
    };
    let path = parts.uri.path();
    let query = parts.uri.query();
    match vhost.routes.iter().find(|r| {
        r.matcher
            .matches(&parts.method, path, query, &parts.headers)
    }) {
        Some(r) => Routed::Route(listener, r),
        None => Routed::NoRoute(listener),
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
