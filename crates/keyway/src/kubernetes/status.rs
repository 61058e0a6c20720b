//! From the compiler's [`Report`] to the `status` stanzas of API objects.
//!
//! Pure functions: [`desired`] says what Keyway's part of each object's status should be,
//! [`merge`] fits it into the status the object carries now. The writer
//! ([`super::writer`]) only moves the results over the wire, so everything users read in
//! `kubectl get -o yaml` is decided (and unit-tested) here.
//!
//! Who owns what:
//! - GatewayClass and Gateway (ours by `controllerName`): the whole status;
//! - HTTPRoute `status.parents[]` and TrafficPolicy `status.ancestors[]`: only entries whose
//!   `controllerName` is ours. Every other entry is kept byte for byte, in place; ours are
//!   updated where they stand, dropped when no longer wanted, appended when new.
//!
//! Conditions carry `observedGeneration`, and `lastTransitionTime` moves only when a
//! condition's status or reason does, so re-deriving an unchanged status yields the stored
//! one exactly and nothing is written.

use keyway_compile::{Condition, ObjectStatus, ParentRef, Report, SectionRef};
use keyway_model::core::Service;
use keyway_model::{Kind, ObjectKey};
use serde_json::{json, Map, Value};

const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The addresses written to every Gateway's `status.addresses`: those of the Service in
/// front of the replicas (`--service`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayAddresses {
    /// `(type, value)`: `IPAddress` or `Hostname`.
    pub addresses: Vec<(&'static str, String)>,
    /// Why there are none, for `Programmed=False AddressNotAssigned`.
    pub why_none: String,
}

impl GatewayAddresses {
    /// The Service's load-balancer ingress IPs or hostnames, else its cluster IPs.
    /// `service` is `None` when it does not exist (or no `--service` was given: `name`
    /// is then `None` too).
    pub fn of(name: Option<&ObjectKey>, service: Option<&Service>) -> GatewayAddresses {
        let Some(name) = name else {
            return GatewayAddresses {
                addresses: Vec::new(),
                why_none: "no Service configured (--service NS/NAME)".into(),
            };
        };
        let Some(service) = service else {
            return GatewayAddresses {
                addresses: Vec::new(),
                why_none: format!("Service {name} not found"),
            };
        };
        let mut addresses = Vec::new();
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for i in ingress.into_iter().flatten() {
            if let Some(ip) = i.ip.as_deref().filter(|s| !s.is_empty()) {
                addresses.push(("IPAddress", ip.to_string()));
            } else if let Some(host) = i.hostname.as_deref().filter(|s| !s.is_empty()) {
                addresses.push(("Hostname", host.to_string()));
            }
        }
        if addresses.is_empty() {
            let spec = service.spec.as_ref();
            let ips: Vec<String> = match spec.and_then(|s| s.cluster_ips.clone()) {
                Some(ips) if !ips.is_empty() => ips,
                _ => spec
                    .and_then(|s| s.cluster_ip.clone())
                    .into_iter()
                    .collect(),
            };
            addresses.extend(
                ips.into_iter()
                    .filter(|ip| !ip.is_empty() && ip != "None")
                    .map(|ip| ("IPAddress", ip)),
            );
        }
        let why_none = if addresses.is_empty() {
            format!("Service {name} has no load-balancer ingress and no cluster IP")
        } else {
            String::new()
        };
        GatewayAddresses {
            addresses,
            why_none,
        }
    }
}

/// Keyway's part of one object's status.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The object's kind.
    pub kind: Kind,
    /// Its namespace (empty for a GatewayClass) and name.
    pub key: ObjectKey,
    /// The incarnation it was compiled from (`metadata.uid`).
    pub uid: Option<String>,
    /// What is written.
    pub part: Part,
}

/// What of a status Keyway owns, and its wanted content (conditions without
/// `lastTransitionTime`, which [`merge`] fills in).
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// The whole status (GatewayClass, Gateway).
    Whole(Value),
    /// Our entries of `status.parents` (HTTPRoute).
    Parents(Vec<Value>),
    /// Our entries of `status.ancestors` (TrafficPolicy).
    Ancestors(Vec<Value>),
}

