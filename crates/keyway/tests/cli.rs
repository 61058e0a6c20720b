//! The `keyway` binary: `check`, `crds`, `--help`/`--version`, and the no-leak guarantee
//! proven at `RUST_LOG=trace` across every surface (logs, metrics, dumps, statuses, errors).

use std::process::Command;
use std::time::Duration;

use crate::support;
use crate::support::{service, Req};

fn keyway() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keyway"))
}

fn quickstart() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart")
}

#[test]
fn check_on_the_quickstart_lists_listeners_routes_and_policies() {
    let out = keyway()
        .args(["check", "--config"])
        .arg(quickstart())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Gateway kgateway-system/http listener http port 8080"),
        "{stdout}"
    );
    assert!(
        stdout.contains("HTTPRoute httpbin/httpbin rule 0: PathPrefix / -> Service httpbin/httpbin:8000 (1 endpoints, weight 1) [api key auth by kgateway-system/apikey-auth (1 keys)]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("TrafficPolicy kgateway-system/apikey-auth Accepted=True Valid"),
        "{stdout}"
    );
    assert!(stdout.contains("no problems found"), "{stdout}");
}

#[test]
fn check_reports_problems_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  gatewayClassName: x\n  listeners: [{name: h, port: 80, protocol: HTTP}]\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]\n  apiKeyAuth: {secretRef: {name: nope}}\n",
    )
    .unwrap();
    let out = keyway()
        .args(["check", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("TrafficPolicy default/p Accepted=False Invalid: API key secret nope: Secret default/nope not found"), "{stdout}");
    assert!(stdout.contains("1 problem(s):"), "{stdout}");
    assert!(
        stdout.contains(&format!("({}:8)", dir.path().join("a.yaml").display())),
        "origin with file and line: {stdout}"
    );
}

#[test]
fn check_names_file_line_and_column_of_a_malformed_document() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: [oops]\n",
    )
    .unwrap();
    let out = keyway()
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("error: {}:7:", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("Service default/s"), "{stderr}");
}

#[test]
fn crds_print_traffic_policy_and_backend() {
    let out = keyway().arg("crds").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0]["metadata"]["name"].as_str(),
        Some("trafficpolicies.gateway.kgateway.dev")
    );
    assert_eq!(
        docs[1]["metadata"]["name"].as_str(),
        Some("backends.gateway.kgateway.dev")
    );
    assert!(
        text.contains("apiKeyAuth")
            && text.contains("keySources")
            && text.contains("secretSelector")
    );
}

/// A CRD's schema must be structural for the API server to accept it: every node typed
/// (or explicitly kept whole), array items included.
#[test]
fn crd_schemas_are_structural() {
    fn walk(node: &serde_json::Value, path: &str, bad: &mut Vec<String>) {
        let Some(map) = node.as_object() else { return };
        let typed = map.contains_key("type")
            || map.get("x-kubernetes-preserve-unknown-fields") == Some(&true.into())
            || map.get("x-kubernetes-int-or-string") == Some(&true.into());
        if !typed {
            bad.push(path.to_string());
        }
        if let Some(props) = map.get("properties").and_then(|p| p.as_object()) {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), bad);
            }
        }
        if let Some(items) = map.get("items") {
            walk(items, &format!("{path}[]"), bad);
        }
        if let Some(extra) = map.get("additionalProperties").filter(|a| a.is_object()) {
            walk(extra, &format!("{path}{{}}"), bad);
        }
    }
    let out = keyway().arg("crds").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut bad = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let crd: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
        for v in crd["spec"]["versions"].as_array().unwrap() {
            walk(&v["schema"]["openAPIV3Schema"], &kind, &mut bad);
        }
    }
    assert!(bad.is_empty(), "schema nodes without a type: {bad:#?}");
}

