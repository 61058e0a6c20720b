//! Secrets, held so that their values cannot leak through `Debug` or serialization.

use std::collections::BTreeMap;
use std::fmt;

use crate::core::ObjectMeta;

/// A Kubernetes Secret as Keyway keeps it: metadata and decoded entries.
///
/// `stringData` is merged over `data` at load time, as `kubectl apply` does, so consumers
/// see one map. Values are only reachable through [`SecretValue::expose`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Secret {
    /// Object metadata (name, namespace, labels, ...).
    pub metadata: ObjectMeta,
    /// The Secret's `type`, if any.
    pub type_: Option<String>,
    /// Entry name to value.
    pub entries: BTreeMap<String, SecretValue>,
}

impl Secret {
    /// Builds a Secret from the upstream type, merging `stringData` over `data`.
    pub fn from_k8s(secret: k8s_openapi::api::core::v1::Secret) -> Self {
        let mut entries = BTreeMap::new();
        for (name, bytes) in secret.data.unwrap_or_default() {
            entries.insert(name, SecretValue(bytes.0));
        }
        for (name, text) in secret.string_data.unwrap_or_default() {
            entries.insert(name, SecretValue(text.into_bytes()));
        }
        Secret {
            metadata: secret.metadata,
            type_: secret.type_,
            entries,
        }
    }
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
        assert_eq!(s.entries["a"].expose(), b"from-string");
    }
}
