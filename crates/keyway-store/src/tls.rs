//! A TLS listener's certificate, as the handshake needs it.
//!
//! The compiler parses and checks the certificate chain and key once per config; the
//! data plane's SNI resolver hands the result to rustls for every handshake that selects
//! the listener. A listener whose certificate cannot be used still takes part in SNI
//! selection, so a client asking for its hostname is refused rather than served another
//! listener's certificate.

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

/// What a TLS listener presents.
#[derive(Clone, Debug)]
pub enum ListenerTls {
    /// The chain and key to present.
    Ready(Arc<CertifiedKey>),
    /// Refuse every handshake that selects this listener; the reason is in its status.
    Refused(Arc<str>),
}

impl ListenerTls {
    /// The certificate to present, if any.
    pub fn certified_key(&self) -> Option<&Arc<CertifiedKey>> {
        match self {
            ListenerTls::Ready(k) => Some(k),
            ListenerTls::Refused(_) => None,
        }
    }
}

/// `/config_dump` shows which certificate (SHA-256 of the leaf) or why none, never a key.
impl Serialize for ListenerTls {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ListenerTls::Ready(k) => {
                let leaf = k.cert.first().map(|c| Sha256::digest(c.as_ref()));
                let hex: String = leaf
                    .map(|d| d.iter().map(|b| format!("{b:02x}")).collect())
                    .unwrap_or_default();
                s.collect_str(&format_args!("certificate sha256:{hex}"))
            }
            ListenerTls::Refused(why) => s.collect_str(&format_args!("refused: {why}")),
        }
    }
}
