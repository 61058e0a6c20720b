#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a figure that does not move with
# machine noise, to judge a change to the request path.
#
#   ./bench/instructions.sh [KEYWAY_BINARY | nginx ...]
#
# `nginx` counts nginx as the API-key gateway of bench/peers/nginx-apikey.conf (one process,
# `master_process off`), for the same figure side by side. Environment:
#   KEYWAY_ENTRY              the Secret entry of the key (default the plain key; a JSON entry
#                             such as {"keyHash": "sha256:...", "metadata": {...}} works)
#   KEYWAY_METADATA_HEADERS   `metadataHeaders` for the policy, as YAML flow ({tier: x-tier})
#   KEYWAY_ACCESS_LOG         `true`: Keyway writes its access log (to a file)
#   KEYWAY_ARGS               more `keyway run` arguments
#   NGINX_ACCESS_LOG          `on`: nginx logs as bench/headline.py's logged nginx does
#
# Each binary (default: target/release/keyway, built first) serves the benchmark manifests
# with --threads 1 and no access log, in front of one nginx worker returning a fixed 200.
# It answers N1 and then N2 keep-alive requests with a valid key in two runs under
# callgrind; (instructions(N2) - instructions(N1)) / (N2 - N1) is the cost of one request,
# start-up and shutdown cancelling out. Loopback only. For Keyway it also prints how many
# of them the key's SHA-256 took: valgrind's virtual CPU has no SHA extensions, so the
# digest runs in software there (about 3,500 instructions) while natively it runs on SHA-NI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n1=500
n2=2500
if [ $# -eq 0 ]; then
    (cd "$root" && cargo build --release -q -p keyway)
    set -- "$root/target/release/keyway"
fi
command -v valgrind >/dev/null && command -v nginx >/dev/null || {
    echo "needs valgrind and nginx" >&2
    exit 1
}
run=$(mktemp -d)
trap 'kill $(cat "$run"/upstream.pid 2>/dev/null) 2>/dev/null || true; [ -n "${KEEP_RUN:-}" ] || rm -rf "$run"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port)
gw=$(port)
admin=$(port)
sed -e "s#{RUN}#$run#g" -e "s#{UPSTREAM_PORT}#$up#g" "$root/bench/peers/upstream-nginx.conf" >"$run/up.conf"
nginx -p "$run" -c "$run/up.conf" >/dev/null 2>&1 &
mkdir -p "$run/cfg"
sed -e "s#{PORT}#$gw#g" -e "s#{UPSTREAM_PORT}#$up#g" "$root/bench/peers/keyway.yaml" >"$run/cfg/k.yaml"
if [ -n "${KEYWAY_METADATA_HEADERS:-}" ]; then
    sed -i "s#secretSelector: {matchLabels: {bench: keys}}#&\n    metadataHeaders: $KEYWAY_METADATA_HEADERS#" "$run/cfg/k.yaml"
fi
entry=${KEYWAY_ENTRY:-bench-key-1}
printf -- "---\napiVersion: v1\nkind: Secret\nmetadata: {name: k, labels: {bench: keys}}\nstringData:\n  client: '%s'\n" "$entry" >>"$run/cfg/k.yaml"
sed -e "s#{RUN}#$run#g" -e "s#{UPSTREAM_PORT}#$up#g" -e "s#{PORT}#$gw#g" -e "s#{KEY1}#bench-key-1#g" \
    -e "s#{KEY2}#bench-key-2#g" -e "s#{KEY3}#bench-key-3#g" -e "s#^daemon off;#daemon off;\nmaster_process off;#" \
    "$root/bench/peers/nginx-apikey.conf" >"$run/gw-nginx.conf"
if [ "${NGINX_ACCESS_LOG:-off}" = on ]; then
    sed -i "s#    access_log off;#    access_log $run/access.log combined buffer=64k flush=1s;#" "$run/gw-nginx.conf"
fi
cat >"$run/client.py" <<PY
import http.client, sys, time
for _ in range(300):
    try:
        c = http.client.HTTPConnection("127.0.0.1", $gw); c.connect(); break
    except OSError:
        time.sleep(0.1)
for _ in range(int(sys.argv[1])):
    c.request("GET", "/", headers={"api-key": "bench-key-1"})
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
PY
total() {
    local bin=$1 n=$2
    if [ "$bin" = nginx ]; then
        valgrind --tool=callgrind --callgrind-out-file="$run/cg.out" nginx -p "$run" -c "$run/gw-nginx.conf" \
            >"$run/nginx.log" 2>&1 &
    else
        # shellcheck disable=SC2086
        RUST_LOG=info valgrind --tool=callgrind --callgrind-out-file="$run/cg.out" "$bin" run --config "$run/cfg" \
            --bind-address 127.0.0.1 --admin-address "127.0.0.1:$admin" --threads 1 --access-log "${KEYWAY_ACCESS_LOG:-false}" \
            ${KEYWAY_ARGS:-} >"$run/keyway.log" 2>&1 &
    fi
    local pid=$!
    python3 "$run/client.py" "$n"
    kill -"$( [ "$bin" = nginx ] && echo QUIT || echo INT )" "$pid"
    wait "$pid" 2>/dev/null || true
    # The total, and (inclusive) the key's SHA-256: valgrind's CPU has no SHA extensions,
    # so the digest runs in software here and in hardware (SHA-NI) on most x86 servers.
    callgrind_annotate --inclusive=yes "$run/cg.out" 2>/dev/null | awk '
        /PROGRAM TOTALS/ && !total {gsub(",", "", $1); total = $1}
        /:keyway_model::secret::digest/ {gsub(",", "", $1); if ($1 + 0 > digest) digest = $1 + 0}
        END {print total, digest + 0}'
}
[ -z "${KEEP_RUN:-}" ] || echo "run directory: $run" >&2
for bin in "$@"; do
    read -r a da <<<"$(total "$bin" $n1)"
    read -r b db <<<"$(total "$bin" $n2)"
    per=$(( (b - a) / (n2 - n1) ))
    sha=$(( (db - da) / (n2 - n1) ))
    if [ "$sha" -gt 0 ]; then
        echo "$bin: $per instructions per request ($sha of them the key's SHA-256 in software; $(( per - sha )) without)"
    else
        echo "$bin: $per instructions per request"
    fi
done
