//! TrafficPolicies: validation, `apiKeyAuth` compilation (Secrets to key digests) and
//! attachment with kgateway's precedence.
//!
//! Attachment levels, most specific first: HTTPRoute rule (a `targetRef` with a rule's
//! `sectionName`, or an `ExtensionRef` filter on the rule), HTTPRoute, Gateway listener,
//! Gateway. The most specific level that has an `apiKeyAuth` decides, as a whole. Within a
//! level: higher `kgateway.dev/policy-weight` first, then older, then namespace/name.
//!
//! A policy that cannot be built still attaches: its routes answer 500 (fail closed). So
//! does a policy that asks for a security feature Keyway does not implement (`extAuth`,
//! `jwtAuth`, ...): serving its routes without that check would be worse than not serving.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use http::HeaderName;
use keyway_model::kgateway::traffic_policy::{ApiKeyAuth, TrafficPolicy};
use keyway_model::{Kind, Object, ObjectKey, Secret};
use keyway_store::auth::Credentials;
use keyway_store::{ApiKeyPolicy, Auth};

use crate::context::Context;
use crate::gateways::age_key;
use crate::labels::Selector;
use crate::status::{Condition, ObjectStatus};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
const WEIGHT_ANNOTATION: &str = "kgateway.dev/policy-weight";
const MAX_KEY_SOURCES: usize = 16;
const MAX_TARGET_REFS: usize = 16;
const MAX_NAME_LEN: usize = 256;
/// Expiring keys named in a policy's status; the rest are counted (a status must stay small
/// enough for the API server).
const MAX_EXPIRY_NOTES: usize = 10;
/// Keys expiring within this long are reported (`keyway check`, `/status`).
const EXPIRY_WARNING: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// TrafficPolicy fields that are access checks: a policy using one that Keyway cannot
/// enforce fails closed instead of being silently ignored.
const UNSUPPORTED_SECURITY_FIELDS: &[&str] = &[
    "extAuth",
    "jwtAuth",
    "basicAuth",
    "rbac",
    "oauth2",
    "acl",
    "csrf",
];

/// Other kgateway TrafficPolicy fields: accepted and reported as ignored. Anything else in
/// `spec` is a typo (`apikeyAuth`) and fails the policy closed rather than leaving routes
/// unprotected.
const OTHER_KGATEWAY_FIELDS: &[&str] = &[
    "ai",
    "autoHostRewrite",
    "buffer",
    "compression",
    "cors",
    "directResponse",
    "extProc",
    "faultInjection",
    "hashPolicies",
    "headerModifiers",
    "httpUpgrade",
    "internalRedirect",
    "rateLimit",
    "retry",
    "statPrefix",
    "timeouts",
    "tracing",
    "transformation",
    "urlRewrite",
];

/// Where a policy attaches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttachPoint {
    /// A whole Gateway.
    Gateway(ObjectKey),
    /// One listener of a Gateway.
    Listener(ObjectKey, String),
    /// A whole HTTPRoute.
    Route(ObjectKey),
    /// One named rule of an HTTPRoute.
    Rule(ObjectKey, String),
}

/// A compiled policy.
struct Entry {
    key: ObjectKey,
    object: Object<()>,
    order: (std::cmp::Reverse<i64>, (bool, Option<i128>, ObjectKey)),
    /// What the policy does to authentication; `None` when it has no say.
    effect: Option<Auth>,
    errors: Vec<String>,
    notes: Vec<String>,
    has_targets: bool,
    targets_found: usize,
    missing: Vec<String>,
    /// The headers the policy asserts identity through (`clientIdHeader`,
    /// `metadataHeaders`), even when it is invalid or overridden: its routes must never
    /// pass a client-sent copy along.
    identity_headers: Vec<HeaderName>,
}

/// All policies, indexed by attachment point.
pub struct Policies {
    entries: Vec<Entry>,
    by_key: HashMap<ObjectKey, usize>,
    attach: HashMap<AttachPoint, Vec<usize>>,
}

