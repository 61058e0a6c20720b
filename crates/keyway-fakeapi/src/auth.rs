//! Authorization: the hook RBAC is enforced through ([`crate::rbac::RbacAuthorizer`]).
//!
//! The server does no authentication: it records the bearer token of every request (see
//! [`crate::RequestRecord::token`]) and otherwise lets everyone in. Every request is
//! nevertheless described by [`RequestAttributes`] — the same attributes the real
//! authorizer chain (and so RBAC) decides on: user, verb, API group, resource, subresource,
//! namespace, name, or a non-resource path — and passed to the [`Authorizer`] installed
//! with [`crate::FakeApiServer::set_authorizer`], if any. A denial is answered the way the
//! real server answers it: 403 with a `Forbidden` Status worded like RBAC's.

use crate::resources::ResourceType;
use crate::status::ApiError;

/// What a request asks to do, in the terms authorizers decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAttributes {
    /// The bearer token, if any. Tokens are not mapped to users here; an authorizer that
    /// wants users (service accounts) keeps its own token-to-user table.
    pub token: Option<String>,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` or `deletecollection`
    /// for resources; the lower-cased HTTP method for non-resource paths.
    pub verb: String,
    /// `None` for non-resource requests (discovery, `/version`, health).
    pub resource: Option<ResourceAttributes>,
    /// The request path.
    pub path: String,
}

/// The resource part of [`RequestAttributes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAttributes {
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    /// The plural resource name, e.g. `secrets`.
    pub resource: String,
    /// `Some("status")` for the status subresource.
    pub subresource: Option<String>,
    /// `None` for cluster-scoped resources and for all-namespaces requests.
    pub namespace: Option<String>,
    /// The object name, for requests on one object.
    pub name: Option<String>,
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Deny, with a reason appended to the Forbidden message (may be empty).
    Deny(String),
}

/// Decides whether a request may proceed. Called for every request that reaches routing
/// (after injected faults), before anything is read or written.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, attributes: &RequestAttributes) -> Decision;
}

impl<F> Authorizer for F
where
    F: Fn(&RequestAttributes) -> Decision + Send + Sync + 'static,
{
    fn authorize(&self, attributes: &RequestAttributes) -> Decision {
        self(attributes)
    }
}

impl RequestAttributes {
    /// The user as RBAC messages name it; without a user table this is the token itself.
    fn user(&self) -> &str {
        self.token.as_deref().unwrap_or("system:anonymous")
    }

    /// The 403 the real server sends when RBAC denies this request.
    pub(crate) fn forbidden(&self, rt: Option<&ResourceType>, reason: &str) -> ApiError {
        let user = self.user();
        let suffix = if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        };
        match (&self.resource, rt) {
            (Some(r), Some(rt)) => {
                let mut resource = r.resource.clone();
                if let Some(sub) = &r.subresource {
                    resource = format!("{resource}/{sub}");
                }
                let subject = match &r.name {
                    Some(name) => format!("{} \"{name}\"", rt.qualified_plural()),
                    None => rt.qualified_plural(),
                };
                let scope = match &r.namespace {
                    Some(ns) => format!("in the namespace \"{ns}\""),
                    None => "at the cluster scope".to_string(),
                };
                ApiError::forbidden(
                    format!(
                        "{subject} is forbidden: User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}{suffix}",
                        self.verb, r.group
                    ),
                    Some(rt),
                    r.name.as_deref().unwrap_or(""),
                )
            }
            _ => ApiError::forbidden(
                format!(
                    "forbidden: User \"{user}\" cannot {} path \"{}\"{suffix}",
                    self.verb, self.path
                ),
                None,
                "",
            ),
        }
    }
}
