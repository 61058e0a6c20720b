//! The upstream client: HTTP/1.1 keep-alive connections per endpoint, pooled.
//!
//! A connection is taken from the endpoint's idle list (or dialled), carries one request,
//! and goes back to the list as soon as its response body has been read to the end, so the
//! next request reuses it. A response body dropped half-read takes its connection with it
//! (the connection closes). A request that could not be written because the pooled
//! connection had been closed by the upstream meanwhile is sent again on another one;
//! nothing that was sent is ever retried.
//!
//! Idle connections are closed after [`PoolOptions::idle_timeout`], and those of endpoints
//! that left the config as soon as a new config is applied ([`UpstreamClient::retain`]).
//!
//! Timeouts follow Envoy's route timeout: the response timeout runs from the moment the
//! whole request has been sent, so a long upload is not cut off while the upstream is still
//! reading it; a request body that stalls is bounded by its own idle timeout instead.
//!
//! A bodyless `GET` or `HEAD` (most API traffic) skips hyper's client: [`h1`] and
//! [`direct`] run the exchange in the request's own task, on connections of a pool of
//! their own. Everything else goes through hyper's client.
//!
//! This is leaner than a general-purpose client: no pool task per checkout, no per-request
//! URI or key cloning beyond the endpoint's authority, one lock per request and one per
//! return.

pub mod direct;
pub mod endpoints;
pub mod fields;
pub mod h1;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::{Body, BodyProgress};
use crate::headers::AddedFields;
use direct::{Conn, DirectBody, ExchangeError};

/// Why an upstream request failed; each maps to one status.
#[derive(Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// Could not connect (503).
    Connect,
    /// No response headers in time (504).
    Timeout,
    /// The connection failed after it was made (502).
    Protocol,
    /// The client stopped sending the request body (408).
    BodyTimeout,
    /// The client's request body could not be read: malformed framing, or cut short (400).
    BadRequestBody,
}

/// How long a request waits for a pooled connection that is still finishing its previous
/// exchange before dialling a new one.
const REUSE_WAIT: Duration = Duration::from_millis(20);

/// How the pool dials and keeps connections.
#[derive(Clone, Copy, Debug)]
pub struct PoolOptions {
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Close a connection that sat unused in the pool this long.
    pub idle_timeout: Duration,
    /// Keep at most this many idle connections per endpoint.
    pub max_idle_per_endpoint: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_endpoint: 1024,
        }
    }
}

/// How long an exchange may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From the end of the request to the response headers.
    pub response: Duration,
    /// Longest pause in the request body while it is being sent.
    pub body_idle: Duration,
    /// When the gateway began forwarding the request. A request without a body is
    /// complete from this moment, so its response deadline counts from here: the caller's
    /// clock read serves the pool too, one read fewer per request (each is a `vDSO` call).
    pub now: Instant,
}

/// Idle connections per endpoint, shared by every request.
#[derive(Clone)]
pub struct UpstreamClient {
    pool: Arc<Pool>,
}

struct Pool {
    /// Keyed by the authority's text. Not by `Authority`: its `Hash` feeds the hasher one
    /// lower-cased byte at a time, and with SipHash that was 4% of a request's instructions.
    /// Endpoint authorities come from the config, not from clients, so a fast hash is safe.
    idle: Mutex<IdleLists<Idle>>,
    /// The connections of the [`direct`] path, keyed the same way.
    direct: Mutex<IdleLists<DirectIdle>>,
    options: PoolOptions,
}

/// Idle connections per endpoint authority.
type IdleLists<T> = HashMap<Box<str>, Vec<T>, foldhash::fast::RandomState>;

/// A pooled connection of the [`direct`] path, in the order they came back.
struct DirectIdle {
    conn: Conn,
    since: Instant,
}

/// Where a [`direct`] connection goes back once its response has been read.
pub(crate) struct Home {
    pool: Arc<Pool>,
    authority: Authority,
}

