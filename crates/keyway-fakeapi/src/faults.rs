//! Fault injection: the ways a real API server (or the network in front of it) misbehaves,
//! on demand, so tests can check that a client recovers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::resources::{self, ResourceType};
use crate::server;
use crate::state::Shared;

/// Bookmarks are sent this often unless a test says otherwise. Real servers send them about
/// once a minute; tests want to see them without waiting.
pub(crate) const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct FaultState {
    pub refusing: bool,
    /// Bumped to cut every open connection.
    pub connection_epoch: u64,
    /// Bumped to end every open watch stream cleanly.
    pub watch_epoch: u64,
    pub fail_all: Option<u16>,
    pub held_lists: HashSet<usize>,
    /// LIST requests currently held, per resource.
    pub waiting_lists: HashMap<usize, usize>,
    pub stalled_watches: HashSet<usize>,
    pub bookmark_interval: Duration,
    pub max_page: Option<usize>,
    /// Group/version pairs answered with 404.
    pub unserved: HashSet<(String, String)>,
}

impl Default for FaultState {
    fn default() -> Self {
        FaultState {
            refusing: false,
            connection_epoch: 0,
            watch_epoch: 0,
            fail_all: None,
            held_lists: HashSet::new(),
            waiting_lists: HashMap::new(),
            stalled_watches: HashSet::new(),
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            max_page: None,
            unserved: HashSet::new(),
        }
    }
}

impl FaultState {
    pub(crate) fn serves(&self, group: &str, version: &str) -> bool {
        !self
            .unserved
            .contains(&(group.to_string(), version.to_string()))
    }
}

/// A cheap, clonable handle for injecting faults into a running [`crate::FakeApiServer`].
///
/// Resources are named by kind, plural, singular or short name, case-insensitively
/// (`"Secret"`, `"secrets"`, `"ReferenceGrant"`); a name that matches nothing panics, so a
/// typo fails the test instead of silently injecting nothing.
#[derive(Clone)]
pub struct Faults {
    pub(crate) shared: Arc<Shared>,
}

fn named(kind: &str) -> Vec<&'static ResourceType> {
    let found = resources::by_name(kind);
    assert!(
        !found.is_empty(),
        "keyway-fakeapi: no resource is named {kind:?}"
    );
    found
}

impl Faults {
    /// `true`: close the listening socket, so new connections get ECONNREFUSED, and cut
    /// every open connection (in-flight requests and watch streams end without a response
    /// or a clean end). `false`: listen again on the same port and serve as before; the
    /// stored objects and history are untouched, as after an API server restart with etcd intact.
    pub fn refuse_connections(&self, refuse: bool) {
        if refuse {
            server::stop_listening(&self.shared);
        } else {
            server::listen_again(&self.shared);
        }
    }

    /// Answer every request (including watches) with this HTTP status and a matching
    /// `Status` object — 429 `TooManyRequests` with `Retry-After: 1`, 500 `InternalError`,
    /// 503 `ServiceUnavailable`, ... — or serve normally again with `None`.
    pub fn fail_all(&self, status: Option<u16>) {
        self.shared.update(|s| s.faults.fail_all = status);
    }

    /// Hold LIST requests for `kind` until released: they wait (before reading anything)
    /// and then answer from the state at release time. Watches are unaffected.
    pub fn hold_list(&self, kind: &str, hold: bool) {
        let resources = named(kind);
        self.shared.update(|s| {
            for rt in resources {
                if hold {
                    s.faults.held_lists.insert(rt.index());
                } else {
                    s.faults.held_lists.remove(&rt.index());
                }
            }
        });
    }

    /// How many LIST requests for `kind` are currently being held by [`Faults::hold_list`].
    pub fn held_lists(&self, kind: &str) -> usize {
        let resources = named(kind);
        let state = self.shared.lock();
        resources
            .iter()
            .map(|rt| {
                state
                    .faults
                    .waiting_lists
                    .get(&rt.index())
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    }

    /// Stall open watch streams of `kind`: they stop delivering anything (events,
    /// bookmarks, and the close at `timeoutSeconds`) while the connection stays open, like a
    /// hung server. Releasing resumes delivery of everything that happened meanwhile.
    pub fn stall_watches(&self, kind: &str, stall: bool) {
        let resources = named(kind);
        self.shared.update(|s| {
            for rt in resources {
                if stall {
                    s.faults.stalled_watches.insert(rt.index());
                } else {
                    s.faults.stalled_watches.remove(&rt.index());
                }
            }
        });
    }

    /// Drop all retained history, like an etcd compaction at the current revision: a watch
    /// resuming from any older resourceVersion gets an in-stream 410 `Expired` ERROR event,
    /// and continue tokens from before now answer 410. Open streams keep running.
    pub fn compact(&self) {
        self.shared.update(|s| s.store.compact());
    }

    /// End every open watch stream cleanly, as `timeoutSeconds` would (with a last
    /// BOOKMARK when the client allowed bookmarks).
    pub fn close_watches(&self) {
        self.shared.update(|s| s.faults.watch_epoch += 1);
    }

    /// How often open watches that allow bookmarks get a BOOKMARK (default 1 s).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        self.shared
            .update(|s| s.faults.bookmark_interval = interval);
    }

    /// How many events each resource keeps for resuming watches and reading older revisions
    /// (default 1000). Lowering it drops the oldest events at once.
    pub fn set_history_limit(&self, limit: usize) {
        self.shared.update(|s| s.store.set_history_limit(limit));
    }

    /// Cap the items in one LIST page regardless of the client's `limit`, as a real server
    /// may (it returns fewer items than asked, with a continue token). `None` removes the cap.
    pub fn set_max_page(&self, max: Option<usize>) {
        self.shared.update(|s| s.faults.max_page = max);
    }

    /// Stop (or resume) serving a group/version, like a cluster without that CRD version:
    /// every path under it, and its discovery documents, answer 404. Use `""` for the core
    /// group. Stored objects are kept and reappear when the version is served again.
    pub fn serve_version(&self, group: &str, version: &str, serve: bool) {
        let key = (group.to_string(), version.to_string());
        self.shared.update(|s| {
            if serve {
                s.faults.unserved.remove(&key);
            } else {
                s.faults.unserved.insert(key);
            }
        });
    }
}
