//! Sources of desired state. Each produces a complete [`keyway_model::Snapshot`].
//!
//! Standalone mode reads YAML manifests from files ([`files`]); a Kubernetes watcher will
//! sit beside it and feed the same compiler.
#![forbid(unsafe_code)]

pub mod files;
mod yaml_docs;

pub use files::{load, LoadError, Loaded, Warning};
