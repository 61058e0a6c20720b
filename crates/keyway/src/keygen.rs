//! `keyway keygen`: a new API key and the Secret manifest that holds it (SPEC section 10).
//!
//! The key is 256 bits from the operating system's random source (through rustls' ring
//! provider, the crypto the binary already carries), written as `kw_` and 64 hex digits.
//! The manifest applies as it is in both modes (`kubectl apply -f`, or a file next to the
//! others for `keyway run --config`). With `--hash` it holds only `keyHash`, the key's
//! SHA-256: whoever can read the Secret cannot use the key.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// What to generate.
#[derive(Clone, Debug)]
pub struct KeygenOptions {
    /// The client id (the entry's name).
    pub client: String,
    /// The Secret's name.
    pub secret: String,
    /// The Secret's namespace.
    pub namespace: String,
    /// Store the key's hash instead of the key.
    pub hash: bool,
    /// Expire the key this long from now.
    pub expires_in: Option<Duration>,
}

/// A new key and the manifest (YAML) of a Secret holding it.
pub fn generate(o: &KeygenOptions) -> Result<(String, String), String> {
    if http::HeaderValue::from_str(&o.client).is_err() || o.client.is_empty() {
        return Err(format!(
            "--client {:?} cannot be a client id (it is sent in a header)",
            o.client
        ));
    }
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| "the operating system's random source failed".to_string())?;
    let key = format!("kw_{}", hex(&bytes));
    let mut entry = serde_json::Map::new();
    if o.hash {
        entry.insert(
            "keyHash".into(),
            format!("sha256:{}", hex(&Sha256::digest(key.as_bytes()))).into(),
        );
    } else if o.expires_in.is_some() {
        entry.insert("key".into(), key.clone().into());
    }
    if let Some(d) = o.expires_in {
        let at = std::time::SystemTime::now()
            .checked_add(d)
            .filter(|t| *t < std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_799))
            .ok_or("--expires-in is too far away (an RFC 3339 time ends in year 9999)")?;
        let at = humantime::format_rfc3339_seconds(at).to_string();
        entry.insert("expiresAt".into(), at.into());
    }
    // A plain key stays in kgateway's format; anything more is a JSON entry.
    let value = if entry.is_empty() {
        key.clone()
    } else {
        serde_json::Value::Object(entry).to_string()
    };
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": o.secret, "namespace": o.namespace},
        "type": "Opaque",
        "stringData": {o.client.as_str(): value},
    });
    let yaml = serde_yaml_ng::to_string(&manifest).map_err(|e| e.to_string())?;
    Ok((key, yaml))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(hash: bool, expires_in: Option<Duration>) -> KeygenOptions {
        KeygenOptions {
            client: "alice".into(),
            secret: "keys".into(),
            namespace: "apps".into(),
            hash,
            expires_in,
        }
    }

    fn entry(manifest: &str) -> String {
        let v: serde_json::Value = serde_yaml_ng::from_str(manifest).unwrap();
        v["stringData"]["alice"].as_str().unwrap().to_string()
    }

    #[test]
    fn keys_are_256_random_bits_and_the_hash_form_holds_no_key() {
        let (k1, plain) = generate(&options(false, None)).unwrap();
        let (k2, hashed) = generate(&options(true, Some(Duration::from_secs(86_400)))).unwrap();
        assert_ne!(k1, k2);
        assert_eq!(k1.len(), 3 + 64);
        assert_eq!(entry(&plain), k1);
        assert!(!hashed.contains(&k2));
        let e: serde_json::Value = serde_json::from_str(&entry(&hashed)).unwrap();
        let want = format!("sha256:{}", hex(&Sha256::digest(k2.as_bytes())));
        assert_eq!(e["keyHash"], want.as_str());
        assert!(e["expiresAt"].as_str().unwrap().ends_with('Z'));
        // The entry reads back as the key it was made for.
        let keys = keyway_model::SecretKeys::from_entries(
            [("alice", entry(&hashed).as_bytes())].into_iter(),
        );
        assert_eq!(keys.entries[0].0, keyway_model::digest(k2.as_bytes()));
        assert!(generate(&KeygenOptions {
            client: "bad\nid".into(),
            ..options(false, None)
        })
        .is_err());
    }
}
