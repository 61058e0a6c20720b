//! Discovery documents and the other non-resource endpoints, so a client can find out what
//! is served (and notice what is not: a group/version turned off with
//! [`crate::Faults::serve_version`] disappears from discovery as well as answering 404).
//!
//! Both discovery forms are served: the legacy per-group documents (`APIVersions`,
//! `APIGroupList`, `APIGroup`, `APIResourceList`) and aggregated discovery
//! (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList` at `/api` and `/apis`) when the `Accept`
//! header asks for it, as kube-rs' `Discovery::run_aggregated` does.

use std::net::SocketAddr;

use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{self, Body};
use crate::faults::FaultState;
use crate::resources::{self, ResourceType, RESOURCES};
use crate::routes::Route;
use crate::status::ApiError;

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const STATUS_VERBS: [&str; 3] = ["get", "patch", "update"];
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the `Accept` header asks for aggregated discovery.
fn wants_aggregated(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .next()
            .is_some_and(|first| first.contains("as=APIGroupDiscoveryList"))
    })
}

/// Answers a non-resource route.
pub(crate) fn respond(
    route: &Route,
    faults: &FaultState,
    accept: Option<&str>,
    addr: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    let served_versions = |group: &str| -> Vec<&'static str> {
        resources::group_versions()
            .into_iter()
            .filter(|(g, v)| *g == group && faults.serves(g, v))
            .map(|(_, v)| v)
            .collect()
    };
    let document = match route {
        Route::Health => return Ok(body::text(StatusCode::OK, "ok")),
        Route::Version => json!({
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0-keyway-fakeapi",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z",
            "goVersion": "go1.24.0",
            "compiler": "gc",
            "platform": "linux/amd64"
        }),
        Route::CoreVersions if wants_aggregated(accept) => {
            return Ok(aggregated(&[""], faults));
        }
        Route::CoreVersions => json!({
            "kind": "APIVersions",
            "versions": served_versions(""),
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}],
        }),
        Route::Groups if wants_aggregated(accept) => {
            return Ok(aggregated(&named_groups(), faults));
        }
        Route::Groups => json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": named_groups()
                .into_iter()
                .map(|g| api_group(g, &served_versions(g)))
                .filter(|g| !g.is_null())
                .collect::<Vec<_>>(),
        }),
        Route::Group(group) => {
            let document = api_group(group, &served_versions(group));
            if group.is_empty() || document.is_null() {
                return Err(ApiError::path_not_found());
            }
            document
        }
        Route::GroupVersion { group, version } => {
            if !served_versions(group).contains(&version.as_str()) {
                return Err(ApiError::path_not_found());
            }
            let api_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            let mut list = Vec::new();
            for rt in in_version(group, version) {
                list.push(json!({
                    "name": rt.plural,
                    "singularName": rt.singular,
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": VERBS,
                    "shortNames": rt.short_names,
                }));
                if rt.status_subresource {
                    list.push(json!({
                        "name": format!("{}/status", rt.plural),
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": STATUS_VERBS,
                    }));
                }
            }
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": api_version, "resources": list})
        }
        Route::Resource(_) | Route::NotFound => return Err(ApiError::path_not_found()),
    };
    Ok(body::json(StatusCode::OK, &document))
}

/// Named (non-core) groups in table order.
fn named_groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for (group, _) in resources::group_versions() {
        if !group.is_empty() && !groups.contains(&group) {
            groups.push(group);
        }
    }
    groups
}

fn in_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceType> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.versions.contains(&version))
}

/// An `APIGroup`, or null when none of its versions is served.
fn api_group(group: &str, versions: &[&str]) -> Value {
    let Some(preferred) = versions.first() else {
        return Value::Null;
    };
    let entry = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions.iter().map(|v| entry(v)).collect::<Vec<_>>(),
        "preferredVersion": entry(preferred),
    })
}

fn aggregated(groups: &[&str], faults: &FaultState) -> Response<Body> {
    let items: Vec<Value> = groups
        .iter()
        .filter_map(|group| {
            let versions: Vec<Value> = resources::group_versions()
                .into_iter()
                .filter(|(g, v)| g == group && faults.serves(g, v))
                .map(|(g, v)| {
                    let resources: Vec<Value> = in_version(g, v)
                        .map(|rt| {
                            let kind = json!({"group": g, "version": v, "kind": rt.kind});
                            let subresources: Vec<Value> = if rt.status_subresource {
                                vec![json!({"subresource": "status", "responseKind": kind, "verbs": STATUS_VERBS})]
                            } else {
                                Vec::new()
                            };
                            json!({
                                "resource": rt.plural,
                                "responseKind": kind,
                                "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": rt.singular,
                                "verbs": VERBS,
                                "shortNames": rt.short_names,
                                "subresources": subresources,
                            })
                        })
                        .collect();
                    json!({"version": v, "freshness": "Current", "resources": resources})
                })
                .collect();
            (!versions.is_empty()).then(|| json!({"metadata": {"name": group}, "versions": versions}))
        })
        .collect();
    body::json_typed(
        StatusCode::OK,
        &json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items}),
        AGGREGATED,
    )
}
