//! Sockets: the listener, the accept loop and connection lifetimes.
//!
//! The listener lives in a slot the accept loop borrows only while polling, so test code
//! can close it synchronously (clients get ECONNREFUSED as soon as
//! [`crate::Faults::refuse_connections`] returns) and put a new one bound to the same port
//! in its place.

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::handler;
use crate::state::{lock, Shared};

/// Binds a listener with `SO_REUSEADDR`, so the same port can be bound again after
/// connections through it were cut (their sockets linger in TIME_WAIT).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

pub(crate) fn spawn_accept_loop(shared: Arc<Shared>) {
    tokio::spawn(accept_loop(shared));
}

async fn accept_loop(shared: Arc<Shared>) {
    let mut changes = shared.subscribe();
    loop {
        if shared.lock().shutdown {
            return;
        }
        let accept = poll_fn(|cx| match lock(&shared.listener).as_ref() {
            Some(listener) => listener.poll_accept(cx).map(Some),
            None => Poll::Ready(None),
        });
        tokio::select! {
            accepted = accept => match accepted {
                Some(Ok((stream, _peer))) => {
                    tokio::spawn(serve_connection(shared.clone(), stream));
                }
                // Out of file descriptors and the like: let the condition pass.
                Some(Err(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                // Not listening: wait for a change (listen again, or shutdown).
                None => {
                    let _ = changes.changed().await;
                }
            },
            // Any change may have swapped the listener; poll the current one.
            _ = changes.changed() => {}
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let epoch = shared.lock().faults.connection_epoch;
    let service_shared = shared.clone();
    let service = service_fn(move |request| handler::handle(service_shared.clone(), request));
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let cut =
        shared.wait_until(|s| (s.shutdown || s.faults.connection_epoch != epoch).then_some(()));
    tokio::select! {
        // Checked first, so that nothing more is written once the cut is decided.
        biased;
        // Dropping the connection closes the socket mid-whatever, as a crash would.
        _ = cut => {}
        _ = connection => {}
    }
}

/// Closes the listening socket and cuts every open connection.
pub(crate) fn stop_listening(shared: &Shared) {
    shared.update(|s| {
        s.faults.refusing = true;
        s.faults.connection_epoch += 1;
    });
    drop(lock(&shared.listener).take());
}

/// Listens again on the server's port.
pub(crate) fn listen_again(shared: &Shared) {
    {
        let mut slot = lock(&shared.listener);
        if slot.is_none() && !shared.lock().shutdown {
            // Registering the socket needs the runtime's reactor, which synchronous test code
            // may not be inside of.
            let _runtime = shared.runtime.enter();
            let listener = bind(shared.addr).unwrap_or_else(|e| {
                panic!(
                    "keyway-fakeapi: cannot listen on {} again: {e}",
                    shared.addr
                )
            });
            *slot = Some(listener);
        }
    }
    shared.update(|s| s.faults.refusing = false);
}

/// Stops everything: the listener, connections, watch streams.
pub(crate) fn shutdown(shared: &Shared) {
    drop(lock(&shared.listener).take());
    shared.update(|s| {
        s.shutdown = true;
        s.faults.connection_epoch += 1;
    });
}
