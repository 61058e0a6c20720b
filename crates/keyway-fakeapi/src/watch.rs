//! WATCH: a 200 response whose chunked body is one JSON event per line,
//! `{"type": "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": {...}}`.
//!
//! Where the stream starts (`resourceVersion`, `sendInitialEvents`), per the API concepts:
//!
//! - unset or `0`: synthetic ADDED events for every object that matches now, then changes;
//! - `N`: every change after revision `N` (replayed from history), then live changes. If
//!   the history no longer reaches back to `N` the stream is a single in-stream ERROR
//!   (`410`, `Expired`, "too old resource version: N (oldest)") and ends, as a real watch
//!   cache answers. A revision from the future is waited for, then refused with a 504;
//! - `sendInitialEvents=true` (KEP-3157 streaming lists; needs `allowWatchBookmarks=true` and
//!   `resourceVersionMatch=NotOlderThan`): the current objects as ADDED, then a BOOKMARK
//!   annotated `k8s.io/initial-events-end: "true"`, then changes; `sendInitialEvents=false`
//!   with no revision starts at the current state without initial events.
//!
//! A selector watch reports an object that stops matching as DELETED (its last matching
//! state, at the new resourceVersion) and one that starts matching as ADDED, as the watch
//! cache does. With `allowWatchBookmarks=true` a BOOKMARK carrying the current revision is
//! sent every bookmark interval and when the stream ends. Streams end at `timeoutSeconds`
//! (default 1800, the real minimum request timeout).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::body::Body;
use crate::list::wait_for_revision;
use crate::params::{parse_resource_version, Query};
use crate::render::{self, Representation};
use crate::resources::ResourceType;
use crate::selectors::ObjectFilter;
use crate::state::Shared;
use crate::status::{ApiError, Cause};
use crate::store::{Event, EventType};

/// Watch timeout when the client gives none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Lines buffered between a watch task and its connection.
const CHANNEL_CAPACITY: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Start {
    /// Live changes only.
    Now,
    /// Synthetic ADDED events for the current state first (and, for a streaming list,
    /// the `initial-events-end` bookmark).
    InitialState { end_bookmark: bool },
    /// Changes after this revision.
    After(u64),
}

/// One open watch: which objects, how they are shown, and its options.
struct Spec {
    rt: &'static ResourceType,
    version: &'static str,
    repr: Representation,
    filter: ObjectFilter,
    bookmarks: bool,
    timeout: Duration,
    start: Start,
}

fn invalid_options(field: &str, message: &str) -> ApiError {
    ApiError::invalid_kind(
        "meta.k8s.io",
        "ListOptions",
        "",
        vec![Cause {
            field: field.into(),
            message: message.into(),
            reason: "FieldValueForbidden",
        }],
    )
}

