//! The request path, as named phases. [`Gateway::handle`] runs them in order:
//!
//! 1. [`normalize`]: one host, one path (header count, `Host`, dot segments, escaped slashes);
//! 2. strip connection-level headers ([`crate::headers::strip_hop_by_hop`]);
//! 3. [`route`]: listener by host, then the first matching route;
//! 4. and 5. [`access`]: `CONNECT` only where a route asks for it, identity headers
//!    removed, then the route's API key check ([`auth`]);
//! 6. act: a direct answer, a redirect ([`redirect`]), or [`forward`] to an upstream.
//!
//! A phase that ends the request returns a [`ProxyError`]; `handle` turns it into the
//! response and the access-log reason in one place, then records metrics and the log line.

pub mod access;
pub mod auth;
pub mod error;
mod forward;
pub mod normalize;
pub mod path;
mod redirect;
pub mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::request::Parts;
use http::{Request, Response};
use keyway_store::{Action, Config};

use crate::access_log;
use crate::body::Body;
use crate::headers::{self, RequestId};
use crate::metrics::{DeniedLabels, Metrics};
use crate::upstream::endpoints::Registry;
use crate::upstream::{PoolOptions, UpstreamClient};
use access::Access;
pub use error::{ProxyError, UNAUTHORIZED_BODY};
pub use path::EscapedSlashes;
use route::Routed;

/// Data-plane settings that are not part of the manifests.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time to wait for upstream response headers once the request has been sent, unless a
    /// rule sets its own.
    pub upstream_timeout: Duration,
    /// Time to wait for an upstream TCP connection.
    pub connect_timeout: Duration,
    /// Longest pause in a request body being sent upstream (then 408).
    pub body_idle_timeout: Duration,
    /// Pooled upstream connections unused this long are closed.
    pub upstream_idle_timeout: Duration,
    /// How long an endpoint that refused a connection is skipped.
    pub eject_for: Duration,
    /// Where each request's access-log line goes (target `keyway::access`), if anywhere.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// Most header fields a request may carry, HTTP/1.1 and HTTP/2 alike (more: 431).
    pub max_headers: usize,
    /// What to do with encoded slashes and backslashes in paths.
    pub escaped_slashes: EscapedSlashes,
    /// Clients with a metric series of their own; the others are counted as `_other`.
    pub metrics_max_clients: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            upstream_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            body_idle_timeout: Duration::from_secs(60),
            upstream_idle_timeout: Duration::from_secs(90),
            eject_for: Duration::from_secs(5),
            access_log: None,
            max_headers: 100,
            escaped_slashes: EscapedSlashes::Reject,
            metrics_max_clients: 1000,
        }
    }
}

/// Shared state of the request path: the current config, metrics, the upstream client.
pub struct Gateway {
    config: ArcSwap<Config>,
    /// Metrics every request updates.
    pub metrics: Arc<Metrics>,
    client: UpstreamClient,
    endpoints: Registry,
    settings: Settings,
}

/// What every request on one connection shares, computed once when it is accepted.
#[derive(Debug)]
pub struct ConnInfo {
    /// The Gateway listener port the connection arrived on.
    pub port: u16,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP as a header value, for `x-forwarded-for`.
    pub peer_ip: HeaderValue,
    /// `peer` as text, made at the connection's first access-log line.
    peer_text: std::sync::OnceLock<Box<str>>,
    /// HTTPS connections: what the TLS handshake settled.
    pub tls: Option<TlsInfo>,
}

/// What the TLS handshake of a connection settled.
#[derive(Debug, Default)]
pub struct TlsInfo {
    /// The server name (SNI) the client sent, if any: it chose the listener, and so the
    /// certificate, for the whole connection.
    pub server_name: Option<Box<str>>,
}

impl ConnInfo {
    /// Describes a connection accepted on listener `port` from `peer`.
    pub fn new(port: u16, peer: SocketAddr) -> Self {
        let ip = match peer.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        };
        ConnInfo {
            port,
            peer,
            peer_ip: HeaderValue::from_str(&ip.to_string())
                .expect("an IP address is a valid header value"),
            peer_text: std::sync::OnceLock::new(),
            tls: None,
        }
    }

    /// The client's address as `Display` writes it, formatted once per connection.
    pub fn peer_text(&self) -> &str {
        self.peer_text.get_or_init(|| self.peer.to_string().into())
    }

    /// `https` on a TLS connection, else `http`: `x-forwarded-proto`, and the scheme of a
    /// redirect that does not set one.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

fn empty() -> &'static Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from(""))
}

/// What the access log and the metrics say about a request beyond its status.
struct Outcome {
    request_id: RequestId,
    gateway: Option<Arc<str>>,
    route: Option<Arc<str>>,
    /// The policy that decided (or failed to build), for the auth metrics.
    policy: Option<Arc<str>>,
    client: Option<Arc<str>>,
    reason: Option<&'static str>,
    upstream: Option<Arc<str>>,
}

