#!/usr/bin/env python3
"""How Keyway scales with --threads on this 2-core machine, beside nginx's worker_processes.

Nothing is pinned apart: the proxy, the upstream nginx and wrk (2 threads, 128 connections)
share both cores, as they would on a small node. Each proxy runs with one worker and with two
(Keyway `--threads 1` / `--threads 2`, nginx `worker_processes 1` / `2`), BENCH_ROUNDS
alternating rounds (default 3), medians; valid key, no access log. Needs
`cargo build --release -p keyway`; writes bench/results/threads-<stamp>.json.
"""

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROUNDS = int(bench.os.environ.get("BENCH_ROUNDS", "3"))
RUN = bench.RUN
BOTH = "0,1"


def wrk(port):
    cmd = ["wrk", "-t2", "-c128", f"-d{bench.DURATION}s", "-H", f"api-key: {bench.KEYS[0]}",
           f"http://127.0.0.1:{port}/"]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    non = 0
    for line in text.splitlines():
        if "Non-2xx" in line:
            non = int(line.split()[-1])
    return float(text.split("Requests/sec:")[1].split()[0]), non


def main():
    (RUN / "upstream.conf").write_text(bench.render("upstream-nginx.conf"))
    bench.start("upstream", ["nginx", "-c", str(RUN / "upstream.conf"), "-p", str(RUN)], BOTH, bench.UPSTREAM_PORT)
    keys = bench.keys_secret()
    ports = {"nginx-1": 18081, "nginx-2": 18085, "keyway-1": 18084, "keyway-2": 18086}

    def start(name):
        port = ports[name]
        workers = name[-1]
        if name.startswith("nginx"):
            conf = bench.render("nginx-apikey.conf", PORT=port).replace("worker_processes 1;",
                                                                        f"worker_processes {workers};")
            conf = conf.replace("pid {}/nginx.pid".format(RUN), f"pid {RUN}/{name}.pid")
            (RUN / f"{name}.conf").write_text(conf)
            return bench.start(name, ["nginx", "-c", str(RUN / f"{name}.conf"), "-p", str(RUN)], BOTH, port)
        d = RUN / name
        d.mkdir(exist_ok=True)
        (d / "gateway.yaml").write_text(bench.render("keyway.yaml", PORT=port))
        (d / "keys.yaml").write_text(keys)
        cmd = [str(bench.KEYWAY), "run", "--config", str(d), "--bind-address", "127.0.0.1",
               "--admin-address", f"127.0.0.1:{19100 + port - 18080}", "--threads", workers,
               "--access-log", "false"]
        return bench.start(name, cmd, BOTH, port, dict(bench.os.environ, RUST_LOG="warn"))

    rows = {name: [] for name in ports}
    order = list(ports)
    for rnd in range(ROUNDS):
        for name in (order if rnd % 2 == 0 else list(reversed(order))):
            p = start(name)
            bench.wait_port(ports[name])
            wrk(ports[name])  # warm-up
            rps, non = wrk(ports[name])
            bench.stop(p)
            rows[name].append({"rps": rps, "non_2xx": non})
            bench.log(f"round {rnd} {name}: {rps:.0f} req/s")
    bench.stop_all()
    med = {name: statistics.median(r["rps"] for r in rs) for name, rs in rows.items()}
    summary = {
        "median_rps": med,
        "keyway_2_vs_1": med["keyway-2"] / med["keyway-1"],
        "nginx_2_vs_1": med["nginx-2"] / med["nginx-1"],
        "keyway_2_vs_nginx_2": med["keyway-2"] / med["nginx-2"],
        "rounds": rows,
        "versions": bench.versions(),
    }
    out = bench.BENCH / "results" / f"threads-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("rounds", "versions")}, indent=2))


if __name__ == "__main__":
    main()
