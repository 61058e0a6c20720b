//! From what the API server sends to the snapshot's typed objects.
//!
//! Objects arrive untyped (kube's `DynamicObject`), so one object that does not fit its
//! type cannot stop its kind's list: it is decoded here, alone, and a failure is reported
//! for that object only. Secrets are digested on arrival ([`Secret::from_k8s`]) and their
//! plaintext dropped with the raw object. A TrafficPolicy whose spec cannot be decoded
//! keeps its targets, so the compiler can refuse them (500) instead of serving them open.

use std::hash::{BuildHasher, Hash, Hasher};

use base64::Engine as _;
use keyway_model::core::{EndpointSlice, Namespace, Service};
use keyway_model::gateway::{Gateway, GatewayClass, HttpRoute, ReferenceGrant};
use keyway_model::kgateway::traffic_policy::{TargetRef, TargetSelector, TrafficPolicySpec};
use keyway_model::{Backend, Kind, Secret, TrafficPolicy};
use kube::api::DynamicObject;
use serde::de::DeserializeOwned;

/// One decoded object of any kind Keyway reads.
#[derive(Clone, Debug)]
pub enum Decoded {
    /// A GatewayClass.
    GatewayClass(GatewayClass),
    /// A Namespace.
    Namespace(Namespace),
    /// A Gateway.
    Gateway(Gateway),
    /// An HTTPRoute.
    HttpRoute(HttpRoute),
    /// A ReferenceGrant (either version).
    ReferenceGrant(ReferenceGrant),
    /// A TrafficPolicy, possibly kept only by its targets.
    TrafficPolicy(TrafficPolicy),
    /// A Backend.
    Backend(Backend),
    /// A Secret, digested.
    Secret(Secret),
    /// A Service.
    Service(Service),
    /// An EndpointSlice.
    EndpointSlice(EndpointSlice),
}

/// An object as kept by a view: decoded (or why not), and a hash of what the compiler
/// reads from it, so that an update that changes nothing read (status, resourceVersion,
/// managedFields) is recognised and does not recompile.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Hash of the object without status and bookkeeping metadata.
    pub content: u64,
    /// The object, or why it could not be read.
    pub value: Result<Decoded, String>,
}

/// Decodes one object of `kind`. `hasher` is the process's keyed hasher: the content hash
/// covers Secret data, so it must not be a fixed function an observer could invert.
pub fn decode(kind: Kind, obj: DynamicObject, hasher: &impl BuildHasher) -> Entry {
    let mut json = match serde_json::to_value(&obj) {
        Ok(j) => j,
        Err(e) => {
            return Entry {
                content: 0,
                value: Err(format!("cannot re-encode: {e}")),
            }
        }
    };
    drop(obj);
    let content = content_hash(kind, &json, hasher);
    let value = match kind {
        Kind::GatewayClass => typed(json).map(Decoded::GatewayClass),
        Kind::Namespace => typed(json).map(Decoded::Namespace),
        Kind::Gateway => typed(json).map(Decoded::Gateway),
        Kind::HttpRoute => typed(json).map(Decoded::HttpRoute),
        Kind::ReferenceGrant => {
            // Both versions share one schema; the typed value is the v1 one.
            json["apiVersion"] = "gateway.networking.k8s.io/v1".into();
            typed(json).map(Decoded::ReferenceGrant)
        }
        Kind::TrafficPolicy => Ok(Decoded::TrafficPolicy(traffic_policy(json))),
        Kind::Backend => typed(json).map(Decoded::Backend),
        Kind::Secret => secret(json).map(Decoded::Secret),
        Kind::Service => typed(json).map(Decoded::Service),
        Kind::EndpointSlice => typed(json).map(Decoded::EndpointSlice),
    };
    Entry { content, value }
}

/// Hashes the object as Keyway reads it: `status` and the metadata the API server
/// changes on every write (`resourceVersion`, `managedFields`) are left out, except a
/// Service's status: its load-balancer addresses are the Gateway addresses the status
/// writer reports (`--service`). `generation` counts: it moves only with the spec, and the
/// status written must carry the current one (a spec changed and changed back over a
/// relist is the same content at a new generation).
fn content_hash(kind: Kind, json: &serde_json::Value, hasher: &impl BuildHasher) -> u64 {
    let mut h = hasher.build_hasher();
    if let Some(map) = json.as_object() {
        for (k, v) in map {
            match k.as_str() {
                "status" if kind != Kind::Service => {}
                "metadata" => {
                    if let Some(meta) = v.as_object() {
                        for (mk, mv) in meta {
                            if !matches!(mk.as_str(), "resourceVersion" | "managedFields") {
                                mk.hash(&mut h);
                                mv.to_string().hash(&mut h);
                            }
                        }
                    }
                }
                _ => {
                    k.hash(&mut h);
                    v.to_string().hash(&mut h);
                }
            }
        }
    }
    h.finish()
}

fn typed<T: DeserializeOwned>(json: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(json).map_err(|e| e.to_string())
}