/// The levels to consult for one rule on one listener.
pub struct AuthQuery<'a> {
    /// The Gateway.
    pub gateway: &'a ObjectKey,
    /// The listener's name.
    pub listener: &'a str,
    /// The HTTPRoute.
    pub route: &'a ObjectKey,
    /// The rule's name, if any.
    pub rule_name: Option<&'a str>,
    /// Policies the rule names in `ExtensionRef` filters.
    pub extension_refs: &'a [ObjectKey],
}

impl Policies {
    /// The index of a policy by namespace/name.
    pub fn index_of(&self, key: &ObjectKey) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    /// The policies attached at each level for one rule on one listener, most specific
    /// level first; only policies that have a say in authentication.
    fn levels(&self, q: &AuthQuery<'_>) -> [Vec<usize>; 4] {
        let mut rule_level: Vec<usize> = q
            .extension_refs
            .iter()
            .filter_map(|k| self.index_of(k))
            .collect();
        if let Some(rule) = q.rule_name {
            rule_level.extend(self.at(&AttachPoint::Rule(q.route.clone(), rule.to_string())));
        }
        let mut levels = [
            rule_level,
            self.at(&AttachPoint::Route(q.route.clone())).to_vec(),
            self.at(&AttachPoint::Listener(
                q.gateway.clone(),
                q.listener.to_string(),
            ))
            .to_vec(),
            self.at(&AttachPoint::Gateway(q.gateway.clone())).to_vec(),
        ];
        for level in &mut levels {
            level.retain(|&i| self.entries[i].effect.is_some());
            level.sort_by(|&a, &b| self.entries[a].order.cmp(&self.entries[b].order));
            level.dedup();
        }
        levels
    }

    /// The authentication of one rule on one listener. Records in `considered` every policy
    /// that competed, and returns the one that decided.
    pub fn auth_for(
        &self,
        q: &AuthQuery<'_>,
        considered: &mut HashSet<usize>,
    ) -> (Auth, Option<usize>) {
        for level in self.levels(q) {
            considered.extend(level.iter().copied());
            if let Some(&winner) = level.first() {
                let auth = self.entries[winner].effect.clone().unwrap_or_default();
                return (auth, Some(winner));
            }
        }
        (Auth::None, None)
    }

    /// The `clientIdHeader`s of every policy attached at any level for one rule, whether
    /// it decides, is overridden or is disabled there.
    pub fn identity_headers<'s>(
        &'s self,
        q: &AuthQuery<'_>,
    ) -> impl Iterator<Item = &'s HeaderName> + 's {
        self.levels(q)
            .into_iter()
            .flatten()
            .flat_map(|i| self.entries[i].identity_headers.iter())
    }

    fn at(&self, point: &AttachPoint) -> &[usize] {
        self.attach.get(point).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The Gateways policy `i` takes effect on: those it targets directly (whole or a
    /// listener), and those its target routes, or the routes naming it in an
    /// `ExtensionRef`, are attached to. Only Gateways in `ours` count.
    pub fn ancestors(
        &self,
        i: usize,
        ours: &HashSet<&ObjectKey>,
        attached_gateways: &HashMap<ObjectKey, BTreeSet<ObjectKey>>,
        referencing_routes: &HashMap<usize, BTreeSet<ObjectKey>>,
    ) -> BTreeSet<ObjectKey> {
        let mut out = BTreeSet::new();
        let via_route = |route: &ObjectKey, out: &mut BTreeSet<ObjectKey>| {
            out.extend(attached_gateways.get(route).into_iter().flatten().cloned());
        };
        for (point, entries) in &self.attach {
            if !entries.contains(&i) {
                continue;
            }
            match point {
                AttachPoint::Gateway(g) | AttachPoint::Listener(g, _) => {
                    out.insert(g.clone());
                }
                AttachPoint::Route(r) | AttachPoint::Rule(r, _) => via_route(r, &mut out),
            }
        }
        for route in referencing_routes.get(&i).into_iter().flatten() {
            via_route(route, &mut out);
        }
        out.retain(|g| ours.contains(g));
        out
    }

    /// Statuses of every policy. `decided` holds the policies that decided at least one
    /// rule's authentication, `considered` those that competed, `referenced` those named by
    /// an `ExtensionRef`.
    pub fn statuses(
        &self,
        decided: &HashSet<usize>,
        considered: &HashSet<usize>,
        referenced: &HashSet<usize>,
    ) -> Vec<ObjectStatus> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let mut s =
                ObjectStatus::new(Kind::TrafficPolicy, e.key.clone(), e.object.origin.clone());
            let attached = e.targets_found > 0 || referenced.contains(&i);
            if !e.errors.is_empty() {
                s.conditions.push(Condition::failed(
                    "Accepted",
                    "Invalid",
                    e.errors.join("; "),
                ));
            } else if !attached {
                let msg = if e.has_targets {
                    format!("Policy is not attached: {}", e.missing.join("; "))
                } else {
                    "Policy has no targetRefs or targetSelectors and no route refers to it".into()
                };
                s.conditions
                    .push(Condition::failed("Accepted", "TargetNotFound", msg));
            } else {
                let mut msg = String::from("Policy accepted");
                if !e.notes.is_empty() {
                    msg.push_str("; ");
                    msg.push_str(&e.notes.join("; "));
                }
                s.conditions.push(Condition::ok("Accepted", "Valid", msg));
            }
            s.conditions.push(if !attached {
                Condition::failed(
                    "Attached",
                    "TargetNotFound",
                    "Policy is not attached to targets that could not be resolved",
                )
            } else if considered.contains(&i) && !decided.contains(&i) {
                Condition::ok(
                    "Attached",
                    "Overridden",
                    "Overridden due to conflict with higher priority policy in target(s)",
                )
            } else if !e.missing.is_empty() {
                Condition::failed(
                    "Attached",
                    "TargetNotFound",
                    format!(
                        "attached to the targets found; not to: {}",
                        e.missing.join("; ")
                    ),
                )
            } else {
                Condition::ok("Attached", "Attached", "Attached to all targets")
            });
            out.push(s);
        }
        out
    }
}

