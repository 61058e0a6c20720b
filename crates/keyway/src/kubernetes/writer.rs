//! Moves the statuses [`super::status`] derives onto the API objects, from the leader
//! only.
//!
//! Each object is written with a read-modify-write of its `/status` subresource: GET the
//! object, [`merge`] our part into its current status, PUT it back carrying the
//! `resourceVersion` read. A `409 Conflict` (someone wrote in between, such as another
//! controller adding its own route parent) means read again and redo the merge, so
//! nobody's entry is lost.
//!
//! What was written is remembered per object (a hash of Keyway's part), so a recompile
//! that leaves an object's status as it was costs no request for it. A replica that
//! becomes leader forgets everything and reads every object once: it writes every status
//! that is not current, whatever its predecessor left.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyway_model::{Kind, ObjectKey};
use keyway_sources::kubernetes::kinds::WATCHED;
use kube::api::{Api, DynamicObject, PostParams};
use kube::Client;
use tokio::sync::watch;

use super::lease::Leadership;
use super::status::{desired, merge, Desired, GatewayAddresses};

/// What status is derived from: the applied config's report and the Gateway addresses.
#[derive(Clone, Debug, Default)]
pub struct StatusInputs {
    /// The report of the config being served.
    pub report: Arc<keyway_compile::Report>,
    /// Addresses of the `--service`.
    pub addresses: GatewayAddresses,
}

/// How one object's write went.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its status already said this: nothing written.
    Current,
    /// Written.
    Written,
    /// The object is gone.
    Gone,
}

/// Writes status for one controller; remembers what it wrote.
pub struct StatusWriter {
    client: Client,
    controller: String,
    written: HashMap<(Kind, ObjectKey), u64>,
}

/// Every status request gets this long before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn part_hash(d: &Desired) -> u64 {
    let mut h = DefaultHasher::new();
    d.uid.hash(&mut h);
    format!("{:?}", d.part).hash(&mut h);
    h.finish()
}

impl StatusWriter {
    /// A writer for `controller` (`--controller-name`).
    pub fn new(client: Client, controller: &str) -> Self {
        StatusWriter {
            client,
            controller: controller.to_string(),
            written: HashMap::new(),
        }
    }

    /// Forgets what was written: the next [`StatusWriter::sync`] reads every object.
    pub fn forget(&mut self) {
        self.written.clear();
    }