impl Home {
    pub(crate) fn give_back(self, conn: Conn) {
        let conn = DirectIdle {
            conn,
            since: Instant::now(),
        };
        let max = self.pool.options.max_idle_per_endpoint;
        push_idle(&self.pool.direct, self.authority.as_str(), conn, max);
    }
}

/// Appends a connection to its endpoint's idle list, unless the list is full.
fn push_idle<T>(lists: &Mutex<IdleLists<T>>, authority: &str, conn: T, max: usize) {
    let mut lists = lists.lock().expect("pool lock");
    // The endpoint's list usually exists: look it up by `&str`, without allocating a key.
    match lists.get_mut(authority) {
        Some(list) if list.len() >= max => {}
        Some(list) => list.push(conn),
        None => {
            lists.insert(authority.into(), vec![conn]);
        }
    }
}

/// A pooled connection. Each endpoint's list is in the order connections came back, so
/// the oldest (and the first to outstay the idle timeout) lead.
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
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
        let conn = Idle {
            sender: self.sender,
            since: Instant::now(),
        };
        let max = self.pool.options.max_idle_per_endpoint;
        push_idle(&self.pool.idle, self.authority.as_str(), conn, max);
    }
}

impl std::fmt::Debug for Checkin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Checkin({})", self.authority)
    }
}

