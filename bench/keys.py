#!/usr/bin/env python3
"""Key entries benchmark (issue 13): 1,000,000 plain keys against 1,000,000 keys of which
half are `keyHash` entries with metadata and an expiry, same layout as bench.py (Keyway on
CPU 0 with one worker, wrk and the upstream nginx on CPU 1, 127.0.0.1, no access log).

- req/s with a valid key (for the mixed set: a hashed key with metadata, its metadata sent
  upstream through `metadataHeaders`), BENCH_ROUNDS alternating rounds, medians;
- steady RSS per key over an empty gateway, and the peak (VmHWM).

Needs `cargo build --release -p keyway`. Prints a JSON summary and writes it to
bench/results/keys-<stamp>.json.
"""

import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

N = 1_000_000
PER_SECRET = 1000
RUN = bench.RUN
PORT = bench.PORTS["keyway"]


def key(i):
    return f"k-{i:08d}-{i * 7919 % 1000003:07d}"


def secrets(mixed):
    """N keys over Secrets of PER_SECRET entries, one document each (written one file per
    Secret, as kubernetes.py's standalone figures are); with `mixed`, every odd key a keyHash
    entry with metadata and an expiry far ahead."""
    docs = []
    for s in range(0, N, PER_SECRET):
        lines = []
        for i in range(s, s + PER_SECRET):
            if mixed and i % 2:
                digest = hashlib.sha256(key(i).encode()).hexdigest()
                value = ('{"keyHash": "sha256:%s", "expiresAt": "2099-01-01T00:00:00Z", '
                         '"metadata": {"tier": "gold", "org": "org-%d"}}' % (digest, i % 97))
                lines.append(f"  c{i}: '{value}'")
            else:
                lines.append(f"  c{i}: {key(i)}")
        docs.append(f"apiVersion: v1\nkind: Secret\nmetadata: {{name: keys-{s // PER_SECRET:05d}, "
                    f"labels: {{bench: keys}}}}\nstringData:\n" + "\n".join(lines) + "\n")
    return docs


def gateway(metadata):
    text = bench.render("keyway.yaml", PORT=PORT)
    if metadata:
        text = text.replace("secretSelector: {matchLabels: {bench: keys}}",
                            "secretSelector: {matchLabels: {bench: keys}}\n"
                            "    metadataHeaders: {tier: x-client-tier, org: x-org}")
    return text


def measure(name, docs, metadata, probe_key):
    d = RUN / f"keyway-{name}"
    d.mkdir()
    (d / "gateway.yaml").write_text(gateway(metadata))
    for i, doc in enumerate(docs or []):
        (d / f"keys-{i:05d}.yaml").write_text(doc)
    p = bench.start_keyway(d, PORT)
    bench.wait_port(bench.ADMIN)
    # Steady: as kubernetes.py, after the allocator has had 2 s to return what loading freed.
    time.sleep(2)
    rss = bench.status_kb(p.pid, "VmRSS")
    hwm = bench.status_kb(p.pid, "VmHWM")
    runs = []
    if probe_key:
        for _ in range(bench.ROUNDS):
            bench.wrk(PORT, probe_key, 2)
            runs.append(bench.wrk(PORT, probe_key, bench.DURATION))
    bench.stop(p)
    out = {"rss_kb": rss, "hwm_kb": hwm}
    if runs:
        out["rps"] = statistics.median(r["rps"] for r in runs)
        out["rps_runs"] = [r["rps"] for r in runs]
        out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    bench.log(f"{name}: {out}")
    return out


def main():
    (RUN / "upstream.conf").write_text(bench.render("upstream-nginx.conf"))
    bench.start("upstream", ["nginx", "-c", str(RUN / "upstream.conf"), "-p", str(RUN)], bench.LOAD_CPU,
                bench.UPSTREAM_PORT)
    empty = measure("empty", [], False, None)
    # Alternate the two sets over rounds (each a fresh process), medians of the medians.
    plain_runs, mixed_runs = [], []
    plain_docs, mixed_docs = secrets(False), secrets(True)
    for rnd in range(2):
        order = [("plain", plain_docs, False, key(N // 2), plain_runs),
                 ("mixed", mixed_docs, True, key(N // 2 + 1), mixed_runs)]
        if rnd % 2:
            order.reverse()
        for name, docs, metadata, probe, sink in order:
            sink.append(measure(f"{name}-r{rnd}", docs, metadata, probe))

    def per_key(runs, field):
        return statistics.median((r[field] - empty["rss_kb"]) * 1024 / N for r in runs)

    plain_rps = statistics.median(r["rps"] for r in plain_runs)
    mixed_rps = statistics.median(r["rps"] for r in mixed_runs)
    summary = {
        "keys": N,
        "plain": {"rps": plain_rps, "rss_bytes_per_key": per_key(plain_runs, "rss_kb"),
                  "peak_over_steady": statistics.median(r["hwm_kb"] / r["rss_kb"] for r in plain_runs)},
        "mixed": {"rps": mixed_rps, "rss_bytes_per_key": per_key(mixed_runs, "rss_kb"),
                  "peak_over_steady": statistics.median(r["hwm_kb"] / r["rss_kb"] for r in mixed_runs)},
        "mixed_vs_plain_rps": mixed_rps / plain_rps,
        "empty_rss_kb": empty["rss_kb"],
        "runs": {"plain": plain_runs, "mixed": mixed_runs},
        "versions": bench.versions(),
    }
    out = bench.BENCH / "results" / f"keys-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    bench.stop_all()
    print(json.dumps({k: summary[k] for k in ("plain", "mixed", "mixed_vs_plain_rps")}, indent=2))


if __name__ == "__main__":
    main()
