//! Label and field selectors, and the filter that combines them with a request's scope.
//!
//! The grammar is the one of `k8s.io/apimachinery/pkg/labels` and `.../fields`:
//!
//! - labels: comma-joined requirements `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`,
//!   `k` (exists), `!k` (does not exist), `k>n`, `k<n`. `!=` and `notin` also match objects
//!   without the label.
//! - fields: comma-joined `f=v`, `f==v`, `f!=v` over `metadata.name`, `metadata.namespace` and
//!   the few fields a resource declares selectable (e.g. a Secret's `type`); any other field is
//!   rejected with 400, as the real server does. `\` escapes `,`, `=` and `\` in values.

use serde_json::Value;

use crate::resources::ResourceType;
use crate::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LabelSelector {
    requirements: Vec<(String, LabelOp)>,
}

impl LabelSelector {
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_top_level(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term).map_err(|why| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: {why} (in label selector {text:?})"
                ))
            })?);
        }
        Ok(LabelSelector { requirements })
    }

    pub(crate) fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        self.requirements.iter().all(|(key, op)| {
            let value = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            match (op, value) {
                (LabelOp::Equals(want), Some(v)) => v == want,
                (LabelOp::Equals(_), None) => false,
                (LabelOp::NotEquals(want), v) => v != Some(want.as_str()),
                (LabelOp::In(set), Some(v)) => set.iter().any(|s| s == v),
                (LabelOp::In(_), None) => false,
                (LabelOp::NotIn(set), v) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
                (LabelOp::Exists, v) => v.is_some(),
                (LabelOp::DoesNotExist, v) => v.is_none(),
                (LabelOp::GreaterThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v > *n),
                (LabelOp::LessThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|v| v < *n),
                (LabelOp::GreaterThan(_) | LabelOp::LessThan(_), None) => false,
            }
        })
    }
}

/// Splits on commas that are not inside parentheses (`a in (x,y),b` is two requirements).
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(term: &str) -> Result<(String, LabelOp), String> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok((key.to_string(), LabelOp::DoesNotExist));
    }
    let key_end = term
        .find(|c: char| c.is_whitespace() || "=!<>(".contains(c))
        .unwrap_or(term.len());
    let key = &term[..key_end];
    validate_key(key)?;
    let rest = term[key_end..].trim_start();
    let op = if rest.is_empty() {
        LabelOp::Exists
    } else if let Some(v) = rest.strip_prefix("==").or_else(|| rest.strip_prefix('=')) {
        LabelOp::Equals(value(v.trim())?)
    } else if let Some(v) = rest.strip_prefix("!=") {
        LabelOp::NotEquals(value(v.trim())?)
    } else if let Some(v) = rest.strip_prefix('>') {
        LabelOp::GreaterThan(integer(v.trim())?)
    } else if let Some(v) = rest.strip_prefix('<') {
        LabelOp::LessThan(integer(v.trim())?)
    } else if let Some(v) = keyword(rest, "notin") {
        LabelOp::NotIn(set(v)?)
    } else if let Some(v) = keyword(rest, "in") {
        LabelOp::In(set(v)?)
    } else {
        return Err(format!(
            "found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
        ));
    };
    Ok((key.to_string(), op))
}

/// `rest` without a leading keyword that is followed by whitespace or `(`.
fn keyword<'a>(rest: &'a str, word: &str) -> Option<&'a str> {
    let after = rest.strip_prefix(word)?;
    after
        .starts_with(|c: char| c.is_whitespace() || c == '(')
        .then_some(after.trim_start())
}

