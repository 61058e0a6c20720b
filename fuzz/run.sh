#!/usr/bin/env bash
# Runs every fuzz target for a while: `fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]`.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). The machine's stable toolchain builds the
# targets with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only flags). Seeds come from
# fuzz/seeds/<target>/ and, for the manifest targets, the upstream manifests in
# ../shared/testdata when present; new inputs the fuzzer finds go to a scratch directory
# (fuzz/corpus/<target>/, not committed). A crash leaves its input in fuzz/artifacts/ and
# fails the script.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(manifest_loader secret_decoding path_normalize key_extraction compiler upstream_response)
fi
# KEYWAY_FUZZ_BUILD=dev builds the targets unoptimized: CI's ten-second smoke run needs
# them to build and start, not to run fast, and a cold optimized build takes twice as long.
build=()
[ "${KEYWAY_FUZZ_BUILD:-release}" = dev ] && build=(--dev)
export RUSTC_BOOTSTRAP=1
cargo fuzz build "${build[@]}" --sanitizer none
shared=../../shared/testdata
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    extra=()
    case "$t" in
        manifest_loader|compiler)
            [ -d "$shared/kgateway-apikeyauth" ] && extra+=("$shared/kgateway-apikeyauth")
            [ -d "$shared/gateway-api-conformance" ] && extra+=("$shared/gateway-api-conformance")
            ;;
    esac
    echo "== fuzz $t for ${seconds}s"
    cargo fuzz run "${build[@]}" --sanitizer none "$t" "corpus/$t" "seeds/$t" "${extra[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 \
        | grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|.*panicked)" || true
    if [ -n "$(ls -A artifacts/"$t" 2>/dev/null)" ]; then
        echo "fuzz target $t crashed; inputs in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
