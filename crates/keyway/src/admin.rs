//! The admin port: health, readiness, metrics, the compiled config and statuses.
//!
//! `/healthz` the process is up; `/readyz` 200 once a config is applied and every listener
//! port is bound; `/metrics` Prometheus text; `/config_dump` the compiled config (keys shown
//! only as counts); `/status` every object's conditions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use keyway_dataplane::Gateway;
use tokio::net::TcpListener;

use crate::state::State;

/// Binds the admin address and serves it in the background.
pub async fn spawn(
    addr: SocketAddr,
    state: Arc<State>,
    gateway: Arc<Gateway>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "admin listening");
    tokio::spawn(async move {
        let mut accepter = keyway_dataplane::listener::accept::Accepter::new("admin", None);
        loop {
            let (stream, _) = accepter.accept(&listener).await;
            let state = state.clone();
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    let gateway = gateway.clone();
                    async move { Ok::<_, Infallible>(answer(&req, &state, &gateway)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

fn answer(req: &Request<Incoming>, state: &State, gateway: &Gateway) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match state.readiness() {
            (true, _) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
            (false, why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        "/metrics" => {
            state.sync_log_drops();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                state.metrics.encode(),
            )
        }
        "/config_dump" => {
            let mut dump = state.summary();
            dump["config"] = serde_json::to_value(&*gateway.config()).unwrap_or_default();
            json(&dump)
        }
        "/status" => {
            let mut out = state.summary();
            out["objects"] = serde_json::to_value(&state.report().objects).unwrap_or_default();
            json(&out)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /healthz /readyz /metrics /config_dump /status\n".into(),
        ),
    }
}

fn json(v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_string_pretty(v).unwrap_or_default();
    body.push('\n');
    reply(StatusCode::OK, "application/json", body)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
