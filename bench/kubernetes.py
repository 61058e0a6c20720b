#!/usr/bin/env python3
"""Kubernetes mode's benchmark (issue 10), all on 127.0.0.1:

1. Revocation latency across 3 replicas: a key replaced in a Secret through the fake API
   server's REST API (PUT, as kubectl does), every replica polled until the old key is
   refused; BENCH_ROTATIONS rotations (50).
2. 1,000,000 keys in 1,000 Secrets: initial sync time (start to /readyz 200) and memory
   (steady RSS, peak VmHWM) in Kubernetes mode and standalone with the same objects (one
   file per Secret), and over an empty gateway.
3. One-Secret change at 1M keys, both modes: time from the write to the old key refused
   (BENCH_CHANGES changes, 20).

Needs `cargo build --release -p keyway -p keyway-loadgen`. Prints a JSON summary and writes
it to bench/results/kubernetes-<stamp>.json.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYWAY = ROOT / "target" / "release" / "keyway"
FAKEAPI = ROOT / "target" / "release" / "fakeapi"
ROTATIONS = int(os.environ.get("BENCH_ROTATIONS", "50"))
CHANGES = int(os.environ.get("BENCH_CHANGES", "20"))
N_SECRETS = int(os.environ.get("BENCH_SECRETS", "1000"))
PER_SECRET = int(os.environ.get("BENCH_PER_SECRET", "1000"))
LISTENER = 18090
RUN = Path(tempfile.mkdtemp(prefix="keyway-kube-bench-"))
procs = []


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def start(cmd, env=None, stdout=subprocess.DEVNULL):
    p = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=stdout, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    return p


def addr_from_logs(p, message, port_hint=None, timeout=600):
    """Reads p's stderr until a line with `message` (and `port=port_hint`) gives addr=."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = p.stderr.readline()
        if not line:
            raise SystemExit(f"process ended before logging {message!r}")
        if message in line and (port_hint is None or f"port={port_hint}" in line) and "addr=" in line:
            a = line.split("addr=")[1].split()[0]
            host, port = a.rsplit(":", 1)
            return host, int(port)
    raise SystemExit(f"no {message!r} within {timeout}s")


def drain(p):
    threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()


def get(addr, path, key=None, timeout=2):
    c = http.client.HTTPConnection(*addr, timeout=timeout)
    try:
        c.request("GET", path, headers={"api-key": key} if key else {})
        r = c.getresponse()
        r.read()
        return r.status
    except OSError:
        return 0
    finally:
        c.close()


