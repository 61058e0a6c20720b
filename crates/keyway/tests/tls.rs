//! HTTPS listeners (SPEC section 9): TLS termination with certificates from Secrets,
//! chosen by SNI, over real sockets, checked with our own rustls client and with
//! programs we did not write (`openssl s_client`, `curl`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support;
use crate::support::certs::{self, KeyForm};
use crate::support::{service, upstream, Harness};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

const PORT: u16 = 443;

/// What one TLS connection saw.
struct Seen {
    /// The leaf certificate presented.
    leaf: CertificateDer<'static>,
    alpn: Option<Vec<u8>>,
    status: u16,
    location: Option<String>,
    body: String,
}

/// Connects to `addr` with `server_name` as SNI (an IP address sends none), trusting
/// `root`, and sends `GET /` with `host`.
async fn https(
    addr: SocketAddr,
    server_name: &str,
    root: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<Seen, String> {
    https_path(addr, server_name, root, host, "/", headers).await
}

async fn https_path(
    addr: SocketAddr,
    server_name: &str,
    root: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Seen, String> {
    let mut config = client_config(root);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    let leaf = session.peer_certificates().unwrap()[0].clone().into_owned();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok(Seen {
        leaf,
        alpn,
        status,
        location,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A rustls client trusting the certificates in `root` (PEM) only.
fn client_config(root: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// A Gateway `gw` in `apps` with one HTTPS listener per `(name, hostname, secret)`, a route
/// on each listener answering from the echo upstream, and a policy requiring `api-key`
/// on the route `keyed` (attached to the listener named `keyed`, if any).
fn gateway(listeners: &[(&str, Option<&str>, &str)], up: SocketAddr) -> String {
    let mut ls = String::new();
    let mut routes = String::new();
    for (name, hostname, secret) in listeners {
        let host = hostname
            .map(|h| format!("    hostname: \"{h}\"\n"))
            .unwrap_or_default();
        ls.push_str(&format!(
            "  - name: {name}\n    port: {PORT}\n    protocol: HTTPS\n{host}    tls:\n      certificateRefs: [{{kind: Secret, name: {secret}}}]\n"
        ));
        routes.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r-{name}, namespace: apps}}\nspec:\n  parentRefs: [{{name: gw, sectionName: {name}}}]\n  rules:\n  - backendRefs: [{{name: app, port: 80}}]\n"
        ));
    }
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: apps}}\nspec:\n  gatewayClassName: keyway\n  listeners:\n{ls}{routes}{}",
        service("apps", "app", &[up])
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_listener_and_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (default_crt, default_key) = certs::self_signed(
        d,
        "default",
        KeyForm::EcSec1,
        &["default.test", "other.net"],
    );
    let (exact_crt, exact_key) = certs::self_signed(d, "exact", KeyForm::EcPkcs8, &["example.org"]);
    let (wild_crt, wild_key) = certs::self_signed(
        d,
        "wild",
        KeyForm::RsaPkcs1,
        &["*.wildcard.org", "a.b.wildcard.org"],
    );
    let up = upstream().await;
    let mut manifests = gateway(
        &[
            ("any", None, "default-cert"),
            ("exact", Some("example.org"), "exact-cert"),
            ("wild", Some("*.wildcard.org"), "wild-cert"),
        ],
        up,
    );
    for (name, crt, key) in [
        ("default-cert", &default_crt, &default_key),
        ("exact-cert", &exact_crt, &exact_key),
        ("wild-cert", &wild_crt, &wild_key),
    ] {
        manifests.push_str("---\n");
        manifests.push_str(&certs::tls_secret("apps", name, crt, key));
    }
    let h = Harness::start(&manifests).await;
    let addr = h.addr(PORT);

    let exact = https(addr, "example.org", &exact_crt, "example.org", &[])
        .await
        .unwrap();
    assert_eq!(exact.leaf, der(&exact_crt));
    assert_eq!(exact.status, 200, "{}", exact.body);
    assert_eq!(exact.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let echoed: serde_json::Value = serde_json::from_str(&exact.body).unwrap();
    assert_eq!(
        echoed["headers"]["X-Forwarded-Proto"][0], "https",
        "{echoed}"
    );

    // A wildcard matches one label or more.
    for name in ["one.wildcard.org", "a.b.wildcard.org"] {
        let wild = https(addr, name, &wild_crt, name, &[]).await;
        let wild = match wild {
            Ok(w) => w,
            // rustls checks the certificate's names: *.wildcard.org covers one label only,
            // so the deeper name is checked against its own SAN above.
            Err(e) => panic!("{name}: {e}"),
        };
        assert_eq!(wild.leaf, der(&wild_crt), "{name}");
        assert_eq!(wild.status, 200, "{name}: {}", wild.body);
    }
    // An unknown name, and no name at all, get the listener without a hostname.
    let other = https(addr, "other.net", &default_crt, "other.net", &[])
        .await
        .unwrap();
    assert_eq!(other.leaf, der(&default_crt));
    let no_sni = openssl_leaf(addr, None).expect("a handshake without SNI");
    assert_eq!(no_sni, der(&default_crt));

    // A Host of another listener than the one SNI chose: 421.
    let misdirected = https(addr, "example.org", &exact_crt, "one.wildcard.org", &[])
        .await
        .unwrap();
    assert_eq!(misdirected.status, 421, "{}", misdirected.body);
    let misdirected = https(addr, "other.net", &default_crt, "example.org", &[])
        .await
        .unwrap();
    assert_eq!(misdirected.status, 421);
}

/// The leaf certificate `openssl s_client` receives (`sni: None` sends no server name).
fn openssl_leaf(addr: SocketAddr, sni: Option<&str>) -> Option<CertificateDer<'static>> {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-showcerts"]);
    match sni {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start + 25;
    Some(der(&text[start..end]))
}

/// `openssl s_client` with one protocol version: whether the handshake completed.
fn openssl_handshake(addr: SocketAddr, sni: &str, version: &str) -> bool {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            sni,
            version,
        ])
        .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("BEGIN CERTIFICATE")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_certificate_form_and_every_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = upstream().await;
    let forms = [
        ("ec-sec1", KeyForm::EcSec1),
        ("ec-pkcs8", KeyForm::EcPkcs8),
        ("rsa-pkcs1", KeyForm::RsaPkcs1),
        ("rsa-pkcs8", KeyForm::RsaPkcs8),
    ];
    let mut listeners: Vec<(String, String, String)> = Vec::new();
    let mut secrets = String::new();
    let mut roots = Vec::new();
    for (name, form) in forms {
        let host = format!("{name}.test");
        let (crt, key) = certs::self_signed(d, name, form, &[&host]);
        secrets.push_str(&format!(
            "---\n{}",
            certs::tls_secret("apps", name, &crt, &key)
        ));
        listeners.push((name.into(), host, name.into()));
        roots.push((name, crt));
    }
    let (bundle, leaf_key, root) = certs::chain(d, "chained", &["chained.test"]);
    secrets.push_str(&format!(
        "---\n{}",
        certs::tls_secret("apps", "chained", &bundle, &leaf_key)
    ));
    listeners.push(("chained".into(), "chained.test".into(), "chained".into()));
    roots.push(("chained", root));

    // The broken ones, each on its own hostname.
    let (a_crt, _) = certs::self_signed(d, "a", KeyForm::EcSec1, &["a.test"]);
    let (_, b_key) = certs::self_signed(d, "b", KeyForm::EcSec1, &["b.test"]);
    let broken = [
        (
            "mismatched",
            certs::tls_secret("apps", "mismatched", &a_crt, &b_key),
            "does not match",
        ),
        (
            "garbage",
            certs::tls_secret("apps", "garbage", "Hello world\n", "Hello world\n"),
            "PEM certificate",
        ),
        (
            "opaque",
            certs::secret(
                "apps",
                "opaque",
                "Opaque",
                &[("tls.crt", &a_crt), ("tls.key", &b_key)],
            ),
            "not kubernetes.io/tls",
        ),
        ("missing", String::new(), "not found"),
    ];
    for (name, secret, _) in &broken {
        if !secret.is_empty() {
            secrets.push_str(&format!("---\n{secret}"));
        }
        listeners.push((name.to_string(), format!("{name}.test"), name.to_string()));
    }
    let spec: Vec<(&str, Option<&str>, &str)> = listeners
        .iter()
        .map(|(n, h, s)| (n.as_str(), Some(h.as_str()), s.as_str()))
        .collect();
    let manifests = format!("{}{secrets}", gateway(&spec, up));
    std::fs::write(d.join("objects.yaml"), &manifests).unwrap();
    let h = Harness::start(&manifests).await;
    let addr = h.addr(PORT);

    for (name, root) in &roots {
        let host = format!("{name}.test");
        let seen = https(addr, &host, root, &host, &[]).await;
        let seen = seen.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(seen.status, 200, "{name}: {}", seen.body);
    }
    let report = h.app.state.report();
    for (name, _, why) in &broken {
        let host = format!("{name}.test");
        let refused = https(addr, &host, &a_crt, &host, &[]).await;
        assert!(refused.is_err(), "{name}: a handshake succeeded");
        let gw = report
            .get(keyway_model::Kind::Gateway, "apps", "gw")
            .unwrap();
        let section = gw
            .sections
            .iter()
            .find(|s| s.section == format!("listener {name}"))
            .unwrap();
        let resolved = section
            .conditions
            .iter()
            .find(|c| c.type_ == "ResolvedRefs")
            .unwrap();
        assert!(!resolved.status, "{name}");
        assert_eq!(resolved.reason, "InvalidCertificateRef", "{name}");
        assert!(
            resolved.message.contains(why),
            "{name}: {}",
            resolved.message
        );
        let programmed = section
            .conditions
            .iter()
            .find(|c| c.type_ == "Programmed")
            .unwrap();
        assert!(!programmed.status, "{name}");
    }
    // `keyway check` says the same, and no key material appears anywhere in it.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(["check", "--config"])
        .arg(d.join("objects.yaml"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        printed.contains("[listener mismatched] ResolvedRefs=False InvalidCertificateRef"),
        "{printed}"
    );
    assert!(
        !printed.contains("PRIVATE KEY") && !printed.contains("BEGIN"),
        "{printed}"
    );
    assert!(!check.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_only() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = certs::self_signed(dir.path(), "v", KeyForm::EcSec1, &["v.test"]);
    let up = upstream().await;
    let manifests = format!(
        "{}---\n{}",
        gateway(&[("v", Some("v.test"), "v")], up),
        certs::tls_secret("apps", "v", &crt, &key)
    );
    let h = Harness::start(&manifests).await;
    let addr = h.addr(PORT);
    assert!(openssl_handshake(addr, "v.test", "-tls1_3"));
    assert!(openssl_handshake(addr, "v.test", "-tls1_2"));
    let before = h.app.state.metrics.tls_handshake_failures.get();
    assert!(
        !openssl_handshake(addr, "v.test", "-tls1_1"),
        "TLS 1.1 accepted"
    );
    assert!(
        !openssl_handshake(addr, "v.test", "-tls1"),
        "TLS 1.0 accepted"
    );
    // Refused by Keyway, not by the client's own policy.
    let refused = h.app.state.metrics.tls_handshake_failures.get() - before;
    assert_eq!(refused, 2, "handshakes refused by the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_with_a_key_in_a_header_and_in_a_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (crt, key) = certs::self_signed(d, "h2", KeyForm::EcSec1, &["h2.test"]);
    std::fs::write(d.join("root.pem"), &crt).unwrap();
    let up = upstream().await;
    let manifests = format!(
        "{}---\n{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: keys, namespace: apps}}\nstringData: {{alice: k-alice}}\n---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: keyed, namespace: apps}}\nspec:\n  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]\n  apiKeyAuth:\n    secretRef: {{name: keys}}\n    keySources:\n    - header: api-key\n    - cookie: session-key\n",
        gateway(&[("h2", Some("h2.test"), "h2")], up),
        certs::tls_secret("apps", "h2", &crt, &key)
    );
    let h = Harness::start(&manifests).await;
    let addr = h.addr(PORT);
    let curl = |extra: &[&str]| curl_h2(d, addr, "h2.test", extra);
    assert_eq!(curl(&[]), ("2".to_string(), 401));
    assert_eq!(curl(&["-H", "api-key: k-alice"]), ("2".to_string(), 200));
    assert_eq!(
        curl(&["--cookie", "session-key=k-alice"]),
        ("2".to_string(), 200)
    );
    assert_eq!(curl(&["-H", "api-key: wrong"]), ("2".to_string(), 401));
}

/// `curl --http2` to `https://host/` at `addr`: `(HTTP version, status)`.
fn curl_h2(dir: &Path, addr: SocketAddr, host: &str, extra: &[&str]) -> (String, u16) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(["--cacert", dir.join("root.pem").to_str().unwrap()])
        .args(["--resolve", &format!("{host}:{}:127.0.0.1", addr.port())])
        .args(extra)
        .arg(format!("https://{host}:{}/", addr.port()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (version, code) = text
        .split_once(' ')
        .unwrap_or_else(|| panic!("curl: {text} {}", String::from_utf8_lossy(&out.stderr)));
    (version.to_string(), code.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_https_on_one_port_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = certs::self_signed(dir.path(), "c", KeyForm::EcSec1, &["c.test"]);
    let up = upstream().await;
    let manifests = format!(
        "{}---\n{}---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: plain, namespace: apps}}\nspec:\n  gatewayClassName: keyway\n  listeners: [{{name: http, port: {PORT}, protocol: HTTP, hostname: plain.test}}]\n",
        gateway(&[("c", Some("c.test"), "c")], up),
        certs::tls_secret("apps", "c", &crt, &key)
    );
    let h = Harness::start(&manifests).await;
    let report = h.app.state.report();
    let plain = report
        .get(keyway_model::Kind::Gateway, "apps", "plain")
        .unwrap();
    let conflicted = plain.sections[0]
        .conditions
        .iter()
        .find(|c| c.type_ == "Conflicted")
        .unwrap();
    assert_eq!(conflicted.reason, "ProtocolConflict");
    // The HTTPS listener keeps the port.
    let seen = https(h.addr(PORT), "c.test", &crt, "c.test", &[])
        .await
        .unwrap();
    assert_eq!(seen.status, 200);
}

/// The conformance suite's files, with the GatewayClass placeholder filled in.
fn conformance(name: &str) -> String {
    support::shared_testdata(&format!("gateway-api-conformance/{name}"))
        .replace("{GATEWAY_CLASS_NAME}", "keyway")
}

/// EndpointSlices sending the suite's `infra-backend-v1..3` Services (port 8080 → 3000)
/// to echo upstreams; returns the manifests and which upstream is which.
async fn infra_backends() -> (String, Vec<(String, String)>) {
    let mut yaml = String::new();
    let mut names = Vec::new();
    // v1's Service names its ports; v2's and v3's do not.
    for (app, port_name) in [
        ("infra-backend-v1", "name: first-port, "),
        ("infra-backend-v2", ""),
        ("infra-backend-v3", ""),
    ] {
        let up = upstream().await;
        yaml.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {app}-x\n  namespace: gateway-conformance-infra\n  labels: {{kubernetes.io/service-name: {app}}}\naddressType: IPv4\nports:\n- {{{port_name}port: {}}}\nendpoints:\n- addresses: [\"127.0.0.1\"]\n",
            up.port()
        ));
        names.push((up.to_string(), app.to_string()));
    }
    (yaml, names)
}

/// `HTTPRouteHTTPSListener` and `HTTPRouteHTTPSListenerDetectMisdirectedRequests`, with
/// the certificate the suite generates at run time made here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_https_listener_and_misdirected_requests() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "example.org",
        "second-example.org",
        "*.wildcard.org",
        "unknown-example.org",
    ];
    let (crt, key) = certs::self_signed(dir.path(), "validity", KeyForm::EcSec1, &names);
    let (backends, which) = infra_backends().await;
    let manifests = format!(
        "{}\n---\n{}\n---\n{}\n---\n{}\n---\n{}{backends}",
        conformance("base-manifests.yaml"),
        conformance("base-https-gateway.yaml"),
        conformance("httproute-https-listener.yaml"),
        conformance("httproute-https-listener-detect-misdirected-requests.yaml"),
        certs::tls_secret(
            "gateway-conformance-infra",
            "tls-validity-checks-certificate",
            &crt,
            &key
        ),
    );
    let h = Harness::start(&manifests).await;
    let addr = h.addr(PORT);
    let backend_of = |body: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let server = v["server"].as_str().unwrap_or("").to_string();
        which
            .iter()
            .find(|(a, _)| *a == server)
            .map(|(_, n)| n.clone())
            .unwrap_or(server)
    };
    // HTTPRouteHTTPSListener.
    for (sni, host, backend) in [
        ("example.org", "example.org", "infra-backend-v1"),
        (
            "second-example.org",
            "second-example.org",
            "infra-backend-v2",
        ),
    ] {
        let seen = https(addr, sni, &crt, host, &[]).await.unwrap();
        assert_eq!(seen.status, 200, "{sni} {host}: {}", seen.body);
        assert_eq!(backend_of(&seen.body), backend, "{sni} {host}");
    }
    // HTTPRouteHTTPSListenerDetectMisdirectedRequests (its table, verbatim).
    let cases = [
        ("example.org", "example.org", 200, Some("infra-backend-v1")),
        ("example.org", "second-example.org", 421, None),
        ("example.org", "unknown-example.org", 404, None),
        (
            "second-example.org",
            "second-example.org",
            200,
            Some("infra-backend-v2"),
        ),
        ("second-example.org", "example.org", 421, None),
        ("second-example.org", "unknown-example.org", 421, None),
        (
            "third-example.wildcard.org",
            "third-example.wildcard.org",
            200,
            Some("infra-backend-v3"),
        ),
        (
            "third-example.wildcard.org",
            "fith-example.wildcard.org",
            200,
            Some("infra-backend-v3"),
        ),
        (
            "third-example.wildcard.org",
            "fourth-example.wildcard.org",
            421,
            None,
        ),
        (
            "third-example.wildcard.org",
            "second-example.org",
            421,
            None,
        ),
        (
            "third-example.wildcard.org",
            "unknown-example.org",
            421,
            None,
        ),
        (
            "fourth-example.wildcard.org",
            "fourth-example.wildcard.org",
            200,
            Some("infra-backend-v1"),
        ),
        (
            "fourth-example.wildcard.org",
            "fith-example.wildcard.org",
            421,
            None,
        ),
        (
            "unknown-example.org",
            "example.org",
            200,
            Some("infra-backend-v1"),
        ),
        ("unknown-example.org", "unknown-example.org", 404, None),
    ];
    for (sni, host, status, backend) in cases {
        let seen = https_path(addr, sni, &crt, host, "/detect-misdirected-requests", &[])
            .await
            .unwrap_or_else(|e| panic!("{sni} {host}: {e}"));
        assert_eq!(seen.status, status, "SNI {sni}, Host {host}: {}", seen.body);
        if let Some(b) = backend {
            assert_eq!(backend_of(&seen.body), b, "SNI {sni}, Host {host}");
        }
    }
}

