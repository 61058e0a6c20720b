//! The upstream client: HTTP/1.1 keep-alive connections per endpoint, pooled.
//!
//! A connection is taken from the endpoint's idle list (or dialled), carries one request,
//! and goes back to the list as soon as its response body has been read to the end, so the
//! next request reuses it. A response body dropped half-read takes its connection with it
//! (the connection closes). A request that could not be written because the pooled
//! connection had been closed by the upstream meanwhile is sent again on another one;
//! nothing that was sent is ever retried.
//!
//! This is leaner than a general-purpose client: no pool task per checkout, no per-request
//! URI or key cloning beyond the endpoint's authority, one lock per request and one per
//! return.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

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

/// How long a request waits for a pooled connection that is still finishing its previous
/// exchange before dialling a new one.
const REUSE_WAIT: Duration = Duration::from_millis(20);

/// Idle connections per endpoint, shared by every request.
#[derive(Clone)]
pub struct UpstreamClient {
    pool: Arc<Pool>,
}

struct Pool {
    idle: Mutex<HashMap<Authority, Vec<SendRequest<Body>>>>,
    connect_timeout: Duration,
    max_idle_per_endpoint: usize,
}

/// Returns a connection to the pool once its response body has been read to the end.
pub struct Checkin {
    sender: SendRequest<Body>,
    authority: Authority,
    pool: Arc<Pool>,
}

impl Checkin {
    /// Puts the connection back for the next request to the same endpoint.
    pub fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self.pool.idle.lock().expect("pool lock");
        let list = idle.entry(self.authority).or_default();
        if list.len() < self.pool.max_idle_per_endpoint {
            list.push(self.sender);
        }
    }
}

impl std::fmt::Debug for Checkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checkin({})", self.authority)
    }
}

impl UpstreamClient {
    /// A client whose connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        UpstreamClient {
            pool: Arc::new(Pool {
                idle: Mutex::new(HashMap::new()),
                connect_timeout,
                max_idle_per_endpoint: 1024,
            }),
        }
    }

    /// An idle connection: a ready one if there is one, else the most recently returned
    /// (which is usually just finishing its previous exchange); closed ones are dropped.
    fn checkout(&self, authority: &Authority) -> Option<SendRequest<Body>> {
        let mut idle = self.pool.idle.lock().expect("pool lock");
        let list = idle.get_mut(authority)?;
        list.retain(|s| !s.is_closed());
        match list.iter().rposition(SendRequest::is_ready) {
            Some(i) => Some(list.swap_remove(i)),
            None => list.pop(),
        }
    }

    async fn connect(
        &self,
        authority: &Authority,
        deadline: Instant,
    ) -> Result<SendRequest<Body>, UpstreamError> {
        let connect_by = deadline.min(Instant::now() + self.pool.connect_timeout);
        let stream =
            match tokio::time::timeout_at(connect_by, TcpStream::connect(authority.as_str())).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%authority, error = %e, "upstream connect failed");
                    return Err(UpstreamError::Connect);
                }
                Err(_) if connect_by < deadline => return Err(UpstreamError::Connect),
                Err(_) => return Err(UpstreamError::Timeout),
            };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpstreamError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn checkin(&self, sender: SendRequest<Body>, authority: &Authority) {
        Checkin {
            sender,
            authority: authority.clone(),
            pool: self.pool.clone(),
        }
        .give_back();
    }

    /// Sends `req` (origin-form URI, `Host` set) to `authority` and waits for the response
    /// headers until `timeout`.
    pub async fn send(
        &self,
        authority: &Authority,
        mut req: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Body>, UpstreamError> {
        let deadline = Instant::now() + timeout;
        // A pooled connection the upstream closed meanwhile hands the request back
        // unsent; try the next one, then a fresh connection.
        for _ in 0..4 {
            let (mut sender, reused) = match self.checkout(authority) {
                Some(s) => (s, true),
                None => (self.connect(authority, deadline).await?, false),
            };
            if !sender.is_ready() && reused {
                // A pooled connection still busy (an upstream that answered before reading
                // the whole request body, say) gets a moment, not the request's whole
                // timeout; then it stays in the pool and a fresh connection is dialled.
                let wait_until = deadline.min(Instant::now() + REUSE_WAIT);
                match tokio::time::timeout_at(wait_until, sender.ready()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => continue,
                    Err(_) => {
                        self.checkin(sender, authority);
                        sender = self.connect(authority, deadline).await?;
                    }
                }
            }
            if !sender.is_ready() {
                match tokio::time::timeout_at(deadline, sender.ready()).await {
                    Err(_) => return Err(UpstreamError::Timeout),
                    Ok(Err(_)) => return Err(UpstreamError::Protocol),
                    Ok(Ok(())) => {}
                }
            }
            match tokio::time::timeout_at(deadline, sender.try_send_request(req)).await {
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(Ok(resp)) => {
                    let (parts, body) = resp.into_parts();
                    let checkin = Checkin {
                        sender,
                        authority: authority.clone(),
                        pool: self.pool.clone(),
                    };
                    return Ok(Response::from_parts(parts, Body::upstream(body, checkin)));
                }
                Ok(Err(mut e)) => match e.take_message() {
                    Some(unsent) => {
                        req = unsent;
                        continue;
                    }
                    None => {
                        tracing::debug!(error = %e.error(), "upstream request failed");
                        return Err(UpstreamError::Protocol);
                    }
                },
            }
        }
        Err(UpstreamError::Protocol)
    }
}
