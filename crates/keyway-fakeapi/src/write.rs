//! Writes: create (POST), replace (PUT), patch (PATCH), delete (DELETE), for the main
//! resource and its `/status` subresource, following the generic registry's rules:
//!
//! - the server owns `uid`, `creationTimestamp`, `resourceVersion`, `generation` and the
//!   deletion fields; what a client sends there is ignored (or, for `resourceVersion` and
//!   `uid` on updates, taken as a precondition: stale → 409 Conflict);
//! - `generation` starts at 1 and goes up when anything outside `metadata` and `status`
//!   changes (here for every kind; real built-ins differ in whether they track it);
//! - with a status subresource, the main resource ignores `status` and `/status` changes
//!   nothing else;
//! - an update that changes nothing writes nothing: no new resourceVersion, no event;
//! - DELETE of an object with finalizers only sets `deletionTimestamp`; the object goes when
//!   an update empties its finalizers.
//!
//! Every committed write goes through [`Store`], which emits the watch event.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::defaults;
use crate::meta::{self, meta_str};
use crate::resources::ResourceType;
use crate::status::{ApiError, Cause};
use crate::store::{ObjectKey, Store};

/// Which parts of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// The main resource: everything but `status` when there is a status subresource.
    Main,
    /// The `/status` subresource: only `status`.
    Status,
    /// Everything (the test-facing API, which sets up objects with their status).
    Whole,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CreateOptions {
    pub dry_run: bool,
    /// Keep a given `status` although the resource has a status subresource.
    pub keep_status: bool,
    /// Reject a `metadata.resourceVersion` in the body, as POST does.
    pub reject_resource_version: bool,
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UpdateOptions {
    pub dry_run: bool,
    /// A PUT on a custom resource must carry `metadata.resourceVersion`
    /// (custom resources do not allow unconditional updates).
    pub require_resource_version: bool,
}

/// The patch formats of `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`: applied as a merge patch (lists are
    /// replaced, not merged by key); refused for custom resources, as the real server does.
    Strategic,
    /// `application/apply-patch+yaml`: server-side apply, approximated as a merge of the
    /// given fields into the live object (no field ownership, so no conflicts and no removal
    /// of fields a manager stopped applying).
    Apply,
}

