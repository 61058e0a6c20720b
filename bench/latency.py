#!/usr/bin/env python3
"""Latency at a fixed rate, Keyway against nginx, with nothing else in the rounds (issue 14).

    ./bench/latency.py

bench/headline.py measures the fixed-rate latency right after each target's saturation run,
so every latency sample follows eight seconds of the machine at full load; on a noisy VM its
p99s spread more than the difference between the proxies. Here the two proxies only see the
open-loop load: BENCH_ROUNDS (default 10) alternating rounds of BENCH_DURATION seconds
(default 8) at BENCH_RATE req/s (default 2000) from `keyway-loadgen` over 16 connections, a
valid key. Layout as bench.py: each proxy one worker on CPU 0, access logs off; the
upstream nginx and the load generator on CPU 1; 127.0.0.1 only. Prints the medians of each
percentile and the median of the per-round p99 ratios (both proxies met the same moment of
the machine in a round), and writes them to bench/results/latency-<stamp>.json. Needs
`cargo build --release -p keyway -p keyway-loadgen`.
"""

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROUNDS = int(bench.os.environ.get("BENCH_ROUNDS", "10"))
DURATION = int(bench.os.environ.get("BENCH_DURATION", "8"))
RUN = bench.RUN


def main():
    (RUN / "upstream.conf").write_text(bench.render("upstream-nginx.conf"))
    bench.start("upstream", ["nginx", "-c", str(RUN / "upstream.conf"), "-p", str(RUN)], bench.LOAD_CPU,
                bench.UPSTREAM_PORT)
    ports = {"keyway": bench.PORTS["keyway"], "nginx": bench.PORTS["nginx"]}
    kw_dir = RUN / "keyway"
    kw_dir.mkdir()
    (kw_dir / "gateway.yaml").write_text(bench.render("keyway.yaml", PORT=ports["keyway"]))
    (kw_dir / "keys.yaml").write_text(bench.keys_secret())
    bench.start("keyway", [str(bench.KEYWAY), "run", "--config", str(kw_dir), "--bind-address", "127.0.0.1",
                           "--admin-address", f"127.0.0.1:{bench.ADMIN}", "--threads", "1",
                           "--access-log", "false"], bench.PROXY_CPU, ports["keyway"])
    (RUN / "nginx.conf").write_text(bench.render("nginx-apikey.conf", PORT=ports["nginx"]))
    bench.start("nginx", ["nginx", "-c", str(RUN / "nginx.conf"), "-p", str(RUN)], bench.PROXY_CPU,
                ports["nginx"])
    order = list(ports)
    rows = {name: [] for name in order}
    try:
        for rnd in range(ROUNDS):
            for name in (order if rnd % 2 == 0 else list(reversed(order))):
                out = bench.loadgen(ports[name], bench.KEYS[0], bench.RATE, DURATION)
                row = dict(out["latency_ms"], failed=out["errors"] + out["non_2xx"])
                rows[name].append(row)
                bench.log(f"round {rnd} {name}: p50 {row['p50']:.3f} p99 {row['p99']:.3f} "
                          f"p99.9 {row['p999']:.3f} ms, {row['failed']} failed")
    finally:
        bench.stop_all()
    ratios = [k["p99"] / n["p99"] for k, n in zip(rows["keyway"], rows["nginx"])]
    summary = {
        "median_ms": {name: {q: statistics.median(r[q] for r in rs) for q in ("p50", "p90", "p99", "p999", "max")}
                      for name, rs in rows.items()},
        "p99_keyway_vs_nginx_per_round_median": statistics.median(ratios),
        "rounds_keyway_p99_lower": sum(r < 1 for r in ratios),
        "failed": {name: sum(r["failed"] for r in rs) for name, rs in rows.items()},
        "rounds": rows,
        "settings": {"rounds": ROUNDS, "duration_s": DURATION, "rate": bench.RATE, "connections": 16},
        "versions": bench.versions(),
    }
    out = bench.BENCH / "results" / f"latency-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("median_ms", "p99_keyway_vs_nginx_per_round_median",
                                              "rounds_keyway_p99_lower", "failed")}, indent=2))


if __name__ == "__main__":
    main()
