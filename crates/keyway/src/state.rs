//! What the running process knows about itself: the applied config's generation and
//! report, the last reload error, readiness. Read by the admin port.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use keyway_compile::Report;
use keyway_dataplane::Metrics;

/// Shared, cheaply readable process state.
pub struct State {
    generation: AtomicU64,
    applied_at: Mutex<Option<SystemTime>>,
    last_error: Mutex<Option<(SystemTime, String)>>,
    last_attempt_failed: AtomicBool,
    report: ArcSwap<Report>,
    warnings: Mutex<Vec<String>>,
    timings: Mutex<crate::app::Timings>,
    ready: AtomicBool,
    not_ready_reason: Mutex<String>,
    /// Metrics shared with the data plane.
    pub metrics: Arc<Metrics>,
}

impl State {
    /// Fresh state: generation 0, not ready.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(State {
            generation: AtomicU64::new(0),
            applied_at: Mutex::new(None),
            last_error: Mutex::new(None),
            last_attempt_failed: AtomicBool::new(false),
            report: ArcSwap::from_pointee(Report::default()),
            warnings: Mutex::new(Vec::new()),
            timings: Mutex::new(Default::default()),
            ready: AtomicBool::new(false),
            not_ready_reason: Mutex::new("no configuration applied yet".into()),
            metrics,
        })
    }

    /// Records a newly applied config; returns its generation.
    pub fn applied(
        &self,
        report: Arc<Report>,
        warnings: Vec<String>,
        timings: crate::app::Timings,
    ) -> u64 {
        *self.timings.lock().expect("lock") = timings;
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *self.applied_at.lock().expect("lock") = Some(SystemTime::now());
        self.last_attempt_failed.store(false, Ordering::SeqCst);
        // What is applied now is what the files say: an older error no longer describes
        // anything that is served.
        *self.last_error.lock().expect("lock") = None;
        *self.warnings.lock().expect("lock") = warnings;
        self.report.store(report);
        self.metrics.config_generation.set(generation as i64);
        generation
    }

    /// Records a reload that found the applied files unchanged (after a failed attempt,
    /// the files were put back as they were: the error is gone with them).
    pub fn unchanged(&self) {
        self.last_attempt_failed.store(false, Ordering::SeqCst);
        *self.last_error.lock().expect("lock") = None;
    }

    /// Brings `keyway_log_lines_dropped_total` up to date with the log writer's count.
    pub fn sync_log_drops(&self) {
        let now = crate::logging::dropped_lines();
        let counted = self.metrics.log_lines_dropped.get();
        if now > counted {
            self.metrics.log_lines_dropped.inc_by(now - counted);
        }
    }

    /// Records a reload that failed; the previous config keeps serving.
    pub fn failed(&self, error: String) {
        self.metrics.config_reload_failures.inc();
        self.last_attempt_failed.store(true, Ordering::SeqCst);
        *self.last_error.lock().expect("lock") = Some((SystemTime::now(), error));
    }

    /// Sets readiness (first config applied and every port bound).
    pub fn set_ready(&self, ready: bool, reason: impl Into<String>) {
        self.ready.store(ready, Ordering::SeqCst);
        *self.not_ready_reason.lock().expect("lock") = reason.into();
    }

    /// Whether the gateway is ready, and why not.
    pub fn readiness(&self) -> (bool, String) {
        (
            self.ready.load(Ordering::SeqCst),
            self.not_ready_reason.lock().expect("lock").clone(),
        )
    }

    /// Generation of the applied config (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The applied config's report.
    pub fn report(&self) -> Arc<Report> {
        self.report.load_full()
    }

    /// Summary for the admin port: `stale` is true while the newest reload attempt failed
    /// and an older config is serving; `last_error` is the failure that made it stale (it
    /// clears once a config applies).
    pub fn summary(&self) -> serde_json::Value {
        let applied_at = self
            .applied_at
            .lock()
            .expect("lock")
            .map(|t| humantime::format_rfc3339_millis(t).to_string());
        let last_error = self.last_error.lock().expect("lock").clone();
        serde_json::json!({
            "generation": self.generation(),
            "applied_at": applied_at,
            "stale": self.last_attempt_failed.load(Ordering::SeqCst),
            "last_error": last_error.as_ref().map(|(_, e)| e),
            "last_error_at": last_error.map(|(t, _)| humantime::format_rfc3339_millis(t).to_string()),
            "warnings": *self.warnings.lock().expect("lock"),
            "timings": *self.timings.lock().expect("lock"),
        })
    }
}
