//! Client connections: each is driven by its own task, and a per-port watchdog closes the
//! idle and the stuck ones.
//!
//! hyper bounds the wait for each HTTP/1.1 request head once it is reading one, but three
//! waits are nobody's: the bytes that tell HTTP/1.1 from HTTP/2 (the connection has not been
//! handed to either yet), an HTTP/2 connection with no stream open (a client can park a
//! HEADERS block without its CONTINUATION there forever), and an HTTP/2 connection left
//! idle. The watchdog closes a connection that has had no request in progress for the idle
//! limit: at once when it never completed a request head, gracefully (GOAWAY, or close after
//! the current response) otherwise, and for good if the graceful close has not finished one
//! idle limit later.
//!
//! A request is "in progress" from its head being parsed until its response body has been
//! sent, so slow uploads and long downloads are never cut by the watchdog.
//!
//! The request path pays for this with two atomic operations and one clock read per request;
//! the connection's task pays one check of its [`Control`] per poll. The scanning happens on
//! the watchdog's own timer, a few times per idle limit, over every open connection.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use tokio::time::Instant;

use crate::body::Body;

const RUN: u8 = 0;
const GRACEFUL: u8 = 1;
const CLOSE: u8 = 2;

/// What a connection's task and the watchdog share: requests in progress, when the last one
/// ended, and what the connection has been told to do.
pub(crate) struct Control {
    start: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `start` at which the last request ended, plus one; 0: none has.
    last_end: AtomicU64,
    state: AtomicU8,
    /// Milliseconds after `start` at which a graceful close was asked for.
    graceful_at: AtomicU64,
    waker: AtomicWaker,
}

impl Control {
    fn new() -> Arc<Self> {
        Arc::new(Control {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
            state: AtomicU8::new(RUN),
            graceful_at: AtomicU64::new(0),
            waker: AtomicWaker::new(),
        })
    }

    /// Marks a request as begun; it ends when the guard (carried by its response body)
    /// drops.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Whether the connection may go on serving requests (it has not been asked to close).
    pub(crate) fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == RUN
    }

    /// For a connection between requests: whether it has been asked to close, gracefully or
    /// not (either way it closes now); else registers to be woken when it is.
    pub(crate) fn poll_stop(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        !self.is_running()
    }

    fn millis(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_millis() as u64
    }

    /// Asks the connection to close gracefully (no-op if it already was asked to close).
    fn graceful(&self, now: Instant) {
        if self
            .state
            .compare_exchange(RUN, GRACEFUL, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.graceful_at.store(self.millis(now), Ordering::Release);
            self.waker.wake();
        }
    }

    fn close(&self) {
        self.state.store(CLOSE, Ordering::Release);
        self.waker.wake();
    }

    /// The watchdog's look at one connection.
    fn check(&self, now: Instant, idle_limit: Duration) {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return;
        }
        let limit = idle_limit.as_millis() as u64;
        let now_ms = self.millis(now);
        match self.state.load(Ordering::Acquire) {
            RUN => match self.last_end.load(Ordering::Acquire) {
                // Never completed a request head: nothing to finish.
                0 if now_ms >= limit => self.close(),
                0 => {}
                ended if now_ms >= (ended - 1) + limit => self.graceful(now),
                _ => {}
            },
            GRACEFUL if now_ms >= self.graceful_at.load(Ordering::Acquire) + limit => {
                // The graceful close did not finish (a client that never answers the
                // GOAWAY's ping, a parked header block): close for good.
                self.close();
            }
            _ => {}
        }
    }
}

/// One request in progress.
pub(crate) struct InFlight(Arc<Control>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let c = &self.0;
        c.last_end
            .store(c.millis(Instant::now()) + 1, Ordering::Release);
        c.in_flight.fetch_sub(1, Ordering::AcqRel);
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
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The open connections of one port, for the watchdog and for closing them all.
#[derive(Default)]
pub(crate) struct Connections {
    open: Mutex<HashMap<u64, Arc<Control>>>,
    next_id: AtomicU64,
}

impl Connections {
    /// Registers a new connection; it leaves the set when the returned entry drops.
    pub(crate) fn add(self: &Arc<Self>) -> Entry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let control = Control::new();
        self.open
            .lock()
            .expect("connections lock")
            .insert(id, control.clone());
        Entry {
            id,
            control,
            set: self.clone(),
        }
    }

    /// Asks every connection to close gracefully (the port is closing).
    pub(crate) fn close_all(&self) {
        let now = Instant::now();
        for c in self.open.lock().expect("connections lock").values() {
            c.graceful(now);
        }
    }

    /// Looks at every connection every few moments, until the set is dropped.
    pub(crate) async fn watch(set: std::sync::Weak<Self>, idle_limit: Duration) {
        let tick = (idle_limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            tokio::time::sleep(tick).await;
            let Some(set) = set.upgrade() else { return };
            let now = Instant::now();
            for c in set.open.lock().expect("connections lock").values() {
                c.check(now, idle_limit);
            }
        }
    }
}

/// A connection's place in [`Connections`].
pub(crate) struct Entry {
    id: u64,
    control: Arc<Control>,
    set: Arc<Connections>,
}

impl Entry {
    pub(crate) fn control(&self) -> &Arc<Control> {
        &self.control
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.set
            .open
            .lock()
            .expect("connections lock")
            .remove(&self.id);
    }
}

/// Drives `conn` to its end, doing what its [`Control`] says: a graceful shutdown when asked,
/// or stopping at once.
pub(crate) async fn drive<C>(conn: C, control: &Control)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut graceful_started = false;
    std::future::poll_fn(|cx| {
        control.waker.register(cx.waker());
        match control.state.load(Ordering::Acquire) {
            CLOSE => {
                tracing::debug!("closing an idle or stuck connection");
                return Poll::Ready(());
            }
            GRACEFUL if !graceful_started => {
                graceful_started = true;
                conn.as_mut().graceful_shutdown();
            }
            _ => {}
        }
        match conn.as_mut().poll(cx) {
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "connection ended with an error");
                Poll::Ready(())
            }
            Poll::Ready(Ok(())) => Poll::Ready(()),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}
