//! The floor: the least work a keep-alive HTTP/1 proxy can do for a request, run two ways.
//!
//! Per request it reads a head from the client, checks the `api-key` field against one key,
//! writes the head unchanged to the client's own upstream connection, reads the response
//! (framed by `Content-Length`) and writes it unchanged to the client. Four socket calls, no
//! allocation, no header map, no timer, no log: what is left is the kernel's work for
//! those four calls, and the I/O model's.
//!
//! - `epoll`: non-blocking sockets, level-triggered `epoll_wait`, `recv`/`send`. The same
//!   calls Keyway (through tokio) and nginx make.
//! - `uring`: the same state machine over io_uring, set up as its authors advise for a
//!   single-threaded server: registered (fixed) descriptors, one submitting thread,
//!   completions run when the loop asks for them (`SINGLE_ISSUER`, `DEFER_TASKRUN`,
//!   `COOP_TASKRUN`), and every queued operation submitted by one `io_uring_enter` per loop.
//!
//! bench/floor.py measures both beside Keyway and nginx (CPU per request). What it is for:
//! the epoll floor bounds what any user-space work can gain, and the io_uring floor against
//! the epoll floor says what changing Keyway's I/O model would gain.
//!
//! Usage: `keyway-floor (epoll|uring) LISTEN_PORT UPSTREAM_PORT KEY` (127.0.0.1 only).
//!
//! It is an instrument, not a proxy: a head must arrive whole within 8 KiB and carry no
//! body, every send must complete in one call (both hold for the benchmark's small messages
//! on loopback; anything else panics rather than measure something else), and each client
//! gets its own upstream connection, dialled with a blocking `connect` when it is accepted.

mod conn;
mod epoll;
mod http;
mod uring;

use std::net::{TcpListener, TcpStream};
use std::os::fd::{IntoRawFd, RawFd};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, listen, upstream, key] = args.as_slice() else {
        eprintln!("usage: keyway-floor (epoll|uring) LISTEN_PORT UPSTREAM_PORT KEY");
        std::process::exit(2);
    };
    let listen: u16 = listen.parse().expect("LISTEN_PORT");
    let upstream: u16 = upstream.parse().expect("UPSTREAM_PORT");
    let check = http::KeyCheck::new(key);
    let listener = TcpListener::bind(("127.0.0.1", listen)).expect("bind");
    let dial = move || dial(upstream);
    match mode.as_str() {
        "epoll" => epoll::serve(listener, dial, &check),
        "uring" => uring::serve(listener, dial, &check),
        other => panic!("unknown mode {other:?} (epoll or uring)"),
    }
}

/// A non-blocking, `TCP_NODELAY` connection to the upstream, as both proxies keep theirs.
fn dial(port: u16) -> RawFd {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the upstream");
    s.set_nodelay(true).expect("TCP_NODELAY");
    s.set_nonblocking(true).expect("O_NONBLOCK");
    s.into_raw_fd()
}

/// `TCP_NODELAY` on an accepted client, as Keyway and nginx set it.
fn nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: a valid option pointer and length for TCP_NODELAY.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "TCP_NODELAY");
}
