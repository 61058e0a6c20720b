//! Prometheus metrics. Label values are gateway, route, policy and client names and status
//! codes: never a key, never a header value a client chose.
//!
//! Series per client are capped (`Settings::metrics_max_clients`): the first clients seen
//! get their own series, every later one counts under `client="_other"`, so a million keys
//! never make a million series.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of `keyway_requests_total`.
#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `namespace/name` of the Gateway ("" when no listener matched).
    pub gateway: Arc<str>,
    /// `namespace/name` of the HTTPRoute ("" when no route matched).
    pub route: Arc<str>,
    /// Response status code.
    pub code: u16,
}

/// Labels of `keyway_upstream_request_duration_seconds`.
#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// Upstream name (`Service ns/name:port`, `Backend ns/name`).
    pub upstream: Arc<str>,
}

/// Labels of `keyway_api_key_allowed_total`.
#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub struct AllowedLabels {
    /// `namespace/name` of the TrafficPolicy.
    pub policy: Arc<str>,
    /// Client id (the Secret entry's name), or `_other` beyond the cap on client series.
    pub client: Arc<str>,
}

/// Labels of `keyway_api_key_denied_total`.
#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    /// `namespace/name` of the TrafficPolicy.
    pub policy: Arc<str>,
    /// `missing_api_key`, `unknown_api_key`, `ambiguous_api_key`, `invalid_policy`.
    pub reason: &'static str,
}

/// Every metric Keyway exports, registered once at start.
pub struct Metrics {
    registry: Registry,
    /// Requests by gateway, route and status code.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to upstream response headers.
    pub upstream_latency: Family<UpstreamLabels, Histogram>,
    /// Requests allowed by API key auth, by policy and client.
    pub api_key_allowed: Family<AllowedLabels, Counter>,
    /// Requests denied by API key auth, by policy and reason.
    pub api_key_denied: Family<DeniedLabels, Counter>,
    /// Generation of the config being served.
    pub config_generation: Gauge<i64, AtomicI64Shim>,
    /// Config reloads that failed and kept the previous config.
    pub config_reload_failures: Counter,
    /// Client connections open on the listener ports.
    pub connections_open: Gauge,
    /// Client connections closed at once because `--max-connections` were open.
    pub connections_refused: Counter,
    /// Errors accepting a connection (out of file descriptors, ...).
    pub accept_errors: Counter,
    /// TLS handshakes that failed or were refused (no usable certificate for the server
    /// name, a protocol version below 1.2, a timeout).
    pub tls_handshake_failures: Counter,
    /// Log lines dropped because the log writer could not keep up.
    pub log_lines_dropped: Counter,
    client_series: AtomicUsize,
}

/// Label sets hash as one word: a fast hash of their values, which the family's map
/// (std's, with SipHash) then hashes once. Hashed field by field, SipHash cost about 300
/// instructions per lookup, three lookups a request (issue 14). The values come from the
/// config (names, client ids, status codes), not from requests, so a fixed-seed hash is
/// no flooding risk; equality is still on the values.
macro_rules! hash_as_one_word {
    ($t:ty, $($field:ident),+) => {
        impl Hash for $t {
            fn hash<H: Hasher>(&self, state: &mut H) {
                let mut h = foldhash::fast::FixedState::with_seed(0x6b65_7977_6179).build_hasher();
                $(self.$field.hash(&mut h);)+
                state.write_u64(h.finish());
            }
        }
    };
}
hash_as_one_word!(RequestLabels, gateway, route, code);
hash_as_one_word!(UpstreamLabels, upstream);
hash_as_one_word!(AllowedLabels, policy, client);
hash_as_one_word!(DeniedLabels, policy, reason);

/// The label of clients counted together beyond the cap on client series.
pub fn other_client() -> Arc<str> {
    static OTHER: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    OTHER.get_or_init(|| Arc::from("_other")).clone()
}

