//! TLS termination for HTTPS listeners (rustls, ring provider).
//!
//! One `ServerConfig` per port, whose certificate resolver reads the *current* config on
//! every handshake: the server name (SNI) picks the listener exactly as a `Host` header
//! would (exact hostname, then the most specific wildcard, then the listener without one),
//! and that listener's certificate answers. A reload that swaps in a changed certificate
//! is therefore used by the very next handshake, while established connections keep the
//! session they have. A listener whose certificate cannot be used answers nothing: the
//! handshake fails rather than fall back to another listener's certificate.
//!
//! TLS 1.2 and 1.3 only; ALPN offers `h2` and `http/1.1`.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::request::Gateway;

/// The server side of TLS for listener port `port`.
pub fn server_config(gateway: Arc<Gateway>, port: u16) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { gateway, port }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Picks the certificate of the listener the server name selects, from the config being
/// served at the moment of the handshake.
struct SniResolver {
    gateway: Arc<Gateway>,
    port: u16,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SniResolver(port {})", self.port)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let config = self.gateway.config();
        let listener = config
            .port(self.port)?
            .listener(hello.server_name().unwrap_or(""))?;
        listener.tls.as_ref()?.certified_key().cloned()
    }
}
