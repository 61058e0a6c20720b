//! The kind table: every resource the fake server knows, and how each is served.
//!
//! A real API server learns its resources from compiled-in types and from
//! CustomResourceDefinitions; the differences between those two origins show up on the wire
//! (see [`Origin`]), so the table records which one each resource imitates.

/// Where a resource comes from in a real cluster. The two origins follow different
/// registry strategies, and clients notice:
///
/// | | built-in | custom resource |
/// |---|---|---|
/// | `application/strategic-merge-patch+json` | accepted | 415 Unsupported Media Type |
/// | PUT without `metadata.resourceVersion` | allowed (unconditional update) | 422 Invalid |
/// | DELETE response body | `Status` with `status: Success` | the deleted object |
/// | LIST items | without `apiVersion`/`kind` | with `apiVersion`/`kind` |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    BuiltIn,
    Custom,
}

/// Which validation a resource applies to `metadata.name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// RFC 1123 subdomain (most resources).
    Subdomain,
    /// RFC 1123 label (namespaces).
    Label,
    /// RFC 1035 label (services: the name becomes a DNS label that must start with a letter).
    Label1035,
}

/// One resource (a group and plural name), possibly served under several versions that all
/// share one storage, like a multi-version CRD: an object stored once appears with the
/// `apiVersion` of whichever URL it is read through.
#[derive(Debug, PartialEq)]
pub(crate) struct ResourceType {
    pub group: &'static str,
    /// Served versions; the first one is the preferred (and storage) version.
    pub versions: &'static [&'static str],
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    /// With a status subresource, writes to the main resource ignore `status` and writes to
    /// `/status` change nothing but `status`.
    pub status_subresource: bool,
    pub origin: Origin,
    pub name_rule: NameRule,
    pub short_names: &'static [&'static str],
    /// Fields usable in a field selector besides `metadata.name` and `metadata.namespace`.
    pub extra_selectable_fields: &'static [&'static str],
}

const GATEWAY_API: &str = "gateway.networking.k8s.io";
const KGATEWAY: &str = "gateway.kgateway.dev";

/// Every resource served. The order is the order of discovery documents.
pub(crate) static RESOURCES: [ResourceType; 12] = [
    ResourceType {
        group: "",
        versions: &["v1"],
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        status_subresource: true,
        origin: Origin::BuiltIn,
        name_rule: NameRule::Label,
        short_names: &["ns"],
        extra_selectable_fields: &["status.phase"],
    },
    ResourceType {
        group: "",
        versions: &["v1"],
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        status_subresource: false,
        origin: Origin::BuiltIn,
        name_rule: NameRule::Subdomain,
        short_names: &[],
        extra_selectable_fields: &["type"],
    },
    ResourceType {
        group: "",
        versions: &["v1"],
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        status_subresource: true,
        origin: Origin::BuiltIn,
        name_rule: NameRule::Label1035,
        short_names: &["svc"],
        extra_selectable_fields: &["spec.clusterIP", "spec.type"],
    },
    ResourceType {
        group: "",
        versions: &["v1"],
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        status_subresource: false,
        origin: Origin::BuiltIn,
        name_rule: NameRule::Subdomain,
        short_names: &["cm"],
        extra_selectable_fields: &[],
    },
    ResourceType {
        group: "discovery.k8s.io",
        versions: &["v1"],
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        status_subresource: false,
        origin: Origin::BuiltIn,
        name_rule: NameRule::Subdomain,
        short_names: &[],
        extra_selectable_fields: &[],
    },
    ResourceType {
        group: "coordination.k8s.io",
        versions: &["v1"],
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        status_subresource: false,
        origin: Origin::BuiltIn,
        name_rule: NameRule::Subdomain,
        short_names: &[],
        extra_selectable_fields: &[],
    },
    ResourceType {
        group: GATEWAY_API,
        versions: &["v1"],
        plural: "gatewayclasses",
        singular: "gatewayclass",
        kind: "GatewayClass",
        namespaced: false,
        status_subresource: true,
        origin: Origin::Custom,
        name_rule: NameRule::Subdomain,
        short_names: &["gc"],
        extra_selectable_fields: &[],
    },
    ResourceType {
        group: GATEWAY_API,
        versions: &["v1"],
        plural: "gateways",
        singular: "gateway",
        kind: "Gateway",
        namespaced: true,
        status_subresource: true,
        origin: Origin::Custom,
        name_rule: NameRule::Subdomain,
        short_names: &["gtw"],
        extra_selectable_fields: &[],
    },
    ResourceType {
        group: GATEWAY_API,
        versions: &["v1"],
        plural: "httproutes",
        singular: "httproute",
        kind: "HTTPRoute",
        namespaced: true,
        status_subresource: true,
        origin: Origin::Custom,
        name_rule: NameRule::Subdomain,
        short_names: &[],
        extra_selectable_fields: &[],
    },
    ResourceType {
        group: GATEWAY_API,
        versions: &["v1", "v1beta1"],
        plural: "referencegrants",
        singular: "referencegrant",
        kind: "ReferenceGrant",
        namespaced: true,
        status_subresource: false,
        origin: Origin::Custom,
        name_rule: NameRule::Subdomain,
        short_names: &["refgrant"],
        extra_selectable_fields: &[],
    },
    ResourceType {
        group: KGATEWAY,
        versions: &["v1alpha1"],
        plural: "trafficpolicies",
        singular: "trafficpolicy",
        kind: "TrafficPolicy",
        namespaced: true,
        status_subresource: true,
        origin: Origin::Custom,
        name_rule: NameRule::Subdomain,
        short_names: &[],
        extra_selectable_fields: &[],
    },
    ResourceType {
        group: KGATEWAY,
        versions: &["v1alpha1"],
        plural: "backends",
        singular: "backend",
        kind: "Backend",
        namespaced: true,
        status_subresource: true,
        origin: Origin::Custom,
        name_rule: NameRule::Subdomain,
        short_names: &[],
        extra_selectable_fields: &[],
    },
];

