//! Test harness: a real Keyway and real upstreams on 127.0.0.1, driven over real sockets.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use keyway::app::{App, AppOptions};
use keyway_dataplane::ServerOptions;
use keyway_dataplane::Settings;
use tokio::net::TcpStream;

pub mod certs;
pub mod cluster;

/// Starts the echo upstream on a free loopback port.
pub async fn upstream() -> SocketAddr {
    keyway::echo::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A Service `name` in `ns` with port 80 (named `http`) and an EndpointSlice sending it to
/// `addrs`.
pub fn service(ns: &str, name: &str, addrs: &[SocketAddr]) -> String {
    let port = addrs.first().map(|a| a.port()).unwrap_or(1);
    let endpoints: String = addrs
        .iter()
        .map(|a| {
            format!(
                "- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n",
                a.ip()
            )
        })
        .collect();
    let endpoints = if endpoints.is_empty() {
        "[]\n".to_string()
    } else {
        format!("\n{endpoints}")
    };
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports:\n  - {{name: http, port: 80, targetPort: {port}}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n- {{name: http, port: {port}}}\nendpoints: {endpoints}"
    )
}

/// A running gateway over manifests written to a temporary directory.
pub struct Harness {
    pub app: Arc<App>,
    pub dir: tempfile::TempDir,
    pub watch: Option<keyway::watch::WatchHandle>,
}

impl Harness {
    /// Writes `manifests` to `config.yaml` and starts Keyway on them.
    pub async fn start(manifests: &str) -> Harness {
        Self::start_with(manifests, |_| {}).await
    }

    /// As [`Harness::start`], with a chance to change the options.
    pub async fn start_with(manifests: &str, tweak: impl FnOnce(&mut AppOptions)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.yaml"), manifests).unwrap();
        let paths = vec![dir.path().to_path_buf()];
        Self::start_on(dir, paths, tweak).await
    }

    /// Starts Keyway on `paths`, keeping `dir` for the harness's life.
    pub async fn start_on(
        dir: tempfile::TempDir,
        paths: Vec<PathBuf>,
        tweak: impl FnOnce(&mut AppOptions),
    ) -> Harness {
        let mut options = AppOptions {
            server: ServerOptions {
                bind: "127.0.0.1".parse().unwrap(),
                ephemeral_ports: true,
                drain_timeout: Duration::from_secs(5),
                ..Default::default()
            },
            settings: Settings::default(),
            admin: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        tweak(&mut options);
        let source = std::sync::Arc::new(keyway_sources::FileSource::new(paths));
        let app = match App::start(source, options).await {
            Ok(app) => app,
            Err(e) => panic!("gateway did not start: {e:#?}"),
        };
        Harness {
            app,
            dir,
            watch: None,
        }
    }

    /// As [`Harness::start`], and watching the directory like `keyway run` does.
    pub async fn start_watching(manifests: &str) -> Harness {
        let mut h = Self::start(manifests).await;
        let paths = vec![h.dir.path().to_path_buf()];
        h.watch =
            Some(keyway::watch::spawn(h.app.clone(), &paths, Duration::from_millis(25)).unwrap());
        h
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Replaces the manifests and reloads.
    pub async fn rewrite(&self, manifests: &str) {
        std::fs::write(self.config_path(), manifests).unwrap();
        self.app.reload().await.unwrap();
    }

    /// Where the Gateway listener `port` is bound.
    pub fn addr(&self, port: u16) -> SocketAddr {
        self.app
            .addr(port)
            .unwrap_or_else(|| panic!("listener port {port} is not bound"))
    }

    /// GET `path` with `Host: host` on listener `port`.
    pub async fn get(&self, port: u16, host: &str, path: &str) -> Resp {
        self.request(port, Req::get(host, path)).await
    }

    /// Sends a request on a new connection.
    pub async fn request(&self, port: u16, req: Req) -> Resp {
        send(self.addr(port), req).await
    }

    /// GET on the admin port.
    pub async fn admin(&self, path: &str) -> Resp {
        send(self.app.admin_addr.unwrap(), Req::get("localhost", path)).await
    }
}

/// A request to send.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: http::Method,
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Req {
    pub fn get(host: &str, path: &str) -> Req {
        Req {
            method: http::Method::GET,
            host: host.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn method(mut self, m: &str) -> Req {
        self.method = m.parse().unwrap();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Req {
        self.body = body.into();
        self
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header("host", self.host.as_str());
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(Full::new(self.body.clone())).unwrap()
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo upstream's JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The values of a header as the echo upstream received it (Title-Case name).
    pub fn upstream_header(&self, name: &str) -> Option<Vec<String>> {
        let v = self.json();
        let h = v["headers"].as_object()?;
        let key = h.keys().find(|k| k.eq_ignore_ascii_case(name))?;
        Some(
            h[key]
                .as_array()?
                .iter()
                .map(|s| s.as_str().unwrap_or("").to_string())
                .collect(),
        )
    }

    /// The single value of a header the upstream received.
    pub fn upstream_header1(&self, name: &str) -> Option<String> {
        self.upstream_header(name).map(|v| v.join(","))
    }

    pub fn upstream_path(&self) -> String {
        self.json()["path"].as_str().unwrap_or("").to_string()
    }

    pub fn upstream_query(&self) -> String {
        self.json()["query"].as_str().unwrap_or("").to_string()
    }
}

/// Sends one HTTP/1.1 request on a fresh connection and reads the whole response.
pub async fn send(addr: SocketAddr, req: Req) -> Resp {
    try_send(addr, req)
        .await
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// As [`send`], reporting a refused, reset or timed-out exchange instead of panicking.
pub async fn try_send(addr: SocketAddr, req: Req) -> Result<Resp, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req.build()))
        .await
        .map_err(|_| "no response within 30 s".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Resp {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Counts which upstream answered, by the port the echo reports as the Host it was sent to.
pub fn tally<K: Ord>(keys: impl IntoIterator<Item = K>) -> BTreeMap<K, usize> {
    let mut m = BTreeMap::new();
    for k in keys {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// The shared upstream test manifests (`../shared/testdata`, or `KEYWAY_SHARED_TESTDATA`
/// when the tree is copied elsewhere, as mutation testing does).
pub fn shared_testdata(rel: &str) -> String {
    let path = std::env::var_os("KEYWAY_SHARED_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata")
        })
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What `kubectl apply` of these documents in order would leave: a later object with the
/// same kind, namespace and name replaces the earlier one.
pub fn kubectl_apply(docs: &[&str]) -> String {
    let mut order: Vec<(String, String, String)> = Vec::new();
    let mut objects: BTreeMap<(String, String, String), serde_yaml_ng::Value> = BTreeMap::new();
    for text in docs {
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
            if v.is_null() {
                continue;
            }
            let kind = v["kind"].as_str().unwrap_or("").to_string();
            let ns = v["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
            let key = (kind, ns, name);
            if !objects.contains_key(&key) {
                order.push(key.clone());
            }
            objects.insert(key, v);
        }
    }
    order
        .iter()
        .map(|k| format!("---\n{}", serde_yaml_ng::to_string(&objects[k]).unwrap()))
        .collect()
}

/// An address that refuses connections for as long as the returned socket lives: bound,
/// never listening, so no other test can take the port meanwhile.
pub fn refusing_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// The `keyway` binary running `run` on manifests in a temporary directory.
///
/// The gateway binds its listener (the manifests' `{PORT}`) and its admin port on ports the
/// OS picks (`--port-map`, `--admin-address 127.0.0.1:0`), and the addresses are read back
/// from its log: no port is picked by the test and released for someone else to take.
/// Output is drained while the process runs (a full pipe would stall it) and returned by
/// [`Binary::stop`]; dropping a `Binary` kills the process.
pub struct Binary {
    pub child: std::process::Child,
    /// Where the (single) Gateway listener is bound.
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    output: Arc<std::sync::Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<Option<std::process::ChildStderr>>>,
}

/// The listener port the manifests' `{PORT}` stands for (mapped to a free port).
pub const LISTENER_PORT: u16 = 18080;

/// How to start a [`Binary`].
#[derive(Default)]
pub struct BinaryOptions<'a> {
    /// A command to run keyway under (`["prlimit", "--nofile=256:256", "--"]`).
    pub wrapper: &'a [&'a str],
    /// Arguments before `run` (`--log-format json`).
    pub global: &'a [&'a str],
    /// Arguments after `run`'s own.
    pub run_args: &'a [&'a str],
    pub env: &'a [(&'a str, &'a str)],
    /// Stop reading stderr once the addresses are known, so the pipe fills and stays full.
    pub stall_stderr: bool,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    /// Writes `manifests` and starts `keyway [global] run --config DIR ...` with `env`.
    pub fn start(manifests: &str, global: &[&str], env: &[(&str, &str)]) -> Binary {
        Self::start_with(
            manifests,
            BinaryOptions {
                global,
                env,
                ..Default::default()
            },
        )
    }

    /// As [`Binary::start`], with every option.
    pub fn start_with(manifests: &str, o: BinaryOptions<'_>) -> Binary {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("manifests.yaml"),
            manifests.replace("{PORT}", &LISTENER_PORT.to_string()),
        )
        .unwrap();
        let mut cmd = match o.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_keyway"));
                c
            }
            None => std::process::Command::new(env!("CARGO_BIN_EXE_keyway")),
        };
        cmd.args(o.global)
            .args(["run", "--config"])
            .arg(dir.path())
            .args([
                "--bind-address",
                "127.0.0.1",
                "--admin-address",
                "127.0.0.1:0",
                "--port-map",
                &format!("{LISTENER_PORT}=0"),
            ])
            .args(o.run_args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in o.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let output: Arc<std::sync::Mutex<String>> = Arc::default();
        let (found_tx, found_rx) = std::sync::mpsc::channel::<(bool, SocketAddr)>();
        let stderr = child.stderr.take().unwrap();
        let stall = o.stall_stderr;
        let out = output.clone();
        let err_reader = std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stderr);
            let (mut gateway, mut admin) = (false, false);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
                out.lock().unwrap().push_str(&line);
                if let Some(addr) = logged_addr(&line, "admin listening") {
                    admin = true;
                    let _ = found_tx.send((false, addr));
                } else if line.contains(&format!("port={LISTENER_PORT}"))
                    || line.contains(&format!("\"port\":{LISTENER_PORT}"))
                {
                    if let Some(addr) = logged_addr(&line, "listening") {
                        gateway = true;
                        let _ = found_tx.send((true, addr));
                    }
                }
                if stall && gateway && admin {
                    return Some(reader.into_inner());
                }
            }
        });
        let stdout = child.stdout.take().unwrap();
        let out = output.clone();
        let out_reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
            None
        });
        let (mut gateway, mut admin) = (None, None);
        while gateway.is_none() || admin.is_none() {
            match found_rx.recv_timeout(Duration::from_secs(10)) {
                Ok((true, a)) => gateway = Some(a),
                Ok((false, a)) => admin = Some(a),
                Err(_) => panic!(
                    "keyway did not report its addresses within 10 s:\n{}",
                    output.lock().unwrap()
                ),
            }
        }
        Binary {
            child,
            gateway: gateway.unwrap(),
            admin: admin.unwrap(),
            dir,
            output,
            readers: vec![err_reader, out_reader],
        }
    }

    /// Waits (up to 10 s) until `/readyz` answers 200.
    pub async fn ready(&self) {
        for _ in 0..200 {
            if send(self.admin, Req::get("l", "/readyz")).await.status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("keyway never became ready");
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Sends a signal (`TERM`, `HUP`, ...).
    pub fn signal(&self, sig: &str) {
        std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Sends SIGTERM, waits for exit, and returns the exit status and everything printed.
    pub fn stop(self) -> (std::process::ExitStatus, String) {
        self.signal("TERM");
        self.wait()
    }

    /// Waits for the process to exit by itself; returns its status and everything printed.
    pub fn wait(mut self) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let status = self.child.wait().unwrap();
        for r in std::mem::take(&mut self.readers) {
            if let Some(mut held) = r.join().unwrap() {
                let mut rest = String::new();
                let _ = held.read_to_string(&mut rest);
                self.output.lock().unwrap().push_str(&rest);
            }
        }
        (status, self.output())
    }
}

/// The `addr=` of a log line with `message` (text or JSON format).
pub fn logged_addr(line: &str, message: &str) -> Option<SocketAddr> {
    if !line.contains(message) {
        return None;
    }
    let at = line
        .find("addr=")
        .map(|i| i + 5)
        .or_else(|| line.find("\"addr\":\"").map(|i| i + 8))?;
    let rest = &line[at..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '"')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Writes `bytes` on a new connection to `addr` and reads what comes back until the server
/// closes the connection or `quiet` passes without a byte.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], quiet: Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(quiet, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The responses in a raw HTTP/1.1 byte stream, in order: status and body (framed by
/// `Content-Length` or chunked; a response without either runs to the end).
pub fn responses(raw: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
        let status: u16 = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        rest = &rest[end + 4..];
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
                .map(|v| v.trim().to_string())
        };
        let body = if header("transfer-encoding").is_some_and(|t| t.ends_with("chunked")) {
            let mut body = Vec::new();
            while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&rest[..eol])
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim(),
                    16,
                )
                .unwrap_or(0);
                rest = &rest[eol + 2..];
                if size == 0 {
                    rest = rest.get(2..).unwrap_or(&[]);
                    break;
                }
                let take = size.min(rest.len());
                body.extend_from_slice(&rest[..take]);
                rest = rest.get(take + 2..).unwrap_or(&[]);
            }
            body
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let take = len.min(rest.len());
            let body = rest[..take].to_vec();
            rest = &rest[take..];
            body
        } else if (100..200).contains(&status) || status == 204 || status == 304 {
            Vec::new()
        } else {
            let body = rest.to_vec();
            rest = &[];
            body
        };
        out.push((status, body));
    }
    out
}

/// The status codes of every response in a raw HTTP/1.1 byte stream, in order.
pub fn statuses(raw: &[u8]) -> Vec<u16> {
    responses(raw).into_iter().map(|(s, _)| s).collect()
}

/// A Gateway `gw` on listener port 80, one HTTPRoute `r` with the given rules, and the
/// Service `app` in front of `upstream`.
pub fn gateway_with_rules(upstream: SocketAddr, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  gatewayClassName: any\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n{rules}\n{}",
        service("default", "app", &[upstream])
    )
}

/// [`gateway_with_rules`] with one rule that sends everything to `upstream`.
pub fn one_route(upstream: SocketAddr) -> String {
    gateway_with_rules(upstream, "  - backendRefs: [{name: app, port: 80}]")
}

/// Manifests for [`Binary`]: the listener on port 80 becomes the binary's `{PORT}`.
pub fn on_port(manifests: String) -> String {
    manifests.replace("port: 80, protocol", "port: {PORT}, protocol")
}
