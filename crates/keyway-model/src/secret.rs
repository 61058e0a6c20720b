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
        // A certificate Secret holds no API keys: its `tls.crt` is sent to every client in
        // the handshake, and must never open a route a label selector happens to reach.
        let keys = if secret.type_.as_deref() == Some(TLS_SECRET_TYPE) {
            Arc::new(SecretKeys {
                problems: vec![
                    "a kubernetes.io/tls Secret holds a certificate, not API keys".into(),
                ],
                ..SecretKeys::default()
            })
        } else {
            let keys =
                SecretKeys::from_entries(entries.iter().map(|(n, v)| (n.as_str(), v.expose())));
            entries.clear();
            Arc::new(keys)
        };
        Secret {
            metadata: secret.metadata,
            type_: secret.type_,
            keys,
            entries,
        }
    }
}

/// One Secret's entries as credentials: what a policy's key table is composed from.
///
/// A plain kgateway key costs one digest and one shared client id in `entries`; the few
/// entries with an expiry or metadata have those in `extras`, a side table looked up by
/// entry position. Keeping them out of line holds a million plain keys under 128 bytes
/// each (a pointer per entry for extras that most keys lack measured 131).
#[derive(Default, PartialEq)]
pub struct SecretKeys {
    /// Digest of each usable key and its client id, in entry-name order.
    pub entries: Vec<(KeyDigest, Arc<str>)>,
    /// Expiry and metadata of the entries that have either, by position in `entries`,
    /// ascending.
    pub extras: Vec<(u32, ClientExtra)>,
    /// Entries that cannot be credentials, each described by its name (never its value).
    pub problems: Vec<String>,
}

impl SecretKeys {
    /// Reads `(entry name, value)` pairs (SPEC sections 3 and 10). A value is a plain key,
    /// or a JSON object with `key` or `keyHash`, and optionally `expiresAt` and `metadata`.
    /// Plain values are trimmed of surrounding ASCII whitespace (an `echo KEY | base64`
    /// newline must not lock a user out); empty values are skipped; a name that cannot
    /// travel in a header cannot be a client id. Problems name entries, never values.
    pub fn from_entries<'a>(entries: impl Iterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut out = SecretKeys::default();
        let mut shared = Interner::default();
        for (client, value) in entries {
            let value = value.trim_ascii();
            if value.is_empty() {
                continue;
            }
            if http::HeaderValue::from_str(client).is_err() {
                out.problems
                    .push(format!("entry name {client:?} cannot be a client id"));
                continue;
            }
            let id: Arc<str> = Arc::from(client);
            if value.first() == Some(&b'{') {
                match structured(value, &mut shared) {
                    Ok((digest, extra)) => {
                        if let Some(extra) = extra {
                            out.extras.push((out.entries.len() as u32, extra));
                        }
                        out.entries.push((digest, id));
                    }
                    Err(why) => out.problems.push(format!("entry {client:?}: {why}")),
                }
                continue;
            }
            out.entries.push((digest(value), id));
        }
        out.entries.shrink_to_fit();
        out.extras.shrink_to_fit();
        out
    }

    /// The record of entry `i` (a position in `entries`).
    pub fn client(&self, i: usize) -> Client<'_> {
        let extra = self
            .extras
            .binary_search_by_key(&i, |&(e, _)| e as usize)
            .ok()
            .map(|j| &self.extras[j].1);
        Client {
            id: &self.entries[i].1,
            extra,
        }
    }

    /// Every entry's digest and record, in order.
    pub fn clients(&self) -> impl Iterator<Item = (&KeyDigest, Client<'_>)> {
        (0..self.entries.len()).map(|i| (&self.entries[i].0, self.client(i)))
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

/// One client's credential record: what a request that presents its key gets.
///
/// A view into its Secret's table: the client id, and, for JSON entries that have them,
/// the expiry and metadata. Copying it copies two pointers. (The client-id header value
/// is built per request: keeping it ready in every record measured 141 bytes per key at
/// a million plain keys, over the 128-byte budget.)
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Client<'a> {
    id: &'a Arc<str>,
    extra: Option<&'a ClientExtra>,
}

