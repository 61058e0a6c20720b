//! What the real registry strategies of a few built-in kinds do to objects on write, where
//! a client would notice the difference:
//!
//! - Secret: `stringData` is write-only — merged into `data` (base64) and dropped; `type`
//!   defaults to `Opaque` and is immutable; `data` values must be valid base64; an
//!   `immutable: true` Secret rejects changes to `data` and `immutable`.
//! - Namespace: gets the `kubernetes.io/metadata.name` label and `status.phase: Active`.
//!
//! Other defaulting (Service cluster IPs, ports, ...) is not imitated.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::meta;
use crate::resources::ResourceType;
use crate::status::{ApiError, Cause};

const STANDARD: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Defaults and checks for a new object (already carrying its name).
pub(crate) fn on_create(rt: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    match (rt.group, rt.kind) {
        ("", "Secret") => normalize_secret(rt, object),
        ("", "Namespace") => {
            namespace_label(object);
            let status = object
                .as_object_mut()
                .expect("objects are JSON objects")
                .entry("status")
                .or_insert_with(|| json!({}));
            if let Some(status) = status.as_object_mut() {
                status.entry("phase").or_insert_with(|| "Active".into());
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Defaults and checks for a change to `old`.
pub(crate) fn on_update(
    rt: &ResourceType,
    old: &Value,
    object: &mut Value,
) -> Result<(), ApiError> {
    match (rt.group, rt.kind) {
        ("", "Secret") => {
            normalize_secret(rt, object)?;
            let name = meta::meta_str(object, "name")
                .unwrap_or_default()
                .to_string();
            if old.get("type") != object.get("type") {
                return Err(ApiError::invalid(
                    rt,
                    &name,
                    vec![Cause {
                        field: "type".into(),
                        message: format!(
                            "Invalid value: {}: field is immutable",
                            object.get("type").unwrap_or(&Value::Null)
                        ),
                        reason: "FieldValueInvalid",
                    }],
                ));
            }
            if old.get("immutable") == Some(&Value::Bool(true)) {
                let mut causes = Vec::new();
                if old.get("data") != object.get("data") {
                    causes.push(Cause {
                        field: "data".into(),
                        message: "Forbidden: field is immutable when `immutable` is set".into(),
                        reason: "FieldValueForbidden",
                    });
                }
                if old.get("immutable") != object.get("immutable") {
                    causes.push(Cause {
                        field: "immutable".into(),
                        message: "Forbidden: field is immutable when `immutable` is set".into(),
                        reason: "FieldValueForbidden",
                    });
                }
                if !causes.is_empty() {
                    return Err(ApiError::invalid(rt, &name, causes));
                }
            }
            Ok(())
        }
        ("", "Namespace") => {
            namespace_label(object);
            Ok(())
        }
        _ => Ok(()),
    }
}

fn normalize_secret(rt: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    let fields = object.as_object_mut().expect("objects are JSON objects");
    if fields
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        fields.insert("type".into(), "Opaque".into());
    }
    if let Some(Value::Object(data)) = fields.get("data") {
        for (key, value) in data {
            // null reads as empty bytes, as Go decodes it.
            let ok = value.is_null() || value.as_str().is_some_and(|v| STANDARD.decode(v).is_ok());
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a {}: illegal base64 data in data[{key:?}]",
                    rt.kind
                )));
            }
        }
    }
    if let Some(Value::Object(string_data)) = fields.remove("stringData") {
        let data = fields
            .entry("data")
            .or_insert_with(|| Value::Object(Map::new()));
        if !data.is_object() {
            *data = Value::Object(Map::new());
        }
        let data = data.as_object_mut().expect("just made an object");
        for (key, value) in string_data {
            let text = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            data.insert(key, STANDARD.encode(text).into());
        }
    }
    Ok(())
}

fn namespace_label(object: &mut Value) {
    let name = meta::meta_str(object, "name")
        .unwrap_or_default()
        .to_string();
    let meta = meta::metadata_mut(object);
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if !labels.is_object() {
        *labels = Value::Object(Map::new());
    }
    labels
        .as_object_mut()
        .expect("just made an object")
        .insert("kubernetes.io/metadata.name".into(), name.into());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_api_version_kind;

    #[test]
    fn secret_string_data_becomes_data() {
        let (rt, _) = by_api_version_kind("v1", "Secret").unwrap();
        let mut s = json!({"metadata": {"name": "a"}, "data": {"x": "eA=="}, "stringData": {"y": "hi", "x": "over"}});
        on_create(rt, &mut s).unwrap();
        assert_eq!(
            s,
            json!({"metadata": {"name": "a"}, "type": "Opaque", "data": {"x": "b3Zlcg==", "y": "aGk="}})
        );
        let mut bad = json!({"metadata": {"name": "a"}, "data": {"x": "%%%"}});
        assert_eq!(on_create(rt, &mut bad).unwrap_err().code, 400);
        let mut retyped = s.clone();
        retyped["type"] = "kubernetes.io/tls".into();
        assert_eq!(on_update(rt, &s, &mut retyped).unwrap_err().code, 422);
    }
}