fn set(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("found '{text}', expected: '(' values ')'"))?;
    let values = inner
        .split(',')
        .map(|v| value(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if values.iter().all(String::is_empty) {
        return Err("for 'in', 'notin' operators, values set can't be empty".into());
    }
    Ok(values)
}

fn integer(text: &str) -> Result<i64, String> {
    text.parse().map_err(|_| {
        format!("for 'Gt', 'Lt' operators, the value must be an integer, got '{text}'")
    })
}

/// A label value: at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn value(text: &str) -> Result<String, String> {
    let ok = text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && (text.is_empty()
            || (text.starts_with(|c: char| c.is_ascii_alphanumeric())
                && text.ends_with(|c: char| c.is_ascii_alphanumeric())));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!("invalid label value: \"{text}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"))
    }
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn validate_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
    });
    if name_ok && prefix_ok {
        Ok(())
    } else {
        Err(format!("invalid label key \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses a field selector, rejecting fields `rt` does not support selecting on.
    pub(crate) fn parse(text: &str, rt: &ResourceType) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_unescaped(text, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let (field, equal, value) = if let Some((f, v)) = split_once_unescaped(&term, "!=") {
                (f, false, v)
            } else if let Some((f, v)) = split_once_unescaped(&term, "==") {
                (f, true, v)
            } else if let Some((f, v)) = split_once_unescaped(&term, "=") {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            let field = field.trim().to_string();
            let supported = field == "metadata.name"
                || field == "metadata.namespace"
                || rt.extra_selectable_fields.contains(&field.as_str());
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            requirements.push((field, equal, unescape(&value)));
        }
        Ok(FieldSelector { requirements })
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, equal, want)| {
            let actual = field_value(object, field);
            (actual == *want) == *equal
        })
    }
}

/// The value of a selectable field; absent fields read as the empty string, as in the real
/// field sets (a cluster-scoped object's `metadata.namespace` is "").
fn field_value(object: &Value, field: &str) -> String {
    let mut at = object;
    for part in field.split('.') {
        match at.get(part) {
            Some(v) => at = v,
            None => return String::new(),
        }
    }
    match at {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Splits on `sep` not preceded by a backslash, keeping escapes for [`unescape`].
fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        let last = parts.last_mut().expect("never empty");
        if escaped {
            last.push('\\');
            last.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
        } else {
            last.push(c);
        }
    }
    parts
}

/// Splits at the first unescaped occurrence of `op`.
fn split_once_unescaped(text: &str, op: &str) -> Option<(String, String)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if text[i..].starts_with(op) {
            return Some((text[..i].to_string(), text[i + op.len()..].to_string()));
        }
        i += 1;
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Which objects a LIST or WATCH request sees: its namespace scope, an object name (a
/// watch on a single object's URL), and its selectors.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObjectFilter {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
}

impl ObjectFilter {
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let meta = object.get("metadata");
        let text = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        if self
            .namespace
            .as_deref()
            .is_some_and(|ns| ns != text("namespace"))
        {
            return false;
        }
        if self.name.as_deref().is_some_and(|n| n != text("name")) {
            return false;
        }
        if let Some(labels) = &self.labels {
            if !labels.matches(
                meta.and_then(|m| m.get("labels"))
                    .and_then(Value::as_object),
            ) {
                return false;
            }
        }
        self.fields.as_ref().is_none_or(|f| f.matches(object))
    }

    /// Whether the request has selectors (the server then omits `remainingItemCount`).
    pub(crate) fn has_selectors(&self) -> bool {
        self.labels
            .as_ref()
            .is_some_and(|l| !l.requirements.is_empty())
            || self
                .fields
                .as_ref()
                .is_some_and(|f| !f.requirements.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_api_version_kind;
    use serde_json::json;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn label_operators() {
        let l = labels(json!({"app": "web", "tier": "front", "n": "5"}));
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "missing!=x",
            "app in (web, db)",
            "app notin (db)",
            "missing notin (x)",
            "app",
            "!missing",
            "n>3",
            "n<6",
            "app=web,tier=front",
            "app in (web,db),tier",
            "example.com/missing!=a",
            "",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "app notin (web)",
            "missing",
            "!app",
            "n>5",
            "missing in (x)",
            "app=web,tier=back",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).unwrap().matches(Some(&l)), "{s}");
        }
        for bad in ["app in web", "a b", "app=we b", "=x", "app in ()", "n>x"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let (rt, _) = by_api_version_kind("v1", "Secret").unwrap();
        let obj = json!({"metadata": {"name": "a=b", "namespace": "ns"}, "type": "Opaque"});
        for s in [
            "metadata.name=a\\=b",
            "metadata.namespace==ns",
            "metadata.name!=x,type=Opaque",
        ] {
            assert!(FieldSelector::parse(s, rt).unwrap().matches(&obj), "{s}");
        }
        assert!(!FieldSelector::parse("metadata.namespace!=ns", rt)
            .unwrap()
            .matches(&obj));
        assert_eq!(FieldSelector::parse("spec.x=y", rt).unwrap_err().code, 400);
        assert_eq!(FieldSelector::parse("nonsense", rt).unwrap_err().code, 400);
    }
}
