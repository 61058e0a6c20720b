//! URL paths: what a request names.
//!
//! ```text
//! /api/v1/{plural}[/{name}[/status]]                         core, cluster-scoped or all namespaces
//! /api/v1/namespaces/{ns}/{plural}[/{name}[/status]]         core, namespaced
//! /apis/{group}/{version}/...                                 the same shapes for named groups
//! /api, /api/v1, /apis, /apis/{group}, /apis/{group}/{version} discovery
//! /version, /healthz, /livez, /readyz
//! ```
//!
//! `/api/v1/namespaces/{name}/status` is the Namespace's status, not a collection named
//! `status` in namespace `{name}`; no resource is called `status`, so the shapes do not
//! collide.

use percent_encoding::percent_decode_str;

use crate::resources::{self, ResourceType};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Route {
    Health,
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`
    GroupVersion {
        group: String,
        version: String,
    },
    Resource(ResourcePath),
    NotFound,
}

/// A path naming a resource collection, one object, or its status.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ResourcePath {
    pub rt: &'static ResourceType,
    pub version: &'static str,
    /// The namespace of a namespaced path; `None` for cluster-scoped resources and for
    /// the all-namespaces form of namespaced ones.
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// Only ever `status` (other subresources answer 404).
    pub subresource: Option<String>,
}

pub(crate) fn parse(path: &str) -> Route {
    let mut segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    if segments.last().is_some_and(String::is_empty) {
        segments.pop();
    }
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => Route::Health,
        ["version"] => Route::Version,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group(group.to_string()),
        ["api", version, rest @ ..] => group_version("", version, rest),
        ["apis", group, version, rest @ ..] => group_version(group, version, rest),
        _ => Route::NotFound,
    }
}

fn group_version(group: &str, version: &str, rest: &[&str]) -> Route {
    let (namespace, plural, tail) = match rest {
        [] => {
            return Route::GroupVersion {
                group: group.to_string(),
                version: version.to_string(),
            }
        }
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => {
            (Some(*ns), *plural, tail)
        }
        [plural, tail @ ..] => (None, *plural, tail),
    };
    let Some(rt) = resources::by_path(group, version, plural) else {
        return Route::NotFound;
    };
    let version = rt
        .versions
        .iter()
        .find(|v| **v == version)
        .expect("by_path matched this version");
    if namespace.is_some() && !rt.namespaced {
        return Route::NotFound;
    }
    let (name, subresource) = match tail {
        [] => (None, None),
        [name] => (Some(*name), None),
        [name, "status"] if rt.status_subresource => (Some(*name), Some("status")),
        _ => return Route::NotFound,
    };
    // A namespaced resource's objects are only addressable within their namespace.
    if name.is_some() && rt.namespaced && namespace.is_none() {
        return Route::NotFound;
    }
    Route::Resource(ResourcePath {
        rt,
        version,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        subresource: subresource.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourcePath {
        match parse(path) {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn shapes() {
        let r = resource("/api/v1/namespaces/default/secrets");
        assert_eq!(
            (r.rt.plural, r.namespace.as_deref(), r.name),
            ("secrets", Some("default"), None)
        );
        let r = resource("/api/v1/secrets");
        assert_eq!((r.rt.plural, r.namespace), ("secrets", None));
        let r = resource("/api/v1/namespaces/kube-system");
        assert_eq!(
            (r.rt.plural, r.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let r = resource("/api/v1/namespaces/kube-system/status");
        assert_eq!(
            (r.rt.plural, r.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
        let r = resource("/apis/gateway.networking.k8s.io/v1beta1/namespaces/a/referencegrants/b");
        assert_eq!((r.version, r.name.as_deref()), ("v1beta1", Some("b")));
        let r = resource("/apis/gateway.networking.k8s.io/v1/gatewayclasses/kw/status");
        assert_eq!(r.subresource.as_deref(), Some("status"));
        for missing in [
            "/api/v1/secrets/x",
            "/api/v1/namespaces/a/secrets/x/status",
            "/apis/gateway.networking.k8s.io/v1beta1/namespaces/a/gateways",
            "/api/v2/secrets",
            "/apis/gateway.networking.k8s.io/v1/namespaces/a/gatewayclasses",
            "/nope",
        ] {
            assert_eq!(parse(missing), Route::NotFound, "{missing}");
        }
        assert_eq!(parse("/apis"), Route::Groups);
        assert_eq!(
            parse("/api/v1"),
            Route::GroupVersion {
                group: String::new(),
                version: "v1".into()
            }
        );
    }
}
