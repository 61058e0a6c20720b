#!/usr/bin/env python3
"""CPU per request of Keyway and nginx against the floor, and the floor over io_uring (issue 14).

    ./bench/floor.py

The floor (bench/floor, built here) is the least a keep-alive HTTP/1 proxy can do for a
request: read the head, check the key, write it upstream unchanged, read the response, write
it back; four socket calls and nothing else. It runs twice, over epoll (the calls Keyway and
nginx make) and over io_uring set up as its authors advise (registered descriptors, one
issuer, deferred completion work, one submission per loop). Two questions:

- How far above the floor are Keyway and nginx? That is all user-space work could still
  gain: the rest is the kernel's TCP work for four calls, the same for every proxy.
- Would io_uring gain anything? The two floors differ only in the I/O model.

All four proxies run at once, one worker each on CPU 0 (Keyway `--threads 1`, no access
log); the upstream nginx and the load on CPU 1; a valid key; 127.0.0.1 only. Each round
loads each proxy in turn, the order flipping every round: saturated (wrk, 64 connections,
FLOOR_SECONDS, default 4) and at each fixed rate of FLOOR_RATES (default 20000,40000;
keyway-loadgen, 64 connections). The figure is the proxy's CPU time (user + system, from
/proc) divided by the requests it answered. At a fixed rate every proxy meets the same
arrivals, so that figure compares work done; saturated, both CPUs are busy and the load
generator's share shapes it too. FLOOR_ROUNDS (default 5) rounds; the medians, and the median
over rounds of each proxy's figure over Keyway's in the same round (and the io_uring floor's
over the epoll floor's), written to bench/results/floor-<stamp>.json. Needs
`cargo build --release -p keyway -p keyway-loadgen` and a kernel with io_uring (6.1+).
KEYWAY_BIN names the Keyway binary; FLOOR_KEYWAY_B adds a second one ("keyway-b") to the
same rounds, e.g. target/pgo/keyway from bench/pgo.sh.
"""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROUNDS = int(os.environ.get("FLOOR_ROUNDS", "5"))
SECONDS = int(os.environ.get("FLOOR_SECONDS", "4"))
RATES = [int(r) for r in os.environ.get("FLOOR_RATES", "20000,40000").split(",") if r]
FLOOR = bench.BENCH / "floor"
RUN = bench.RUN
PORTS = {"keyway": bench.PORTS["keyway"], "nginx": bench.PORTS["nginx"], "floor-epoll": 18085,
         "floor-uring": 18086}
# A second Keyway binary to measure in the same rounds (a PGO build from bench/pgo.sh, a branch).
KEYWAY_B = os.environ.get("FLOOR_KEYWAY_B")
if KEYWAY_B:
    PORTS["keyway-b"] = 18087


def start_all():
    subprocess.run(["cargo", "build", "--release", "-q", "--manifest-path", str(FLOOR / "Cargo.toml")],
                   check=True)
    (RUN / "upstream.conf").write_text(bench.render("upstream-nginx.conf"))
    bench.start("upstream", ["nginx", "-c", str(RUN / "upstream.conf"), "-p", str(RUN)], bench.LOAD_CPU,
                bench.UPSTREAM_PORT)
    kw = RUN / "keyway"
    kw.mkdir()
    (kw / "gateway.yaml").write_text(bench.render("keyway.yaml", PORT=PORTS["keyway"]))
    (kw / "keys.yaml").write_text(bench.keys_secret())
    pids = {"keyway": bench.start_keyway(kw, PORTS["keyway"]).pid}
    if KEYWAY_B:
        kb = RUN / "keyway-b"
        kb.mkdir()
        (kb / "gateway.yaml").write_text(bench.render("keyway.yaml", PORT=PORTS["keyway-b"]))
        (kb / "keys.yaml").write_text(bench.keys_secret())
        pids["keyway-b"] = bench.start_keyway(kb, PORTS["keyway-b"], binary=KEYWAY_B, name="keyway-b",
                                              admin=bench.ADMIN + 1).pid
    (RUN / "nginx.conf").write_text(bench.render("nginx-apikey.conf", PORT=PORTS["nginx"]))
    pids["nginx"] = bench.start("nginx", ["nginx", "-c", str(RUN / "nginx.conf"), "-p", str(RUN)],
                                bench.PROXY_CPU, PORTS["nginx"]).pid
    for mode in ("epoll", "uring"):
        name = f"floor-{mode}"
        cmd = [str(FLOOR / "target" / "release" / "keyway-floor"), mode, str(PORTS[name]),
               str(bench.UPSTREAM_PORT), bench.KEYS[0]]
        pids[name] = bench.start(name, cmd, bench.PROXY_CPU, PORTS[name]).pid
    return pids


def per_round(rows, base):
    """The median over rounds of one proxy's CPU per request over another's."""
    return statistics.median(r["us_per_request"] / b["us_per_request"] for r, b in zip(rows, base))


def measure(name, pid, load):
    before = bench.cpu_split(pid)
    if load == "saturated":
        out = bench.wrk(PORTS[name], bench.KEYS[0], SECONDS)
        requests, failed = out["requests"], out["non_2xx"] + out["socket_errors"]
    else:
        out = bench.loadgen(PORTS[name], bench.KEYS[0], load, SECONDS, conns=64)
        requests, failed = out["ok"], out["errors"] + out["non_2xx"]
    after = bench.cpu_split(pid)
    user, system = after[0] - before[0], after[1] - before[1]
    assert requests > 0 and failed == 0, (name, load, out)
    return {"us_per_request": (user + system) * 1e6 / bench.CLK_TCK / requests,
            "user_share": user / max(user + system, 1), "rps": requests / SECONDS}


def main():
    pids = start_all()
    loads = ["saturated", *RATES]
    rows = {str(load): {name: [] for name in PORTS} for load in loads}
    try:
        for rnd in range(ROUNDS):
            order = list(PORTS) if rnd % 2 == 0 else list(reversed(PORTS))
            for load in loads:
                for name in order:
                    row = measure(name, pids[name], load)
                    rows[str(load)][name].append(row)
                    bench.log(f"round {rnd} {load} {name}: {row['us_per_request']:.2f} us CPU/request, "
                              f"{row['rps']:.0f} req/s, user {100 * row['user_share']:.0f}%")
    finally:
        bench.stop_all()
    summary = {}
    for load, by_name in rows.items():
        med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in by_name.items()}
        # Per round, against Keyway in the same round: the machine's drift hits both alike.
        for name in med:
            med[name]["vs_keyway"] = per_round(by_name[name], by_name["keyway"])
        med["floor-uring"]["vs_floor_epoll"] = per_round(by_name["floor-uring"], by_name["floor-epoll"])
        summary[load] = med
    result = {"medians": summary, "rounds": rows,
              "settings": {"rounds": ROUNDS, "seconds": SECONDS, "rates": RATES, "connections": 64,
                           "keyway": str(bench.KEYWAY), "keyway_b": KEYWAY_B},
              "versions": bench.versions()}
    out = bench.BENCH / "results" / f"floor-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"{'load':>10} {'proxy':>12} {'us CPU/req':>11} {'x Keyway':>9} {'user':>5} {'req/s':>8}")
    for load, med in summary.items():
        for name, m in med.items():
            print(f"{load:>10} {name:>12} {m['us_per_request']:11.2f} {m['vs_keyway']:9.3f} "
                  f"{100 * m['user_share']:4.0f}% {m['rps']:8.0f}")
        print(f"{load:>10} io_uring floor / epoll floor: {med['floor-uring']['vs_floor_epoll']:.3f}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