impl PatchType {
    pub(crate) const MEDIA_TYPES: [&'static str; 4] = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];

    pub(crate) fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media.to_ascii_lowercase().as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct DeleteOptions {
    pub dry_run: bool,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// What a DELETE did.
pub(crate) enum Deleted {
    /// The object is gone; this was its last state.
    Removed(Arc<Value>),
    /// The object has finalizers: it now carries `deletionTimestamp` and stays until they
    /// are removed.
    Finalizing(Arc<Value>),
}

/// Creates an object; `namespace` is the request's (None for cluster-scoped resources).
pub(crate) fn create(
    store: &mut Store,
    rt: &'static ResourceType,
    version: &str,
    namespace: Option<&str>,
    mut object: Value,
    options: CreateOptions,
) -> Result<Arc<Value>, ApiError> {
    if !object.is_object() {
        return Err(not_an_object(rt));
    }
    check_type_meta(rt, version, &object)?;
    set_type_meta(rt, &mut object);
    let namespace = scope(rt, &mut object, namespace)?;
    let name = match meta_str(&object, "name") {
        Some(name) => name.to_string(),
        None => match meta_str(&object, "generateName") {
            Some(prefix) => unused_generated_name(store, rt, namespace.as_deref(), prefix),
            None => {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    vec![Cause {
                        field: "metadata.name".into(),
                        message: "Required value: name or generateName is required".into(),
                        reason: "FieldValueRequired",
                    }],
                ))
            }
        },
    };
    meta::validate_name(&name, rt.name_rule).map_err(|why| {
        ApiError::invalid(
            rt,
            &name,
            vec![Cause {
                field: "metadata.name".into(),
                message: format!("Invalid value: \"{name}\": {why}"),
                reason: "FieldValueInvalid",
            }],
        )
    })?;
    if options.reject_resource_version && meta_str(&object, "resourceVersion").is_some() {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let m = meta::metadata_mut(&mut object);
    m.insert("name".into(), name.clone().into());
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        m.remove(field);
    }
    m.insert("uid".into(), meta::new_uid().into());
    m.insert("creationTimestamp".into(), meta::now_rfc3339().into());
    m.insert("generation".into(), 1.into());
    if rt.status_subresource && !options.keep_status {
        remove_field(&mut object, "status");
    }
    defaults::on_create(rt, &mut object)?;
    let key = ObjectKey::new(namespace.as_deref(), &name);
    if store.get(rt, &key).is_some() {
        return Err(ApiError::already_exists(rt, &name));
    }
    if options.dry_run {
        return Ok(Arc::new(object));
    }
    Ok(store.put(rt, key, object))
}

/// Replaces (part of) the object at `key` with `new`.
pub(crate) fn update(
    store: &mut Store,
    rt: &'static ResourceType,
    version: &str,
    key: &ObjectKey,
    new: Value,
    part: Part,
    options: UpdateOptions,
) -> Result<Arc<Value>, ApiError> {
    let old = store
        .get(rt, key)
        .ok_or_else(|| ApiError::not_found(rt, &key.name))?;
    if !new.is_object() {
        return Err(not_an_object(rt));
    }
    check_type_meta(rt, version, &new)?;
    if let Some(name) = meta_str(&new, "name") {
        if name != key.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                key.name
            )));
        }
    }
    if let Some(namespace) = meta_str(&new, "namespace") {
        if rt.namespaced && namespace != key.namespace {
            return Err(namespace_mismatch());
        }
    }
    check_update_preconditions(rt, &key.name, &old, &new, options.require_resource_version)?;

    let mut next = match part {
        Part::Status => {
            let mut next = (*old).clone();
            set_field(&mut next, "status", new.get("status").cloned());
            next
        }
        Part::Main | Part::Whole => {
            let mut next = new;
            if part == Part::Main && rt.status_subresource {
                set_field(&mut next, "status", old.get("status").cloned());
            }
            next
        }
    };
    set_type_meta(rt, &mut next);
    carry_server_fields(&old, &mut next, key, rt);
    defaults::on_update(rt, &old, &mut next)?;
    if spec_view(&next) != spec_view(&old) {
        let generation = meta::generation(&old) + 1;
        meta::metadata_mut(&mut next).insert("generation".into(), generation.into());
    }
    if next == *old {
        return Ok(old);
    }
    if meta_str(&next, "deletionTimestamp").is_some() && !meta::has_finalizers(&next) {
        // The last finalizer is gone: the pending deletion completes.
        if options.dry_run {
            return Ok(Arc::new(next));
        }
        return Ok(store
            .remove(rt, key, Some(next))
            .expect("the object was just read under the same lock"));
    }
    if options.dry_run {
        return Ok(Arc::new(next));
    }
    Ok(store.put(rt, key.clone(), next))
}

/// A PATCH request's body and options.
pub(crate) struct PatchRequest<'a> {
    pub patch_type: PatchType,
    pub body: &'a [u8],
    pub part: Part,
    pub dry_run: bool,
}

