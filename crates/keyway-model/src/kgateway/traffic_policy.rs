//! `TrafficPolicy`: kgateway's policy attachment resource. Keyway implements its `apiKeyAuth`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::LabelSelector;

/// Spec of a kgateway `TrafficPolicy`.
///
/// Attachment (`targetRefs`, `targetSelectors`) follows Gateway API policy attachment; the
/// policy content Keyway enforces is [`ApiKeyAuth`].
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.kgateway.dev",
    version = "v1alpha1",
    kind = "TrafficPolicy",
    plural = "trafficpolicies",
    namespaced,
    status = "PolicyStatus",
    derive = "Default",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    /// Objects in the policy's namespace this policy applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub target_refs: Vec<TargetRef>,
    /// Objects in the policy's namespace, selected by label, this policy applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_selectors: Vec<TargetSelector>,
    /// API key authentication. Written but empty (`apiKeyAuth:` with nothing after it,
    /// `apiKeyAuth: ~`) it is kept as [`ApiKeyAuth::is_null`], so the policy fails closed
    /// instead of counting as a policy without authentication.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_even_if_null"
    )]
    pub api_key_auth: Option<ApiKeyAuth>,
    /// Why the spec could not be read as a whole, when a source kept only its targets
    /// (the Kubernetes source cannot refuse an object the API server holds). Set by the
    /// reader, never written; the compiler fails such a policy closed on its targets.
    #[serde(skip)]
    #[schemars(skip)]
    pub undecodable: Option<String>,
    /// Every other `TrafficPolicy` feature: accepted so kgateway manifests load, reported as
    /// not supported by Keyway.
    #[serde(flatten)]
    #[schemars(skip)]
    pub unsupported: BTreeMap<String, serde_json::Value>,
}

/// A reference to a Gateway (optionally one listener) or an HTTPRoute (optionally one rule).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// API group of the target (`gateway.networking.k8s.io`).
    #[serde(default)]
    pub group: String,
    /// `Gateway` or `HTTPRoute`.
    pub kind: String,
    /// Name of the target, in the policy's namespace.
    pub name: String,
    /// Listener name of a Gateway, or rule name of an HTTPRoute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// Selects targets of one kind by label, in the policy's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSelector {
    /// API group of the targets.
    #[serde(default)]
    pub group: String,
    /// `Gateway` or `HTTPRoute`.
    pub kind: String,
    /// Labels a target must carry (required, not empty: an empty selector would select
    /// every target of the kind).
    pub match_labels: BTreeMap<String, String>,
    /// Listener or rule name, as for `targetRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// `spec.apiKeyAuth`: authenticate requests by an API key held in Kubernetes Secrets.
///
/// Exactly one of `secretRef`, `secretSelector` and `disable` must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// Where the key is read from; `[{header: api-key}]` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub key_sources: Vec<KeySource>,
    /// Forward the key to the upstream instead of removing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_credential: Option<bool>,
    /// Header that receives the authenticated client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub client_id_header: Option<String>,
    /// One Secret holding the keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// All Secrets matching these labels hold keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_selector: Option<LabelSelector>,
    /// Turn off API key auth inherited from a less specific attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable: Option<Disable>,
    /// Keyway extension: metadata name (of the client's Secret entry) to the header set
    /// from it on an allowed request, replacing any value the client sent; removed when
    /// the client has no such metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 16))]
    pub metadata_headers: Option<std::collections::BTreeMap<String, String>>,
    /// The field was present with a null value: set by the reader, never written.
    #[serde(skip)]
    #[schemars(skip)]
    pub is_null: bool,
}

/// `apiKeyAuth: ~` is present, not absent: it becomes an [`ApiKeyAuth`] marked null.
fn present_even_if_null<'de, D>(d: D) -> Result<Option<ApiKeyAuth>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value: Option<ApiKeyAuth> = Option::deserialize(d)?;
    Ok(Some(value.unwrap_or(ApiKeyAuth {
        is_null: true,
        ..ApiKeyAuth::default()
    })))
}

/// One place a key may be presented. Each set field is a source of its own.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySource {
    /// Request header name (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub header: Option<String>,
    /// Query parameter name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub query: Option<String>,
    /// Cookie name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub cookie: Option<String>,
}

/// A reference to a Secret, as Gateway API's `SecretObjectReference`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Must be empty (core group) when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Must be `Secret` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the Secret.
    pub name: String,
    /// Namespace of the Secret; the policy's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The empty object `disable: {}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Disable {}

/// Status of a policy: one entry per ancestor (Gateway) it is attached through.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// Conditions per ancestor.
    #[serde(default)]
    #[schemars(schema_with = "ancestors_schema")]
    pub ancestors: Vec<serde_json::Value>,
}

/// Gateway API's `PolicyAncestorStatus` list: at most 16 entries, each an object
/// (`ancestorRef`, `controllerName`, `conditions`) kept whole. An apiextensions/v1 schema
/// must type every array's items, and an untyped entry would be pruned to `{}` on write.
fn ancestors_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 16,
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}
