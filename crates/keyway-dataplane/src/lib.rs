//! The data plane: it executes a compiled [`keyway_store::Config`] and nothing else.
//!
//! The request path reads top to bottom in [`proxy`]: find the listener and route
//! ([`router`]), check the API key ([`auth`]), then answer directly, redirect, or forward
//! through the pooled [`upstream`] client with headers fixed up by [`headers`]. Every
//! request is counted in [`metrics`] and written to the access log.
//!
//! The config lives behind an [`arc_swap::ArcSwap`]: each request takes the config current
//! when it arrived and keeps it to the end, so a reload never changes a request midway and
//! never takes a lock.

pub mod auth;
pub mod body;
pub mod headers;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod router;
pub mod server;
pub mod upstream;

pub use body::Body;
pub use metrics::Metrics;
pub use proxy::{Gateway, Settings};
pub use server::Server;