/// Metadata of one client, name to header value, in name order. Shared between the
/// clients of a Secret that have the same metadata.
pub type Metadata = Arc<[(Arc<str>, http::HeaderValue)]>;

/// Expiry and metadata of a client from a JSON entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientExtra {
    /// From this instant on the key is refused (`expired_api_key`).
    pub expires_at: Option<std::time::SystemTime>,
    /// `metadata`, if the entry has any.
    pub metadata: Option<Metadata>,
}

impl ClientExtra {
    /// The expiry as RFC 3339 in UTC, for messages.
    pub fn expires_text(&self) -> Option<String> {
        let at = self.expires_at?;
        Some(
            k8s_openapi::jiff::Timestamp::try_from(at)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| "a time out of range".into()),
        )
    }
}

impl<'a> Client<'a> {
    /// A client with a plain key (tests and tools; tables hand out records of their own).
    pub fn plain(id: &'a Arc<str>) -> Client<'a> {
        Client { id, extra: None }
    }

    /// The client id (the Secret entry's name).
    pub fn id(&self) -> &'a str {
        self.id
    }

    /// The client id, shared (metrics labels and log lines hold it without a copy).
    pub fn id_arc(&self) -> &'a Arc<str> {
        self.id
    }

    /// When the key stops being accepted, if ever.
    pub fn expires_at(&self) -> Option<std::time::SystemTime> {
        self.extra.and_then(|e| e.expires_at)
    }

    /// Whether the key is expired at `now`.
    pub fn expired(&self, now: std::time::SystemTime) -> bool {
        self.expires_at().is_some_and(|t| now >= t)
    }

    /// Expiry and metadata, if the entry had either.
    pub fn extra(&self) -> Option<&'a ClientExtra> {
        self.extra
    }

    /// The value of metadata `name`, if the client has it.
    pub fn metadata(&self, name: &str) -> Option<&'a http::HeaderValue> {
        let m = self.extra?.metadata.as_deref()?;
        m.binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &m[i].1)
    }
}

impl fmt::Debug for Client<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Client({:?})", self.id())
    }
}

/// Metadata names and whole metadata maps seen in one Secret, so that clients sharing a
/// tier or an organisation share its allocation.
#[derive(Default)]
struct Interner {
    names: std::collections::HashSet<Arc<str>>,
    maps: std::collections::HashSet<Metadata>,
}

impl Interner {
    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.names.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        self.names.insert(n.clone());
        n
    }

    fn map(&mut self, pairs: Vec<(Arc<str>, http::HeaderValue)>) -> Metadata {
        if let Some(m) = self.maps.get(&pairs[..]) {
            return m.clone();
        }
        let m: Metadata = pairs.into();
        self.maps.insert(m.clone());
        m
    }
}

