#!/usr/bin/env bash
# Keyway built with profile-guided optimization, and what it gains (issue 14).
# Needs curl; h2load (nghttp2-client) adds HTTP/2 to the training, valgrind and nginx the
# instruction counts.
#
#   ./bench/pgo.sh            # ~16 minutes on 2 cores; the binary is target/pgo/keyway
#
# 1. Builds Keyway and keyway-loadgen instrumented (`-Cprofile-generate`, the release profile:
#    fat LTO) in target/pgo-generate.
# 2. Trains: the instrumented Keyway serves bench/peers/keyway.yaml in front of
#    `keyway echo-server` on 127.0.0.1, once with its default access log and once without,
#    under a mix weighted like an API gateway's traffic: keep-alive GETs with a valid key
#    from keyway-loadgen, requests with a wrong key and with none, and a smaller share of
#    HTTP/2 (h2load) and of 1 KiB POST bodies (curl, h2load), so that no path the benchmarks
#    measure is left cold. Only Keyway's own profiles are kept (the upstream's and the
#    load's go elsewhere).
# 3. Merges them with the toolchain's llvm-profdata (`rustup component add llvm-tools`) and
#    builds again with `-Cprofile-use` into target/pgo-use; copies the result to
#    target/pgo/keyway.
# 4. With valgrind and nginx at hand, counts instructions per proxied request of the plain
#    release build and of this one (bench/instructions.sh).
#
# Compare natively with FLOOR_KEYWAY_B=target/pgo/keyway ./bench/floor.py (both builds and
# nginx in the same rounds), or KEYWAY_A=target/release/keyway KEYWAY_B=target/pgo/keyway
# ./bench/ab.py; KEYWAY_BIN=target/pgo/keyway ./bench/headline.py for the issue's table.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
sysroot=$(rustc --print sysroot)
profdata=$(find "$sysroot/lib/rustlib" -name llvm-profdata -type f | head -n 1)
[ -n "$profdata" ] || {
    echo "needs llvm-profdata: rustup component add llvm-tools" >&2
    exit 1
}
command -v curl >/dev/null || { echo "needs curl" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/profiles" "$work/other"

echo "== instrumented build (target/pgo-generate)"
# The flags name a fixed directory, so that a second run reuses the build; every process run
# below names its own profile file.
RUSTFLAGS="-Cprofile-generate=$root/target/pgo-generate/profiles" CARGO_TARGET_DIR="$root/target/pgo-generate" \
    cargo build --release --locked -q -p keyway -p keyway-loadgen
gen="$root/target/pgo-generate/release"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1 never opened" >&2
    exit 1
}

up=$(port)
LLVM_PROFILE_FILE="$work/other/echo-%p.profraw" "$gen/keyway" echo-server --listen "127.0.0.1:$up" \
    >"$work/echo.log" 2>&1 &
pids+=($!)
wait_port "$up"
key=pgo-training-key-1
train() {
    local log=$1 gw admin cfg="$work/cfg-$1"
    gw=$(port)
    admin=$(port)
    mkdir -p "$cfg"
    sed -e "s#{PORT}#$gw#g" -e "s#{UPSTREAM_PORT}#$up#g" bench/peers/keyway.yaml >"$cfg/gateway.yaml"
    printf 'apiVersion: v1\nkind: Secret\nmetadata: {name: keys, labels: {bench: keys}}\nstringData:\n  client1: %s\n  client2: other-key-2\n' \
        "$key" >"$cfg/keys.yaml"
    LLVM_PROFILE_FILE="$work/profiles/keyway-%p.profraw" "$gen/keyway" run --config "$cfg" \
        --bind-address 127.0.0.1 --admin-address "127.0.0.1:$admin" --threads 1 --access-log "$log" \
        >"$work/keyway-$log.log" 2>&1 &
    local kw=$!
    pids+=("$kw")
    wait_port "$gw"
    local url="http://127.0.0.1:$gw/"
    load() { LLVM_PROFILE_FILE="$work/other/load-%p.profraw" "$gen/keyway-loadgen" --url "$url" \
        --connections 64 "$@" >/dev/null; }
    load --rate 20000 --duration 8s -H "api-key: $key"
    load --rate 5000 --duration 2s -H "api-key: wrong-key"
    load --rate 5000 --duration 2s
    head -c 1024 /dev/zero | tr '\0' x >"$work/body"
    curl -s -o /dev/null --data-binary "@$work/body" -H "api-key: $key" "${url}post/[1-2000]"
    # HTTP/2 from h2load where it is installed. Not from curl: 7.88 sends nothing after the
    # first request on a reused prior-knowledge connection to a hyper server (exit 16).
    if command -v h2load >/dev/null; then
        h2load -n 5000 -c 4 -m 8 -H "api-key: $key" "${url}h2" >/dev/null
        h2load -n 2000 -c 2 -m 4 -d "$work/body" -H "api-key: $key" "${url}h2post" >/dev/null
    fi
    kill -INT "$kw"
    wait "$kw" || true
}
echo "== training (access log on, then off)"
train true
train false
ls "$work"/profiles/*.profraw >/dev/null

echo "== optimized build (target/pgo-use)"
"$profdata" merge -o "$work/keyway.profdata" "$work"/profiles/*.profraw
RUSTFLAGS="-Cprofile-use=$work/keyway.profdata -Cllvm-args=-pgo-warn-missing-function=false" \
    CARGO_TARGET_DIR="$root/target/pgo-use" cargo build --release --locked -q -p keyway
install -D -m 0755 "$root/target/pgo-use/release/keyway" "$root/target/pgo/keyway"
echo "built target/pgo/keyway"

if command -v valgrind >/dev/null && command -v nginx >/dev/null; then
    echo "== instructions per proxied request"
    cargo build --release --locked -q -p keyway
    ./bench/instructions.sh "$root/target/release/keyway" "$root/target/pgo/keyway"
fi
