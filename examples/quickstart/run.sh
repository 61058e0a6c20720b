#!/usr/bin/env bash
# Starts the quickstart: the httpbin-like sample upstream on 127.0.0.1:8000 and Keyway
# serving this directory's manifests on :8080 (admin port 127.0.0.1:19000).
# Then, in another terminal:
#   curl -i localhost:8080/headers -H "host: www.example.com"            # 401
#   curl -i localhost:8080/headers -H "host: www.example.com" \
#        -H "api-key: Bearer N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy"   # 200
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build --release --bin keyway
./target/release/keyway echo-server --listen 127.0.0.1:8000 &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true' EXIT
./target/release/keyway run --config examples/quickstart "$@"