/// `deploy/` holds the default install: it must be exactly what the commands print.
#[test]
fn deploy_folder_is_what_manifests_and_crds_print() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    for (file, args) in [
        ("keyway.yaml", &["manifests"][..]),
        ("crds.yaml", &["crds"][..]),
    ] {
        let out = keyway().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8(out.stdout).unwrap();
        let path = deploy.join(file);
        if std::env::var_os("KEYWAY_BLESS").is_some() {
            std::fs::write(&path, &printed).unwrap();
            continue;
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == printed,
            "deploy/{file} differs from `keyway {}`: regenerate it with KEYWAY_BLESS=1 cargo test -p keyway --test suite cli::deploy",
            args.join(" ")
        );
    }
}

#[test]
fn manifests_grant_secrets_only_in_the_watched_namespaces() {
    let out = keyway()
        .args([
            "manifests",
            "--namespace",
            "gw",
            "--replicas",
            "3",
            "--image",
            "example.com/keyway:1",
        ])
        .args(["--watch-namespace", "team-a", "--watch-namespace", "team-b"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "GatewayClass",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    let cluster_role = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    assert!(
        !cluster_role.to_string().contains("\"secrets\""),
        "{cluster_role}"
    );
    let secret_roles: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "Role" && d["rules"].to_string().contains("secrets"))
        .map(|d| d["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(secret_roles, ["team-a", "team-b"]);
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "example.com/keyway:1");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--watch-namespace", "team-b"]),
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|w| w == ["--service", "gw/keyway"]),
        "{args:?}"
    );
    // The Deployment's command line is one this binary accepts: it gets as far as looking
    // for the API server (which comes before anything binds).
    let home = tempfile::tempdir().unwrap();
    let run = keyway()
        .args(&args)
        .env("KUBECONFIG", home.path().join("none"))
        .env("HOME", home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("cannot find the Kubernetes API server"),
        "{stderr}"
    );
    let env = container["env"].to_string();
    assert!(
        env.contains("POD_NAME") && env.contains("metadata.name"),
        "{env}"
    );
    assert!(
        env.contains("POD_NAMESPACE") && env.contains("metadata.namespace"),
        "{env}"
    );
    let lease_role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["rules"].to_string().contains("leases"))
        .unwrap();
    assert_eq!(lease_role["metadata"]["namespace"], "gw");
}

#[test]
fn help_and_version_everywhere() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["check", "--help"],
        vec!["crds", "--help"],
        vec!["--version"],
        vec!["run", "--version"],
    ] {
        let out = keyway().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
    let out = keyway().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--bind-address",
        "--admin-address",
        "--log-format",
        "--upstream-timeout",
    ] {
        assert!(help.contains(flag), "{flag} in\n{help}");
    }
}

/// Every key used here, and the 8-character windows of each, must not appear anywhere.
const KEYS: [&str; 7] = [
    "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy",
    "s3cr3t-ZQWXEC-rvtbyn-query",
    "s3cr3t-PLMOKN-ijbuhv-cookie",
    "wr0ng-presented-K3Y-UJMYHN",
    // A JSON entry's `key`, and a `keyHash` entry's key and hash (SPEC section 10).
    "erin-json-entry-K3Y-QAZWSX",
    "frank-hashed-K3Y-77",
    "e6db6556d5ad87e38e62000573a9e031fc080c6e4ba6c4dfdf4d23f8b1412b7b",
];

fn assert_no_key(surface: &str, text: &str) {
    for key in KEYS {
        for w in key.as_bytes().windows(8) {
            let w = std::str::from_utf8(w).unwrap();
            assert!(!text.contains(w), "{surface} contains {w:?} from a key");
        }
    }
}

