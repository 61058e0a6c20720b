#!/usr/bin/env python3
"""Two proxies side by side in short alternating rounds, for a noisy machine.

    KEYWAY_A=<binary> KEYWAY_B=<binary|nginx> ./bench/ab.py

Both run at once (one worker each, pinned to CPU 0; the upstream nginx and wrk on CPU 1;
127.0.0.1 only; a valid key), but only one is loaded at a time. AB_ROUNDS pairs of
AB_SECONDS-second wrk runs (default 12 x 4 s), the order flipping every pair; for each pair the
ratio B/A of requests per second. Slow drifts of the machine hit both sides of a pair alike, so
the median of the per-pair ratios is steadier than the ratio of medians (both are printed).
`nginx` as B is the API-key nginx of bench/peers/nginx-apikey.conf. AB_LOG=1 turns access
logs on for both, as bench/headline.py's logged targets have them (Keyway's default log with
RUST_LOG=info, to a file; nginx `combined buffer=64k flush=1s`). AB_LOAD=h2 loads with h2load
instead (HTTP/2 by prior knowledge, 16 connections x 8 streams), AB_LOAD=post with wrk sending a
1 KiB POST body (hyper's side of Keyway: a body, streamed upstream).
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROUNDS = int(os.environ.get("AB_ROUNDS", "12"))
SECONDS = int(os.environ.get("AB_SECONDS", "4"))
LOGGED = os.environ.get("AB_LOG", "") not in ("", "0")
LOAD = os.environ.get("AB_LOAD", "get")


def h2load(port, key, seconds):
    cmd = ["taskset", "-c", bench.LOAD_CPU, "h2load", "-D", str(seconds), "-c", "16", "-m", "8", "-t", "1",
           "-H", f"api-key: {key}", f"http://127.0.0.1:{port}/"]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    ok = int(re.search(r"(\d+) succeeded", text).group(1))
    assert ok > 0, text
    return {"rps": float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))}


POST_LUA = """wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["content-type"] = "application/octet-stream"
"""


def post(port, key, seconds):
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(POST_LUA)
    cmd = ["taskset", "-c", bench.LOAD_CPU, "wrk", "-t1", f"-c{bench.CONNS}", f"-d{seconds}s", "-s", f.name,
           "-H", f"api-key: {key}", f"http://127.0.0.1:{port}/"]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "Non-2xx" not in text, text
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}


def load(port, key, seconds):
    return {"get": bench.wrk, "h2": h2load, "post": post}[LOAD](port, key, seconds)


def main():
    a_bin = os.environ.get("KEYWAY_A", str(bench.KEYWAY))
    b_bin = os.environ.get("KEYWAY_B", "nginx")
    run = bench.RUN
    (run / "upstream.conf").write_text(bench.render("upstream-nginx.conf"))
    bench.start("upstream", ["nginx", "-c", str(run / "upstream.conf"), "-p", str(run)], bench.LOAD_CPU,
                bench.UPSTREAM_PORT)
    keys = bench.keys_secret()
    ports = {"A": 18091, "B": 18092}
    for side, binary in (("A", a_bin), ("B", b_bin)):
        port = ports[side]
        if binary == "nginx":
            conf = bench.render("nginx-apikey.conf", PORT=port)
            if LOGGED:
                conf = conf.replace("    access_log off;",
                                    f"    access_log {run}/nginx-access.log combined buffer=64k flush=1s;")
            (run / "b-nginx.conf").write_text(conf)
            bench.start(side, ["nginx", "-c", str(run / "b-nginx.conf"), "-p", str(run)], bench.PROXY_CPU, port)
            continue
        d = run / side
        d.mkdir()
        (d / "gateway.yaml").write_text(bench.render("keyway.yaml", PORT=port))
        (d / "keys.yaml").write_text(keys)
        bench.start(side, [binary, "run", "--config", str(d), "--bind-address", "127.0.0.1", "--admin-address",
                           f"127.0.0.1:{port + 1000}", "--threads", "1", "--access-log",
                           "true" if LOGGED else "false"],
                    bench.PROXY_CPU, port, dict(os.environ, RUST_LOG="info" if LOGGED else "warn"))
    try:
        rps = {"A": [], "B": []}
        ratios = []
        for r in range(ROUNDS):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            got = {s: load(ports[s], bench.KEYS[0], SECONDS)["rps"] for s in order}
            for s in got:
                rps[s].append(got[s])
            ratios.append(got["B"] / got["A"])
            bench.log(f"round {r}: A {got['A']:.0f}, B {got['B']:.0f} req/s, B/A {ratios[-1]:.3f}")
        med = {s: statistics.median(v) for s, v in rps.items()}
        print(f"A = {a_bin}\nB = {b_bin}")
        print(f"median req/s: A {med['A']:.0f}, B {med['B']:.0f}; ratio of medians B/A {med['B'] / med['A']:.3f}")
        print(f"median of per-round ratios B/A {statistics.median(ratios):.3f} "
              f"(B ahead in {sum(x > 1 for x in ratios)} of {len(ratios)} rounds)")
    finally:
        bench.stop_all()


if __name__ == "__main__":
    main()
