//! Lookups every pass needs: the snapshot, namespace labels, ReferenceGrants.

use std::collections::BTreeMap;

use keyway_model::Snapshot;

use crate::Options;

/// Read-only view of the snapshot with precomputed indexes.
pub(crate) struct Context<'a> {
    pub snap: &'a Snapshot,
    pub options: &'a Options,
    /// Labels of each namespace, including the `kubernetes.io/metadata.name` label the API
    /// server adds to every Namespace.
    ns_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl<'a> Context<'a> {
    pub fn new(snap: &'a Snapshot, options: &'a Options) -> Self {
        let mut ns_labels = BTreeMap::new();
        for (key, ns) in &snap.namespaces {
            let mut labels = ns.value.metadata.labels.clone().unwrap_or_default();
            labels.insert("kubernetes.io/metadata.name".into(), key.name.clone());
            ns_labels.insert(key.name.clone(), labels);
        }
        Context {
            snap,
            options,
            ns_labels,
        }
    }

    /// Labels of a namespace (only the name label when no Namespace object was given).
    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.ns_labels
            .get(ns)
            .cloned()
            .unwrap_or_else(|| [("kubernetes.io/metadata.name".to_string(), ns.to_string())].into())
    }

    /// Whether a ReferenceGrant in `to_ns` lets `from_kind` objects in `from_ns` refer to
    /// the `to_kind` object `to_name`.
    pub fn grant_allows(
        &self,
        (from_group, from_kind, from_ns): (&str, &str, &str),
        (to_group, to_kind, to_ns, to_name): (&str, &str, &str, &str),
    ) -> bool {
        if from_ns == to_ns {
            return true;
        }
        self.snap
            .reference_grants
            .iter()
            .filter(|(k, _)| k.namespace == to_ns)
            .any(|(_, g)| {
                let spec = &g.value.spec;
                spec.from
                    .iter()
                    .any(|f| f.group == from_group && f.kind == from_kind && f.namespace == from_ns)
                    && spec.to.iter().any(|t| {
                        t.group == to_group
                            && t.kind == to_kind
                            && t.name
                                .as_deref()
                                .is_none_or(|n| n.is_empty() || n == to_name)
                    })
            })
    }
}
