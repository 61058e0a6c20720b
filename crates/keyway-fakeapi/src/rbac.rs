//! RBAC: an [`Authorizer`] that decides the way the real API server's RBAC authorizer
//! (`k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac`) does.
//!
//! Keyway ships ClusterRoles, Roles and bindings. Whether they grant enough is only checked
//! for real on a cluster, where a missing verb shows up late and as a log line. With
//! [`RbacAuthorizer`] installed ([`crate::FakeApiServer::set_authorizer`]), tests run
//! Keyway against the very manifests it ships, and every request those manifests do not
//! allow is answered 403 and recorded ([`RbacAuthorizer::denials`]).
//!
//! # What is faithful
//!
//! The decision is the real one, rule for rule:
//!
//! - A rule allows a resource request when its `verbs`, `apiGroups`, `resources` and
//!   `resourceNames` all match. `*` matches any verb, group or resource (subresources
//!   included); `""` is the core group. A subresource is matched as `resource/subresource`
//!   (`gateways` does not grant `gateways/status`, `gateways/status` grants nothing on
//!   `gateways`), or by `*/subresource`; nothing else is a wildcard (`gateways/*` is a
//!   literal that matches no request). A rule with `resourceNames` only allows requests
//!   whose name is listed, so it never allows `list`, `watch`, `create` or
//!   `deletecollection`, which name no object.
//! - A rule allows a non-resource request (`resource: None`) when its `verbs` and
//!   `nonResourceURLs` match; a URL ending in `*` matches every path it is a prefix of
//!   (without the `*`s), and `*` matches every path.
//! - ClusterRoleBindings grant their ClusterRole everywhere. RoleBindings grant their Role
//!   (in the binding's namespace) or ClusterRole only for requests in the binding's
//!   namespace. Requests with no namespace — cluster-scoped resources, non-resource paths,
//!   and all-namespaces lists and watches of namespaced resources — are decided by
//!   ClusterRoleBindings alone. As on a real server, a request on a Namespace object
//!   (`/api/v1/namespaces/NAME[/status]`) is "in" that namespace.
//! - Subjects: `User` matches the user name, `Group` one of the user's groups,
//!   `ServiceAccount` the user `system:serviceaccount:NS:NAME`, where `NS` defaults to the
//!   RoleBinding's namespace (a ClusterRoleBinding must name it).
//! - A binding whose role does not exist grants nothing; the missing role is named in the
//!   denial, as the real authorizer does.
//! - ClusterRoles with an `aggregationRule` get the rules of the ClusterRoles their
//!   selectors match (in name order, without duplicates, never their own), as the
//!   aggregation controller would write them.
//! - Objects are validated as the API server validates them on create (a Role may not
//!   list `nonResourceURLs`, a rule needs verbs, a ClusterRoleBinding's ServiceAccount
//!   subject needs a namespace, …), so a manifest the server would reject is rejected here.
//!
//! # What stands in for the rest of a real server
//!
//! - Authentication: the fake knows bearer tokens only. Each token is mapped to a user and
//!   groups with [`RbacAuthorizer::bind_token`] or
//!   [`RbacAuthorizer::bind_service_account`]; like the real authenticator chain, every
//!   known token's user is in `system:authenticated`. Requests with no or an unknown token
//!   are `system:anonymous` in `system:unauthenticated` (a real server would answer an
//!   unknown token 401; the fake's hook can only allow or forbid).
//! - Members of `system:masters` are allowed everything without consulting RBAC, as the
//!   real server's privileged-group authorizer does; [`RbacAuthorizer::allow_token_everything`]
//!   uses that for test-harness tokens.
//! - A real cluster's default roles are not there unless asked for:
//!   [`RbacAuthorizer::add_bootstrap_policy`] adds the part of the bootstrap policy every
//!   cluster has (discovery, public info, cluster-admin).
//!
//! # Use
//!
//! ```no_run
//! # async fn example() {
//! use std::sync::Arc;
//! use keyway_fakeapi::{FakeApiServer, RbacAuthorizer};
//! let server = FakeApiServer::start().await;
//! let manifests = "..."; // Keyway's ClusterRoles, Roles and bindings
//! let mut rbac = RbacAuthorizer::from_yaml(manifests).unwrap();
//! rbac.add_bootstrap_policy();
//! rbac.bind_service_account("keyway-token", "keyway-system", "keyway");
//! rbac.allow_token_everything("harness-token");
//! let rbac = Arc::new(rbac);
//! server.set_authorizer(Some(rbac.clone()));
//! // … run Keyway with a kubeconfig for "keyway-token" …
//! rbac.assert_no_denials();
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use serde::Deserialize as _;
use serde_json::Value;

use crate::auth::{Authorizer, Decision, RequestAttributes};
use crate::state::lock;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const SYSTEM_MASTERS: &str = "system:masters";
const AUTHENTICATED: &str = "system:authenticated";
const UNAUTHENTICATED: &str = "system:unauthenticated";
const ANONYMOUS: &str = "system:anonymous";
/// The user [`RbacAuthorizer::allow_token_everything`] maps its tokens to.
const ADMIN: &str = "keyway-fakeapi:admin";
/// How many near-miss hints a denial reason carries at most.
const MAX_HINTS: usize = 4;

/// The part of the real API server's bootstrap RBAC policy
/// (`plugin/pkg/auth/authorizer/rbac/bootstrappolicy`) that every cluster has and that
/// clients rely on without shipping it themselves.
const BOOTSTRAP_POLICY: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: cluster-admin}
rules:
- {apiGroups: ["*"], resources: ["*"], verbs: ["*"]}
- {nonResourceURLs: ["*"], verbs: ["*"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: cluster-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:masters"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:discovery"}
rules:
- nonResourceURLs: ["/livez", "/readyz", "/healthz", "/version", "/version/", "/openapi", "/openapi/*", "/api", "/api/*", "/apis", "/apis/*"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:discovery"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:discovery"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:public-info-viewer"}
rules:
- nonResourceURLs: ["/livez", "/readyz", "/healthz", "/version", "/version/"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:public-info-viewer"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:public-info-viewer"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:unauthenticated"}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:basic-user"}
rules:
- apiGroups: ["authorization.k8s.io"]
  resources: ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]
  verbs: ["create"]
- apiGroups: ["authentication.k8s.io"]
  resources: ["selfsubjectreviews"]
  verbs: ["create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:basic-user"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:basic-user"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}
"#;

/// An [`Authorizer`] enforcing Kubernetes RBAC over a fixed set of RBAC objects, for a
/// table of bearer tokens. See the [module documentation](self) for what it decides like a
/// real server and what stands in for the rest of one.
///
/// Configure it (`&mut self`), then share it in an `Arc`: the same `Arc` goes to
/// [`crate::FakeApiServer::set_authorizer`] and stays with the test for
/// [`RbacAuthorizer::denials`].
#[derive(Debug, Default)]
pub struct RbacAuthorizer {
    cluster_roles: BTreeMap<String, ClusterRole>,
    /// Every ClusterRole's rules once aggregation is applied.
    effective_cluster_rules: BTreeMap<String, Vec<PolicyRule>>,
    /// By (namespace, name).
    roles: BTreeMap<(String, String), Vec<PolicyRule>>,
    cluster_role_bindings: BTreeMap<String, Binding>,
    /// By (namespace, name).
    role_bindings: BTreeMap<(String, String), Binding>,
    users: HashMap<String, UserInfo>,
    denials: Mutex<Vec<Denial>>,
}

#[derive(Debug, Clone)]
struct Denial {
    attributes: RequestAttributes,
    reason: String,
}

/// Who a token authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UserInfo {
    name: String,
    groups: Vec<String>,
}

impl UserInfo {
    fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS.to_string(),
            groups: vec![UNAUTHENTICATED.to_string()],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PolicyRule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    non_resource_urls: Vec<String>,
}

impl PolicyRule {
    // The matchers below are those of `k8s.io/kubernetes/pkg/apis/rbac/v1/evaluation_helpers.go`.

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn api_group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == "*" || g == group)
    }

    /// `combined` is `resource` or `resource/subresource`; `subresource` may be empty.
    fn resource_matches(&self, combined: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            r == "*"
                || r == combined
                || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
        })
    }

    fn resource_name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name)
    }

    fn non_resource_url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| {
            u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
        })
    }

    fn allows(&self, request: &Request<'_>) -> bool {
        match &request.resource {
            Some(r) => {
                self.verb_matches(request.verb)
                    && self.api_group_matches(r.group)
                    && self.resource_matches(&r.combined, r.subresource)
                    && self.resource_name_matches(r.name)
            }
            None => self.verb_matches(request.verb) && self.non_resource_url_matches(request.path),
        }
    }

    /// Like `CompactString` in the RBAC helpers, for denial hints.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (label, list) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !list.is_empty() {
                parts.push(format!("{label}:{list:?}"));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

