//! `keyway manifests`: everything `kubectl apply -f -` needs to run Keyway in a cluster.
//!
//! The RBAC rules are generated from [`WATCHED`], the same table the Kubernetes source
//! sets its watches up from, and from [`STATUS_KINDS`], the kinds the status writer
//! writes: what Keyway asks the API server for and what it is allowed cannot drift apart.
//! The grant is the least that works (SPEC section 8):
//! - get/list/watch on every kind read; Secrets cluster-wide only when every namespace is
//!   watched, else one Role per watched namespace;
//! - update of the `/status` subresource of the kinds whose status is written (the writer
//!   PUTs status with a resourceVersion precondition; it never patches), and no other
//!   write;
//! - Leases in Keyway's namespace: create, and get/update of `keyway-status` only.

use std::collections::BTreeMap;

use keyway_model::Kind;
use keyway_sources::kubernetes::kinds::{WatchedKind, WATCHED};
use serde_json::{json, Value};

use super::lease::LEASE_NAME;

/// Kinds whose status the leader writes.
pub const STATUS_KINDS: &[Kind] = &[
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::HttpRoute,
    Kind::TrafficPolicy,
];

/// The admin port in the Deployment (probes, metrics).
pub const ADMIN_PORT: u16 = 19000;

/// `keyway manifests` options.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// Namespace Keyway runs in.
    pub namespace: String,
    /// Replicas of the Deployment.
    pub replicas: u32,
    /// Namespaces whose Secrets are read (empty: all).
    pub watch_namespaces: Vec<String>,
    /// Container image.
    pub image: String,
    /// `--controller-name` (the GatewayClass `keyway` names it).
    pub controller_name: String,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            namespace: "keyway".into(),
            replicas: 2,
            watch_namespaces: Vec::new(),
            image: default_image(),
            controller_name: "keyway.dev/gateway-controller".into(),
        }
    }
}

/// The image `docker build -t keyway:VERSION .` produces.
pub fn default_image() -> String {
    format!("keyway:{}", env!("CARGO_PKG_VERSION"))
}

const NAME: &str = "keyway";

fn labels() -> Value {
    json!({ "app.kubernetes.io/name": NAME })
}

/// The RBAC rules of the ClusterRole, and the rules to grant per watched namespace
/// (Secrets, when namespaces are given).
pub fn rbac_rules(watch_namespaces: &[String]) -> (Vec<Value>, Vec<Value>) {
    let scoped = !watch_namespaces.is_empty();
    let mut cluster: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut per_namespace: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for row in WATCHED {
        let target = if scoped && row.per_namespace {
            &mut per_namespace
        } else {
            &mut cluster
        };
        let list = target.entry(row.group).or_default();
        if !list.contains(&row.plural) {
            list.push(row.plural);
        }
    }
    let read = |groups: BTreeMap<&str, Vec<&str>>| -> Vec<Value> {
        groups
            .into_iter()
            .map(|(group, mut resources)| {
                resources.sort_unstable();
                json!({"apiGroups": [group], "resources": resources, "verbs": ["get", "list", "watch"]})
            })
            .collect()
    };
    let mut cluster_rules = read(cluster);
    let mut status: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for kind in STATUS_KINDS {
        let row: &WatchedKind = WATCHED
            .iter()
            .find(|w| w.kind == *kind && !w.optional)
            .expect("every kind whose status is written is watched");
        status
            .entry(row.group)
            .or_default()
            .push(format!("{}/status", row.plural));
    }
    for (group, mut resources) in status {
        resources.sort_unstable();
        // The writer PUTs status (a read-merge-write with a precondition): no patch.
        cluster_rules
            .push(json!({"apiGroups": [group], "resources": resources, "verbs": ["update"]}));
    }
    (cluster_rules, read(per_namespace))
}