/// Compiles every TrafficPolicy.
pub(crate) fn compile(ctx: &Context<'_>) -> Policies {
    let mut policies = Policies {
        entries: Vec::new(),
        by_key: HashMap::new(),
        attach: HashMap::new(),
    };
    for (key, obj) in &ctx.snap.traffic_policies {
        let idx = policies.entries.len();
        let (entry, points) = compile_one(ctx, key, obj);
        for p in points {
            policies.attach.entry(p).or_default().push(idx);
        }
        policies.by_key.insert(key.clone(), idx);
        policies.entries.push(entry);
    }
    policies
}

fn compile_one(
    ctx: &Context<'_>,
    key: &ObjectKey,
    obj: &Object<TrafficPolicy>,
) -> (Entry, Vec<AttachPoint>) {
    let policy = &obj.value;
    let spec = &policy.spec;
    let name: Arc<str> = Arc::from(key.to_string());
    let mut errors = Vec::new();
    let mut notes = Vec::new();

    let weight = policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(WEIGHT_ANNOTATION))
        .map(|w| {
            w.trim().parse::<i64>().unwrap_or_else(|_| {
                errors.push(format!(
                    "annotation {WEIGHT_ANNOTATION}: {w:?} is not an integer"
                ));
                0
            })
        })
        .unwrap_or(0);

    let security: Vec<&str> = spec
        .unsupported
        .keys()
        .map(String::as_str)
        .filter(|k| UNSUPPORTED_SECURITY_FIELDS.contains(k))
        .collect();
    if !security.is_empty() {
        errors.push(format!(
            "spec.{}: not supported by Keyway; the policy's routes are refused rather than served without this check",
            security.join(", spec.")
        ));
    }
    let unknown: Vec<&str> = spec
        .unsupported
        .keys()
        .map(String::as_str)
        .filter(|k| !UNSUPPORTED_SECURITY_FIELDS.contains(k) && !OTHER_KGATEWAY_FIELDS.contains(k))
        .collect();
    if !unknown.is_empty() {
        errors.push(format!(
            "spec.{}: unknown field (not a TrafficPolicy field; a misspelt apiKeyAuth?)",
            unknown.join(", spec.")
        ));
    }
    if let Some(why) = &spec.undecodable {
        errors.push(format!(
            "spec cannot be decoded ({why}); its targets are refused rather than served without it"
        ));
    }
    let ignored: Vec<&str> = spec
        .unsupported
        .keys()
        .map(String::as_str)
        .filter(|k| OTHER_KGATEWAY_FIELDS.contains(k))
        .collect();
    if !ignored.is_empty() {
        notes.push(format!(
            "ignored (not supported by Keyway): spec.{}",
            ignored.join(", spec.")
        ));
    }

    // Targets.
    let (points, has_targets, found, missing) = targets(ctx, key, policy, &mut errors);

    // Authentication effect.
    let effect = match &spec.api_key_auth {
        // Any problem anywhere in the policy, in `apiKeyAuth` or not, fails it closed.
        Some(ak) => Some(
            match api_key_auth(ctx, key, &name, ak, &mut errors, &mut notes) {
                Some(auth) if errors.is_empty() => auth,
                _ => Auth::Invalid {
                    policy: name.clone(),
                },
            },
        ),
        None if !errors.is_empty() => Some(Auth::Invalid {
            policy: name.clone(),
        }),
        None => None,
    };

    let entry = Entry {
        key: key.clone(),
        object: Object {
            origin: obj.origin.clone(),
            value: (),
        },
        order: (
            std::cmp::Reverse(weight),
            age_key(policy.metadata.creation_timestamp.as_ref(), key),
        ),
        effect,
        errors,
        notes,
        has_targets,
        targets_found: found,
        missing,
        identity_headers: spec
            .api_key_auth
            .iter()
            .flat_map(|a| {
                a.client_id_header
                    .iter()
                    .chain(a.metadata_headers.iter().flat_map(|m| m.values()))
            })
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            // A header the policy may not set (refused with a reason) is not stripped from
            // everyone else's requests either.
            .filter(|h| !is_reserved_header(h))
            .collect(),
    };
    (entry, points)
}