#[derive(Debug, Clone)]
struct ClusterRole {
    labels: BTreeMap<String, String>,
    rules: Vec<PolicyRule>,
    /// The `aggregationRule.clusterRoleSelectors`, if any.
    aggregation: Option<Vec<LabelSelector>>,
}

/// A `metav1.LabelSelector` (`matchLabels` and `matchExpressions`).
#[derive(Debug, Clone, Default)]
struct LabelSelector {
    match_labels: BTreeMap<String, String>,
    expressions: Vec<(String, SelectorOp, Vec<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SelectorOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// An empty selector matches everything, as `LabelSelectorAsSelector` makes it.
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|(key, op, values)| {
                let value = labels.get(key);
                match op {
                    SelectorOp::In => value.is_some_and(|v| values.contains(v)),
                    SelectorOp::NotIn => value.is_none_or(|v| !values.contains(v)),
                    SelectorOp::Exists => value.is_some(),
                    SelectorOp::DoesNotExist => value.is_none(),
                }
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoleKind {
    Role,
    ClusterRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubjectKind {
    User,
    Group,
    ServiceAccount,
}

#[derive(Debug, Clone)]
struct Subject {
    kind: SubjectKind,
    name: String,
    /// Only for ServiceAccounts; may be empty in a RoleBinding.
    namespace: String,
}

impl Subject {
    /// `appliesToUser` of the RBAC rule resolver; `namespace` is the RoleBinding's (empty
    /// for ClusterRoleBindings).
    fn applies_to(&self, user: &UserInfo, namespace: &str) -> bool {
        match self.kind {
            SubjectKind::User => user.name == self.name,
            SubjectKind::Group => user.groups.contains(&self.name),
            SubjectKind::ServiceAccount => {
                let namespace = if self.namespace.is_empty() {
                    namespace
                } else {
                    &self.namespace
                };
                !namespace.is_empty() && user.name == service_account_user(namespace, &self.name)
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Binding {
    name: String,
    /// Empty for ClusterRoleBindings.
    namespace: String,
    role_kind: RoleKind,
    role_name: String,
    subjects: Vec<Subject>,
}

impl Binding {
    fn applies_to(&self, user: &UserInfo) -> bool {
        self.subjects
            .iter()
            .any(|s| s.applies_to(user, &self.namespace))
    }

    fn describe(&self) -> String {
        let role = match self.role_kind {
            RoleKind::Role => "Role",
            RoleKind::ClusterRole => "ClusterRole",
        };
        if self.namespace.is_empty() {
            format!(
                "ClusterRoleBinding {:?} (ClusterRole {:?})",
                self.name, self.role_name
            )
        } else {
            format!(
                "RoleBinding {:?} in namespace {:?} ({role} {:?})",
                self.name, self.namespace, self.role_name
            )
        }
    }
}

/// A request as the rules see it: borrowed, with RBAC's notion of its namespace.
struct Request<'a> {
    verb: &'a str,
    path: &'a str,
    resource: Option<ResourceRequest<'a>>,
    /// Empty for cluster-wide requests.
    namespace: &'a str,
}

struct ResourceRequest<'a> {
    group: &'a str,
    resource: &'a str,
    subresource: &'a str,
    /// `resource` or `resource/subresource`.
    combined: String,
    /// Empty when the request names no object.
    name: &'a str,
}

impl<'a> Request<'a> {
    fn new(attributes: &'a RequestAttributes) -> Self {
        let Some(r) = &attributes.resource else {
            return Request {
                verb: &attributes.verb,
                path: &attributes.path,
                resource: None,
                namespace: "",
            };
        };
        let subresource = r.subresource.as_deref().unwrap_or("");
        let name = r.name.as_deref().unwrap_or("");
        // The real request-info parser takes the namespace from `/namespaces/{ns}`, and so a
        // request on a Namespace object is in the namespace it names; the fake's routing
        // leaves it without one.
        let namespace = match r.namespace.as_deref() {
            Some(ns) => ns,
            None if r.group.is_empty() && r.resource == "namespaces" => name,
            None => "",
        };
        Request {
            verb: &attributes.verb,
            path: &attributes.path,
            resource: Some(ResourceRequest {
                group: &r.group,
                resource: &r.resource,
                subresource,
                combined: if subresource.is_empty() {
                    r.resource.clone()
                } else {
                    format!("{}/{subresource}", r.resource)
                },
                name,
            }),
            namespace,
        }
    }
}

fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

impl RbacAuthorizer {
    /// An authorizer with no RBAC objects and no tokens: it denies everything to everyone
    /// (but `system:masters`), like a cluster without bindings.
    pub fn new() -> Self {
        Self::default()
    }

    /// An authorizer over `objects` (see [`RbacAuthorizer::add_objects`]).
    pub fn from_objects(objects: impl IntoIterator<Item = Value>) -> Result<Self, String> {
        let mut rbac = Self::new();
        rbac.add_objects(objects)?;
        Ok(rbac)
    }

    /// An authorizer over the RBAC objects of a multi-document YAML stream, e.g. the
    /// manifests Keyway ships (see [`RbacAuthorizer::add_yaml`]).
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let mut rbac = Self::new();
        rbac.add_yaml(text)?;
        Ok(rbac)
    }

    /// Adds the RBAC objects of a multi-document YAML stream: empty documents are skipped
    /// and every other document goes to [`RbacAuthorizer::add_objects`], so that manifests
    /// can be given whole, Deployments and all.
    pub fn add_yaml(&mut self, text: &str) -> Result<(), String> {
        let mut objects = Vec::new();
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let object = Value::deserialize(document)
                .map_err(|e| format!("YAML document {}: {e}", index + 1))?;
            if !object.is_null() {
                objects.push(object);
            }
        }
        self.add_objects(objects)
    }

    /// Adds `rbac.authorization.k8s.io/v1` ClusterRoles, Roles, ClusterRoleBindings and
    /// RoleBindings; objects of other kinds are ignored, and `List`s (`kind: List` or
    /// `<Kind>List`) contribute their items. An object replaces an earlier one of the same
    /// kind, namespace and name, as an apply would. Roles and RoleBindings without a
    /// namespace go to `default`, as `kubectl apply` with the default context puts them.
    ///
    /// Objects are validated as the API server validates them; on the first invalid one
    /// nothing is added and the error names it. RBAC kinds of a version other than v1 are
    /// errors too (they are no longer served), rather than silently granting nothing.
    pub fn add_objects(&mut self, objects: impl IntoIterator<Item = Value>) -> Result<(), String> {
        let mut parsed = Vec::new();
        for object in objects {
            parse_object(&object, &mut parsed)?;
        }
        for object in parsed {
            match object {
                Parsed::ClusterRole(name, role) => {
                    self.cluster_roles.insert(name, role);
                }
                Parsed::Role(key, rules) => {
                    self.roles.insert(key, rules);
                }
                Parsed::ClusterRoleBinding(binding) => {
                    self.cluster_role_bindings
                        .insert(binding.name.clone(), binding);
                }
                Parsed::RoleBinding(binding) => {
                    self.role_bindings
                        .insert((binding.namespace.clone(), binding.name.clone()), binding);
                }
            }
        }
        self.aggregate();
        Ok(())
    }

    /// Adds the default RBAC objects every real cluster has and clients count on:
    /// `system:discovery` (discovery and health paths for `system:authenticated`),
    /// `system:public-info-viewer` (health and `/version` for everyone),
    /// `system:basic-user` (self-reviews) and `cluster-admin` (bound to `system:masters`).
    pub fn add_bootstrap_policy(&mut self) {
        self.add_yaml(BOOTSTRAP_POLICY)
            .expect("the bootstrap policy is valid");
    }

    /// Makes `token` authenticate as `user` in `groups`, plus `system:authenticated`, which
    /// the real authenticator chain adds to every authenticated user. Replaces an earlier
    /// binding of the token.
    pub fn bind_token(&mut self, token: &str, user: &str, groups: &[&str]) {
        let mut all: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !all.iter().any(|g| g == AUTHENTICATED) {
            all.push(AUTHENTICATED.to_string());
        }
        self.users.insert(
            token.to_string(),
            UserInfo {
                name: user.to_string(),
                groups: all,
            },
        );
    }

    /// Makes `token` authenticate as the ServiceAccount `namespace/name`, with the user
    /// name and groups a real service account token carries:
    /// `system:serviceaccount:NS:NAME` in `system:serviceaccounts`,
    /// `system:serviceaccounts:NS` and `system:authenticated`.
    pub fn bind_service_account(&mut self, token: &str, namespace: &str, name: &str) {
        let group = format!("system:serviceaccounts:{namespace}");
        self.bind_token(
            token,
            &service_account_user(namespace, name),
            &["system:serviceaccounts", &group, AUTHENTICATED],
        );
    }

    /// Makes `token` authenticate as an administrator in `system:masters`, whom the API
    /// server allows everything without consulting RBAC: for a test harness that sets up
    /// state through the API while the component under test is held to its RBAC.
    pub fn allow_token_everything(&mut self, token: &str) {
        self.bind_token(token, ADMIN, &[SYSTEM_MASTERS]);
    }

    /// Every request denied so far, in order, so that a test can assert that a component
    /// got by with the permissions it ships (and show what it lacked when it did not).
    pub fn denials(&self) -> Vec<RequestAttributes> {
        lock(&self.denials)
            .iter()
            .map(|d| d.attributes.clone())
            .collect()
    }

    /// Forgets the denials recorded so far (e.g. those a test provoked on purpose).
    pub fn clear_denials(&self) {
        lock(&self.denials).clear();
    }

    /// Panics, listing each denied request with its reason, if any request was denied.
    #[track_caller]
    pub fn assert_no_denials(&self) {
        let denials = lock(&self.denials).clone();
        if denials.is_empty() {
            return;
        }
        let lines: Vec<String> = denials
            .iter()
            .map(|d| {
                let a = &d.attributes;
                let what = match &a.resource {
                    Some(r) => {
                        let mut resource = r.resource.clone();
                        if let Some(sub) = &r.subresource {
                            resource = format!("{resource}/{sub}");
                        }
                        let group = if r.group.is_empty() { "core" } else { &r.group };
                        format!(
                            "{} {resource} ({group}) namespace={} name={}",
                            a.verb,
                            r.namespace.as_deref().unwrap_or("-"),
                            r.name.as_deref().unwrap_or("-"),
                        )
                    }
                    None => format!("{} {}", a.verb, a.path),
                };
                format!("  {what} [{}]: {}", a.path, d.reason)
            })
            .collect();
        panic!(
            "RBAC denied {} request(s):\n{}",
            denials.len(),
            lines.join("\n")
        );
    }

    fn user(&self, token: Option<&str>) -> UserInfo {
        token
            .and_then(|t| self.users.get(t))
            .cloned()
            .unwrap_or_else(UserInfo::anonymous)
    }

    /// Recomputes the rules of aggregated ClusterRoles, as the aggregation controller
    /// keeps them: the rules of every other ClusterRole a selector matches, in name order,
    /// without duplicates.
    fn aggregate(&mut self) {
        let effective = self
            .cluster_roles
            .keys()
            .map(|name| {
                (
                    name.clone(),
                    self.aggregated_rules(name, &mut BTreeSet::new()),
                )
            })
            .collect();
        self.effective_cluster_rules = effective;
    }

    fn aggregated_rules(&self, name: &str, visiting: &mut BTreeSet<String>) -> Vec<PolicyRule> {
        let role = &self.cluster_roles[name];
        let Some(selectors) = &role.aggregation else {
            return role.rules.clone();
        };
        if !visiting.insert(name.to_string()) {
            // An aggregation cycle: the controller would leave whatever it last wrote.
            return role.rules.clone();
        }
        let mut rules: Vec<PolicyRule> = Vec::new();
        for (other_name, other) in &self.cluster_roles {
            if other_name == name || !selectors.iter().any(|s| s.matches(&other.labels)) {
                continue;
            }
            for rule in self.aggregated_rules(other_name, visiting) {
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
        visiting.remove(name);
        rules
    }

    /// The rules of a binding's role (`GetRoleReferenceRules`), or the error the real
    /// resolver reports when the role does not exist.
    fn role_rules(&self, binding: &Binding) -> Result<&[PolicyRule], String> {
        match binding.role_kind {
            RoleKind::Role => self
                .roles
                .get(&(binding.namespace.clone(), binding.role_name.clone()))
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io {:?} not found",
                        binding.role_name
                    )
                }),
            RoleKind::ClusterRole => self
                .effective_cluster_rules
                .get(&binding.role_name)
                .map(Vec::as_slice)
                .ok_or_else(|| {
                    format!(
                        "clusterrole.rbac.authorization.k8s.io {:?} not found",
                        binding.role_name
                    )
                }),
        }
    }

    /// The bindings that apply to `user` for a request in `namespace` (empty: cluster-wide)
    /// with their rules — `VisitRulesFor`: every ClusterRoleBinding, then the RoleBindings
    /// of the namespace. Missing roles go to `errors`.
    fn grants(
        &self,
        user: &UserInfo,
        namespace: &str,
        errors: &mut Vec<String>,
    ) -> Vec<(&Binding, &[PolicyRule])> {
        let role_bindings = self
            .role_bindings
            .values()
            .filter(|b| !namespace.is_empty() && b.namespace == namespace);
        let mut grants = Vec::new();
        for binding in self.cluster_role_bindings.values().chain(role_bindings) {
            if !binding.applies_to(user) {
                continue;
            }
            match self.role_rules(binding) {
                Ok(rules) => grants.push((binding, rules)),
                Err(e) => errors.push(e),
            }
        }
        grants
    }

    fn decide(&self, attributes: &RequestAttributes) -> Result<(), String> {
        let user = self.user(attributes.token.as_deref());
        if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
            return Ok(());
        }
        let request = Request::new(attributes);
        let mut errors = Vec::new();
        let grants = self.grants(&user, request.namespace, &mut errors);
        if grants
            .iter()
            .any(|(_, rules)| rules.iter().any(|rule| rule.allows(&request)))
        {
            return Ok(());
        }
        let mut reason = format!(
            "RBAC: user {:?} (groups {:?}) is not allowed by any rule",
            user.name, user.groups
        );
        for error in errors {
            reason.push_str("; ");
            reason.push_str(&error);
        }
        for hint in self.hints(&request, &user, &grants) {
            reason.push_str("; hint: ");
            reason.push_str(&hint);
        }
        Err(reason)
    }

    /// Near misses worth telling a person who reads the denial: a rule that would allow
    /// the request but for its `resourceNames` or for the subresource, or a RoleBinding
    /// that allows it in another namespace.
    fn hints(
        &self,
        request: &Request<'_>,
        user: &UserInfo,
        grants: &[(&Binding, &[PolicyRule])],
    ) -> Vec<String> {
        let Some(r) = &request.resource else {
            return Vec::new();
        };
        let mut hints = Vec::new();
        for (binding, rules) in grants {
            for rule in *rules {
                let verb_and_group =
                    rule.verb_matches(request.verb) && rule.api_group_matches(r.group);
                if !verb_and_group {
                    continue;
                }
                let resource = rule.resource_matches(&r.combined, r.subresource);
                let name = rule.resource_name_matches(r.name);
                if resource && !name {
                    let why = if r.name.is_empty() {
                        format!(", and a {} request names no object", request.verb)
                    } else {
                        String::new()
                    };
                    hints.push(format!(
                        "{} grants {} only for resourceNames {:?}{why}",
                        binding.describe(),
                        rule.describe(),
                        rule.resource_names
                    ));
                } else if !resource
                    && name
                    && !r.subresource.is_empty()
                    && rule.resources.iter().any(|x| x == r.resource)
                {
                    hints.push(format!(
                        "{} grants {:?} but not the subresource {:?}, which needs a rule of its own",
                        binding.describe(),
                        r.resource,
                        r.combined
                    ));
                }
            }
        }
        for binding in self.role_bindings.values() {
            if binding.namespace == request.namespace || !binding.applies_to(user) {
                continue;
            }
            let Ok(rules) = self.role_rules(binding) else {
                continue;
            };
            if rules.iter().any(|rule| rule.allows(request)) {
                let needs = if request.namespace.is_empty() {
                    "; a request without a namespace (cluster-scoped, or across all namespaces) needs a ClusterRoleBinding"
                } else {
                    ""
                };
                hints.push(format!(
                    "{} allows it in namespace {:?} only{needs}",
                    binding.describe(),
                    binding.namespace
                ));
            }
        }
        hints.dedup();
        hints.truncate(MAX_HINTS);
        hints
    }
}

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, attributes: &RequestAttributes) -> Decision {
        match self.decide(attributes) {
            Ok(()) => Decision::Allow,
            Err(reason) => {
                lock(&self.denials).push(Denial {
                    attributes: attributes.clone(),
                    reason: reason.clone(),
                });
                Decision::Deny(reason)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing and validation.

enum Parsed {
    ClusterRole(String, ClusterRole),
    Role((String, String), Vec<PolicyRule>),
    ClusterRoleBinding(Binding),
    RoleBinding(Binding),
}

fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object.get(field).and_then(Value::as_str).unwrap_or("")
}

fn parse_object(object: &Value, out: &mut Vec<Parsed>) -> Result<(), String> {
    let kind = text(object, "kind");
    let api_version = text(object, "apiVersion");
    if kind.ends_with("List") {
        if let Some(items) = object.get("items").and_then(Value::as_array) {
            for item in items {
                parse_object(item, out)?;
            }
            return Ok(());
        }
    }
    if !matches!(
        kind,
        "ClusterRole" | "Role" | "ClusterRoleBinding" | "RoleBinding"
    ) {
        return Ok(());
    }
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if group != RBAC_GROUP {
        // Some other API's kind of the same name.
        return Ok(());
    }
    let metadata = object.get("metadata").unwrap_or(&Value::Null);
    let name = text(metadata, "name");
    let namespaced = matches!(kind, "Role" | "RoleBinding");
    let namespace = if namespaced {
        match text(metadata, "namespace") {
            "" => "default",
            ns => ns,
        }
    } else {
        ""
    };
    let id = if namespaced {
        format!("{kind} {name:?} in namespace {namespace:?}")
    } else {
        format!("{kind} {name:?}")
    };
    let context = |why: String| format!("{id}: {why}");
    if version != "v1" {
        return Err(context(format!(
            "apiVersion {api_version} is not served; RBAC is {RBAC_GROUP}/v1"
        )));
    }
    validate_name(name).map_err(|why| context(format!("metadata.name: {why}")))?;
    let parsed = match kind {
        "ClusterRole" | "Role" => {
            let rules = parse_rules(object, namespaced).map_err(context)?;
            if kind == "Role" {
                Parsed::Role((namespace.to_string(), name.to_string()), rules)
            } else {
                let aggregation = parse_aggregation(object).map_err(context)?;
                let labels = string_map(metadata, "labels", "metadata").map_err(context)?;
                Parsed::ClusterRole(
                    name.to_string(),
                    ClusterRole {
                        labels,
                        rules,
                        aggregation,
                    },
                )
            }
        }
        _ => {
            let binding = parse_binding(object, name, namespace, namespaced).map_err(context)?;
            if namespaced {
                Parsed::RoleBinding(binding)
            } else {
                Parsed::ClusterRoleBinding(binding)
            }
        }
    };
    out.push(parsed);
    Ok(())
}

/// RBAC names are path segments (`minimalNameRequirements`).
fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Required value: name is required".into());
    }
    if name == "." || name == ".." {
        return Err(format!("Invalid value: {name:?}: may not be '.' or '..'"));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == '%') {
        return Err(format!("Invalid value: {name:?}: may not contain '{c}'"));
    }
    Ok(())
}

/// A list of strings; absent and `null` are empty, as in the API's JSON decoding.
fn string_list(object: &Value, field: &str, path: &str) -> Result<Vec<String>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{path}.{field}[{i}]: must be a string, not {item}"))
            })
            .collect(),
        Some(other) => Err(format!(
            "{path}.{field}: must be a list of strings, not {other}"
        )),
    }
}

