//! One body type for everything Keyway sends: nothing, a fixed buffer, or a stream passed
//! through from the other side. An enum, so no request pays for boxing.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::Checkin;

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
    /// An upstream response body; its connection goes back to the pool once it has been
    /// read to the end.
    Upstream(Incoming, Option<Checkin>),
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

impl From<Incoming> for Body {
    fn from(b: Incoming) -> Self {
        Body::Stream(b)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => Pin::new(s).poll_frame(cx),
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
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Stream(s) | Body::Upstream(s, _) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(s) | Body::Upstream(s, _) => s.size_hint(),
        }
    }
}
