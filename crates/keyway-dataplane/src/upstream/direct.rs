//! The I/O of the [`h1`] path: one connection carrying one exchange at a time, and the
//! response body read from it as the client's connection asks for more.
//!
//! Everything runs in the task of the request (head) or of the client's connection (body):
//! no task per upstream connection, no channel between tasks.

use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::fields::RawFields;
use super::h1::{self, Chunked, Framing, Head, Malformed, Parsed, Step};
use super::Home;
use crate::body::{Body, BodyError};
use crate::headers::AddedFields;

/// Room kept free in the read buffer before each read.
const READ_ROOM: usize = 8 * 1024;

/// An upstream connection, the bytes read from it but not yet used, and the timer of its
/// exchanges.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// The deadline of the exchange in progress. One timer serves the connection's life:
    /// each exchange moves it later, which tokio does with a compare-and-swap, leaving the
    /// entry where it is in the timer wheel (the wheel moves it only when the old deadline
    /// comes). A timer per exchange cost a registration and a removal, each under the time
    /// driver's lock: about 500 instructions of a proxied request, against 240 now.
    ///
    /// While the connection is idle in the pool the timer stays registered with the waker
    /// of the last request's task: at worst that task is woken once for nothing, or its
    /// memory outlives it until the deadline (the response timeout) or the next exchange.
    timer: Pin<Box<Sleep>>,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum ExchangeError {
    /// The connection failed or ended before a byte of the response arrived: on a pooled
    /// connection, the upstream closed it while it was idle (or just as the request came).
    NothingReceived(Option<io::Error>),
    /// The connection failed or ended inside the response head.
    Cut(Option<io::Error>),
    /// The deadline passed before the response head was read.
    Late,
    /// The response head was malformed or too long.
    Malformed(Malformed),
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::NothingReceived(None) => {
                f.write_str("connection closed before a response")
            }
            ExchangeError::NothingReceived(Some(e)) => {
                write!(f, "connection failed before a response: {e}")
            }
            ExchangeError::Cut(None) => f.write_str("connection closed inside the response head"),
            ExchangeError::Cut(Some(e)) => {
                write!(f, "connection failed inside the response head: {e}")
            }
            ExchangeError::Malformed(m) => m.fmt(f),
            ExchangeError::Late => f.write_str("no response head by the deadline"),
        }
    }
}

impl Conn {
    /// A connection whose first exchange is due by `deadline` (it is the timer's first
    /// setting; each exchange sets its own).
    pub(crate) fn new(stream: TcpStream, deadline: Instant) -> Self {
        Conn {
            stream,
            buf: BytesMut::with_capacity(READ_ROOM),
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Whether an idle connection can carry a request: still open, nothing unread. Costs a
    /// system call only when the runtime saw the socket become readable since its last
    /// read (a short read clears that), which an idle connection never should.
    pub(crate) fn is_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => matches!(
                self.stream.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            ),
        }
    }

    /// Sends the request head and reads the final response head, unless `deadline` passes
    /// first. The body is left in the buffer and on the socket for [`DirectBody`].
    pub(crate) async fn exchange<B>(
        &mut self,
        req: &Request<B>,
        added: Option<&AddedFields>,
        deadline: Instant,
    ) -> Result<Head, ExchangeError> {
        let Conn { stream, buf, timer } = self;
        timer.as_mut().reset(deadline);
        let exchange = exchange(stream, buf, req, added);
        tokio::pin!(exchange);
        // As `tokio::time::timeout` does: a response that is ready wins over the deadline.
        poll_fn(|cx| match exchange.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => timer.as_mut().poll(cx).map(|()| Err(ExchangeError::Late)),
        })
        .await
    }

    /// The body bytes already read, if they are the whole body of `len` bytes.
    pub(crate) fn take_whole(&mut self, len: u64) -> Option<Bytes> {
        (self.buf.len() as u64 >= len).then(|| self.buf.split_to(len as usize).freeze())
    }

    /// Whether bytes follow the response: the connection is then out of step.
    pub(crate) fn has_unread(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// [`Conn::exchange`] without its deadline.
async fn exchange<B>(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    req: &Request<B>,
    added: Option<&AddedFields>,
) -> Result<Head, ExchangeError> {
    debug_assert!(buf.is_empty(), "a pooled connection has nothing unread");
    buf.clear();
    h1::encode_head(req, added, buf);
    let sent = stream.write_all(buf).await;
    buf.clear();
    sent.map_err(|e| ExchangeError::NothingReceived(Some(e)))?;
    let mut received = false;
    loop {
        if !buf.is_empty() {
            match h1::parse_head(buf, req.method()).map_err(ExchangeError::Malformed)? {
                Parsed::Final(head, len) => {
                    bytes::Buf::advance(buf, len);
                    return Ok(head);
                }
                Parsed::Informational(len) => {
                    bytes::Buf::advance(buf, len);
                    continue;
                }
                Parsed::Partial if buf.len() > h1::MAX_HEAD => {
                    return Err(ExchangeError::Malformed(Malformed(
                        "response head too long",
                    )))
                }
                Parsed::Partial => {}
            }
        }
        buf.reserve(READ_ROOM);
        let ended = |e| {
            if received {
                ExchangeError::Cut(e)
            } else {
                ExchangeError::NothingReceived(e)
            }
        };
        match stream.read_buf(buf).await {
            Ok(0) => return Err(ended(None)),
            Ok(_) => received = true,
            Err(e) => return Err(ended(Some(e))),
        }
    }
}

/// How far the body is read.
enum State {
    /// This many bytes to go (some may be in the buffer).
    Length(u64),
    Chunked(Chunked),
    /// Up to the end of the connection.
    Close,
    /// Read to its end, the connection released: these bytes are all that is left.
    Whole(Option<Bytes>),
}

/// An upstream response read by Keyway's own HTTP/1 reader: its body, read straight from
/// its connection, and its end-to-end fields while they are still bytes (see
/// [`super::fields`]).
///
/// The connection goes back to the pool once the body has been read to its end (if the
/// response allows reuse); a body dropped half-read closes it. The common small response
/// is whole by the time its head is read: its connection is released at once.
pub struct DirectBody {
    /// `None` once the body has been read (or failed).
    conn: Option<Conn>,
    state: State,
    home: Option<Home>,
    fields: Option<RawFields>,
}

impl fmt::Debug for DirectBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirectBody")
    }
}

