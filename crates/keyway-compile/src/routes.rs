//! HTTPRoutes: attachment to listeners, rule compilation, precedence, virtual hosts.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, StatusCode};
use keyway_model::gateway::{
    HttpRoute, HttpRouteRules, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme as Scheme, HttpRouteRulesFiltersType as FilterType,
    HttpRouteRulesFiltersUrlRewritePathType as RewritePathType, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeadersType as HeaderType, HttpRouteRulesMatchesMethod as M,
    HttpRouteRulesMatchesPathType as PathType, HttpRouteRulesMatchesQueryParamsType as QueryType,
};
use keyway_model::{Kind, Object, ObjectKey};
use keyway_store::{
    Action, Forward, HeaderFilter, HeaderMatch, HostPattern, PathMatch, PathRewrite, QueryMatch,
    Redirect, Rewrite, Route, RouteMatch, Target, ValueMatch, VirtualHost, WeightedBackend,
};

use crate::backends::{BackendRef, Resolver};
use crate::context::Context;
use crate::gateways::{age_key, AllowedNamespaces, Gateways, ListenerInfo};
use crate::policies::{AuthQuery, Policies};
use crate::status::{Condition, ObjectStatus, ParentRef, SectionRef, SectionStatus};
use crate::INVALID_ROUTE_BODY;

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// A route match attached to a listener, with what it needs to be ordered.
#[derive(Debug)]
pub struct RouteEntry {
    route: Arc<Route>,
    hostnames: Vec<HostPattern>,
    order: Order,
}

type Order = (
    u8,
    std::cmp::Reverse<usize>,
    bool,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
    (bool, Option<i128>, ObjectKey),
    usize,
    usize,
);

/// Output of the route pass.
#[derive(Debug, Default)]
pub struct Routes {
    /// Entries per listener id.
    pub entries: HashMap<usize, Vec<RouteEntry>>,
    /// One status per HTTPRoute.
    pub statuses: Vec<ObjectStatus>,
    /// Policies that decided some rule's authentication.
    pub decided_policies: HashSet<usize>,
    /// Policies that competed for some rule.
    pub considered_policies: HashSet<usize>,
    /// Policies named by `ExtensionRef` filters.
    pub referenced_policies: HashSet<usize>,
    /// Per Gateway, the `clientIdHeader`s of every policy that competed for one of its
    /// rules (see [`keyway_store::Listener::identity_headers`]).
    pub identity_headers: HashMap<ObjectKey, BTreeSet<String>>,
    /// Per HTTPRoute, the Gateways it is attached to (a policy on the route takes effect
    /// there: its status ancestors).
    pub attached_gateways: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Per policy, the HTTPRoutes whose rules name it in an `ExtensionRef` filter.
    pub referencing_routes: HashMap<usize, BTreeSet<ObjectKey>>,
}

/// A rule compiled once, then placed on every listener the route attaches to.
struct CompiledRule {
    index: usize,
    name: Option<Arc<str>>,
    matches: Vec<RouteMatch>,
    action: Arc<Action>,
    timeout: Option<Duration>,
    extension_refs: Vec<ObjectKey>,
}