/// A JSON entry: its key's digest and the client's extras. Errors describe the entry's
/// shape (field names, types, formats), never a value of it.
fn structured(
    value: &[u8],
    shared: &mut Interner,
) -> Result<(KeyDigest, Option<ClientExtra>), String> {
    let json: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| match e.classify() {
            serde_json::error::Category::Eof => "not valid JSON (cut short)".to_string(),
            _ => format!(
                "not valid JSON (at line {} column {})",
                e.line(),
                e.column()
            ),
        })?;
    let Some(map) = json.as_object() else {
        return Err("not a JSON object".into());
    };
    // The field's name is not repeated: an entry written backwards would put its key there.
    if map
        .keys()
        .any(|f| !matches!(f.as_str(), "key" | "keyHash" | "expiresAt" | "metadata"))
    {
        return Err(
            "has an unknown field (key, keyHash, expiresAt and metadata are allowed)".into(),
        );
    }
    if duplicate_fields(value) {
        return Err("has a field twice".into());
    }
    let digest = match (map.get("key"), map.get("keyHash")) {
        (Some(_), Some(_)) => return Err("has both key and keyHash (one is allowed)".into()),
        (None, None) => return Err("has neither key nor keyHash".into()),
        (Some(k), None) => {
            let k = k.as_str().ok_or("key is not a string")?.trim();
            if k.is_empty() {
                return Err("key is empty".into());
            }
            digest(k.as_bytes())
        }
        (None, Some(h)) => key_hash(h.as_str().ok_or("keyHash is not a string")?)?,
    };
    let mut extra = ClientExtra::default();
    if let Some(at) = map.get("expiresAt") {
        let text = at.as_str().ok_or("expiresAt is not a string")?;
        let ts: k8s_openapi::jiff::Timestamp = text
            .parse()
            .map_err(|_| "expiresAt is not an RFC 3339 time (such as 2027-01-31T00:00:00Z)")?;
        extra.expires_at = Some(std::time::SystemTime::from(ts));
    }
    if let Some(m) = map.get("metadata") {
        let m = m.as_object().ok_or("metadata is not an object")?;
        let mut pairs = Vec::with_capacity(m.len());
        for (name, v) in m {
            let v = v
                .as_str()
                .ok_or_else(|| format!("metadata.{name} is not a string"))?;
            let v = http::HeaderValue::from_str(v)
                .map_err(|_| format!("metadata.{name} cannot be a header value"))?;
            pairs.push((shared.name(name), v));
        }
        if !pairs.is_empty() {
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            extra.metadata = Some(shared.map(pairs));
        }
    }
    let extra = (extra != ClientExtra::default()).then_some(extra);
    Ok((digest, extra))
}

/// Whether a JSON object (or one nested in it) names a field twice: JSON parsers keep the
/// last, so `{"expiresAt": "2020-…", "expiresAt": "2999-…"}` would quietly never expire.
fn duplicate_fields(value: &[u8]) -> bool {
    struct Check;
    impl<'de> serde::de::Visitor<'de> for Check {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut seen = std::collections::BTreeSet::new();
            let mut dup = false;
            while let Some(k) = map.next_key::<String>()? {
                dup |= !seen.insert(k);
                dup |= map.next_value::<Nested>()?.0;
            }
            Ok(dup)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut dup = false;
            while let Some(n) = seq.next_element::<Nested>()? {
                dup |= n.0;
            }
            Ok(dup)
        }
        fn visit_str<E>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    struct Nested(bool);
    impl<'de> serde::Deserialize<'de> for Nested {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Check).map(Nested)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(value);
    serde::Deserializer::deserialize_any(&mut de, Check).unwrap_or(true)
}