/// Patches the object at `key`. Returns the result and whether it was created (server-side
/// apply creates missing objects).
pub(crate) fn patch(
    store: &mut Store,
    rt: &'static ResourceType,
    version: &str,
    key: &ObjectKey,
    request: PatchRequest<'_>,
) -> Result<(Arc<Value>, bool), ApiError> {
    let PatchRequest {
        patch_type,
        body,
        part,
        dry_run,
    } = request;
    let update_options = UpdateOptions {
        dry_run,
        require_resource_version: false,
    };
    let current = store.get(rt, key);
    let patched = match patch_type {
        PatchType::Apply => {
            let mut applied: Value = serde_yaml_ng::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
            if !applied.is_object() {
                return Err(not_an_object(rt));
            }
            for field in ["apiVersion", "kind"] {
                if applied
                    .get(field)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(ApiError::bad_request(format!(
                        "invalid object type: {field} must be set in an apply patch"
                    )));
                }
            }
            check_type_meta(rt, version, &applied)?;
            match meta_str(&applied, "name") {
                Some(name) if name != key.name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({name}) does not match the name on the URL ({})",
                        key.name
                    )))
                }
                Some(_) => {}
                None => {
                    meta::metadata_mut(&mut applied).insert("name".into(), key.name.clone().into());
                }
            }
            let Some(current) = current else {
                if part == Part::Status {
                    return Err(ApiError::not_found(rt, &key.name));
                }
                if meta_str(&applied, "resourceVersion").is_some() {
                    return Err(ApiError::stale(rt, &key.name));
                }
                let namespace = rt.namespaced.then_some(key.namespace.as_str());
                let created = create(
                    store,
                    rt,
                    version,
                    namespace,
                    applied,
                    CreateOptions {
                        dry_run,
                        ..CreateOptions::default()
                    },
                )?;
                return Ok((created, true));
            };
            let mut merged = (*current).clone();
            json_patch::merge(&mut merged, &applied);
            merged
        }
        PatchType::Merge | PatchType::Strategic => {
            let current = current.ok_or_else(|| ApiError::not_found(rt, &key.name))?;
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut merged = (*current).clone();
            json_patch::merge(&mut merged, &patch);
            merged
        }
        PatchType::Json => {
            let current = current.ok_or_else(|| ApiError::not_found(rt, &key.name))?;
            let operations: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut patched = (*current).clone();
            json_patch::patch(&mut patched, &operations).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!(
                    "the server rejected our request due to an error in our request: {e}"
                ),
                details: None,
                retry_after: None,
                continue_token: None,
            })?;
            patched
        }
    };
    let updated = update(store, rt, version, key, patched, part, update_options)?;
    Ok((updated, false))
}

/// Deletes the object at `key`.
pub(crate) fn delete(
    store: &mut Store,
    rt: &'static ResourceType,
    key: &ObjectKey,
    options: &DeleteOptions,
) -> Result<Deleted, ApiError> {
    let old = store
        .get(rt, key)
        .ok_or_else(|| ApiError::not_found(rt, &key.name))?;
    let old_uid = meta_str(&old, "uid").unwrap_or_default();
    if let Some(uid) = options.uid.as_deref().filter(|u| *u != old_uid) {
        return Err(ApiError::conflict(
            rt,
            &key.name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
            ),
        ));
    }
    let old_rv = meta_str(&old, "resourceVersion").unwrap_or_default();
    if let Some(rv) = options.resource_version.as_deref().filter(|r| *r != old_rv) {
        return Err(ApiError::conflict(rt, &key.name, &format!(
            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {old_rv}"
        )));
    }
    if meta::has_finalizers(&old) {
        if meta_str(&old, "deletionTimestamp").is_some() {
            return Ok(Deleted::Finalizing(old));
        }
        let mut next = (*old).clone();
        let generation = meta::generation(&old) + 1;
        let m = meta::metadata_mut(&mut next);
        m.insert("deletionTimestamp".into(), meta::now_rfc3339().into());
        m.insert("deletionGracePeriodSeconds".into(), 0.into());
        m.insert("generation".into(), generation.into());
        if options.dry_run {
            return Ok(Deleted::Finalizing(Arc::new(next)));
        }
        return Ok(Deleted::Finalizing(store.put(rt, key.clone(), next)));
    }
    if !options.dry_run {
        store.remove(rt, key, None);
    }
    Ok(Deleted::Removed(old))
}

/// Creates the object, or replaces it whole (status included, no preconditions; a stored
/// `status` is kept when the new object has none): the test-facing `FakeApiServer::apply`.
pub(crate) fn put(
    store: &mut Store,
    rt: &'static ResourceType,
    version: &str,
    mut object: Value,
) -> Result<Arc<Value>, ApiError> {
    if !object.is_object() {
        return Err(not_an_object(rt));
    }
    let m = meta::metadata_mut(&mut object);
    m.remove("resourceVersion");
    m.remove("uid");
    let namespace = if rt.namespaced {
        Some(
            meta_str(&object, "namespace")
                .unwrap_or("default")
                .to_string(),
        )
    } else {
        None
    };
    let name = meta_str(&object, "name")
        .ok_or_else(|| ApiError::bad_request("the object has no metadata.name"))?;
    let key = ObjectKey::new(namespace.as_deref(), name);
    if let Some(old) = store.get(rt, &key) {
        if object.get("status").is_none() {
            set_field(&mut object, "status", old.get("status").cloned());
        }
        update(
            store,
            rt,
            version,
            &key,
            object,
            Part::Whole,
            UpdateOptions::default(),
        )
    } else {
        create(
            store,
            rt,
            version,
            namespace.as_deref(),
            object,
            CreateOptions {
                keep_status: true,
                ..CreateOptions::default()
            },
        )
    }
}

