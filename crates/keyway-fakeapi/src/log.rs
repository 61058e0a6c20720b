//! The request log: every request the server answered, for tests to assert on (which
//! requests a client made, with which token, and how they were answered).

use std::sync::Mutex;
use std::time::Instant;

/// One request as the server saw and answered it. A request is recorded when its response
/// head is sent, so a watch appears as soon as its stream opens and a held LIST only once
/// it is released.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub method: http::Method,
    /// The path, as sent (still percent-encoded).
    pub path: String,
    /// The raw query string without `?`, as sent (kube-rs starts it with `&`); empty when none.
    pub query: String,
    /// The bearer token of the `Authorization` header, if any.
    pub token: Option<String>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// Whether the request was a watch (`watch=true` or `watch=1`).
    pub is_watch: bool,
    /// When the request arrived.
    pub at: Instant,
}

impl RequestRecord {
    /// The first value of a query parameter, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

#[derive(Default)]
pub(crate) struct RequestLog {
    records: Mutex<Vec<RequestRecord>>,
}

impl RequestLog {
    pub(crate) fn push(&self, record: RequestRecord) {
        crate::state::lock(&self.records).push(record);
    }

    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        crate::state::lock(&self.records).clone()
    }

    pub(crate) fn clear(&self) {
        crate::state::lock(&self.records).clear();
    }
}
