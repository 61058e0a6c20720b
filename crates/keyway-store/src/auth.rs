//! API key policies in compiled form: keys are digests, never plaintext.

use std::sync::Arc;

use hashbrown::HashTable;

use http::HeaderName;
use serde::{Serialize, Serializer};

pub use keyway_model::secret::{digest, Client, ClientExtra, KeyDigest, Metadata, SecretKeys};

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

/// The hash of a [`KeyDigest`] in the credential index: its two halves folded together.
/// The digest is already a uniform cryptographic hash, so hashing it again buys nothing.
pub fn bucket(d: &KeyDigest) -> u64 {
    let (lo, hi) = d.split_at(8);
    u64::from_le_bytes(lo.try_into().expect("8 bytes"))
        ^ u64::from_le_bytes(hi.try_into().expect("8 bytes"))
}

/// Every key a policy accepts.
///
/// The keys themselves stay in their Secrets' tables ([`SecretKeys`], built once when each
/// Secret was read and shared with the source that read it); the policy adds only an index
/// of `(table, entry)` pairs hashed by digest: 8 bytes a slot. Composing a policy of many
/// Secrets after one of them changed therefore copies no key and allocates one index.
#[derive(Default)]
pub struct Credentials {
    tables: Vec<Arc<SecretKeys>>,
    index: HashTable<(u32, u32)>,
}

/// A key claimed by two clients while composing [`Credentials`]: tables by position in the
/// list given to [`Credentials::compose`], clients by id. Never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The table that holds the key first, and its client.
    pub first: (usize, Arc<str>),
    /// The table that repeats it for another client, and that client.
    pub again: (usize, Arc<str>),
}

impl Credentials {
    /// Indexes every entry of `tables`, in order. A key already held by an identical record
    /// is skipped silently; a key held by another client, or by the same client with another
    /// expiry or metadata, is a [`Conflict`] (the first keeps it).
    pub fn compose(tables: Vec<Arc<SecretKeys>>) -> (Credentials, Vec<Conflict>) {
        let total = tables.iter().map(|t| t.entries.len()).sum();
        let mut index = HashTable::with_capacity(total);
        let mut conflicts = Vec::new();
        let at = |&(t, e): &(u32, u32)| &tables[t as usize].entries[e as usize].0;
        for (ti, table) in tables.iter().enumerate() {
            for (ei, (d, client)) in table.clients().enumerate() {
                let hash = bucket(d);
                match index.find(hash, |slot| at(slot) == d) {
                    Some(slot) => {
                        let first = tables[slot.0 as usize].client(slot.1 as usize);
                        // The same key twice is one credential only if it is the same
                        // record: another client, or the same client with another expiry
                        // or metadata, is a conflict (the first must not win silently).
                        if first != client {
                            conflicts.push(Conflict {
                                first: (slot.0 as usize, Arc::from(first.id())),
                                again: (ti, Arc::from(client.id())),
                            });
                        }
                    }
                    None => {
                        index.insert_unique(hash, (ti as u32, ei as u32), |slot| bucket(at(slot)));
                    }
                }
            }
        }
        (Credentials { tables, index }, conflicts)
    }

    /// The client owning the key with digest `d`: one index probe and one table read.
    pub fn get(&self, d: &KeyDigest) -> Option<Client<'_>> {
        self.index
            .find(bucket(d), |&(t, e)| {
                self.tables[t as usize].entries[e as usize].0 == *d
            })
            .map(|&(t, e)| self.tables[t as usize].client(e as usize))
    }

    /// Number of keys accepted.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no key is accepted.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

impl FromIterator<(KeyDigest, Arc<str>)> for Credentials {
    /// One table of the given pairs (tests and tools; the compiler composes Secrets' tables).
    fn from_iter<I: IntoIterator<Item = (KeyDigest, Arc<str>)>>(pairs: I) -> Self {
        let table = SecretKeys {
            entries: pairs.into_iter().collect(),
            ..SecretKeys::default()
        };
        Credentials::compose(vec![Arc::new(table)]).0
    }
}

impl std::fmt::Debug for Credentials {
    /// Counts only, as in dumps: a digest of a short key can be searched for.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} keys in {} tables>", self.len(), self.tables.len())
    }
}

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
    /// `metadataHeaders`: metadata name to the header set from it on an allowed request
    /// (removed when the client has no such metadata).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "ser_metadata_headers"
    )]
    pub metadata_headers: Vec<(Box<str>, HeaderName)>,
    /// Digest of each key to its client id. Shown in dumps only as a count.
    #[serde(rename = "keys", serialize_with = "ser_count")]
    pub credentials: Credentials,
}

impl ApiKeyPolicy {
    /// The client owning `key`, if any: one digest and one lookup.
    pub fn client_for(&self, key: &[u8]) -> Option<Client<'_>> {
        self.credentials.get(&digest(key))
    }
}

fn ser_names<S: Serializer>(n: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(n.iter().map(|n| n.as_str()))
}

