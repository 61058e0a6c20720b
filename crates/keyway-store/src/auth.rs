//! API key policies in compiled form: keys are digests, never plaintext.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use http::HeaderName;
use serde::{Serialize, Serializer};

pub use keyway_model::secret::{digest, KeyDigest};

/// The authentication a route requires.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Auth {
    /// No authentication (none attached, or `disable: {}`).
    #[default]
    None,
    /// API key authentication.
    ApiKey {
        /// The policy.
        policy: Arc<ApiKeyPolicy>,
    },
    /// The policy that should protect this route could not be built: fail closed (500).
    Invalid {
        /// `namespace/name` of the TrafficPolicy.
        policy: Arc<str>,
    },
}

impl Auth {
    /// The policy that decides this authentication, if any (for metrics and logs).
    pub fn policy_name(&self) -> Option<&Arc<str>> {
        match self {
            Auth::None => None,
            Auth::ApiKey { policy } => Some(&policy.name),
            Auth::Invalid { policy } => Some(policy),
        }
    }
}

/// Hashes a [`KeyDigest`] by taking 8 of its bytes: the input is already a uniform
/// cryptographic hash, so running SipHash over it again buys nothing.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 16]` hashes as its length prefix, then the bytes: fold it all in.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
}

/// Digest -> client id.
pub type Credentials = HashMap<KeyDigest, Arc<str>, BuildHasherDefault<DigestHasher>>;

/// A compiled `apiKeyAuth`.
#[derive(Debug, Serialize)]
pub struct ApiKeyPolicy {
    /// `namespace/name` of the TrafficPolicy (metrics, logs).
    pub name: Arc<str>,
    /// Header sources, in list order.
    #[serde(serialize_with = "ser_names")]
    pub headers: Vec<HeaderName>,
    /// Query parameter sources, in list order.
    pub queries: Vec<String>,
    /// Cookie sources, in list order.
    pub cookies: Vec<String>,
    /// Keep the key in the forwarded request.
    pub forward_credential: bool,
    /// Header that receives the client id.
    #[serde(serialize_with = "ser_opt_name")]
    pub client_id_header: Option<HeaderName>,
    /// Digest of each key to its client id. Shown in dumps only as a count.
    #[serde(rename = "keys", serialize_with = "ser_count")]
    pub credentials: Credentials,
}

impl ApiKeyPolicy {
    /// The client owning `key`, if any: one digest and one lookup.
    pub fn client_for(&self, key: &[u8]) -> Option<&Arc<str>> {
        self.credentials.get(&digest(key))
    }
}

fn ser_names<S: Serializer>(n: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(n.iter().map(|n| n.as_str()))
}

fn ser_opt_name<S: Serializer>(n: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match n {
        Some(n) => s.serialize_some(n.as_str()),
        None => s.serialize_none(),
    }
}

fn ser_count<S: Serializer>(c: &Credentials, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(c.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn policy() -> ApiKeyPolicy {
        let mut credentials = Credentials::default();
        credentials.insert(digest(b"k-1"), Arc::from("alice"));
        credentials.insert(digest(b"k-2"), Arc::from("bob"));
        ApiKeyPolicy {
            name: Arc::from("apps/p"),
            headers: Vec::new(),
            queries: Vec::new(),
            cookies: Vec::new(),
            forward_credential: false,
            client_id_header: None,
            credentials,
        }
    }

    #[test]
    fn a_key_finds_its_client_and_nothing_else_does() {
        let p = policy();
        assert_eq!(p.client_for(b"k-1").map(|c| c.as_ref()), Some("alice"));
        assert_eq!(p.client_for(b"k-2").map(|c| c.as_ref()), Some("bob"));
        assert_eq!(p.client_for(b"k-3"), None);
        assert_eq!(p.client_for(b"K-1"), None);
        assert_eq!(p.client_for(b""), None);
    }

    #[test]
    fn the_map_hash_folds_the_digest_so_keys_spread() {
        // A constant or partial hash would put a million keys in one bucket chain: the
        // request path's one lookup would become a scan.
        let build = BuildHasherDefault::<DigestHasher>::default();
        // The length prefix 16, then the 16 bytes, folded 8 at a time with XOR.
        assert_eq!(build.hash_one(digest(b"k-1")), 12799711948255031586);
        let hashes: std::collections::HashSet<u64> = (0..1000u32)
            .map(|i| build.hash_one(digest(&i.to_le_bytes())))
            .collect();
        assert_eq!(hashes.len(), 1000);
    }

    #[test]
    fn the_policy_behind_an_authentication() {
        assert_eq!(Auth::None.policy_name(), None);
        let invalid = Auth::Invalid {
            policy: Arc::from("apps/broken"),
        };
        assert_eq!(
            invalid.policy_name().map(|p| p.as_ref()),
            Some("apps/broken")
        );
        let key = Auth::ApiKey {
            policy: Arc::new(policy()),
        };
        assert_eq!(key.policy_name().map(|p| p.as_ref()), Some("apps/p"));
    }
}