/// Runs the route pass.
pub(crate) fn compile(ctx: &Context<'_>, gateways: &mut Gateways, policies: &Policies) -> Routes {
    let mut out = Routes::default();
    let mut resolver = Resolver::new(ctx);
    for (key, obj) in &ctx.snap.http_routes {
        let mut status = ObjectStatus::new(Kind::HttpRoute, key.clone(), obj.origin.clone());
        status.generation = obj.value.metadata.generation;
        status.uid = obj.value.metadata.uid.clone();
        let (rules, resolved, replaced) =
            compile_rules(&mut resolver, key, &obj.value, policies, &mut out);
        let route_name: Arc<str> = Arc::from(key.to_string());
        let age = age_key(obj.value.metadata.creation_timestamp.as_ref(), key);
        let mut attached_to: HashSet<usize> = HashSet::new();
        for parent in obj.value.spec.parent_refs.iter().flatten() {
            let pns = parent
                .namespace
                .clone()
                .unwrap_or_else(|| key.namespace.clone());
            let mut label = format!(
                "parent {} {pns}/{}",
                parent.kind.as_deref().unwrap_or("Gateway"),
                parent.name
            );
            if let Some(s) = &parent.section_name {
                label.push_str(&format!(" section {s}"));
            }
            if let Some(p) = parent.port {
                label.push_str(&format!(" port {p}"));
            }
            let mut section = SectionStatus {
                section: label,
                reference: Some(SectionRef::Parent(ParentRef {
                    group: parent.group.clone(),
                    kind: parent.kind.clone(),
                    namespace: parent.namespace.clone(),
                    name: parent.name.clone(),
                    section_name: parent.section_name.clone(),
                    port: parent.port,
                })),
                attached_routes: None,
                conditions: Vec::new(),
            };
            match attach(ctx, gateways, key, obj, parent, &pns) {
                Err(cond) => section.conditions.push(cond),
                Ok(listeners) => {
                    section.conditions.push(match &replaced {
                        None => Condition::ok("Accepted", "Accepted", ""),
                        Some(msg) => {
                            Condition::failed("Accepted", "RouteRuleReplaced", msg.clone())
                        }
                    });
                    for (lid, hostnames) in listeners {
                        if !attached_to.insert(lid) {
                            continue;
                        }
                        gateways.count_attached(lid);
                        let listener = gateways.listeners[lid].clone();
                        out.attached_gateways
                            .entry(key.clone())
                            .or_default()
                            .insert(listener.gateway.clone());
                        if !listener.programmed {
                            continue;
                        }
                        place(
                            &mut out,
                            policies,
                            &listener,
                            key,
                            &route_name,
                            &age,
                            &rules,
                            hostnames,
                        );
                    }
                }
            }
            section.conditions.push(resolved.clone());
            status.sections.push(section);
        }
        if obj
            .value
            .spec
            .parent_refs
            .as_ref()
            .is_none_or(Vec::is_empty)
        {
            status.conditions.push(Condition::failed(
                "Accepted",
                "NoMatchingParent",
                "the route has no parentRefs",
            ));
        }
        out.statuses.push(status);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn place(
    out: &mut Routes,
    policies: &Policies,
    listener: &ListenerInfo,
    key: &ObjectKey,
    route_name: &Arc<str>,
    age: &(bool, Option<i128>, ObjectKey),
    rules: &[CompiledRule],
    hostnames: Vec<HostPattern>,
) {
    for rule in rules {
        let query = AuthQuery {
            gateway: &listener.gateway,
            listener: &listener.name,
            route: key,
            rule_name: rule.name.as_deref(),
            extension_refs: &rule.extension_refs,
        };
        let (auth, decided) = policies.auth_for(&query, &mut out.considered_policies);
        if let Some(d) = decided {
            out.decided_policies.insert(d);
        }
        out.identity_headers
            .entry(listener.gateway.clone())
            .or_default()
            .extend(
                policies
                    .identity_headers(&query)
                    .map(|h| h.as_str().to_string()),
            );
        for (mi, m) in rule.matches.iter().enumerate() {
            let order = (
                match m.path {
                    PathMatch::Exact(_) => 0,
                    PathMatch::Prefix(_) => 1,
                    PathMatch::Regex(_) => 2,
                },
                std::cmp::Reverse(match &m.path {
                    PathMatch::Exact(p) | PathMatch::Prefix(p) => p.len(),
                    PathMatch::Regex(r) => r.as_str().len(),
                }),
                m.method.is_none(),
                std::cmp::Reverse(m.headers.len()),
                std::cmp::Reverse(m.query.len()),
                age.clone(),
                rule.index,
                mi,
            );
            let route = Arc::new(Route {
                route: route_name.clone(),
                rule: rule.index,
                rule_name: rule.name.clone(),
                matcher: m.clone(),
                auth: auth.clone(),
                action: rule.action.clone(),
                timeout: rule.timeout,
            });
            out.entries
                .entry(listener.id)
                .or_default()
                .push(RouteEntry {
                    route,
                    hostnames: hostnames.clone(),
                    order,
                });
        }
    }
}

/// The listeners a parentRef attaches to, with the route's effective hostnames on each.
fn attach(
    ctx: &Context<'_>,
    gateways: &Gateways,
    key: &ObjectKey,
    obj: &Object<HttpRoute>,
    parent: &keyway_model::gateway::HttpRouteParentRefs,
    pns: &str,
) -> Result<Vec<(usize, Vec<HostPattern>)>, Condition> {
    let group = parent.group.as_deref().unwrap_or(GATEWAY_GROUP);
    let kind = parent.kind.as_deref().unwrap_or("Gateway");
    if group != GATEWAY_GROUP || kind != "Gateway" {
        return Err(Condition::failed(
            "Accepted",
            "NoMatchingParent",
            format!("parentRef kind {kind:?} in group {group:?} is not supported (Gateway)"),
        ));
    }
    let gw = ObjectKey::new(pns, parent.name.as_str());
    let all: Vec<&ListenerInfo> = gateways.of_gateway(&gw).collect();
    if !ctx.snap.gateways.contains_key(&gw) {
        return Err(Condition::failed(
            "Accepted",
            "NoMatchingParent",
            format!("Gateway {gw} not found"),
        ));
    }
    let candidates: Vec<&ListenerInfo> = all
        .into_iter()
        .filter(|l| {
            parent
                .section_name
                .as_ref()
                .is_none_or(|s| l.name.as_ref() == s)
        })
        .filter(|l| parent.port.is_none_or(|p| i32::from(l.port) == p))
        .collect();
    if candidates.is_empty() {
        let mut what = Vec::new();
        if let Some(s) = &parent.section_name {
            what.push(format!("named {s}"));
        }
        if let Some(p) = parent.port {
            what.push(format!("on port {p}"));
        }
        return Err(Condition::failed(
            "Accepted",
            "NoMatchingParent",
            format!("Gateway {gw} has no HTTP listener {}", what.join(" "))
                .trim_end()
                .to_string(),
        ));
    }
    let ns_labels = ctx.namespace_labels(&key.namespace);
    let allowed: Vec<&ListenerInfo> = candidates
        .into_iter()
        .filter(|l| l.allows_http_route)
        .filter(|l| match &l.allowed_namespaces {
            AllowedNamespaces::All => true,
            AllowedNamespaces::Same => l.gateway.namespace == key.namespace,
            AllowedNamespaces::Selector(s) => s.matches(Some(&ns_labels)),
        })
        .collect();
    if allowed.is_empty() {
        return Err(Condition::failed(
            "Accepted",
            "NotAllowedByListeners",
            format!(
                "no listener of Gateway {gw} allows HTTPRoutes from namespace {}",
                key.namespace
            ),
        ));
    }
    let route_hosts: Vec<HostPattern> =
        match obj.value.spec.hostnames.as_ref().filter(|h| !h.is_empty()) {
            None => vec![HostPattern::Any],
            Some(h) => h.iter().map(|h| HostPattern::parse(Some(h))).collect(),
        };
    let mut out = Vec::new();
    for l in allowed {
        let mut hosts: Vec<HostPattern> = route_hosts
            .iter()
            .filter_map(|h| l.hostname.intersect(h))
            .collect();
        hosts.dedup();
        if !hosts.is_empty() {
            out.push((l.id, hosts));
        }
    }
    if out.is_empty() {
        return Err(Condition::failed(
            "Accepted",
            "NoMatchingListenerHostname",
            format!("none of the route's hostnames matches a listener hostname of Gateway {gw}"),
        ));
    }
    Ok(out)
}

/// Compiles every rule; returns them, the route's `ResolvedRefs` condition, and a message if
/// some rule was replaced by a 500.
fn compile_rules(
    resolver: &mut Resolver<'_, '_>,
    key: &ObjectKey,
    route: &HttpRoute,
    policies: &Policies,
    out: &mut Routes,
) -> (Vec<CompiledRule>, Condition, Option<String>) {
    let mut rules = Vec::new();
    let mut unresolved: Vec<(&'static str, String)> = Vec::new();
    let mut replaced: Vec<String> = Vec::new();
    for (index, rule) in route.spec.rules.iter().flatten().enumerate() {
        let mut problems = Vec::new();
        let matches = compile_matches(rule, &mut problems);
        let filters = compile_filters(
            rule.filters.as_deref().unwrap_or(&[]),
            &matches,
            &mut problems,
        );
        let mut extension_refs = Vec::new();
        for name in &filters.extension_refs {
            let pk = ObjectKey::new(key.namespace.as_str(), name.as_str());
            match policies.index_of(&pk) {
                Some(i) => {
                    out.referenced_policies.insert(i);
                    out.referencing_routes
                        .entry(i)
                        .or_default()
                        .insert(key.clone());
                    extension_refs.push(pk);
                }
                None => problems.push(format!("ExtensionRef: TrafficPolicy {pk} not found")),
            }
        }
        let timeout = rule.timeouts.as_ref().and_then(|t| {
            let parse = |s: &Option<String>, field: &str, problems: &mut Vec<String>| {
                s.as_ref()
                    .and_then(|s| match s.parse::<gateway_api::Duration>() {
                        Ok(d) if d.is_zero() => None,
                        Ok(d) => Some(Duration::from_millis(d.as_millis() as u64)),
                        Err(e) => {
                            problems.push(format!("timeouts.{field}: {e}"));
                            None
                        }
                    })
            };
            let a = parse(&t.request, "request", &mut problems);
            let b = parse(&t.backend_request, "backendRequest", &mut problems);
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        let action = if !problems.is_empty() {
            replaced.push(format!("Replaced Rule ({index}): {}", problems.join("; ")));
            direct_500()
        } else if let Some(redirect) = filters.redirect {
            Action::Redirect(redirect)
        } else {
            forward(
                resolver,
                key,
                rule,
                filters.request,
                filters.response,
                filters.rewrite,
                &matches,
                &mut unresolved,
                &mut replaced,
                index,
            )
        };
        rules.push(CompiledRule {
            index,
            name: rule.name.as_deref().map(Arc::from),
            matches,
            action: Arc::new(action),
            timeout,
            extension_refs,
        });
    }
    let resolved = match unresolved.first() {
        None => Condition::ok("ResolvedRefs", "ResolvedRefs", ""),
        Some((reason, _)) => Condition::failed(
            "ResolvedRefs",
            *reason,
            unresolved
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    let replaced = (!replaced.is_empty()).then(|| replaced.join("; "));
    (rules, resolved, replaced)
}

fn direct_500() -> Action {
    Action::Direct {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: Bytes::from_static(INVALID_ROUTE_BODY.as_bytes()),
    }
}

#[allow(clippy::too_many_arguments)]
fn forward(
    resolver: &mut Resolver<'_, '_>,
    key: &ObjectKey,
    rule: &HttpRouteRules,
    request: HeaderFilter,
    response: HeaderFilter,
    rewrite: Option<Rewrite>,
    matches: &[RouteMatch],
    unresolved: &mut Vec<(&'static str, String)>,
    replaced: &mut Vec<String>,
    index: usize,
) -> Action {
    let refs = rule.backend_refs.as_deref().unwrap_or(&[]);
    if refs.is_empty() {
        return Action::Direct {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: Bytes::from_static(b"no backend for this route"),
        };
    }
    let mut backends = Vec::new();
    for (bi, r) in refs.iter().enumerate() {
        let weight = r.weight.unwrap_or(1);
        if weight <= 0 {
            continue;
        }
        let ns = r.namespace.clone().unwrap_or_else(|| key.namespace.clone());
        let bref = BackendRef {
            group: r.group.as_deref().unwrap_or(""),
            kind: r.kind.as_deref().unwrap_or("Service"),
            name: &r.name,
            namespace: &ns,
            port: r.port,
        };
        let mut problems = Vec::new();
        let mut converted: Vec<HttpRouteRulesFilters> = Vec::new();
        for (fi, f) in r.filters.iter().flatten().enumerate() {
            // Backend-level filters have their own generated type; they are read through
            // the rule-level one. One that does not convert is never dropped silently: a
            // missing header filter could expose what it was meant to remove.
            match serde_json::to_value(f).and_then(serde_json::from_value) {
                Ok(c) => converted.push(c),
                Err(e) => {
                    replaced.push(format!(
                        "Replaced Rule ({index}): backendRefs[{bi}].filters[{fi}]: cannot be read: {e}"
                    ));
                    return direct_500();
                }
            }
        }
        let filters = compile_filters(&converted, matches, &mut problems);
        if !filters.extension_refs.is_empty() {
            problems
                .push("ExtensionRef is not supported on a backendRef (put it on the rule)".into());
        }
        let target = if !problems.is_empty() {
            replaced.push(format!(
                "Replaced Rule ({index}) backendRefs[{bi}]: {}",
                problems.join("; ")
            ));
            Target::Invalid(Arc::from(problems.join("; ")))
        } else {
            match resolver.resolve(&key.namespace, &bref) {
                Ok(u) => Target::Upstream(u),
                Err(e) => {
                    unresolved.push((
                        e.reason,
                        format!("rules[{index}].backendRefs[{bi}]: {}", e.message),
                    ));
                    Target::Invalid(Arc::from(e.message))
                }
            }
        };
        backends.push(WeightedBackend {
            weight: weight as u32,
            target,
            request_headers: filters.request,
            response_headers: filters.response,
            rewrite: filters.rewrite,
            redirect: filters.redirect,
        });
    }
    if backends.is_empty() {
        return Action::Direct {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: Bytes::from_static(b"every backend of this route has weight 0"),
        };
    }
    let total_weight = backends.iter().map(|b| b.weight).sum();
    Action::Forward(Forward {
        request_headers: request,
        response_headers: response,
        rewrite,
        backends,
        total_weight,
    })
}

fn compile_matches(rule: &HttpRouteRules, problems: &mut Vec<String>) -> Vec<RouteMatch> {
    let default = [HttpRouteRulesMatches::default()];
    let list = match rule.matches.as_deref() {
        None | Some([]) => &default[..],
        Some(l) => l,
    };
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let at = format!("matches[{i}]");
        let path = match &m.path {
            None => PathMatch::Prefix(String::new()),
            Some(p) => {
                let value = p.value.clone().unwrap_or_else(|| "/".into());
                match p.r#type.clone().unwrap_or(PathType::PathPrefix) {
                    PathType::Exact | PathType::PathPrefix if !value.starts_with('/') => {
                        problems.push(format!("{at}.path.value {value:?} must start with /"));
                        continue;
                    }
                    PathType::Exact => PathMatch::Exact(value),
                    PathType::PathPrefix => {
                        PathMatch::Prefix(value.trim_end_matches('/').to_string())
                    }
                    PathType::RegularExpression => match full_regex(&value) {
                        Ok(r) => PathMatch::Regex(r),
                        Err(e) => {
                            problems.push(format!("{at}.path: invalid regular expression: {e}"));
                            continue;
                        }
                    },
                }
            }
        };
        let method = m.method.as_ref().map(|m| match m {
            M::Get => Method::GET,
            M::Head => Method::HEAD,
            M::Post => Method::POST,
            M::Put => Method::PUT,
            M::Delete => Method::DELETE,
            M::Connect => Method::CONNECT,
            M::Options => Method::OPTIONS,
            M::Trace => Method::TRACE,
            M::Patch => Method::PATCH,
        });
        let mut headers = Vec::new();
        let mut seen = HashSet::new();
        for (hi, h) in m.headers.iter().flatten().enumerate() {
            let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
                problems.push(format!(
                    "{at}.headers[{hi}].name {:?} is not a header name",
                    h.name
                ));
                continue;
            };
            if !seen.insert(name.clone()) {
                continue;
            }
            let value = match h.r#type.clone().unwrap_or(HeaderType::Exact) {
                HeaderType::Exact => ValueMatch::Exact(h.value.clone()),
                HeaderType::RegularExpression => match full_regex(&h.value) {
                    Ok(r) => ValueMatch::Regex(r),
                    Err(e) => {
                        problems.push(format!(
                            "{at}.headers[{hi}]: invalid regular expression: {e}"
                        ));
                        continue;
                    }
                },
            };
            headers.push(HeaderMatch { name, value });
        }
        let mut query = Vec::new();
        let mut seen = HashSet::new();
        for (qi, q) in m.query_params.iter().flatten().enumerate() {
            if !seen.insert(q.name.clone()) {
                continue;
            }
            let value = match q.r#type.clone().unwrap_or(QueryType::Exact) {
                QueryType::Exact => ValueMatch::Exact(q.value.clone()),
                QueryType::RegularExpression => match full_regex(&q.value) {
                    Ok(r) => ValueMatch::Regex(r),
                    Err(e) => {
                        problems.push(format!(
                            "{at}.queryParams[{qi}]: invalid regular expression: {e}"
                        ));
                        continue;
                    }
                },
            };
            query.push(QueryMatch {
                name: q.name.clone(),
                value,
            });
        }
        out.push(RouteMatch {
            path,
            method,
            headers,
            query,
        });
    }
    out
}

/// A regex that must match the whole value; the error is one line naming the pattern.
fn full_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
        let text = e.to_string();
        let why = text
            .lines()
            .last()
            .unwrap_or("")
            .trim_start_matches("error: ")
            .to_string();
        format!("{pattern:?}: {why}")
    })
}

