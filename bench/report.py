#!/usr/bin/env python3
"""Writes docs/benchmarks.md (and docs/benchmarks.png) from one bench.py results folder."""

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(folder):
    folder = Path(folder)
    r = json.loads((folder / "results.json").read_text())
    env, st = r["env"], r["settings"]
    out = []
    w = out.append
    w("# Benchmarks\n")
    w(f"Measured {env['date']} on {env['machine']} (kernel {env['kernel']}), by `./bench/run.sh`.")
    w(f"Raw output: [`bench/results/{folder.name}/`](../bench/results/{folder.name}/).\n")
    w("| | version |\n|---|---|")
    for k in ("keyway", "nginx", "haproxy", "envoy", "wrk"):
        w(f"| {k} | `{env[k]}` |")
    w("")
    w("**Layout.** Every proxy runs one worker pinned to CPU 0 (nginx `worker_processes 1`, HAProxy "
      "`nbthread 1`, Envoy `--concurrency 1`, Keyway `--threads 1`); the upstream (nginx, one worker, fixed "
      "`200 ok`) and the load generators are pinned to CPU 1. All traffic is on 127.0.0.1. Every proxy checks "
      "the same three keys in header `api-key` and answers 401 otherwise, forwards over keep-alive upstream "
      "connections, and writes no access log. wrk runs 1 thread and "
      f"{st['connections']} connections for {st['duration_s']} s per measurement; the fixed-rate latency comes from "
      f"`keyway-loadgen` (open loop, {st['rate']} req/s over 16 connections, latency measured from the intended send "
      "time). Targets are measured in "
      f"{st['rounds']} rounds whose order alternates; the tables show medians. Proxy CPU time per request is the "
      "proxy's utime+stime from `/proc` during the valid-key run divided by the requests served.\n")
    if "peers" in r:
        med = r["peers"]["median"]
        w("## Keyway and its peers\n")
        w(f"![chart](benchmarks.png)\n")
        w("| target | req/s valid key | p50 ms | p99 ms | req/s no key (401) | p50 ms @ fixed rate | p99 ms @ fixed rate | CPU µs/req | RSS MiB |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, m in med.items():
            w(f"| {name} | {m['rps']:,.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['nokey_rps']:,.0f} | "
              f"{m['fixed_p50_ms']:.2f} | {m['fixed_p99_ms']:.2f} | {m['cpu_us_per_req']:.1f} | {m['rss_mb']:.1f} |")
        k, n, e = med["keyway"], med["nginx"], med["envoy"]
        w("")
        w("| target (issue #5) | figure | met |")
        w("|---|---|---|")
        rows = [
            ("Keyway req/s ≥ 1.0× nginx", f"{k['rps'] / n['rps']:.2f}×", k["rps"] >= n["rps"]),
            ("Keyway req/s ≥ 4× Envoy", f"{k['rps'] / e['rps']:.2f}×", k["rps"] >= 4 * e["rps"]),
            ("Keyway CPU/request ≤ nginx", f"{k['cpu_us_per_req']:.1f} vs {n['cpu_us_per_req']:.1f} µs", k["cpu_us_per_req"] <= n["cpu_us_per_req"]),
            ("Keyway p99 at fixed rate ≤ nginx", f"{k['fixed_p99_ms']:.2f} vs {n['fixed_p99_ms']:.2f} ms", k["fixed_p99_ms"] <= n["fixed_p99_ms"]),
        ]
        if "scaling" in r:
            s = r["scaling"]
            big = s.get("1000000") or s.get(1000000)
            rows.append(("1M keys: req/s ≥ 0.95× of 1 key", f"{big['rps_vs_1_key']:.2f}×", big["rps_vs_1_key"] >= 0.95))
            rows.append(("1M keys: ≤ 128 B RSS per key", f"{big['rss_bytes_per_key']:.0f} B", big["rss_bytes_per_key"] <= 128))
        for name, fig, ok in rows:
            w(f"| {name} | {fig} | {'yes' if ok else '**no**'} |")
        w("")
        errors = {n: (m["non_2xx"], m["errors"], m["fixed_errors"]) for n, m in med.items()}
        w(f"Non-2xx / socket errors / fixed-rate failures in the valid-key runs (medians): {errors}.\n")
    if "scaling" in r:
        w("## Keyway key scaling\n")
        w("One Secret per 1,000 keys, all selected by one TrafficPolicy; the request presents a key from the middle.\n")
        w("| keys | req/s | vs 1 key | load ms | compile ms | RSS MiB | RSS bytes/key |")
        w("|---:|---:|---:|---:|---:|---:|---:|")
        for n, v in r["scaling"].items():
            per = "—" if v["rss_bytes_per_key"] is None else f"{v['rss_bytes_per_key']:.0f}"
            w(f"| {int(n):,} | {v['rps']:,.0f} | {v['rps_vs_1_key']:.2f} | {v['load_ms']:.0f} | {v['compile_ms']:.0f} | {v['rss_mb']:.1f} | {per} |")
        w("")
    if "reload" in r:
        rl = r["reload"]
        rv, ur, k100 = rl["revocation_ms"], rl["under_reload"], rl["keys_100k"]
        w("## Live configuration (issue #4)\n")
        w(f"- **Revocation latency**, {rv['rotations']} key rotations (new Secret file renamed over the old one, then the "
          f"old key polled until refused): median **{rv['median']:.1f} ms**, p90 {rv['p90']:.1f} ms, max **{rv['max']:.1f} ms** "
          "(targets: median ≤ 300 ms, max ≤ 1 s).")
        w(f"- **Under reloads**: wrk, 32 keep-alive connections for {ur['duration_s']} s while a Secret file changed every 100 ms "
          f"({ur['changes']} changes, {ur['reloads']} reloads applied): {ur['requests']:,} requests, {ur['rps']:,.0f} req/s, "
          f"p99 {ur['p99_ms']:.2f} ms, **{ur['non_2xx']} non-2xx, {ur['socket_errors']} socket errors**.")
        w(f"- **100,000 keys in 1,000 Secrets**: start-up load {k100['startup']['load_ms']:.0f} ms + compile "
          f"{k100['startup']['compile_ms']:.0f} ms; a change reloaded in load {k100['reload']['load_ms']:.0f} ms + compile "
          f"{k100['reload']['compile_ms']:.0f} ms + swap {k100['reload']['apply_ms']:.1f} ms, observed "
          f"{k100['file_write_to_applied_ms']:.0f} ms from the file write to the new generation (target ≤ 1 s); peak RSS "
          f"{k100['peak_rss_mb']:.0f} MiB; {k100['rps']:,.0f} req/s with 100,000 keys.")
        w("")
    notes = ROOT / "bench" / "NOTES.md"
    if notes.exists():
        w(notes.read_text())
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(out) + "\n")
    if (folder / "chart.png").exists():
        shutil.copy(folder / "chart.png", ROOT / "docs" / "benchmarks.png")


if __name__ == "__main__":
    main(sys.argv[1])
