#!/usr/bin/env python3
"""Keyway's benchmark suite: Keyway against nginx, HAProxy and Envoy's api_key_auth, all on
127.0.0.1, plus Keyway's key scaling and live-reload figures.

Layout on this 2-core machine: every proxy pinned to CPU 0 with one worker; the upstream
(nginx, one worker) and the load generators pinned to CPU 1. Targets are measured in
several rounds whose order alternates, and medians are reported.

Run through ./bench/run.sh, which installs what this needs. Settings (environment):
BENCH_DURATION seconds per measurement (10), BENCH_ROUNDS (3), BENCH_RATE fixed-rate
requests/s (2000), BENCH_CONNECTIONS for saturation (64), BENCH_SKIP comma list of
sections to skip (peers,scaling,reload).
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import http.client
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
KEYWAY = Path(os.environ.get("KEYWAY_BIN", ROOT / "target" / "release" / "keyway"))
LOADGEN = ROOT / "target" / "release" / "keyway-loadgen"
DURATION = int(os.environ.get("BENCH_DURATION", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
RATE = int(os.environ.get("BENCH_RATE", "2000"))
CONNS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
SKIP = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))
UPSTREAM_PORT = 18080
PORTS = {"nginx": 18081, "haproxy": 18082, "envoy": 18083, "keyway": 18084}
ADMIN = 19100
KEYS = ["bench-key-1-3f9a7c2e", "bench-key-2-b81d55e0", "bench-key-3-09ce4d7a"]
PROXY_CPU, LOAD_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

STAMP = time.strftime("%Y-%m-%d-%H%M%S")
RESULTS = BENCH / "results" / STAMP
RUN = Path(tempfile.mkdtemp(prefix="keyway-bench-"))
procs = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def render(template, **values):
    text = (BENCH / "peers" / template).read_text()
    values.setdefault("RUN", str(RUN))
    values.setdefault("UPSTREAM_PORT", UPSTREAM_PORT)
    for i, k in enumerate(KEYS, 1):
        values.setdefault(f"KEY{i}", k)
    for k, v in values.items():
        text = text.replace("{" + k + "}", str(v))
    return text


def wait_port(port, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def port_is_free(port):
    with socket.socket() as s:
        # As the servers bind: connections of an earlier run in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def start(name, cmd, cpu, port=None, env=None):
    # A leftover of an earlier run on the port would answer in this one's place: its
    # numbers would be measured, and the CPU time of a process that serves nothing.
    if port and not port_is_free(port):
        raise SystemExit(f"{name}: port {port} is already in use (a process left from an earlier run?)")
    out = open(RUN / f"{name}.log", "w")
    p = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
    procs.append(p)
    if port:
        wait_port(port)
    return p


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=15)
    except Exception:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except Exception:
            pass


def stop_all():
    """Stops every process `start` started (at the end of a benchmark)."""
    while procs:
        stop(procs.pop())


# Whatever ends the benchmark (an error, Ctrl-C, `timeout`'s SIGTERM), nothing it started
# is left running to take the next run's ports.
atexit.register(stop_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def tree(pid):
    """The process and its descendants (nginx master + worker)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            for c in (task / "children").read_text().split():
                out.extend(tree(int(c)))
        except OSError:
            pass
    return out


def cpu_split(pid):
    """User and system clock ticks of the process and its descendants so far."""
    user = system = 0
    for p in tree(pid):
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            user, system = user + int(f[11]), system + int(f[12])
        except OSError:
            pass
    return user, system


def cpu_ticks(pid):
    return sum(cpu_split(pid))


def status_kb(pid, field):
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def medians(rows):
    """Per target, the median of each figure over its rounds ({name: [row, ...]})."""
    return {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in rows.items()}


def to_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s)", v)
    x = float(m.group(1))
    return {"us": x / 1000, "ms": x, "s": x * 1000}[m.group(2)]


