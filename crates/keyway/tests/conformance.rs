//! The Gateway API conformance suite's HTTP tests, in standalone mode.
//!
//! Manifests: `../shared/testdata/gateway-api-conformance/` (verbatim upstream).
//! Expectations: `tests/conformance/expectations.yaml`, transcribed from the suite's Go
//! files (requests, expected statuses, backends, headers, redirects, route conditions).
//!
//! Kubernetes gives every Gateway its own address; standalone serves all Gateways on one
//! address, so the base manifests' Gateways (all on port 80, no hostname) would conflict.
//! Each test therefore runs one Keyway per Gateway it talks to, holding only that Gateway.
//! Every Deployment of the suite (`app: infra-backend-v1`, ...) becomes an echo upstream on
//! 127.0.0.1, and every Service gets the EndpointSlice Kubernetes would have made for it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use crate::support;
use crate::support::{kubectl_apply, Harness, Req};
use serde_yaml_ng::Value;

fn conformance_file(name: &str) -> String {
    support::shared_testdata(&format!("gateway-api-conformance/{name}"))
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn ns_of(v: &Value) -> String {
    v["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string()
}

/// Echo upstreams, one per (namespace, app), and what each address stands for.
#[derive(Default)]
struct Backends {
    by_app: HashMap<(String, String), SocketAddr>,
    names: HashMap<String, (String, String)>,
}

impl Backends {
    async fn get(&mut self, ns: &str, app: &str) -> SocketAddr {
        if let Some(a) = self.by_app.get(&(ns.to_string(), app.to_string())) {
            return *a;
        }
        let a = support::upstream().await;
        self.by_app.insert((ns.to_string(), app.to_string()), a);
        self.names
            .insert(a.to_string(), (app.to_string(), ns.to_string()));
        a
    }
}

/// EndpointSlices for every Service, as Kubernetes would create them.
async fn endpoint_slices(objects: &[Value], test: &str, backends: &mut Backends) -> String {
    let mut out = String::new();
    for o in objects.iter().filter(|o| s(&o["kind"]) == "Service") {
        let ns = ns_of(o);
        let name = s(&o["metadata"]["name"]).to_string();
        let app = match o["spec"]["selector"]["app"].as_str() {
            Some(app) => app.to_string(),
            // Selector-less Services of the service-types test: the Go test fills their
            // slices with infra-backend-v1's pods.
            None if test == "httproute-service-types" => "infra-backend-v1".to_string(),
            None => continue,
        };
        let addr = backends.get(&ns, &app).await;
        let ports: Vec<String> = o["spec"]["ports"]
            .as_sequence()
            .map(|ps| {
                ps.iter()
                    .map(|p| format!("{{name: \"{}\", port: {}}}", s(&p["name"]), addr.port()))
                    .collect()
            })
            .unwrap_or_default();
        // The manifest's own slices for this Service (empty ones) are replaced by name.
        let manual: Vec<String> = objects
            .iter()
            .filter(|e| {
                s(&e["kind"]) == "EndpointSlice"
                    && ns_of(e) == ns
                    && e["metadata"]["labels"]["kubernetes.io/service-name"].as_str()
                        == Some(name.as_str())
            })
            .map(|e| s(&e["metadata"]["name"]).to_string())
            .collect();
        let slice_names = if manual.is_empty() {
            vec![format!("{name}-keyway")]
        } else {
            manual
        };
        for slice in slice_names {
            out.push_str(&format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {slice}, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{}]\nendpoints: [{{addresses: [\"127.0.0.1\"], conditions: {{ready: true}}}}]\n",
                ports.join(", ")
            ));
        }
    }
    out
}

struct Outcome {
    cases: usize,
    failures: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_conformance_http() {
    let expectations: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/conformance/expectations.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let base = conformance_file("base-manifests.yaml");
    let mut total = Outcome {
        cases: 0,
        failures: Vec::new(),
    };
    let mut skipped = Vec::new();
    for entry in expectations.as_sequence().unwrap() {
        let test = s(&entry["test"]).to_string();
        if let Some(why) = entry["skip"].as_str() {
            skipped.push(format!("{test}: {why}"));
            continue;
        }
        let out = run_test(&test, entry, &base, &mut skipped).await;
        total.cases += out.cases;
        total.failures.extend(out.failures);
    }
    eprintln!(
        "conformance: {} cases run, {} failed, {} skipped",
        total.cases,
        total.failures.len(),
        skipped.len()
    );
    for s in &skipped {
        eprintln!("  skipped {s}");
    }
    assert!(total.cases > 200, "only {} cases ran", total.cases);
    assert!(
        total.failures.is_empty(),
        "{} failures:\n{}",
        total.failures.len(),
        total.failures.join("\n")
    );
}

async fn run_test(test: &str, entry: &Value, base: &str, skipped: &mut Vec<String>) -> Outcome {
    let manifest = conformance_file(&format!("{test}.yaml"));
    let objects: Vec<Value> = docs(base).into_iter().chain(docs(&manifest)).collect();
    let mut backends = Backends::default();
    let slices = endpoint_slices(&objects, test, &mut backends).await;
    let all = kubectl_apply(&[base, &manifest, &slices]);

    // Which Gateways the test talks to.
    let default_gw = s(&entry["gateway"]).to_string();
    let cases: Vec<&Value> = entry["cases"]
        .as_sequence()
        .map(|c| c.iter().collect())
        .unwrap_or_default();
    let mut gateways: Vec<String> = vec![default_gw.clone()];
    for c in &cases {
        if let Some(g) = c["gateway"].as_str() {
            if !gateways.iter().any(|x| x == g) {
                gateways.push(g.to_string());
            }
        }
    }
    let mut out = Outcome {
        cases: 0,
        failures: Vec::new(),
    };
    for gw in gateways.iter().filter(|g| !g.is_empty()) {
        let (gw_ns, gw_name) = gw.split_once('/').unwrap();
        let only_this_gateway = |text: &str| -> String {
            docs(text)
                .into_iter()
                .filter(|o| {
                    s(&o["kind"]) != "Gateway"
                        || (ns_of(o) == gw_ns && s(&o["metadata"]["name"]) == gw_name)
                })
                .map(|o| format!("---\n{}", serde_yaml_ng::to_string(&o).unwrap()))
                .collect()
        };
        let h = Harness::start(&only_this_gateway(&all)).await;

        // Statuses of objects seen through this Gateway.
        for st in entry["statuses"].as_sequence().into_iter().flatten() {
            if st["skip"].is_string() {
                continue;
            }
            if let Some(err) = check_status(&h, st, gw) {
                out.failures.push(format!("{test} [{gw}] status: {err}"));
            }
        }

        let mut steps: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
        for c in cases
            .iter()
            .filter(|c| c["gateway"].as_str().unwrap_or(&default_gw) == gw)
        {
            steps
                .entry(c["step"].as_i64().unwrap_or(1))
                .or_default()
                .push(c);
        }
        for (step, cases) in steps {
            if step == 2 && test == "httproute-reference-grant" {
                // The Go test deletes the ReferenceGrant between the steps.
                let without: String = docs(&std::fs::read_to_string(h.config_path()).unwrap())
                    .into_iter()
                    .filter(|o| s(&o["kind"]) != "ReferenceGrant")
                    .map(|o| format!("---\n{}", serde_yaml_ng::to_string(&o).unwrap()))
                    .collect();
                h.rewrite(&without).await;
            }
            for (i, c) in cases.into_iter().enumerate() {
                if let Some(why) = c["skip"].as_str() {
                    skipped.push(format!("{test} case {i}: {why}"));
                    continue;
                }
                out.cases += 1;
                if let Some(err) = check_case(&h, c, &backends).await {
                    out.failures
                        .push(format!("{test} [{gw}] {}: {err}", describe(c)));
                }
            }
        }
        if let Some(weights) = entry["weights"].as_mapping() {
            out.cases += 1;
            if let Some(err) = check_weights(&h, weights, &backends).await {
                out.failures.push(format!("{test} weights: {err}"));
            }
        }
    }
    out
}

fn describe(c: &Value) -> String {
    let r = &c["request"];
    format!(
        "{} {}{}",
        r["method"].as_str().unwrap_or("GET"),
        r["host"].as_str().unwrap_or(""),
        s(&r["path"])
    )
}

fn join_header(map: &serde_json::Value, name: &str) -> Option<String> {
    let obj = map.as_object()?;
    let key = obj.keys().find(|k| k.eq_ignore_ascii_case(name))?;
    Some(
        obj[key]
            .as_array()?
            .iter()
            .map(|v| v.as_str().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(","),
    )
}

async fn check_case(h: &Harness, c: &Value, backends: &Backends) -> Option<String> {
    let r = &c["request"];
    let path = s(&r["path"]).to_string();
    let host = r["host"]
        .as_str()
        .filter(|h| !h.is_empty())
        .unwrap_or("127.0.0.1");
    let port = c["gateway_port"].as_u64().unwrap_or(80) as u16;
    let mut req = Req::get(host, &path).method(r["method"].as_str().unwrap_or("GET"));
    for (k, v) in r["headers"].as_mapping().into_iter().flatten() {
        req = req.header(s(k), s(v));
    }
    if let Some(set) = c["backend_response_headers"].as_mapping() {
        let spec: Vec<String> = set
            .iter()
            .map(|(k, v)| format!("{}:{}", s(k), s(v)))
            .collect();
        req = req.header("X-Echo-Set-Header", &spec.join(","));
    }
    let Some(addr) = h.app.addr(port) else {
        return Some(format!("no listener on port {port}"));
    };
    let resp = support::send(addr, req.clone()).await;
    let want = c["status"].as_u64().unwrap_or(200) as u16;
    if resp.status.as_u16() != want {
        return Some(format!(
            "status {} (want {want}) body {:?}",
            resp.status,
            resp.text().chars().take(120).collect::<String>()
        ));
    }
    for (k, v) in c["response_headers"].as_mapping().into_iter().flatten() {
        let got: Vec<&str> = resp
            .headers
            .get_all(s(k))
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .collect();
        if got.join(",") != s(v) {
            return Some(format!(
                "response header {} = {:?}, want {:?}",
                s(k),
                got.join(","),
                s(v)
            ));
        }
    }
    for k in c["response_absent_headers"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        if resp.headers.contains_key(s(k)) {
            return Some(format!("response header {} present", s(k)));
        }
    }
    if (300..400).contains(&want) {
        return check_redirect(c, &resp, &path);
    }
    if want != 200 {
        return None;
    }
    let echo = resp.json();
    let server = s_json(&echo["server"]);
    let (app, ns) = backends.names.get(&server).cloned().unwrap_or_default();
    if let Some(b) = c["backend"].as_str() {
        if !app.starts_with(b) {
            return Some(format!("served by {app}, want {b}"));
        }
    }
    if let Some(n) = c["namespace"].as_str() {
        if ns != n {
            return Some(format!("served from namespace {ns}, want {n}"));
        }
    }
    let upstream_full = {
        let q = s_json(&echo["query"]);
        if q.is_empty() {
            s_json(&echo["path"])
        } else {
            format!("{}?{q}", s_json(&echo["path"]))
        }
    };
    let want_path = c["upstream_path"].as_str().unwrap_or(&path);
    let compare = if want_path.contains('?') {
        upstream_full.clone()
    } else {
        s_json(&echo["path"])
    };
    let want_cmp = if want_path.contains('?') || c["upstream_path"].is_string() {
        want_path.to_string()
    } else {
        want_path.split('?').next().unwrap().to_string()
    };
    if compare != want_cmp {
        return Some(format!(
            "upstream saw path {upstream_full:?}, want {want_path:?}"
        ));
    }
    if s_json(&echo["method"]) != r["method"].as_str().unwrap_or("GET") {
        return Some(format!("upstream saw method {}", s_json(&echo["method"])));
    }
    if let Some(want_host) = c["upstream_host"].as_str() {
        let got = join_header(&echo["headers"], "host").unwrap_or_default();
        if got != want_host {
            return Some(format!("upstream saw Host {got:?}, want {want_host:?}"));
        }
    }
    for (k, v) in c["upstream_headers"].as_mapping().into_iter().flatten() {
        let got = join_header(&echo["headers"], s(k));
        if got.as_deref() != Some(s(v)) {
            return Some(format!(
                "upstream header {} = {got:?}, want {:?}",
                s(k),
                s(v)
            ));
        }
    }
    for k in c["upstream_absent_headers"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        if join_header(&echo["headers"], s(k)).is_some() {
            return Some(format!("upstream header {} present", s(k)));
        }
    }
    None
}

fn s_json(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn check_redirect(c: &Value, resp: &support::Resp, request_path: &str) -> Option<String> {
    let Some(loc) = resp.headers.get("location").and_then(|l| l.to_str().ok()) else {
        return Some("no Location header".into());
    };
    let uri: http::Uri = match loc.parse() {
        Ok(u) => u,
        Err(e) => return Some(format!("bad Location {loc:?}: {e}")),
    };
    let want = &c["redirect"];
    let scheme = uri.scheme_str().unwrap_or("");
    let want_scheme = want["scheme"].as_str().unwrap_or("http");
    if scheme != want_scheme {
        return Some(format!(
            "Location {loc}: scheme {scheme}, want {want_scheme}"
        ));
    }
    if let Some(host) = want["host"].as_str() {
        if uri.host() != Some(host) {
            return Some(format!("Location {loc}: host, want {host}"));
        }
    }
    let port = uri.port_u16().map(|p| p.to_string()).unwrap_or_default();
    match want["port"].as_str() {
        Some(p) if !p.is_empty() => {
            let default = if want_scheme == "https" { "443" } else { "80" };
            if port != p && !(port.is_empty() && p == default) {
                return Some(format!("Location {loc}: port {port:?}, want {p}"));
            }
        }
        _ => {
            let default = if want_scheme == "https" { "443" } else { "80" };
            if !port.is_empty() && port != default {
                return Some(format!("Location {loc}: port {port:?}, want none"));
            }
        }
    }
    let want_path = want["path"]
        .as_str()
        .unwrap_or_else(|| request_path.split('?').next().unwrap());
    if uri.path() != want_path {
        return Some(format!(
            "Location {loc}: path {}, want {want_path}",
            uri.path()
        ));
    }
    None
}

async fn check_weights(
    h: &Harness,
    weights: &serde_yaml_ng::Mapping,
    backends: &Backends,
) -> Option<String> {
    let mut last = String::new();
    for _attempt in 0..3 {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let n = 500;
        for _ in 0..n {
            let r = h.get(80, "127.0.0.1", "/").await;
            let server = s_json(&r.json()["server"]);
            let app = backends
                .names
                .get(&server)
                .map(|(a, _)| a.clone())
                .unwrap_or_default();
            *counts.entry(app).or_default() += 1;
        }
        let mut ok = true;
        for (k, v) in weights {
            let want = v.as_f64().unwrap_or(0.0);
            let got = *counts.get(s(k)).unwrap_or(&0) as f64 / n as f64;
            if (want == 0.0 && got > 0.0) || (got - want).abs() > 0.05 {
                ok = false;
            }
        }
        if ok {
            return None;
        }
        last = format!("{counts:?}");
    }
    Some(format!("distribution off: {last}"))
}

fn check_status(h: &Harness, st: &Value, gw: &str) -> Option<String> {
    let report = h.app.state.report();
    let kind = s(&st["kind"]);
    if kind == "Gateway" {
        let obj = st["object"].as_str().unwrap_or(gw);
        if obj != gw {
            return None;
        }
        let (ns, name) = obj.split_once('/').unwrap();
        let Some(g) = report.get(keyway_model::Kind::Gateway, ns, name) else {
            return Some(format!("no status for Gateway {obj}"));
        };
        if st["check"].as_str() == Some("zero_attached_routes") {
            let n: u32 = g.sections.iter().filter_map(|s| s.attached_routes).sum();
            return (n != 0).then(|| format!("Gateway {obj} has {n} attached routes, want 0"));
        }
        let listeners: Vec<_> = g
            .sections
            .iter()
            .filter(|s| match st["listener"].as_str() {
                None | Some("*") => true,
                Some(l) => s.section == format!("listener {l}"),
            })
            .collect();
        if listeners.is_empty() {
            return Some(format!(
                "Gateway {obj} has no listener {:?}",
                st["listener"].as_str().unwrap_or("*")
            ));
        }
        for l in listeners {
            if let Some(want) = st["attached_routes"].as_u64() {
                if l.attached_routes != Some(want as u32) {
                    return Some(format!(
                        "{} attached routes {:?}, want {want}",
                        l.section, l.attached_routes
                    ));
                }
            }
            if let Some(t) = st["type"].as_str() {
                let c = l.conditions.iter().find(|c| c.type_ == t);
                let want = st["status"].as_bool().unwrap_or(true);
                if c.map(|c| c.status) != Some(want) {
                    return Some(format!("{} {t}: {c:?}, want {want}", l.section));
                }
            }
        }
        return None;
    }
    let obj = s(&st["object"]);
    let (ns, name) = obj.split_once('/').unwrap_or(("", obj));
    let Some(route) = report.get(keyway_model::Kind::HttpRoute, ns, name) else {
        return Some(format!("no status for HTTPRoute {obj}"));
    };
    if st["check"].as_str() == Some("no_accepted_parents") {
        let accepted = route
            .sections
            .iter()
            .filter(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Accepted" && c.status)
            })
            .count();
        return (accepted != 0).then(|| format!("HTTPRoute {obj} has {accepted} accepted parents"));
    }
    let parent = st["parent"].as_str().unwrap_or(gw);
    if parent != gw {
        return None;
    }
    let Some(section) = route
        .sections
        .iter()
        .find(|s| s.section.starts_with(&format!("parent Gateway {parent}")))
    else {
        return Some(format!(
            "HTTPRoute {obj} has no status for parent Gateway {parent}"
        ));
    };
    let t = s(&st["type"]);
    let Some(c) = section.conditions.iter().find(|c| c.type_ == t) else {
        return Some(format!(
            "HTTPRoute {obj} [{}] has no {t} condition",
            section.section
        ));
    };
    let want = st["status"].as_bool().unwrap_or(true);
    if c.status != want {
        return Some(format!(
            "HTTPRoute {obj} [{}] {c}, want status {want}",
            section.section
        ));
    }
    if let Some(reason) = st["reason"].as_str() {
        if c.reason != reason {
            return Some(format!(
                "HTTPRoute {obj} [{}] {c}, want reason {reason}",
                section.section
            ));
        }
    }
    None
}
