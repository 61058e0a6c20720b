//! The snapshot: everything a source knows, in one immutable value.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::core::{EndpointSlice, Namespace, ObjectMeta, Service};
use crate::gateway::{Gateway, GatewayClass, HttpRoute, ReferenceGrant};
use crate::{Backend, Secret, TrafficPolicy};

/// Where an object came from, so every message can point at it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// A YAML document in a file; `line` is the 1-based line where the document starts.
    File {
        /// Path as given on the command line (joined with the file name for directories).
        path: Arc<str>,
        /// 1-based line of the document's first line.
        line: usize,
    },
    /// An object read from the Kubernetes API server.
    Kubernetes,
    /// Built in code (tests, defaults).
    Inline,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{path}:{line}"),
            Origin::Kubernetes => f.write_str("kubernetes"),
            Origin::Inline => f.write_str("inline"),
        }
    }
}

/// The kinds Keyway reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// gateway.networking.k8s.io GatewayClass
    GatewayClass,
    /// core/v1 Namespace
    Namespace,
    /// gateway.networking.k8s.io Gateway
    Gateway,
    /// gateway.networking.k8s.io HTTPRoute
    HttpRoute,
    /// gateway.networking.k8s.io ReferenceGrant
    ReferenceGrant,
    /// gateway.kgateway.dev TrafficPolicy
    TrafficPolicy,
    /// gateway.kgateway.dev Backend
    Backend,
    /// core/v1 Secret
    Secret,
    /// core/v1 Service
    Service,
    /// discovery.k8s.io/v1 EndpointSlice
    EndpointSlice,
}

impl Kind {
    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GatewayClass => "GatewayClass",
            Kind::Namespace => "Namespace",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::TrafficPolicy => "TrafficPolicy",
            Kind::Backend => "Backend",
            Kind::Secret => "Secret",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::GatewayClass)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Namespace and name of an object; the namespace is empty for cluster-scoped kinds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjectKey {
    /// Namespace ("" for cluster-scoped objects).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One object and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Object<T> {
    /// File and line, or the API server.
    pub origin: Origin,
    /// The object itself.
    pub value: T,
}

/// Objects of one kind by namespace/name.
pub type Objects<T> = BTreeMap<ObjectKey, Object<T>>;

/// The complete desired state from one source, ordered by namespace/name.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// GatewayClasses (Kubernetes mode: which Gateways are ours).
    pub gateway_classes: Objects<GatewayClass>,
    /// core/v1 Namespaces (for `allowedRoutes` selectors).
    pub namespaces: Objects<Namespace>,
    /// Gateways.
    pub gateways: Objects<Gateway>,
    /// HTTPRoutes.
    pub http_routes: Objects<HttpRoute>,
    /// ReferenceGrants (v1 and v1beta1 alike).
    pub reference_grants: Objects<ReferenceGrant>,
    /// kgateway TrafficPolicies.
    pub traffic_policies: Objects<TrafficPolicy>,
    /// kgateway Backends.
    pub backends: Objects<Backend>,
    /// Secrets.
    pub secrets: Objects<Secret>,
    /// Services.
    pub services: Objects<Service>,
    /// EndpointSlices.
    pub endpoint_slices: Objects<EndpointSlice>,
}

/// Namespace and name of any object's metadata (`default` namespace when unset).
pub fn key_of(meta: &ObjectMeta, kind: Kind) -> ObjectKey {
    let namespace = if kind.is_namespaced() {
        meta.namespace.clone().unwrap_or_else(|| "default".into())
    } else {
        String::new()
    };
    ObjectKey::new(namespace, meta.name.clone().unwrap_or_default())
}

/// Calls `$m!(field, Kind)` for every kind of a [`Snapshot`], so code that treats all kinds
/// alike (merging, counting) cannot forget one.
#[macro_export]
macro_rules! for_each_kind {
    ($m:ident) => {
        $m!(gateway_classes, GatewayClass);
        $m!(namespaces, Namespace);
        $m!(gateways, Gateway);
        $m!(http_routes, HttpRoute);
        $m!(reference_grants, ReferenceGrant);
        $m!(traffic_policies, TrafficPolicy);
        $m!(backends, Backend);
        $m!(secrets, Secret);
        $m!(services, Service);
        $m!(endpoint_slices, EndpointSlice);
    };
}

impl Snapshot {
    /// Adds clones of `other`'s objects. An object already present stays as it is and is
    /// reported to `duplicate` with where it was first defined and where again.
    pub fn merge_from(
        &mut self,
        other: &Snapshot,
        mut duplicate: impl FnMut(Kind, &ObjectKey, &Origin, &Origin),
    ) {
        macro_rules! merge {
            ($field:ident, $kind:ident) => {
                for (k, o) in &other.$field {
                    match self.$field.get(k) {
                        Some(first) => duplicate(Kind::$kind, k, &first.origin, &o.origin),
                        None => {
                            self.$field.insert(k.clone(), o.clone());
                        }
                    }
                }
            };
        }
        for_each_kind!(merge);
    }

    /// Number of objects of every kind.
    pub fn len(&self) -> usize {
        let mut n = 0;
        macro_rules! count {
            ($field:ident, $kind:ident) => {
                n += self.$field.len();
            };
        }
        for_each_kind!(count);
        n
    }

    /// Whether the snapshot holds no object at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