def wrk(port, key, duration, conns=CONNS, tag=None):
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency"]
    if key:
        cmd += ["-H", f"api-key: {key}"]
    cmd.append(f"http://127.0.0.1:{port}/")
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if tag:
        (RESULTS / f"wrk-{tag}.txt").write_text(text)
    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
           "requests": int(re.search(r"(\d+) requests in", text).group(1))}
    for q in ("50", "99"):
        res[f"p{q}_ms"] = to_ms(re.search(rf"\s{q}%\s+(\S+)", text).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    res["socket_errors"] = sum(map(int, m.groups())) if m else 0
    return res


def loadgen(port, key, rate, duration, conns=16):
    if not LOADGEN.exists():
        raise SystemExit(f"{LOADGEN} missing: cargo build --release -p keyway -p keyway-loadgen")
    cmd = ["taskset", "-c", LOAD_CPU, str(LOADGEN), "--url", f"http://127.0.0.1:{port}/", "--rate", str(rate),
           "--duration", f"{duration}s", "--connections", str(conns), "-H", f"api-key: {key}"]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def secret_docs(n_keys, per_secret=1000, prefix="k"):
    """n_keys keys spread over Secrets of per_secret entries, labelled bench=keys."""
    docs = []
    for s in range(0, n_keys, per_secret):
        entries = "\n".join(f"  c{i}: {prefix}-{i:08d}-{i * 7919 % 1000003:07d}" for i in range(s, min(n_keys, s + per_secret)))
        docs.append(f"---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys-{s // per_secret:05d}, labels: {{bench: keys}}}}\nstringData:\n{entries}\n")
    return "".join(docs)


def keys_secret():
    """The Secret of the three benchmark keys, as a manifest."""
    return ("apiVersion: v1\nkind: Secret\nmetadata: {name: keys, labels: {bench: keys}}\nstringData:\n"
            + "".join(f"  client{i}: {k}\n" for i, k in enumerate(KEYS, 1)))


def bench_key(i, prefix="k"):
    return f"{prefix}-{i:08d}-{i * 7919 % 1000003:07d}"


def start_keyway(config_dir, port, extra=(), binary=None, name="keyway", admin=ADMIN):
    cmd = [str(binary or KEYWAY), "run", "--config", str(config_dir), "--bind-address", "127.0.0.1",
           "--admin-address", f"127.0.0.1:{admin}", "--threads", "1", "--access-log", "false", *extra]
    env = dict(os.environ, RUST_LOG="warn")
    return start(name, cmd, PROXY_CPU, port, env)


def admin(path):
    c = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=30)
    c.request("GET", path)
    body = c.getresponse().read()
    c.close()
    return json.loads(body) if path != "/metrics" else body.decode()


