#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a figure that does not move with
# machine noise, to judge a change to the request path.
#
#   ./bench/instructions.sh [KEYWAY_BINARY ...]
#
# Each binary (default: target/release/keyway, built first) serves the benchmark manifests
# with --threads 1 and no access log, in front of one nginx worker returning a fixed 200.
# It answers N1 and then N2 keep-alive requests with a valid key in two runs under
# callgrind; (instructions(N2) - instructions(N1)) / (N2 - N1) is the cost of one request,
# start-up and shutdown cancelling out. Loopback only.
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
trap 'kill $(cat "$run"/upstream.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$run"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port)
gw=$(port)
admin=$(port)
sed -e "s#{RUN}#$run#g" -e "s#{UPSTREAM_PORT}#$up#g" "$root/bench/peers/upstream-nginx.conf" >"$run/up.conf"
nginx -p "$run" -c "$run/up.conf" >/dev/null 2>&1 &
mkdir -p "$run/cfg"
sed -e "s#{PORT}#$gw#g" -e "s#{UPSTREAM_PORT}#$up#g" "$root/bench/peers/keyway.yaml" >"$run/cfg/k.yaml"
printf -- "---\napiVersion: v1\nkind: Secret\nmetadata: {name: k, labels: {bench: keys}}\nstringData: {client: bench-key-1}\n" >>"$run/cfg/k.yaml"
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
    valgrind --tool=callgrind --callgrind-out-file="$run/cg.out" "$bin" run --config "$run/cfg" \
        --bind-address 127.0.0.1 --admin-address "127.0.0.1:$admin" --threads 1 --access-log false \
        >"$run/keyway.log" 2>&1 &
    local pid=$!
    python3 "$run/client.py" "$n"
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    callgrind_annotate "$run/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}'
}
for bin in "$@"; do
    a=$(total "$bin" $n1)
    b=$(total "$bin" $n2)
    echo "$bin: $(( (b - a) / (n2 - n1) )) instructions per request"
done