impl Part {
    /// The list field of a shared status, if any.
    fn list_field(&self) -> Option<(&'static str, &'static str, &[Value])> {
        match self {
            Part::Whole(_) => None,
            Part::Parents(v) => Some(("parents", "parentRef", v)),
            Part::Ancestors(v) => Some(("ancestors", "ancestorRef", v)),
        }
    }
}

/// Keyway's status for every object in the report that has one to write. `controller`
/// is `--controller-name`.
pub fn desired(report: &Report, addresses: &GatewayAddresses, controller: &str) -> Vec<Desired> {
    let ours: std::collections::HashSet<&ObjectKey> = report
        .objects
        .iter()
        .filter(|o| o.kind == Kind::Gateway)
        .map(|o| &o.key)
        .collect();
    let mut out = Vec::new();
    for o in &report.objects {
        let part = match o.kind {
            Kind::GatewayClass => Part::Whole(json!({
                "conditions": conditions(&o.conditions, o.generation),
            })),
            Kind::Gateway => Part::Whole(gateway(o, addresses)),
            Kind::HttpRoute => Part::Parents(
                o.sections
                    .iter()
                    .filter_map(|s| match &s.reference {
                        Some(SectionRef::Parent(p)) if is_our_gateway(p, &o.key, &ours) => {
                            Some(json!({
                                "parentRef": parent_ref(p),
                                "controllerName": controller,
                                "conditions": conditions(&s.conditions, o.generation),
                            }))
                        }
                        _ => None,
                    })
                    .collect(),
            ),
            Kind::TrafficPolicy => Part::Ancestors(
                o.ancestors
                    .iter()
                    .map(|a| {
                        json!({
                            "ancestorRef": parent_ref(a),
                            "controllerName": controller,
                            "conditions": conditions(&o.conditions, o.generation),
                        })
                    })
                    .collect(),
            ),
            _ => continue,
        };
        out.push(Desired {
            kind: o.kind,
            key: o.key.clone(),
            uid: o.uid.clone(),
            part,
        });
    }
    out
}

/// Whether a route's `parentRef` names one of our Gateways: the only parents we answer
/// for (another controller's Gateway, or one that exists nowhere, is not ours to report).
fn is_our_gateway(
    p: &ParentRef,
    route: &ObjectKey,
    ours: &std::collections::HashSet<&ObjectKey>,
) -> bool {
    let group = p.group.as_deref().unwrap_or(GATEWAY_GROUP);
    let kind = p.kind.as_deref().unwrap_or("Gateway");
    let ns = p.namespace.as_deref().unwrap_or(&route.namespace);
    group == GATEWAY_GROUP && kind == "Gateway" && ours.contains(&ObjectKey::new(ns, &*p.name))
}

fn parent_ref(p: &ParentRef) -> Value {
    serde_json::to_value(p).expect("a ParentRef serializes")
}

fn conditions(list: &[Condition], generation: Option<i64>) -> Vec<Value> {
    list.iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("type".into(), c.type_.into());
            m.insert(
                "status".into(),
                if c.status { "True" } else { "False" }.into(),
            );
            m.insert("reason".into(), c.reason.clone().into());
            m.insert("message".into(), c.message.clone().into());
            if let Some(g) = generation {
                m.insert("observedGeneration".into(), g.into());
            }
            Value::Object(m)
        })
        .collect()
}

fn gateway(o: &ObjectStatus, addresses: &GatewayAddresses) -> Value {
    let mut conds = o.conditions.clone();
    if addresses.addresses.is_empty() {
        // A Gateway that cannot be served at all says so; otherwise the missing address is
        // why it is not programmed.
        if let Some(p) = conds
            .iter_mut()
            .find(|c| c.type_ == "Programmed" && c.status)
        {
            *p = Condition::failed("Programmed", "AddressNotAssigned", &*addresses.why_none);
        }
    }
    let listeners: Vec<Value> = o
        .sections
        .iter()
        .filter_map(|s| match &s.reference {
            Some(SectionRef::Listener { name, http_routes }) => {
                let kinds: Vec<Value> = if *http_routes {
                    vec![json!({"group": GATEWAY_GROUP, "kind": "HTTPRoute"})]
                } else {
                    Vec::new()
                };
                Some(json!({
                    "name": name,
                    "supportedKinds": kinds,
                    "attachedRoutes": s.attached_routes.unwrap_or(0),
                    "conditions": conditions(&s.conditions, o.generation),
                }))
            }
            _ => None,
        })
        .collect();
    let mut status = Map::new();
    if !addresses.addresses.is_empty() {
        let list: Vec<Value> = addresses
            .addresses
            .iter()
            .map(|(t, v)| json!({"type": t, "value": v}))
            .collect();
        status.insert("addresses".into(), list.into());
    }
    status.insert("conditions".into(), conditions(&conds, o.generation).into());
    status.insert("listeners".into(), listeners.into());
    Value::Object(status)
}

