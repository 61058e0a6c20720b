//! Upstreams: where forwarded requests go, and the load-balancing bookkeeping.
//!
//! The bookkeeping (which endpoint is ejected until when, requests in flight, the
//! round-robin cursor) is runtime state, not configuration: the compiler leaves it empty and
//! the data plane attaches the state it already holds for the same endpoint or upstream when
//! a config is swapped in ([`Endpoint::attach`], [`Upstream::attach`]), so a reload does not
//! forget that an endpoint was refusing connections a moment ago.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use http::uri::Authority;
use serde::{Serialize, Serializer};

use crate::route::{HeaderFilter, Redirect, Rewrite};

/// One `backendRef` of a rule, with its weight and backend-level filters.
#[derive(Debug, Serialize)]
pub struct WeightedBackend {
    /// Relative weight (above zero).
    pub weight: u32,
    /// Where the traffic goes, or why it cannot.
    pub target: Target,
    /// Backend-level `RequestHeaderModifier`.
    #[serde(skip_serializing_if = "HeaderFilter::is_empty")]
    pub request_headers: HeaderFilter,
    /// Backend-level `ResponseHeaderModifier`.
    #[serde(skip_serializing_if = "HeaderFilter::is_empty")]
    pub response_headers: HeaderFilter,
    /// Backend-level `URLRewrite`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Backend-level `RequestRedirect`: traffic sent to this backend is redirected instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
}

/// A resolved backend, or the reason this share of traffic answers 500.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Proxy to these endpoints.
    Upstream(Arc<Upstream>),
    /// The reference did not resolve; requests routed here get 500.
    Invalid(Arc<str>),
}

/// How an upstream spreads requests over its endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The less busy of two endpoints picked at random.
    LeastRequest,
}

/// A set of endpoints for one Service port or one Backend.
#[derive(Debug, Serialize)]
pub struct Upstream {
    /// `Service ns/name:port` or `Backend ns/name`.
    pub name: Arc<str>,
    /// Endpoints; empty means 503.
    pub endpoints: Vec<Endpoint>,
    /// Balancing strategy.
    pub balance: Balance,
    #[serde(skip)]
    cursor: OnceLock<Arc<AtomicUsize>>,
}

/// One address requests can be sent to.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port`: where connections go (the upstream pool's key).
    pub authority: Authority,
    state: OnceLock<Arc<EndpointState>>,
}

/// What the data plane learns about an endpoint while serving; outlives any one config.
#[derive(Debug, Default)]
pub struct EndpointState {
    /// Milliseconds (on the data plane's clock) until which the endpoint is skipped after
    /// a failed connection.
    down_until_ms: AtomicU64,
    /// Requests in flight (least-request balancing).
    active: AtomicUsize,
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.authority.as_str())
    }
}

impl Endpoint {
    /// A healthy endpoint with no history.
    pub fn new(authority: Authority) -> Self {
        Endpoint {
            authority,
            state: OnceLock::new(),
        }
    }

    /// Gives the endpoint the runtime state the data plane keeps for its address. Only the
    /// first call takes effect (an endpoint shared by several routes is attached once).
    pub fn attach(&self, state: Arc<EndpointState>) {
        let _ = self.state.set(state);
    }

    fn state(&self) -> &EndpointState {
        self.state.get_or_init(Arc::default)
    }

    /// Skips the endpoint until `until_ms` (after a connection failure).
    pub fn mark_down(&self, until_ms: u64) {
        self.state()
            .down_until_ms
            .store(until_ms, Ordering::Relaxed);
    }

    /// Whether the endpoint should be tried at `now_ms`.
    pub fn is_up(&self, now_ms: u64) -> bool {
        self.state().down_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// Requests in flight to this endpoint.
    pub fn active(&self) -> usize {
        self.state().active.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start_request(&self) -> ActiveGuard<'_> {
        let active = &self.state().active;
        active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(active)
    }
}

/// Decrements an endpoint's in-flight count on drop.
pub struct ActiveGuard<'a>(&'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    /// An upstream over `endpoints`.
    pub fn new(name: Arc<str>, endpoints: Vec<Endpoint>, balance: Balance) -> Self {
        Upstream {
            name,
            endpoints,
            balance,
            cursor: OnceLock::new(),
        }
    }