fn check_update_preconditions(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    new: &Value,
    require_resource_version: bool,
) -> Result<(), ApiError> {
    match meta_str(new, "resourceVersion") {
        Some(rv) if Some(rv) != meta_str(old, "resourceVersion") => {
            return Err(ApiError::stale(rt, name));
        }
        None if require_resource_version => {
            return Err(ApiError::invalid(
                rt,
                name,
                vec![Cause {
                    field: "metadata.resourceVersion".into(),
                    message: "Invalid value: 0x0: must be specified for an update".into(),
                    reason: "FieldValueInvalid",
                }],
            ));
        }
        _ => {}
    }
    let old_uid = meta_str(old, "uid").unwrap_or_default();
    match meta_str(new, "uid") {
        Some(uid) if uid != old_uid => Err(ApiError::conflict(
            rt,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
            ),
        )),
        _ => Ok(()),
    }
}

/// Rejects a body whose `apiVersion` or `kind` (when given) is not what the URL serves.
fn check_type_meta(rt: &ResourceType, version: &str, object: &Value) -> Result<(), ApiError> {
    let expected = rt.api_version(version);
    if let Some(api_version) = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if api_version != expected {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({expected})"
            )));
        }
    }
    if let Some(kind) = object
        .get("kind")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        if kind != rt.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                rt.kind
            )));
        }
    }
    Ok(())
}

/// Stored objects carry their storage version; reads rewrite it to the version asked for.
fn set_type_meta(rt: &ResourceType, object: &mut Value) {
    let fields = object.as_object_mut().expect("checked to be an object");
    fields.insert(
        "apiVersion".into(),
        rt.api_version(rt.storage_version()).into(),
    );
    fields.insert("kind".into(), rt.kind.into());
}

/// Puts a new object in the request's namespace (cluster-scoped objects have none).
fn scope(
    rt: &ResourceType,
    object: &mut Value,
    namespace: Option<&str>,
) -> Result<Option<String>, ApiError> {
    if !rt.namespaced {
        meta::metadata_mut(object).remove("namespace");
        return Ok(None);
    }
    let namespace = namespace.expect("namespaced creates are routed with a namespace");
    if meta_str(object, "namespace").is_some_and(|ns| ns != namespace) {
        return Err(namespace_mismatch());
    }
    meta::metadata_mut(object).insert("namespace".into(), namespace.into());
    Ok(Some(namespace.to_string()))
}

fn namespace_mismatch() -> ApiError {
    ApiError::bad_request(
        "the namespace of the provided object does not match the namespace sent on the request",
    )
}

fn not_an_object(rt: &ResourceType) -> ApiError {
    ApiError::bad_request(format!(
        "the object provided is unrecognized (must be of type {}): not a JSON object",
        rt.kind
    ))
}

/// Copies what the server owns from the stored object into an updated one.
fn carry_server_fields(old: &Value, next: &mut Value, key: &ObjectKey, rt: &ResourceType) {
    let old_meta = meta::metadata(old).cloned().unwrap_or_default();
    let m = meta::metadata_mut(next);
    for field in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
    ] {
        match old_meta.get(field) {
            Some(v) => m.insert(field.into(), v.clone()),
            None => m.remove(field),
        };
    }
    m.insert("name".into(), key.name.clone().into());
    if rt.namespaced {
        m.insert("namespace".into(), key.namespace.clone().into());
    } else {
        m.remove("namespace");
    }
}

/// The object without `metadata` and `status`: what `generation` counts changes of.
fn spec_view(object: &Value) -> Map<String, Value> {
    let mut view = object.as_object().cloned().unwrap_or_default();
    view.remove("metadata");
    view.remove("status");
    view
}

fn set_field(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(fields) = object.as_object_mut() {
        match value {
            Some(v) => fields.insert(field.into(), v),
            None => fields.remove(field),
        };
    }
}

fn remove_field(object: &mut Value, field: &str) {
    set_field(object, field, None);
}

