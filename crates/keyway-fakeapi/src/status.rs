//! Failures as the API server reports them: a `Status` object (`kind: Status`,
//! `apiVersion: v1`) whose `code` matches the HTTP status, whose `reason` is the
//! machine-readable `StatusReason`, and whose messages are worded like the real ones, since
//! clients and people match on them.

use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::body::{self, Body};
use crate::resources::ResourceType;

/// A failed request, ready to become a `Status` response (or an in-stream watch `ERROR`).
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// `Retry-After` header and `details.retryAfterSeconds`.
    pub retry_after: Option<u64>,
    /// `metadata.continue` of the Status (set by an expired continue token).
    pub continue_token: Option<String>,
}

/// One `details.causes` entry of an `Invalid` status.
pub(crate) struct Cause {
    pub field: String,
    pub message: String,
    pub reason: &'static str,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
            continue_token: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `details` naming one object of a resource: `kind` is the plural, as the server writes it.
    fn object_details(rt: &ResourceType, name: &str) -> Value {
        let mut d = Map::new();
        if !name.is_empty() {
            d.insert("name".into(), name.into());
        }
        if !rt.group.is_empty() {
            d.insert("group".into(), rt.group.into());
        }
        d.insert("kind".into(), rt.plural.into());
        Value::Object(d)
    }

    pub(crate) fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified_plural()),
        )
        .with_details(Self::object_details(rt, name))
    }

    /// A path that names no resource (or a group/version that is not served).
    pub(crate) fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub(crate) fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified_plural()),
        )
        .with_details(Self::object_details(rt, name))
    }

    /// `Operation cannot be fulfilled on ...`: a failed precondition or optimistic-concurrency check.
    pub(crate) fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                rt.qualified_plural()
            ),
        )
        .with_details(Self::object_details(rt, name))
    }

    /// The optimistic-concurrency conflict: the object changed since the client read it.
    pub(crate) fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub(crate) fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        Self::invalid_kind(rt.group, rt.kind, name, causes)
    }

    /// 422 `Invalid`, for an object of any kind (request options such as `ListOptions`
    /// are validated the same way, as kind `ListOptions.meta.k8s.io`).
    pub(crate) fn invalid_kind(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let text = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect::<Vec<_>>();
        let text = if text.len() == 1 {
            text[0].clone()
        } else {
            format!("[{}]", text.join(", "))
        };
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut d = Map::new();
        if !name.is_empty() {
            d.insert("name".into(), name.into());
        }
        if !group.is_empty() {
            d.insert("group".into(), group.into());
        }
        d.insert("kind".into(), kind.into());
        d.insert(
            "causes".into(),
            causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect(),
        );
        Self::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {text}"),
        )
        .with_details(Value::Object(d))
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn forbidden(message: String, rt: Option<&ResourceType>, name: &str) -> Self {
        let e = Self::new(403, "Forbidden", message);
        match rt {
            Some(rt) => e.with_details(Self::object_details(rt, name)),
            None => e.with_details(json!({})),
        }
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    pub(crate) fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: application/json, application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1, application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1 (asked for {accept:?})"),
        )
    }

    pub(crate) fn unsupported_media_type(content_type: &str, accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 410 Gone: history needed to answer was compacted away.
    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// The watch-resume flavour of 410, worded like the watch cache.
    pub(crate) fn too_old_resource_version(requested: u64, oldest: u64) -> Self {
        Self::expired(format!("too old resource version: {requested} ({oldest})"))
    }

    /// 504: a `resourceVersion` newer than anything the server has seen, after waiting for it.
    pub(crate) fn too_large_resource_version(requested: u64, current: u64) -> Self {
        let mut e = Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        )
        .with_details(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        }));
        e.retry_after = Some(1);
        e
    }

    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({"causes": [{"message": message.to_string()}]}))
    }

    /// The answer [`crate::Faults::fail_all`] injects, with the reason a real server gives that code.
    pub(crate) fn injected(code: u16) -> Self {
        match code {
            429 => {
                let mut e = Self::new(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                )
                .with_details(json!({"retryAfterSeconds": 1}));
                e.retry_after = Some(1);
                e
            }
            500 => Self::internal("injected fault"),
            503 => Self::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ),
            504 => Self::new(
                504,
                "Timeout",
                "the server was unable to return a response in the time allotted",
            ),
            401 => Self::new(401, "Unauthorized", "Unauthorized"),
            403 => Self::new(403, "Forbidden", "forbidden: injected fault"),
            other => Self::new(other, "", format!("injected fault (HTTP {other})")),
        }
    }

    /// The `Status` object.
    pub(crate) fn to_status(&self) -> Value {
        let mut metadata = Map::new();
        if let Some(token) = &self.continue_token {
            metadata.insert("continue".into(), token.clone().into());
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": metadata,
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = self.reason.into();
        }
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }

    pub(crate) fn into_response(self) -> Response<Body> {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = body::json(code, &self.to_status());
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A `Status` reporting success, as built-in resources answer a DELETE.
pub(crate) fn success(rt: &ResourceType, name: &str, uid: Option<&str>) -> Value {
    let mut details = ApiError::object_details(rt, name);
    if let Some(uid) = uid {
        details["uid"] = uid.into();
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