    /// Brings every object's status up to date with `inputs`, as long as `may_write` says
    /// so (it is asked before every write: a replica whose term ran out stops at once).
    /// Returns how many were written, or why it stopped (the objects not yet done are
    /// retried next time).
    pub async fn sync(
        &mut self,
        inputs: &StatusInputs,
        may_write: &(dyn Fn() -> bool + Sync),
    ) -> Result<usize, String> {
        let wanted = desired(&inputs.report, &inputs.addresses, &self.controller);
        let keep: std::collections::HashSet<(Kind, ObjectKey)> =
            wanted.iter().map(|d| (d.kind, d.key.clone())).collect();
        self.written.retain(|k, _| keep.contains(k));
        let mut count = 0;
        let mut first_error = None;
        for d in &wanted {
            let id = (d.kind, d.key.clone());
            let hash = part_hash(d);
            if self.written.get(&id) == Some(&hash) {
                continue;
            }
            match self.write(d, may_write).await {
                Ok(outcome) => {
                    if outcome == Outcome::Written {
                        count += 1;
                    }
                    self.written.insert(id, hash);
                }
                Err(e) if e == NOT_LEADING => return Err(e),
                Err(e) => {
                    tracing::warn!(kind = %d.kind, object = %d.key, "cannot write status: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    fn api(&self, d: &Desired) -> Api<DynamicObject> {
        let row = WATCHED
            .iter()
            .find(|w| w.kind == d.kind && !w.optional)
            .expect("every kind with status is watched");
        let ar = row.api_resource();
        if d.kind.is_namespaced() {
            Api::namespaced_with(self.client.clone(), &d.key.namespace, &ar)
        } else {
            Api::all_with(self.client.clone(), &ar)
        }
    }

    /// Read, merge, write one object's status; on 409 read again (a few times).
    pub async fn write(
        &self,
        d: &Desired,
        may_write: &(dyn Fn() -> bool + Sync),
    ) -> Result<Outcome, String> {
        let api = self.api(d);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let read = tokio::time::timeout(REQUEST_TIMEOUT, api.get_opt(&d.key.name)).await;
            let Some(mut object) = read
                .map_err(|_| "no answer to a GET in time".to_string())?
                .map_err(|e| e.to_string())?
            else {
                return Ok(Outcome::Gone);
            };
            let now = k8s_openapi::jiff::Timestamp::now()
                .round(k8s_openapi::jiff::Unit::Second)
                .expect("rounding to seconds")
                .to_string();
            let Some(status) = merge(object.data.get("status"), &d.part, &self.controller, &now)
            else {
                return Ok(Outcome::Current);
            };
            if let Some(map) = object.data.as_object_mut() {
                map.insert("status".into(), status);
            }
            if !may_write() {
                return Err(NOT_LEADING.into());
            }
            let params = PostParams::default();
            let put = api.replace_status(&d.key.name, &params, &object);
            match tokio::time::timeout(REQUEST_TIMEOUT, put).await {
                Err(_) => return Err("no answer to a status PUT in time".into()),
                Ok(Ok(_)) => {
                    tracing::debug!(kind = %d.kind, object = %d.key, "status written");
                    return Ok(Outcome::Written);
                }
                Ok(Err(kube::Error::Api(s))) if s.code == 409 && attempt < 5 => {
                    tracing::debug!(kind = %d.kind, object = %d.key, "status write conflicted; re-reading");
                }
                Ok(Err(kube::Error::Api(s))) if s.code == 404 => return Ok(Outcome::Gone),
                Ok(Err(e)) => return Err(e.to_string()),
            }
        }
    }
}

const NOT_LEADING: &str = "this replica no longer holds the status lease";

/// How the status task runs.
pub struct StatusOptions {
    /// `--controller-name`.
    pub controller: String,
    /// Every this long the leader reads every object again and puts right a status
    /// someone else changed (reads only, when nothing differs).
    pub resync: Duration,
}

/// Runs until `stop` resolves: while `leadership` says this replica leads, keeps every
/// status current with the latest `inputs`.
pub async fn run(
    client: Client,
    options: StatusOptions,
    mut leadership: watch::Receiver<Leadership>,
    mut inputs: watch::Receiver<Option<Arc<StatusInputs>>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut writer = StatusWriter::new(client, &options.controller);
    let mut term = 0;
    let mut dirty = true;
    let mut retry_at: Option<Instant> = None;
    let mut resync_at = Instant::now() + options.resync;
    tokio::pin!(stop);
    loop {
        let lead = *leadership.borrow_and_update();
        if lead.term != term {
            // A new term: whatever an earlier one wrote may have been changed since.
            term = lead.term;
            writer.forget();
            dirty = true;
            retry_at = None;
            resync_at = Instant::now() + options.resync;
        }
        let leading = lead.leads();
        if !leading {
            retry_at = None;
        } else {
            let now = Instant::now();
            if now >= resync_at {
                writer.forget();
                dirty = true;
                resync_at = now + options.resync;
            }
            if dirty || retry_at.is_some_and(|t| now >= t) {
                let current = inputs.borrow_and_update().clone();
                if let Some(current) = current {
                    let rx = leadership.clone();
                    let may_write = move || {
                        let l = *rx.borrow();
                        l.term == term && l.leads()
                    };
                    dirty = false;
                    retry_at = None;
                    match writer.sync(&current, &may_write).await {
                        Ok(n) if n > 0 => tracing::info!(written = n, "status updated"),
                        Ok(_) => {}
                        Err(e) if e == NOT_LEADING => {}
                        Err(_) => retry_at = Some(Instant::now() + Duration::from_secs(2)),
                    }
                }
            }
        }
        let wake = if leading {
            retry_at.map_or(resync_at, |r| r.min(resync_at))
        } else {
            Instant::now() + Duration::from_secs(3600)
        };
        tokio::select! {
            () = &mut stop => break,
            changed = leadership.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            changed = inputs.changed() => {
                if changed.is_err() {
                    break;
                }
                dirty = true;
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}
