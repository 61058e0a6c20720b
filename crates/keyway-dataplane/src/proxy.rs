//! The request path, top to bottom: route, authenticate, then answer, redirect or forward.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use keyway_store::{
    Action, Auth, Config, Forward, Listener, Redirect, Route, Target, INVALID_ROUTE_BODY,
};

use crate::auth::{self, Denied};
use crate::body::Body;
use crate::headers::{self, X_REQUEST_ID};
use crate::metrics::{now_ms, AllowedLabels, DeniedLabels, Metrics, RequestLabels, UpstreamLabels};
use crate::router::{self, Routed};
use crate::upstream::{UpstreamClient, UpstreamError};

/// Body of every 401, as Envoy's `api_key_auth` sends it.
pub const UNAUTHORIZED_BODY: &str = "Client authentication failed.";

/// Data-plane settings that are not part of the manifests.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time to wait for upstream response headers, unless a rule sets its own.
    pub upstream_timeout: Duration,
    /// Time to wait for an upstream TCP connection.
    pub connect_timeout: Duration,
    /// How long an endpoint that refused a connection is skipped.
    pub eject_for: Duration,
    /// Write one access-log line per request (target `keyway::access`).
    pub access_log: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            upstream_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            eject_for: Duration::from_secs(5),
            access_log: true,
        }
    }
}

/// Shared state of the request path: the current config, metrics, the upstream client.
pub struct Gateway {
    config: ArcSwap<Config>,
    /// Metrics every request updates.
    pub metrics: Arc<Metrics>,
    client: UpstreamClient,
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
        }
    }
}

fn empty() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

/// What the access log says about a request beyond its status.
#[derive(Default)]
struct Outcome {
    gateway: Option<Arc<str>>,
    route: Option<Arc<str>>,
    client: Option<Arc<str>>,
    denied: Option<&'static str>,
    upstream: Option<Arc<str>>,
}

