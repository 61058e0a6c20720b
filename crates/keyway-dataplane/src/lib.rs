//! The data plane: it executes a compiled [`keyway_store::Config`] and nothing else.
//!
//! - [`listener`]: ports opened and closed to follow the config, connection limits, the
//!   per-connection watchdog;
//! - [`request`]: the request path as named phases (normalise, route, authenticate, act),
//!   with [`request::ProxyError`] the one place errors become responses;
//! - [`upstream`]: the pooled upstream client, and the endpoint state kept across reloads;
//! - [`headers`], [`body`], [`metrics`]: what the phases share;
//! - [`access_log`]: one line per request, written in blocks off the request path.
//!
//! The config lives behind an [`arc_swap::ArcSwap`]: each request takes the config current
//! when it arrived and keeps it to the end, so a reload never changes a request midway and
//! never takes a lock.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod body;
mod header_maps;
pub mod headers;
pub mod listener;
pub mod metrics;
pub mod request;
pub mod upstream;

pub use body::Body;
pub use listener::{Server, ServerOptions};
pub use metrics::Metrics;
pub use request::{EscapedSlashes, Gateway, Settings};
