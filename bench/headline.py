#!/usr/bin/env python3
"""Keyway against nginx on one core, access logs off and on (issue 14).

Same layout as bench.py: each proxy one worker pinned to CPU 0; the upstream nginx and the
load generators on CPU 1; 127.0.0.1 only; a valid key on every request. Four targets:

- nginx, `access_log off`;
- nginx, `access_log ... combined buffer=64k flush=1s` to a file (as nginx users buffer it);
- Keyway, `--access-log false`;
- Keyway with its default access log (stderr, here a file; RUST_LOG=info).

Each round measures every target in turn (order alternating): wrk saturation (req/s, and the
proxy's CPU per request from /proc), then the fixed-rate latency from keyway-loadgen (open
loop, BENCH_RATE req/s). BENCH_ROUNDS rounds (default 5), medians. KEYWAY_BASELINE=<binary> adds a fifth target, that
binary without access log, to judge a change against the build before it in the same run. Needs
`cargo build --release -p keyway -p keyway-loadgen`; prints a JSON summary and writes it to
bench/results/headline-<stamp>.json.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROUNDS = int(bench.os.environ.get("BENCH_ROUNDS", "5"))
RUN = bench.RUN


def nginx_conf(port, logged):
    text = bench.render("nginx-apikey.conf", PORT=port)
    if logged:
        text = text.replace("    access_log off;",
                            f"    access_log {RUN}/nginx-access-{port}.log combined buffer=64k flush=1s;")
    return text


def main():
    (RUN / "upstream.conf").write_text(bench.render("upstream-nginx.conf"))
    bench.start("upstream", ["nginx", "-c", str(RUN / "upstream.conf"), "-p", str(RUN)], bench.LOAD_CPU,
                bench.UPSTREAM_PORT)
    kw_dir = RUN / "keyway"
    kw_dir.mkdir()
    ports = {"nginx": 18081, "nginx-log": 18085, "keyway": 18084, "keyway-log": 18086, "keyway-baseline": 18087}
    baseline = bench.os.environ.get("KEYWAY_BASELINE")
    for name in ("nginx", "nginx-log"):
        (RUN / f"{name}.conf").write_text(nginx_conf(ports[name], name.endswith("log")))
    (kw_dir / "keys.yaml").write_text(bench.keys_secret())

    def keyway(name, logged, binary=bench.KEYWAY):
        d = RUN / name
        d.mkdir(exist_ok=True)
        (d / "gateway.yaml").write_text(bench.render("keyway.yaml", PORT=ports[name]))
        (d / "keys.yaml").write_text((kw_dir / "keys.yaml").read_text())
        cmd = [str(binary), "run", "--config", str(d), "--bind-address", "127.0.0.1",
               "--admin-address", f"127.0.0.1:{19100 + ports[name] - 18080}", "--threads", "1",
               "--access-log", "true" if logged else "false"]
        env = dict(bench.os.environ, RUST_LOG="info" if logged else "warn")
        return bench.start(name, cmd, bench.PROXY_CPU, ports[name], env)

    targets = {
        "nginx": lambda: bench.start("nginx", ["nginx", "-c", str(RUN / "nginx.conf"), "-p", str(RUN)],
                                     bench.PROXY_CPU, ports["nginx"]),
        "nginx-log": lambda: bench.start("nginx-log", ["nginx", "-c", str(RUN / "nginx-log.conf"), "-p", str(RUN)],
                                         bench.PROXY_CPU, ports["nginx-log"]),
        "keyway": lambda: keyway("keyway", False),
        "keyway-log": lambda: keyway("keyway-log", True),
    }
    if baseline:
        targets["keyway-baseline"] = lambda: keyway("keyway-baseline", False, baseline)
    running = {name: f() for name, f in targets.items()}
    for name in running:
        bench.wait_port(ports[name])
    order = list(targets)
    rows = {name: [] for name in order}
    for rnd in range(ROUNDS):
        for name in (order if rnd % 2 == 0 else list(reversed(order))):
            port, pid = ports[name], running[name].pid
            bench.wrk(port, bench.KEYS[0], 2)
            t0 = bench.cpu_ticks(pid)
            valid = bench.wrk(port, bench.KEYS[0], bench.DURATION)
            ticks = bench.cpu_ticks(pid) - t0
            fixed = bench.loadgen(port, bench.KEYS[1], bench.RATE, bench.DURATION)
            row = {"rps": valid["rps"], "cpu_us_per_req": ticks / bench.CLK_TCK * 1e6 / max(valid["requests"], 1),
                   "p99_ms": valid["p99_ms"], "non_2xx": valid["non_2xx"], "errors": valid["socket_errors"],
                   "fixed_p50_ms": fixed["latency_ms"]["p50"], "fixed_p99_ms": fixed["latency_ms"]["p99"],
                   "fixed_errors": fixed["errors"] + fixed["non_2xx"]}
            rows[name].append(row)
            bench.log(f"round {rnd} {name}: {row['rps']:.0f} req/s, {row['cpu_us_per_req']:.2f} us CPU/req, "
                      f"fixed p99 {row['fixed_p99_ms']:.3f} ms")
    logged_lines = sum(1 for line in (RUN / "keyway-log.log").open() if "keyway::access" in line)
    bench.stop_all()
    med = bench.medians(rows)
    summary = {
        "median": med,
        "ratios": {
            "rps_keyway_vs_nginx": med["keyway"]["rps"] / med["nginx"]["rps"],
            "cpu_keyway_vs_nginx": med["keyway"]["cpu_us_per_req"] / med["nginx"]["cpu_us_per_req"],
            "rps_logged_keyway_vs_logged_nginx": med["keyway-log"]["rps"] / med["nginx-log"]["rps"],
            "access_log_cost_keyway": 1 - med["keyway-log"]["rps"] / med["keyway"]["rps"],
            "access_log_cost_nginx": 1 - med["nginx-log"]["rps"] / med["nginx"]["rps"],
            "fixed_p99_keyway_vs_nginx": med["keyway"]["fixed_p99_ms"] / med["nginx"]["fixed_p99_ms"],
        },
        "keyway_access_lines_written": logged_lines,
        "baseline": baseline,
        "rounds": rows,
        "settings": {"duration_s": bench.DURATION, "rounds": ROUNDS, "rate": bench.RATE, "connections": bench.CONNS},
        "versions": bench.versions(),
    }
    if baseline:
        summary["ratios"]["rps_keyway_vs_baseline"] = med["keyway"]["rps"] / med["keyway-baseline"]["rps"]
        summary["ratios"]["cpu_keyway_vs_baseline"] = (med["keyway"]["cpu_us_per_req"]
                                                       / med["keyway-baseline"]["cpu_us_per_req"])
    out = bench.BENCH / "results" / f"headline-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("median", "ratios", "keyway_access_lines_written")}, indent=2))


if __name__ == "__main__":
    main()