impl Gateway {
    /// A gateway serving `config`.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, settings: Settings) -> Arc<Self> {
        Arc::new(Gateway {
            config: ArcSwap::new(config),
            metrics,
            client: UpstreamClient::new(settings.connect_timeout),
            settings,
        })
    }

    /// Replaces the config for every request that starts from now on.
    pub fn swap(&self, config: Arc<Config>) {
        self.config.store(config);
    }

    /// The config new requests get.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Serves one request that arrived on connection `conn`: the whole request path, from
    /// normalising the request to the access-log line.
    pub async fn handle(
        self: Arc<Self>,
        conn: Arc<ConnInfo>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let start = Instant::now();
        let config = self.config.load_full();
        let (mut parts, body) = req.into_parts();
        let request_id = match parts.headers.get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = headers::request_id();
                parts.headers.insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        let mut outcome = Outcome::default();

        let response = match normalize(&mut parts) {
            Ok(()) => {
                self.serve(&config, &conn, &mut parts, body, &mut outcome)
                    .await
            }
            Err(why) => text(StatusCode::BAD_REQUEST, Bytes::from_static(why.as_bytes())),
        };

        let status = response.status();
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                gateway: outcome.gateway.clone().unwrap_or_else(empty),
                route: outcome.route.clone().unwrap_or_else(empty),
                code: status.as_u16(),
            })
            .inc();
        if self.settings.access_log {
            tracing::info!(
                target: "keyway::access",
                method = %parts.method,
                path = %parts.uri.path(),
                status = status.as_u16(),
                duration_ms = start.elapsed().as_secs_f64() * 1000.0,
                gateway = outcome.gateway.as_deref().unwrap_or("-"),
                route = outcome.route.as_deref().unwrap_or("-"),
                client = outcome.client.as_deref().unwrap_or("-"),
                denied = outcome.denied.unwrap_or("-"),
                upstream = outcome.upstream.as_deref().unwrap_or("-"),
                request_id = request_id.to_str().unwrap_or("-"),
                peer = %conn.peer,
            );
        }
        response
    }

    async fn serve(
        &self,
        config: &Config,
        conn: &ConnInfo,
        parts: &mut Parts,
        body: Incoming,
        outcome: &mut Outcome,
    ) -> Response<Body> {
        // Connection-level headers go first, so a client cannot use `Connection: <name>` to
        // drop a header the gateway sets below (the client id, `Host`).
        headers::strip_hop_by_hop(&mut parts.headers);

        // 1. Route.
        let routed = router::route(config, conn.port, router::request_host(parts), parts);
        let (listener, route) = match routed {
            Routed::Route(l, r) => (l, r),
            Routed::NoRoute(l) => {
                outcome.gateway = Some(l.gateway.clone());
                return text(StatusCode::NOT_FOUND, Bytes::new());
            }
            Routed::NoListener => return text(StatusCode::NOT_FOUND, Bytes::new()),
        };
        outcome.gateway = Some(listener.gateway.clone());
        outcome.route = Some(route.route.clone());

        // 2. Authenticate.
        match &route.auth {
            Auth::None => {}
            Auth::Invalid { policy } => {
                self.count_denied(policy, "invalid_policy");
                outcome.denied = Some("invalid_policy");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from_static(INVALID_ROUTE_BODY.as_bytes()),
                );
            }
            Auth::ApiKey { policy } => match auth::authenticate(policy, parts) {
                Ok(client) => {
                    self.metrics
                        .api_key_allowed
                        .get_or_create(&AllowedLabels {
                            policy: policy.name.clone(),
                            client: client.clone(),
                        })
                        .inc();
                    outcome.client = Some(client.clone());
                }
                Err(denied) => {
                    self.count_denied(&policy.name, denied.as_str());
                    outcome.denied = Some(denied.as_str());
                    return unauthorized(denied);
                }
            },
        }

        // 3. Act.
        match &*route.action {
            Action::Direct { status, body } => text(*status, body.clone()),
            Action::Redirect(r) => redirect(r, route, listener, router::request_host(parts), parts),
            Action::Forward(f) => {
                self.forward(f, route, listener, parts, body, conn, outcome)
                    .await
            }
        }
    }

    fn count_denied(&self, policy: &Arc<str>, reason: &'static str) {
        self.metrics
            .api_key_denied
            .get_or_create(&DeniedLabels {
                policy: policy.clone(),
                reason,
            })
            .inc();
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        f: &Forward,
        route: &Route,
        listener: &Listener,
        parts: &mut Parts,
        body: Incoming,
        conn: &ConnInfo,
        outcome: &mut Outcome,
    ) -> Response<Body> {
        let backend = f.pick(fastrand::u32(..));
        if let Some(r) = &backend.redirect {
            return redirect(r, route, listener, router::request_host(parts), parts);
        }
        let upstream = match &backend.target {
            Target::Upstream(u) => u,
            Target::Invalid(_) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from_static(b"backend reference could not be resolved"),
                )
            }
        };
        outcome.upstream = Some(upstream.name.clone());
        let Some(index) = upstream.pick(now_ms(), fastrand::u32(..), &[]) else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(b"no healthy upstream"),
            );
        };
        let endpoint = &upstream.endpoints[index];

        // Headers: keep the client's Host (HTTP/2 carries it in :authority), drop
        // hop-by-hop ones, add forwarding headers, then the route's filters.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    parts.headers.insert(header::HOST, v);
                }
            }
        }
        headers::set_forwarded(&mut parts.headers, &conn.peer_ip);
        if !f.request_headers.is_empty() {
            f.request_headers.apply(&mut parts.headers);
        }
        if !backend.request_headers.is_empty() {
            backend.request_headers.apply(&mut parts.headers);
        }
        let mut path_and_query = parts.uri.path_and_query().cloned();
        if let Some(rw) = backend.rewrite.as_ref().or(f.rewrite.as_ref()) {
            if let Some(h) = &rw.hostname {
                if let Ok(v) = HeaderValue::from_str(h) {
                    parts.headers.insert(header::HOST, v);
                }
            }
            if let Some(p) = &rw.path {
                let new_path = p.apply(parts.uri.path(), &route.matcher.path);
                let pq = match parts.uri.query() {
                    Some(q) => format!("{new_path}?{q}"),
                    None => new_path,
                };
                path_and_query = PathAndQuery::try_from(pq).ok();
            }
        }
        let uri = Uri::builder()
            .scheme("http")
            .authority(endpoint.authority.clone())
            .path_and_query(path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/")))
            .build();
        let Ok(uri) = uri else {
            return text(
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"bad request path"),
            );
        };

        let mut out = Request::new(Body::Stream(body));
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = std::mem::take(&mut parts.headers);

        let _active = endpoint.start_request();
        let sent = Instant::now();
        let timeout = route.timeout.unwrap_or(self.settings.upstream_timeout);
        let resp = match self.client.send(&endpoint.authority, out, timeout).await {
            Ok(r) => r,
            Err(UpstreamError::Timeout) => {
                return text(
                    StatusCode::GATEWAY_TIMEOUT,
                    Bytes::from_static(b"upstream request timeout"),
                )
            }
            Err(UpstreamError::Connect) => {
                endpoint.mark_down(now_ms() + self.settings.eject_for.as_millis() as u64);
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from_static(b"upstream connect error or disconnect/reset before headers. reset reason: connection failure"),
                );
            }
            Err(UpstreamError::Protocol) => {
                return text(
                    StatusCode::BAD_GATEWAY,
                    Bytes::from_static(
                        b"upstream connect error or disconnect/reset before headers",
                    ),
                )
            }
        };
        self.metrics
            .upstream_latency
            .get_or_create(&UpstreamLabels {
                upstream: upstream.name.clone(),
            })
            .observe(sent.elapsed().as_secs_f64());

        let (mut rp, rb) = resp.into_parts();
        headers::strip_hop_by_hop(&mut rp.headers);
        if !f.response_headers.is_empty() {
            f.response_headers.apply(&mut rp.headers);
        }
        if !backend.response_headers.is_empty() {
            backend.response_headers.apply(&mut rp.headers);
        }
        Response::from_parts(rp, rb)
    }
}