/// Every object of the install, in apply order.
pub fn objects(o: &InstallOptions) -> Vec<Value> {
    let ns = o.namespace.as_str();
    let sa = json!({"kind": "ServiceAccount", "name": NAME, "namespace": ns});
    let (cluster_rules, namespace_rules) = rbac_rules(&o.watch_namespaces);
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels()}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": NAME, "namespace": ns, "labels": labels()}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": NAME, "labels": labels()}, "rules": cluster_rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [sa.clone()]}),
    ];
    if !namespace_rules.is_empty() {
        for watched in &o.watch_namespaces {
            let name = format!("{NAME}-secrets");
            out.push(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": name, "namespace": watched, "labels": labels()},
                "rules": namespace_rules}),
            );
            out.push(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": watched, "labels": labels()},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [sa.clone()]}),
            );
        }
    }
    let lease_role = format!("{NAME}-status-lease");
    out.push(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": lease_role, "namespace": ns, "labels": labels()},
        "rules": [
            // `create` cannot be limited by name: the API server does not know it yet.
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": [LEASE_NAME], "verbs": ["get", "update"]},
        ]}),
    );
    out.push(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": lease_role, "namespace": ns, "labels": labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": lease_role},
        "subjects": [sa]}),
    );

    let mut args: Vec<String> = vec![
        "run".into(),
        "--kubernetes".into(),
        "--service".into(),
        format!("{ns}/{NAME}"),
        "--admin-address".into(),
        format!("0.0.0.0:{ADMIN_PORT}"),
        "--log-format".into(),
        "json".into(),
    ];
    for w in &o.watch_namespaces {
        args.push("--watch-namespace".into());
        args.push(w.clone());
    }
    let env_from = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let probe = |path: &str, period: u32| json!({"httpGet": {"path": path, "port": "admin"}, "periodSeconds": period, "failureThreshold": 3});
    out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": NAME, "namespace": ns, "labels": labels()},
    "spec": {
        "replicas": o.replicas,
        "selector": {"matchLabels": labels()},
        "template": {
            "metadata": {"labels": labels()},
            "spec": {
                "serviceAccountName": NAME,
                "terminationGracePeriodSeconds": 30,
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 65532,
                    "runAsGroup": 65532,
                    "seccompProfile": {"type": "RuntimeDefault"},
                    // Gateways listen on 80 and 443 without root or capabilities.
                    "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}],
                },
                "containers": [{
                    "name": NAME,
                    "image": o.image,
                    "args": args,
                    "env": [
                        {"name": "POD_NAME", "valueFrom": env_from("metadata.name")},
                        {"name": "POD_NAMESPACE", "valueFrom": env_from("metadata.namespace")},
                        {"name": "KEYWAY_CONTROLLER_NAME", "value": o.controller_name},
                    ],
                    "ports": [
                        {"name": "http", "containerPort": 80},
                        {"name": "https", "containerPort": 443},
                        {"name": "admin", "containerPort": ADMIN_PORT},
                    ],
                    "readinessProbe": probe("/readyz", 2),
                    "livenessProbe": probe("/healthz", 10),
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                    "securityContext": {
                        "allowPrivilegeEscalation": false,
                        "readOnlyRootFilesystem": true,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }],
            },
        },
    }}));
    out.push(json!({"apiVersion": "v1", "kind": "Service",
    "metadata": {"name": NAME, "namespace": ns, "labels": labels()},
    "spec": {
        "type": "LoadBalancer",
        "selector": labels(),
        "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "https", "port": 443, "targetPort": "https"},
        ],
    }}));
    out.push(
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": NAME, "namespace": ns, "labels": labels()},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels()}}}),
    );
    out.push(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": NAME, "labels": labels()},
        "spec": {"controllerName": o.controller_name}}),
    );
    out
}

/// The install as one YAML stream.
pub fn render(o: &InstallOptions) -> Result<String, serde_yaml_ng::Error> {
    let mut text = format!(
        "# Keyway {}: generated by `keyway manifests`; apply with `kubectl apply -f -`.\n",
        env!("CARGO_PKG_VERSION")
    );
    for (i, object) in objects(o).iter().enumerate() {
        if i > 0 {
            text.push_str("---\n");
        }
        text.push_str(&serde_yaml_ng::to_string(object)?);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_cluster_wide_only_when_every_namespace_is_watched() {
        let (cluster, per_ns) = rbac_rules(&[]);
        assert!(per_ns.is_empty());
        let core = cluster.iter().find(|r| r["apiGroups"][0] == "").unwrap();
        assert!(core["resources"]
            .as_array()
            .unwrap()
            .contains(&json!("secrets")));

        let (cluster, per_ns) = rbac_rules(&["apps".into()]);
        let core = cluster.iter().find(|r| r["apiGroups"][0] == "").unwrap();
        assert!(!core["resources"]
            .as_array()
            .unwrap()
            .contains(&json!("secrets")));
        assert_eq!(
            per_ns,
            vec![
                json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]})
            ]
        );
    }

    #[test]
    fn status_is_the_only_write() {
        let (cluster, _) = rbac_rules(&[]);
        for rule in &cluster {
            let verbs = rule["verbs"].as_array().unwrap();
            let writes = verbs
                .iter()
                .any(|v| v != "get" && v != "list" && v != "watch");
            if writes {
                assert_eq!(verbs, &vec![json!("update")]);
                for r in rule["resources"].as_array().unwrap() {
                    assert!(r.as_str().unwrap().ends_with("/status"), "{rule}");
                }
            }
        }
    }

    #[test]
    fn one_secrets_role_per_watched_namespace() {
        let o = InstallOptions {
            watch_namespaces: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let roles: Vec<_> = objects(&o)
            .into_iter()
            .filter(|x| x["kind"] == "Role" && x["metadata"]["name"] == "keyway-secrets")
            .map(|x| x["metadata"]["namespace"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(roles, ["a", "b"]);
    }
}