fn listener_condition(h: &Harness, gw: &str, listener: &str, type_: &str) -> (bool, String) {
    let report = h.app.state.report();
    let status = report
        .get(keyway_model::Kind::Gateway, "gateway-conformance-infra", gw)
        .unwrap_or_else(|| panic!("no status for Gateway {gw}"));
    let section = status
        .sections
        .iter()
        .find(|s| s.section == format!("listener {listener}"))
        .unwrap();
    let c = section
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap();
    (c.status, c.reason.clone())
}

/// `GatewayInvalidTLSConfiguration` and the four `GatewaySecret*ReferenceGrant*` tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_certificate_references() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = certs::self_signed(dir.path(), "validity", KeyForm::EcSec1, &["example.org"]);
    let secrets = format!(
        "{}---\n{}",
        certs::tls_secret(
            "gateway-conformance-infra",
            "tls-validity-checks-certificate",
            &crt,
            &key
        ),
        certs::tls_secret("gateway-conformance-web-backend", "certificate", &crt, &key),
    );
    let base = conformance("base-manifests.yaml");
    let h = Harness::start(&format!(
        "{base}\n---\n{}\n---\n{secrets}",
        conformance("gateway-invalid-tls-configuration.yaml")
    ))
    .await;
    for gw in [
        "gateway-certificate-nonexistent-secret",
        "gateway-certificate-unsupported-group",
        "gateway-certificate-unsupported-kind",
        "gateway-certificate-malformed-secret",
    ] {
        let resolved = listener_condition(&h, gw, "https", "ResolvedRefs");
        assert_eq!(resolved, (false, "InvalidCertificateRef".into()), "{gw}");
    }
    drop(h);
    for (file, gw, want) in [
        (
            "gateway-secret-invalid-reference-grant.yaml",
            "gateway-secret-invalid-reference-grant",
            (false, "RefNotPermitted"),
        ),
        (
            "gateway-secret-missing-reference-grant.yaml",
            "gateway-secret-missing-reference-grant",
            (false, "RefNotPermitted"),
        ),
        (
            "gateway-secret-reference-grant-all-in-namespace.yaml",
            "gateway-secret-reference-grant-all-in-namespace",
            (true, "ResolvedRefs"),
        ),
        (
            "gateway-secret-reference-grant-specific.yaml",
            "gateway-secret-reference-grant-specific",
            (true, "ResolvedRefs"),
        ),
    ] {
        let h = Harness::start(&format!(
            "{base}\n---\n{}\n---\n{secrets}",
            conformance(file)
        ))
        .await;
        let resolved = listener_condition(&h, gw, "https", "ResolvedRefs");
        assert_eq!(resolved, (want.0, want.1.to_string()), "{file}");
        let programmed = listener_condition(&h, gw, "https", "Programmed");
        assert_eq!(programmed.0, want.0, "{file}: Programmed");
    }
}

