//! The floor over io_uring: the same state machine, each read and write an operation on a
//! registered descriptor, all of a loop's operations submitted by one `io_uring_enter`
//! that also waits for the next completion.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};

use crate::conn::{Conn, Conns, Next};
use crate::http::{KeyCheck, BUF, DENY};

/// Registered descriptor slots: a connection at index i has 2i (client) and 2i + 1.
const FILES: u32 = 8192;

/// The operation a completion belongs to: the low two bits of its user data. The next 30
/// are the connection's index and the high 32 its generation, so that a completion for a
/// connection closed meanwhile never reaches the one that took its index.
const ACCEPT: u64 = 0;
const RECV_CLIENT: u64 = 1;
const RECV_UPSTREAM: u64 = 2;
const SEND: u64 = 3;

struct Slot {
    conn: Conn,
    generation: u32,
    /// Operations submitted and not completed: the buffers stay until this is 0.
    in_flight: u32,
    /// The length of the send in flight (at most one at a time).
    sending: usize,
    closing: bool,
}

pub fn serve(listener: TcpListener, dial: impl Fn() -> RawFd, check: &KeyCheck) {
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(4096)
        .expect("io_uring (kernel 6.1 or later)");
    ring.submitter()
        .register_files_sparse(FILES)
        .expect("register files");
    let lfd = listener.as_raw_fd();
    let accept =
        || opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut()).build();
    let mut conns = Conns::<Slot>::default();
    let mut generation = 0u32;
    let mut queue: Vec<squeue::Entry> = vec![accept().user_data(ACCEPT)];
    let mut done: Vec<(u64, i32)> = Vec::with_capacity(1024);
    loop {
        {
            let mut sq = ring.submission();
            for e in queue.drain(..) {
                // SAFETY: every buffer an entry names lives in a `Slot` that stays until
                // its operations have completed (`in_flight`), or is the static DENY.
                unsafe { sq.push(&e).expect("submission queue full") };
            }
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => panic!("io_uring_enter: {e}"),
        }
        done.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for (data, res) in done.drain(..) {
            let op = data & 3;
            if op == ACCEPT {
                queue.push(accept().user_data(ACCEPT));
                if res < 0 {
                    continue;
                }
                crate::nodelay(res);
                let up = dial();
                generation = generation.wrapping_add(1);
                let i = conns.insert(Slot {
                    conn: Conn::new(res, up),
                    generation,
                    in_flight: 0,
                    sending: 0,
                    closing: false,
                });
                assert!(
                    2 * (i as u32) + 1 < FILES,
                    "more than {} connections",
                    FILES / 2
                );
                ring.submitter()
                    .register_files_update(2 * i as u32, &[res, up])
                    .expect("register");
                let s = conns.get(i).expect("just inserted");
                recv_client(&mut queue, s, i, 0);
                continue;
            }
            let i = ((data >> 2) & 0x3fff_ffff) as usize;
            let Some(s) = conns.get(i).filter(|s| s.generation == (data >> 32) as u32) else {
                continue;
            };
            s.in_flight -= 1;
            let next = match op {
                RECV_CLIENT if res > 0 && !s.closing => s.conn.client_read(res as usize, check),
                RECV_UPSTREAM if res > 0 && !s.closing => s.conn.upstream_read(res as usize),
                SEND if res >= 0 => {
                    assert_eq!(
                        res as usize, s.sending,
                        "a short send: the floor measures one call per message"
                    );
                    Next::Read
                }
                _ => {
                    s.closing = true;
                    Next::Read
                }
            };
            match next {
                Next::Read if s.closing => {}
                Next::Read if op == SEND => {}
                Next::Read if op == RECV_CLIENT => recv_client(&mut queue, s, i, s.conn.req_len),
                Next::Read => recv_upstream(&mut queue, s, i, s.conn.resp_len),
                Next::Forward(n) => {
                    send(&mut queue, s, i, 2 * i as u32 + 1, s.conn.req.as_ptr(), n);
                    recv_upstream(&mut queue, s, i, 0);
                }
                Next::Deny => {
                    send(&mut queue, s, i, 2 * i as u32, DENY.as_ptr(), DENY.len());
                    recv_client(&mut queue, s, i, 0);
                }
                Next::Reply(n) => {
                    send(&mut queue, s, i, 2 * i as u32, s.conn.resp.as_ptr(), n);
                    recv_client(&mut queue, s, i, 0);
                }
            }
            if s.closing && s.in_flight == 0 {
                let s = conns.remove(i).expect("present");
                ring.submitter()
                    .register_files_update(2 * i as u32, &[-1, -1])
                    .expect("unregister");
                s.conn.close();
            }
        }
    }
}

fn user_data(s: &Slot, i: usize, op: u64) -> u64 {
    (u64::from(s.generation) << 32) | ((i as u64) << 2) | op
}

fn recv_client(queue: &mut Vec<squeue::Entry>, s: &mut Slot, i: usize, at: usize) {
    // SAFETY: `at` is within the buffer (the reader asserts it stays below BUF).
    let buf = unsafe { s.conn.req.as_mut_ptr().add(at) };
    let e = opcode::Recv::new(types::Fixed(2 * i as u32), buf, (BUF - at) as u32).build();
    queue.push(e.user_data(user_data(s, i, RECV_CLIENT)));
    s.in_flight += 1;
}

fn recv_upstream(queue: &mut Vec<squeue::Entry>, s: &mut Slot, i: usize, at: usize) {
    // SAFETY: as in `recv_client`.
    let buf = unsafe { s.conn.resp.as_mut_ptr().add(at) };
    let e = opcode::Recv::new(types::Fixed(2 * i as u32 + 1), buf, (BUF - at) as u32).build();
    queue.push(e.user_data(user_data(s, i, RECV_UPSTREAM)));
    s.in_flight += 1;
}

fn send(
    queue: &mut Vec<squeue::Entry>,
    s: &mut Slot,
    i: usize,
    file: u32,
    buf: *const u8,
    n: usize,
) {
    let e = opcode::Send::new(types::Fixed(file), buf, n as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build();
    queue.push(e.user_data(user_data(s, i, SEND)));
    s.sending = n;
    s.in_flight += 1;
}
