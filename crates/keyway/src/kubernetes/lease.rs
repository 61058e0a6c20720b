//! Leader election on a `coordination.k8s.io/v1` Lease, so that exactly one replica
//! writes status.
//!
//! Every write of the Lease is a PUT carrying the `resourceVersion` it was read at: two
//! replicas that both saw the Lease expire and both try to take it get one success and
//! one `409 Conflict` from the API server, never two leaders. (A read followed by a patch
//! without a precondition, as some crates do, lets both win.)
//!
//! Expiry is judged by the local clock only, as client-go does: a Lease is expired when
//! its `resourceVersion` has not moved for `leaseDurationSeconds` since this replica
//! first saw that version. Clocks of different machines are never compared.
//!
//! Timing, for a duration `D`: the leader renews every `D/3` and considers itself deposed
//! if it could not renew for `2D/3`; followers read the Lease every `D/10` (at most 2 s)
//! and claim it as soon as it is expired or released. A leader that shuts down releases
//! the Lease (empty holder), so its successor takes over within one read interval.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;

/// The Lease's name (SPEC section 8).
pub const LEASE_NAME: &str = "keyway-status";

/// Why a write of the Lease did not go through.
#[derive(Debug)]
pub enum LeaseError {
    /// Someone else wrote the Lease since it was read (409), or created it first.
    Conflict,
    /// Anything else: the API server could not be reached, refused, ...
    Api(kube::Error),
    /// No answer within a third of the lease duration.
    Timeout,
}

impl std::fmt::Display for LeaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseError::Conflict => f.write_str("conflict: the Lease changed since it was read"),
            LeaseError::Api(e) => write!(f, "{e}"),
            LeaseError::Timeout => f.write_str("no answer from the API server in time"),
        }
    }
}

fn classify(e: kube::Error) -> LeaseError {
    match &e {
        kube::Error::Api(s) if s.code == 409 => LeaseError::Conflict,
        _ => LeaseError::Api(e),
    }
}

