//! LIST: `<Kind>List` responses, paging, and the resourceVersion semantics of
//! "Resource versions" in the API concepts document:
//!
//! | `resourceVersion` | `resourceVersionMatch` | served from |
//! |---|---|---|
//! | unset | unset | the latest state (consistent read), paged |
//! | `0` | unset or `NotOlderThan` | the latest state ("any"); `limit` is ignored, as the watch cache ignores it |
//! | `N` | `NotOlderThan` (or unset without `limit`) | the latest state, once it is at least `N` |
//! | `N` | `Exact` (or unset with `limit`, the legacy meaning) | the state at revision `N` |
//!
//! A revision newer than the server's is waited for (3 s), then refused with 504
//! `Timeout`/`ResourceVersionTooLarge`; one older than the retained history answers 410.
//!
//! Paging: `limit` caps a page (and so may [`crate::Faults::set_max_page`]); a page that
//! stops early carries an opaque `continue` token naming the revision of the first page and
//! the last key returned, so later pages read the same snapshot. A token whose revision has
//! been compacted away answers 410 `Expired`; a token that cannot be decoded, 400.
//! Items come sorted by namespace, then name.

use std::ops::Bound;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::params::{parse_resource_version, Query};
use crate::render::{self, Representation};
use crate::resources::ResourceType;
use crate::state::Shared;
use crate::status::ApiError;
use crate::store::{ObjectKey, Snapshot};

/// How long a request for a future revision waits for it, as the watch cache does.
pub(crate) const FUTURE_REVISION_WAIT: Duration = Duration::from_secs(3);

const TOKEN: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What a continue token carries: the snapshot revision and the last key returned.
#[derive(Debug, Clone, PartialEq)]
struct ContinueToken {
    rv: u64,
    after: ObjectKey,
}

impl ContinueToken {
    fn encode(&self) -> String {
        let json = json!({"v": "fakeapi/v1", "rv": self.rv, "start": [self.after.namespace, self.after.name]});
        TOKEN.encode(json.to_string())
    }

    fn decode(token: &str) -> Result<Self, ApiError> {
        let invalid =
            |why: &str| ApiError::bad_request(format!("continue key is not valid: {why}"));
        let bytes = TOKEN.decode(token).map_err(|_| invalid("not base64"))?;
        let json: Value = serde_json::from_slice(&bytes).map_err(|_| invalid("not JSON"))?;
        let rv = json["rv"].as_u64().ok_or_else(|| invalid("no revision"))?;
        let namespace = json["start"][0]
            .as_str()
            .ok_or_else(|| invalid("no start key"))?;
        let name = json["start"][1]
            .as_str()
            .ok_or_else(|| invalid("no start key"))?;
        Ok(ContinueToken {
            rv,
            after: ObjectKey::new(Some(namespace), name),
        })
    }
}

/// Which state a LIST reads.
#[derive(Debug, Clone, PartialEq)]
enum Read {
    Latest { paged: bool },
    AtLeast(u64),
    Exact(u64),
    Continue(ContinueToken),
}