/// Makes the request say one thing about where it goes, before anything looks at it:
/// the host routing uses is the `Host` forwarded upstream, and the path routing matches is
/// the path forwarded upstream.
///
/// - an absolute-form target or HTTP/2 `:authority` wins over `Host` (RFC 9112 §3.2.2),
///   which is overwritten with it; two `Host` headers, or none on HTTP/1.1, are refused;
/// - the path is normalised (RFC 3986 §6.2.2): percent-encoded unreserved characters are
///   decoded and `.`/`..` segments removed, so `/public/%2e%2e/admin` is routed, checked
///   and forwarded as `/admin`. Encoded slashes stay as they are.
fn normalize(parts: &mut Parts) -> Result<(), &'static str> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let (first, second) = (hosts.next().is_some(), hosts.next().is_some());
    if second {
        return Err("more than one Host header");
    }
    if let Some(authority) = parts.uri.authority() {
        let v = HeaderValue::from_str(authority.as_str()).map_err(|_| "bad authority")?;
        parts.headers.insert(header::HOST, v);
    } else if !first && parts.version == http::Version::HTTP_11 {
        return Err("missing Host header");
    }
    if let Some(normal) = crate::path::normalize(parts.uri.path()) {
        let pq = match parts.uri.query() {
            Some(q) => format!("{normal}?{q}"),
            None => normal,
        };
        let pq = PathAndQuery::try_from(pq).map_err(|_| "bad request path")?;
        let mut up = std::mem::take(&mut parts.uri).into_parts();
        up.path_and_query = Some(pq);
        parts.uri = Uri::from_parts(up).map_err(|_| "bad request path")?;
    }
    Ok(())
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

fn unauthorized(_why: Denied) -> Response<Body> {
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        Bytes::from_static(UNAUTHORIZED_BODY.as_bytes()),
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("APIKey"));
    r
}

/// Builds the `Location` of a `RequestRedirect`. The port is the listener's unless the
/// filter sets one or changes the scheme, and is omitted when it is the scheme's default.
fn redirect(
    r: &Redirect,
    route: &Route,
    listener: &Listener,
    host: &str,
    parts: &Parts,
) -> Response<Body> {
    let scheme = r.scheme.as_deref().unwrap_or("http");
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
