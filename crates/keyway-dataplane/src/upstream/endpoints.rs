//! The runtime state of endpoints and upstreams, kept apart from any one config.
//!
//! A compiled config is rebuilt from scratch on every reload, but what the data plane has
//! learnt while serving (an endpoint refusing connections and ejected for a few seconds,
//! requests in flight for least-request balancing, the round-robin position) must survive
//! it. [`Registry::attach`] gives every endpoint and upstream of a new config the state
//! already held for the same address or upstream name, before the config serves its first
//! request. State nobody refers to any more (the endpoint left every config) is dropped.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};

use http::uri::Authority;
use keyway_store::{Config, EndpointState};

/// Long-lived state by endpoint address and by upstream name.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    endpoints: HashMap<Authority, Weak<EndpointState>>,
    cursors: HashMap<Arc<str>, Weak<AtomicUsize>>,
}

impl Registry {
    /// Attaches the state held for each endpoint and upstream of `config` (creating it for
    /// new ones). Returns the addresses of every endpoint in the config.
    pub fn attach(&self, config: &Config) -> Vec<Authority> {
        let mut inner = self.inner.lock().expect("registry lock");
        // State that no config refers to any more goes first, so a departed endpoint that
        // comes back starts afresh.
        inner.endpoints.retain(|_, w| w.strong_count() > 0);
        inner.cursors.retain(|_, w| w.strong_count() > 0);
        let mut addresses = Vec::new();
        for upstream in config.upstreams() {
            let cursor = shared(&mut inner.cursors, upstream.name.clone());
            upstream.attach(cursor);
            for endpoint in &upstream.endpoints {
                let state = shared(&mut inner.endpoints, endpoint.authority.clone());
                endpoint.attach(state);
                addresses.push(endpoint.authority.clone());
            }
        }
        addresses.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        addresses.dedup();
        addresses
    }
}

/// The live state under `key`, or a new one registered there.
fn shared<K: std::hash::Hash + Eq, T: Default>(map: &mut HashMap<K, Weak<T>>, key: K) -> Arc<T> {
    if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
        return live;
    }
    let fresh = Arc::new(T::default());
    map.insert(key, Arc::downgrade(&fresh));
    fresh
}