/// A certificate replaced while connections are open: new handshakes present the new one
/// within a second; a connection opened before keeps working; `wrk` over TLS with
/// keep-alive sees no failure while the Secret changes every 200 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_live() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let up = upstream().await;
    let listeners = gateway(&[("any", None, "rotating")], up);
    let mut pairs = Vec::new();
    for i in 0..4 {
        let name = format!("gen{i}");
        pairs.push(certs::self_signed(
            d,
            &name,
            KeyForm::EcSec1,
            &["rotate.test"],
        ));
    }
    let manifests = |i: usize| {
        format!(
            "{listeners}---\n{}",
            certs::tls_secret("apps", "rotating", &pairs[i].0, &pairs[i].1)
        )
    };
    let h = Harness::start_watching(&manifests(0)).await;
    let addr = h.addr(PORT);

    // A keep-alive connection opened on the first certificate.
    let mut held = tls_connection(addr, "rotate.test", &pairs[0].0).await;
    let get = || {
        http::Request::get("/")
            .header("host", "rotate.test")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(held.send_request(get()).await.unwrap().status(), 200);

    // New handshakes see the new certificate within a second of the file changing.
    std::fs::write(h.config_path(), manifests(1)).unwrap();
    let changed = std::time::Instant::now();
    let mut took = None;
    while changed.elapsed() < Duration::from_secs(1) {
        if let Ok(seen) = https(addr, "rotate.test", &pairs[1].0, "rotate.test", &[]).await {
            assert_eq!(seen.leaf, der(&pairs[1].0));
            took = Some(changed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = took.expect("the new certificate was not used within 1 s");
    println!("new certificate in use {took:?} after the Secret changed");
    // The connection opened before goes on.
    let resp = held.send_request(get()).await.unwrap();
    assert_eq!(resp.status(), 200);

    // Under load: wrk over TLS with keep-alive while the Secret changes every 200 ms.
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let wrk = std::thread::spawn(move || {
        std::process::Command::new("wrk")
            .args(["-t1", "-c8", "-d3s", "--latency", &url])
            .output()
            .expect("wrk is installed (.ci/run installs it)")
    });
    for i in 0..14 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(h.config_path(), manifests(2 + i % 2)).unwrap();
    }
    let out = wrk.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    let requests: u64 = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in ")
                .map(|(n, _)| n.trim().parse().unwrap())
        })
        .expect("wrk's summary");
    assert!(requests > 100, "{text}");
    // The reloads happened (the test would be vacuous otherwise).
    assert!(
        h.app.state.generation() >= 10,
        "generation {}",
        h.app.state.generation()
    );
}

