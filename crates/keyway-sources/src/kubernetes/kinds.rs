//! The table of what Kubernetes mode reads from the API server: one row per list+watch.
//!
//! This is the single list of kinds, groups, versions and resources: the watches are set
//! up from it, and the RBAC rules `keyway manifests` prints are to be generated from it,
//! so what Keyway asks for and what it is allowed cannot drift apart.

use keyway_model::Kind;
use kube::discovery::ApiResource;

/// One resource Keyway lists and watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedKind {
    /// The snapshot kind its objects become.
    pub kind: Kind,
    /// API group ("" for core).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// The `kind` string of the API.
    pub api_kind: &'static str,
    /// The resource name in URLs.
    pub plural: &'static str,
    /// Read only in the watched namespaces (one watch per namespace when namespaces are
    /// given): Secrets, whose cluster-wide read is the most sensitive grant there is.
    pub per_namespace: bool,
    /// The API server may not serve this version (a cluster whose Gateway API CRDs predate
    /// it): "not found" then counts as an empty, complete list.
    pub optional: bool,
}

const GATEWAY: &str = "gateway.networking.k8s.io";
const KGATEWAY: &str = keyway_model::kgateway::GROUP;

const fn row(
    kind: Kind,
    group: &'static str,
    version: &'static str,
    api_kind: &'static str,
    plural: &'static str,
) -> WatchedKind {
    WatchedKind {
        kind,
        group,
        version,
        api_kind,
        plural,
        per_namespace: false,
        optional: false,
    }
}

/// Every resource read, in the order views are reported. ReferenceGrant is read in both
/// versions: clusters serve `v1beta1` everywhere and `v1` where the CRDs are recent.
pub const WATCHED: &[WatchedKind] = &[
    row(
        Kind::GatewayClass,
        GATEWAY,
        "v1",
        "GatewayClass",
        "gatewayclasses",
    ),
    row(Kind::Namespace, "", "v1", "Namespace", "namespaces"),
    row(Kind::Gateway, GATEWAY, "v1", "Gateway", "gateways"),
    row(Kind::HttpRoute, GATEWAY, "v1", "HTTPRoute", "httproutes"),
    row(
        Kind::ReferenceGrant,
        GATEWAY,
        "v1beta1",
        "ReferenceGrant",
        "referencegrants",
    ),
    WatchedKind {
        optional: true,
        ..row(
            Kind::ReferenceGrant,
            GATEWAY,
            "v1",
            "ReferenceGrant",
            "referencegrants",
        )
    },
    row(
        Kind::TrafficPolicy,
        KGATEWAY,
        "v1alpha1",
        "TrafficPolicy",
        "trafficpolicies",
    ),
    row(Kind::Backend, KGATEWAY, "v1alpha1", "Backend", "backends"),
    WatchedKind {
        per_namespace: true,
        ..row(Kind::Secret, "", "v1", "Secret", "secrets")
    },
    row(Kind::Service, "", "v1", "Service", "services"),
    row(
        Kind::EndpointSlice,
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
    ),
];

impl WatchedKind {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// kube's description of the resource, for a dynamic `Api`.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: self.api_version(),
            kind: self.api_kind.to_string(),
            plural: self.plural.to_string(),
        }
    }

    /// The collection's URL path, cluster-wide or in `namespace`.
    pub fn path(&self, namespace: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) => format!("{root}/namespaces/{ns}/{}", self.plural),
            None => format!("{root}/{}", self.plural),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_snapshot_kind_is_watched() {
        let mut kinds: Vec<Kind> = WATCHED.iter().map(|w| w.kind).collect();
        kinds.dedup();
        assert_eq!(kinds.len(), 10, "{kinds:?}");
    }

    #[test]
    fn paths_follow_the_api_layout() {
        let secrets = WATCHED.iter().find(|w| w.kind == Kind::Secret).unwrap();
        assert_eq!(
            secrets.path(Some("apps")),
            "/api/v1/namespaces/apps/secrets"
        );
        assert_eq!(secrets.path(None), "/api/v1/secrets");
        assert_eq!(
            WATCHED[2].path(None),
            "/apis/gateway.networking.k8s.io/v1/gateways"
        );
        assert_eq!(WATCHED[2].api_version(), "gateway.networking.k8s.io/v1");
    }
}