fn plan(query: &Query, limit: Option<usize>) -> Result<Read, ApiError> {
    let rv = query.non_empty("resourceVersion");
    let rv_match = query.non_empty("resourceVersionMatch");
    if let Some(token) = query.non_empty("continue") {
        if rv.is_some_and(|rv| rv != "0") {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        if rv_match.is_some() {
            return Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        return Ok(Read::Continue(ContinueToken::decode(token)?));
    }
    let Some(rv) = rv else {
        return match rv_match {
            Some(_) => Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            )),
            None => Ok(Read::Latest { paged: true }),
        };
    };
    let n = parse_resource_version(rv)?;
    match rv_match {
        None | Some("NotOlderThan") if n == 0 => Ok(Read::Latest { paged: false }),
        None if limit.is_some() => Ok(Read::Exact(n)),
        None | Some("NotOlderThan") => Ok(Read::AtLeast(n)),
        Some("Exact") if n == 0 => Err(ApiError::bad_request(
            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
        )),
        Some("Exact") => Ok(Read::Exact(n)),
        Some(other) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

/// Answers a LIST of `rt` in `namespace` (None: all namespaces, or cluster-scoped).
pub(crate) async fn list(
    shared: &Shared,
    rt: &'static ResourceType,
    version: &str,
    namespace: Option<&str>,
    query: &Query,
    repr: Representation,
) -> Result<Value, ApiError> {
    let filter = query.filter(rt, namespace, None)?;
    let limit = query
        .unsigned("limit")?
        .filter(|l| *l > 0)
        .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let read = plan(query, limit)?;
    hold(shared, rt).await;
    if let Read::AtLeast(n) | Read::Exact(n) = read {
        wait_for_revision(shared, n).await?;
    }

    let state = shared.lock();
    let store = &state.store;
    let (snapshot_rv, after, paged) = match &read {
        Read::Latest { paged } => (store.resource_version(), None, *paged),
        Read::AtLeast(_) => (store.resource_version(), None, true),
        Read::Exact(n) => (*n, None, true),
        Read::Continue(token) => (token.rv, Some(token.after.clone()), true),
    };
    let older;
    let objects: &Snapshot = if snapshot_rv >= store.resource_version() {
        store.current(rt)
    } else {
        older = store
            .snapshot_at(rt, snapshot_rv)
            .map_err(|_| match &read {
                Read::Continue(token) => expired_continue(&ContinueToken {
                    rv: store.resource_version(),
                    after: token.after.clone(),
                }),
                _ => ApiError::expired("The resourceVersion for the provided list is too old."),
            })?;
        &older
    };
    let page_size = if paged {
        match (limit, state.faults.max_page) {
            (Some(l), Some(m)) => Some(l.min(m.max(1))),
            (l, m) => l.or(m.map(|m| m.max(1))),
        }
    } else {
        None
    };

    let lower = match &after {
        Some(key) => Bound::Excluded(key.clone()),
        None => Bound::Unbounded,
    };
    let mut matching = objects
        .range((lower, Bound::Unbounded))
        .filter(|(_, o)| filter.matches(o));
    let mut items = Vec::new();
    let mut last = None;
    for (key, object) in matching.by_ref() {
        items.push(render::list_item(object, rt, version, repr));
        last = Some(key.clone());
        if page_size.is_some_and(|size| items.len() >= size) {
            break;
        }
    }
    let remaining = matching.count();

    let mut metadata = Map::new();
    metadata.insert("resourceVersion".into(), snapshot_rv.to_string().into());
    if remaining > 0 {
        let token = ContinueToken {
            rv: snapshot_rv,
            after: last.expect("a page that stops early has items"),
        };
        metadata.insert("continue".into(), token.encode().into());
        if !filter.has_selectors() {
            metadata.insert("remainingItemCount".into(), remaining.into());
        }
    }
    Ok(render::list(rt, version, repr, metadata, items))
}

fn expired_continue(fresh: &ContinueToken) -> ApiError {
    let mut e = ApiError::expired(
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
    );
    e.continue_token = Some(fresh.encode());
    e
}

/// Waits while LISTs of `rt` are held by [`crate::Faults::hold_list`], counting itself
/// among the held requests meanwhile.
async fn hold(shared: &Shared, rt: &'static ResourceType) {
    struct Held<'a> {
        shared: &'a Shared,
        index: usize,
        counted: bool,
    }
    impl Drop for Held<'_> {
        fn drop(&mut self) {
            if self.counted {
                let mut state = self.shared.lock();
                if let Some(n) = state.faults.waiting_lists.get_mut(&self.index) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }
    let mut held = Held {
        shared,
        index: rt.index(),
        counted: false,
    };
    shared
        .wait_until(|s| {
            if !s.faults.held_lists.contains(&held.index) {
                return Some(());
            }
            if !held.counted {
                *s.faults.waiting_lists.entry(held.index).or_default() += 1;
                held.counted = true;
            }
            None
        })
        .await;
}

/// Waits (briefly) for the server to reach revision `n`.
pub(crate) async fn wait_for_revision(shared: &Shared, n: u64) -> Result<(), ApiError> {
    let reached = shared.wait_until(|s| (s.store.resource_version() >= n).then_some(()));
    match tokio::time::timeout(FUTURE_REVISION_WAIT, reached).await {
        Ok(()) => Ok(()),
        Err(_) => Err(ApiError::too_large_resource_version(
            n,
            shared.lock().store.resource_version(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = ContinueToken {
            rv: 42,
            after: ObjectKey::new(Some("ns"), "a"),
        };
        assert_eq!(ContinueToken::decode(&t.encode()).unwrap(), t);
        assert_eq!(ContinueToken::decode("garbage!").unwrap_err().code, 400);
    }

    #[test]
    fn resource_version_semantics() {
        let plan_of = |q: &str, limit| plan(&Query::parse(q), limit);
        assert_eq!(plan_of("", None).unwrap(), Read::Latest { paged: true });
        assert_eq!(
            plan_of("resourceVersion=0", Some(5)).unwrap(),
            Read::Latest { paged: false }
        );
        assert_eq!(
            plan_of("resourceVersion=7", None).unwrap(),
            Read::AtLeast(7)
        );
        assert_eq!(
            plan_of("resourceVersion=7", Some(5)).unwrap(),
            Read::Exact(7)
        );
        assert_eq!(
            plan_of(
                "resourceVersion=7&resourceVersionMatch=NotOlderThan",
                Some(5)
            )
            .unwrap(),
            Read::AtLeast(7)
        );
        assert_eq!(
            plan_of("resourceVersion=7&resourceVersionMatch=Exact", None).unwrap(),
            Read::Exact(7)
        );
        assert_eq!(
            plan_of("resourceVersionMatch=Exact", None)
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            plan_of("resourceVersion=0&resourceVersionMatch=Exact", None)
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(plan_of("resourceVersion=x", None).unwrap_err().code, 400);
    }
}
