//! Any text as a manifest file: the loader never panics, and every error points at a line
//! of the file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let lines = text.lines().count().max(1);
    if let Err(errors) = keyway_sources::files::load_str("fuzz.yaml", text) {
        assert!(!errors.is_empty());
        for e in errors {
            assert_eq!(e.path, "fuzz.yaml");
            if let Some(line) = e.line {
                // A document ending without a newline is reported on the line after it at most.
                assert!(
                    line >= 1 && line <= lines + 1,
                    "{e} (file has {lines} lines)"
                );
            }
        }
    }
});
