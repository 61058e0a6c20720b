//! `Backend`: kgateway's upstream resource. Keyway implements the `static` type.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Spec of a kgateway `Backend`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.kgateway.dev",
    version = "v1alpha1",
    kind = "Backend",
    plural = "backends",
    namespaced,
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct BackendSpec {
    /// Backend type; Keyway serves `Static`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Fixed list of hosts.
    #[serde(default, rename = "static", skip_serializing_if = "Option::is_none")]
    pub static_: Option<StaticBackend>,
    /// Other backend types (AI, AWS, ...): accepted so manifests load, reported as unsupported.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: std::collections::BTreeMap<String, serde_json::Value>,
}

/// `spec.static`: a fixed set of upstream hosts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticBackend {
    /// Upstream hosts; requests are balanced across them.
    #[schemars(length(min = 1))]
    pub hosts: Vec<StaticHost>,
}

/// One upstream address: a DNS name or an IP, and a port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct StaticHost {
    /// DNS name or IP address.
    #[schemars(length(min = 1))]
    pub host: String,
    /// TCP port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}
