#!/usr/bin/env python3
"""Two proxies side by side in short alternating rounds, for a noisy machine.

    KEYWAY_A=<binary> KEYWAY_B=<binary|nginx> ./bench/ab.py

Both run at once (one worker each, pinned to CPU 0; the upstream nginx and wrk on CPU 1;
127.0.0.1 only; a valid key), but only one is loaded at a time. AB_ROUNDS pairs of
AB_SECONDS-second wrk runs (default 12 x 4 s), the order flipping every pair; for each pair the
ratio B/A of requests per second. Slow drifts of the machine hit both sides of a pair alike, so
the median of the per-pair ratios is steadier than the ratio of medians (both are printed).
`nginx` as B is the API-key nginx of bench/peers/nginx-apikey.conf.
"""

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROUNDS = int(os.environ.get("AB_ROUNDS", "12"))
SECONDS = int(os.environ.get("AB_SECONDS", "4"))


def main():
    a_bin = os.environ.get("KEYWAY_A", str(bench.KEYWAY))
    b_bin = os.environ.get("KEYWAY_B", "nginx")
    run = bench.RUN
    (run / "upstream.conf").write_text(bench.render("upstream-nginx.conf"))
    bench.start("upstream", ["nginx", "-c", str(run / "upstream.conf"), "-p", str(run)], bench.LOAD_CPU,
                bench.UPSTREAM_PORT)
    keys = ("apiVersion: v1\nkind: Secret\nmetadata: {name: keys, labels: {bench: keys}}\nstringData:\n"
            + "".join(f"  client{i}: {k}\n" for i, k in enumerate(bench.KEYS, 1)))
    ports = {"A": 18091, "B": 18092}
    for side, binary in (("A", a_bin), ("B", b_bin)):
        port = ports[side]
        if binary == "nginx":
            (run / "b-nginx.conf").write_text(bench.render("nginx-apikey.conf", PORT=port))
            bench.start(side, ["nginx", "-c", str(run / "b-nginx.conf"), "-p", str(run)], bench.PROXY_CPU, port)
            continue
        d = run / side
        d.mkdir()
        (d / "gateway.yaml").write_text(bench.render("keyway.yaml", PORT=port))
        (d / "keys.yaml").write_text(keys)
        bench.start(side, [binary, "run", "--config", str(d), "--bind-address", "127.0.0.1", "--admin-address",
                           f"127.0.0.1:{port + 1000}", "--threads", "1", "--access-log", "false"],
                    bench.PROXY_CPU, port)
    try:
        rps = {"A": [], "B": []}
        ratios = []
        for r in range(ROUNDS):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            got = {s: bench.wrk(ports[s], bench.KEYS[0], SECONDS)["rps"] for s in order}
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