/// The status to write for `desired` given the object's current `status` (`None`:
/// none yet), or `None` when it already says exactly that. `now` is the RFC 3339 time
/// stamped on conditions that change.
pub fn merge(
    current: Option<&Value>,
    desired: &Part,
    controller: &str,
    now: &str,
) -> Option<Value> {
    let empty = Map::new();
    let current_map = current.and_then(Value::as_object).unwrap_or(&empty);
    let next = match desired.list_field() {
        None => {
            let Part::Whole(want) = desired else {
                unreachable!("only Whole has no list field")
            };
            let mut next = want.clone();
            carry_whole(&mut next, current_map, now);
            next
        }
        Some((field, ref_field, wanted)) => {
            let existing: &[Value] = current_map
                .get(field)
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let list = merge_entries(existing, wanted, ref_field, controller, now);
            let mut next = current_map.clone();
            next.insert(field.into(), list.into());
            Value::Object(next)
        }
    };
    let unchanged = match current {
        Some(c) => *c == next,
        None => next
            .as_object()
            .is_some_and(|m| m.values().all(|v| v.as_array().is_some_and(Vec::is_empty))),
    };
    (!unchanged).then_some(next)
}

/// Our entries in place of the old ones, others untouched: an entry of ours that is
/// still wanted is updated where it stands, one no longer wanted is removed, new ones go
/// last in the order given.
fn merge_entries(
    existing: &[Value],
    wanted: &[Value],
    ref_field: &str,
    controller: &str,
    now: &str,
) -> Vec<Value> {
    let mut used = vec![false; wanted.len()];
    let mut out = Vec::with_capacity(existing.len().max(wanted.len()));
    for entry in existing {
        if entry.get("controllerName").and_then(Value::as_str) != Some(controller) {
            out.push(entry.clone());
            continue;
        }
        let found = wanted
            .iter()
            .enumerate()
            .find(|(i, w)| !used[*i] && w.get(ref_field) == entry.get(ref_field));
        if let Some((i, w)) = found {
            used[i] = true;
            let mut next = w.clone();
            carry_conditions(&mut next, entry.get("conditions"), now);
            out.push(next);
        }
    }
    for (w, _) in wanted.iter().zip(&used).filter(|(_, u)| !**u) {
        let mut next = w.clone();
        carry_conditions(&mut next, None, now);
        out.push(next);
    }
    out
}

/// A Gateway's or GatewayClass's status: conditions of the object and of each listener
/// (matched by name) keep their times where unchanged.
fn carry_whole(next: &mut Value, current: &Map<String, Value>, now: &str) {
    carry_conditions(next, current.get("conditions"), now);
    let old_listeners = current.get("listeners").and_then(Value::as_array);
    if let Some(listeners) = next.get_mut("listeners").and_then(Value::as_array_mut) {
        for l in listeners {
            let old = old_listeners.and_then(|old| {
                old.iter()
                    .find(|o| o.get("name").is_some() && o.get("name") == l.get("name"))
            });
            carry_conditions(l, old.and_then(|o| o.get("conditions")), now);
        }
    }
}

