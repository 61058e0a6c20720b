//! Phase 6, forwarding, in its own steps: pick the backend, pick the endpoint, build the
//! upstream request, send it, filter the response.

use std::sync::Arc;

use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, Version};
use keyway_store::{Endpoint, Forward, Listener, Route, Target, Upstream, WeightedBackend};
use tokio::time::Instant;

use super::{redirect, ConnInfo, Gateway, Outcome, ProxyError};
use crate::body::{Body, BodyProgress};
use crate::headers::{self, AddedFields, RequestId};
use crate::metrics::{millis_at, now_ms};
use crate::upstream::{fields, h1, Timeouts, UpstreamError};

impl Gateway {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn forward(
        &self,
        f: &Forward,
        route: &Route,
        listener: &Listener,
        parts: &mut Parts,
        body: Body,
        conn: &ConnInfo,
        outcome: &mut Outcome,
    ) -> Result<Response<Body>, ProxyError> {
        // a. Backend: a weighted choice among the rule's backendRefs.
        let backend = f.pick(fastrand::u32(..));
        if let Some(r) = &backend.redirect {
            let host = super::route::request_host(parts);
            return Ok(redirect::response(
                r,
                route,
                listener,
                conn.scheme(),
                host,
                parts,
            ));
        }
        let upstream = match &backend.target {
            Target::Upstream(u) => u,
            Target::Invalid(_) => return Err(ProxyError::InvalidBackend),
        };
        outcome.upstream = Some(upstream.name.clone());

        // b. Endpoint. One clock read serves the endpoint's ejection check, the response
        // deadline, the pool's idle check and the upstream latency (which so includes
        // building the request: well under a microsecond).
        let now = Instant::now();
        let endpoint = pick_endpoint(upstream, now)?;

        // c. The request as the upstream gets it.
        let (req, progress, added) =
            upstream_request(f, backend, route, parts, body, conn, &outcome.request_id)?;

        // d. Send.
        let _active = endpoint.start_request();
        let timeouts = Timeouts {
            response: route.timeout.unwrap_or(self.settings.upstream_timeout),
            body_idle: self.settings.body_idle_timeout,
            now,
        };
        let authority = &endpoint.authority;
        let resp = if h1::takes(&req, progress.is_some()) {
            self.client
                .send_direct(authority, req, added, timeouts)
                .await
        } else {
            self.client
                .send(authority, req, progress, added, timeouts)
                .await
        };
        let resp = resp.map_err(|e| match e {
            UpstreamError::Connect => {
                endpoint.mark_down(now_ms() + self.settings.eject_for.as_millis() as u64);
                ProxyError::UpstreamConnect
            }
            UpstreamError::Timeout => ProxyError::UpstreamTimeout,
            UpstreamError::Protocol => ProxyError::UpstreamReset,
            UpstreamError::BodyTimeout => ProxyError::RequestBodyTimeout,
            UpstreamError::BadRequestBody => ProxyError::BadRequestBody,
        })?;
        self.metrics
            .observe_upstream(&upstream.name, now.elapsed().as_secs_f64());

        // e. Filter the response.
        Ok(filter_response(resp, f, backend))
    }
}

/// The upstream request, the progress of its body, and the fields Keyway adds when they are
/// not in its map.
type Upstreamed = (
    Request<Body>,
    Option<Arc<BodyProgress>>,
    Option<AddedFields>,
);

fn pick_endpoint(upstream: &Upstream, now: Instant) -> Result<&Endpoint, ProxyError> {
    let index = upstream
        .pick(millis_at(now.into_std()), fastrand::u32(..), &[])
        .ok_or(ProxyError::NoHealthyUpstream)?;
    Ok(&upstream.endpoints[index])
}

/// The upstream request: the client's `Host` (HTTP/2's `:authority`, already copied there),
/// forwarding headers, only framing Keyway produces itself, the route's filters and
/// rewrites, and an origin-form target (RFC 9112 §3.2.1), never absolute-form. The fields
/// Keyway adds (a made `x-request-id`, the forwarding fields) come back apart from the map
/// when nothing needs them in it.
fn upstream_request(
    f: &Forward,
    backend: &WeightedBackend,
    route: &Route,
    parts: &mut Parts,
    body: Body,
    conn: &ConnInfo,
    request_id: &RequestId,
) -> Result<Upstreamed, ProxyError> {
    let client_forwarded = headers::prepare_for_upstream(&mut parts.headers);
    let filtered = !f.request_headers.is_empty() || !backend.request_headers.is_empty();
    let added = AddedFields::new(request_id.made(), &conn.peer_ip, conn.scheme());
    let added = if client_forwarded || filtered {
        // The client's x-forwarded-for is merged with Keyway's, and filters see all three.
        added.insert_into_merging(&mut parts.headers);
        None
    } else {
        Some(added)
    };
    if !f.request_headers.is_empty() {
        f.request_headers.apply(&mut parts.headers);
    }
    if !backend.request_headers.is_empty() {
        backend.request_headers.apply(&mut parts.headers);
    }
    let mut path_and_query = parts.uri.path_and_query().cloned();
    if let Some(rw) = backend.rewrite.as_ref().or(f.rewrite.as_ref()) {
        if let Some(h) = &rw.hostname {
            if let Ok(v) = http::HeaderValue::from_str(h) {
                parts.headers.insert(http::header::HOST, v);
            }
        }
        if let Some(p) = &rw.path {
            let new_path = p.apply(parts.uri.path(), &route.matcher.path);
            let pq = match parts.uri.query() {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path,
            };
            path_and_query = Some(
                PathAndQuery::try_from(pq)
                    .map_err(|_| ProxyError::BadRequest("bad request path"))?,
            );
        }
    }
    let target = match (&parts.method, parts.uri.authority()) {
        // A CONNECT a route asked for keeps its authority-form target.
        (&http::Method::CONNECT, Some(a)) => Uri::from(a.clone()),
        _ => Uri::from(path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/"))),
    };

    use http_body::Body as _;
    let (body, progress) = match body {
        Body::Stream(body) if !body.is_end_stream() => {
            let progress = Arc::new(BodyProgress::default());
            (Body::Request(body, progress.clone()), Some(progress))
        }
        body => (body, None),
    };
    let mut out = Request::new(body);
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = target;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = std::mem::take(&mut parts.headers);
    Ok((out, progress, added))
}

/// The response as the client gets it: connection-level headers gone, the route's filters
/// applied, Keyway's own framing and version.
fn filter_response(resp: Response<Body>, f: &Forward, backend: &WeightedBackend) -> Response<Body> {
    let (mut rp, rb) = resp.into_parts();
    headers::strip_hop_by_hop(&mut rp.headers);
    // Framed by both a transfer coding and a length, the coding framed it (RFC 9112 §6.3);
    // the client must not get both (hyper's server would refuse to send the response).
    if rp.headers.contains_key(http::header::TRANSFER_ENCODING) {
        rp.headers.remove(http::header::CONTENT_LENGTH);
    }
    // A proxy sends its own version (RFC 9110 §6.2): the upstream's is of its hop.
    if rp.version == Version::HTTP_10 {
        rp.version = Version::HTTP_11;
    }
    let mut resp = Response::from_parts(rp, rb);
    if !f.response_headers.is_empty() || !backend.response_headers.is_empty() {
        // The filters work on a map: fields kept as bytes join it first.
        fields::materialize(&mut resp);
        f.response_headers.apply(resp.headers_mut());
        backend.response_headers.apply(resp.headers_mut());
    }
    resp
}