/// Where the connection of a finished exchange goes: back to the pool if the response
/// allows reuse and nothing follows it, else closed.
pub(crate) fn release(conn: Conn, home: Option<Home>) {
    if let Some(home) = home {
        if !conn.has_unread() {
            home.give_back(conn);
        }
    }
}

impl DirectBody {
    /// The response whose head `conn` has just read, with `framing` and `fields`.
    pub(crate) fn start(
        mut conn: Conn,
        framing: Framing,
        home: Option<Home>,
        fields: Option<RawFields>,
    ) -> Self {
        let whole = match framing {
            Framing::Empty => Some(None),
            Framing::Length(len) => conn.take_whole(len).map(|b| (len > 0).then_some(b)),
            Framing::Chunked | Framing::Close => None,
        };
        if let Some(bytes) = whole {
            release(conn, home);
            return DirectBody {
                conn: None,
                state: State::Whole(bytes),
                home: None,
                fields,
            };
        }
        let state = match framing {
            Framing::Length(len) => State::Length(len),
            Framing::Chunked => State::Chunked(Chunked::Size),
            _ => State::Close,
        };
        DirectBody {
            conn: Some(conn),
            state,
            home,
            fields,
        }
    }

    /// The response body: a body that arrived whole, with fields already in a map, needs
    /// no box and no connection, so it becomes a plain [`Body::Full`].
    pub(crate) fn into_body(self) -> Body {
        match self {
            DirectBody {
                conn: None,
                state: State::Whole(bytes),
                fields: None,
                ..
            } => Body::Full(bytes),
            body => Body::Direct(Box::new(body)),
        }
    }

    /// A whole body with no connection behind it, for tests.
    #[cfg(test)]
    pub(crate) fn whole(bytes: Option<Bytes>, fields: Option<RawFields>) -> Self {
        DirectBody {
            conn: None,
            state: State::Whole(bytes),
            home: None,
            fields,
        }
    }

    /// The response's fields, while they are bytes.
    pub fn fields(&self) -> Option<&RawFields> {
        self.fields.as_ref()
    }

    /// Takes the response's fields, to put them into a map.
    pub fn take_fields(&mut self) -> Option<RawFields> {
        self.fields.take()
    }
}

fn error(e: impl Into<BodyError>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    Poll::Ready(Some(Err(e.into())))
}

impl http_body::Body for DirectBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let DirectBody {
            conn, state, home, ..
        } = self.get_mut();
        loop {
            let Some(c) = conn.as_mut() else {
                return Poll::Ready(match state {
                    State::Whole(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
                    _ => None,
                });
            };
            // What the buffer already holds.
            match state {
                State::Length(0) => {
                    release(conn.take().expect("checked above"), home.take());
                    return Poll::Ready(None);
                }
                State::Length(left) if !c.buf.is_empty() => {
                    let take = (*left).min(c.buf.len() as u64);
                    let data = c.buf.split_to(take as usize).freeze();
                    *left -= take;
                    if *left == 0 {
                        release(conn.take().expect("checked above"), home.take());
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Length(_) => {}
                State::Chunked(chunked) => match chunked.step(&mut c.buf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::End(trailers)) => {
                        release(conn.take().expect("checked above"), home.take());
                        return Poll::Ready(
                            (!trailers.is_empty()).then(|| Ok(Frame::trailers(trailers))),
                        );
                    }
                    Ok(Step::More) => {}
                    Err(m) => {
                        *conn = None;
                        return error(m);
                    }
                },
                State::Close if !c.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(c.buf.split().freeze()))));
                }
                State::Close => {}
                State::Whole(_) => unreachable!("a whole body has no connection"),
            }
            // Then the socket.
            if c.buf.capacity() - c.buf.len() < READ_ROOM / 4 {
                c.buf.reserve(READ_ROOM);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut c.stream), cx, &mut c.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    *conn = None;
                    if matches!(state, State::Close) {
                        return Poll::Ready(None);
                    }
                    return error(Malformed("connection closed before the end of the body"));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    *conn = None;
                    return error(e);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() && !matches!(self.state, State::Whole(Some(_)))
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.conn, &self.state) {
            (None, State::Whole(Some(b))) => SizeHint::with_exact(b.len() as u64),
            (None, _) => SizeHint::with_exact(0),
            (Some(_), State::Length(left)) => SizeHint::with_exact(*left),
            _ => SizeHint::default(),
        }
    }
}