fn string_map(object: &Value, field: &str, path: &str) -> Result<BTreeMap<String, String>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|v| (k.clone(), v.to_string()))
                    .ok_or_else(|| format!("{path}.{field}.{k}: must be a string, not {v}"))
            })
            .collect(),
        Some(other) => Err(format!("{path}.{field}: must be a map, not {other}")),
    }
}

fn object_list<'a>(object: &'a Value, field: &str) -> Result<&'a [Value], String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(format!("{field}: must be a list, not {other}")),
    }
}

/// The rules, validated like `ValidatePolicyRule`.
fn parse_rules(object: &Value, namespaced: bool) -> Result<Vec<PolicyRule>, String> {
    let mut rules = Vec::new();
    for (i, rule) in object_list(object, "rules")?.iter().enumerate() {
        let path = format!("rules[{i}]");
        if !rule.is_object() {
            return Err(format!("{path}: must be an object, not {rule}"));
        }
        let rule = PolicyRule {
            verbs: string_list(rule, "verbs", &path)?,
            api_groups: string_list(rule, "apiGroups", &path)?,
            resources: string_list(rule, "resources", &path)?,
            resource_names: string_list(rule, "resourceNames", &path)?,
            non_resource_urls: string_list(rule, "nonResourceURLs", &path)?,
        };
        if rule.verbs.is_empty() {
            return Err(format!(
                "{path}.verbs: Required value: verbs must contain at least one value"
            ));
        }
        if !rule.non_resource_urls.is_empty() {
            if namespaced {
                return Err(format!(
                    "{path}.nonResourceURLs: Invalid value: namespaced rules cannot apply to non-resource URLs"
                ));
            }
            if !rule.api_groups.is_empty()
                || !rule.resources.is_empty()
                || !rule.resource_names.is_empty()
            {
                return Err(format!(
                    "{path}.nonResourceURLs: Invalid value: rules cannot apply to both regular resources and non-resource URLs"
                ));
            }
        } else {
            if rule.api_groups.is_empty() {
                return Err(format!(
                    "{path}.apiGroups: Required value: resource rules must supply at least one api group"
                ));
            }
            if rule.resources.is_empty() {
                return Err(format!(
                    "{path}.resources: Required value: resource rules must supply at least one resource"
                ));
            }
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn parse_aggregation(object: &Value) -> Result<Option<Vec<LabelSelector>>, String> {
    let rule = match object.get("aggregationRule") {
        None | Some(Value::Null) => return Ok(None),
        Some(rule) => rule,
    };
    let base = "aggregationRule.clusterRoleSelectors";
    let items =
        object_list(rule, "clusterRoleSelectors").map_err(|e| format!("aggregationRule.{e}"))?;
    if items.is_empty() {
        return Err(format!(
            "{base}: Required value: at least one clusterRoleSelector required if aggregationRule is non-nil"
        ));
    }
    let mut selectors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{base}[{i}]");
        let mut selector = LabelSelector {
            match_labels: string_map(item, "matchLabels", &path)?,
            expressions: Vec::new(),
        };
        for (j, expression) in object_list(item, "matchExpressions")
            .map_err(|e| format!("{path}.{e}"))?
            .iter()
            .enumerate()
        {
            let path = format!("{path}.matchExpressions[{j}]");
            let key = text(expression, "key");
            if key.is_empty() {
                return Err(format!("{path}.key: Required value"));
            }
            let values = string_list(expression, "values", &path)?;
            let op = match text(expression, "operator") {
                "In" => SelectorOp::In,
                "NotIn" => SelectorOp::NotIn,
                "Exists" => SelectorOp::Exists,
                "DoesNotExist" => SelectorOp::DoesNotExist,
                other => {
                    return Err(format!(
                        "{path}.operator: Invalid value: {other:?}: not a valid selector operator"
                    ))
                }
            };
            let needs_values = matches!(op, SelectorOp::In | SelectorOp::NotIn);
            if needs_values && values.is_empty() {
                return Err(format!(
                    "{path}.values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
                ));
            }
            if !needs_values && !values.is_empty() {
                return Err(format!(
                    "{path}.values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
                ));
            }
            selector.expressions.push((key.to_string(), op, values));
        }
        selectors.push(selector);
    }
    Ok(Some(selectors))
}

/// A binding, defaulted and validated like `ValidateRoleBinding` /
/// `ValidateClusterRoleBinding` (v1 defaults `roleRef.apiGroup`, and a User's or Group's
/// `apiGroup`, to `rbac.authorization.k8s.io`).
fn parse_binding(
    object: &Value,
    name: &str,
    namespace: &str,
    namespaced: bool,
) -> Result<Binding, String> {
    let role_ref = object.get("roleRef").unwrap_or(&Value::Null);
    if !role_ref.is_object() {
        return Err("roleRef: Required value".into());
    }
    match text(role_ref, "apiGroup") {
        "" | RBAC_GROUP => {}
        other => {
            return Err(format!(
                "roleRef.apiGroup: Unsupported value: {other:?}: supported values: {RBAC_GROUP:?}"
            ))
        }
    }
    let role_kind = match (text(role_ref, "kind"), namespaced) {
        ("ClusterRole", _) => RoleKind::ClusterRole,
        ("Role", true) => RoleKind::Role,
        (other, true) => {
            return Err(format!(
                "roleRef.kind: Unsupported value: {other:?}: supported values: \"Role\", \"ClusterRole\""
            ))
        }
        (other, false) => {
            return Err(format!(
                "roleRef.kind: Unsupported value: {other:?}: supported values: \"ClusterRole\""
            ))
        }
    };
    let role_name = text(role_ref, "name");
    validate_name(role_name).map_err(|why| format!("roleRef.name: {why}"))?;
    let mut subjects = Vec::new();
    for (i, subject) in object_list(object, "subjects")?.iter().enumerate() {
        let path = format!("subjects[{i}]");
        let subject_name = text(subject, "name");
        if subject_name.is_empty() {
            return Err(format!("{path}.name: Required value"));
        }
        let api_group = text(subject, "apiGroup");
        let subject_namespace = text(subject, "namespace");
        let kind = match text(subject, "kind") {
            "ServiceAccount" => {
                if !api_group.is_empty() {
                    return Err(format!(
                        "{path}.apiGroup: Unsupported value: {api_group:?}: supported values: \"\""
                    ));
                }
                if !namespaced && subject_namespace.is_empty() {
                    return Err(format!("{path}.namespace: Required value"));
                }
                SubjectKind::ServiceAccount
            }
            kind @ ("User" | "Group") => {
                if !api_group.is_empty() && api_group != RBAC_GROUP {
                    return Err(format!(
                        "{path}.apiGroup: Unsupported value: {api_group:?}: supported values: {RBAC_GROUP:?}"
                    ));
                }
                if kind == "User" {
                    SubjectKind::User
                } else {
                    SubjectKind::Group
                }
            }
            other => {
                return Err(format!(
                    "{path}.kind: Unsupported value: {other:?}: supported values: \"ServiceAccount\", \"User\", \"Group\""
                ))
            }
        };
        subjects.push(Subject {
            kind,
            name: subject_name.to_string(),
            namespace: if kind == SubjectKind::ServiceAccount {
                subject_namespace.to_string()
            } else {
                String::new()
            },
        });
    }
    Ok(Binding {
        name: name.to_string(),
        namespace: namespace.to_string(),
        role_kind,
        role_name: role_name.to_string(),
        subjects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ResourceAttributes;

    const GW: &str = "gateway.networking.k8s.io";
    const COORD: &str = "coordination.k8s.io";

    /// A controller's permissions, shaped like real manifests, plus roles that exercise one
    /// rule feature each.
    const FIXTURE: &str = r#"
# The controller reads Gateway API objects everywhere and writes their status.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: gateway-controller}
rules:
- apiGroups: [gateway.networking.k8s.io]
  resources: [gatewayclasses, gateways, httproutes]
  verbs: [get, list, watch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [gateways/status]
  verbs: [update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: gateway-controller}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: gateway-controller}
subjects:
- {kind: ServiceAccount, name: keyway, namespace: keyway}
---
---
# Leader election: one named Lease, plus creating it.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: leader, namespace: keyway}
rules:
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  resourceNames: [keyway-leader]
  verbs: [get, list, watch, update, patch, delete, create]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: leader, namespace: keyway}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leader}
subjects:
- {kind: ServiceAccount, name: keyway}   # namespace defaults to the binding's
---
# Secrets only in "apps", through a ClusterRole.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: secret-reader}
rules:
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: keyway-secrets, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: secret-reader}
subjects:
- {kind: ServiceAccount, name: keyway, namespace: keyway}
---
# Wildcards: every status subresource in any group; everything in "sandbox" for a group.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: status-writer}
rules:
- {apiGroups: ["*"], resources: ["*/status"], verbs: ["*"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: status-writer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: status-writer}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: status-bot}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: admin-all}
rules:
- {apiGroups: ["*"], resources: ["*"], verbs: ["*"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: devs, namespace: sandbox}
roleRef: {kind: ClusterRole, name: admin-all}
subjects:
- {kind: Group, name: devs}
---
# `gateways/*` is not a wildcard; `resourceNames` on a cluster-wide grant.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: odd}
rules:
- {apiGroups: [gateway.networking.k8s.io], resources: ["gateways/*"], verbs: [get, update]}
- {apiGroups: [""], resources: [configmaps], resourceNames: [settings], verbs: ["*"]}
- {apiGroups: [""], resources: [namespaces], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: odd}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: odd}
subjects:
- {kind: User, name: alice}
---
# Non-resource URLs.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: paths}
rules:
- {nonResourceURLs: ["/metrics", "/apis/*", "/debug/**"], verbs: [get]}
- {nonResourceURLs: ["/healthz"], verbs: ["*"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: paths}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: paths}
subjects:
- {kind: User, name: alice}
- {kind: Group, name: "system:unauthenticated"}
---
# Reading Namespace objects through a RoleBinding in that namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ns-reader, namespace: apps}
rules:
- {apiGroups: [""], resources: [namespaces], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ns-reader, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ns-reader}
subjects:
- {kind: User, name: bob}
---
# Not RBAC: ignored.
apiVersion: v1
kind: ServiceAccount
metadata: {name: keyway, namespace: keyway}
"#;

    fn fixture() -> RbacAuthorizer {
        let mut rbac = RbacAuthorizer::from_yaml(FIXTURE).expect("the fixture is valid");
        rbac.bind_service_account("sa", "keyway", "keyway");
        rbac.bind_service_account("other-sa", "apps", "keyway");
        rbac.bind_token("status", "status-bot", &[]);
        rbac.bind_token("dev", "dora", &["devs"]);
        rbac.bind_token("alice", "alice", &[]);
        rbac.bind_token("bob", "bob", &[]);
        rbac.allow_token_everything("root");
        rbac
    }

    /// A resource request: `target` is `[namespace ]resource[/subresource][:name]`.
    fn res(token: &str, verb: &str, group: &str, target: &str) -> RequestAttributes {
        let (namespace, target) = match target.split_once(' ') {
            Some((ns, t)) => (Some(ns.to_string()), t),
            None => (None, target),
        };
        let (target, name) = match target.split_once(':') {
            Some((t, n)) => (t, Some(n.to_string())),
            None => (target, None),
        };
        let (resource, subresource) = match target.split_once('/') {
            Some((r, sub)) => (r, Some(sub.to_string())),
            None => (target, None),
        };
        RequestAttributes {
            token: (!token.is_empty()).then(|| token.to_string()),
            verb: verb.to_string(),
            resource: Some(ResourceAttributes {
                group: group.to_string(),
                version: "v1".to_string(),
                resource: resource.to_string(),
                subresource,
                namespace,
                name,
            }),
            path: String::new(),
        }
    }

    fn url(token: &str, verb: &str, path: &str) -> RequestAttributes {
        RequestAttributes {
            token: (!token.is_empty()).then(|| token.to_string()),
            verb: verb.to_string(),
            resource: None,
            path: path.to_string(),
        }
    }

    #[track_caller]
    fn check(rbac: &RbacAuthorizer, cases: &[(RequestAttributes, bool)]) {
        let mut failures = Vec::new();
        for (request, allowed) in cases {
            let decision = rbac.authorize(request);
            if (decision == Decision::Allow) != *allowed {
                failures.push(format!(
                    "expected {}: {request:?}\n  got {decision:?}",
                    if *allowed { "allow" } else { "deny" }
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn subresources_are_granted_separately() {
        check(
            &fixture(),
            &[
                (res("sa", "get", GW, "apps gateways:gw"), true),
                (res("sa", "list", GW, "gateways"), true),
                // `gateways` does not grant `gateways/status`…
                (res("sa", "get", GW, "apps gateways/status:gw"), false),
                (res("sa", "update", GW, "apps gateways/status:gw"), true),
                (res("sa", "patch", GW, "apps gateways/status:gw"), true),
                // …and `gateways/status` grants nothing on `gateways`.
                (res("sa", "update", GW, "apps gateways:gw"), false),
                (res("sa", "patch", GW, "apps httproutes/status:r"), false),
                // `*/status` grants every status, in every group, and nothing else.
                (
                    res("status", "update", GW, "apps httproutes/status:r"),
                    true,
                ),
                (res("status", "patch", "", "namespaces/status:apps"), true),
                (res("status", "get", GW, "apps httproutes:r"), false),
                // `gateways/*` is a literal, not a wildcard.
                (res("alice", "get", GW, "apps gateways/status:gw"), false),
                (res("alice", "get", GW, "apps gateways:gw"), false),
            ],
        );
    }

    #[test]
    fn resource_names_restrict_only_named_requests() {
        check(
            &fixture(),
            &[
                (res("sa", "get", COORD, "keyway leases:keyway-leader"), true),
                (
                    res("sa", "update", COORD, "keyway leases:keyway-leader"),
                    true,
                ),
                (
                    res("sa", "delete", COORD, "keyway leases:keyway-leader"),
                    true,
                ),
                (res("sa", "get", COORD, "keyway leases:someone-else"), false),
                // list and watch name no object, so a resourceNames rule never allows them.
                (res("sa", "list", COORD, "keyway leases"), false),
                (res("sa", "watch", COORD, "keyway leases"), false),
                // create is allowed here only by the second rule, which has no names.
                (res("sa", "create", COORD, "keyway leases"), true),
                // Cluster-wide resourceNames: the same.
                (res("alice", "get", "", "apps configmaps:settings"), true),
                (res("alice", "delete", "", "apps configmaps:settings"), true),
                (res("alice", "get", "", "apps configmaps:other"), false),
                (res("alice", "list", "", "apps configmaps"), false),
                (res("alice", "create", "", "apps configmaps"), false),
                (
                    res("alice", "deletecollection", "", "apps configmaps"),
                    false,
                ),
            ],
        );
    }

    #[test]
    fn create_is_not_allowed_by_a_resource_names_rule() {
        let rbac = RbacAuthorizer::from_yaml(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: leader, namespace: keyway}
rules:
- {apiGroups: [coordination.k8s.io], resources: [leases], resourceNames: [keyway-leader], verbs: ["*"]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: leader, namespace: keyway}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leader}
subjects: [{kind: User, name: u}]
"#,
        )
        .unwrap();
        let mut rbac = rbac;
        rbac.bind_token("u", "u", &[]);
        check(
            &rbac,
            &[
                (res("u", "create", COORD, "keyway leases"), false),
                (res("u", "get", COORD, "keyway leases:keyway-leader"), true),
            ],
        );
        let reason = match rbac.authorize(&res("u", "create", COORD, "keyway leases")) {
            Decision::Deny(reason) => reason,
            Decision::Allow => unreachable!(),
        };
        assert!(
            reason.contains(
                "only for resourceNames [\"keyway-leader\"], and a create request names no object"
            ),
            "{reason}"
        );
    }

    #[test]
    fn role_bindings_grant_only_in_their_namespace() {
        check(
            &fixture(),
            &[
                // The Role in keyway, bound in keyway.
                (res("sa", "create", COORD, "keyway leases"), true),
                (res("sa", "create", COORD, "apps leases"), false),
                // A RoleBinding to a ClusterRole grants it in the binding's namespace only.
                (res("sa", "get", "", "apps secrets:tls"), true),
                (res("sa", "list", "", "apps secrets"), true),
                (res("sa", "watch", "", "apps secrets"), true),
                (res("sa", "list", "", "keyway secrets"), false),
                (res("sa", "get", "", "default secrets:tls"), false),
                // A ServiceAccount of the same name in another namespace is someone else.
                (res("other-sa", "get", "", "apps secrets:tls"), false),
                (res("other-sa", "list", GW, "gateways"), false),
                // Everything, but only in sandbox.
                (res("dev", "delete", "", "sandbox secrets:x"), true),
                (res("dev", "update", GW, "sandbox gateways/status:gw"), true),
                (res("dev", "get", "", "apps secrets:x"), false),
                (res("dev", "list", "", "namespaces"), false),
            ],
        );
    }

    #[test]
    fn all_namespaces_requests_need_a_cluster_grant() {
        check(
            &fixture(),
            &[
                // The ClusterRoleBinding covers every namespace and all of them at once.
                (res("sa", "list", GW, "httproutes"), true),
                (res("sa", "watch", GW, "httproutes"), true),
                (res("sa", "watch", GW, "apps httproutes"), true),
                // Secrets are granted in apps only, so not across all namespaces.
                (res("sa", "list", "", "secrets"), false),
                (res("sa", "watch", "", "secrets"), false),
                (res("dev", "list", "", "secrets"), false),
                // Cluster-scoped resources likewise.
                (res("sa", "get", GW, "gatewayclasses:keyway"), true),
                (res("dev", "get", GW, "gatewayclasses:keyway"), false),
            ],
        );
        let rbac = fixture();
        let Decision::Deny(reason) = rbac.authorize(&res("sa", "list", "", "secrets")) else {
            panic!("denied above")
        };
        assert!(
            reason.contains("RoleBinding \"keyway-secrets\" in namespace \"apps\" (ClusterRole \"secret-reader\") allows it in namespace \"apps\" only; a request without a namespace"),
            "{reason}"
        );
    }

    #[test]
    fn a_namespace_object_is_in_its_own_namespace() {
        check(
            &fixture(),
            &[
                // bob's Role in apps allows getting the Namespace apps, as on a real server.
                (res("bob", "get", "", "namespaces:apps"), true),
                (res("bob", "get", "", "namespaces:keyway"), false),
                (res("bob", "list", "", "namespaces"), false),
                // alice's cluster-wide grant covers them all.
                (res("alice", "get", "", "namespaces:keyway"), true),
                (res("alice", "list", "", "namespaces"), false),
            ],
        );
    }

    #[test]
    fn non_resource_urls() {
        check(
            &fixture(),
            &[
                (url("alice", "get", "/metrics"), true),
                (url("alice", "get", "/metrics/extra"), false),
                (url("alice", "post", "/metrics"), false),
                // A trailing `*` matches every path it prefixes, and only those.
                (url("alice", "get", "/apis/"), true),
                (
                    url("alice", "get", "/apis/gateway.networking.k8s.io/v1"),
                    true,
                ),
                (url("alice", "get", "/apis"), false),
                (url("alice", "get", "/debug/pprof"), true),
                (url("alice", "get", "/debug"), false),
                (url("alice", "head", "/healthz"), true),
                // Bound to system:unauthenticated: anyone without a known token.
                (url("", "get", "/metrics"), true),
                (url("who-knows", "get", "/metrics"), true),
                // Not bound to system:authenticated.
                (url("sa", "get", "/metrics"), false),
                // A resource rule does not allow a non-resource request.
                (url("dev", "get", "/apis/"), false),
            ],
        );
    }

    #[test]
    fn wildcard_verbs_and_groups() {
        check(
            &fixture(),
            &[
                (
                    res("dev", "deletecollection", "", "sandbox configmaps"),
                    true,
                ),
                (
                    res("dev", "escalate", "example.com", "sandbox widgets:w"),
                    true,
                ),
                (
                    res("status", "frobnicate", "example.com", "x widgets/status:w"),
                    true,
                ),
                (res("alice", "patch", "", "x configmaps:settings"), true),
                (
                    res("alice", "patch", "apps", "x configmaps:settings"),
                    false,
                ),
            ],
        );
    }

    #[test]
    fn unknown_tokens_are_anonymous() {
        let rbac = fixture();
        check(
            &rbac,
            &[
                (res("nope", "list", GW, "gateways"), false),
                (res("", "list", GW, "gateways"), false),
                (url("nope", "get", "/metrics"), true),
            ],
        );
        let Decision::Deny(reason) = rbac.authorize(&res("nope", "get", "", "x secrets:s")) else {
            panic!("anonymous may not read secrets")
        };
        assert!(
            reason.starts_with(
                "RBAC: user \"system:anonymous\" (groups [\"system:unauthenticated\"])"
            ),
            "{reason}"
        );
    }

    #[test]
    fn users_groups_and_service_accounts() {
        let mut rbac = RbacAuthorizer::from_yaml(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: read}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: all-service-accounts-of-ns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: read}
subjects: [{kind: Group, name: "system:serviceaccounts:team"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: authenticated, namespace: public}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: read}
subjects: [{kind: Group, name: "system:authenticated"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: by-user-name, namespace: other}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: read}
subjects: [{kind: User, name: "system:serviceaccount:elsewhere:bot"}]
"#,
        )
        .unwrap();
        rbac.bind_service_account("team-bot", "team", "bot");
        rbac.bind_service_account("elsewhere-bot", "elsewhere", "bot");
        rbac.bind_token("plain", "plain", &[]);
        check(
            &rbac,
            &[
                (res("team-bot", "get", "", "x configmaps:c"), true),
                (res("elsewhere-bot", "get", "", "x configmaps:c"), false),
                // A service account's user name, bound as a User.
                (res("elsewhere-bot", "get", "", "other configmaps:c"), true),
                // Every bound token is in system:authenticated; anonymous is not.
                (res("plain", "get", "", "public configmaps:c"), true),
                (res("elsewhere-bot", "get", "", "public configmaps:c"), true),
                (res("", "get", "", "public configmaps:c"), false),
            ],
        );
    }

    #[test]
    fn system_masters_may_do_anything() {
        let rbac = fixture();
        check(
            &rbac,
            &[
                (res("root", "deletecollection", "", "secrets"), true),
                (url("root", "post", "/anything"), true),
            ],
        );
        assert!(rbac.denials().is_empty());
    }

    #[test]
    fn denials_are_recorded_until_cleared() {
        let rbac = fixture();
        assert_eq!(
            rbac.authorize(&res("sa", "list", GW, "gateways")),
            Decision::Allow
        );
        rbac.assert_no_denials();
        let denied = res("sa", "get", GW, "apps gateways/status:gw");
        assert!(matches!(rbac.authorize(&denied), Decision::Deny(_)));
        assert!(matches!(
            rbac.authorize(&url("sa", "get", "/x")),
            Decision::Deny(_)
        ));
        let denials = rbac.denials();
        assert_eq!(denials.len(), 2);
        assert_eq!(denials[0], denied);
        let panic = std::panic::catch_unwind(|| rbac.assert_no_denials()).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("RBAC denied 2 request(s)"), "{message}");
        assert!(
            message
                .contains("get gateways/status (gateway.networking.k8s.io) namespace=apps name=gw"),
            "{message}"
        );
        assert!(
            message.contains("grants \"gateways\" but not the subresource \"gateways/status\""),
            "{message}"
        );
        rbac.clear_denials();
        assert!(rbac.denials().is_empty());
    }

    #[test]
    fn missing_roles_grant_nothing_and_are_named() {
        let mut rbac = RbacAuthorizer::from_yaml(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dangling, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ghost}
subjects: [{kind: User, name: u}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: dangling}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: phantom}
subjects: [{kind: User, name: u}]
"#,
        )
        .unwrap();
        rbac.bind_token("u", "u", &[]);
        let Decision::Deny(reason) = rbac.authorize(&res("u", "get", "", "apps secrets:s")) else {
            panic!("nothing is granted")
        };
        assert!(
            reason.contains("clusterrole.rbac.authorization.k8s.io \"phantom\" not found"),
            "{reason}"
        );
        assert!(
            reason.contains("role.rbac.authorization.k8s.io \"ghost\" not found"),
            "{reason}"
        );
        // Adding the role later makes the binding effective.
        rbac.add_yaml(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ghost, namespace: apps}
