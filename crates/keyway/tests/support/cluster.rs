//! Kubernetes mode harness: `keyway run --kubernetes` processes against the repository's
//! fake API server, and the objects most tests start from.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyway_fakeapi::FakeApiServer;

use super::{logged_addr, send, service, try_send, Req, LISTENER_PORT};

pub const CONTROLLER: &str = "keyway.dev/gateway-controller";

/// One `keyway run --kubernetes` process; killed on drop.
pub struct Replica {
    pub child: std::process::Child,
    output: Arc<Mutex<String>>,
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// Starts a replica authenticating as `token`; returns once its admin port is up.
    pub fn start(api: &FakeApiServer, token: &str, extra: &[&str]) -> Replica {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = api.write_kubeconfig(dir.path(), token);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
            .args(["run", "--kubernetes", "--bind-address", "127.0.0.1"])
            .args(["--admin-address", "127.0.0.1:0"])
            .args(["--port-map", &format!("{LISTENER_PORT}=0")])
            .args(extra)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let output: Arc<Mutex<String>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let out = output.clone();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                out.lock().unwrap().push_str(&line);
                if let Some(addr) = logged_addr(&line, "admin listening") {
                    let _ = tx.send(addr);
                }
            }
        });
        let admin = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no admin port:\n{}", output.lock().unwrap()));
        Replica {
            child,
            output,
            admin,
            _dir: dir,
        }
    }

    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The Gateway listener's address, once it is bound (up to `within`).
    pub async fn gateway(&self, within: Duration) -> Option<SocketAddr> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            let found = self.output().lines().find_map(|l| {
                (l.contains(&format!("port={LISTENER_PORT}")))
                    .then(|| logged_addr(l, "listening"))
                    .flatten()
            });
            if found.is_some() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    pub async fn serving(&self) -> SocketAddr {
        self.gateway(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("never served:\n{}", self.output()))
    }

    pub async fn readyz(&self) -> u16 {
        send(self.admin, Req::get("l", "/readyz"))
            .await
            .status
            .as_u16()
    }

    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        send(self.admin, Req::get("l", path)).await.json()
    }
}

/// GatewayClass `keyway` (ours), Gateway `gw` on the listener port, HTTPRoute `r` to the
/// Service `app` in front of `up`, and a policy on the route reading Secrets labelled
/// `keys: demo` in `ns`.
pub fn base(up: SocketAddr) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: keyway}}\nspec: {{controllerName: {CONTROLLER}}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: apps}}\nspec:\n  gatewayClassName: keyway\n  listeners: [{{name: http, port: {LISTENER_PORT}, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: apps}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n  - backendRefs: [{{name: app, port: 80}}]\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: keys, namespace: apps}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, name: r}}]\n  apiKeyAuth:\n    secretSelector: {{matchLabels: {{keys: demo}}}}\n{}",
        service("apps", "app", &[up])
    )
}

pub fn secret(name: &str, entries: &[(&str, &str)]) -> serde_json::Value {
    let data: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "apps", "labels": {"keys": "demo"}},
        "stringData": data})
}

pub async fn status_with(addr: SocketAddr, key: Option<&str>) -> u16 {
    let mut req = Req::get("example.com", "/");
    if let Some(k) = key {
        req = req.header("api-key", k);
    }
    match try_send(addr, req).await {
        Ok(r) => r.status.as_u16(),
        Err(_) => 0,
    }
}

/// Waits until `check` holds (polling every 20 ms) and returns how long it took.
pub async fn until<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// For each replica, how long after `since` it took to refuse `key`; `None` for one that
/// still accepted it 1 s after `since` (replicas are polled in turn, each within what is
/// left of that second).
pub async fn refused_everywhere(
    addrs: &[SocketAddr],
    key: &str,
    since: Instant,
) -> Vec<Option<Duration>> {
    let deadline = since + Duration::from_secs(1);
    let mut out = Vec::new();
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        let t = until(left, || async { status_with(*a, Some(key)).await == 401 }).await;
        out.push(t.map(|_| since.elapsed()));
    }
    out
}

pub async fn fake_with(up: SocketAddr) -> FakeApiServer {
    let api = FakeApiServer::start().await;
    api.apply_yaml(&base(up));
    api.apply(secret("alice", &[("alice", "k-alice")]));
    api.apply(secret("bob", &[("bob", "k-bob")]));
    api
}