/// The HTTPS half of `HTTPRouteRedirectPortAndScheme`: redirects from a listener on 443.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_redirect_port_and_scheme_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = certs::self_signed(dir.path(), "validity", KeyForm::EcSec1, &["example.org"]);
    let manifests = format!(
        "{}\n---\n{}\n---\n{}\n---\n{}",
        conformance("base-manifests.yaml"),
        conformance("base-https-gateway.yaml"),
        conformance("httproute-redirect-port-and-scheme.yaml"),
        certs::tls_secret(
            "gateway-conformance-infra",
            "tls-validity-checks-certificate",
            &crt,
            &key
        ),
    );
    let h = Harness::start(&manifests).await;
    let addr = h.addr(PORT);
    for (path, location) in [
        (
            "/scheme-nil-and-port-nil",
            "https://example.org/scheme-nil-and-port-nil",
        ),
        (
            "/scheme-nil-and-port-443",
            "https://example.org/scheme-nil-and-port-443",
        ),
        (
            "/scheme-nil-and-port-8443",
            "https://example.org:8443/scheme-nil-and-port-8443",
        ),
        (
            "/scheme-http-and-port-nil",
            "http://example.org/scheme-http-and-port-nil",
        ),
        (
            "/scheme-http-and-port-80",
            "http://example.org/scheme-http-and-port-80",
        ),
        (
            "/scheme-http-and-port-8080",
            "http://example.org:8080/scheme-http-and-port-8080",
        ),
    ] {
        let seen = https_path(addr, "example.org", &crt, "example.org", path, &[])
            .await
            .unwrap();
        assert_eq!(seen.status, 302, "{path}: {}", seen.body);
        assert_eq!(seen.location.as_deref(), Some(location), "{path}");
    }
}