type Targets = (Vec<AttachPoint>, bool, usize, Vec<String>);

fn targets(
    ctx: &Context<'_>,
    key: &ObjectKey,
    policy: &TrafficPolicy,
    errors: &mut Vec<String>,
) -> Targets {
    let spec = &policy.spec;
    let ns = key.namespace.as_str();
    let mut points = Vec::new();
    let mut found = 0;
    let mut missing = Vec::new();
    if spec.target_refs.len() > MAX_TARGET_REFS {
        errors.push(format!(
            "spec.targetRefs: {} entries, at most {MAX_TARGET_REFS} allowed",
            spec.target_refs.len()
        ));
    }
    let mut candidates: Vec<(String, String, String, Option<String>)> = Vec::new();
    for (i, r) in spec.target_refs.iter().enumerate() {
        if !valid_target_kind(&r.kind) {
            errors.push(format!(
                "spec.targetRefs[{i}]: kind {:?}: targetRefs may only reference Gateway, HTTPRoute, GRPCRoute, or ListenerSet resources",
                r.kind
            ));
            continue;
        }
        candidates.push((
            r.group.clone(),
            r.kind.clone(),
            r.name.clone(),
            r.section_name.clone(),
        ));
    }
    for (i, s) in spec.target_selectors.iter().enumerate() {
        if !valid_target_kind(&s.kind) {
            errors.push(format!(
                "spec.targetSelectors[{i}]: kind {:?}: targetSelectors may only reference Gateway, HTTPRoute, GRPCRoute, or ListenerSet resources",
                s.kind
            ));
            continue;
        }
        if s.match_labels.is_empty() {
            errors.push(format!(
                "spec.targetSelectors[{i}].matchLabels: must not be empty (it would select every {})",
                s.kind
            ));
            continue;
        }
        let selector = Selector::from_parts(s.match_labels.clone(), []).unwrap_or_default();
        let names: Vec<String> = match s.kind.as_str() {
            "Gateway" => ctx
                .snap
                .gateways
                .iter()
                .filter(|(k, g)| {
                    k.namespace == ns && selector.matches(g.value.metadata.labels.as_ref())
                })
                .map(|(k, _)| k.name.clone())
                .collect(),
            "HTTPRoute" => ctx
                .snap
                .http_routes
                .iter()
                .filter(|(k, r)| {
                    k.namespace == ns && selector.matches(r.value.metadata.labels.as_ref())
                })
                .map(|(k, _)| k.name.clone())
                .collect(),
            _ => Vec::new(),
        };
        if names.is_empty() {
            missing.push(format!(
                "no {} in {ns} matches targetSelectors[{i}]",
                s.kind
            ));
        }
        for n in names {
            candidates.push((s.group.clone(), s.kind.clone(), n, s.section_name.clone()));
        }
    }
    let has_targets = !spec.target_refs.is_empty() || !spec.target_selectors.is_empty();
    for (group, kind, name, section) in candidates {
        let target = ObjectKey::new(ns, name.as_str());
        let wrong_group = group != GATEWAY_GROUP;
        let point = match kind.as_str() {
            "Gateway" if !wrong_group => {
                ctx.snap.gateways.get(&target).and_then(|g| match &section {
                    None => Some(AttachPoint::Gateway(target.clone())),
                    Some(s) => g
                        .value
                        .spec
                        .listeners
                        .iter()
                        .any(|l| &l.name == s)
                        .then(|| AttachPoint::Listener(target.clone(), s.clone())),
                })
            }
            "HTTPRoute" if !wrong_group => {
                ctx.snap
                    .http_routes
                    .get(&target)
                    .and_then(|r| match &section {
                        None => Some(AttachPoint::Route(target.clone())),
                        Some(s) => r
                            .value
                            .spec
                            .rules
                            .iter()
                            .flatten()
                            .any(|rule| rule.name.as_deref() == Some(s))
                            .then(|| AttachPoint::Rule(target.clone(), s.clone())),
                    })
            }
            _ => None,
        };
        match point {
            Some(p) => {
                found += 1;
                points.push(p);
            }
            None => {
                let section = section.map(|s| format!(" section {s}")).unwrap_or_default();
                missing.push(format!("{kind} {target}{section} not found"));
            }
        }
    }
    (points, has_targets, found, missing)
}

