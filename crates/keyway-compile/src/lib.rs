//! `compile(snapshot) -> (runtime config, statuses)`: all of Keyway's semantics, in one
//! pure, synchronous function.
//!
//! Sources hand over a [`Snapshot`] of Kubernetes objects; the data plane receives a
//! [`keyway_store::Config`] it can execute without knowing Gateway API or kgateway rules.
//! Every decision in between (listener conflicts, route attachment and precedence,
//! backend resolution, ReferenceGrants, policy attachment and precedence, Secret to
//! credential resolution, validation) is made here and reported in a [`Report`].
//!
//! The passes, in order:
//! 1. [`policies`]: validate every TrafficPolicy and compile its `apiKeyAuth`;
//! 2. [`gateways`]: listeners per port, conflicts, `allowedRoutes`;
//! 3. [`routes`]: attach HTTPRoutes to listeners, compile rules ([`backends`] resolves
//!    their `backendRefs`), pick each rule's authentication;
//! 4. assemble per-port virtual hosts in precedence order.
//!
//! Failing closed is the rule: a policy that cannot be built turns every route it would
//! protect into a 500, never into an unauthenticated route.
#![forbid(unsafe_code)]

pub mod backends;
mod certificates;
mod context;
pub mod gateways;
pub mod labels;
pub mod policies;
pub mod routes;
pub mod status;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use keyway_model::{Kind, ObjectKey, Snapshot};
use keyway_store::{Balance, Config, Listener, Port};

pub use status::{Condition, ObjectStatus, ParentRef, Report, SectionRef, SectionStatus};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

pub use keyway_store::INVALID_ROUTE_BODY;

/// Choices that are not part of the manifests.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Serve only Gateways of this class (all when `None`).
    pub gateway_class: Option<String>,
    /// Serve only Gateways whose GatewayClass names this controller (Kubernetes mode's
    /// `--controller-name`; `None` in standalone mode, where every Gateway is served).
    pub controller_name: Option<String>,
    /// Load balancing across the endpoints of every upstream.
    pub balance: Balance,
    /// The time of the compile, for warnings about keys that expire soon (none when
    /// `None`: the compile stays a function of its inputs).
    pub now: Option<std::time::SystemTime>,
}

/// The compiler's output.
#[derive(Debug, Default)]
pub struct Compiled {
    /// What the data plane executes.
    pub config: Config,
    /// Conditions on every object.
    pub report: Report,
}

/// Gateway API's limit on a policy's `status.ancestors[]`.
const MAX_ANCESTORS: usize = 16;

/// A policy's `status.ancestors[]` references: the Gateways of ours it takes effect on (at
/// most 16, the API's limit), or, when it takes effect nowhere, the targets it names, so
/// that `TargetNotFound` is visible on the policy. A policy with a target that exists and
/// is another controller's gets none from us: it is theirs to report on.
fn policy_ancestors(
    snapshot: &Snapshot,
    key: &ObjectKey,
    gateways: BTreeSet<ObjectKey>,
    ours: &HashSet<&ObjectKey>,
) -> Vec<ParentRef> {
    if !gateways.is_empty() {
        return gateways
            .into_iter()
            .take(MAX_ANCESTORS)
            .map(|g| ParentRef {
                group: Some(GATEWAY_GROUP.into()),
                kind: Some("Gateway".into()),
                namespace: Some(g.namespace),
                name: g.name,
                ..Default::default()
            })
            .collect();
    }
    let Some(policy) = snapshot.traffic_policies.get(key) else {
        return Vec::new();
    };
    let theirs = |kind: &str, name: &str| {
        let k = ObjectKey::new(key.namespace.as_str(), name);
        match kind {
            "Gateway" => snapshot.gateways.contains_key(&k) && !ours.contains(&k),
            "HTTPRoute" => snapshot.http_routes.get(&k).is_some_and(|r| {
                let parents = r.value.spec.parent_refs.iter().flatten();
                !parents.into_iter().any(|p| {
                    let ns = p.namespace.as_deref().unwrap_or(&key.namespace);
                    ours.contains(&ObjectKey::new(ns, p.name.as_str()))
                })
            }),
            _ => false,
        }
    };
    let targets = &policy.value.spec.target_refs;
    if targets.iter().any(|t| theirs(&t.kind, &t.name)) {
        return Vec::new();
    }
    let mut refs: Vec<ParentRef> = targets
        .iter()
        .map(|t| ParentRef {
            group: Some(t.group.clone()),
            kind: Some(t.kind.clone()),
            namespace: Some(key.namespace.clone()),
            name: t.name.clone(),
            section_name: t.section_name.clone(),
            port: None,
        })
        .collect();
    refs.sort();
    refs.dedup();
    refs.truncate(MAX_ANCESTORS);
    refs
}

/// Compiles a snapshot. Never fails: problems are conditions in the report, and the
/// affected parts of the config fail closed.
pub fn compile(snapshot: &Snapshot, options: &Options) -> Compiled {
    let ctx = context::Context::new(snapshot, options);
    let mut report = Report::default();

    let policies = policies::compile(&ctx);
    let mut gateways = gateways::compile(&ctx);
    let routes = routes::compile(&ctx, &mut gateways, &policies);

    let mut ports: BTreeMap<u16, Port> = BTreeMap::new();
    for listener in gateways.listeners.iter().filter(|l| l.in_config()) {
        let entries = routes
            .entries
            .get(&listener.id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let virtual_hosts = routes::virtual_hosts(entries);
        let identity_headers = routes
            .identity_headers
            .get(&listener.gateway)
            .into_iter()
            .flatten()
            .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        let port = ports.entry(listener.port).or_default();
        port.tls |= listener.tls.is_some();
        port.listeners.push(Arc::new(Listener {
            gateway: listener.gateway_name.clone(),
            name: listener.name.clone(),
            port: listener.port,
            hostname: listener.hostname.clone(),
            virtual_hosts,
            identity_headers,
            tls: listener.tls.clone(),
        }));
    }
    for port in ports.values_mut() {
        port.listeners.sort_by_key(|l| l.hostname.specificity());
    }

    let ours: HashSet<&ObjectKey> = gateways
        .statuses
        .iter()
        .filter(|s| s.kind == Kind::Gateway)
        .map(|s| &s.key)
        .collect();
    let mut policy_statuses = policies.statuses(
        &routes.decided_policies,
        &routes.considered_policies,
        &routes.referenced_policies,
    );
    for (i, status) in policy_statuses.iter_mut().enumerate() {
        let gateways = policies.ancestors(
            i,
            &ours,
            &routes.attached_gateways,
            &routes.referencing_routes,
        );
        status.ancestors = policy_ancestors(snapshot, &status.key, gateways, &ours);
        if let Some(p) = snapshot.traffic_policies.get(&status.key) {
            status.generation = p.value.metadata.generation;
            status.uid = p.value.metadata.uid.clone();
        }
    }
    report.objects.extend(gateways.statuses);
    report.objects.extend(routes.statuses);
    report.objects.extend(policy_statuses);
    report
        .objects
        .sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));

    Compiled {
        config: Config { ports },
        report,
    }
}