/// The atomic behind the generation gauge.
pub type AtomicI64Shim = std::sync::atomic::AtomicI64;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by gateway, route and status code",
            requests.clone(),
        );
        let upstream_latency = Family::<UpstreamLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
        });
        registry.register(
            "upstream_request_duration_seconds",
            "Time from sending a request upstream to its response headers",
            upstream_latency.clone(),
        );
        let api_key_allowed = Family::<AllowedLabels, Counter>::default();
        registry.register(
            "api_key_allowed",
            "Requests allowed by API key auth, by policy and client id",
            api_key_allowed.clone(),
        );
        let api_key_denied = Family::<DeniedLabels, Counter>::default();
        registry.register(
            "api_key_denied",
            "Requests denied by API key auth, by policy and reason",
            api_key_denied.clone(),
        );
        let config_generation = Gauge::<i64, AtomicI64Shim>::default();
        registry.register(
            "config_generation",
            "Generation of the configuration being served",
            config_generation.clone(),
        );
        let config_reload_failures = Counter::default();
        registry.register(
            "config_reload_failures",
            "Reloads that failed and kept the previous configuration",
            config_reload_failures.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "Client connections open on the listener ports",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Client connections closed on accept because --max-connections were open",
            connections_refused.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            "accept_errors",
            "Errors accepting client connections (such as running out of file descriptors)",
            accept_errors.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or were refused on HTTPS listeners",
            tls_handshake_failures.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log output could not keep up",
            log_lines_dropped.clone(),
        );
        Metrics {
            registry,
            requests,
            upstream_latency,
            api_key_allowed,
            api_key_denied,
            config_generation,
            config_reload_failures,
            connections_open,
            connections_refused,
            accept_errors,
            tls_handshake_failures,
            log_lines_dropped,
            client_series: AtomicUsize::new(0),
        }
    }

    /// Takes one of `max` places for a new (policy, client) series of the allowed
    /// counter; `false` once they are all taken.
    pub fn claim_client_series(&self, max: usize) -> bool {
        self.client_series.fetch_add(1, Ordering::Relaxed) < max
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Series handles this thread has counted into, found by the identity of their label
/// values (the `Arc`s of the config being served, and the `Metrics` they count into)
/// instead of building a label set, hashing it and comparing it under the family's lock.
/// That was about a thousand instructions of a proxied request (three series a request,
/// issue 14); a hit here is a hash of a few words.
///
/// Each entry holds the `Arc`s its key was made of, so no address in a key can be reused
/// by another value while the entry lives, and the `Metrics`, so its handles always count
/// into the family a scrape reads. Families never drop a series, so a cached handle never
/// counts into a series that is gone. The map is emptied when it reaches `LOCAL_ENTRIES`
/// (a million clients must not mean a million entries per thread).
mod local {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    pub(super) const LOCAL_ENTRIES: usize = 4096;

    type Map<const N: usize, V> =
        HashMap<[usize; N], (Arc<Metrics>, V), foldhash::fast::FixedState>;

    #[derive(Default)]
    pub(super) struct Local {
        pub requests: Map<4, (RequestLabels, Counter)>,
        pub upstream: Map<2, (UpstreamLabels, Histogram)>,
        pub allowed: Map<3, (AllowedLabels, Counter)>,
    }

    thread_local! {
        pub(super) static LOCAL: RefCell<Local> = RefCell::default();
    }

    /// The address an `Arc` points at, as a key word.
    pub(super) fn addr<T: ?Sized>(a: &Arc<T>) -> usize {
        Arc::as_ptr(a) as *const u8 as usize
    }

    /// The handle cached under `key`, or the one `make` finds (then cached).
    pub(super) fn get<const N: usize, L, M: Clone>(
        map: &mut Map<N, (L, M)>,
        key: [usize; N],
        metrics: &Arc<Metrics>,
        make: impl FnOnce() -> (L, M),
    ) -> M {
        if let Some((_, (_, m))) = map.get(&key) {
            return m.clone();
        }
        if map.len() >= LOCAL_ENTRIES {
            map.clear();
        }
        let (labels, m) = make();
        map.insert(key, (metrics.clone(), (labels, m.clone())));
        m
    }
}

impl Metrics {
    /// Counts a request under its gateway, route and status code.
    pub fn count_request(self: &Arc<Self>, gateway: &Arc<str>, route: &Arc<str>, code: u16) {
        let key = [
            local::addr(self),
            local::addr(gateway),
            local::addr(route),
            usize::from(code),
        ];
        local::LOCAL
            .with_borrow_mut(|l| {
                local::get(&mut l.requests, key, self, || {
                    let labels = RequestLabels {
                        gateway: gateway.clone(),
                        route: route.clone(),
                        code,
                    };
                    let c = self.requests.get_or_create(&labels).clone();
                    (labels, c)
                })
            })
            .inc();
    }

    /// Records the time an upstream took to answer with its response headers.
    pub fn observe_upstream(self: &Arc<Self>, upstream: &Arc<str>, seconds: f64) {
        let key = [local::addr(self), local::addr(upstream)];
        local::LOCAL
            .with_borrow_mut(|l| {
                local::get(&mut l.upstream, key, self, || {
                    let labels = UpstreamLabels {
                        upstream: upstream.clone(),
                    };
                    let h = self.upstream_latency.get_or_create(&labels).clone();
                    (labels, h)
                })
            })
            .observe(seconds);
    }

    /// Counts a request allowed by API key auth under its policy and client, or under
    /// `_other` once `max_clients` clients have a series (a million clients must not mean
    /// a million series). A client keeps the series it first got.
    pub fn count_allowed(
        self: &Arc<Self>,
        policy: &Arc<str>,
        client: &Arc<str>,
        max_clients: usize,
    ) {
        let key = [local::addr(self), local::addr(policy), local::addr(client)];
        local::LOCAL
            .with_borrow_mut(|l| {
                local::get(&mut l.allowed, key, self, || {
                    let labels = AllowedLabels {
                        policy: policy.clone(),
                        client: client.clone(),
                    };
                    if let Some(c) = self.api_key_allowed.get(&labels) {
                        let c = c.clone();
                        return (labels, c);
                    }
                    let labels = if self.claim_client_series(max_clients) {
                        labels
                    } else {
                        AllowedLabels {
                            policy: policy.clone(),
                            client: other_client(),
                        }
                    };
                    let c = self.api_key_allowed.get_or_create(&labels).clone();
                    (labels, c)
                })
            })
            .inc();
    }
}

/// Milliseconds since the process started (endpoint ejection deadlines).
pub(crate) fn now_ms() -> u64 {
    millis_at(std::time::Instant::now())
}

/// [`now_ms`] at an instant already read (0 for one before the first call).
pub(crate) fn millis_at(at: std::time::Instant) -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    at.saturating_duration_since(*START.get_or_init(std::time::Instant::now))
        .as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series of `metric` whose labels include every one of `labels`.
    fn value(m: &Metrics, metric: &str, labels: &[&str]) -> Option<f64> {
        m.encode()
            .lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")))
            .find(|l| labels.iter().all(|x| l.contains(x)))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// The value of the series of `metric` whose label `label` is `v`.
    fn one_label(m: &Metrics, metric: &str, label: &str, v: &str) -> Option<f64> {
        value(m, metric, &[&format!("{label}=\"{v}\"")])
    }

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn counts_through_the_thread_cache_reach_the_families_a_scrape_reads() {
        let m = Arc::new(Metrics::new());
        let (g, r) = (name("ns/gw"), name("ns/route"));
        m.count_request(&g, &r, 200);
        m.count_request(&g, &r, 200);
        m.count_request(&g, &r, 401);
        // The same names in other `Arc`s (a reloaded config): the same series.
        m.count_request(&name("ns/gw"), &name("ns/route"), 200);
        let ok = ["gateway=\"ns/gw\"", "route=\"ns/route\"", "code=\"200\""];
        assert_eq!(value(&m, "keyway_requests_total", &ok), Some(3.0));
        let denied = ["route=\"ns/route\"", "code=\"401\""];
        assert_eq!(value(&m, "keyway_requests_total", &denied), Some(1.0));

        let up = name("Service ns/up:80");
        m.observe_upstream(&up, 0.002);
        m.observe_upstream(&up, 0.002);
        m.observe_upstream(&name("Service ns/up:80"), 0.002);
        let count = ["upstream=\"Service ns/up:80\""];
        assert_eq!(
            value(&m, "keyway_upstream_request_duration_seconds_count", &count),
            Some(3.0)
        );

        // Another `Metrics` on the same thread, with the same names: its own counts.
        let other = Arc::new(Metrics::new());
        other.count_request(&g, &r, 200);
        assert_eq!(value(&other, "keyway_requests_total", &ok), Some(1.0));
        assert_eq!(value(&m, "keyway_requests_total", &ok), Some(3.0));
    }

    #[test]
    fn the_thread_cache_empties_when_full_and_counts_stay_right() {
        let m = Arc::new(Metrics::new());
        let g = name("g");
        let first = name("route-0");
        m.count_request(&g, &first, 200);
        let routes: Vec<Arc<str>> = (1..local::LOCAL_ENTRIES + 10)
            .map(|i| name(&format!("route-{i}")))
            .collect();
        for r in &routes {
            m.count_request(&g, r, 200);
        }
        m.count_request(&g, &first, 200);
        m.count_request(&g, &routes[5], 200);
        let n = |route: &str| one_label(&m, "keyway_requests_total", "route", route);
        assert_eq!(n("route-0"), Some(2.0));
        assert_eq!(n("route-6"), Some(2.0));
        assert_eq!(n("route-7"), Some(1.0));
        let cached = local::LOCAL.with_borrow(|l| l.requests.len());
        assert!(cached <= local::LOCAL_ENTRIES, "{cached}");
    }

    #[test]
    fn clients_beyond_the_cap_count_as_other_and_keep_their_series() {
        let m = Arc::new(Metrics::new());
        let p = name("ns/policy");
        let (a, b) = (name("alice"), name("bob"));
        m.count_allowed(&p, &a, 1);
        m.count_allowed(&p, &b, 1);
        m.count_allowed(&p, &a, 1);
        m.count_allowed(&p, &b, 1);
        // `alice` in another `Arc` finds her series; `bob` in another stays `_other`.
        m.count_allowed(&p, &name("alice"), 1);
        m.count_allowed(&p, &name("bob"), 1);
        let n = |client: &str| one_label(&m, "keyway_api_key_allowed_total", "client", client);
        assert_eq!(n("alice"), Some(3.0));
        assert_eq!(n("_other"), Some(3.0));
        assert_eq!(n("bob"), None);
    }
}
