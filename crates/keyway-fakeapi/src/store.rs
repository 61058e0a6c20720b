//! Objects, their change history and the resourceVersion counter: the fake's etcd.
//!
//! Like etcd there is one revision counter for everything, bumped by every write, and every
//! write becomes an event. Each resource keeps a bounded history of its events, which serves
//! two purposes:
//!
//! - watches that resume from a `resourceVersion` replay the events after it;
//! - reads at an older revision (continue tokens, `resourceVersionMatch=Exact`) are answered
//!   by undoing newer events from the current state, the way an MVCC store keeps old
//!   revisions readable until compaction.
//!
//! Once an event falls out of the history (the bound, or [`Store::compact`]), revisions before
//! it can no longer be served and the requests asking for them get 410 Gone.
//!
//! Open watches do not read the history: each registers a queue here and every event is
//! pushed to the queues of its resource as it is committed, under the same lock, so a watch
//! never misses an event and compaction never breaks an established stream (as with the
//! real watch cache, which dispatches to its watchers rather than re-reading storage).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use crate::resources::{ResourceType, RESOURCES};

/// Where an object lives within its resource: namespace (empty when cluster-scoped) and name.
/// The derived order is the order of LIST results.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub(crate) fn new(namespace: Option<&str>, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.unwrap_or_default().to_string(),
            name: name.to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One committed change. `object` is the state after the change (for a deletion: the last
/// state, carrying the deletion's resourceVersion, as the real server reports it); `prev` is
/// the state before, kept so that selector watches can tell an object that stopped matching,
/// and so that reads at older revisions can undo the change.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub key: ObjectKey,
    pub object: Arc<Value>,
    pub prev: Option<Arc<Value>>,
}

/// The objects of one resource as of some revision.
pub(crate) type Snapshot = BTreeMap<ObjectKey, Arc<Value>>;

/// A revision that compaction has made unavailable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TooOld {
    /// The oldest revision still available; anything before it is gone.
    pub oldest: u64,
}

#[derive(Default)]
struct ResourceStore {
    objects: Snapshot,
    history: VecDeque<Event>,
    /// Events at or below this revision may have been dropped from `history`.
    compacted_through: u64,
}

/// The queue of an open watch: events committed since it was registered, not yet delivered.
pub(crate) struct WatchQueue {
    pub resource: usize,
    pub pending: VecDeque<Event>,
}

pub(crate) struct Store {
    rv: u64,
    history_limit: usize,
    resources: Vec<ResourceStore>,
    watches: HashMap<u64, WatchQueue>,
    next_watch_id: u64,
}

/// Events kept per resource unless a test says otherwise.
pub(crate) const DEFAULT_HISTORY_LIMIT: usize = 1000;

impl Store {
    pub(crate) fn new() -> Self {
        Store {
            rv: 1,
            history_limit: DEFAULT_HISTORY_LIMIT,
            resources: RESOURCES.iter().map(|_| ResourceStore::default()).collect(),
            watches: HashMap::new(),
            next_watch_id: 0,
        }
    }

    /// The current revision: the resourceVersion of the latest write.
    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    pub(crate) fn get(&self, rt: &'static ResourceType, key: &ObjectKey) -> Option<Arc<Value>> {
        self.resources[rt.index()].objects.get(key).cloned()
    }

    /// The current objects of a resource.
    pub(crate) fn current(&self, rt: &'static ResourceType) -> &Snapshot {
        &self.resources[rt.index()].objects
    }