def mem(pid):
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def base_docs(upstream_port):
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: keyway}}
spec: {{controllerName: keyway.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: apps}}
spec:
  gatewayClassName: keyway
  listeners: [{{name: http, port: {LISTENER}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: apps}}
spec:
  parentRefs: [{{name: gw}}]
  rules: [{{backendRefs: [{{name: app, port: 80}}]}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: keys, namespace: apps}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]
  apiKeyAuth: {{secretSelector: {{matchLabels: {{bench: keys}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: apps}}
spec: {{ports: [{{name: http, port: 80, targetPort: {upstream_port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: app-1, namespace: apps, labels: {{kubernetes.io/service-name: app}}}}
addressType: IPv4
ports: [{{name: http, port: {upstream_port}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
"""


def key(s, i, gen=0):
    return f"key-{s:05d}-{i:05d}-{gen}"


def secret_doc(s, per, gen=0, rotated=None):
    entries = "\n".join(
        f"  c{s}-{i}: {key(s, i, gen if i == rotated else 0)}" for i in range(per)
    )
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: keys-{s:05d}, namespace: apps, labels: {{bench: keys}}}}\nstringData:\n{entries}\n"


def secret_json(s, per, gen, rotated):
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": f"keys-{s:05d}", "namespace": "apps", "labels": {"bench": "keys"}},
        "stringData": {f"c{s}-{i}": key(s, i, gen if i == rotated else 0) for i in range(per)},
    }


def put_secret(api, obj):
    c = http.client.HTTPConnection(*api, timeout=30)
    body = json.dumps(obj)
    c.request("PUT", f"/api/v1/namespaces/apps/secrets/{obj['metadata']['name']}", body=body,
              headers={"content-type": "application/json"})
    r = c.getresponse()
    r.read()
    c.close()
    assert r.status in (200, 201), r.status


def fakeapi(files, tokens):
    cfg = RUN / f"kubeconfigs-{time.time_ns()}"
    cfg.mkdir()
    p = start([str(FAKEAPI), "--kubeconfig-dir", str(cfg), *sum((["--token", t] for t in tokens), []), *map(str, files)],
              stdout=subprocess.PIPE)
    line = p.stdout.readline().split()
    assert line and line[0] == "ready", line
    host, port = line[1].rsplit(":", 1)
    drain(p)
    return (host, int(port)), cfg


def keyway_kube(cfg, token, admin_port):
    t0 = time.time()
    p = start([str(KEYWAY), "run", "--kubernetes", "--bind-address", "127.0.0.1", "--admin-address",
               f"127.0.0.1:{admin_port}", "--port-map", f"{LISTENER}=0", "--access-log", "false"],
              env={"KUBECONFIG": str(cfg / f"kubeconfig-{token}"), "RUST_LOG": "info"})
    gw = addr_from_logs(p, "listening", LISTENER)
    drain(p)
    wait_ready(admin_port)
    return p, gw, time.time() - t0


def keyway_files(config_dir, admin_port):
    t0 = time.time()
    p = start([str(KEYWAY), "run", "--config", str(config_dir), "--bind-address", "127.0.0.1", "--admin-address",
               f"127.0.0.1:{admin_port}", "--port-map", f"{LISTENER}=0", "--access-log", "false"])
    gw = addr_from_logs(p, "listening", LISTENER)
    drain(p)
    wait_ready(admin_port)
    return p, gw, time.time() - t0


def wait_ready(admin_port):
    for _ in range(6000):
        if get(("127.0.0.1", admin_port), "/readyz") == 200:
            return
        time.sleep(0.05)
    raise SystemExit("never ready")


def until_refused(gw, old, timeout=5.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if get(gw, "/", old) == 401:
            return time.time() - t0
        time.sleep(0.002)
    return None


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()


def summary(xs):
    xs = [x * 1000 for x in xs if x is not None]
    return {"n": len(xs), "median_ms": round(statistics.median(xs), 1), "max_ms": round(max(xs), 1)} if xs else None


def revocation_across_replicas(upstream_port):
    d = RUN / "revocation"
    d.mkdir()
    (d / "base.yaml").write_text(base_docs(upstream_port) + "---\n" + secret_doc(0, 10))
    api, cfg = fakeapi([d / "base.yaml"], ["r1", "r2", "r3"])
    replicas = [keyway_kube(cfg, t, 19200 + i) for i, t in enumerate(["r1", "r2", "r3"])]
    gws = [g for _, g, _ in replicas]
    current = {i: key(0, i, 0) for i in range(10)}
    lat = []
    for gen in range(1, ROTATIONS + 1):
        i = gen % 10
        old = current[i]
        for g in gws:
            assert get(g, "/", old) == 200, f"rotation {gen}: the current key is refused"
        current[i] = key(0, i, gen)
        put_secret(api, {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "keys-00000", "namespace": "apps", "labels": {"bench": "keys"}},
            "stringData": {f"c0-{j}": current[j] for j in range(10)},
        })
        t0 = time.time()
        results = [None] * 3

        def poll(j):
            while time.time() - t0 < 5:
                if get(gws[j], "/", old) == 401:
                    results[j] = time.time() - t0
                    return
                time.sleep(0.002)

        ts = [threading.Thread(target=poll, args=(j,)) for j in range(3)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        lat.extend(results)
    for p, _, _ in replicas:
        stop(p)
    return {"rotations": ROTATIONS, "replicas": 3, "latency": summary(lat), "failed": sum(1 for x in lat if x is None)}


def scale(upstream_port):
    d = RUN / "scale"
    (d / "files").mkdir(parents=True)
    (d / "empty").mkdir()
    base = base_docs(upstream_port)
    (d / "files" / "base.yaml").write_text(base)
    (d / "empty" / "base.yaml").write_text(base + "---\n" + secret_doc(0, 1))
    for s in range(N_SECRETS):
        (d / "files" / f"keys-{s:05d}.yaml").write_text(secret_doc(s, PER_SECRET))
    n_keys = N_SECRETS * PER_SECRET
    out = {"keys": n_keys, "secrets": N_SECRETS}

    p, gw, t = keyway_files(d / "empty", 19210)
    time.sleep(2)
    out["empty"] = mem(p.pid)
    stop(p)

    # Standalone.
    p, gw, t = keyway_files(d / "files", 19211)
    time.sleep(2)
    m = mem(p.pid)
    out["standalone"] = {"start_to_ready_s": round(t, 2), **m}
    lat = []
    for c in range(CHANGES):
        s = (c * 37) % N_SECRETS
        old = key(s, 5, 0)
        assert get(gw, "/", old) == 200
        tmp = d / "files" / f".tmp-{s}"
        tmp.write_text(secret_doc(s, PER_SECRET, gen=c + 1, rotated=5))
        t0 = time.time()
        os.rename(tmp, d / "files" / f"keys-{s:05d}.yaml")
        r = until_refused(gw, old)
        lat.append(r)
        assert get(gw, "/", key(s, 5, c + 1)) == 200
    out["standalone"]["one_secret_change"] = summary(lat)
    out["standalone"]["after_changes"] = mem(p.pid)
    stop(p)

    # Kubernetes mode, same objects.
    files = sorted((d / "files").glob("*.yaml"))
    api, cfg = fakeapi(files, ["k1"])
    p, gw, t = keyway_kube(cfg, "k1", 19212)
    time.sleep(2)
    out["kubernetes"] = {"start_to_ready_s": round(t, 2), **mem(p.pid)}
    lat = []
    for c in range(CHANGES):
        s = (c * 37 + 11) % N_SECRETS
        old = key(s, 5, 0)
        assert get(gw, "/", old) == 200
        put_secret(api, secret_json(s, PER_SECRET, c + 1, 5))
        lat.append(until_refused(gw, old))
        assert get(gw, "/", key(s, 5, c + 1)) == 200
    out["kubernetes"]["one_secret_change"] = summary(lat)
    out["kubernetes"]["after_changes"] = mem(p.pid)
    stop(p)
    empty = out["empty"]["VmRSS"]
    for mode in ("standalone", "kubernetes"):
        out[mode]["rss_bytes_per_key"] = round((out[mode]["VmRSS"] - empty) / n_keys, 1)
        out[mode]["peak_over_steady"] = round(out[mode]["after_changes"]["VmHWM"] / out[mode]["VmRSS"], 2)
    out["kubernetes_rss_over_standalone"] = round(out["kubernetes"]["VmRSS"] / out["standalone"]["VmRSS"], 2)
    return out


def main():
    for b in (KEYWAY, FAKEAPI):
        if not b.exists():
            raise SystemExit(f"{b} missing: cargo build --release -p keyway -p keyway-loadgen")
    up = start([str(KEYWAY), "echo-server", "--listen", "127.0.0.1:0"])
    host, port = addr_from_logs(up, "echo server listening")
    drain(up)
    results = {}
    try:
        log("revocation across 3 replicas ...")
        results["revocation"] = revocation_across_replicas(port)
        log(json.dumps(results["revocation"]))
        log("1M keys in 1000 Secrets ...")
        results["scale"] = scale(port)
        log(json.dumps(results["scale"]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    out = ROOT / "bench" / "results" / f"kubernetes-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