#[test]
fn no_key_ever_appears_in_logs_metrics_dumps_statuses_or_errors() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(support::upstream());
    let manifests = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: any
  listeners: [{{name: h, port: {{PORT}}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: keys}}
stringData:
  alice: {}
  bob: {}
  carol: {}
  erin: '{{"key": "{}", "metadata": {{"tier": "gold"}}}}'
  frank: '{{"keyHash": "sha256:{}", "expiresAt": "2099-01-01T00:00:00Z"}}'
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: p}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
  apiKeyAuth:
    secretRef: {{name: keys}}
    clientIdHeader: x-client
    keySources: [{{header: api-key}}, {{query: k}}, {{cookie: c}}]
{}"#,
        KEYS[0],
        KEYS[1],
        KEYS[2],
        KEYS[4],
        KEYS[6],
        service("default", "app", &[up])
    );
    let bin = support::Binary::start(&manifests, &[], &[("RUST_LOG", "trace")]);
    let (gw, admin) = (bin.gateway, bin.admin);
    let surfaces = rt.block_on(async {
        bin.ready().await;
        let mut statuses = Vec::new();
        for req in [
            Req::get("h", "/").header("api-key", &format!("Bearer {}", KEYS[0])),
            Req::get("h", &format!("/q?k={}", KEYS[1])),
            Req::get("h", "/").header("cookie", &format!("c={}; other=1", KEYS[2])),
            Req::get("h", "/").header("api-key", KEYS[4]),
            Req::get("h", "/").header("api-key", KEYS[5]),
            Req::get("h", "/").header("api-key", KEYS[3]),
            Req::get("h", &format!("/q?k={}&k={}", KEYS[3], KEYS[1])),
            Req::get("h", "/"),
        ] {
            statuses.push(support::send(gw, req).await.status.as_u16());
        }
        assert_eq!(statuses, [200, 200, 200, 200, 200, 401, 401, 401]);
        // A reload into a duplicate-key conflict: error paths too.
        let file = bin.dir.path().join("manifests.yaml");
        let dup = std::fs::read_to_string(&file)
            .unwrap()
            .replace("  carol: ", &format!("  dave: {}\n  carol: ", KEYS[0]));
        std::fs::write(&file, dup).unwrap();
        bin.signal("HUP");
        for _ in 0..100 {
            if support::send(gw, Req::get("h", "/")).await.status == 500 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(support::send(gw, Req::get("h", "/")).await.status, 500);
        let mut out = Vec::new();
        for path in ["/metrics", "/config_dump", "/status"] {
            out.push((
                path.to_string(),
                support::send(admin, Req::get("l", path)).await.text(),
            ));
        }
        out
    });
    let dir = bin.dir.path().to_path_buf();
    let check = keyway()
        .args(["check", "--config"])
        .arg(&dir)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let (status, logs) = bin.stop();
    assert!(status.success());
    assert!(logs.contains("TRACE"), "the test must run at trace level");
    assert!(
        logs.contains("client=\"alice\""),
        "the access log names the client"
    );
    assert!(
        logs.contains("duplicate API key value shared by client"),
        "the conflict is logged"
    );
    assert_no_key("the logs", &logs);
    for (path, text) in &surfaces {
        assert!(!text.is_empty(), "{path}");
        assert_no_key(path, text);
    }
    // `keyway check` on the conflicting manifests: errors name clients, never keys.
    assert_eq!(check.status.code(), Some(1));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(text.contains("\"dave\""), "{text}");
    assert_no_key("keyway check", &text);
}

#[test]
fn json_access_log_names_the_client() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(support::upstream());
    let manifests = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: any\n  listeners: [{{name: h, port: {{PORT}}, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys}}\nstringData: {{alice: k-json-1}}\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  apiKeyAuth: {{secretRef: {{name: keys}}}}\n{}",
        service("default", "app", &[up])
    );
    let bin = support::Binary::start(&manifests, &["--log-format", "json"], &[]);
    let gw = bin.gateway;
    rt.block_on(async {
        bin.ready().await;
        assert_eq!(
            support::send(gw, Req::get("h", "/a?x=1").header("api-key", "k-json-1"))
                .await
                .status,
            200
        );
        assert_eq!(support::send(gw, Req::get("h", "/b")).await.status, 401);
    });
    let (status, logs) = bin.stop();
    assert!(status.success(), "{status:?}: {logs}");
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "keyway::access")
        .collect();
    assert_eq!(access.len(), 2, "{logs}");
    assert_eq!(access[0]["client"], "alice");
    assert_eq!(access[0]["path"], "/a", "the query string is never logged");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[1]["reason"], "missing_api_key");
    assert_eq!(access[0]["reason"], "-");
    assert_eq!(access[1]["status"], 401);
}
