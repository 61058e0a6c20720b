//! Query parameters, parsed the way the API server's parameter codec reads them: the first
//! value of a repeated parameter wins, empty pairs (kube-rs starts its queries with `&`)
//! are ignored, and booleans take Go's `strconv.ParseBool` spellings.

use std::time::Duration;

use crate::resources::ResourceType;
use crate::selectors::{FieldSelector, LabelSelector, ObjectFilter};
use crate::status::ApiError;

#[derive(Debug, Default, Clone)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub(crate) fn parse(raw: &str) -> Self {
        Query {
            pairs: form_urlencoded::parse(raw.as_bytes())
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter that is present and not empty.
    pub(crate) fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// A boolean parameter; absent (or empty) is `None`.
    pub(crate) fn flag(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.non_empty(name) {
            None => Ok(None),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid value for {name}: {other:?}: must be a boolean"
            ))),
        }
    }

    pub(crate) fn is_watch(&self) -> bool {
        matches!(self.flag("watch"), Ok(Some(true)))
    }

    /// `dryRun=All` (the only value the real server accepts).
    pub(crate) fn dry_run(&self) -> Result<bool, ApiError> {
        match self.non_empty("dryRun") {
            None => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            ))),
        }
    }

    pub(crate) fn unsigned(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.non_empty(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid value for {name}: {v:?}: must be a non-negative integer"
                    ))
                })
            })
            .transpose()
    }

    pub(crate) fn timeout(&self) -> Result<Option<Duration>, ApiError> {
        Ok(self.unsigned("timeoutSeconds")?.map(Duration::from_secs))
    }

    /// The objects a LIST or WATCH in `namespace` (and on `name`, for a watch on one
    /// object's URL) selects.
    pub(crate) fn filter(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<ObjectFilter, ApiError> {
        Ok(ObjectFilter {
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            labels: self
                .get("labelSelector")
                .map(LabelSelector::parse)
                .transpose()?,
            fields: self
                .get("fieldSelector")
                .map(|f| FieldSelector::parse(f, rt))
                .transpose()?,
        })
    }
}

/// A resourceVersion parameter: `0` ("any") or a revision.
pub(crate) fn parse_resource_version(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "invalid resource version {text:?}: must be an unsigned integer"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_style_queries() {
        let q = Query::parse(
            "&watch=true&timeoutSeconds=290&labelSelector=app%3Dweb&resourceVersion=0&watch=false",
        );
        assert!(q.is_watch());
        assert_eq!(q.get("labelSelector"), Some("app=web"));
        assert_eq!(q.timeout().unwrap(), Some(Duration::from_secs(290)));
        assert_eq!(q.non_empty("resourceVersion"), Some("0"));
        assert!(Query::parse("watch=1").is_watch());
        assert!(Query::parse("watch=maybe").flag("watch").is_err());
    }
}
