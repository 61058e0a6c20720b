//! `metadata` the server owns: uid, timestamps, generated names, name validation, and small
//! accessors over untyped objects.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::resources::NameRule;

/// `metadata` of an object, if it has one.
pub(crate) fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

/// `metadata`, created if missing (objects the server stores always have one).
pub(crate) fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let object = object
        .as_object_mut()
        .expect("callers only pass JSON objects");
    let meta = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut().expect("just made an object")
}

/// A string field of `metadata` (empty strings read as absent, as in Go's zero values).
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    metadata(object)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

pub(crate) fn generation(object: &Value) -> i64 {
    metadata(object)
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// Whether the object lists finalizers, which hold off its removal after a DELETE.
pub(crate) fn has_finalizers(object: &Value) -> bool {
    metadata(object)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// The current time as an RFC 3339 UTC timestamp with second precision, as `metav1.Time`
/// serializes.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil-date algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A random (version 4) UUID, the form of `metadata.uid`.
pub(crate) fn new_uid() -> String {
    let mut r = fastrand::u128(..);
    r = (r & !(0xF << 76)) | (0x4 << 76);
    r = (r & !(0x3 << 62)) | (0x2 << 62);
    let h = format!("{r:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// `generateName` plus five random characters, from the alphabet the real server uses
/// (no vowels, so no words; no look-alike characters).
pub(crate) fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let prefix = &prefix[..prefix.len().min(58)];
    let suffix: String = (0..5)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// Checks a name against its resource's rule; the error is the real validation message.
pub(crate) fn validate_name(name: &str, rule: NameRule) -> Result<(), String> {
    // One dot-free part: [a-z0-9-], alphanumeric at both ends (or a letter first, for DNS-1035).
    let part = |s: &str, first_alpha: bool| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.starts_with(|c: char| {
                c.is_ascii_lowercase() || (!first_alpha && c.is_ascii_digit())
            })
            && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    let label = |s: &str, first_alpha: bool| s.len() <= 63 && part(s, first_alpha);
    match rule {
        NameRule::Subdomain => {
            if name.len() > 253 {
                return Err("must be no more than 253 characters".into());
            }
            if name.split('.').all(|p| part(p, false)) {
                Ok(())
            } else {
                Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into())
            }
        }
        NameRule::Label => {
            if name.len() > 63 {
                return Err("must be no more than 63 characters".into());
            }
            if label(name, false) {
                Ok(())
            } else {
                Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into())
            }
        }
        NameRule::Label1035 => {
            if name.len() > 63 {
                return Err("must be no more than 63 characters".into());
            }
            if label(name, true) {
                Ok(())
            } else {
                Err("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn uids_look_like_uuids() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
    }

    #[test]
    fn names() {
        assert!(validate_name("a.b-c.d", NameRule::Subdomain).is_ok());
        assert!(validate_name("Foo", NameRule::Subdomain).is_err());
        assert!(validate_name("a..b", NameRule::Subdomain).is_err());
        assert!(validate_name("-a", NameRule::Subdomain).is_err());
        assert!(validate_name("a.b", NameRule::Label).is_err());
        assert!(validate_name("1abc", NameRule::Label).is_ok());
        assert!(validate_name("1abc", NameRule::Label1035).is_err());
        assert!(validate_name(&"a".repeat(64), NameRule::Label).is_err());
        assert!(validate_name(&"a".repeat(100), NameRule::Subdomain).is_ok());
        assert!(generated_name("web-").starts_with("web-"));
    }
}
