//! Conditions the compiler reports on every object, as Gateway API and kgateway name them.
//!
//! `keyway check` prints them one per line; the admin port serves them as JSON at
//! `/status`; the Kubernetes source will write them to the objects' status.

use std::fmt;

use keyway_model::{Kind, ObjectKey, Origin};
use serde::{Serialize, Serializer};

/// One condition (`Accepted`, `ResolvedRefs`, `Programmed`, `Attached`, `Conflicted`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// `True` or `False`.
    #[serde(serialize_with = "ser_bool")]
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// What happened, for a human.
    pub message: String,
    /// Whether this condition means something is wrong (drives `keyway check`'s exit code).
    #[serde(skip)]
    pub problem: bool,
}

fn ser_bool<S: Serializer>(b: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *b { "True" } else { "False" })
}

impl Condition {
    /// A condition that reports success.
    pub fn ok(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Condition {
            type_,
            status: true,
            reason: reason.into(),
            message: message.into(),
            problem: false,
        }
    }

    /// A `False` condition that reports a problem.
    pub fn failed(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_,
            status: false,
            reason: reason.into(),
            message: message.into(),
            problem: true,
        }
    }

    /// A `True` condition that reports a problem (`Conflicted=True`).
    pub fn raised(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            status: true,
            ..Condition::failed(type_, reason, message)
        }
    }
}

/// The status of one object: its own conditions and those of its sections (a Gateway's
/// listeners, a route's parent references, a policy's targets).
#[derive(Clone, Debug, Serialize)]
pub struct ObjectStatus {
    /// Kind of the object.
    #[serde(serialize_with = "ser_kind")]
    pub kind: Kind,
    /// Namespace and name.
    #[serde(flatten)]
    pub key: ObjectKey,
    /// Where it was defined.
    #[serde(serialize_with = "ser_display")]
    pub origin: Origin,
    /// Conditions of the object as a whole.
    pub conditions: Vec<Condition>,
    /// Conditions per listener or per parent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<SectionStatus>,
    /// `metadata.generation` of the object compiled: the `observedGeneration` its
    /// conditions are written with in Kubernetes mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// `metadata.uid` of the object compiled: a status is for one incarnation of a name
    /// (an object deleted and created again is another one).
    #[serde(skip)]
    pub uid: Option<String>,
    /// TrafficPolicies: the Gateways the policy takes effect on (kgateway's
    /// `status.ancestors[]`), or, when none, the targets it names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<ParentRef>,
}

/// A reference to a parent object as Gateway API writes it in status (`parentRef`,
/// `ancestorRef`): the fields given in the spec, no defaults filled in, so the status
/// entry matches the spec entry it answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// API group (`gateway.networking.k8s.io` when absent in the spec).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind (`Gateway` when absent in the spec).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace, when the spec gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Listener or rule name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// What a [`SectionStatus`] describes, in the terms status writers need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SectionRef {
    /// A Gateway listener: its name, and whether HTTPRoutes may attach to it (its
    /// `supportedKinds`).
    Listener {
        /// Listener name.
        name: String,
        /// Whether the listener serves HTTPRoutes.
        http_routes: bool,
    },
    /// An HTTPRoute's `parentRefs` entry, as given.
    Parent(ParentRef),
}

fn ser_kind<S: Serializer>(k: &Kind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

fn ser_display<S: Serializer, T: fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Conditions of one part of an object.
#[derive(Clone, Debug, Serialize)]
pub struct SectionStatus {
    /// `listener http`, `parent Gateway ns/name`, ...
    pub section: String,
    /// The listener or parent reference, structured.
    #[serde(skip)]
    pub reference: Option<SectionRef>,
    /// Number of routes attached (listeners only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_routes: Option<u32>,
    /// Its conditions.
    pub conditions: Vec<Condition>,
}

impl ObjectStatus {
    /// An empty status for an object.
    pub fn new(kind: Kind, key: ObjectKey, origin: Origin) -> Self {
        ObjectStatus {
            kind,
            key,
            origin,
            conditions: Vec::new(),
            sections: Vec::new(),
            generation: None,
            uid: None,
            ancestors: Vec::new(),
        }
    }

    /// Whether any condition, of the object or a section, reports a problem.
    pub fn has_problem(&self) -> bool {
        self.conditions
            .iter()
            .chain(self.sections.iter().flat_map(|s| &s.conditions))
            .any(|c| c.problem)
    }

    /// The condition of a type on the object itself.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Statuses of every object the compiler looked at.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// One entry per object, in kind then namespace/name order.
    pub objects: Vec<ObjectStatus>,
}

impl Report {
    /// Whether any object has a problem.
    pub fn has_problems(&self) -> bool {
        self.objects.iter().any(ObjectStatus::has_problem)
    }

    /// The status of one object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&ObjectStatus> {
        self.objects
            .iter()
            .find(|o| o.kind == kind && o.key.namespace == namespace && o.key.name == name)
    }

    /// One line per condition: `Kind ns/name [section] Type=Status Reason: message (origin)`.
    pub fn lines(&self) -> Vec<String> {
        self.render(|_| true)
    }

    /// The lines of conditions that report a problem.
    pub fn problems(&self) -> Vec<String> {
        self.render(|c| c.problem)
    }

    fn render(&self, keep: impl Fn(&Condition) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        for o in &self.objects {
            let head = format!("{} {}", o.kind, o.key);
            for c in o.conditions.iter().filter(|c| keep(c)) {
                out.push(format!("{head} {c} ({})", o.origin));
            }
            for s in &o.sections {
                for c in s.conditions.iter().filter(|c| keep(c)) {
                    out.push(format!("{head} [{}] {c} ({})", s.section, o.origin));
                }
            }
        }
        out
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = if self.status { "True" } else { "False" };
        write!(f, "{}={} {}", self.type_, status, self.reason)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}