impl Gateway {
    /// A gateway serving `config`.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, settings: Settings) -> Arc<Self> {
        let gateway = Arc::new(Gateway {
            config: ArcSwap::from_pointee(Config::default()),
            metrics,
            client: UpstreamClient::new(PoolOptions {
                connect_timeout: settings.connect_timeout,
                idle_timeout: settings.upstream_idle_timeout,
                ..PoolOptions::default()
            }),
            endpoints: Registry::default(),
            settings,
        });
        gateway.swap(config);
        gateway
    }

    /// Replaces the config for every request that starts from now on. Endpoints keep the
    /// state the data plane holds for them (ejection, load); pooled connections to
    /// endpoints that left are closed.
    pub fn swap(&self, config: Arc<Config>) {
        let addresses = self.endpoints.attach(&config);
        self.config.store(config);
        self.client.retain(&addresses);
    }

    /// The config new requests get.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The request-path settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The upstream connection pool.
    pub fn upstream_client(&self) -> &UpstreamClient {
        &self.client
    }

    /// Serves one request that arrived on connection `conn`: the whole request path, from
    /// normalising the request to the access-log line.
    pub async fn handle(&self, conn: &ConnInfo, req: Request<Body>) -> Response<Body> {
        // Only the access log reads the clock at the start.
        let start = self.settings.access_log.is_some().then(Instant::now);
        let config = self.config.load_full();
        let (mut parts, body) = req.into_parts();
        // A made id joins the upstream request when it is written (`AddedFields`).
        let mut outcome = Outcome {
            request_id: RequestId::of(&parts.headers),
            gateway: None,
            route: None,
            policy: None,
            client: None,
            reason: None,
            upstream: None,
        };
        let response = match self
            .serve(&config, conn, &mut parts, body, &mut outcome)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                outcome.reason = Some(e.reason());
                self.count_auth_failure(e, &outcome);
                e.into_response()
            }
        };
        self.record(&parts, conn, &outcome, &response, start);
        response
    }

    async fn serve(
        &self,
        config: &Config,
        conn: &ConnInfo,
        parts: &mut Parts,
        body: Body,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, ProxyError> {
        // 1. One host, one path.
        normalize::request(
            parts,
            self.settings.max_headers,
            self.settings.escaped_slashes,
        )?;
        // 2. Connection-level headers go first, so a client cannot use `Connection:
        // <name>` to drop a header the gateway sets below (the client id, `Host`).
        headers::strip_hop_by_hop(&mut parts.headers);

        // 3. Route. On HTTPS, the listener the TLS server name chose must be the one that
        // serves the `Host`: its certificate is the only one the client has checked.
        // A connection accepted before its port changed protocol (HTTP to HTTPS or back)
        // must not reach the other protocol's listeners.
        if config
            .port(conn.port)
            .is_some_and(|p| p.tls != conn.tls.is_some())
        {
            return Err(ProxyError::Misdirected);
        }
        if let Some(tls) = &conn.tls {
            let host = route::request_host(parts);
            if route::misdirected(config, conn.port, tls.server_name.as_deref(), host) {
                return Err(ProxyError::Misdirected);
            }
        }
        let (listener, route) =
            match route::route(config, conn.port, route::request_host(parts), parts) {
                Routed::Route(l, r) => (l, r),
                Routed::NoRoute(l) => {
                    outcome.gateway = Some(l.gateway.clone());
                    return Err(ProxyError::NoRoute);
                }
                Routed::NoListener => return Err(ProxyError::NoListener),
            };
        outcome.gateway = Some(listener.gateway.clone());
        outcome.route = Some(route.route.clone());

        // 4 and 5. Access: the method, identity headers, the route's API key check.
        outcome.policy = route.auth.policy_name().cloned();
        if let Access::Client { policy, client } = access::check(listener, route, parts)? {
            self.metrics
                .count_allowed(policy, client.id_arc(), self.settings.metrics_max_clients);
            outcome.client = Some(client.id_arc().clone());
        }

        // 6. Act.
        match &*route.action {
            Action::Direct { status, body } => Ok(error::text(*status, body.clone())),
            Action::Redirect(r) => Ok(redirect::response(
                r,
                route,
                listener,
                conn.scheme(),
                route::request_host(parts),
                parts,
            )),
            Action::Forward(f) => {
                self.forward(f, route, listener, parts, body, conn, outcome)
                    .await
            }
        }
    }

    fn count_auth_failure(&self, e: ProxyError, outcome: &Outcome) {
        let reason = match e {
            ProxyError::Unauthorized(d) => d.as_str(),
            ProxyError::InvalidPolicy => "invalid_policy",
            _ => return,
        };
        if let Some(policy) = &outcome.policy {
            self.metrics
                .api_key_denied
                .get_or_create(&DeniedLabels {
                    policy: policy.clone(),
                    reason,
                })
                .inc();
        }
    }

    fn record(
        &self,
        parts: &Parts,
        conn: &ConnInfo,
        outcome: &Outcome,
        response: &Response<Body>,
        start: Option<Instant>,
    ) {
        let status = response.status();
        self.metrics.count_request(
            outcome.gateway.as_ref().unwrap_or_else(|| empty()),
            outcome.route.as_ref().unwrap_or_else(|| empty()),
            status.as_u16(),
        );
        if let Some(log) = &self.settings.access_log {
            // `RUST_LOG` decides, as for every other line (a cached check per call site).
            if tracing::enabled!(target: "keyway::access", tracing::Level::INFO) {
                log.log(&access_log::Line {
                    method: parts.method.as_str(),
                    path: parts.uri.path(),
                    status: status.as_u16(),
                    duration_us: start.map_or(0, |s| s.elapsed().as_micros() as u64),
                    gateway: outcome.gateway.as_deref().unwrap_or("-"),
                    route: outcome.route.as_deref().unwrap_or("-"),
                    client: outcome.client.as_deref().unwrap_or("-"),
                    reason: outcome.reason.unwrap_or("-"),
                    upstream: outcome.upstream.as_deref().unwrap_or("-"),
                    request_id: outcome.request_id.as_str(),
                    peer: conn.peer_text(),
                });
            }
        }
    }
}

/// A request head for the phases' unit tests.
#[cfg(test)]
fn test_parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}