rules: [{apiGroups: [""], resources: [secrets], verbs: [get]}]
"#,
        )
        .unwrap();
        assert_eq!(
            rbac.authorize(&res("u", "get", "", "apps secrets:s")),
            Decision::Allow
        );
    }

    #[test]
    fn aggregated_cluster_roles_collect_matching_rules() {
        let mut rbac = RbacAuthorizer::from_yaml(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: view}
aggregationRule:
  clusterRoleSelectors:
  - matchLabels: {rbac.example.com/aggregate-to-view: "true"}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]   # overwritten, as by the controller
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: view-gateways
  labels: {rbac.example.com/aggregate-to-view: "true"}
rules: [{apiGroups: [gateway.networking.k8s.io], resources: [gateways], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: edit
  labels: {rbac.example.com/aggregate-to-view: "false"}
rules: [{apiGroups: [""], resources: [secrets], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: expressions}
aggregationRule:
  clusterRoleSelectors:
  - matchExpressions: [{key: rbac.example.com/aggregate-to-view, operator: In, values: ["false"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: User, name: v}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: expressions}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: expressions}
subjects: [{kind: User, name: e}]
"#,
        )
        .unwrap();
        rbac.bind_token("v", "v", &[]);
        rbac.bind_token("e", "e", &[]);
        check(
            &rbac,
            &[
                (res("v", "list", GW, "gateways"), true),
                (res("v", "get", "", "x pods:p"), false),
                (res("v", "get", "", "x secrets:s"), false),
                (res("e", "get", "", "x secrets:s"), true),
                (res("e", "list", GW, "gateways"), false),
            ],
        );
        // A role added later is aggregated too.
        rbac.add_yaml(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: view-routes
  labels: {rbac.example.com/aggregate-to-view: "true"}
rules: [{apiGroups: [gateway.networking.k8s.io], resources: [httproutes], verbs: [watch]}]
"#,
        )
        .unwrap();
        check(&rbac, &[(res("v", "watch", GW, "httproutes"), true)]);
    }

    #[test]
    fn bootstrap_policy_allows_discovery() {
        let mut rbac = RbacAuthorizer::new();
        rbac.add_bootstrap_policy();
        rbac.bind_service_account("sa", "keyway", "keyway");
        check(
            &rbac,
            &[
                (url("sa", "get", "/api"), true),
                (url("sa", "get", "/api/v1"), true),
                (url("sa", "get", "/apis/gateway.networking.k8s.io/v1"), true),
                (url("sa", "get", "/version"), true),
                (url("sa", "post", "/api"), false),
                (url("", "get", "/version"), true),
                (url("", "get", "/readyz"), true),
                (url("", "get", "/apis"), false),
                (res("sa", "list", "", "secrets"), false),
            ],
        );
    }

    #[test]
    fn later_objects_replace_earlier_ones() {
        let role = |verb: &str| {
            serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "r"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": [verb]}],
            })
        };
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "r"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "u"}],
        });
        let mut rbac = RbacAuthorizer::from_objects([role("get"), binding]).unwrap();
        rbac.bind_token("u", "u", &[]);
        // No namespace means `default`.
        check(
            &rbac,
            &[
                (res("u", "get", "", "default secrets:s"), true),
                (res("u", "list", "", "default secrets"), false),
            ],
        );
        rbac.add_objects([
            serde_json::json!({"kind": "List", "apiVersion": "v1", "items": [role("list")]}),
        ])
        .unwrap();
        check(
            &rbac,
            &[
                (res("u", "get", "", "default secrets:s"), false),
                (res("u", "list", "", "default secrets"), true),
            ],
        );
    }

    #[test]
    fn invalid_objects_are_rejected_like_the_api_server_rejects_them() {
        let cases = [
            (
                "kind: Role\nmetadata: {name: r, namespace: n}\nrules: [{nonResourceURLs: [/x], verbs: [get]}]",
                "Role \"r\" in namespace \"n\": rules[0].nonResourceURLs: Invalid value: namespaced rules cannot apply to non-resource URLs",
            ),
            (
                "kind: ClusterRole\nmetadata: {name: r}\nrules: [{nonResourceURLs: [/x], resources: [pods], verbs: [get]}]",
                "rules cannot apply to both regular resources and non-resource URLs",
            ),
            (
                "kind: ClusterRole\nmetadata: {name: r}\nrules: [{apiGroups: [''], resources: [pods]}]",
                "rules[0].verbs: Required value",
            ),
            (
                "kind: ClusterRole\nmetadata: {name: r}\nrules: [{resources: [pods], verbs: [get]}]",
                "rules[0].apiGroups: Required value",
            ),
            (
                "kind: ClusterRole\nmetadata: {name: r}\nrules: [{apiGroups: [''], verbs: [get]}]",
                "rules[0].resources: Required value",
            ),
            (
                "kind: ClusterRole\nmetadata: {name: r}\naggregationRule: {clusterRoleSelectors: []}",
                "at least one clusterRoleSelector required",
            ),
            (
                "kind: ClusterRole\nmetadata: {}\nrules: []",
                "metadata.name: Required value",
            ),
            (
                "kind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {kind: Role, name: r}\nsubjects: []",
                "roleRef.kind: Unsupported value: \"Role\"",
            ),
            (
                "kind: ClusterRoleBinding\nmetadata: {name: b}\nroleRef: {kind: ClusterRole, name: r}\nsubjects: [{kind: ServiceAccount, name: sa}]",
                "subjects[0].namespace: Required value",
            ),
            (
                "kind: RoleBinding\nmetadata: {name: b}\nroleRef: {kind: ClusterRole, name: r}\nsubjects: [{kind: ServiceAccount, name: sa, apiGroup: rbac.authorization.k8s.io}]",
                "subjects[0].apiGroup: Unsupported value",
            ),
            (
                "kind: RoleBinding\nmetadata: {name: b}\nroleRef: {kind: ClusterRole, name: r}\nsubjects: [{kind: Robot, name: x}]",
                "subjects[0].kind: Unsupported value: \"Robot\"",
            ),
            (
                "kind: RoleBinding\nmetadata: {name: b}\nroleRef: {apiGroup: example.com, kind: ClusterRole, name: r}",
                "roleRef.apiGroup: Unsupported value",
            ),
        ];
        for (yaml, want) in cases {
            let yaml = format!("apiVersion: rbac.authorization.k8s.io/v1\n{yaml}");
            let error = RbacAuthorizer::from_yaml(&yaml).expect_err(&yaml);
            assert!(
                error.contains(want),
                "{yaml}\n  error: {error}\n  wanted: {want}"
            );
        }
        let old =
            "apiVersion: rbac.authorization.k8s.io/v1beta1\nkind: ClusterRole\nmetadata: {name: r}";
        assert!(RbacAuthorizer::from_yaml(old)
            .unwrap_err()
            .contains("apiVersion rbac.authorization.k8s.io/v1beta1 is not served"));
        // Nothing is added when any object is invalid.
        let mut rbac = RbacAuthorizer::new();
        let good = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: good}\nrules: []";
        let bad = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: bad}\nrules: [{verbs: []}]";
        assert!(rbac.add_yaml(&format!("{good}\n---\n{bad}")).is_err());
        assert!(rbac.cluster_roles.is_empty());
        assert!(RbacAuthorizer::from_yaml("a: [unclosed").is_err());
    }

    #[test]
    fn other_kinds_and_empty_documents_are_ignored() {
        let rbac = RbacAuthorizer::from_yaml(
            "---\n# only a comment\n---\n\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: keyway}\n---\napiVersion: example.com/v1\nkind: Role\nmetadata: {name: not-rbac}\n",
        )
        .unwrap();
        assert!(rbac.roles.is_empty() && rbac.cluster_roles.is_empty());
    }

    #[test]
    fn rule_matchers_are_those_of_the_rbac_helpers() {
        let rule = |resources: &[&str]| PolicyRule {
            resources: resources.iter().map(|s| s.to_string()).collect(),
            ..PolicyRule::default()
        };
        assert!(rule(&["*"]).resource_matches("pods/log", "log"));
        assert!(rule(&["*/log"]).resource_matches("pods/log", "log"));
        assert!(!rule(&["*/log"]).resource_matches("pods", ""));
        assert!(!rule(&["*/logs"]).resource_matches("pods/log", "log"));
        assert!(!rule(&["*/"]).resource_matches("pods", ""));
        assert!(!rule(&["pods/*"]).resource_matches("pods/log", "log"));
        let urls = PolicyRule {
            non_resource_urls: vec!["/a/*".into(), "/b**".into()],
            ..PolicyRule::default()
        };
        assert!(urls.non_resource_url_matches("/a/"));
        assert!(urls.non_resource_url_matches("/a/x/y"));
        assert!(!urls.non_resource_url_matches("/a"));
        assert!(urls.non_resource_url_matches("/b"));
        assert!(urls.non_resource_url_matches("/bc"));
    }
}
