//! Kubernetes mode's source: the kinds of SPEC section 1, listed and watched through the
//! API server.
//!
//! One kube `watcher` per row of [`kinds::WATCHED`] (Secrets: one per watched namespace)
//! keeps a view of that collection. The watcher does the protocol work (paged lists,
//! watches resuming from the last resourceVersion with bookmarks, a relist after `410
//! Expired`, retries with backoff capped at 30 s); this module keeps what it delivers:
//!
//! - **Digested on arrival.** Objects come untyped and are decoded one by one
//!   ([`decode`]); a Secret becomes its key digests there and its plaintext goes with the
//!   raw object, so no replica holds API keys in memory (a reflector store would).
//! - **Never a partial view.** [`Source::complete`] resolves only once every watch has
//!   finished its first list, and [`Source::load`] refuses before that. A relist is
//!   buffered and replaces its view at once when it ends, so a route does not vanish and
//!   reappear while the list is read.
//! - **Recompile only for what is read.** Each object's content hash leaves out status and
//!   bookkeeping metadata; an event that changes nothing else does not move the revision
//!   (the snapshot's fingerprint), so it never triggers a compile.
//! - **Freshness.** [`freshness`] reads the client's HTTP traffic to tell, per watch, how
//!   long the view has gone without a connection; `/status` and a metric show it.

pub mod decode;
pub mod freshness;
pub mod kinds;

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use keyway_model::snapshot::key_of;
use keyway_model::{Kind, Object, ObjectKey, Origin, Snapshot};
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use tokio::sync::watch;

use crate::files::{LoadError, Loaded, Warning};
use crate::Source;
use decode::{Decoded, Entry};
use freshness::{Freshness, TrackLayer};
use kinds::{WatchedKind, WATCHED};

/// Secrets per list page (other kinds: kube's default of 500). Secrets are the large
/// objects, a thousand keys each is common, and a page is held whole while it is read.
const SECRET_PAGE_SIZE: u32 = 50;

/// What Kubernetes mode is told on the command line.
#[derive(Clone, Debug, Default)]
pub struct KubeOptions {
    /// Namespaces whose Secrets are read; empty: all namespaces.
    pub watch_namespaces: Vec<String>,
}

/// The Kubernetes source. Cheap to share; its watches run until it is dropped.
pub struct KubeSource {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    views: Mutex<Views>,
    /// Bumped (under the views lock) whenever what the compiler reads changed.
    changed: watch::Sender<u64>,
    /// True once every watch has completed its first list.
    complete: watch::Sender<bool>,
    freshness: Arc<Freshness>,
    hasher: RandomState,
}

struct Views {
    revision: u64,
    watches: Vec<View>,
}

/// One watch's view of its collection.
struct View {
    kind: &'static WatchedKind,
    namespace: Option<String>,
    objects: BTreeMap<ObjectKey, Entry>,
    /// A list in progress: replaces `objects` when it ends.
    pending: Option<BTreeMap<ObjectKey, Entry>>,
    synced: bool,
    not_served: bool,
    errors: u64,
    last_error: Option<String>,
}

impl KubeSource {
    /// Connects with the standard kubeconfig inference (`KUBECONFIG`, `~/.kube/config`,
    /// the in-cluster service account) and starts every watch.
    pub async fn connect(options: KubeOptions) -> Result<KubeSource, String> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| format!("cannot find the Kubernetes API server: {e}"))?;
        let cluster_url = config.cluster_url.to_string();
        let mut views = Vec::new();
        for kind in WATCHED {
            if kind.per_namespace && !options.watch_namespaces.is_empty() {
                for ns in &options.watch_namespaces {
                    views.push(View::new(kind, Some(ns.clone())));
                }
            } else {
                views.push(View::new(kind, None));
            }
        }
        let freshness = Freshness::new(
            views
                .iter()
                .map(|v| v.kind.path(v.namespace.as_deref()))
                .collect(),
        );
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| format!("cannot set up the Kubernetes client: {e}"))?
            .with_layer(&TrackLayer(freshness.clone()))
            .build();
        tracing::info!(server = %cluster_url, watches = views.len(), "watching the Kubernetes API server");
        let plan: Vec<(&'static WatchedKind, Option<String>)> = views
            .iter()
            .map(|v| (v.kind, v.namespace.clone()))
            .collect();
        let shared = Arc::new(Shared {
            views: Mutex::new(Views {
                revision: 0,
                watches: views,
            }),
            changed: watch::channel(0).0,
            complete: watch::channel(false).0,
            freshness,
            hasher: RandomState::new(),
        });
        let tasks = plan
            .into_iter()
            .enumerate()
            .map(|(i, (kind, ns))| {
                let ar = kind.api_resource();
                let api: Api<DynamicObject> = match &ns {
                    Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                    None => Api::all_with(client.clone(), &ar),
                };
                let mut config = watcher::Config::default();
                if kind.kind == Kind::Secret {
                    config = config.page_size(SECRET_PAGE_SIZE);
                }
                tokio::spawn(run_watch(shared.clone(), i, api, config))
            })
            .collect();
        Ok(KubeSource { shared, tasks })
    }

    /// A receiver that wakes whenever what the compiler reads has changed.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl View {
    fn new(kind: &'static WatchedKind, namespace: Option<String>) -> View {
        View {
            kind,
            namespace,
            objects: BTreeMap::new(),
            pending: None,
            synced: false,
            not_served: false,
            errors: 0,
            last_error: None,
        }
    }

    fn name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {} in {ns}", self.kind.plural, self.kind.api_version()),
            None => format!("{} {}", self.kind.plural, self.kind.api_version()),
        }
    }
}

