//! A client connection with its own upstream connection, and what the proxy does next when
//! bytes arrive on either: the same user-space work for both I/O models.

use std::os::fd::RawFd;

use crate::http::{self, KeyCheck, BUF};

pub struct Conn {
    pub client: RawFd,
    pub upstream: RawFd,
    /// The request head as it arrives, sent on from here.
    pub req: Box<[u8; BUF]>,
    pub req_len: usize,
    /// The response as it arrives, sent on from here.
    pub resp: Box<[u8; BUF]>,
    pub resp_len: usize,
}

/// What to do after a read.
pub enum Next {
    /// Read more on the same side.
    Read,
    /// Send the first `n` bytes of `req` upstream, then read the response.
    Forward(usize),
    /// Send `http::DENY` to the client, then read its next request.
    Deny,
    /// Send the first `n` bytes of `resp` to the client, then read its next request.
    Reply(usize),
}

impl Conn {
    pub fn new(client: RawFd, upstream: RawFd) -> Self {
        Conn {
            client,
            upstream,
            req: Box::new([0; BUF]),
            req_len: 0,
            resp: Box::new([0; BUF]),
            resp_len: 0,
        }
    }

    /// `n` more bytes of the request are in `req`.
    pub fn client_read(&mut self, n: usize, check: &KeyCheck) -> Next {
        self.req_len += n;
        let Some(end) = http::head_end(&self.req[..self.req_len]) else {
            assert!(self.req_len < BUF, "request head longer than {BUF} bytes");
            return Next::Read;
        };
        // Keep-alive clients wait for each answer: nothing follows the head.
        assert_eq!(end, self.req_len, "bytes after a request head");
        self.req_len = 0;
        if check.allows(&self.req[..end]) {
            Next::Forward(end)
        } else {
            Next::Deny
        }
    }

    /// `n` more bytes of the response are in `resp`.
    pub fn upstream_read(&mut self, n: usize) -> Next {
        self.resp_len += n;
        match http::response_len(&self.resp[..self.resp_len]) {
            Some(len) if len <= self.resp_len => {
                assert_eq!(len, self.resp_len, "bytes after a response");
                self.resp_len = 0;
                Next::Reply(len)
            }
            _ => {
                assert!(self.resp_len < BUF, "response longer than {BUF} bytes");
                Next::Read
            }
        }
    }

    pub fn close(&self) {
        // SAFETY: both descriptors are this connection's, closed once.
        unsafe {
            libc::close(self.client);
            libc::close(self.upstream);
        }
    }
}

/// Connections (or what an I/O model keeps with one) by index, indices reused.
pub struct Conns<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Conns<T> {
    fn default() -> Self {
        Conns {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Conns<T> {
    pub fn insert(&mut self, c: T) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(c);
                i
            }
            None => {
                self.slots.push(Some(c));
                self.slots.len() - 1
            }
        }
    }

    pub fn get(&mut self, i: usize) -> Option<&mut T> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// Takes the connection out; its index is free for the next one.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        let c = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        Some(c)
    }
}
