//! The file source against real manifests and broken ones.

use std::path::PathBuf;

use keyway_sources::files::{load, load_str};

/// `../shared/testdata`, or `KEYWAY_SHARED_TESTDATA` when the tree is copied elsewhere.
fn shared(dir: &str) -> PathBuf {
    std::env::var_os("KEYWAY_SHARED_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata")
        })
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
    assert_eq!(
        secret.value.keys.entries[0],
        (keyway_model::digest(b"aaa"), std::sync::Arc::from("a"))
    );
    assert_eq!(
        secret.value.keys.entries[1],
        (keyway_model::digest(b"bbb"), std::sync::Arc::from("b"))
    );
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

#[test]
fn a_secret_whose_data_is_not_a_map_is_refused_without_its_value() {
    for field in ["data", "stringData"] {
        for value in [
            "N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy",
            "'N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy'",
            "[N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy]",
            "123456789012",
        ] {
            let text =
                format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: k}}\n{field}: {value}\n");
            let errors = load_str("s.yaml", &text).unwrap_err();
            let e = errors[0].to_string();
            assert!(e.starts_with("s.yaml:4:"), "{e}");
            assert!(e.contains("Secret default/k"), "{e}");
            assert!(e.contains(field), "{e}");
            assert!(e.contains("must be a map"), "{e}");
            for window in value
                .trim_matches(|c| c == '\'' || c == '[' || c == ']')
                .as_bytes()
                .windows(6)
            {
                let w = std::str::from_utf8(window).unwrap();
                assert!(!e.contains(w), "{e} repeats {w}");
            }
        }
    }
}

#[test]
fn a_secret_entry_that_is_not_text_names_the_entry_not_the_value() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData:\n  client-a: {nested: s3cr3t-value-1}\n";
    let e = load_str("s.yaml", text).unwrap_err()[0].to_string();
    assert!(e.contains("stringData") && e.contains("client-a"), "{e}");
    assert!(!e.contains("s3cr3t"), "{e}");
}

#[test]
fn a_key_written_twice_in_a_mapping_is_an_error_with_its_line() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData:\n  client-a: key-one\n  client-a: key-two\n";
    let errors = load_str("s.yaml", text).unwrap_err();
    let e = errors[0].to_string();
    assert!(e.starts_with("s.yaml:6:"), "{e}");
    assert!(e.contains("duplicate") && e.contains("client-a"), "{e}");
    assert!(!e.contains("key-one") && !e.contains("key-two"), "{e}");
    // Anywhere in any object, as kubectl refuses it.
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  labels: {app: a, app: b}\nspec: {}\n";
    let e = load_str("r.yaml", text).unwrap_err()[0].to_string();
    assert!(e.starts_with("r.yaml:5:"), "{e}");
    assert!(e.contains("duplicate"), "{e}");
}

#[test]
fn an_empty_api_key_auth_is_kept_as_present() {
    for body in [
        "  apiKeyAuth:\n",
        "  apiKeyAuth: ~\n",
        "  apiKeyAuth: null\n",
    ] {
        let text = format!("apiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: p}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: g}}]\n{body}");
        let loaded = load_str("p.yaml", &text).unwrap();
        let p = loaded.snapshot.traffic_policies.values().next().unwrap();
        let ak = p.value.spec.api_key_auth.as_ref().expect("present");
        assert!(ak.is_null, "{body:?}");
    }
    let text = "apiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: p}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: g}]\n";
    let loaded = load_str("p.yaml", text).unwrap();
    let p = loaded.snapshot.traffic_policies.values().next().unwrap();
    assert!(p.value.spec.api_key_auth.is_none());
}

#[test]
fn error_lines_count_newlines_as_editors_do() {
    // A stray carriage return is a line break to YAML, not to an editor.
    let text = "apiVersion: v1\rkind: Namespace\nmetadata: {name: é}\nspec: {a: b: c}\n";
    let e = &load_str("cr.yaml", text).unwrap_err()[0];
    assert_eq!(e.line, Some(3), "{e}");
    assert_eq!(e.column, Some(13), "{e}");
}

#[test]
fn a_reload_parses_only_the_files_that_changed() {
    use keyway_sources::files::FileSource;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let secret = |name: &str, key: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\nstringData: {{c: {key}}}\n"
        )
    };
    std::fs::write(dir.path().join("a.yaml"), secret("a", "k-a")).unwrap();
    std::fs::write(dir.path().join("b.yaml"), secret("b", "k-b")).unwrap();
    let source = FileSource::new(vec![dir.path().to_path_buf()]);
    let keys = |l: &keyway_sources::Loaded, name: &str| {
        l.snapshot.secrets[&keyway_model::ObjectKey::new("default", name)]
            .value
            .keys
            .clone()
    };
    let first = source.load().unwrap();
    std::fs::write(dir.path().join("b.yaml"), secret("b", "k-b2")).unwrap();
    let second = source.load().unwrap();
    // The unchanged file's Secret is the one parsed (and digested) before; the changed
    // one is new, and the fingerprint moved with it.
    assert!(Arc::ptr_eq(&keys(&first, "a"), &keys(&second, "a")));
    assert!(!Arc::ptr_eq(&keys(&first, "b"), &keys(&second, "b")));
    assert_eq!(
        keys(&second, "b").entries[0].0,
        keyway_model::digest(b"k-b2")
    );
    assert_ne!(first.fingerprint, second.fingerprint);
    // A file removed takes its objects with it; the same content loads the same fingerprint.
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    let third = source.load().unwrap();
    assert!(third.snapshot.secrets.len() == 1);
    std::fs::write(dir.path().join("a.yaml"), secret("a", "k-a")).unwrap();
    assert_eq!(source.load().unwrap().fingerprint, second.fingerprint);
}

#[test]
fn an_object_in_two_files_names_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n";
    std::fs::write(dir.path().join("a.yaml"), doc).unwrap();
    std::fs::write(dir.path().join("b.yaml"), format!("---\n{doc}")).unwrap();
    let errors = load(&[dir.path().to_path_buf()]).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0].to_string();
    assert!(
        e.contains("b.yaml:2: Service default/s: defined twice: first at"),
        "{e}"
    );
    assert!(e.contains("a.yaml:1"), "{e}");
}
