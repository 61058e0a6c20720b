//! Request paths: normalising never panics, keeps UTF-8, is idempotent, leaves no dot
//! segment, and under `reject` lets no encoded slash or backslash through.
#![no_main]

use keyway_dataplane::request::path::{normalize, EscapedSlashes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|target: &str| {
    // The path as the request path sees it: what `http` accepted as a request-target.
    let Ok(pq) = http::uri::PathAndQuery::try_from(target) else {
        return;
    };
    let path = pq.path();
    if !path.starts_with('/') {
        return;
    }
    for mode in [
        EscapedSlashes::Reject,
        EscapedSlashes::Unescape,
        EscapedSlashes::Keep,
    ] {
        let Ok(out) = normalize(path, mode) else {
            assert_eq!(mode, EscapedSlashes::Reject);
            continue;
        };
        let out = out.unwrap_or_else(|| path.to_string());
        assert!(out.starts_with('/'), "{path:?} -> {out:?}");
        assert_eq!(
            normalize(&out, mode),
            Ok(None),
            "not idempotent: {path:?} -> {out:?}"
        );
        for seg in out.split('/') {
            assert!(seg != "." && seg != "..", "{path:?} -> {out:?}");
        }
        if mode == EscapedSlashes::Unescape {
            let lower = out.to_ascii_lowercase();
            assert!(!lower.contains("%2f") && !lower.contains("%5c") && !out.contains('\\'));
        }
        // A valid request path stays one.
        assert!(
            http::uri::PathAndQuery::try_from(out.as_str()).is_ok(),
            "{path:?} -> {out:?}"
        );
    }
});