/// Sets `lastTransitionTime` on each condition of `holder["conditions"]`: the old
/// condition's time if its status and reason are unchanged, else `now`.
fn carry_conditions(holder: &mut Value, old: Option<&Value>, now: &str) {
    let old = old.and_then(Value::as_array);
    let Some(conds) = holder.get_mut("conditions").and_then(Value::as_array_mut) else {
        return;
    };
    for c in conds {
        let same = old.and_then(|old| {
            old.iter().find(|o| {
                o.get("type") == c.get("type")
                    && o.get("status") == c.get("status")
                    && o.get("reason") == c.get("reason")
            })
        });
        let time = same
            .and_then(|o| o.get("lastTransitionTime"))
            .cloned()
            .unwrap_or_else(|| now.into());
        if let Some(m) = c.as_object_mut() {
            m.insert("lastTransitionTime".into(), time);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyway_compile::SectionStatus;
    use keyway_model::Origin;

    const US: &str = "keyway.dev/gateway-controller";
    const T0: &str = "2026-01-01T00:00:00Z";
    const T1: &str = "2026-01-02T00:00:00Z";

    fn route_status(parents: &[(&str, Condition)]) -> ObjectStatus {
        let mut s = ObjectStatus::new(
            Kind::HttpRoute,
            ObjectKey::new("apps", "r"),
            Origin::Kubernetes,
        );
        s.generation = Some(3);
        for (gw, c) in parents {
            s.sections.push(SectionStatus {
                section: format!("parent Gateway {gw}"),
                reference: Some(SectionRef::Parent(ParentRef {
                    name: gw.to_string(),
                    ..Default::default()
                })),
                attached_routes: None,
                conditions: vec![c.clone()],
            });
        }
        s
    }

    fn gateway_status(name: &str) -> ObjectStatus {
        let mut g = ObjectStatus::new(
            Kind::Gateway,
            ObjectKey::new("apps", name),
            Origin::Kubernetes,
        );
        g.generation = Some(1);
        g.conditions.push(Condition::ok("Accepted", "Accepted", ""));
        g.conditions
            .push(Condition::ok("Programmed", "Programmed", ""));
        g.sections.push(SectionStatus {
            section: "listener http".into(),
            reference: Some(SectionRef::Listener {
                name: "http".into(),
                http_routes: true,
            }),
            attached_routes: Some(2),
            conditions: vec![Condition::ok("Accepted", "Accepted", "")],
        });
        g
    }

    fn report(objects: Vec<ObjectStatus>) -> Report {
        Report { objects }
    }

    fn ip() -> GatewayAddresses {
        GatewayAddresses {
            addresses: vec![("IPAddress", "10.0.0.1".into())],
            why_none: String::new(),
        }
    }

    #[test]
    fn other_controllers_parent_entries_stay_in_place_byte_for_byte() {
        let r = report(vec![
            gateway_status("gw"),
            route_status(&[("gw", Condition::ok("Accepted", "Accepted", ""))]),
        ]);
        let d = desired(&r, &ip(), US);
        let route = d.iter().find(|d| d.kind == Kind::HttpRoute).unwrap();
        let theirs = json!({"parentRef": {"name": "other"}, "controllerName": "x.io/y",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Weird", "message": "ü",
            "lastTransitionTime": "2020-01-01T00:00:00Z", "observedGeneration": 1}], "extra": [1, 2]});
        let stale_ours =
            json!({"parentRef": {"name": "gone"}, "controllerName": US, "conditions": []});
        let current = json!({"parents": [stale_ours, theirs.clone(), {"parentRef": {"name": "gw"}, "controllerName": US,
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
            "observedGeneration": 3, "lastTransitionTime": T0}]}]});
        let next = merge(Some(&current), &route.part, US, T1).expect("a stale entry to remove");
        let parents = next["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2);
        assert_eq!(
            parents[0], theirs,
            "the other controller's entry, untouched"
        );
        assert_eq!(parents[1]["parentRef"], json!({"name": "gw"}));
        assert_eq!(
            parents[1]["conditions"][0]["lastTransitionTime"], T0,
            "unchanged condition keeps its time"
        );
        // Applying the result again changes nothing: an idle cluster sees no writes.
        assert_eq!(merge(Some(&next), &route.part, US, T1), None);
    }

    #[test]
    fn transition_time_moves_only_with_status_or_reason() {
        let gw = gateway_status("gw");
        let r = report(vec![gw.clone()]);
        let first = merge(None, &desired(&r, &ip(), US)[0].part, US, T0).unwrap();
        assert_eq!(first["conditions"][0]["lastTransitionTime"], T0);
        assert_eq!(first["conditions"][0]["observedGeneration"], 1);
        assert_eq!(first["listeners"][0]["attachedRoutes"], 2);
        assert_eq!(
            first["listeners"][0]["supportedKinds"],
            json!([{"group": GATEWAY_GROUP, "kind": "HTTPRoute"}])
        );
        assert_eq!(
            first["addresses"],
            json!([{"type": "IPAddress", "value": "10.0.0.1"}])
        );
        // A new message alone: written, same time.
        let mut gw2 = gw.clone();
        gw2.conditions[0].message = "changed".into();
        let second = merge(
            Some(&first),
            &desired(&report(vec![gw2]), &ip(), US)[0].part,
            US,
            T1,
        )
        .unwrap();
        assert_eq!(second["conditions"][0]["message"], "changed");
        assert_eq!(second["conditions"][0]["lastTransitionTime"], T0);
        // Losing the address: Programmed flips, with a new time; Accepted keeps its own.
        let none = GatewayAddresses::of(Some(&ObjectKey::new("keyway", "svc")), None);
        let third = merge(Some(&first), &desired(&r, &none, US)[0].part, US, T1).unwrap();
        assert_eq!(third["conditions"][1]["status"], "False");
        assert_eq!(third["conditions"][1]["reason"], "AddressNotAssigned");
        assert_eq!(
            third["conditions"][1]["message"],
            "Service keyway/svc not found"
        );
        assert_eq!(third["conditions"][1]["lastTransitionTime"], T1);
        assert_eq!(third["conditions"][0]["lastTransitionTime"], T0);
        assert!(third.get("addresses").is_none());
    }

    #[test]
    fn routes_answer_only_for_our_gateways() {
        let r = report(vec![
            gateway_status("gw"),
            route_status(&[
                ("gw", Condition::ok("Accepted", "Accepted", "")),
                (
                    "not-ours",
                    Condition::failed("Accepted", "NoMatchingParent", ""),
                ),
            ]),
        ]);
        let d = desired(&r, &ip(), US);
        let Part::Parents(p) = &d[1].part else {
            panic!("{d:?}")
        };
        assert_eq!(p.len(), 1);
        assert_eq!(p[0]["parentRef"]["name"], "gw");
    }

    #[test]
    fn nothing_to_say_on_an_object_without_status_is_no_write() {
        let r = report(vec![route_status(&[(
            "elsewhere",
            Condition::ok("Accepted", "Accepted", ""),
        )])]);
        let d = desired(&r, &ip(), US);
        assert_eq!(merge(None, &d[0].part, US, T0), None);
        assert_eq!(
            merge(Some(&json!({"parents": []})), &d[0].part, US, T0),
            None
        );
    }

    #[test]
    fn service_addresses() {
        let svc = |json: Value| -> Service { serde_json::from_value(json).unwrap() };
        let name = ObjectKey::new("keyway", "keyway");
        let lb_ip = svc(json!({"spec": {"clusterIP": "10.96.0.5"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}}));
        assert_eq!(
            GatewayAddresses::of(Some(&name), Some(&lb_ip)).addresses,
            vec![("IPAddress", "203.0.113.7".to_string())]
        );
        let lb_host = svc(json!({"spec": {"clusterIP": "10.96.0.5"},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}}));
        assert_eq!(
            GatewayAddresses::of(Some(&name), Some(&lb_host)).addresses,
            vec![("Hostname", "lb.example.com".to_string())]
        );
        let cluster = svc(
            json!({"spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5", "fd00::5"]}}),
        );
        assert_eq!(
            GatewayAddresses::of(Some(&name), Some(&cluster)).addresses,
            vec![
                ("IPAddress", "10.96.0.5".to_string()),
                ("IPAddress", "fd00::5".to_string())
            ]
        );
        let headless = svc(json!({"spec": {"clusterIP": "None"}}));
        let a = GatewayAddresses::of(Some(&name), Some(&headless));
        assert!(a.addresses.is_empty());
        assert!(
            a.why_none.contains("no load-balancer ingress"),
            "{}",
            a.why_none
        );
        assert!(GatewayAddresses::of(None, None)
            .why_none
            .contains("--service"));
    }
}
