#!/usr/bin/env bash
# Mutation testing of the code that decides access, with cargo-mutants:
#   ./mutants/run.sh                     # every mutant of the files in .cargo/mutants.toml
#   ./mutants/run.sh -F request/auth.rs  # only mutants whose name matches the regex
#   ./mutants/run.sh --since-verified    # only mutants in lines changed since mutants/VERIFIED
#
# Installs cargo-mutants (27.1.0) when it is missing and there is something to test. Each mutant is built and tested with the tests of its
# own crate, which is where the access logic is unit-tested (the request path's phases,
# the compiler's policy pass); a surviving mutant is a missing test, or an equivalent one
# listed with its reason in mutants/README.md and excluded in .cargo/mutants.toml. Results
# land in mutants.out/.
#
# Two mutants at a time (each in its own copy of the tree, built once from the baseline's
# build), with the `mutants` profile of Cargo.toml (no debug info: every mutant is a link).
# A full run is about 370 mutants and 27 minutes on this 2-core machine: too long for every
# CI run, so CI tests the mutants of what changed since the commit in mutants/VERIFIED, the
# last full run with none missed (update it after one).
set -euo pipefail
cd "$(dirname "$0")/.."
# cargo-mutants builds a copy of the tree elsewhere; the tests' upstream manifests stay here.
export KEYWAY_SHARED_TESTDATA="${KEYWAY_SHARED_TESTDATA:-$(cd .. && pwd)/shared/testdata}"
if [ "${1:-}" = "--since-verified" ]; then
    shift
    base=$(tr -d '[:space:]' <mutants/VERIFIED)
    if git cat-file -e "${base}^{commit}" 2>/dev/null; then
        diff=$(mktemp)
        trap 'rm -f "$diff"' EXIT
        git diff "$base" -- crates >"$diff"
        echo "mutants: code changed since the verified run ($base): $(grep -c '^+++ ' "$diff" || true) files"
        if ! grep -q '^@@' "$diff"; then
            echo "mutants: nothing changed since the verified run"
            exit 0
        fi
        # The examined files (.cargo/mutants.toml's examine_globs): when none changed there
        # is no mutant to test, and cargo-mutants need not even be installed.
        examined=$(sed -n '/^examine_globs/,/^\]/s/^ *"\([^"]*\)",\?$/\1/p' .cargo/mutants.toml)
        # shellcheck disable=SC2086
        if [ -n "$examined" ] && [ -z "$(git diff --name-only "$base" -- $examined)" ]; then
            echo "mutants: none of the examined files changed since the verified run"
            exit 0
        fi
        set -- --in-diff "$diff" "$@"
    else
        echo "mutants: verified commit $base not in this history: a full run"
    fi
fi
command -v cargo-mutants >/dev/null 2>&1 || cargo install cargo-mutants --locked --version 27.1.0
set +e
cargo mutants --workspace -j "${MUTANTS_JOBS:-2}" --profile mutants "$@"
status=$?
set -e
# Exit 3: no mutant missed, some timed out. Those loop forever (`+=` turned into `-=` on a
# cursor); the timeout is what catches them.
if [ "$status" -eq 3 ]; then
    echo "mutants: none missed; the timeouts are mutants that loop forever, caught by the timeout"
    exit 0
fi
exit "$status"