/// A Gateway that asks for client certificates (`spec.tls.frontend`), which Keyway does not
/// check: its HTTPS listeners refuse handshakes rather than serve without the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_validation_is_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = certs::self_signed(dir.path(), "m", KeyForm::EcSec1, &["m.test"]);
    let up = upstream().await;
    let manifests = format!(
        "{}---\n{}",
        gateway(&[("m", Some("m.test"), "m")], up).replace(
            "  gatewayClassName: keyway\n",
            "  gatewayClassName: keyway\n  tls:\n    frontend:\n      default:\n        validation:\n          caCertificateRefs: [{group: \"\", kind: ConfigMap, name: ca}]\n",
        ),
        certs::tls_secret("apps", "m", &crt, &key)
    );
    let h = Harness::start(&manifests).await;
    assert!(https(h.addr(PORT), "m.test", &crt, "m.test", &[])
        .await
        .is_err());
    let report = h.app.state.report();
    let gw = report
        .get(keyway_model::Kind::Gateway, "apps", "gw")
        .unwrap();
    let accepted = gw.sections[0]
        .conditions
        .iter()
        .find(|c| c.type_ == "Accepted")
        .unwrap();
    assert_eq!(
        (accepted.status, accepted.reason.as_str()),
        (false, "UnsupportedValue")
    );
    assert!(
        accepted.message.contains("spec.tls.frontend"),
        "{}",
        accepted.message
    );
}

