//! One client connection, from accept to close, with a watchdog.
//!
//! hyper bounds the wait for each HTTP/1.1 request head once it is reading one, but three
//! waits are nobody's: the bytes that tell HTTP/1.1 from HTTP/2 (the connection has not been
//! handed to either yet), an HTTP/2 connection with no stream open (a client can park a
//! HEADERS block without its CONTINUATION there forever), and an HTTP/2 connection left
//! idle. The watchdog closes a connection that has had no request in progress for the idle
//! limit: at once when it never completed a request, gracefully (GOAWAY, or close after the
//! current response) otherwise, and for good if the graceful close does not finish in time.
//!
//! A request is "in progress" from its head being parsed until its response body has been
//! sent, so slow uploads and long downloads are never cut by the watchdog.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::body::Body;

/// Requests in progress on one connection, and when the last one began or ended.
pub(crate) struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `start` of the last request start or end.
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Marks a request as begun; it ends when the guard (carried by its response body)
    /// drops.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// When the connection became idle, if it is.
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// One request in progress.
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress until it is done.
pub struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl Tracked {
    pub(crate) fn new(body: Body, in_flight: InFlight) -> Self {
        Tracked {
            body,
            _in_flight: in_flight,
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Drives `conn` to its end: a graceful close when `stop` fires (port closed, shutdown),
/// and the idle watchdog described in the module docs.
pub(crate) async fn drive<C>(
    conn: C,
    activity: Arc<Activity>,
    idle_limit: Duration,
    mut stop: watch::Receiver<bool>,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut closing_since: Option<Instant> = None;
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        // Next look: when the connection would have been idle for the limit, or (while a
        // request runs, or while closing) a limit from now.
        let check_at = match (closing_since, activity.idle_since()) {
            (Some(since), _) => since + idle_limit,
            (None, Some(idle)) => idle + idle_limit,
            (None, None) => Instant::now() + idle_limit,
        };
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                // A dropped sender means the port is gone: close as for a stop.
                let _ = changed;
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(check_at) => {
                let now = Instant::now();
                if let Some(since) = closing_since {
                    if now >= since + idle_limit {
                        // The graceful close did not finish (a client that never answers
                        // the GOAWAY's ping, a parked HEADERS block): close for good.
                        tracing::debug!("closing a connection that ignored a graceful close");
                        return;
                    }
                    continue;
                }
                let Some(idle) = activity.idle_since() else { continue };
                if now < idle + idle_limit {
                    continue;
                }
                if activity.requests.load(Ordering::Relaxed) == 0 {
                    // Never completed a request head: nothing to finish.
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing_since = Some(now);
            }
        }
    }
}
