//! An upstream that records requests exactly as they arrive.
//!
//! It reads HTTP/1.x requests off the socket itself: the head up to the blank line, then
//! the body as its framing says (`Transfer-Encoding: chunked`, else `Content-Length`, else
//! none), keeping the raw bytes of every part. Nothing is normalised, joined, sorted or
//! decoded on the way, so a test sees the request-target form, header order and case,
//! duplicate lines, and the chunk sizes Keyway chose.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as it arrived.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    /// The request line without CRLF: `GET /x?y HTTP/1.1`.
    pub request_line: String,
    /// Header lines in arrival order, name as sent (case kept), value as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole head, request line to blank line, byte for byte.
    pub head: Vec<u8>,
    /// The body as framed on the wire (chunk sizes, extensions and trailers included).
    pub body_framed: Vec<u8>,
    /// The body's content (chunked framing removed).
    pub body: Vec<u8>,
    /// Which connection it came on (0, 1, ... in accept order).
    pub connection: usize,
}

impl Captured {
    /// The request-target: what follows the method.
    pub fn target(&self) -> &str {
        self.request_line.split(' ').nth(1).unwrap_or("")
    }

    /// The protocol version of the request line.
    pub fn version(&self) -> &str {
        self.request_line.rsplit(' ').next().unwrap_or("")
    }

    /// Values of every header line with this name (case-insensitive), as text.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The single value of a header; panics if it came more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.header_all(name);
        assert!(all.len() <= 1, "{name} came {} times: {all:?}", all.len());
        all.into_iter().next()
    }
}

/// What the upstream answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Wait this long before answering (after the whole request was read).
    pub delay: Duration,
    /// The raw response, status line to body.
    pub bytes: Vec<u8>,
    /// Close the connection after answering.
    pub close: bool,
    /// Write the response this many bytes at a time, pausing between writes so each
    /// arrives on its own (0: in one write).
    pub pieces: usize,
}

impl Reply {
    /// `200 OK` with body `ok`.
    pub fn ok() -> Reply {
        Reply::raw("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
    }

    /// These bytes, as they are.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            delay: Duration::ZERO,
            bytes: bytes.into(),
            close: false,
            pieces: 0,
        }
    }

    /// Closes the connection after answering.
    pub fn closing(mut self) -> Reply {
        self.close = true;
        self
    }

    /// Writes the response `size` bytes at a time, 2 ms apart.
    pub fn in_pieces(mut self, size: usize) -> Reply {
        self.pieces = size;
        self
    }

    /// Waits before answering.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Responder = Arc<dyn Fn(&Captured) -> Reply + Send + Sync>;

/// A running recording upstream; it stops when dropped.
pub struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Captured>>>,
    connections: Arc<Mutex<usize>>,
    closed: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    /// Answers every request with [`Reply::ok`].
    pub async fn start() -> RawUpstream {
        Self::with(|_| Reply::ok()).await
    }

    /// Answers each request with what `respond` returns for it.
    pub async fn with(respond: impl Fn(&Captured) -> Reply + Send + Sync + 'static) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let seen: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let connections: Arc<Mutex<usize>> = Arc::default();
        let closed: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let respond: Responder = Arc::new(respond);
        let task = tokio::spawn({
            let seen = seen.clone();
            let connections = connections.clone();
            let closed = closed.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let id = {
                        let mut c = connections.lock().unwrap();
                        *c += 1;
                        *c - 1
                    };
                    let (seen, respond, closed) = (seen.clone(), respond.clone(), closed.clone());
                    tokio::spawn(async move {
                        serve(stream, id, seen, respond).await;
                        closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    });
                }
            }
        });
        RawUpstream {
            addr,
            seen,
            connections,
            closed,
            task,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Captured> {
        self.seen.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// Connections that ended (closed by the peer, or after a reply that closes).
    pub fn closed(&self) -> usize {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The only request received; panics if there were none or several.
    pub fn only(&self) -> Captured {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected one request upstream, got {all:#?}");
        all.into_iter().next().unwrap()
    }

    /// Waits (up to 5 s) until `n` requests have arrived, and returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Captured> {
        for _ in 0..500 {
            let all = self.requests();
            if all.len() >= n {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} requests upstream, got {:#?}", self.requests());
    }
}

async fn serve(
    mut stream: TcpStream,
    connection: usize,
    seen: Arc<Mutex<Vec<Captured>>>,
    respond: Responder,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(mut req) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        req.connection = connection;
        let reply = respond(&req);
        seen.lock().unwrap().push(req);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        let piece = if reply.pieces == 0 {
            reply.bytes.len().max(1)
        } else {
            reply.pieces
        };
        for (i, part) in reply.bytes.chunks(piece).enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if stream.write_all(part).await.is_err() {
                return;
            }
        }
        if reply.close {
            return;
        }
    }
}

/// Reads until `buf` holds `n` bytes; `false` on EOF or error.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    while buf.len() < n {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    true
}

/// Reads until `buf` contains `pat`; returns the end of its first occurrence.
async fn fill_until(stream: &mut TcpStream, buf: &mut Vec<u8>, pat: &[u8]) -> Option<usize> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(i) = buf.windows(pat.len()).position(|w| w == pat) {
            return Some(i + pat.len());
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Captured> {
    let end = fill_until(stream, buf, b"\r\n\r\n").await?;
    let head: Vec<u8> = buf.drain(..end).collect();
    let text = String::from_utf8_lossy(&head[..head.len() - 4]).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("").to_string();
    let headers: Vec<(String, Vec<u8>)> = lines
        .map(|l| match l.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim().as_bytes().to_vec()),
            None => (l.to_string(), Vec::new()),
        })
        .collect();
    let mut req = Captured {
        request_line,
        headers,
        head,
        ..Default::default()
    };
    let chunked = req
        .header_all("transfer-encoding")
        .last()
        .is_some_and(|te| te.to_ascii_lowercase().trim_end().ends_with("chunked"));
    if chunked {
        loop {
            let line_end = fill_until(stream, buf, b"\r\n").await?;
            let line: Vec<u8> = buf.drain(..line_end).collect();
            req.body_framed.extend_from_slice(&line);
            let size_text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size_hex = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16).ok()?;
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    let e = fill_until(stream, buf, b"\r\n").await?;
                    let t: Vec<u8> = buf.drain(..e).collect();
                    req.body_framed.extend_from_slice(&t);
                    if t == b"\r\n" {
                        return Some(req);
                    }
                }
            }
            if !fill(stream, buf, size + 2).await {
                return None;
            }
            let data: Vec<u8> = buf.drain(..size + 2).collect();
            req.body_framed.extend_from_slice(&data);
            req.body.extend_from_slice(&data[..size]);
        }
    }
    if let Some(len) = req
        .header_all("content-length")
        .first()
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        if !fill(stream, buf, len).await {
            return None;
        }
        let data: Vec<u8> = buf.drain(..len).collect();
        req.body_framed.extend_from_slice(&data);
        req.body = data;
    }
    Some(req)
}
