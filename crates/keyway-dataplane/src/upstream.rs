//! The pooled keep-alive client that carries requests to upstream endpoints.

use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;

/// Why an upstream request failed; each maps to one status.
#[derive(Debug)]
pub enum UpstreamError {
    /// Could not connect (503).
    Connect,
    /// No response headers in time (504).
    Timeout,
    /// The connection failed after it was made (502).
    Protocol,
}

/// HTTP/1.1 client with a connection pool per endpoint.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpConnector, Body>,
}

impl UpstreamClient {
    /// A client whose connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        UpstreamClient { client }
    }

    /// Sends `req` (absolute URI naming the endpoint) and waits for the response headers.
    pub async fn send(
        &self,
        req: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamError::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_connect() => {
                tracing::debug!(error = %e, "upstream connect failed");
                Err(UpstreamError::Connect)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upstream request failed");
                Err(UpstreamError::Protocol)
            }
        }
    }
}