/// The longest wait between two attempts to reach the API server (SPEC section 8: capped
/// backoff, at most 30 s).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Exponential backoff from 0.8 s, doubling, with jitter, never above
/// [`MAX_RETRY_DELAY`]; reset after two minutes without failure. kube's
/// `default_backoff` caps the delay at 30 s *before* adding up to 100 % jitter, so it
/// waits up to 60 s: after an outage a replica could stay stale a minute longer than
/// promised. Here the cap is half the promise and the jitter stays within it.
fn retry_backoff() -> impl kube::runtime::utils::Backoff {
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(MAX_RETRY_DELAY / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    kube::runtime::utils::ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(builder),
        Duration::from_secs(120),
    )
}

async fn run_watch(
    shared: Arc<Shared>,
    i: usize,
    api: Api<DynamicObject>,
    config: watcher::Config,
) {
    let mut events = watcher(api, config).backoff(retry_backoff()).boxed();
    let mut failing = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if failing {
                    failing = false;
                    tracing::info!(watch = %shared.name(i), "watch recovered");
                }
                shared.apply(i, event);
            }
            Err(e) => shared.failed(i, &e, &mut failing),
        }
    }
}

fn key(kind: Kind, obj: &DynamicObject) -> ObjectKey {
    key_of(obj.meta(), kind)
}

impl Shared {
    fn name(&self, i: usize) -> String {
        self.lock().watches[i].name()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Views> {
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, i: usize, event: Event<DynamicObject>) {
        let kind = self.lock().watches[i].kind.kind;
        match event {
            Event::Init => {
                self.lock().watches[i].pending = Some(BTreeMap::new());
            }
            Event::InitApply(obj) => {
                let k = key(kind, &obj);
                let entry = self.decode_reusing(i, &k, kind, obj);
                let mut views = self.lock();
                let view = &mut views.watches[i];
                view.pending
                    .get_or_insert_with(BTreeMap::new)
                    .insert(k, entry);
            }
            Event::InitDone => {
                let mut views = self.lock();
                let view = &mut views.watches[i];
                let listed = view.pending.take().unwrap_or_default();
                let same = listed.len() == view.objects.len()
                    && listed
                        .iter()
                        .zip(view.objects.iter())
                        .all(|((ka, a), (kb, b))| ka == kb && a.content == b.content);
                view.objects = listed;
                let first = !view.synced;
                view.synced = true;
                view.not_served = false;
                if first || !same {
                    self.bump(&mut views);
                }
                if first {
                    self.check_complete(&views);
                }
            }
            Event::Apply(obj) => {
                let k = key(kind, &obj);
                let entry = self.decode_reusing(i, &k, kind, obj);
                let content = entry.content;
                let mut views = self.lock();
                let old = views.watches[i].objects.insert(k, entry);
                if old.is_none_or(|o| o.content != content) {
                    self.bump(&mut views);
                }
            }
            Event::Delete(obj) => {
                let k = key(kind, &obj);
                let mut views = self.lock();
                if views.watches[i].objects.remove(&k).is_some() {
                    self.bump(&mut views);
                }
            }
        }
    }

    /// Decodes an object, or reuses the view's entry when its content is unchanged (a
    /// relist then costs no new digests and holds no second copy of a Secret's keys).
    fn decode_reusing(&self, i: usize, k: &ObjectKey, kind: Kind, obj: DynamicObject) -> Entry {
        let entry = decode::decode(kind, obj, &self.hasher);
        if let Some(old) = self.lock().watches[i].objects.get(k) {
            if old.content == entry.content {
                return old.clone();
            }
        }
        entry
    }

    fn failed(&self, i: usize, e: &watcher::Error, failing: &mut bool) {
        let mut views = self.lock();
        let view = &mut views.watches[i];
        view.errors += 1;
        view.last_error = Some(e.to_string());
        let not_found =
            matches!(e, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404);
        if view.kind.optional && not_found {
            // Not served by this cluster: an empty list, complete.
            view.not_served = true;
            if !view.synced {
                view.synced = true;
                tracing::info!(watch = %view.name(), "not served by this API server; skipped");
                self.bump(&mut views);
                self.check_complete(&views);
            }
            return;
        }
        if !*failing {
            *failing = true;
            tracing::warn!(watch = %view.name(), error = %e, "watch failed; the last view keeps serving, retrying with backoff");
        }
    }

    fn bump(&self, views: &mut Views) {
        views.revision += 1;
        self.changed.send_replace(views.revision);
    }

    fn check_complete(&self, views: &Views) {
        if views.watches.iter().all(|v| v.synced) {
            self.complete.send_replace(true);
        }
    }
}

impl Source for KubeSource {
    fn load(&self) -> Result<Loaded, Vec<LoadError>> {
        let views = self.shared.lock();
        if let Some(v) = views.watches.iter().find(|v| !v.synced) {
            return Err(vec![LoadError {
                path: "kubernetes".into(),
                line: None,
                column: None,
                resource: None,
                message: format!(
                    "{} not listed yet; nothing is served from a partial view",
                    v.name()
                ),
            }]);
        }
        let mut out = Loaded {
            fingerprint: views.revision,
            ..Default::default()
        };
        let snap = &mut out.snapshot;
        for view in &views.watches {
            for (k, entry) in &view.objects {
                let problem = match &entry.value {
                    Ok(Decoded::TrafficPolicy(p)) => p.spec.undecodable.as_ref().map(|why| {
                        format!("spec cannot be decoded, its targets are refused: {why}")
                    }),
                    Ok(_) => None,
                    Err(why) => Some(format!("cannot be decoded, ignored: {why}")),
                };
                if let Ok(d) = &entry.value {
                    insert(snap, k, d);
                }
                if let Some(message) = problem {
                    out.warnings.push(Warning {
                        origin: Origin::Kubernetes,
                        message: format!("{} {k}: {message}", view.kind.api_kind),
                    });
                }
            }
        }
        Ok(out)
    }