/// `sha256:<64 lowercase hex>`: the SHA-256 of the key, whose first 128 bits are the
/// digest every key is held as.
fn key_hash(text: &str) -> Result<KeyDigest, String> {
    let Some(hex) = text.strip_prefix("sha256:") else {
        return Err("keyHash must start with \"sha256:\" (the only algorithm)".into());
    };
    if hex.len() != 64 {
        return Err(format!(
            "keyHash must be sha256: and 64 hex digits, not {}",
            hex.len()
        ));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("keyHash must be lowercase hex".into());
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| "keyHash is not hex")?;
    }
    Ok(out)
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
        // A certificate is never an API key (its tls.crt is public).
        assert_eq!(tls.keys.len(), 0);
        assert_eq!(tls.keys.problems.len(), 1);
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
        let names = SecretKeys::from_entries(
            [("del\u{7f}", &b"k"[..]), ("caf\u{e9} ok", b"k2")].into_iter(),
        );
        assert_eq!(names.entries.len(), 1);
        assert_eq!(names.client(0).id(), "caf\u{e9} ok");
    }

    /// The table of one entry named `alice`, or its problem.
    fn one(value: &str) -> Result<SecretKeys, String> {
        let t = SecretKeys::from_entries([("alice", value.as_bytes())].into_iter());
        match (t.entries.len(), t.problems.first()) {
            (1, None) => Ok(t),
            (0, Some(p)) => Err(p.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_entries_of_every_form() {
        let hash = format!("sha256:{}", hex(&Sha256::digest(b"k-secret")));
        // A key, or its hash: the same digest.
        let plain = one(r#"{"key": "k-secret"}"#).unwrap();
        let hashed = one(&format!(r#"{{"keyHash": "{hash}"}}"#)).unwrap();
        assert_eq!(plain.entries[0].0, digest(b"k-secret"));
        assert_eq!(hashed.entries[0].0, plain.entries[0].0);
        assert_eq!(
            (plain.client(0).extra(), hashed.client(0).extra()),
            (None, None)
        );
        assert!(plain.extras.is_empty() && hashed.extras.is_empty());
        // Expiry and metadata.
        let t = one(&format!(
            r#"{{"keyHash": "{hash}", "expiresAt": "2027-01-31T00:00:00Z", "metadata": {{"tier": "gold", "org": "acme"}}}}"#
        ))
        .unwrap();
        let c = t.client(0);
        let at = c.expires_at().unwrap();
        assert!(c.expired(at) && !c.expired(at - std::time::Duration::from_secs(1)));
        assert_eq!(c.metadata("tier").unwrap(), "gold");
        assert_eq!(c.metadata("org").unwrap(), "acme");
        assert_eq!(c.metadata("nope"), None);
        assert_eq!(c.id(), "alice");
        assert_eq!(&**c.id_arc(), "alice");
        assert_eq!(format!("{c:?}"), r#"Client("alice")"#);
        assert_eq!(
            c.extra().unwrap().expires_text().as_deref(),
            Some("2027-01-31T00:00:00Z")
        );
        let t = one(r#"{"key": "k", "metadata": {"a": "b"}}"#).unwrap();
        let only_meta = t.client(0);
        assert_eq!(only_meta.expires_at(), None);
        assert!(!only_meta.expired(std::time::SystemTime::now()));
    }

    #[test]
    fn malformed_json_entries_name_the_entry_never_the_value() {
        let cases = [
            (
                r#"{"keyHash": "sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"}"#,
                "lowercase hex",
            ),
            (r#"{"keyHash": "sha256:abcdef"}"#, "64 hex digits"),
            (
                r#"{"keyHash": "md5:0123456789abcdef0123456789abcdef"}"#,
                "only algorithm",
            ),
            (
                r#"{"keyHash": "sha256:zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}"#,
                "lowercase hex",
            ),
            (
                r#"{"key": "k-secret-1", "keyHash": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}"#,
                "both key and keyHash",
            ),
            (
                r#"{"expiresAt": "2027-01-31T00:00:00Z"}"#,
                "neither key nor keyHash",
            ),
            (r#"{"key": "k-secret-1""#, "not valid JSON (cut short)"),
            (
                r#"{"key" "k-secret-1"}"#,
                "not valid JSON (at line 1 column",
            ),
            (
                r#"{"key": "k-secret-1", "metadata": {"tier": 3}}"#,
                "metadata.tier is not a string",
            ),
            (
                r#"{"key": "k-secret-1", "metadata": ["x"]}"#,
                "metadata is not an object",
            ),
            (
                r#"{"key": "k-secret-1", "expiresAt": "tomorrow"}"#,
                "RFC 3339",
            ),
            (
                r#"{"key": "k-secret-1", "expiresAt": 1700000000}"#,
                "expiresAt is not a string",
            ),
            (r#"{"key": 17}"#, "key is not a string"),
            (r#"{"key": ""}"#, "key is empty"),
            (r#"{"key": "k-secret-1", "kye": "x"}"#, "unknown field"),
            (
                r#"{"key": "k-secret-1", "metadata": {"t": "line\nbreak"}}"#,
                "cannot be a header value",
            ),
            (r#"{"kw_k-secret-1": {"tier": "x"}}"#, "unknown field"),
            (
                r#"{"key": "k-secret-1", "expiresAt": "2020-01-01T00:00:00Z", "expiresAt": "2999-01-01T00:00:00Z"}"#,
                "a field twice",
            ),
            (
                r#"{"key": "k-secret-1", "metadata": {"tier": "a", "tier": "b"}}"#,
                "a field twice",
            ),
            (r#"{"key": -1}"#, "key is not a string"),
            (r#"{"key": 1.5}"#, "key is not a string"),
            (r#"{"key": true}"#, "key is not a string"),
            (r#"{"key": null}"#, "key is not a string"),
            (
                r#"{"key": "k-secret-1", "metadata": [{"a": "1", "a": "2"}]}"#,
                "a field twice",
            ),
        ];
        for (value, why) in cases {
            let err = one(value).expect_err(value);
            assert!(err.starts_with("entry \"alice\": "), "{err}");
            assert!(err.contains(why), "{value}: {err}");
            assert!(
                !err.contains("k-secret-1") && !err.contains("0123456789"),
                "{err}"
            );
        }
    }

    #[test]
    fn extras_belong_to_their_own_entries_and_metadata_is_shared() {
        let meta = |org: &str| {
            format!(r#"{{"key": "k-{org}", "metadata": {{"tier": "gold", "org": "{org}"}}}}"#)
        };
        let (a, b, c) = (meta("acme"), meta("acme"), meta("initech"));
        let t = SecretKeys::from_entries(
            [
                ("a-plain", &b"k-0"[..]),
                ("b-meta", a.as_bytes()),
                ("c-plain", b"k-1"),
                ("d-meta", b.as_bytes()),
                (
                    "e-expiring",
                    br#"{"key": "k-2", "expiresAt": "2030-01-01T00:00:00.5+01:00"}"#,
                ),
                ("f-meta", c.as_bytes()),
                ("g-plain", b"k-3"),
            ]
            .into_iter(),
        );
        assert_eq!(t.len(), 7);
        let ids: Vec<_> = t.clients().map(|(_, c)| c.id()).collect();
        assert_eq!(
            ids,
            [
                "a-plain",
                "b-meta",
                "c-plain",
                "d-meta",
                "e-expiring",
                "f-meta",
                "g-plain"
            ]
        );
        let with_extra: Vec<_> = t
            .clients()
            .filter(|(_, c)| c.extra().is_some())
            .map(|(d, c)| (*d, c.id()))
            .collect();
        assert_eq!(
            with_extra,
            [
                (digest(b"k-acme"), "b-meta"),
                (digest(b"k-acme"), "d-meta"),
                (digest(b"k-2"), "e-expiring"),
                (digest(b"k-initech"), "f-meta")
            ]
        );
        let (b, d, f) = (t.client(1), t.client(3), t.client(5));
        // Equal maps are one allocation; so are equal names across maps.
        let (mb, md, mf) = (
            b.extra().unwrap().metadata.as_ref().unwrap(),
            d.extra().unwrap().metadata.as_ref().unwrap(),
            f.extra().unwrap().metadata.as_ref().unwrap(),
        );
        assert!(Arc::ptr_eq(mb, md) && !Arc::ptr_eq(mb, mf));
        assert!(Arc::ptr_eq(&mb[1].0, &mf[1].0), "{mb:?} {mf:?}");
        assert_eq!(f.metadata("org").unwrap(), "initech");
        assert_eq!(f.metadata("tier").unwrap(), "gold");
        assert_eq!(
            t.client(4).extra().unwrap().expires_text().as_deref(),
            Some("2029-12-31T23:00:00.5Z")
        );
        assert_eq!(t.client(4).extra().unwrap().metadata, None);
        assert_eq!(t.client(6).extra(), None);
        assert_eq!(b.extra(), d.extra());
        assert_ne!(b.extra(), f.extra());
        assert_ne!(b, d, "another client");
        assert_ne!(t.client(0), t.client(2));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}
