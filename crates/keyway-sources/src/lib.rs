//! Sources of desired state. Each produces a complete [`keyway_model::Snapshot`].
//!
//! Standalone mode reads YAML manifests from files ([`files`]); Kubernetes mode watches the
//! API server ([`kubernetes`]). Both implement [`Source`], the one interface the running
//! gateway reads: it compiles whatever a source loads, the same way, whichever it is.
#![forbid(unsafe_code)]

pub mod files;
pub mod kubernetes;
mod yaml_docs;

pub use files::{load, FileSource, LoadError, Loaded, Warning};

use std::future::Future;
use std::pin::Pin;

/// Where a gateway's desired state comes from.
///
/// A load is complete or it fails: a source never hands out part of its objects (a route
/// read without the policy that protects it would be served open).
pub trait Source: Send + Sync + 'static {
    /// The complete desired state as the source knows it now. Errors keep the last good
    /// config serving and are reported as they are.
    fn load(&self) -> Result<Loaded, Vec<LoadError>>;

    /// Resolves once the source can give its first complete load (Kubernetes: every kind
    /// listed). Files are complete at once.
    fn complete(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }

    /// Short name for logs and `/status`.
    fn name(&self) -> &'static str;

    /// Source-specific facts for the admin port's `/status` (e.g. each kind's freshness).
    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Seconds each part of the source's view has gone without contact with its origin,
    /// by name (`keyway_source_stale_seconds`); empty for sources that are always current.
    fn staleness(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}

impl Source for FileSource {
    fn load(&self) -> Result<Loaded, Vec<LoadError>> {
        FileSource::load(self)
    }

    fn name(&self) -> &'static str {
        "files"
    }
}