impl UpstreamClient {
    /// A client with an empty pool. When called inside a Tokio runtime, a background task
    /// closes connections that outstay the idle timeout (it ends with the client).
    pub fn new(options: PoolOptions) -> Self {
        let pool = Arc::new(Pool {
            idle: Mutex::new(HashMap::default()),
            direct: Mutex::new(HashMap::default()),
            options,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(sweep_loop(Arc::downgrade(&pool)));
        }
        UpstreamClient { pool }
    }

    /// Closes the idle connections of every endpoint not in `keep` (the endpoints of the
    /// config just applied).
    pub fn retain(&self, keep: &[Authority]) {
        let keep: HashSet<&str> = keep.iter().map(Authority::as_str).collect();
        let mut idle = self.pool.idle.lock().expect("pool lock");
        idle.retain(|a, _| keep.contains(&**a));
        drop(idle);
        let mut direct = self.pool.direct.lock().expect("pool lock");
        direct.retain(|a, _| keep.contains(&**a));
    }

    /// Idle connections in the pool, per endpoint (admin and tests).
    pub fn idle_connections(&self) -> HashMap<String, usize> {
        let mut out: HashMap<String, usize> = HashMap::new();
        let idle = self.pool.idle.lock().expect("pool lock");
        for (a, l) in idle.iter() {
            *out.entry(a.to_string()).or_default() +=
                l.iter().filter(|c| !c.sender.is_closed()).count();
        }
        drop(idle);
        let direct = self.pool.direct.lock().expect("pool lock");
        for (a, l) in direct.iter() {
            *out.entry(a.to_string()).or_default() +=
                l.iter().filter(|c| c.conn.is_usable()).count();
        }
        out.retain(|_, n| *n > 0);
        out
    }

    /// The most recently returned usable connection of the [`direct`] path; expired and
    /// closed ones are dropped.
    fn checkout_direct(&self, authority: &Authority, now: Instant) -> Option<Conn> {
        let mut idle = self.pool.direct.lock().expect("pool lock");
        let list = idle.get_mut(authority.as_str())?;
        let timeout = self.pool.options.idle_timeout;
        let stale = list.partition_point(|c| now.saturating_duration_since(c.since) >= timeout);
        list.drain(..stale);
        while let Some(c) = list.pop() {
            if c.conn.is_usable() {
                return Some(c.conn);
            }
        }
        None
    }

    /// An idle connection: a ready one if there is one, else the most recently returned
    /// (which is usually just finishing its previous exchange); closed and expired ones
    /// are dropped.
    fn checkout(&self, authority: &Authority) -> Option<SendRequest<Body>> {
        let now = Instant::now();
        let mut idle = self.pool.idle.lock().expect("pool lock");
        let list = idle.get_mut(authority.as_str())?;
        // One clock read, not one per pooled connection: with 64 of them that was 4% of the
        // gateway's CPU. The list is oldest first, so the stale ones are a prefix.
        let timeout = self.pool.options.idle_timeout;
        let stale = list.partition_point(|c| now.saturating_duration_since(c.since) >= timeout);
        list.drain(..stale);
        list.retain(|c| !c.sender.is_closed());
        // The most recently returned ready connection; `remove` keeps the order.
        match list.iter().rposition(|c| c.sender.is_ready()) {
            Some(i) => Some(list.remove(i).sender),
            None => list.pop().map(|c| c.sender),
        }
    }

    /// A new TCP connection, within the connect timeout and the request's `deadline`.
    async fn dial(
        &self,
        authority: &Authority,
        deadline: Option<Instant>,
    ) -> Result<TcpStream, UpstreamError> {
        let connect_by = Instant::now() + self.pool.options.connect_timeout;
        let by = deadline.map_or(connect_by, |d| d.min(connect_by));
        let stream = match tokio::time::timeout_at(by, TcpStream::connect(authority.as_str())).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%authority, error = %e, "upstream connect failed");
                return Err(UpstreamError::Connect);
            }
            Err(_) if by == connect_by => return Err(UpstreamError::Connect),
            Err(_) => return Err(UpstreamError::Timeout),
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(
        &self,
        authority: &Authority,
        deadline: Option<Instant>,
    ) -> Result<SendRequest<Body>, UpstreamError> {
        let stream = self.dial(authority, deadline).await?;
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

    /// Sends `req` (origin-form target, `Host` set) to `authority` and waits for the
    /// response headers. `progress` tracks a request body still arriving from the client
    /// (`None`: the request is complete already).
    ///
    /// The caller asks [`h1::takes`] first and sends what it takes with
    /// [`Self::send_direct`]: one async layer fewer on the common path (each layer copies
    /// the request into its future).
    pub async fn send(
        &self,
        authority: &Authority,
        mut req: Request<Body>,
        progress: Option<Arc<BodyProgress>>,
        added: Option<AddedFields>,
        timeouts: Timeouts,
    ) -> Result<Response<Body>, UpstreamError> {
        if let Some(f) = added {
            f.insert_into(req.headers_mut());
        }
        // Known once the whole request has been handed over.
        let mut deadline = progress.is_none().then(|| timeouts.now + timeouts.response);
        // A pooled connection the upstream closed meanwhile hands the request back
        // unsent; try the next one, then a fresh connection.
        for _ in 0..4 {
            let (mut sender, reused) = match self.checkout(authority) {
                Some(s) => (s, true),
                None => (self.connect(authority, deadline).await?, false),
            };
            let ready_by = deadline.unwrap_or_else(|| Instant::now() + timeouts.response);
            if !sender.is_ready() && reused {
                // A pooled connection still busy (an upstream that answered before reading
                // the whole request body, say) gets a moment, not the request's whole
                // timeout; then it stays in the pool and a fresh connection is dialled.
                let wait_until = ready_by.min(Instant::now() + REUSE_WAIT);
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
                match tokio::time::timeout_at(ready_by, sender.ready()).await {
                    Err(_) => return Err(UpstreamError::Timeout),
                    Ok(Err(_)) => return Err(UpstreamError::Protocol),
                    Ok(Ok(())) => {}
                }
            }
            let sent = sender.try_send_request(req);
            tokio::pin!(sent);
            if deadline.is_none() {
                let p = progress
                    .as_deref()
                    .expect("a request without deadline has a body");
                if let Some(early) = upload(&mut sent, p, timeouts.body_idle).await? {
                    // The upstream answered before the body was complete.
                    match finish(early, sender, authority, &self.pool) {
                        Ok(resp) => return Ok(resp),
                        Err(Some(unsent)) => {
                            req = unsent;
                            continue;
                        }
                        Err(None) => return Err(failure(p)),
                    }
                }
                deadline = Some(Instant::now() + timeouts.response);
            }
            let due = deadline.expect("set once the body is complete");
            let result = match tokio::time::timeout_at(due, &mut sent).await {
                Err(_) => return Err(UpstreamError::Timeout),
                Ok(r) => r,
            };
            match finish(result, sender, authority, &self.pool) {
                Ok(resp) => return Ok(resp),
                Err(Some(unsent)) => req = unsent,
                Err(None) => {
                    return Err(progress.as_deref().map_or(UpstreamError::Protocol, failure))
                }
            }
        }
        Err(UpstreamError::Protocol)
    }
}

impl UpstreamClient {
    /// The [`direct`] path: a bodyless `GET` or `HEAD`. A pooled connection that fails
    /// before a byte of the response arrives (the upstream closed it just as the request
    /// came) is not an error: the request, idempotent, goes once more, on a new connection
    /// (the pool's others are likely closed too). A request is sent at most twice.
    pub async fn send_direct(
        &self,
        authority: &Authority,
        req: Request<Body>,
        added: Option<AddedFields>,
        timeouts: Timeouts,
    ) -> Result<Response<Body>, UpstreamError> {
        let deadline = timeouts.now + timeouts.response;
        let mut pooled = self.checkout_direct(authority, timeouts.now);
        loop {
            let (mut conn, reused) = match pooled.take() {
                Some(c) => (c, true),
                None => (
                    Conn::new(self.dial(authority, Some(deadline)).await?, deadline),
                    false,
                ),
            };
            let head = match conn.exchange(&req, added.as_ref(), deadline).await {
                Ok(head) => head,
                Err(ExchangeError::Late) => return Err(UpstreamError::Timeout),
                Err(ExchangeError::NothingReceived(_)) if reused => continue,
                Err(e) => {
                    tracing::debug!(%authority, error = %e, "upstream exchange failed");
                    return Err(UpstreamError::Protocol);
                }
            };
            let home = head.reusable.then(|| Home {
                pool: self.pool.clone(),
                authority: authority.clone(),
            });
            let (map, raw) = match head.fields {
                h1::Fields::Raw(raw) => (None, Some(raw)),
                h1::Fields::Map(map) => (Some(map), None),
            };
            // The request's map, sent, serves the next request's head on this thread.
            crate::header_maps::give_back(req.into_parts().0.headers);
            let body = DirectBody::start(conn, head.framing, home, raw);
            let mut resp = Response::new(body.into_body());
            *resp.status_mut() = head.status;
            *resp.version_mut() = head.version;
            if let Some(map) = map {
                *resp.headers_mut() = map;
            }
            return Ok(resp);
        }
    }
}

/// Why an exchange with a request body failed: the client's body, or the upstream.
fn failure(progress: &BodyProgress) -> UpstreamError {
    if progress.failed() {
        UpstreamError::BadRequestBody
    } else {
        UpstreamError::Protocol
    }
}

type Sent =
    Result<Response<hyper::body::Incoming>, hyper::client::conn::TrySendError<Request<Body>>>;

/// Waits while the request body is being sent: returns the response if the upstream
/// answers first, `None` once the body is complete, an error if the body stalls.
async fn upload(
    sent: &mut std::pin::Pin<&mut impl std::future::Future<Output = Sent>>,
    progress: &BodyProgress,
    body_idle: Duration,
) -> Result<Option<Sent>, UpstreamError> {
    loop {
        let notified = progress.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if progress.is_done() {
            return Ok(None);
        }
        let idle_at = Instant::from_std(progress.last_activity()) + body_idle;
        tokio::select! {
            biased;
            r = sent.as_mut() => return Ok(Some(r)),
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(idle_at) => {
                if !progress.is_done() && progress.last_activity().elapsed() >= body_idle {
                    return Err(UpstreamError::BodyTimeout);
                }
            }
        }
    }
}

/// The response with its connection's way back to the pool, or the request back if it was
/// never sent (`Err(Some)`), or a failed exchange (`Err(None)`).
// The unsent request is handed back by move on a rare path; boxing it would cost an
// allocation for nothing.
#[allow(clippy::result_large_err)]
fn finish(
    result: Sent,
    sender: SendRequest<Body>,
    authority: &Authority,
    pool: &Arc<Pool>,
) -> Result<Response<Body>, Option<Request<Body>>> {
    match result {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let checkin = Checkin {
                sender,
                authority: authority.clone(),
                pool: pool.clone(),
            };
            Ok(Response::from_parts(parts, Body::upstream(body, checkin)))
        }
        Err(mut e) => match e.take_message() {
            Some(unsent) => Err(Some(unsent)),
            None => {
                tracing::debug!(error = %e.error(), "upstream request failed");
                Err(None)
            }
        },
    }
}

