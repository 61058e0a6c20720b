//! How stored objects are written to clients: in the version of the URL they were asked
//! through, whole or as `PartialObjectMetadata` (when the `Accept` header asks for it, as
//! kube-rs' `*_metadata` calls and metadata watchers do).

use serde_json::{json, Map, Value};

use crate::resources::{Origin, ResourceType};
use crate::status::ApiError;

/// What the client's `Accept` header asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Representation {
    Full,
    /// `application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`.
    Metadata,
}

/// Picks the first acceptable media range of an `Accept` header. Only JSON is produced;
/// other formats (protobuf, `as=Table`) are skipped and if nothing is left the answer is 406.
pub(crate) fn negotiate(accept: Option<&str>) -> Result<Representation, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Representation::Full);
    };
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        if !matches!(media.as_str(), "application/json" | "application/*" | "*/*") {
            continue;
        }
        let mut as_kind = None;
        let mut group = None;
        for param in parts {
            match param.split_once('=') {
                Some(("as", v)) => as_kind = Some(v),
                Some(("g", v)) => group = Some(v),
                _ => {}
            }
        }
        match (as_kind, group) {
            (None, _) => return Ok(Representation::Full),
            (Some("PartialObjectMetadata" | "PartialObjectMetadataList"), Some("meta.k8s.io")) => {
                return Ok(Representation::Metadata)
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable(accept))
}

/// One object, as GET, writes and watch events return it.
pub(crate) fn object(
    stored: &Value,
    rt: &ResourceType,
    version: &str,
    repr: Representation,
) -> Value {
    match repr {
        Representation::Full => {
            let mut out = stored.clone();
            if let Some(fields) = out.as_object_mut() {
                fields.insert("apiVersion".into(), rt.api_version(version).into());
                fields.insert("kind".into(), rt.kind.into());
            }
            out
        }
        Representation::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": stored.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

/// One item of a LIST. Built-in resources omit `apiVersion`/`kind` on items (only the list
/// carries them), custom resources keep them — clients must cope with both.
pub(crate) fn list_item(
    stored: &Value,
    rt: &ResourceType,
    version: &str,
    repr: Representation,
) -> Value {
    let mut out = object(stored, rt, version, repr);
    if repr == Representation::Full && rt.origin == Origin::BuiltIn {
        if let Some(fields) = out.as_object_mut() {
            fields.remove("apiVersion");
            fields.remove("kind");
        }
    }
    out
}

/// A `<Kind>List` (or `PartialObjectMetadataList`).
pub(crate) fn list(
    rt: &ResourceType,
    version: &str,
    repr: Representation,
    metadata: Map<String, Value>,
    items: Vec<Value>,
) -> Value {
    let (kind, api_version) = match repr {
        Representation::Full => (format!("{}List", rt.kind), rt.api_version(version)),
        Representation::Metadata => (
            "PartialObjectMetadataList".to_string(),
            "meta.k8s.io/v1".to_string(),
        ),
    };
    json!({
        "kind": kind,
        "apiVersion": api_version,
        "metadata": metadata,
        "items": items,
    })
}

/// The object of a BOOKMARK event: only type and resourceVersion (plus the
/// `k8s.io/initial-events-end` annotation that ends a streaming list's initial events).
pub(crate) fn bookmark(
    rt: &ResourceType,
    version: &str,
    repr: Representation,
    rv: u64,
    initial_events_end: bool,
) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let (kind, api_version) = match repr {
        Representation::Full => (rt.kind.to_string(), rt.api_version(version)),
        Representation::Metadata => (
            "PartialObjectMetadata".to_string(),
            "meta.k8s.io/v1".to_string(),
        ),
    };
    json!({"kind": kind, "apiVersion": api_version, "metadata": metadata})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        assert_eq!(negotiate(None).unwrap(), Representation::Full);
        assert_eq!(
            negotiate(Some("application/json")).unwrap(),
            Representation::Full
        );
        assert_eq!(
            negotiate(Some(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
            ))
            .unwrap(),
            Representation::Metadata
        );
        assert_eq!(
            negotiate(Some(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
            ))
            .unwrap(),
            Representation::Full
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf"))
                .unwrap_err()
                .code,
            406
        );
    }
}