impl ResourceType {
    /// Position in [`RESOURCES`], used to index per-resource storage.
    pub(crate) fn index(&'static self) -> usize {
        RESOURCES
            .iter()
            .position(|r| std::ptr::eq(r, self))
            .expect("every ResourceType lives in RESOURCES")
    }

    /// `apiVersion` as written in objects: `v1` for core, `group/version` otherwise.
    pub(crate) fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// The storage version, in which objects are kept.
    pub(crate) fn storage_version(&self) -> &'static str {
        self.versions[0]
    }

    /// `plural` or `plural.group`, the way API server messages name a resource.
    pub(crate) fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The resource served at `group/version/plural`, if any (ignoring served/unserved toggles).
pub(crate) fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural && r.versions.contains(&version))
}

/// The resource for an object's `apiVersion` and `kind`, with the version named.
pub(crate) fn by_api_version_kind(
    api_version: &str,
    kind: &str,
) -> Option<(&'static ResourceType, &'static str)> {
    let (group, version) = split_api_version(api_version);
    RESOURCES.iter().find_map(|r| {
        let v = r.versions.iter().find(|v| **v == version)?;
        (r.group == group && r.kind == kind).then_some((r, *v))
    })
}

/// Resources a test names by kind, plural, singular or short name (case-insensitive).
pub(crate) fn by_name(name: &str) -> Vec<&'static ResourceType> {
    RESOURCES
        .iter()
        .filter(|r| {
            r.kind.eq_ignore_ascii_case(name)
                || r.plural.eq_ignore_ascii_case(name)
                || r.singular.eq_ignore_ascii_case(name)
                || r.short_names.iter().any(|s| s.eq_ignore_ascii_case(name))
        })
        .collect()
}

/// Splits `group/version` (or plain `version` for the core group).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

/// Every group/version pair in the table, in table order, without duplicates.
pub(crate) fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in &RESOURCES {
        for v in r.versions {
            if !out.contains(&(r.group, *v)) {
                out.push((r.group, v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_agree() {
        let (rg, v) =
            by_api_version_kind("gateway.networking.k8s.io/v1beta1", "ReferenceGrant").unwrap();
        assert_eq!(v, "v1beta1");
        assert!(std::ptr::eq(
            rg,
            by_path(GATEWAY_API, "v1", "referencegrants").unwrap()
        ));
        assert!(by_api_version_kind("gateway.networking.k8s.io/v1beta1", "Gateway").is_none());
        let (secret, _) = by_api_version_kind("v1", "Secret").unwrap();
        assert_eq!(secret.api_version("v1"), "v1");
        assert_eq!(by_name("svc").len(), 1);
        for (i, r) in RESOURCES.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