#[derive(Default)]
struct Filters {
    request: HeaderFilter,
    response: HeaderFilter,
    redirect: Option<Redirect>,
    rewrite: Option<Rewrite>,
    extension_refs: Vec<String>,
}

/// `(name, value)` pairs of a modifier's `set` or `add` list (the request and response
/// modifiers are distinct generated types with the same shape).
macro_rules! name_values {
    ($list:expr) => {
        $list
            .iter()
            .flatten()
            .map(|p| (p.name.as_str(), p.value.as_str()))
    };
}

fn compile_filters(
    list: &[HttpRouteRulesFilters],
    matches: &[RouteMatch],
    problems: &mut Vec<String>,
) -> Filters {
    let mut out = Filters::default();
    for (i, f) in list.iter().enumerate() {
        let at = format!("filters[{i}]");
        match f.r#type {
            FilterType::RequestHeaderModifier => {
                if let Some(m) = &f.request_header_modifier {
                    let (set, add) = (name_values!(m.set), name_values!(m.add));
                    out.request = header_filter(&at, set, add, m.remove.iter().flatten(), problems);
                }
            }
            FilterType::ResponseHeaderModifier => {
                if let Some(m) = &f.response_header_modifier {
                    let (set, add) = (name_values!(m.set), name_values!(m.add));
                    out.response =
                        header_filter(&at, set, add, m.remove.iter().flatten(), problems);
                }
            }
            FilterType::RequestRedirect => {
                let Some(r) = &f.request_redirect else {
                    continue;
                };
                let status = match r.status_code.unwrap_or(302) {
                    c @ (301 | 302 | 303 | 307 | 308) => {
                        StatusCode::from_u16(c as u16).unwrap_or(StatusCode::FOUND)
                    }
                    c => {
                        problems.push(format!(
                            "{at}.requestRedirect.statusCode {c} is not 301, 302, 303, 307 or 308"
                        ));
                        continue;
                    }
                };
                let path = r.path.as_ref().and_then(|p| {
                    path_rewrite(
                        &format!("{at}.requestRedirect.path"),
                        matches!(p.r#type, RedirectPathType::ReplaceFullPath),
                        &p.replace_full_path,
                        &p.replace_prefix_match,
                        matches,
                        problems,
                    )
                });
                let port = match r.port.map(u16::try_from) {
                    None => None,
                    Some(Ok(p)) if p > 0 => Some(p),
                    Some(_) => {
                        problems.push(format!("{at}.requestRedirect.port is not a TCP port"));
                        continue;
                    }
                };
                out.redirect = Some(Redirect {
                    scheme: r.scheme.as_ref().map(|s| match s {
                        Scheme::Http => "http".to_string(),
                        Scheme::Https => "https".to_string(),
                    }),
                    hostname: r.hostname.clone(),
                    port,
                    path,
                    status,
                });
            }
            FilterType::UrlRewrite => {
                let Some(r) = &f.url_rewrite else { continue };
                let path = r.path.as_ref().and_then(|p| {
                    path_rewrite(
                        &format!("{at}.urlRewrite.path"),
                        matches!(p.r#type, RewritePathType::ReplaceFullPath),
                        &p.replace_full_path,
                        &p.replace_prefix_match,
                        matches,
                        problems,
                    )
                });
                if let Some(h) = &r.hostname {
                    if HeaderValue::from_str(h).is_err() {
                        problems.push(format!(
                            "{at}.urlRewrite.hostname {h:?} is not a valid host"
                        ));
                    }
                }
                out.rewrite = Some(Rewrite {
                    hostname: r.hostname.clone(),
                    path,
                });
            }
            FilterType::ExtensionRef => {
                let Some(e) = &f.extension_ref else { continue };
                if e.group == keyway_model::kgateway::GROUP && e.kind == "TrafficPolicy" {
                    out.extension_refs.push(e.name.clone());
                } else {
                    problems.push(format!(
                        "{at}.extensionRef: {}/{} is not supported (gateway.kgateway.dev TrafficPolicy is)",
                        e.group, e.kind
                    ));
                }
            }
            FilterType::RequestMirror | FilterType::Cors => {
                problems.push(format!(
                    "{at}: filter type {:?} is not supported by Keyway",
                    f.r#type
                ));
            }
        }
    }
    if out.redirect.is_some() && out.rewrite.is_some() {
        problems.push("RequestRedirect and URLRewrite cannot be used in the same rule".into());
    }
    out
}

fn path_rewrite(
    at: &str,
    full: bool,
    full_path: &Option<String>,
    prefix: &Option<String>,
    matches: &[RouteMatch],
    problems: &mut Vec<String>,
) -> Option<PathRewrite> {
    if full {
        match full_path {
            Some(p) => Some(PathRewrite::Full(p.clone())),
            None => {
                problems.push(format!("{at}: ReplaceFullPath needs replaceFullPath"));
                None
            }
        }
    } else {
        let Some(p) = prefix else {
            problems.push(format!("{at}: ReplacePrefixMatch needs replacePrefixMatch"));
            return None;
        };
        if !matches
            .iter()
            .all(|m| matches!(m.path, PathMatch::Prefix(_)))
        {
            problems.push(format!(
                "{at}: ReplacePrefixMatch needs every match of the rule to be a PathPrefix"
            ));
            return None;
        }
        Some(PathRewrite::Prefix(p.clone()))
    }
}

fn header_filter<'a>(
    at: &str,
    set: impl Iterator<Item = (&'a str, &'a str)>,
    add: impl Iterator<Item = (&'a str, &'a str)>,
    remove: impl Iterator<Item = &'a String>,
    problems: &mut Vec<String>,
) -> HeaderFilter {
    let mut pair = |(n, v): (&str, &str)| match (
        HeaderName::from_bytes(n.as_bytes()),
        HeaderValue::from_str(v),
    ) {
        (Ok(n), Ok(v)) => Some((n, v)),
        _ => {
            problems.push(format!(
                "{at}: header {n:?} with value {v:?} is not valid HTTP"
            ));
            None
        }
    };
    let set: Vec<_> = set.filter_map(&mut pair).collect();
    let add: Vec<_> = add.filter_map(&mut pair).collect();
    let remove = remove
        .filter_map(|n| match HeaderName::from_bytes(n.as_bytes()) {
            Ok(n) => Some(n),
            Err(_) => {
                problems.push(format!("{at}: {n:?} is not a header name"));
                None
            }
        })
        .collect();
    HeaderFilter { set, add, remove }
}