def versions():
    def run(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except Exception as e:
            return f"unavailable ({e})"
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{cpu}, {os.cpu_count()} cores, {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB",
        "kernel": os.uname().release,
        "keyway": run([str(KEYWAY), "--version"]),
        "nginx": run(["nginx", "-v"]),
        "haproxy": run(["haproxy", "-v"]),
        "envoy": run(["envoy", "--version"]),
        "wrk": run(["wrk", "-v"]),
    }


# ------------------------------------------------------------------------------------------

def peers():
    """Saturation, fixed-rate latency, CPU per request and RSS of every target."""
    kw_dir = RUN / "keyway-peers"
    kw_dir.mkdir()
    (kw_dir / "gateway.yaml").write_text(render("keyway.yaml", PORT=PORTS["keyway"]))
    (kw_dir / "keys.yaml").write_text(keys_secret())
    for name in ("nginx", "haproxy"):
        (RUN / f"{name}.conf").write_text(render("nginx-apikey.conf" if name == "nginx" else "haproxy.cfg", PORT=PORTS[name]))
    (RUN / "envoy.yaml").write_text(render("envoy.yaml", PORT=PORTS["envoy"]))
    targets = {
        "nginx": lambda: start("nginx", ["nginx", "-c", str(RUN / "nginx.conf"), "-p", str(RUN)], PROXY_CPU, PORTS["nginx"]),
        "haproxy": lambda: start("haproxy", ["haproxy", "-f", str(RUN / "haproxy.conf")], PROXY_CPU, PORTS["haproxy"]),
        "envoy": lambda: start("envoy", ["envoy", "-c", str(RUN / "envoy.yaml"), "--concurrency", "1", "--log-level", "warn",
                                          "--base-id", "7"], PROXY_CPU, PORTS["envoy"]),
        "keyway": lambda: start_keyway(kw_dir, PORTS["keyway"]),
    }
    running = {name: f() for name, f in targets.items()}
    order = list(targets)
    rows = {name: [] for name in order}
    for rnd in range(ROUNDS):
        seq = order if rnd % 2 == 0 else list(reversed(order))
        for name in seq:
            port, pid = PORTS[name], running[name].pid
            wrk(port, KEYS[0], 2)  # warm up connections and caches
            t0 = cpu_ticks(pid)
            valid = wrk(port, KEYS[0], DURATION, tag=f"{name}-valid-r{rnd}")
            ticks = cpu_ticks(pid) - t0
            nokey = wrk(port, None, DURATION, tag=f"{name}-nokey-r{rnd}")
            fixed = loadgen(port, KEYS[1], RATE, DURATION)
            row = {
                "rps": valid["rps"], "p50_ms": valid["p50_ms"], "p99_ms": valid["p99_ms"],
                "non_2xx": valid["non_2xx"], "errors": valid["socket_errors"],
                "nokey_rps": nokey["rps"], "nokey_non_2xx": nokey["non_2xx"],
                "cpu_us_per_req": ticks / CLK_TCK * 1e6 / max(valid["requests"], 1),
                "fixed_p50_ms": fixed["latency_ms"]["p50"], "fixed_p99_ms": fixed["latency_ms"]["p99"],
                "fixed_ok": fixed["ok"], "fixed_errors": fixed["errors"] + fixed["non_2xx"],
                "rss_mb": status_kb(pid, "VmRSS") / 1024,
            }
            rows[name].append(row)
            log(f"round {rnd} {name}: {row['rps']:.0f} req/s p99 {row['p99_ms']:.2f} ms, "
                f"{row['cpu_us_per_req']:.1f} us CPU/req, fixed p99 {row['fixed_p99_ms']:.2f} ms")
    for p in running.values():
        stop(p)
    med = medians(rows)
    return {"rounds": rows, "median": med}


def scaling():
    """Keyway with 1, 10,000 and 1,000,000 keys: throughput, RSS per key, compile time."""
    out = {}
    base_rss = None
    for n in (1, 10_000, 1_000_000):
        d = RUN / f"keyway-{n}"
        d.mkdir()
        (d / "gateway.yaml").write_text(render("keyway.yaml", PORT=PORTS["keyway"]))
        (d / "keys.yaml").write_text(secret_docs(n))
        p = start_keyway(d, PORTS["keyway"])
        wait_port(ADMIN)
        timings = admin("/config_dump")["timings"]
        rss0 = status_kb(p.pid, "VmRSS")
        key = bench_key(n // 2)
        runs = []
        for r in range(max(ROUNDS, 2)):
            wrk(PORTS["keyway"], key, 2)
            runs.append(wrk(PORTS["keyway"], key, DURATION, tag=f"keyway-{n}-keys-r{r}"))
        rss = status_kb(p.pid, "VmRSS")
        stop(p)
        if base_rss is None:
            base_rss = rss
        out[n] = {
            "rps": statistics.median(r["rps"] for r in runs),
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "load_ms": timings["load_ms"], "compile_ms": timings["compile_ms"],
            "rss_mb": rss / 1024, "rss_idle_mb": rss0 / 1024,
            "rss_bytes_per_key": (rss - base_rss) * 1024 / n if n > 1 else None,
        }
        log(f"{n} keys: {out[n]['rps']:.0f} req/s, compile {timings['compile_ms']:.0f} ms, RSS {rss / 1024:.1f} MiB")
    for n in out:
        out[n]["rps_vs_1_key"] = out[n]["rps"] / out[1]["rps"]
    return out


def reload_figures():
    """Issue 4: revocation latency, requests under constant reloads, 100k keys in 1000 Secrets."""
    res = {}
    d = RUN / "keyway-reload"
    d.mkdir()
    (d / "gateway.yaml").write_text(render("keyway.yaml", PORT=PORTS["keyway"]))
    keys_file = d / "keys.yaml"
    keys_file.write_text(secret_docs(1000, prefix="r"))
    p = start_keyway(d, PORTS["keyway"])
    wait_port(ADMIN)

    # Revocation: rotate one client's key 50 times; time from the file being written (closed)
    # until the old key is refused.
    conn = http.client.HTTPConnection("127.0.0.1", PORTS["keyway"])

    def status(key):
        conn.request("GET", "/", headers={"api-key": key})
        r = conn.getresponse()
        r.read()
        return r.status
    lat = []
    for i in range(50):
        old = bench_key(i, prefix="r")
        assert status(old) == 200, f"key {i} should work before its rotation"
        text = keys_file.read_text().replace(f"c{i}: {old}", f"c{i}: rotated-{i}-{time.time_ns()}")
        tmp = d / ".keys.yaml.tmp"
        tmp.write_text(text)
        os.rename(tmp, keys_file)
        t0 = time.perf_counter()
        while status(old) != 401:
            if time.perf_counter() - t0 > 5:
                raise RuntimeError("revocation took more than 5 s")
        lat.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    res["revocation_ms"] = {"rotations": len(lat), "median": statistics.median(lat), "max": max(lat),
                            "p90": sorted(lat)[int(len(lat) * 0.9)], "all": lat}
    log(f"revocation: median {res['revocation_ms']['median']:.1f} ms, max {res['revocation_ms']['max']:.1f} ms")

    # Steady load (32 keep-alive connections) with a config change every 100 ms.
    key = bench_key(500, prefix="r")
    gen0 = admin("/config_dump")["generation"]
    loader = subprocess.Popen(["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c32", f"-d{max(DURATION, 30)}s", "--latency",
                               "-H", f"api-key: {key}", f"http://127.0.0.1:{PORTS['keyway']}/"],
                              stdout=subprocess.PIPE, text=True)
    base = keys_file.read_text()
    i = 0
    while loader.poll() is None:
        keys_file.write_text(base + f"---\napiVersion: v1\nkind: Secret\nmetadata: {{name: churn, labels: {{bench: keys}}}}\nstringData: {{churn: churn-{i}}}\n")
        i += 1
        time.sleep(0.1)
    text = loader.stdout.read()
    (RESULTS / "wrk-reload-under-load.txt").write_text(text)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    s = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    res["under_reload"] = {
        "duration_s": max(DURATION, 30), "changes": i,
        "reloads": admin("/config_dump")["generation"] - gen0,
        "requests": int(re.search(r"(\d+) requests in", text).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "non_2xx": int(m.group(1)) if m else 0,
        "socket_errors": sum(map(int, s.groups())) if s else 0,
        "p99_ms": to_ms(re.search(r"\s99%\s+(\S+)", text).group(1)),
    }
    log(f"under reload: {res['under_reload']}")
    stop(p)

    # 100,000 keys in 1,000 Secrets: time to compile and swap a change, peak memory.
    d = RUN / "keyway-100k"
    d.mkdir()
    (d / "gateway.yaml").write_text(render("keyway.yaml", PORT=PORTS["keyway"]))
    (d / "keys.yaml").write_text(secret_docs(100_000, per_secret=100, prefix="s"))
    p = start_keyway(d, PORTS["keyway"])
    wait_port(ADMIN)
    first = admin("/config_dump")["timings"]
    gen = admin("/config_dump")["generation"]
    t0 = time.perf_counter()
    (d / "extra.yaml").write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: extra, labels: {bench: keys}}\nstringData: {x: extra-key}\n")
    while admin("/config_dump")["generation"] == gen:
        time.sleep(0.005)
    observed = (time.perf_counter() - t0) * 1000
    again = admin("/config_dump")["timings"]
    rps_100k = statistics.median(wrk(PORTS["keyway"], bench_key(50_000, prefix="s"), DURATION)["rps"] for _ in range(2))
    res["keys_100k"] = {
        "startup": first, "reload": again, "file_write_to_applied_ms": observed,
        "peak_rss_mb": status_kb(p.pid, "VmHWM") / 1024, "rss_mb": status_kb(p.pid, "VmRSS") / 1024,
        "rps": rps_100k,
    }
    log(f"100k keys: {res['keys_100k']}")
    stop(p)
    return res


def chart(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no chart")
        return False
    med = results["peers"]["median"]
    names = list(med)
    colors = ["#999999" if n != "keyway" else "#2a7ab0" for n in names]
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    for a, key, title in zip(ax, ["rps", "cpu_us_per_req", "fixed_p99_ms"],
                             ["req/s at saturation (valid key)", "proxy CPU per request (µs)", f"p99 at {RATE} req/s (ms)"]):
        vals = [med[n][key] for n in names]
        a.bar(names, vals, color=colors)
        a.set_title(title)
        for i, v in enumerate(vals):
            a.text(i, v, f"{v:.0f}" if v >= 100 else f"{v:.2f}", ha="center", va="bottom", fontsize=8)
    fig.suptitle(f"Keyway vs peers, one core each, median of {ROUNDS} rounds ({time.strftime('%Y-%m-%d')})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {"env": versions(), "settings": {"duration_s": DURATION, "rounds": ROUNDS, "rate": RATE, "connections": CONNS}}
    (RUN / "upstream.conf").write_text(render("upstream-nginx.conf"))
    start("upstream", ["nginx", "-c", str(RUN / "upstream.conf"), "-p", str(RUN)], LOAD_CPU, UPSTREAM_PORT)
    try:
        if "peers" not in SKIP:
            results["peers"] = peers()
        if "scaling" not in SKIP:
            results["scaling"] = scaling()
        if "reload" not in SKIP:
            results["reload"] = reload_figures()
    finally:
        stop_all()
        (RESULTS / "results.json").write_text(json.dumps(results, indent=2))
        for f in RUN.glob("*.log"):
            shutil.copy(f, RESULTS / f.name)
    if "peers" in results:
        chart(results, RESULTS / "chart.png")
    print(RESULTS)


if __name__ == "__main__":
    main()