/// Validates a watch request and starts its stream.
pub(crate) async fn watch(
    shared: Arc<Shared>,
    rt: &'static ResourceType,
    version: &'static str,
    namespace: Option<&str>,
    name: Option<&str>,
    query: &Query,
    repr: Representation,
) -> Result<Response<Body>, ApiError> {
    let filter = query.filter(rt, namespace, name)?;
    let bookmarks = query.flag("allowWatchBookmarks")?.unwrap_or(false);
    let send_initial_events = query.flag("sendInitialEvents")?;
    let rv_match = query.non_empty("resourceVersionMatch");
    let timeout = query.timeout()?.unwrap_or(DEFAULT_TIMEOUT);
    let rv = query
        .non_empty("resourceVersion")
        .map(parse_resource_version)
        .transpose()?
        .unwrap_or(0);

    match send_initial_events {
        Some(_) if !bookmarks => {
            return Err(invalid_options(
                "sendInitialEvents",
                "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
            ))
        }
        Some(_) if rv_match != Some("NotOlderThan") => {
            return Err(invalid_options(
                "resourceVersionMatch",
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ))
        }
        None if rv_match.is_some() => {
            return Err(invalid_options(
                "resourceVersionMatch",
                "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ))
        }
        _ => {}
    }
    let start = match (send_initial_events, rv) {
        (Some(true), _) => Start::InitialState { end_bookmark: true },
        (Some(false), 0) => Start::Now,
        (None, 0) => Start::InitialState {
            end_bookmark: false,
        },
        (_, n) => Start::After(n),
    };
    if rv > 0 {
        wait_for_revision(&shared, rv).await?;
    }

    let spec = Spec {
        rt,
        version,
        repr,
        filter,
        bookmarks,
        timeout,
        start,
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(stream(shared, spec, tx));
    let mut response = Response::new(Body::Stream(rx));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Unregisters a watch's queue when its task ends, however it ends.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.lock().store.unregister_watch(self.id);
    }
}

/// The task behind one watch response.
async fn stream(shared: Arc<Shared>, spec: Spec, tx: mpsc::Sender<Bytes>) {
    let deadline = Instant::now() + spec.timeout;
    let index = spec.rt.index();
    let mut changes = shared.subscribe();

    // Initial events and registration happen under one lock, so nothing falls between them.
    let setup = (|| {
        let mut state = shared.lock();
        let mut backlog = Vec::new();
        match spec.start {
            Start::Now => {}
            Start::InitialState { end_bookmark } => {
                for object in state.store.current(spec.rt).values() {
                    if spec.filter.matches(object) {
                        backlog.push(line(
                            "ADDED",
                            render::object(object, spec.rt, spec.version, spec.repr),
                        ));
                    }
                }
                if end_bookmark {
                    let rv = state.store.resource_version();
                    backlog.push(line(
                        "BOOKMARK",
                        render::bookmark(spec.rt, spec.version, spec.repr, rv, true),
                    ));
                }
            }
            Start::After(rv) => match state.store.events_after(spec.rt, rv) {
                Ok(events) => backlog.extend(events.iter().filter_map(|e| translate(&spec, e))),
                Err(too_old) => return Err(ApiError::too_old_resource_version(rv, too_old.oldest)),
            },
        }
        let id = state.store.register_watch(spec.rt);
        let interval = state.faults.bookmark_interval;
        Ok((
            Registration {
                shared: shared.clone(),
                id,
            },
            state.faults.watch_epoch,
            backlog,
            Instant::now() + interval,
        ))
    })();
    let (registration, watch_epoch, mut backlog, mut next_bookmark) = match setup {
        Ok(setup) => setup,
        Err(error) => {
            let _ = tx.send(line("ERROR", error.to_status())).await;
            return;
        }
    };

    loop {
        let mut lines = Vec::new();
        let mut finished = false;
        let stalled;
        {
            let mut state = shared.lock();
            if state.shutdown {
                return;
            }
            stalled = state.faults.stalled_watches.contains(&index);
            if !stalled {
                lines.append(&mut backlog);
                for event in state.store.drain_watch(registration.id) {
                    lines.extend(translate(&spec, &event));
                }
                let now = Instant::now();
                finished = state.faults.watch_epoch != watch_epoch || now >= deadline;
                if spec.bookmarks && (finished || now >= next_bookmark) {
                    let rv = state.store.resource_version();
                    lines.push(line(
                        "BOOKMARK",
                        render::bookmark(spec.rt, spec.version, spec.repr, rv, false),
                    ));
                    next_bookmark = now + state.faults.bookmark_interval;
                }
            }
        }
        for chunk in lines {
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        if finished {
            return;
        }
        // A stalled stream waits for the stall to end (a change) and nothing else.
        let bookmark_at = (spec.bookmarks && !stalled).then_some(next_bookmark);
        let deadline_at = (!stalled).then_some(deadline);
        tokio::select! {
            _ = changes.changed() => {}
            _ = sleep_until(bookmark_at) => {}
            _ = sleep_until(deadline_at) => {}
            _ = tx.closed() => return,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a committed event looks like through this watch's filter, if anything.
fn translate(spec: &Spec, event: &Event) -> Option<Bytes> {
    let matches_now = spec.filter.matches(&event.object);
    let matched_before = event
        .prev
        .as_deref()
        .is_some_and(|p| spec.filter.matches(p));
    let render = |o: &Value| render::object(o, spec.rt, spec.version, spec.repr);
    match (event.kind, matched_before, matches_now) {
        (EventType::Added, _, true) => Some(line("ADDED", render(&event.object))),
        (EventType::Modified, true, true) => Some(line("MODIFIED", render(&event.object))),
        (EventType::Modified, false, true) => Some(line("ADDED", render(&event.object))),
        (EventType::Modified, true, false) => {
            // It left the selection: its last matching state, at this event's revision.
            let mut last = render(event.prev.as_deref().expect("matched_before implies prev"));
            last["metadata"]["resourceVersion"] = event.rv.to_string().into();
            Some(line("DELETED", last))
        }
        (EventType::Deleted, true, _) => Some(line("DELETED", render(&event.object))),
        _ => None,
    }
}

fn line(kind: &str, object: Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .expect("a serde_json::Value always serializes");
    bytes.push(b'\n');
    Bytes::from(bytes)
}
