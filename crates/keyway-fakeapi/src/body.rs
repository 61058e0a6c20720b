//! Response bodies: a whole JSON document, or a stream of watch-event lines.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// The body of every response the server sends.
///
/// A watch body is fed by a task through a bounded channel, so a client that stops reading
/// pushes back on its watch task instead of growing a buffer; when the connection goes away
/// hyper drops the body, the channel closes and the task notices.
pub(crate) enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Stream(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(d)) => SizeHint::with_exact(d.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

/// A JSON response with the given status code.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_typed(status, value, "application/json")
}

/// A JSON response with an explicit media type (discovery documents name their schema in it).
pub(crate) fn json_typed(
    status: StatusCode,
    value: &serde_json::Value,
    content_type: &'static str,
) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("a serde_json::Value always serializes");
    let mut response = Response::new(Body::Full(Some(Bytes::from(bytes))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A plain-text response (health endpoints answer `ok`).
pub(crate) fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::Full(Some(Bytes::from_static(text.as_bytes()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
