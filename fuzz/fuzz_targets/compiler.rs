//! Manifests through the whole compiler: never panics, the config always renders, and the
//! rendered config never holds a Secret value.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// A base the fuzzer mutates around: a Gateway, a route, a Secret, a policy.
const PREFIX: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  gatewayClassName: any\n  listeners: [{name: http, port: 80, protocol: HTTP}]\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: keys}\nstringData: {alice: VALUE-alice-0001}\n---\n";

fuzz_target!(|text: &str| {
    if text.contains("VALUE-alice") {
        return; // the value itself, written elsewhere by the fuzzer
    }
    let doc = format!("{PREFIX}{text}");
    let Ok(loaded) = keyway_sources::files::load_str("fuzz.yaml", &doc) else {
        return;
    };
    let compiled = keyway_compile::compile(&loaded.snapshot, &Default::default());
    let dump = serde_json::to_string(&compiled.config).expect("the config renders");
    assert!(!dump.contains("VALUE-alice-0001"));
    for line in compiled.report.lines() {
        assert!(!line.contains("VALUE-alice-0001"), "{line}");
    }
});