/// Closes pooled connections that outstayed the idle timeout, until the pool is dropped.
async fn sweep_loop(pool: Weak<Pool>) {
    let every = match pool.upgrade() {
        Some(p) => (p.options.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        let timeout = pool.options.idle_timeout;
        let now = Instant::now();
        let mut idle = pool.idle.lock().expect("pool lock");
        for list in idle.values_mut() {
            list.retain(|c| {
                !c.sender.is_closed() && now.saturating_duration_since(c.since) < timeout
            });
        }
        idle.retain(|_, l| !l.is_empty());
        drop(idle);
        let mut direct = pool.direct.lock().expect("pool lock");
        for list in direct.values_mut() {
            list.retain(|c| c.conn.is_usable() && now.saturating_duration_since(c.since) < timeout);
        }
        direct.retain(|_, l| !l.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections to a listener that accepts and holds them (the client side of an HTTP/1
    /// handshake sends nothing).
    async fn connections(n: usize) -> (UpstreamClient, Authority, Vec<SendRequest<Body>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let client = UpstreamClient::new(PoolOptions {
            idle_timeout: Duration::from_secs(10),
            ..Default::default()
        });
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(client.connect(&authority, None).await.unwrap());
        }
        // Let each connection's task run, so that it wants a request.
        tokio::time::sleep(Duration::from_millis(1)).await;
        (client, authority, out)
    }

    #[tokio::test(start_paused = true)]
    async fn checkout_takes_the_newest_and_drops_the_stale() {
        let (client, authority, mut conns) = connections(4).await;
        let d = conns.pop().unwrap();
        let c = conns.pop().unwrap();
        let b = conns.pop().unwrap();
        let a = conns.pop().unwrap();
        assert!(a.is_ready() && b.is_ready() && c.is_ready() && d.is_ready());
        client.checkin(a, &authority);
        tokio::time::advance(Duration::from_secs(4)).await;
        client.checkin(b, &authority);
        tokio::time::advance(Duration::from_secs(4)).await;
        client.checkin(c, &authority);
        client.checkin(d, &authority);
        let count = || client.idle_connections()[&authority.to_string()];
        assert_eq!(count(), 4);
        // `a` is 8 s old, `b` 4 s: both within 10 s. Three seconds on, `a` is stale.
        tokio::time::advance(Duration::from_secs(3)).await;
        let first = client.checkout(&authority).unwrap();
        assert_eq!(
            count(),
            2,
            "the stale connection is dropped, the newest taken"
        );
        // The newest (`d`) came back last: it is the one handed out; `c` is next.
        client.checkin(first, &authority);
        let again = client.checkout(&authority).unwrap();
        let next = client.checkout(&authority).unwrap();
        let last = client.checkout(&authority).unwrap();
        assert!(client.checkout(&authority).is_none());
        // Handed out newest first: `again` is `d` (returned again at +11 s), then `c`
        // (+8 s), then `b` (+4 s).
        assert!([&again, &next, &last].iter().all(|c| c.is_ready()));
        // Back at +11 s, then idle 10 s: outstayed, not handed out.
        client.checkin(last, &authority);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(client.checkout(&authority).is_none(), "stale");
        client.checkin(again, &authority);
        client.checkin(next, &authority);
        assert_eq!(count(), 2);
        assert!(client.checkout(&authority).is_some());
    }
}