    /// Stores `object` under `key` at a new revision, which is written into its
    /// `metadata.resourceVersion`. Emits ADDED or MODIFIED.
    pub(crate) fn put(
        &mut self,
        rt: &'static ResourceType,
        key: ObjectKey,
        mut object: Value,
    ) -> Arc<Value> {
        self.rv += 1;
        set_resource_version(&mut object, self.rv);
        let object = Arc::new(object);
        let prev = self.resources[rt.index()]
            .objects
            .insert(key.clone(), object.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(
            rt,
            Event {
                rv: self.rv,
                kind,
                key,
                object: object.clone(),
                prev,
            },
        );
        object
    }

    /// Removes the object under `key` at a new revision and emits DELETED. The event carries
    /// `last` (or the stored object) stamped with the deletion's resourceVersion. Returns
    /// that object, or `None` when there was nothing to remove.
    pub(crate) fn remove(
        &mut self,
        rt: &'static ResourceType,
        key: &ObjectKey,
        last: Option<Value>,
    ) -> Option<Arc<Value>> {
        let prev = self.resources[rt.index()].objects.remove(key)?;
        self.rv += 1;
        let mut object = last.unwrap_or_else(|| (*prev).clone());
        set_resource_version(&mut object, self.rv);
        let object = Arc::new(object);
        self.record(
            rt,
            Event {
                rv: self.rv,
                kind: EventType::Deleted,
                key: key.clone(),
                object: object.clone(),
                prev: Some(prev),
            },
        );
        Some(object)
    }

    fn record(&mut self, rt: &'static ResourceType, event: Event) {
        let index = rt.index();
        for queue in self.watches.values_mut() {
            if queue.resource == index {
                queue.pending.push_back(event.clone());
            }
        }
        let store = &mut self.resources[index];
        store.history.push_back(event);
        while store.history.len() > self.history_limit {
            if let Some(dropped) = store.history.pop_front() {
                store.compacted_through = store.compacted_through.max(dropped.rv);
            }
        }
    }

    /// The oldest revision of `rt` that can still be read or resumed from.
    fn oldest_available(&self, rt: &'static ResourceType) -> u64 {
        self.resources[rt.index()].compacted_through
    }

    /// The objects of `rt` as they were at revision `rv` (which must not be in the future).
    pub(crate) fn snapshot_at(
        &self,
        rt: &'static ResourceType,
        rv: u64,
    ) -> Result<Snapshot, TooOld> {
        let store = &self.resources[rt.index()];
        if rv >= self.rv {
            return Ok(store.objects.clone());
        }
        if rv < store.compacted_through {
            return Err(TooOld {
                oldest: store.compacted_through,
            });
        }
        let mut objects = store.objects.clone();
        for event in store.history.iter().rev().take_while(|e| e.rv > rv) {
            match &event.prev {
                Some(prev) => objects.insert(event.key.clone(), prev.clone()),
                None => objects.remove(&event.key),
            };
        }
        Ok(objects)
    }

    /// The events of `rt` after revision `rv`, oldest first.
    pub(crate) fn events_after(
        &self,
        rt: &'static ResourceType,
        rv: u64,
    ) -> Result<Vec<Event>, TooOld> {
        let oldest = self.oldest_available(rt);
        if rv < oldest {
            return Err(TooOld { oldest });
        }
        let history = &self.resources[rt.index()].history;
        let start = history.partition_point(|e| e.rv <= rv);
        Ok(history.range(start..).cloned().collect())
    }

    /// Drops all retained history, as an etcd compaction at the current revision would.
    pub(crate) fn compact(&mut self) {
        let rv = self.rv;
        for store in &mut self.resources {
            store.history.clear();
            store.compacted_through = rv;
        }
    }

    pub(crate) fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit;
        for store in &mut self.resources {
            while store.history.len() > limit {
                if let Some(dropped) = store.history.pop_front() {
                    store.compacted_through = store.compacted_through.max(dropped.rv);
                }
            }
        }
    }

    /// Opens a queue that receives every later event of `rt`.
    pub(crate) fn register_watch(&mut self, rt: &'static ResourceType) -> u64 {
        self.next_watch_id += 1;
        self.watches.insert(
            self.next_watch_id,
            WatchQueue {
                resource: rt.index(),
                pending: VecDeque::new(),
            },
        );
        self.next_watch_id
    }

    /// Takes the events queued for watch `id` so far.
    pub(crate) fn drain_watch(&mut self, id: u64) -> Vec<Event> {
        self.watches
            .get_mut(&id)
            .map(|q| q.pending.drain(..).collect())
            .unwrap_or_default()
    }

    pub(crate) fn unregister_watch(&mut self, id: u64) {
        self.watches.remove(&id);
    }
}

pub(crate) fn set_resource_version(object: &mut Value, rv: u64) {
    if let Some(meta) = object.as_object_mut().and_then(|o| {
        o.entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()))
            .as_object_mut()
    }) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_api_version_kind;
    use serde_json::json;

    fn secret(name: &str, v: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "ns"}, "data": {"k": v}})
    }

    #[test]
    fn snapshots_undo_later_events_until_compaction() {
        let (rt, _) = by_api_version_kind("v1", "Secret").unwrap();
        let mut store = Store::new();
        let a = ObjectKey::new(Some("ns"), "a");
        let b = ObjectKey::new(Some("ns"), "b");
        store.put(rt, a.clone(), secret("a", "1"));
        let rv1 = store.resource_version();
        store.put(rt, b.clone(), secret("b", "1"));
        store.put(rt, a.clone(), secret("a", "2"));
        store.remove(rt, &b, None);
        let at = store.snapshot_at(rt, rv1).unwrap();
        assert_eq!(at.len(), 1);
        assert_eq!(at[&a]["data"]["k"], "1");
        assert_eq!(store.events_after(rt, rv1).unwrap().len(), 3);
        store.compact();
        assert!(store.snapshot_at(rt, rv1).is_err());
        assert!(store.events_after(rt, rv1).is_err());
        assert!(store
            .events_after(rt, store.resource_version())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn history_bound_expires_old_revisions() {
        let (rt, _) = by_api_version_kind("v1", "Secret").unwrap();
        let mut store = Store::new();
        store.set_history_limit(2);
        let start = store.resource_version();
        for i in 0..4 {
            store.put(
                rt,
                ObjectKey::new(Some("ns"), "a"),
                secret("a", &i.to_string()),
            );
        }
        assert!(store.events_after(rt, start).is_err());
        assert_eq!(
            store
                .events_after(rt, store.resource_version() - 2)
                .unwrap()
                .len(),
            2
        );
    }
}
