//! HTTPS listeners' certificates: `tls.certificateRefs` to a `kubernetes.io/tls` Secret,
//! parsed and checked once per compile.
//!
//! The chain comes from `tls.crt` (PEM, leaf first), the key from `tls.key` (PEM: PKCS#8,
//! PKCS#1 or SEC1). The key must match the leaf certificate. Anything wrong makes the
//! listener refuse handshakes, with `ResolvedRefs=False` saying why:
//! `InvalidCertificateRef` (wrong group or kind, no such Secret, wrong type, unparsable or
//! mismatched) or `RefNotPermitted` (another namespace without a ReferenceGrant). Messages
//! name Secrets and entries, never their content.

use std::sync::Arc;

use keyway_model::gateway::{GatewayListenersTls, GatewayListenersTlsMode};
use keyway_model::secret::TLS_SECRET_TYPE;
use keyway_model::ObjectKey;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::context::Context;

/// Why a listener's certificate cannot be used: the `ResolvedRefs` reason and message.
pub type Refusal = (&'static str, String);

/// The certificate and key of an HTTPS listener of Gateway `gw`.
pub(crate) fn resolve(
    ctx: &Context<'_>,
    gw: &ObjectKey,
    tls: Option<&GatewayListenersTls>,
) -> Result<Arc<CertifiedKey>, Refusal> {
    let invalid = |m: String| ("InvalidCertificateRef", m);
    let Some(tls) = tls else {
        return Err(invalid(
            "an HTTPS listener needs tls.certificateRefs".into(),
        ));
    };
    if matches!(tls.mode, Some(GatewayListenersTlsMode::Passthrough)) {
        return Err(invalid(
            "tls.mode Passthrough is not supported on an HTTPS listener (Terminate is)".into(),
        ));
    }
    let Some(r) = tls.certificate_refs.as_ref().and_then(|r| r.first()) else {
        return Err(invalid("tls.certificateRefs is empty".into()));
    };
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err(invalid(format!(
            "tls.certificateRefs[0]: {kind} in group {group:?} is not supported (a core Secret is)"
        )));
    }
    let ns = r.namespace.as_deref().unwrap_or(&gw.namespace);
    let key = ObjectKey::new(ns, r.name.as_str());
    let from = (
        "gateway.networking.k8s.io",
        "Gateway",
        gw.namespace.as_str(),
    );
    if !ctx.grant_allows(from, ("", "Secret", ns, &r.name)) {
        return Err((
            "RefNotPermitted",
            format!("Secret {key} is in another namespace and no ReferenceGrant there allows Gateway {gw} to use it"),
        ));
    }
    let Some(secret) = ctx.snap.secrets.get(&key) else {
        return Err(invalid(format!("Secret {key} not found")));
    };
    let secret = &secret.value;
    if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
        return Err(invalid(format!(
            "Secret {key} is of type {:?}, not {TLS_SECRET_TYPE}",
            secret.type_.as_deref().unwrap_or("Opaque")
        )));
    }
    let entry = |name: &str| {
        secret
            .entries
            .get(name)
            .map(|v| v.expose())
            .ok_or_else(|| invalid(format!("Secret {key} has no {name}")))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(entry("tls.crt")?)
        .collect::<Result<_, _>>()
        .map_err(|_| {
            invalid(format!(
                "Secret {key}: tls.crt is not a PEM certificate chain"
            ))
        })?;
    if chain.is_empty() {
        return Err(invalid(format!(
            "Secret {key}: tls.crt holds no PEM certificate"
        )));
    }
    let private = PrivateKeyDer::from_pem_slice(entry("tls.key")?).map_err(|_| {
        invalid(format!(
            "Secret {key}: tls.key is not a PEM private key (PKCS#8, PKCS#1 or SEC1)"
        ))
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
        invalid(match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("Secret {key}: tls.key does not match the certificate in tls.crt")
            }
            _ => format!(
                "Secret {key}: the certificate or key cannot be used ({})",
                redact(&e)
            ),
        })
    })?;
    // `from_der` lets a key whose public half it cannot compute through: insist.
    certified.keys_match().map_err(|_| {
        invalid(format!(
            "Secret {key}: tls.key does not match the certificate in tls.crt"
        ))
    })?;
    Ok(Arc::new(certified))
}

/// rustls' error text names what failed (a key type, a parse error), never key bytes; it
/// is still cut to one line.
fn redact(e: &rustls::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}
