//! Certificates made at test time with `openssl` (a program we did not write), in every
//! form a `kubernetes.io/tls` Secret may hold them.

use std::path::Path;
use std::process::Command;

/// Key algorithm and PEM form.
#[derive(Clone, Copy, Debug)]
pub enum KeyForm {
    /// ECDSA P-256, `EC PRIVATE KEY` (SEC1).
    EcSec1,
    /// ECDSA P-256, `PRIVATE KEY` (PKCS#8).
    EcPkcs8,
    /// RSA 2048, `RSA PRIVATE KEY` (PKCS#1).
    RsaPkcs1,
    /// RSA 2048, `PRIVATE KEY` (PKCS#8).
    RsaPkcs8,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// Writes key `name.key` in `form`; returns its PEM.
pub fn key(dir: &Path, name: &str, form: KeyForm) -> String {
    let file = format!("{name}.key");
    match form {
        KeyForm::EcSec1 => openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &file,
            ],
        ),
        KeyForm::EcPkcs8 => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &file,
            ],
        ),
        KeyForm::RsaPkcs1 => openssl(dir, &["genrsa", "-traditional", "-out", &file, "2048"]),
        KeyForm::RsaPkcs8 => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &file,
            ],
        ),
    }
    read(dir, &file)
}

fn san(names: &[&str]) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    format!("subjectAltName={}", list.join(","))
}

/// A self-signed certificate for `names` with a new key in `form`: `(cert PEM, key PEM)`.
/// The certificate is its own root.
pub fn self_signed(dir: &Path, name: &str, form: KeyForm, names: &[&str]) -> (String, String) {
    let key = key(dir, name, form);
    let crt = format!("{name}.crt");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={}", names[0]),
            "-addext",
            &san(names),
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-days",
            "2",
            "-out",
            &crt,
        ],
    );
    (read(dir, &crt), key)
}

/// A root CA, an intermediate it signs, and a leaf for `names` the intermediate signs:
/// `(leaf + intermediate PEM, leaf key PEM, root PEM)`.
pub fn chain(dir: &Path, name: &str, names: &[&str]) -> (String, String, String) {
    let root = format!("{name}-root");
    let inter = format!("{name}-inter");
    key(dir, &root, KeyForm::EcPkcs8);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{root}.key"),
            "-subj",
            "/CN=Test Root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-days",
            "2",
            "-out",
            &format!("{root}.crt"),
        ],
    );
    key(dir, &inter, KeyForm::EcPkcs8);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{inter}.key"),
            "-subj",
            "/CN=Test Intermediate",
            "-out",
            &format!("{inter}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{inter}.ext")),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{inter}.csr"),
            "-CA",
            &format!("{root}.crt"),
            "-CAkey",
            &format!("{root}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{inter}.ext"),
            "-out",
            &format!("{inter}.crt"),
        ],
    );
    let leaf_key = key(dir, name, KeyForm::EcSec1);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={}", names[0]),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("{}\nbasicConstraints=CA:FALSE\n", san(names)),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{inter}.crt"),
            "-CAkey",
            &format!("{inter}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
    let leaf = read(dir, &format!("{name}.crt"));
    let bundle = format!("{leaf}{}", read(dir, &format!("{inter}.crt")));
    (bundle, leaf_key, read(dir, &format!("{root}.crt")))
}

/// A Secret manifest (YAML) holding `entries` as `stringData`.
pub fn secret(ns: &str, name: &str, type_: &str, entries: &[(&str, &str)]) -> String {
    let data: serde_json::Map<String, serde_json::Value> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    let doc = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns}, "type": type_, "stringData": data});
    serde_yaml_ng::to_string(&doc).unwrap()
}

/// A `kubernetes.io/tls` Secret manifest.
pub fn tls_secret(ns: &str, name: &str, cert: &str, key: &str) -> String {
    secret(
        ns,
        name,
        "kubernetes.io/tls",
        &[("tls.crt", cert), ("tls.key", key)],
    )
}
