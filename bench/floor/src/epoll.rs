//! The floor over epoll: level-triggered readiness, then `recv` and `send`.

use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};

use crate::conn::{Conn, Conns, Next};
use crate::http::{KeyCheck, DENY};

const LISTENER: u64 = u64::MAX;

pub fn serve(listener: TcpListener, dial: impl Fn() -> RawFd, check: &KeyCheck) {
    listener.set_nonblocking(true).expect("O_NONBLOCK");
    let lfd = listener.as_raw_fd();
    // SAFETY: plain system calls on descriptors this function owns; every buffer passed to
    // the kernel is a live slice of the length given.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        assert!(ep >= 0, "epoll_create1");
        add(ep, lfd, LISTENER);
        let mut conns = Conns::<Conn>::default();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        loop {
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1);
            if n < 0 {
                assert_eq!(errno(), libc::EINTR, "epoll_wait");
                continue;
            }
            for ev in &events[..n as usize] {
                if ev.u64 == LISTENER {
                    loop {
                        let fd = libc::accept4(
                            lfd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        );
                        if fd < 0 {
                            break;
                        }
                        crate::nodelay(fd);
                        let up = dial();
                        let i = conns.insert(Conn::new(fd, up)) as u64;
                        add(ep, fd, i << 1);
                        add(ep, up, (i << 1) | 1);
                    }
                    continue;
                }
                let i = (ev.u64 >> 1) as usize;
                let Some(c) = conns.get(i) else { continue };
                let from_client = ev.u64 & 1 == 0;
                let (fd, buf) = if from_client {
                    (c.client, &mut c.req[c.req_len..])
                } else {
                    (c.upstream, &mut c.resp[c.resp_len..])
                };
                let r = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if r <= 0 {
                    if r == 0 || errno() != libc::EAGAIN {
                        close(&mut conns, i);
                    }
                    continue;
                }
                let next = if from_client {
                    c.client_read(r as usize, check)
                } else {
                    c.upstream_read(r as usize)
                };
                let sent = match next {
                    Next::Read => true,
                    Next::Forward(n) => send(c.upstream, &c.req[..n]),
                    Next::Deny => send(c.client, DENY),
                    Next::Reply(n) => send(c.client, &c.resp[..n]),
                };
                if !sent {
                    close(&mut conns, i);
                }
            }
        }
    }
}

fn close(conns: &mut Conns<Conn>, i: usize) {
    if let Some(c) = conns.remove(i) {
        c.close(); // which also takes both descriptors out of the epoll set
    }
}

unsafe fn add(ep: RawFd, fd: RawFd, token: u64) {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    assert_eq!(
        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev),
        0,
        "epoll_ctl"
    );
}

/// Whether the whole buffer went out; false if the peer is gone.
unsafe fn send(fd: RawFd, b: &[u8]) -> bool {
    let r = libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL);
    if r < 0 {
        return false;
    }
    assert_eq!(
        r as usize,
        b.len(),
        "a short send: the floor measures one call per message"
    );
    true
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