/// One replica's handle on the Lease: read it, claim it, renew it, release it. Each step
/// is one request, so a test can interleave two contenders exactly.
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    /// A handle on Lease `name` in `namespace`, for the replica called `identity`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    /// This replica's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Reads the Lease (`None` if it does not exist).
    pub async fn read(&self) -> Result<Option<Lease>, LeaseError> {
        self.bounded(async { self.api.get_opt(&self.name).await.map_err(LeaseError::Api) })
            .await
    }

    /// Every Lease request gets a third of the duration: a leader whose renewal hangs
    /// must find out while its term still runs.
    async fn bounded<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, LeaseError>>,
    ) -> Result<T, LeaseError> {
        tokio::time::timeout(self.duration / 3, request)
            .await
            .unwrap_or(Err(LeaseError::Timeout))
    }

    /// Creates the Lease held by us. `Conflict` if it exists already.
    pub async fn create(&self) -> Result<Lease, LeaseError> {
        let now = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        self.bounded(async {
            self.api
                .create(&PostParams::default(), &lease)
                .await
                .map_err(classify)
        })
        .await
    }

    /// Takes over `observed` (expired or released), as read: succeeds only if nobody
    /// wrote the Lease since (its `resourceVersion` is the precondition).
    pub async fn claim(&self, observed: &Lease) -> Result<Lease, LeaseError> {
        let now = MicroTime(Timestamp::now());
        let mut next = observed.clone();
        let spec = next.spec.get_or_insert_with(Default::default);
        let transitions = spec.lease_transitions.unwrap_or(0);
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.duration_seconds());
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        spec.lease_transitions = Some(transitions + 1);
        self.put(next).await
    }

    /// Renews `held` (ours, as last written or read).
    pub async fn renew(&self, held: &Lease) -> Result<Lease, LeaseError> {
        let mut next = held.clone();
        let spec = next.spec.get_or_insert_with(Default::default);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        spec.lease_duration_seconds = Some(self.duration_seconds());
        self.put(next).await
    }

    /// Gives `held` up: an empty holder, which followers may take at once.
    pub async fn release(&self, held: &Lease) -> Result<Lease, LeaseError> {
        let mut next = held.clone();
        let spec = next.spec.get_or_insert_with(Default::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.put(next).await
    }

    async fn put(&self, lease: Lease) -> Result<Lease, LeaseError> {
        debug_assert!(
            lease.metadata.resource_version.is_some(),
            "a Lease write must carry its precondition"
        );
        self.bounded(async {
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map_err(classify)
        })
        .await
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// Who writes status right now, as the elector publishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    /// Goes up each time this replica takes the Lease: a new term starts from scratch.
    pub term: u64,
    /// Until when this replica may write: the last successful renewal (timed from when it
    /// was sent) plus two thirds of the duration. `None`: it does not lead.
    pub until: Option<Instant>,
}

impl Leadership {
    /// Not leading.
    pub const FOLLOWER: Leadership = Leadership {
        term: 0,
        until: None,
    };

    /// Whether this replica may write at this instant.
    pub fn leads(&self) -> bool {
        self.until.is_some_and(|t| Instant::now() < t)
    }
}

/// The election state machine around a [`LeaseLock`]: call [`Elector::step`] whenever it
/// is due ([`Elector::next_step`]), or let [`Elector::run`] do it.
pub struct Elector {
    lock: LeaseLock,
    /// The Lease as last read or written, and when its resourceVersion was first seen.
    observed: Option<(Lease, Instant)>,
    /// When the last successful renewal (or take-over) was sent, while leading.
    renewed: Option<Instant>,
    term: u64,
    next: Instant,
}

impl Elector {
    /// An elector that has not yet read the Lease.
    pub fn new(lock: LeaseLock) -> Self {
        Elector {
            lock,
            observed: None,
            renewed: None,
            term: 0,
            next: Instant::now(),
        }
    }

    /// Until when this replica may write (see [`Leadership::until`]).
    pub fn leadership(&self) -> Leadership {
        Leadership {
            term: self.term,
            until: self
                .renewed
                .map(|t| t + self.lock.duration * 2 / 3)
                .filter(|until| Instant::now() < *until),
        }
    }

    /// Whether this replica holds the Lease (renewed within the renew deadline).
    pub fn is_leader(&self) -> bool {
        self.leadership().leads()
    }

    /// When [`Elector::step`] has work to do next.
    pub fn next_step(&self) -> Instant {
        self.next
    }

    fn retry_period(&self) -> Duration {
        (self.lock.duration / 10).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    fn observe(&mut self, lease: Lease) {
        let rv = lease.metadata.resource_version.clone();
        match &self.observed {
            Some((old, at)) if old.metadata.resource_version == rv => {
                let at = *at;
                self.observed = Some((lease, at));
            }
            _ => self.observed = Some((lease, Instant::now())),
        }
    }

    /// One round: read the Lease, then renew it if ours, claim it if expired or
    /// released, or wait. Returns whether this replica leads afterwards.
    pub async fn step(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next {
            return self.is_leader();
        }
        // A term runs from when its renewal was *sent*: an answer that comes late must not
        // stretch it past what the followers see.
        let sent = Instant::now();
        if self.is_leader() {
            if let Some((held, _)) = &self.observed {
                match self.lock.renew(held).await {
                    Ok(lease) => return self.won(lease, sent),
                    Err(LeaseError::Conflict) => {
                        tracing::warn!("status lease: renewal conflicted; re-reading");
                        self.renewed = None;
                        self.observed = None;
                    }
                    Err(e) => {
                        tracing::warn!("status lease: cannot renew: {e}");
                        self.next = Instant::now() + self.retry_period();
                        return self.is_leader();
                    }
                }
            }
        }
        let sent = Instant::now();
        let lease = match self.lock.read().await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                return match self.lock.create().await {
                    Ok(lease) => self.won(lease, sent),
                    Err(e) => self.lost(e),
                }
            }
            Err(e) => return self.lost(e),
        };
        self.observe(lease.clone());
        let seen_at = self.observed.as_ref().map(|(_, at)| *at).unwrap_or(now);
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .unwrap_or(self.lock.duration);
        match holder(&lease) {
            Some(h) if h == self.lock.identity => match self.lock.renew(&lease).await {
                Ok(lease) => self.won(lease, sent),
                Err(e) => self.lost(e),
            },
            Some(_) if seen_at.elapsed() < duration => {
                self.renewed = None;
                let expires = seen_at + duration;
                self.next = (Instant::now() + self.retry_period()).min(expires);
                false
            }
            _ => match self.lock.claim(&lease).await {
                Ok(lease) => self.won(lease, sent),
                Err(e) => self.lost(e),
            },
        }
    }

    fn won(&mut self, lease: Lease, sent: Instant) -> bool {
        if !self.is_leader() {
            self.term += 1;
            tracing::info!(identity = %self.lock.identity, "status lease acquired: this replica writes status");
        }
        self.observe(lease);
        self.renewed = Some(sent);
        self.next = sent + self.lock.duration / 3;
        true
    }

    fn lost(&mut self, e: LeaseError) -> bool {
        match e {
            LeaseError::Conflict => {
                // Another replica got there first: it leads.
                self.renewed = None;
                self.observed = None;
            }
            e => tracing::warn!("status lease: {e}"),
        }
        self.next = Instant::now() + self.retry_period();
        self.is_leader()
    }

    /// Releases the Lease if this replica holds it (on shutdown), so that another
    /// replica takes over without waiting for it to expire.
    pub async fn release(&mut self) {
        if !self.is_leader() {
            return;
        }
        self.renewed = None;
        if let Some((held, _)) = &self.observed {
            match self.lock.release(held).await {
                Ok(_) => tracing::info!("status lease released"),
                Err(e) => tracing::warn!("status lease: cannot release: {e}"),
            }
        }
    }

    /// Runs the election until `stop` resolves, publishing [`Leadership`] after every
    /// step; then releases the Lease.
    pub async fn run(
        mut self,
        leadership: tokio::sync::watch::Sender<Leadership>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            self.step().await;
            leadership.send_if_modified(|l| {
                let now = self.leadership();
                let changed = *l != now;
                *l = now;
                changed
            });
            // Wake at the next step, or when the term runs out without a renewal.
            let mut wake = self.next;
            if let Some(until) = self.leadership().until {
                wake = wake.min(until);
            }
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        leadership.send_replace(Leadership::FOLLOWER);
        self.release().await;
    }
}