    fn complete(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        let mut rx = self.shared.complete.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|done| *done).await;
        })
    }

    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn status(&self) -> serde_json::Value {
        let views = self.shared.lock();
        let watches: Vec<serde_json::Value> = views
            .watches
            .iter()
            .enumerate()
            .map(|(i, v)| {
                serde_json::json!({
                    "resource": v.kind.plural,
                    "apiVersion": v.kind.api_version(),
                    "namespace": v.namespace,
                    "listed": v.synced,
                    "served": !v.not_served,
                    "objects": v.objects.len(),
                    "staleSeconds": self.shared.freshness.staleness(i).as_secs_f64(),
                    "errors": v.errors,
                    "lastError": v.last_error,
                })
            })
            .collect();
        serde_json::json!({"revision": views.revision, "watches": watches})
    }

    fn staleness(&self) -> Vec<(String, f64)> {
        let views = self.shared.lock();
        views
            .watches
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let name = match &v.namespace {
                    Some(ns) => format!("{}.{}/{ns}", v.kind.plural, v.kind.api_version()),
                    None => format!("{}.{}", v.kind.plural, v.kind.api_version()),
                };
                (name, self.shared.freshness.staleness(i).as_secs_f64())
            })
            .collect()
    }
}

fn insert(snap: &mut Snapshot, k: &ObjectKey, d: &Decoded) {
    macro_rules! put {
        ($field:ident, $v:expr) => {{
            snap.$field.entry(k.clone()).or_insert_with(|| Object {
                origin: Origin::Kubernetes,
                value: $v.clone(),
            });
        }};
    }
    match d {
        Decoded::GatewayClass(v) => put!(gateway_classes, v),
        Decoded::Namespace(v) => put!(namespaces, v),
        Decoded::Gateway(v) => put!(gateways, v),
        Decoded::HttpRoute(v) => put!(http_routes, v),
        Decoded::ReferenceGrant(v) => put!(reference_grants, v),
        Decoded::TrafficPolicy(v) => put!(traffic_policies, v),
        Decoded::Backend(v) => put!(backends, v),
        Decoded::Secret(v) => put!(secrets, v),
        Decoded::Service(v) => put!(services, v),
        Decoded::EndpointSlice(v) => put!(endpoint_slices, v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_never_wait_longer_than_the_cap_jitter_included() {
        let delays: Vec<Duration> = retry_backoff().take(200).collect();
        assert!(delays[0] >= Duration::from_millis(800), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= MAX_RETRY_DELAY), "{delays:?}");
        // Backed off all the way: not hammering a struggling API server either.
        assert!(
            delays[20..].iter().all(|d| *d >= MAX_RETRY_DELAY / 2),
            "{delays:?}"
        );
    }
}
