//! The file source against real manifests and broken ones.

use std::path::PathBuf;

use keyway_sources::files::{load, load_str};

fn shared(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata")
        .join(dir)
}

#[test]
fn loads_every_upstream_manifest_unchanged() {
    let mut files = 0;
    for dir in ["gateway-api-conformance", "kgateway-apikeyauth"] {
        let path = shared(dir);
        if !path.exists() {
            panic!("missing {}", path.display());
        }
        for entry in std::fs::read_dir(&path).unwrap() {
            let file = entry.unwrap().path();
            if file.extension().is_some_and(|e| e == "yaml") {
                match load(std::slice::from_ref(&file)) {
                    Err(errors) => panic!("{}: {errors:#?}", file.display()),
                    Ok(loaded) => assert!(
                        loaded.warnings.is_empty(),
                        "{}: every kind in these manifests is one Keyway reads: {:?}",
                        file.display(),
                        loaded.warnings
                    ),
                }
                files += 1;
            }
        }
    }
    assert!(
        files >= 60,
        "expected the upstream manifests, found {files} files"
    );
}

#[test]
fn reference_grant_v1beta1_and_v1_both_load() {
    let text = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: a, namespace: x}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: y}]\n  to: [{group: '', kind: Service}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: b, namespace: x}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: y}]\n  to: [{group: '', kind: Service}]\n";
    let loaded = load_str("grants.yaml", text).unwrap();
    assert_eq!(loaded.snapshot.reference_grants.len(), 2);
}

#[test]
fn a_malformed_document_names_file_line_and_column() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n  gatewayClassName: x\n  listeners:\n  - name: http\n    port: eighty\n    protocol: HTTP\n";
    let errors = load_str("bad.yaml", text).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.line, Some(13), "{e}");
    assert_eq!(e.resource.as_deref(), Some("Gateway default/gw"));
    let shown = e.to_string();
    assert!(shown.starts_with("bad.yaml:13:"), "{shown}");
    assert!(shown.contains("port"), "{shown}");
}

#[test]
fn broken_yaml_syntax_names_line_and_column() {
    let errors = load_str(
        "s.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: a\n",
    )
    .unwrap_err();
    assert_eq!(errors[0].path, "s.yaml");
    assert!(
        errors[0].line.is_some() && errors[0].column.is_some(),
        "{}",
        errors[0]
    );
}

#[test]
fn unknown_kinds_are_skipped_with_a_warning_naming_file_and_line() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: a}\n";
    let loaded = load_str("mixed.yaml", text).unwrap();
    assert_eq!(loaded.snapshot.namespaces.len(), 1);
    assert_eq!(loaded.warnings.len(), 1);
    let w = loaded.warnings[0].to_string();
    assert!(
        w.starts_with("mixed.yaml:6: skipped apps/v1 Deployment a/web"),
        "{w}"
    );
}

#[test]
fn the_same_object_twice_names_both_places() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: default}\n";
    let errors = load_str("dup.yaml", text).unwrap_err();
    let e = errors[0].to_string();
    assert!(
        e.contains("dup.yaml:5") && e.contains("first at dup.yaml:1"),
        "{e}"
    );
    assert!(e.contains("Service default/s"), "{e}");
}

#[test]
fn objects_without_namespace_land_in_default_and_secret_values_merge() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\ndata: {a: YWFh}\nstringData: {b: ' bbb '}\n";
    let loaded = load_str("s.yaml", text).unwrap();
    let (key, secret) = loaded.snapshot.secrets.iter().next().unwrap();
    assert_eq!(key.to_string(), "default/k");
    assert_eq!(secret.value.entries["a"].expose(), b"aaa");
    assert_eq!(secret.value.entries["b"].expose(), b" bbb ");
}

#[test]
fn secret_errors_never_repeat_a_value() {
    let errors = load_str(
        "s.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\ndata: {client: k-123-plain}\n",
    )
    .unwrap_err();
    let e = errors[0].to_string();
    assert!(
        e.contains("Secret default/k: data.client: not valid base64"),
        "{e}"
    );
    assert!(!e.contains("k-123") && !e.contains("45"), "{e}");
    let errors = load_str(
        "s.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {client: [12345678]}\n",
    )
    .unwrap_err();
    let e = errors[0].to_string();
    assert!(!e.contains("12345678"), "{e}");
}
