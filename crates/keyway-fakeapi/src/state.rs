//! The state every task shares, and how tasks wait for it to change.
//!
//! Everything mutable sits behind one `std::sync::Mutex` (held only for short, non-async
//! sections). Every change — a write, a fault toggle, shutdown — bumps a
//! `tokio::sync::watch` counter; a task that waits for some condition subscribes, checks
//! the condition under the lock, and sleeps until the next bump. Nothing polls on a timer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Authorizer;
use crate::faults::FaultState;
use crate::log::RequestLog;
use crate::store::Store;

pub(crate) struct State {
    pub store: Store,
    pub faults: FaultState,
    /// Set when the [`crate::FakeApiServer`] is dropped: every task winds down.
    pub shutdown: bool,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    pub log: RequestLog,
    /// The listening socket; `None` while connections are refused (or after shutdown).
    pub listener: Mutex<Option<TcpListener>>,
    pub addr: SocketAddr,
    /// The runtime the server was started on, for re-binding from synchronous test code.
    pub runtime: tokio::runtime::Handle,
    pub authorizer: Mutex<Option<Arc<dyn Authorizer>>>,
}

/// Locks a mutex, ignoring poisoning: a test that panicked while holding it has already
/// failed, and the others should still see the state.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(listener: TcpListener, addr: SocketAddr) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(State {
                store: Store::new(),
                faults: FaultState::default(),
                shutdown: false,
            }),
            changes: watch::channel(0).0,
            log: RequestLog::default(),
            listener: Mutex::new(Some(listener)),
            addr,
            runtime: tokio::runtime::Handle::current(),
            authorizer: Mutex::new(None),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Runs `change` under the lock and wakes every waiting task.
    pub(crate) fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let out = change(&mut self.lock());
        self.notify();
        out
    }

    /// Wakes every task waiting in [`Shared::wait_until`] to re-check its condition.
    pub(crate) fn notify(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that wakes on the next change; subscribe *before* checking a condition so
    /// that a change between the check and the wait is not lost.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Waits until `check` (run under the lock after every change) returns `Some`.
    pub(crate) async fn wait_until<T>(&self, mut check: impl FnMut(&mut State) -> Option<T>) -> T {
        let mut changes = self.subscribe();
        loop {
            if let Some(out) = check(&mut self.lock()) {
                return out;
            }
            // The sender lives in `self`, so this cannot fail while we hold `&self`.
            let _ = changes.changed().await;
        }
    }
}