/// A TrafficPolicy, or, when its spec cannot be decoded, one holding only its targets
/// and the reason, which the compiler refuses on every target.
fn traffic_policy(json: serde_json::Value) -> TrafficPolicy {
    match serde_json::from_value::<TrafficPolicy>(json.clone()) {
        Ok(p) => p,
        Err(e) => {
            let metadata = serde_json::from_value(json["metadata"].clone()).unwrap_or_default();
            let spec = &json["spec"];
            // Each target on its own: one malformed entry must not hide the others.
            let list = |field: &str| -> Vec<serde_json::Value> {
                spec[field].as_array().cloned().unwrap_or_default()
            };
            let target_refs: Vec<TargetRef> = list("targetRefs")
                .into_iter()
                .filter_map(|t| serde_json::from_value(t).ok())
                .collect();
            let target_selectors: Vec<TargetSelector> = list("targetSelectors")
                .into_iter()
                .filter_map(|t| serde_json::from_value(t).ok())
                .collect();
            TrafficPolicy {
                metadata,
                spec: TrafficPolicySpec {
                    target_refs,
                    target_selectors,
                    undecodable: Some(e.to_string()),
                    ..Default::default()
                },
                status: None,
            }
        }
    }
}

/// A Secret, digested. Messages name entries, never values (serde's would quote them).
fn secret(json: serde_json::Value) -> Result<Secret, String> {
    let metadata =
        serde_json::from_value(json["metadata"].clone()).map_err(|e| format!("metadata: {e}"))?;
    let type_ = json["type"].as_str().map(str::to_string);
    let mut data = std::collections::BTreeMap::new();
    if let Some(entries) = json["data"].as_object() {
        for (name, value) in entries {
            let text = value
                .as_str()
                .ok_or_else(|| format!("data.{name}: not a string"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| format!("data.{name}: not valid base64"))?;
            data.insert(name.clone(), k8s_openapi::ByteString(bytes));
        }
    }
    let mut string_data = std::collections::BTreeMap::new();
    if let Some(entries) = json["stringData"].as_object() {
        for (name, value) in entries {
            let text = value
                .as_str()
                .ok_or_else(|| format!("stringData.{name}: not a string"))?;
            string_data.insert(name.clone(), text.to_string());
        }
    }
    Ok(Secret::from_k8s(k8s_openapi::api::core::v1::Secret {
        metadata,
        type_,
        data: Some(data),
        string_data: Some(string_data),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(json: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json).unwrap()
    }

    fn state() -> std::collections::hash_map::RandomState {
        std::collections::hash_map::RandomState::new()
    }

    #[test]
    fn status_only_changes_hash_the_same() {
        let h = state();
        let a = serde_json::json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "apps", "resourceVersion": "1", "generation": 1},
            "spec": {"hostnames": ["a.example"]}});
        let mut b = a.clone();
        b["metadata"]["resourceVersion"] = "7".into();
        b["status"] = serde_json::json!({"parents": []});
        let mut c = a.clone();
        c["spec"]["hostnames"] = serde_json::json!(["b.example"]);
        let mut d = a.clone();
        d["metadata"]["generation"] = 3.into();
        let ed = decode(Kind::HttpRoute, dynamic(d), &h);
        let ea = decode(Kind::HttpRoute, dynamic(a), &h);
        let eb = decode(Kind::HttpRoute, dynamic(b), &h);
        let ec = decode(Kind::HttpRoute, dynamic(c), &h);
        assert!(ea.value.is_ok());
        assert_eq!(ea.content, eb.content);
        assert_ne!(ea.content, ec.content);
        assert_ne!(ea.content, ed.content, "observedGeneration must follow");
    }

    #[test]
    fn an_undecodable_policy_keeps_its_targets_and_the_reason() {
        let json = serde_json::json!({"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": "TrafficPolicy",
            "metadata": {"name": "p", "namespace": "apps"},
            "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "r"}],
                     "apiKeyAuth": {"secretRef": {"name": 7}}}});
        let Ok(Decoded::TrafficPolicy(p)) =
            decode(Kind::TrafficPolicy, dynamic(json), &state()).value
        else {
            panic!("a policy, even undecodable, is kept");
        };
        assert_eq!(p.spec.target_refs.len(), 1);
        assert_eq!(p.spec.target_refs[0].name, "r");
        assert!(p.spec.undecodable.is_some());
        assert!(p.spec.api_key_auth.is_none());
    }

    #[test]
    fn secrets_are_digested_and_errors_never_quote_values() {
        let json = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "k", "namespace": "apps"}, "data": {"alice": "azE="}});
        let Ok(Decoded::Secret(s)) = decode(Kind::Secret, dynamic(json), &state()).value else {
            panic!("decoded");
        };
        assert_eq!(s.keys.entries[0].0, keyway_model::digest(b"k1"));
        assert!(s.entries.is_empty(), "no plaintext kept");
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "k"}, "data": {"alice": "sup3r-s3cret!"}});
        let err = decode(Kind::Secret, dynamic(bad), &state())
            .value
            .unwrap_err();
        assert_eq!(err, "data.alice: not valid base64");
    }
}
