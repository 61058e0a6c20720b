#!/usr/bin/env python3
"""TLS benchmark (issue 12): Keyway and nginx terminating TLS with the same ECDSA P-256
certificate, same layout as the peer benchmark (bench.py): proxy on CPU 0 with one worker,
wrk and the upstream nginx on CPU 1, everything on 127.0.0.1, a valid API key.

1. Keep-alive over TLS: req/s and proxy CPU per request (wrk, 64 connections).
2. Full handshakes: a new connection per request (wrk with `Connection: close`, 16
   connections): handshakes/s and CPU per handshake.

BENCH_ROUNDS rounds (3), alternating order; medians and Keyway/nginx ratios. Needs
`cargo build --release -p keyway`, nginx, wrk, openssl. Prints a JSON summary and writes it
to bench/results/tls-<stamp>.json.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the shared helpers: start, stop, cpu_ticks, render, ...)

DURATION = int(os.environ.get("BENCH_DURATION", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PORTS = {"nginx": 18443, "keyway": 18444}
RUN = bench.RUN
KEY = bench.KEYS[0]


def cert():
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "2", "-subj", "/CN=bench.test", "-addext", "subjectAltName=DNS:bench.test",
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-keyout", str(RUN / "tls.key"), "-out", str(RUN / "tls.crt")],
        check=True, capture_output=True)
    return (RUN / "tls.crt").read_text(), (RUN / "tls.key").read_text()


NGINX = """
worker_processes 1;
daemon off;
pid {RUN}/nginx-tls.pid;
error_log {RUN}/nginx-tls-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    map $http_api_key $api_client {{
        default "";
        "{KEY}" client1;
    }}
    upstream backend {{
        server 127.0.0.1:{UPSTREAM};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{PORT} ssl backlog=4096;
        ssl_certificate {RUN}/tls.crt;
        ssl_certificate_key {RUN}/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            if ($api_client = "") {{ return 401 "Client authentication failed."; }}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header api-key "";
            proxy_pass http://backend;
        }}
    }}
}}
"""


def keyway_manifests(crt, key):
    def indent(text):
        return "".join("    " + line + "\n" for line in text.strip().splitlines())
    gateway = bench.render("keyway.yaml", PORT=PORTS["keyway"]).replace(
        "listeners: [{name: http, port: %d, protocol: HTTP}]" % PORTS["keyway"],
        "listeners: [{name: https, port: %d, protocol: HTTPS, tls: {certificateRefs: [{name: bench-tls}]}}]"
        % PORTS["keyway"])
    assert "HTTPS" in gateway, gateway
    secret = ("---\napiVersion: v1\nkind: Secret\ntype: kubernetes.io/tls\nmetadata: {name: bench-tls}\n"
              "stringData:\n  tls.crt: |\n" + indent(crt) + "  tls.key: |\n" + indent(key))
    keys = ("---\napiVersion: v1\nkind: Secret\nmetadata: {name: keys, labels: {bench: keys}}\nstringData:\n"
            f"  client1: {KEY}\n")
    return gateway + secret + keys


def wrk(port, conns, close):
    cmd = ["taskset", "-c", bench.LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{DURATION}s",
           "-H", f"api-key: {KEY}"]
    if close:
        cmd += ["-H", "Connection: close"]
    cmd.append(f"https://127.0.0.1:{port}/")
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    import re
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non_2xx = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = sum(map(int, m.groups())) if m else 0
    return rps, requests, non_2xx, errors, text


def main():
    crt, key = cert()
    (RUN / "upstream.conf").write_text(bench.render("upstream-nginx.conf"))
    bench.start("upstream", ["nginx", "-c", str(RUN / "upstream.conf"), "-p", str(RUN)], bench.LOAD_CPU,
                bench.UPSTREAM_PORT)
    (RUN / "nginx-tls.conf").write_text(
        NGINX.format(RUN=RUN, KEY=KEY, UPSTREAM=bench.UPSTREAM_PORT, PORT=PORTS["nginx"]))
    kw = RUN / "keyway-tls"
    kw.mkdir()
    (kw / "all.yaml").write_text(keyway_manifests(crt, key))
    running = {
        "nginx": bench.start("nginx-tls", ["nginx", "-c", str(RUN / "nginx-tls.conf"), "-p", str(RUN)],
                             bench.PROXY_CPU, PORTS["nginx"]),
        "keyway": bench.start_keyway(kw, PORTS["keyway"]),
    }
    rows = {name: [] for name in running}
    order = list(running)
    for rnd in range(ROUNDS):
        for name in (order if rnd % 2 == 0 else list(reversed(order))):
            port, pid = PORTS[name], running[name].pid
            wrk(port, 16, False)  # warm-up
            t0 = bench.cpu_ticks(pid)
            rps, n, non2xx, errors, _ = wrk(port, 64, False)
            keepalive_cpu = (bench.cpu_ticks(pid) - t0) / bench.CLK_TCK * 1e6 / max(n, 1)
            t0 = bench.cpu_ticks(pid)
            hps, hn, hnon2xx, herrors, _ = wrk(port, 16, True)
            handshake_cpu = (bench.cpu_ticks(pid) - t0) / bench.CLK_TCK * 1e6 / max(hn, 1)
            row = {"keepalive_rps": rps, "keepalive_cpu_us": keepalive_cpu, "keepalive_failed": non2xx + errors,
                   "handshakes_per_s": hps, "handshake_cpu_us": handshake_cpu, "handshake_failed": hnon2xx + herrors,
                   "rss_mb": bench.status_kb(pid, "VmRSS") / 1024}
            rows[name].append(row)
            bench.log(f"round {rnd} {name}: keep-alive {rps:.0f} req/s ({keepalive_cpu:.1f} us CPU/req), "
                      f"handshakes {hps:.0f}/s ({handshake_cpu:.0f} us CPU each)")
    bench.stop_all()
    med = bench.medians(rows)
    summary = {
        "median": med,
        "ratios": {
            "keepalive_rps": med["keyway"]["keepalive_rps"] / med["nginx"]["keepalive_rps"],
            "keepalive_cpu": med["keyway"]["keepalive_cpu_us"] / med["nginx"]["keepalive_cpu_us"],
            "handshakes_per_s": med["keyway"]["handshakes_per_s"] / med["nginx"]["handshakes_per_s"],
            "handshake_cpu": med["keyway"]["handshake_cpu_us"] / med["nginx"]["handshake_cpu_us"],
        },
        "rounds": rows,
        "settings": {"duration_s": DURATION, "rounds": ROUNDS, "keepalive_connections": 64,
                     "handshake_connections": 16, "certificate": "ECDSA P-256, self-signed"},
        "versions": bench.versions(),
    }
    out = bench.BENCH / "results" / f"tls-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({"median": med, "ratios": summary["ratios"]}, indent=2))


if __name__ == "__main__":
    main()
