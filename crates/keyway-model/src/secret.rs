//! Secrets, held so that their values cannot leak through `Debug` or serialization.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::core::ObjectMeta;

/// The first 128 bits of the SHA-256 of an API key: how every key is held once read.
///
/// 128 bits keep a million keys in well under 128 bytes each, while finding a second
/// string with the same truncated digest stays a 2^128 search.
pub type KeyDigest = [u8; 16];

/// Digests a presented or configured key.
pub fn digest(key: &[u8]) -> KeyDigest {
    let full: [u8; 32] = Sha256::digest(key).into();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// The `type` of Secrets holding a listener certificate: the one type whose values are
/// kept as they are, because a TLS handshake needs the key itself.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// A Kubernetes Secret as Keyway keeps it: metadata and its entries as API keys, digested.
///
/// `stringData` is merged over `data` as `kubectl apply` does, then every entry is
/// digested the moment the Secret is read ([`SecretKeys`]): neither source keeps an API
/// key's plaintext, and a change to one Secret costs one Secret's digests, not all of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Secret {
    /// Object metadata (name, namespace, labels, ...).
    pub metadata: ObjectMeta,
    /// The Secret's `type`, if any.
    pub type_: Option<String>,
    /// Every entry as an API key credential (client id = entry name).
    pub keys: Arc<SecretKeys>,
    /// Plaintext entries, kept only for [`TLS_SECRET_TYPE`] Secrets; empty otherwise.
    /// Values are only reachable through [`SecretValue::expose`].
    pub entries: BTreeMap<String, SecretValue>,
}

impl Secret {
    /// Builds a Secret from the upstream type, merging `stringData` over `data`, and
    /// digests its entries; the plaintext is dropped here unless it is a TLS Secret.
    pub fn from_k8s(secret: k8s_openapi::api::core::v1::Secret) -> Self {
        let mut entries = BTreeMap::new();
        for (name, bytes) in secret.data.unwrap_or_default() {
            entries.insert(name, SecretValue(bytes.0));
        }
        for (name, text) in secret.string_data.unwrap_or_default() {
            entries.insert(name, SecretValue(text.into_bytes()));
        }
        let keys = Arc::new(SecretKeys::from_entries(
            entries.iter().map(|(n, v)| (n.as_str(), v.expose())),
        ));
        if secret.type_.as_deref() != Some(TLS_SECRET_TYPE) {
            entries.clear();
        }
        Secret {
            metadata: secret.metadata,
            type_: secret.type_,
            keys,
            entries,
        }
    }
}

/// One Secret's entries as credentials: what a policy's key table is composed from.
#[derive(Default, PartialEq)]
pub struct SecretKeys {
    /// Digest of each usable key and its client id, in entry-name order.
    pub entries: Vec<(KeyDigest, Arc<str>)>,
    /// Entries that cannot be credentials, each described by its name (never its value).
    pub problems: Vec<String>,
}

impl SecretKeys {
    /// Digests `(entry name, value)` pairs. Values are trimmed of surrounding ASCII
    /// whitespace (an `echo KEY | base64` newline must not lock a user out); empty values
    /// are skipped; a name that cannot travel in a header cannot be a client id.
    pub fn from_entries<'a>(entries: impl Iterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut out = SecretKeys::default();
        for (client, value) in entries {
            let key = value.trim_ascii();
            if key.is_empty() {
                continue;
            }
            if !is_header_value(client) {
                out.problems
                    .push(format!("entry name {client:?} cannot be a client id"));
                continue;
            }
            out.entries.push((digest(key), Arc::from(client)));
        }
        out.entries.shrink_to_fit();
        out
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the Secret has no usable key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for SecretKeys {
    /// Counts only: a truncated digest of a short key can be searched for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<{} keys, {} problems>",
            self.entries.len(),
            self.problems.len()
        )
    }
}

/// What `http::HeaderValue::from_str` accepts: a client id is forwarded in a header.
fn is_header_value(s: &str) -> bool {
    s.bytes().all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t')
}

/// A secret value. `Debug` prints only its length; there is no `Display` or `Serialize`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    /// Wraps raw bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        SecretValue(bytes.into())
    }

    /// The raw bytes. Call sites are few and reviewed: compile them into digests, never log.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let v = SecretValue::new("k-123-very-secret");
        assert_eq!(format!("{v:?}"), "<redacted 17 bytes>");
    }

    #[test]
    fn string_data_wins_over_data() {
        let k = k8s_openapi::api::core::v1::Secret {
            data: Some(
                [(
                    "a".to_string(),
                    k8s_openapi::ByteString(b"from-data".to_vec()),
                )]
                .into(),
            ),
            string_data: Some([("a".to_string(), "from-string".to_string())].into()),
            ..Default::default()
        };
        let s = Secret::from_k8s(k);
        assert_eq!(
            s.keys.entries,
            vec![(digest(b"from-string"), Arc::from("a"))]
        );
    }

    #[test]
    fn digests_are_the_first_128_bits_of_sha256() {
        // `printf k-1 | sha256sum | cut -c1-32`
        assert_eq!(
            digest(b"k-1"),
            [124, 53, 197, 161, 120, 93, 32, 112, 78, 68, 213, 222, 75, 235, 129, 193]
        );
        assert_ne!(digest(b"k-1"), digest(b"k-2"));
    }

    #[test]
    fn only_tls_secrets_keep_their_plaintext() {
        let k = |type_: &str| k8s_openapi::api::core::v1::Secret {
            type_: Some(type_.into()),
            string_data: Some([("tls.key".to_string(), "PEM".to_string())].into()),
            ..Default::default()
        };
        assert!(Secret::from_k8s(k("Opaque")).entries.is_empty());
        let tls = Secret::from_k8s(k(TLS_SECRET_TYPE));
        assert_eq!(tls.entries["tls.key"].expose(), b"PEM");
        assert_eq!(tls.keys.len(), 1);
    }

    #[test]
    fn entries_become_trimmed_digests_and_bad_names_problems() {
        let keys = SecretKeys::from_entries(
            [
                ("alice", &b" k-1\n"[..]),
                ("empty", b" \t"),
                ("bad\nname", b"k-2"),
                ("tab\tok", b"k-3"),
            ]
            .into_iter(),
        );
        assert_eq!(
            keys.entries,
            vec![
                (digest(b"k-1"), Arc::from("alice")),
                (digest(b"k-3"), Arc::from("tab\tok"))
            ]
        );
        assert_eq!(
            keys.problems,
            vec![r#"entry name "bad\nname" cannot be a client id"#]
        );
        assert_eq!(format!("{keys:?}"), "<2 keys, 1 problems>");
        assert_eq!((keys.len(), keys.is_empty()), (2, false));
        assert!(SecretKeys::default().is_empty());
        assert!(!is_header_value("del\u{7f}"));
        assert!(is_header_value("caf\u{e9} ok"));
    }
}
