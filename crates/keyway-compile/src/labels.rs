//! Kubernetes label selectors (`matchLabels` and `matchExpressions`).

use std::collections::BTreeMap;

use keyway_model::core::LabelSelector;

/// A selector in a form that can be checked and described.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    expressions: Vec<(String, String, Vec<String>)>,
}

impl Selector {
    /// Builds a selector, rejecting unknown operators with a message naming them.
    pub fn new(sel: &LabelSelector) -> Result<Self, String> {
        Self::from_parts(
            sel.match_labels.clone().unwrap_or_default(),
            sel.match_expressions.iter().flatten().map(|e| {
                (
                    e.key.clone(),
                    e.operator.clone(),
                    e.values.clone().unwrap_or_default(),
                )
            }),
        )
    }

    /// Builds a selector from labels and `(key, operator, values)` expressions.
    pub fn from_parts(
        labels: BTreeMap<String, String>,
        expressions: impl IntoIterator<Item = (String, String, Vec<String>)>,
    ) -> Result<Self, String> {
        let expressions: Vec<_> = expressions.into_iter().collect();
        for (key, op, values) in &expressions {
            match op.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!("matchExpressions key {key:?}: operator {op} needs values"))
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(format!("matchExpressions key {key:?}: operator {op} takes no values"))
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => {
                    return Err(format!(
                        "matchExpressions key {key:?}: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                    ))
                }
            }
        }
        Ok(Selector {
            labels,
            expressions,
        })
    }

    /// Whether an object with `labels` is selected. An empty selector selects everything.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        let labels = labels.unwrap_or(&empty);
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.expressions.iter().all(|(k, op, values)| {
                let have = labels.get(k);
                match op.as_str() {
                    "In" => have.is_some_and(|v| values.contains(v)),
                    "NotIn" => have.is_none_or(|v| !values.contains(v)),
                    "Exists" => have.is_some(),
                    _ => have.is_none(),
                }
            })
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for (k, op, values) in &self.expressions {
            parts.push(match op.as_str() {
                "Exists" => k.clone(),
                "DoesNotExist" => format!("!{k}"),
                _ => format!("{k} {} ({})", op.to_lowercase(), values.join(",")),
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expressions() {
        let s = Selector::from_parts(
            labels(&[("app", "api-keys")]),
            [
                (
                    "tier".to_string(),
                    "NotIn".to_string(),
                    vec!["dev".to_string()],
                ),
                ("team".to_string(), "Exists".to_string(), vec![]),
            ],
        )
        .unwrap();
        assert!(s.matches(Some(&labels(&[("app", "api-keys"), ("team", "a")]))));
        assert!(!s.matches(Some(&labels(&[
            ("app", "api-keys"),
            ("team", "a"),
            ("tier", "dev")
        ]))));
        assert!(!s.matches(Some(&labels(&[("app", "api-keys")]))));
        assert_eq!(s.to_string(), "app=api-keys,tier notin (dev),team");
    }

    #[test]
    fn unknown_operator_is_an_error() {
        let err = Selector::from_parts(BTreeMap::new(), [("a".into(), "Like".into(), vec![])])
            .unwrap_err();
        assert!(err.contains("unknown operator \"Like\""), "{err}");
    }
}
