//! Golden tests of the compiler: manifests in, compiled config and statuses out.
//!
//! Inputs are `golden/inputs/*.yaml` and kgateway's translator inputs in
//! `../shared/testdata/kgateway-apikeyauth/golden-*.yaml`; each output is the config as
//! `/config_dump` shows it followed by every status line. Regenerate after an intended
//! change with `KEYWAY_BLESS=1 cargo test -p keyway-compile --test golden`, then review the
//! diff.

use std::path::{Path, PathBuf};

fn render(name: &str, text: &str) -> String {
    let loaded =
        keyway_sources::files::load_str(name, text).unwrap_or_else(|e| panic!("{name}: {e:#?}"));
    let compiled = keyway_compile::compile(&loaded.snapshot, &Default::default());
    let mut out = serde_json::to_string_pretty(&compiled.config).unwrap();
    out.push_str("\n\n# status\n");
    for line in compiled.report.lines() {
        out.push_str(&line);
        out.push('\n');
    }
    for w in &loaded.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}

fn check(name: &str, input: &Path, golden: &Path, failures: &mut Vec<String>) {
    let text = std::fs::read_to_string(input).unwrap();
    let got = render(name, &text);
    if std::env::var_os("KEYWAY_BLESS").is_some() {
        std::fs::write(golden, &got).unwrap();
        return;
    }
    match std::fs::read_to_string(golden) {
        Ok(want) if want == got => {}
        Ok(want) => {
            let first = want
                .lines()
                .zip(got.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            failures.push(format!(
                "{name}: differs from {} at line {}:\n  want: {}\n  got:  {}",
                golden.display(),
                first + 1,
                want.lines().nth(first).unwrap_or("<end>"),
                got.lines().nth(first).unwrap_or("<end>")
            ));
        }
        Err(_) => failures.push(format!(
            "{name}: no golden file {} (run with KEYWAY_BLESS=1)",
            golden.display()
        )),
    }
}

fn yaml_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().unwrap().to_string_lossy().starts_with(prefix)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn compiler_golden_outputs() {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    // `KEYWAY_SHARED_TESTDATA` points elsewhere when the tree is copied (mutation testing).
    let shared = std::env::var_os("KEYWAY_SHARED_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata")
        })
        .join("kgateway-apikeyauth");
    let mut failures = Vec::new();
    let mut count = 0;
    for input in yaml_files(&here.join("inputs"), "") {
        let stem = input.file_stem().unwrap().to_string_lossy().to_string();
        let golden = here.join("outputs").join(format!("{stem}.golden"));
        check(&format!("{stem}.yaml"), &input, &golden, &mut failures);
        count += 1;
    }
    for input in yaml_files(&shared, "golden-") {
        let stem = input.file_stem().unwrap().to_string_lossy().to_string();
        let golden = here.join("outputs").join(format!("kgateway-{stem}.golden"));
        check(
            &format!("kgateway-apikeyauth/{stem}.yaml"),
            &input,
            &golden,
            &mut failures,
        );
        count += 1;
    }
    assert!(count >= 10, "expected the golden inputs, found {count}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