    /// Gives the upstream the round-robin cursor the data plane keeps for its name. Only
    /// the first call takes effect.
    pub fn attach(&self, cursor: Arc<AtomicUsize>) {
        let _ = self.cursor.set(cursor);
    }

    /// Picks an endpoint, skipping any in `exclude` (indexes already tried) and those
    /// marked down; falls back to a down endpoint rather than none at all.
    pub fn pick(&self, now_ms: u64, random: u32, exclude: &[usize]) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 || exclude.len() >= n {
            return None;
        }
        let usable = |i: usize| !exclude.contains(&i) && self.endpoints[i].is_up(now_ms);
        if self.balance == Balance::LeastRequest && n > 1 {
            let a = random as usize % n;
            let b = (a + 1 + (random as usize >> 16) % (n - 1)) % n;
            let load = |i: usize| self.endpoints[i].active();
            match (usable(a), usable(b)) {
                (true, true) => return Some(if load(b) < load(a) { b } else { a }),
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
        }
        // Round robin over the usable endpoints only, so skipping one does not hand its
        // turns to its neighbour.
        let start = self
            .cursor
            .get_or_init(Arc::default)
            .fetch_add(1, Ordering::Relaxed);
        let usable_count = (0..n).filter(|&i| usable(i)).count();
        if usable_count > 0 {
            return (0..n).filter(|&i| usable(i)).nth(start % usable_count);
        }
        let left = n - exclude.len();
        (0..n).filter(|i| !exclude.contains(i)).nth(start % left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(n: usize, balance: Balance) -> Upstream {
        let eps = (0..n)
            .map(|i| Endpoint::new(format!("127.0.0.1:{}", 1000 + i).parse().unwrap()))
            .collect();
        Upstream::new("u".into(), eps, balance)
    }

    #[test]
    fn round_robin_skips_down_endpoints() {
        let u = upstream(3, Balance::RoundRobin);
        u.endpoints[1].mark_down(100);
        let picks: Vec<_> = (0..6).map(|_| u.pick(50, 0, &[]).unwrap()).collect();
        assert!(!picks.contains(&1));
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 3, "{picks:?}");
        assert_eq!(picks.iter().filter(|&&p| p == 2).count(), 3, "{picks:?}");
        assert_eq!(u.pick(150, 0, &[0, 2]), Some(1));
    }

    #[test]
    fn all_down_still_tries_one() {
        let u = upstream(2, Balance::RoundRobin);
        u.endpoints[0].mark_down(100);
        u.endpoints[1].mark_down(100);
        assert!(u.pick(0, 0, &[]).is_some());
        assert_eq!(u.pick(0, 0, &[0, 1]), None);
    }

    #[test]
    fn attached_state_is_shared_with_the_next_config() {
        let old = upstream(2, Balance::RoundRobin);
        let new = upstream(2, Balance::RoundRobin);
        let state = Arc::new(EndpointState::default());
        old.endpoints[0].attach(state.clone());
        new.endpoints[0].attach(state);
        old.endpoints[0].mark_down(100);
        assert!(!new.endpoints[0].is_up(50));
        let cursor = Arc::new(AtomicUsize::new(0));
        old.attach(cursor.clone());
        new.attach(cursor);
        let first = old.pick(200, 0, &[]);
        assert_ne!(new.pick(200, 0, &[]), first, "the cursor moved on");
    }

    #[test]
    fn least_request_prefers_idle() {
        let u = upstream(2, Balance::LeastRequest);
        let _busy = u.endpoints[0].start_request();
        for r in 0..10 {
            assert_eq!(u.pick(0, r, &[]), Some(1));
        }
    }
}
