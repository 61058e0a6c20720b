#!/usr/bin/env bash
# Mutation testing of the code that decides access, with cargo-mutants:
#   ./mutants/run.sh            # every mutant of the files in .cargo/mutants.toml
#   ./mutants/run.sh -f crates/keyway-dataplane/src/request/auth.rs   # one file
#
# Needs `cargo install cargo-mutants`. Each mutant is built and tested with the tests of its
# own crate, which is where the access logic is unit-tested (the request path's phases,
# the compiler's policy pass); a surviving mutant is a missing test, or an equivalent one
# listed with its reason in mutants/README.md and excluded in .cargo/mutants.toml. On this
# 2-core machine a full run takes about an hour; results land in mutants.out/.
set -euo pipefail
cd "$(dirname "$0")/.."
# cargo-mutants builds a copy of the tree elsewhere; the tests' upstream manifests stay here.
export KEYWAY_SHARED_TESTDATA="${KEYWAY_SHARED_TESTDATA:-$(cd .. && pwd)/shared/testdata}"
exec cargo mutants --workspace -j 1 "$@"