fn ser_metadata_headers<S: Serializer>(
    m: &[(Box<str>, HeaderName)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, h)| (&**k, h.as_str())))
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

    fn policy() -> ApiKeyPolicy {
        let credentials = Credentials::from_iter([
            (digest(b"k-1"), Arc::from("alice")),
            (digest(b"k-2"), Arc::from("bob")),
        ]);
        ApiKeyPolicy {
            name: Arc::from("apps/p"),
            headers: Vec::new(),
            queries: Vec::new(),
            cookies: Vec::new(),
            forward_credential: false,
            client_id_header: None,
            metadata_headers: Vec::new(),
            credentials,
        }
    }

    #[test]
    fn a_key_finds_its_client_and_nothing_else_does() {
        let p = policy();
        assert_eq!(p.client_for(b"k-1").map(|c| c.id()), Some("alice"));
        assert_eq!(p.client_for(b"k-2").map(|c| c.id()), Some("bob"));
        assert_eq!(p.client_for(b"k-3"), None);
        assert_eq!(p.client_for(b"K-1"), None);
        assert_eq!(p.client_for(b""), None);
    }

    #[test]
    fn the_index_hash_folds_the_digest_so_keys_spread() {
        // A constant or partial hash would put a million keys in one probe sequence: the
        // request path's one lookup would become a scan.
        assert_eq!(bucket(&digest(b"k-1")), FOLDED_K1);
        let hashes: std::collections::HashSet<u64> = (0..1000u32)
            .map(|i| bucket(&digest(&i.to_le_bytes())))
            .collect();
        assert_eq!(hashes.len(), 1000);
    }

    /// The two 8-byte halves of `digest(b"k-1")`, little-endian, XORed.
    const FOLDED_K1: u64 = 12799711948255031602;

    fn table(pairs: &[(&str, &str)]) -> Arc<SecretKeys> {
        Arc::new(SecretKeys {
            entries: pairs
                .iter()
                .map(|(client, key)| (digest(key.as_bytes()), Arc::from(*client)))
                .collect(),
            ..SecretKeys::default()
        })
    }

    #[test]
    fn tables_compose_into_one_index_sharing_their_keys() {
        let a = table(&[("alice", "k-1"), ("alice", "k-1b")]);
        let b = table(&[("bob", "k-2"), ("alice", "k-1")]);
        let (c, conflicts) = Credentials::compose(vec![a.clone(), b.clone()]);
        // The same client with the same key in two tables is one key, silently.
        assert!(conflicts.is_empty(), "{conflicts:?}");
        assert_eq!((c.len(), c.is_empty()), (3, false));
        assert_eq!(c.get(&digest(b"k-1b")).map(|c| c.id()), Some("alice"));
        assert_eq!(c.get(&digest(b"k-2")).map(|c| c.id()), Some("bob"));
        assert_eq!(c.get(&digest(b"k-3")), None);
        // The index holds the tables themselves, not copies.
        assert!(Arc::ptr_eq(&c.tables[1], &b));
        assert_eq!(format!("{c:?}"), "<3 keys in 2 tables>");
        assert!(Credentials::default().is_empty());
    }

    #[test]
    fn a_key_of_two_clients_is_a_conflict_the_first_keeps() {
        let (c, conflicts) = Credentials::compose(vec![
            table(&[("alice", "k-1")]),
            table(&[("bob", "k-2")]),
            table(&[("carol", "k-2"), ("dave", "k-1")]),
        ]);
        assert_eq!(
            conflicts,
            vec![
                Conflict {
                    first: (1, Arc::from("bob")),
                    again: (2, Arc::from("carol")),
                },
                Conflict {
                    first: (0, Arc::from("alice")),
                    again: (2, Arc::from("dave")),
                },
            ]
        );
        assert_eq!(c.get(&digest(b"k-2")).map(|c| c.id()), Some("bob"));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn many_keys_in_many_tables_are_all_found() {
        let tables: Vec<Arc<SecretKeys>> = (0..20)
            .map(|t| {
                Arc::new(SecretKeys {
                    entries: (0..500)
                        .map(|i| {
                            let key = format!("k-{t}-{i}");
                            (digest(key.as_bytes()), Arc::from(format!("c-{t}-{i}")))
                        })
                        .collect(),
                    ..SecretKeys::default()
                })
            })
            .collect();
        let (c, conflicts) = Credentials::compose(tables);
        assert!(conflicts.is_empty());
        assert_eq!(c.len(), 10_000);
        for (t, i) in [(0, 0), (7, 250), (19, 499)] {
            let found = c.get(&digest(format!("k-{t}-{i}").as_bytes()));
            assert_eq!(
                found.map(|c| c.id().to_string()),
                Some(format!("c-{t}-{i}"))
            );
        }
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

    #[test]
    fn the_same_client_and_key_with_another_expiry_is_a_conflict() {
        let entries = |value: &'static [u8]| {
            Arc::new(SecretKeys::from_entries([("alice", value)].into_iter()))
        };
        let plain = entries(b"k-1");
        let expiring = entries(br#"{"key": "k-1", "expiresAt": "2020-01-01T00:00:00Z"}"#);
        // Identical records: one credential. Another expiry: a conflict, not a silent winner.
        let (_, same) = Credentials::compose(vec![plain.clone(), entries(b"k-1")]);
        assert!(same.is_empty());
        let (_, conflicts) = Credentials::compose(vec![plain, expiring]);
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    }
}
