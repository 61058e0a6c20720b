//! Gateways and their listeners: what is served on which port, and what may attach.

use std::collections::BTreeMap;
use std::sync::Arc;

use keyway_model::core::Time;
use keyway_model::gateway::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom as From,
};
use keyway_model::{Kind, ObjectKey};
use keyway_store::{HostPattern, ListenerTls};

use crate::context::Context;
use crate::labels::Selector;
use crate::status::{Condition, ObjectStatus, SectionRef, SectionStatus};

/// Which namespaces' routes a listener accepts.
#[derive(Clone, Debug)]
pub enum AllowedNamespaces {
    /// Only the Gateway's own namespace (the default).
    Same,
    /// Every namespace.
    All,
    /// Namespaces whose labels match.
    Selector(Selector),
}

/// One listener as the later passes see it.
#[derive(Clone, Debug)]
pub struct ListenerInfo {
    /// Index in [`Gateways::listeners`].
    pub id: usize,
    /// The Gateway.
    pub gateway: ObjectKey,
    /// `namespace/name` of the Gateway.
    pub gateway_name: Arc<str>,
    /// Listener name.
    pub name: Arc<str>,
    /// Port.
    pub port: u16,
    /// Hostname pattern.
    pub hostname: HostPattern,
    /// Whether it is served (HTTP, not conflicted).
    pub programmed: bool,
    /// `allowedRoutes.namespaces`.
    pub allowed_namespaces: AllowedNamespaces,
    /// Whether `allowedRoutes.kinds` admits HTTPRoute.
    pub allows_http_route: bool,
    /// HTTPS listeners: the certificate, or why handshakes are refused.
    pub tls: Option<ListenerTls>,
    status_index: (usize, usize),
}

impl ListenerInfo {
    /// Whether the listener is in the served config: programmed, or an HTTPS listener
    /// whose certificate cannot be used (it stays, to refuse the handshakes SNI sends it,
    /// rather than let another listener's certificate answer for its hostname).
    pub fn in_config(&self) -> bool {
        self.programmed || matches!(self.tls, Some(ListenerTls::Refused(_)))
    }
}

/// Output of the gateway pass.
#[derive(Debug, Default)]
pub struct Gateways {
    /// Every HTTP listener, served or not.
    pub listeners: Vec<ListenerInfo>,
    /// One status per Gateway.
    pub statuses: Vec<ObjectStatus>,
}

impl Gateways {
    /// Listeners of one Gateway.
    pub fn of_gateway<'a>(
        &'a self,
        key: &'a ObjectKey,
    ) -> impl Iterator<Item = &'a ListenerInfo> + 'a {
        self.listeners.iter().filter(move |l| &l.gateway == key)
    }

    /// Counts a route attached to a listener (for the listener's status).
    pub fn count_attached(&mut self, id: usize) {
        let (g, s) = self.listeners[id].status_index;
        let n = self.statuses[g].sections[s]
            .attached_routes
            .get_or_insert(0);
        *n += 1;
    }
}

/// Creation time then namespace/name: the order Gateway API uses to break ties.
pub(crate) fn age_key(created: Option<&Time>, key: &ObjectKey) -> (bool, Option<i128>, ObjectKey) {
    let ts = created.map(|t| t.0.as_nanosecond());
    (ts.is_none(), ts, key.clone())
}

/// Whether Gateways of class `class` are served: the class named by `--gateway-class`,
/// if given, and, with a controller name (Kubernetes mode), only a GatewayClass that
/// exists and names our controller. Other controllers' Gateways are not ours to serve.
fn is_ours(ctx: &Context<'_>, class: &str) -> bool {
    let options = ctx.options;
    if options.gateway_class.as_ref().is_some_and(|c| c != class) {
        return false;
    }
    let Some(controller) = &options.controller_name else {
        return true;
    };
    ctx.snap
        .gateway_classes
        .get(&ObjectKey::new("", class))
        .is_some_and(|gc| gc.value.spec.controller_name == *controller)
}

