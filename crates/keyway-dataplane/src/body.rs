//! One body type for everything Keyway sends: nothing, a fixed buffer, or a stream passed
//! through from the other side. An enum, so no request pays for boxing.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::direct::DirectBody;
use crate::upstream::Checkin;

/// Why a body stopped early: hyper's errors on its side, Keyway's own upstream reader's
/// on the other.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body.
#[derive(Debug, Default)]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// A small body held in memory (direct responses).
    Full(Option<Bytes>),
    /// A body streamed from a peer, never buffered whole.
    Stream(Incoming),
    /// A request body streamed to the upstream, reporting its progress so the response
    /// timeout can start once it is complete.
    Request(Incoming, Arc<BodyProgress>),
    /// An upstream response body; its connection goes back to the pool once it has been
    /// read to the end.
    Upstream(Incoming, Option<Checkin>),
    /// An upstream response read by Keyway's own HTTP/1 reader: its body, and its header
    /// fields while they are still bytes (boxed: it is the largest variant).
    Direct(Box<DirectBody>),
}

impl Body {
    /// A body with these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }

    /// An upstream response body that returns `checkin` when done.
    pub fn upstream(body: Incoming, checkin: Checkin) -> Self {
        use http_body::Body as _;
        if body.is_end_stream() {
            checkin.give_back();
            return Body::Upstream(body, None);
        }
        Body::Upstream(body, Some(checkin))
    }
}

/// How far a request body has been sent: when the last bytes went, and whether it ended.
#[derive(Debug)]
pub struct BodyProgress {
    start: Instant,
    /// Milliseconds after `start` of the last frame.
    last_ms: AtomicU64,
    done: AtomicBool,
    failed: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Default for BodyProgress {
    fn default() -> Self {
        BodyProgress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            done: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
        }
    }
}

impl BodyProgress {
    /// Whether the body has ended (or failed: either way nothing more will be sent).
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Whether reading the body from the client failed (malformed chunked framing, the
    /// client went away): the exchange failed because of the request, not the upstream.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// When the last frame was sent (or the body started).
    pub fn last_activity(&self) -> Instant {
        self.start + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes when the body progresses or ends (register before checking, as with any
    /// [`tokio::sync::Notify`]).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    fn frame(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn end(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }
}

impl From<Incoming> for Body {
    fn from(b: Incoming) -> Self {
        Body::Stream(b)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Direct(d) => Pin::new(&mut **d).poll_frame(cx),
            Body::Stream(s) => Pin::new(s).poll_frame(cx).map_err(Into::into),
            Body::Request(s, progress) => {
                let polled = Pin::new(&mut *s).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(_))) if !s.is_end_stream() => progress.frame(),
                    Poll::Ready(Some(Err(_))) => {
                        progress.failed.store(true, Ordering::Release);
                        progress.end();
                    }
                    Poll::Ready(_) => progress.end(),
                    Poll::Pending => {}
                }
                polled.map_err(Into::into)
            }
            Body::Upstream(s, checkin) => {
                let polled = Pin::new(&mut *s).poll_frame(cx);
                let done = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => s.is_end_stream(),
                    Poll::Ready(Some(Err(_))) => {
                        // A broken body never goes back to the pool.
                        checkin.take();
                        false
                    }
                    Poll::Pending => false,
                };
                if done {
                    if let Some(c) = checkin.take() {
                        c.give_back();
                    }
                }
                polled.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Direct(d) => d.is_end_stream(),
            Body::Stream(s) | Body::Request(s, _) | Body::Upstream(s, _) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Direct(d) => d.size_hint(),
            Body::Stream(s) | Body::Request(s, _) | Body::Upstream(s, _) => s.size_hint(),
        }
    }
}
