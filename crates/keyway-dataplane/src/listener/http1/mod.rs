//! Keyway's own HTTP/1.1 server loop, for the request nearly every API client sends: a
//! `GET` or `HEAD` with no body and nothing asked of the connection.
//!
//! hyper's server is general: a state machine per connection, a task boundary between it
//! and the service, a body channel for each request. For the common request that generality
//! was most of the cost of proxying it. This loop reads a request head, runs
//! [`Gateway::handle`] on the connection's own task, and writes the response with its body,
//! then reads the next head.
//!
//! It serves only what it can serve exactly, and hands everything else to hyper: at the
//! first request it does not take, the connection (with every byte already read, that
//! request's included) goes to hyper's server for the rest of its life, as though hyper had
//! served it from that byte on. A request is taken only if it is
//!
//! - a whole, valid HTTP/1.1 head by the same parser and settings hyper uses (httparse,
//!   strict; no more fields than hyper's `max_headers`; no longer than its buffer limit);
//! - `GET` or `HEAD`;
//! - free of every field that asks something of the connection or frames a body:
//!   `Content-Length`, `Transfer-Encoding`, `Connection`, `Upgrade`, `Expect`, `TE`;
//! - and its target and every field name and value are valid for the `http` crate.
//!
//! A malformed or ambiguous request is therefore never judged here: hyper judges it,
//! byte for byte as before, which keeps the request-smuggling suite's answers unchanged.
//! HTTP/2 (prior knowledge) fails the HTTP/1.1 parse and goes to hyper the same way.
//!
//! - [`request`]: which heads are taken, and the `http::Request` built from one;
//! - [`response`]: the response written as hyper's server writes it.
//!
//! While a request is in progress the loop watches the client's side: if it closes, the
//! request is dropped (hyper's default, without half-close). Between requests it closes when
//! the connection's watchdog asks (idle, or the port is closing), as hyper's graceful
//! shutdown does.

mod request;
mod response;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http::Method;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::conn::Control;
use super::rewind::Rewind;
use crate::request::{ConnInfo, Gateway};
use request::{parse, Parse, Scratch};
use response::respond;

/// The read buffer's size, and the least room left in it before a read.
const READ_BUF: usize = 8192;
const MIN_READ: usize = 1024;

/// What hyper's server is configured to accept, so that this loop takes nothing it would
/// not.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// hyper's `max_headers`.
    pub max_headers: usize,
    /// hyper's `max_buf_size`: the longest head.
    pub max_head: usize,
}

/// How the loop ended.
pub(crate) enum Ended<IO> {
    /// The connection is done.
    Closed,
    /// hyper serves the rest, starting with these bytes.
    Handoff(Rewind<IO>),
}

/// Serves requests on `io` until the connection ends or a request goes to hyper.
pub(crate) async fn serve<IO>(
    mut io: IO,
    gateway: &Gateway,
    info: &ConnInfo,
    control: &Arc<Control>,
    limits: Limits,
) -> Ended<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_BUF);
    let mut scratch = Scratch::default();
    let mut out = Vec::with_capacity(4096);
    loop {
        // 1. A request head, unless the connection is asked to close first.
        let req = loop {
            if !buf.is_empty() {
                match parse(&mut buf, limits, &mut scratch) {
                    Parse::Request(req) => break req,
                    Parse::Partial => {}
                    Parse::Defer(head) => return Ended::Handoff(rewind(head, buf, io)),
                }
            }
            reserve(&mut buf);
            let read = poll_fn(|cx| {
                if control.poll_stop(cx) {
                    return Poll::Ready(None);
                }
                poll_read_buf(Pin::new(&mut io), cx, &mut buf).map(Some)
            })
            .await;
            match read {
                Some(Ok(n)) if n > 0 => {}
                _ => return Ended::Closed,
            }
        };

        // 2. Serve it, dropping it if the client goes away meanwhile.
        let is_head = req.method() == Method::HEAD;
        let in_flight = control.begin();
        let handler = gateway.handle(info, req);
        tokio::pin!(handler);
        let resp = poll_fn(|cx| {
            if let Poll::Ready(r) = handler.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            // Only while nothing is buffered: a pipelined request waits its turn.
            if buf.is_empty() {
                reserve(&mut buf);
                match poll_read_buf(Pin::new(&mut io), cx, &mut buf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                    Poll::Ready(Ok(_)) | Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        let Some(resp) = resp else {
            return Ended::Closed;
        };

        // 3. The response.
        let keep_alive = respond(&mut io, resp, is_head, !control.is_running(), &mut out).await;
        drop(in_flight);
        if !keep_alive || !control.is_running() {
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
    }
}

fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_READ {
        buf.reserve(READ_BUF);
    }
}

fn rewind<IO>(head: Option<Bytes>, rest: BytesMut, io: IO) -> Rewind<IO> {
    let prefix = match head {
        None => rest.freeze(),
        Some(head) => {
            let mut all = BytesMut::with_capacity(head.len() + rest.len());
            all.extend_from_slice(&head);
            all.extend_from_slice(&rest);
            all.freeze()
        }
    };
    Rewind::new(prefix, io)
}