/// Runs the gateway pass.
pub(crate) fn compile(ctx: &Context<'_>) -> Gateways {
    let mut out = Gateways::default();
    for (key, class) in &ctx.snap.gateway_classes {
        if !is_ours(ctx, &key.name) {
            continue;
        }
        let mut status = ObjectStatus::new(Kind::GatewayClass, key.clone(), class.origin.clone());
        status.generation = class.value.metadata.generation;
        status.uid = class.value.metadata.uid.clone();
        status.conditions.push(Condition::ok(
            "Accepted",
            "Accepted",
            format!("handled by {}", class.value.spec.controller_name),
        ));
        out.statuses.push(status);
    }
    let mut gateways: Vec<(&ObjectKey, &keyway_model::Object<Gateway>)> = ctx
        .snap
        .gateways
        .iter()
        .filter(|(_, g)| is_ours(ctx, &g.value.spec.gateway_class_name))
        .collect();
    gateways.sort_by_key(|(k, g)| age_key(g.value.metadata.creation_timestamp.as_ref(), k));

    // (port, hostname) -> the listener that holds it.
    let mut taken: BTreeMap<(u16, String), String> = BTreeMap::new();
    // port -> whether it speaks TLS, and the first listener that said so.
    let mut protocols: BTreeMap<u16, (bool, String)> = BTreeMap::new();
    for (key, gw) in gateways {
        let mut status = ObjectStatus::new(Kind::Gateway, key.clone(), gw.origin.clone());
        status.generation = gw.value.metadata.generation;
        status.uid = gw.value.metadata.uid.clone();
        let status_idx = out.statuses.len();
        let mut programmed_any = false;
        for l in &gw.value.spec.listeners {
            let client_certificates = gw
                .value
                .spec
                .tls
                .as_ref()
                .is_some_and(|t| t.frontend.is_some());
            let (section, info) = listener(ctx, key, l, client_certificates);
            let mut section = section;
            let mut info = info;
            if let Some(info) = info.as_mut() {
                let slot = (info.port, info.hostname.to_string());
                let here = format!("Gateway {key} listener {}", info.name);
                let tls = info.tls.is_some();
                let protocol_holder = match protocols.get(&info.port) {
                    Some((other, holder)) if *other != tls => Some(holder.clone()),
                    Some(_) => None,
                    None => {
                        protocols.insert(info.port, (tls, here.clone()));
                        None
                    }
                };
                if let Some(holder) = protocol_holder {
                    info.programmed = false;
                    info.tls = None;
                    section.conditions.push(Condition::raised(
                        "Conflicted",
                        "ProtocolConflict",
                        format!(
                            "port {} already serves {} for {holder}",
                            info.port,
                            if tls { "HTTP" } else { "HTTPS" }
                        ),
                    ));
                    section.conditions.push(Condition::failed(
                        "Programmed",
                        "Invalid",
                        "not served: HTTP and HTTPS cannot share a port",
                    ));
                } else {
                    match taken.get(&slot) {
                        Some(holder) => {
                            info.tls = None;
                            info.programmed = false;
                            section.conditions.push(Condition::raised(
                                "Conflicted",
                                "HostnameConflict",
                                format!(
                                    "port {} hostname {} is already served by {holder}",
                                    info.port, info.hostname
                                ),
                            ));
                            section.conditions.push(Condition::failed(
                                "Programmed",
                                "Invalid",
                                "not served: conflicts with another listener",
                            ));
                        }
                        None if !info.programmed => {
                            // An HTTPS listener whose certificate cannot be used: it holds its
                            // hostname (its handshakes are refused, never answered by another
                            // listener's certificate) but serves nothing.
                            taken.insert(slot, here);
                            section.conditions.push(Condition::failed(
                            "Programmed",
                            "Invalid",
                            "not served: its certificate cannot be used (see ResolvedRefs); handshakes are refused",
                        ));
                        }
                        None => {
                            taken.insert(slot, here);
                            programmed_any |= info.programmed;
                            section
                                .conditions
                                .push(Condition::ok("Programmed", "Programmed", ""));
                        }
                    }
                }
                info.id = out.listeners.len();
                info.status_index = (status_idx, status.sections.len());
            }
            status.sections.push(section);
            if let Some(info) = info {
                out.listeners.push(info);
            }
        }
        status
            .conditions
            .push(Condition::ok("Accepted", "Accepted", ""));
        status.conditions.push(if programmed_any {
            Condition::ok("Programmed", "Programmed", "")
        } else {
            Condition::failed("Programmed", "Invalid", "no listener can be served")
        });
        out.statuses.push(status);
    }
    out
}