fn unused_generated_name(
    store: &Store,
    rt: &'static ResourceType,
    namespace: Option<&str>,
    prefix: &str,
) -> String {
    loop {
        let name = meta::generated_name(prefix);
        if store.get(rt, &ObjectKey::new(namespace, &name)).is_none() {
            return name;
        }
    }
}

/// Whether `rt` accepts `patch_type` (custom resources have no strategic merge).
pub(crate) fn accepts(rt: &ResourceType, patch_type: &PatchType) -> bool {
    !(rt.origin == crate::resources::Origin::Custom && *patch_type == PatchType::Strategic)
}

/// The media types a PATCH of `rt` accepts, for the 415 message.
pub(crate) fn accepted_media_types(rt: &ResourceType) -> Vec<&'static str> {
    PatchType::MEDIA_TYPES
        .into_iter()
        .filter(|m| PatchType::from_content_type(m).is_some_and(|p| accepts(rt, &p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{by_api_version_kind, RESOURCES};
    use serde_json::json;

    fn gateway() -> (&'static ResourceType, Value) {
        let (rt, _) = by_api_version_kind("gateway.networking.k8s.io/v1", "Gateway").unwrap();
        (
            rt,
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "ns"},
                "spec": {"gatewayClassName": "kw"},
                "status": {"conditions": []}
            }),
        )
    }

    #[test]
    fn generation_counts_spec_changes_only() {
        let (rt, gw) = gateway();
        let mut store = Store::new();
        let created = create(
            &mut store,
            rt,
            "v1",
            Some("ns"),
            gw,
            CreateOptions::default(),
        )
        .unwrap();
        assert_eq!(created["metadata"]["generation"], 1);
        assert!(
            created.get("status").is_none(),
            "status is dropped on create"
        );
        let key = ObjectKey::new(Some("ns"), "gw");
        let status = json!({"status": {"addresses": []}});
        let after = update(
            &mut store,
            rt,
            "v1",
            &key,
            status,
            Part::Status,
            UpdateOptions::default(),
        )
        .unwrap();
        assert_eq!(after["metadata"]["generation"], 1);
        assert_eq!(after["status"], json!({"addresses": []}));
        let mut spec = (*after).clone();
        spec["spec"]["gatewayClassName"] = "other".into();
        spec["status"] = json!({"ignored": true});
        let after = update(
            &mut store,
            rt,
            "v1",
            &key,
            spec,
            Part::Main,
            UpdateOptions::default(),
        )
        .unwrap();
        assert_eq!(after["metadata"]["generation"], 2);
        assert_eq!(after["status"], json!({"addresses": []}));
        let rv = store.resource_version();
        let same = update(
            &mut store,
            rt,
            "v1",
            &key,
            (*after).clone(),
            Part::Main,
            UpdateOptions::default(),
        )
        .unwrap();
        assert_eq!(
            store.resource_version(),
            rv,
            "a no-op update writes nothing"
        );
        assert_eq!(same, after);
    }

    #[test]
    fn finalizers_hold_deletion_until_removed() {
        let (rt, mut gw) = gateway();
        gw["metadata"]["finalizers"] = json!(["example.com/x"]);
        let mut store = Store::new();
        create(
            &mut store,
            rt,
            "v1",
            Some("ns"),
            gw,
            CreateOptions::default(),
        )
        .unwrap();
        let key = ObjectKey::new(Some("ns"), "gw");
        let Deleted::Finalizing(obj) =
            delete(&mut store, rt, &key, &DeleteOptions::default()).unwrap()
        else {
            panic!("finalizers hold the object")
        };
        assert!(obj["metadata"]["deletionTimestamp"].is_string());
        let mut cleared = (*obj).clone();
        cleared["metadata"]["finalizers"] = json!([]);
        update(
            &mut store,
            rt,
            "v1",
            &key,
            cleared,
            Part::Main,
            UpdateOptions::default(),
        )
        .unwrap();
        assert!(store.get(rt, &key).is_none());
    }

    #[test]
    fn all_resources_accept_json_and_merge_patches() {
        for rt in &RESOURCES {
            assert!(accepts(rt, &PatchType::Merge));
            assert!(accepted_media_types(rt).contains(&"application/apply-patch+yaml"));
        }
    }
}