/// Whether route hostname `general` also serves every host of the virtual host `specific`.
fn covers(general: &HostPattern, specific: &HostPattern) -> bool {
    match (general, specific) {
        (HostPattern::Any, _) => true,
        (_, HostPattern::Any) => false,
        (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
        (HostPattern::Exact(_), HostPattern::Wildcard(_)) => false,
        (w @ HostPattern::Wildcard(_), HostPattern::Exact(e)) => w.matches(e),
        (HostPattern::Wildcard(a), HostPattern::Wildcard(b)) => b.ends_with(a.as_str()),
    }
}

/// Groups a listener's entries into virtual hosts. A host's virtual host lists the routes
/// of its own hostname first, then those of less specific hostnames that also cover it,
/// each group in Gateway API match precedence.
pub fn virtual_hosts(entries: &[RouteEntry]) -> Vec<VirtualHost> {
    let mut patterns: Vec<HostPattern> = Vec::new();
    for e in entries {
        for h in &e.hostnames {
            if !patterns.contains(h) {
                patterns.push(h.clone());
            }
        }
    }
    patterns.sort_by_key(HostPattern::specificity);
    patterns
        .into_iter()
        .map(|vh| {
            let mut ranked: Vec<(_, &Order, &Arc<Route>)> = entries
                .iter()
                .filter_map(|e| {
                    e.hostnames
                        .iter()
                        .filter(|h| covers(h, &vh))
                        .map(HostPattern::specificity)
                        .min()
                        .map(|spec| (spec, &e.order, &e.route))
                })
                .collect();
            ranked.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            VirtualHost {
                hostname: vh,
                routes: ranked.into_iter().map(|(_, _, r)| r.clone()).collect(),
            }
        })
        .collect()
}