fn listener(
    ctx: &Context<'_>,
    gw: &ObjectKey,
    l: &GatewayListeners,
    client_certificates: bool,
) -> (SectionStatus, Option<ListenerInfo>) {
    let mut section = SectionStatus {
        section: format!("listener {}", l.name),
        reference: Some(SectionRef::Listener {
            name: l.name.clone(),
            http_routes: false,
        }),
        attached_routes: Some(0),
        conditions: Vec::new(),
    };
    let https = match l.protocol.as_str() {
        "HTTP" => false,
        "HTTPS" => true,
        other => {
            section.conditions.push(Condition::failed(
                "Accepted",
                "UnsupportedProtocol",
                format!("protocol {other} is not served by Keyway (HTTP and HTTPS are)"),
            ));
            return (section, None);
        }
    };
    let port = match u16::try_from(l.port) {
        Ok(p) if p > 0 => p,
        _ => {
            section.conditions.push(Condition::failed(
                "Accepted",
                "PortUnavailable",
                format!("port {} is not a TCP port", l.port),
            ));
            return (section, None);
        }
    };
    let routes = l.allowed_routes.as_ref();
    let allowed_namespaces = match routes.and_then(|r| r.namespaces.as_ref()) {
        None => AllowedNamespaces::Same,
        Some(ns) => match ns.from {
            None | Some(From::Same) => AllowedNamespaces::Same,
            Some(From::All) => AllowedNamespaces::All,
            Some(From::Selector) => {
                let sel = ns.selector.as_ref();
                let labels = sel.and_then(|s| s.match_labels.clone()).unwrap_or_default();
                let exprs = sel
                    .and_then(|s| s.match_expressions.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| (e.key, e.operator, e.values.unwrap_or_default()));
                match Selector::from_parts(labels, exprs) {
                    Ok(s) => AllowedNamespaces::Selector(s),
                    Err(e) => {
                        section.conditions.push(Condition::failed(
                            "Accepted",
                            "Invalid",
                            format!("allowedRoutes.namespaces.selector: {e}"),
                        ));
                        return (section, None);
                    }
                }
            }
        },
    };
    let mut allows_http_route = true;
    let mut resolved = Condition::ok("ResolvedRefs", "ResolvedRefs", "");
    if let Some(kinds) = routes
        .and_then(|r| r.kinds.as_ref())
        .filter(|k| !k.is_empty())
    {
        let (ok, bad): (Vec<_>, Vec<_>) = kinds.iter().partition(|k| {
            k.kind == "HTTPRoute"
                && k.group.as_deref().unwrap_or("gateway.networking.k8s.io")
                    == "gateway.networking.k8s.io"
        });
        allows_http_route = !ok.is_empty();
        if !bad.is_empty() {
            let names: Vec<_> = bad.iter().map(|k| k.kind.as_str()).collect();
            resolved = Condition::failed(
                "ResolvedRefs",
                "InvalidRouteKinds",
                format!(
                    "allowedRoutes.kinds: {} not supported on an HTTP listener",
                    names.join(", ")
                ),
            );
        }
    }
    let mut programmed = true;
    let mut accepted = Condition::ok("Accepted", "Accepted", "");
    let tls = https.then(|| {
        if client_certificates {
            // Serving without the client check the Gateway asks for would be serving open.
            let message = "spec.tls.frontend (client certificate validation) is not supported by Keyway; HTTPS listeners refuse handshakes rather than serve without it";
            programmed = false;
            accepted = Condition::failed("Accepted", "UnsupportedValue", message);
            return ListenerTls::Refused(Arc::from(message));
        }
        match crate::certificates::resolve(ctx, gw, l.tls.as_ref()) {
            Ok(key) => ListenerTls::Ready(key),
            Err((reason, message)) => {
                programmed = false;
                resolved = Condition::failed("ResolvedRefs", reason, message.clone());
                ListenerTls::Refused(Arc::from(message))
            }
        }
    });
    section.conditions.push(accepted);
    section.conditions.push(resolved);
    section.reference = Some(SectionRef::Listener {
        name: l.name.clone(),
        http_routes: allows_http_route,
    });
    let info = ListenerInfo {
        id: 0,
        gateway: gw.clone(),
        gateway_name: Arc::from(gw.to_string()),
        name: Arc::from(l.name.as_str()),
        port,
        hostname: HostPattern::parse(l.hostname.as_deref()),
        programmed,
        allowed_namespaces,
        allows_http_route,
        tls,
        status_index: (0, 0),
    };
    (section, Some(info))
}
