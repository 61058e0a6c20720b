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
use keyway_sources::Source;
use tokio::net::TcpListener;

use crate::state::State;

/// Binds the admin address and serves it in the background.
pub async fn spawn(
    addr: SocketAddr,
    state: Arc<State>,
    gateway: Arc<Gateway>,
    source: Arc<dyn Source>,
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
            let source = source.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    let gateway = gateway.clone();
                    let source = source.clone();
                    async move { Ok::<_, Infallible>(answer(&req, &state, &gateway, &*source)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(local)
}

fn answer(
    req: &Request<Incoming>,
    state: &State,
    gateway: &Gateway,
    source: &dyn Source,
) -> Response<Full<Bytes>> {
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
                with_staleness(state.metrics.encode(), source),
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
            out["source"] = serde_json::json!({"name": source.name(), "state": source.status()});
            json(&out)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /healthz /readyz /metrics /config_dump /status\n".into(),
        ),
    }
}

/// Adds `keyway_source_stale_seconds`, read from the source at scrape time, before the
/// exposition's end marker.
fn with_staleness(mut text: String, source: &dyn Source) -> String {
    let views = source.staleness();
    if views.is_empty() {
        return text;
    }
    let tail = text.rfind("# EOF").map(|i| text.split_off(i));
    text.push_str("# HELP keyway_source_stale_seconds Seconds a view of the source has gone without contact (0 while connected).\n");
    text.push_str("# TYPE keyway_source_stale_seconds gauge\n");
    for (view, seconds) in views {
        text.push_str(&format!(
            "keyway_source_stale_seconds{{view=\"{view}\"}} {seconds:.3}\n"
        ));
    }
    text.push_str(tail.as_deref().unwrap_or(""));
    text
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
