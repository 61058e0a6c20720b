#!/usr/bin/env bash
# The quickstart over HTTPS: makes a self-signed certificate for www.example.com with
# openssl, writes it as a kubernetes.io/tls Secret, and serves the quickstart's routes and
# API key policy on :8080 (HTTP) and :8443 (HTTPS). Then, in another terminal:
#   curl -i --cacert examples/quickstart-https/generated/tls.crt \
#        --resolve www.example.com:8443:127.0.0.1 https://www.example.com:8443/headers   # 401
#   curl -i --cacert examples/quickstart-https/generated/tls.crt \
#        --resolve www.example.com:8443:127.0.0.1 https://www.example.com:8443/headers \
#        -H "api-key: Bearer N2YwMDIxZTEtNGUzNS1jNzgzLTRkYjAtYjE2YzRkZGVmNjcy"        # 200
# Replace the certificate while it runs (run.sh --renew in another terminal): new
# connections get the new one within a second.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/examples/quickstart-https"
out="$here/generated"
mkdir -p "$out"

make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
        -subj "/CN=www.example.com" -addext "subjectAltName=DNS:www.example.com" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -keyout "$out/tls.key" -out "$out/tls.crt" 2>/dev/null
    {
        printf 'apiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\n'
        printf 'metadata:\n  name: www-example-com-tls\n  namespace: kgateway-system\n'
        printf 'stringData:\n  tls.crt: |\n'
        sed 's/^/    /' "$out/tls.crt"
        printf '  tls.key: |\n'
        sed 's/^/    /' "$out/tls.key"
    } > "$out/secret.yaml.tmp"
    mv "$out/secret.yaml.tmp" "$out/secret.yaml"
}

if [ "${1:-}" = "--renew" ]; then
    make_cert
    echo "new certificate written to $out/secret.yaml"
    exit 0
fi
[ -f "$out/secret.yaml" ] || make_cert
cd "$root"
cargo build --release --bin keyway
./target/release/keyway echo-server --listen 127.0.0.1:8000 &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true' EXIT
./target/release/keyway run \
    --config examples/quickstart/apikey.yaml --config examples/quickstart/httpbin.yaml \
    --config examples/quickstart-https/gateway.yaml --config "$out" "$@"
