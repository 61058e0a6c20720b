//! Kubernetes mode's output side: status written back to the API objects, by one
//! replica, and the install manifests.
//!
//! Reading the API server is a [`keyway_sources`] concern (the Kubernetes source feeds the
//! same compile step as files); this module is what only a cluster has:
//! - [`lease`]: leader election on the `keyway-status` Lease, with resourceVersion
//!   preconditions;
//! - [`status`]: the compiler's report as the `status` stanzas users read with `kubectl`
//!   (pure, unit-tested);
//! - [`writer`]: the leader's read-merge-write of those stanzas;
//! - [`manifests`]: `keyway manifests`, RBAC generated from the watched-kinds table.

pub mod lease;
pub mod manifests;
pub mod status;
pub mod writer;

use std::sync::Arc;

use keyway_model::{ObjectKey, Snapshot};
use tokio::sync::watch;

use crate::app::ApplyObserver;
use status::GatewayAddresses;
use writer::StatusInputs;

/// An [`ApplyObserver`] that publishes each applied config's report and the addresses of
/// `service` (from the same snapshot) to the status task.
pub fn status_observer(
    service: Option<ObjectKey>,
) -> (ApplyObserver, watch::Receiver<Option<Arc<StatusInputs>>>) {
    let (tx, rx) = watch::channel(None);
    let observer = ApplyObserver(Arc::new(
        move |snapshot: &Snapshot, report: &Arc<keyway_compile::Report>| {
            let found = service.as_ref().and_then(|s| snapshot.services.get(s));
            let addresses = GatewayAddresses::of(service.as_ref(), found.map(|o| &o.value));
            tx.send_replace(Some(Arc::new(StatusInputs {
                report: report.clone(),
                addresses,
            })));
        },
    ));
    (observer, rx)
}
