//! How current each watch's view is, read off the HTTP traffic itself.
//!
//! kube's watcher hides the state of its connection: a watch that reconnected after an
//! outage and found nothing changed emits nothing. So a layer under the kube client
//! watches the responses instead: a watch's view is current while a successful response
//! body for its collection is open (an idle watch stream is open; bookmarks flow through
//! it), and otherwise as old as the last frame received on one.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};

/// Per-watch contact records, indexed like the source's watches.
#[derive(Debug)]
pub struct Freshness {
    paths: Vec<String>,
    open: Vec<AtomicUsize>,
    last: Vec<Mutex<Instant>>,
}

impl Freshness {
    /// A table for watches of the collections at `paths`.
    pub fn new(paths: Vec<String>) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Freshness {
            open: paths.iter().map(|_| AtomicUsize::new(0)).collect(),
            last: paths.iter().map(|_| Mutex::new(now)).collect(),
            paths,
        })
    }

    fn index(&self, path: &str) -> Option<usize> {
        self.paths.iter().position(|p| p == path)
    }

    fn touch(&self, i: usize) {
        *self.last[i].lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// How long watch `i` has gone without a connection to the API server (zero while
    /// one is open).
    pub fn staleness(&self, i: usize) -> Duration {
        if self.open[i].load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        self.last[i]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

/// The tower layer to put under the kube client.
#[derive(Clone)]
pub struct TrackLayer(pub Arc<Freshness>);

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            table: self.0.clone(),
        }
    }
}

/// The service [`TrackLayer`] makes.
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    table: Arc<Freshness>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, ReqB, B> tower::Service<Request<ReqB>> for Track<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Unpin,
{
    type Response = Response<Tracked<B>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let watch = self.table.index(req.uri().path());
        let table = self.table.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let watch = watch.filter(|_| resp.status().is_success());
            if let Some(i) = watch {
                table.open[i].fetch_add(1, Ordering::Relaxed);
                table.touch(i);
            }
            Ok(resp.map(|inner| Tracked {
                inner,
                watch,
                table,
            }))
        })
    }
}

/// A response body that records contact for its watch while it is open.
pub struct Tracked<B> {
    inner: B,
    watch: Option<usize>,
    table: Arc<Freshness>,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(_))), Some(i)) = (&polled, self.watch) {
            self.table.touch(i);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if let Some(i) = self.watch {
            self.table.touch(i);
            self.table.open[i].fetch_sub(1, Ordering::Relaxed);
        }
    }
}