fn valid_target_kind(kind: &str) -> bool {
    matches!(kind, "Gateway" | "HTTPRoute" | "GRPCRoute") || kind.ends_with("ListenerSet")
}

/// Compiles `apiKeyAuth`, pushing a message (never containing a key) for every problem;
/// `None` when nothing could be built. The caller fails the policy closed on any message.
fn api_key_auth(
    ctx: &Context<'_>,
    key: &ObjectKey,
    name: &Arc<str>,
    ak: &ApiKeyAuth,
    errors: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Option<Auth> {
    if ak.is_null {
        errors.push(
            "spec.apiKeyAuth: present but empty (null); set one of secretRef, secretSelector or disable"
                .into(),
        );
        return None;
    }
    let set: Vec<&str> = [
        ak.secret_ref.as_ref().map(|_| "secretRef"),
        ak.secret_selector.as_ref().map(|_| "secretSelector"),
        ak.disable.as_ref().map(|_| "disable"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if set.len() != 1 {
        errors.push(format!(
            "spec.apiKeyAuth: exactly one of secretRef, secretSelector and disable must be set (found {})",
            if set.is_empty() { "none".to_string() } else { set.join(", ") }
        ));
        return None;
    }
    if ak.disable.is_some() {
        return Some(Auth::None);
    }

    // Key sources.
    let mut headers = Vec::new();
    let mut queries = Vec::new();
    let mut cookies = Vec::new();
    if ak.key_sources.len() > MAX_KEY_SOURCES {
        errors.push(format!(
            "spec.apiKeyAuth.keySources: {} entries, at most {MAX_KEY_SOURCES} allowed",
            ak.key_sources.len()
        ));
    }
    for (i, src) in ak.key_sources.iter().enumerate() {
        let at = format!("spec.apiKeyAuth.keySources[{i}]");
        if src.header.is_none() && src.query.is_none() && src.cookie.is_none() {
            errors.push(format!(
                "{at}: at least one of header, query and cookie must be set"
            ));
        }
        if let Some(h) = &src.header {
            if check_len(&format!("{at}.header"), h, errors) {
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) => headers.push(n),
                    Err(_) => errors.push(format!(
                        "{at}.header: {h:?} is not a valid HTTP header name"
                    )),
                }
            }
        }
        if let Some(q) = &src.query {
            if check_len(&format!("{at}.query"), q, errors) {
                queries.push(q.clone());
            }
        }
        if let Some(c) = &src.cookie {
            if check_len(&format!("{at}.cookie"), c, errors) {
                if c.bytes().all(is_token_byte) {
                    cookies.push(c.clone());
                } else {
                    errors.push(format!("{at}.cookie: {c:?} is not a valid cookie name"));
                }
            }
        }
    }
    if ak.key_sources.is_empty() {
        headers.push(HeaderName::from_static("api-key"));
    }
    let client_id_header = match &ak.client_id_header {
        None => None,
        Some(h) => {
            let at = "spec.apiKeyAuth.clientIdHeader";
            if check_len(at, h, errors) {
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) if is_reserved_header(&n) => {
                        errors.push(format!("{at}: {h:?} cannot carry the client id"));
                        None
                    }
                    Ok(n) => Some(n),
                    Err(_) => {
                        errors.push(format!("{at}: {h:?} is not a valid HTTP header name"));
                        None
                    }
                }
            } else {
                None
            }
        }
    };

    let mut metadata_headers = Vec::new();
    for (name, h) in ak.metadata_headers.iter().flatten() {
        let at = format!("spec.apiKeyAuth.metadataHeaders.{name}");
        // A name or header of the wrong length is reported (the policy fails closed).
        let lengths_ok = [name.as_str(), h.as_str()]
            .into_iter()
            .all(|v| check_len(&at, v, errors));
        if !lengths_ok {
            continue;
        }
        match HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) if is_reserved_header(&n) => {
                errors.push(format!("{at}: {h:?} cannot carry client metadata"));
            }
            Ok(n) if headers.contains(&n) => {
                errors.push(format!("{at}: {h:?} is also where the key is read from"));
            }
            Ok(n)
                if client_id_header.as_ref() == Some(&n)
                    || metadata_headers.iter().any(|(_, m)| *m == n) =>
            {
                errors.push(format!(
                    "{at}: header {h:?} is already set from the client's record"
                ));
            }
            Ok(n) => metadata_headers.push((Box::from(name.as_str()), n)),
            Err(_) => errors.push(format!("{at}: {h:?} is not a valid HTTP header name")),
        }
    }

    // Secrets.
    let secrets = secrets(ctx, key, ak, errors);
    let credentials = credentials(&secrets, ctx.options.now, errors, notes);
    Some(Auth::ApiKey {
        policy: Arc::new(ApiKeyPolicy {
            name: name.clone(),
            headers,
            queries,
            cookies,
            forward_credential: ak.forward_credential.unwrap_or(false),
            client_id_header,
            metadata_headers,
            credentials,
        }),
    })
}