/// A keep-alive connection over TLS to `addr`, trusting `root`, with `server_name` as SNI.
async fn tls_connection(
    addr: SocketAddr,
    server_name: &str,
    root: &str,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let config = client_config(root);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    http1(tls).await
}

/// A keep-alive connection in plain HTTP to `addr`.
async fn plain_connection(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    http1(tokio::net::TcpStream::connect(addr).await.unwrap()).await
}

/// An HTTP/1.1 client connection over `io`, driven by a task of its own.
async fn http1<T>(io: T) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// The status of `GET /` with `Host: host` on an open connection.
async fn status_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
) -> u16 {
    sender.ready().await.unwrap();
    let req = http::Request::get("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

/// A port that changes protocol on reload (HTTP to HTTPS, and back) keeps its socket; a
/// connection accepted under the old protocol must not reach the new protocol's
/// listeners: a request in plain HTTP must never be served by an HTTPS listener (whose
/// routes may trust that the request came over TLS), nor one over TLS by a plain HTTP
/// listener. Such a connection gets 421, and new connections the new protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_from_before_its_port_changed_protocol_gets_421() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = certs::self_signed(dir.path(), "p", KeyForm::EcSec1, &["p.test"]);
    let up = upstream().await;
    let https_manifests = format!(
        "{}---\n{}",
        gateway(&[("p", Some("p.test"), "p")], up),
        certs::tls_secret("apps", "p", &crt, &key)
    );
    let tls_block = "    tls:\n      certificateRefs: [{kind: Secret, name: p}]\n";
    assert!(https_manifests.contains(tls_block));
    let http_manifests = https_manifests
        .replace(tls_block, "")
        .replace("protocol: HTTPS", "protocol: HTTP");

    // HTTP, then HTTPS.
    let h = Harness::start(&http_manifests).await;
    let addr = h.addr(PORT);
    let mut plain = plain_connection(addr).await;
    assert_eq!(status_on(&mut plain, "p.test").await, 200);
    h.rewrite(&https_manifests).await;
    assert_eq!(h.addr(PORT), addr, "the port keeps its socket");
    assert_eq!(status_on(&mut plain, "p.test").await, 421);
    let mut tls = tls_connection(addr, "p.test", &crt).await;
    assert_eq!(status_on(&mut tls, "p.test").await, 200);

    // And back: the TLS connection opened under HTTPS gets 421, a new plain one is served.
    h.rewrite(&http_manifests).await;
    assert_eq!(h.addr(PORT), addr);
    assert_eq!(status_on(&mut tls, "p.test").await, 421);
    let mut plain = plain_connection(addr).await;
    assert_eq!(status_on(&mut plain, "p.test").await, 200);
}