fn check_len(at: &str, v: &str, errors: &mut Vec<String>) -> bool {
    if v.is_empty() || v.len() > MAX_NAME_LEN {
        errors.push(format!(
            "{at}: must be 1 to {MAX_NAME_LEN} characters (is {})",
            v.len()
        ));
        false
    } else {
        true
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_reserved_header(n: &HeaderName) -> bool {
    matches!(
        n.as_str(),
        "host"
            | "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "te"
            | "upgrade"
            | "content-length"
            | "proxy-connection"
            | "trailer"
    )
}

/// The Secrets a policy reads, ordered by namespace/name.
fn secrets<'a>(
    ctx: &'a Context<'_>,
    key: &ObjectKey,
    ak: &ApiKeyAuth,
    errors: &mut Vec<String>,
) -> Vec<(&'a ObjectKey, &'a Secret)> {
    let from = (
        keyway_model::kgateway::GROUP,
        "TrafficPolicy",
        key.namespace.as_str(),
    );
    if let Some(r) = &ak.secret_ref {
        let ns = r.namespace.clone().unwrap_or_else(|| key.namespace.clone());
        let at = "spec.apiKeyAuth.secretRef";
        if r.group.as_deref().is_some_and(|g| !g.is_empty())
            || r.kind.as_deref().is_some_and(|k| k != "Secret")
        {
            errors.push(format!(
                "{at}: must refer to a core Secret (group \"\", kind Secret), not {}/{}",
                r.group.as_deref().unwrap_or(""),
                r.kind.as_deref().unwrap_or("Secret")
            ));
            return Vec::new();
        }
        if r.name.is_empty() {
            errors.push(format!("{at}.name: must be set"));
            return Vec::new();
        }
        if !ctx.grant_allows(from, ("", "Secret", &ns, &r.name)) {
            errors.push(format!(
                "API key secret {}: Secret {ns}/{} is in another namespace and no ReferenceGrant in {ns} allows TrafficPolicies from {} to refer to it",
                r.name, r.name, key.namespace
            ));
            return Vec::new();
        }
        return match ctx
            .snap
            .secrets
            .get_key_value(&ObjectKey::new(ns.as_str(), r.name.as_str()))
        {
            Some((k, s)) => vec![(k, &s.value)],
            None => {
                errors.push(format!(
                    "API key secret {}: Secret {ns}/{} not found",
                    r.name, r.name
                ));
                Vec::new()
            }
        };
    }
    let Some(sel) = &ak.secret_selector else {
        return Vec::new();
    };
    let selector = match Selector::new(sel) {
        Ok(s) => s,
        Err(e) => {
            errors.push(format!("spec.apiKeyAuth.secretSelector: {e}"));
            return Vec::new();
        }
    };
    let found: Vec<_> = ctx
        .snap
        .secrets
        .iter()
        .filter(|(k, s)| {
            selector.matches(s.value.metadata.labels.as_ref())
                && (k.namespace == key.namespace
                    || ctx.grant_allows(from, ("", "Secret", &k.namespace, &k.name)))
        })
        .map(|(k, s)| (k, &s.value))
        .collect();
    if found.is_empty() {
        errors.push(format!(
            "no Secrets matching {:?} in namespace {:?} or in namespaces with a ReferenceGrant allowing Secrets to be referenced from group \"{}\" kind \"TrafficPolicy\" in namespace {:?}",
            selector.to_string(),
            key.namespace,
            keyway_model::kgateway::GROUP,
            key.namespace
        ));
    }
    found
}

/// Composes the policy's credentials from its Secrets' key tables (each digested once,
/// when its Secret was read): no key is copied, so a change to one of many Secrets costs
/// one table's digests and one index. Messages name clients and Secrets, never a key.
fn credentials(
    secrets: &[(&ObjectKey, &Secret)],
    now: Option<std::time::SystemTime>,
    errors: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Credentials {
    let mut problems = Vec::new();
    let mut expiring = Vec::new();
    for (skey, secret) in secrets {
        for p in &secret.keys.problems {
            problems.push(format!("secret {skey}: {p}"));
        }
        let Some(now) = now else { continue };
        for (i, extra) in &secret.keys.extras {
            let Some(at) = extra.expires_at else { continue };
            let verb = if at <= now {
                "expired"
            } else if at.duration_since(now).unwrap_or_default() <= EXPIRY_WARNING {
                "expires"
            } else {
                continue;
            };
            expiring.push(format!(
                "client {:?} in secret {skey}: key {verb} at {}",
                secret.keys.client(*i as usize).id(),
                extra.expires_text().unwrap_or_default()
            ));
        }
    }
    let tables = secrets.iter().map(|(_, s)| s.keys.clone()).collect();
    let (out, conflicts) = Credentials::compose(tables);
    for c in conflicts {
        problems.push(format!(
            "duplicate API key value shared by client {:?} in secret {} and client {:?} in secret {}",
            c.first.1, secrets[c.first.0].0, c.again.1, secrets[c.again.0].0
        ));
    }
    if expiring.len() > MAX_EXPIRY_NOTES {
        let more = expiring.len() - MAX_EXPIRY_NOTES;
        expiring.truncate(MAX_EXPIRY_NOTES);
        expiring.push(format!("and {more} more keys expiring within 7 days"));
    }
    notes.extend(expiring);
    if !problems.is_empty() {
        errors.push(format!(
            "errors processing API key secrets: {}",
            problems.join("; ")
        ));
    } else if out.is_empty() && !secrets.is_empty() {
        let names: Vec<String> = secrets.iter().map(|(k, _)| k.to_string()).collect();
        errors.push(format!(
            "no valid API keys found in secrets ({})",
            names.join(", ")
        ));
    }
    out
}
