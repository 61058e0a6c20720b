//! A running gateway: load, compile, serve, and reload, wired together.
//!
//! The app does not know where its objects come from: a [`Source`] (files or the
//! Kubernetes API server) loads a complete snapshot, and every start and reload runs the
//! same load → compile → swap steps on it, so what `keyway check` reports is exactly what
//! `run` does, and both modes share one reload, readiness and status path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use keyway_compile::{Compiled, Options as CompileOptions, Report};
use keyway_dataplane::{Gateway, Metrics, Server, ServerOptions, Settings};
use keyway_model::Snapshot;
use keyway_sources::files::{FileSource, LoadError, Loaded};
use keyway_sources::Source;

use crate::state::State;

/// Everything `keyway run` is configured with.
#[derive(Clone, Debug, Default)]
pub struct AppOptions {
    /// Compiler choices.
    pub compile: CompileOptions,
    /// Listener options.
    pub server: ServerOptions,
    /// Request-path settings.
    pub settings: Settings,
    /// Admin port address; `None` for no admin port.
    pub admin: Option<SocketAddr>,
    /// Told of every config applied, with the snapshot it came from (Kubernetes mode's
    /// status writer).
    pub observer: Option<ApplyObserver>,
}

/// A callback run after each config is applied, with its snapshot and report. It runs on
/// the reload path: it must be quick (hand the work to a task).
#[derive(Clone)]
pub struct ApplyObserver(pub Arc<ObserveFn>);

/// What an [`ApplyObserver`] calls.
pub type ObserveFn = dyn Fn(&Snapshot, &Arc<Report>) + Send + Sync;

impl std::fmt::Debug for ApplyObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApplyObserver")
    }
}

/// A running gateway.
pub struct App {
    /// Listener ports.
    pub server: Arc<Server>,
    /// Generation, report, readiness.
    pub state: Arc<State>,
    /// Where the admin port listens.
    pub admin_addr: Option<SocketAddr>,
    options: AppOptions,
    source: Arc<dyn Source>,
    /// Fingerprint of the snapshot behind the applied config.
    reload_lock: tokio::sync::Mutex<u64>,
}

/// Loads and compiles manifests: the one pipeline `run` and `check` share.
pub fn load_and_compile(
    paths: &[PathBuf],
    options: &CompileOptions,
) -> Result<(Loaded, Compiled), Vec<LoadError>> {
    timed_load_and_compile(&FileSource::new(paths.to_vec()), options, None)
        .map(|(l, c, _)| (l, c.expect("compiled when not skipped")))
}

/// How long the steps of one reload took.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Timings {
    /// Reading the source (files: reading and parsing what changed).
    pub load_ms: f64,
    /// Compiling the snapshot.
    pub compile_ms: f64,
    /// Swapping the config in and opening/closing ports.
    pub apply_ms: f64,
}

/// Loads, then compiles unless the snapshot's fingerprint equals `skip_if` (nothing
/// changed).
fn timed_load_and_compile(
    source: &dyn Source,
    options: &CompileOptions,
    skip_if: Option<u64>,
) -> Result<(Loaded, Option<Compiled>, Timings), Vec<LoadError>> {
    let t0 = std::time::Instant::now();
    let loaded = source.load()?;
    if skip_if == Some(loaded.fingerprint) {
        return Ok((loaded, None, Timings::default()));
    }
    let t1 = std::time::Instant::now();
    // The clock enters here, not in the compiler: keys expiring soon are reported as of now.
    let options = CompileOptions {
        now: Some(std::time::SystemTime::now()),
        ..options.clone()
    };
    let compiled = keyway_compile::compile(&loaded.snapshot, &options);
    let timings = Timings {
        load_ms: (t1 - t0).as_secs_f64() * 1e3,
        compile_ms: t1.elapsed().as_secs_f64() * 1e3,
        apply_ms: 0.0,
    };
    Ok((loaded, Some(compiled), timings))
}

/// Joins load errors into one message, one per line.
pub fn describe(errors: &[LoadError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn task_failed(e: tokio::task::JoinError) -> LoadError {
    LoadError {
        path: "<reload>".into(),
        line: None,
        column: None,
        resource: None,
        message: format!("reload task failed: {e}"),
    }
}

impl App {
    /// Starts the admin port, waits until the source is complete, then loads, compiles and
    /// starts serving. Until then `/readyz` answers 503 and no listener is open. Fails if
    /// the admin port cannot bind or the first load fails.
    pub async fn start(
        source: Arc<dyn Source>,
        options: AppOptions,
    ) -> Result<Arc<App>, Vec<LoadError>> {
        let metrics = Arc::new(Metrics::new());
        let state = State::new(metrics.clone());
        state.set_ready(
            false,
            format!("waiting for the first complete read of {}", source.name()),
        );
        // Nothing to serve yet: no listener opens before the first complete config.
        let gateway = Gateway::new(
            Arc::new(keyway_store::Config::default()),
            metrics,
            options.settings.clone(),
        );
        let server = Server::new(gateway.clone(), options.server.clone());
        let admin_addr = match options.admin {
            Some(addr) => {
                match crate::admin::spawn(addr, state.clone(), gateway, source.clone()).await {
                    Ok(a) => Some(a),
                    Err(e) => {
                        return Err(vec![LoadError {
                            path: "--admin-address".into(),
                            line: None,
                            column: None,
                            resource: None,
                            message: format!("cannot bind {addr}: {e}"),
                        }])
                    }
                }
            }
            None => None,
        };
        source.complete().await;
        let (loaded, compiled, timings) = {
            let (source, compile) = (source.clone(), options.compile.clone());
            tokio::task::spawn_blocking(move || timed_load_and_compile(&*source, &compile, None))
                .await
                .unwrap_or_else(|e| Err(vec![task_failed(e)]))?
        };
        let compiled = compiled.expect("compiled when not skipped");
        let swap_started = std::time::Instant::now();
        server.gateway().swap(Arc::new(compiled.config));
        let app = Arc::new(App {
            server,
            state,
            admin_addr,
            options,
            source,
            reload_lock: tokio::sync::Mutex::new(loaded.fingerprint),
        });
        app.apply(loaded, compiled.report, timings, swap_started)
            .await;
        Ok(app)
    }

    /// The source this app reads.
    pub fn source(&self) -> &Arc<dyn Source> {
        &self.source
    }

    /// Reloads from the source. A load error keeps the current config and is recorded;
    /// otherwise the new config serves every request that starts from now on.
    pub async fn reload(&self) -> Result<u64, String> {
        self.reload_if_changed(true).await
    }

    /// As [`App::reload`], but a snapshot identical to the applied one is not compiled
    /// again (unless `force`): editors touch files without changing them, and the API
    /// server sends updates (status, the leader's own writes) that change nothing read.
    pub async fn reload_if_changed(&self, force: bool) -> Result<u64, String> {
        let mut applied_fingerprint = self.reload_lock.lock().await;
        // Reading and compiling can take a while with many keys: keep it off the threads
        // that serve requests.
        let (source, options) = (self.source.clone(), self.options.compile.clone());
        let skip_if = (!force).then_some(*applied_fingerprint);
        let result = tokio::task::spawn_blocking(move || {
            timed_load_and_compile(&*source, &options, skip_if)
        })
        .await
        .unwrap_or_else(|e| Err(vec![task_failed(e)]));
        match result {
            Err(errors) => {
                for e in &errors {
                    tracing::error!("config not applied: {e}");
                }
                let msg = describe(&errors);
                self.state.failed(msg.clone());
                Err(msg)
            }
            Ok((_, None, _)) => {
                self.state.unchanged();
                Ok(self.state.generation())
            }
            Ok((loaded, Some(compiled), timings)) => {
                *applied_fingerprint = loaded.fingerprint;
                let swap_started = std::time::Instant::now();
                self.server.gateway().swap(Arc::new(compiled.config));
                Ok(self
                    .apply(loaded, compiled.report, timings, swap_started)
                    .await)
            }
        }
    }

    async fn apply(
        &self,
        loaded: Loaded,
        report: keyway_compile::Report,
        mut timings: Timings,
        swap_started: std::time::Instant,
    ) -> u64 {
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        for line in report.problems() {
            tracing::warn!("{line}");
        }
        let warnings = loaded.warnings.iter().map(ToString::to_string).collect();
        let bind_errors = self.server.reconcile().await;
        timings.apply_ms = swap_started.elapsed().as_secs_f64() * 1e3;
        let report = Arc::new(report);
        if let Some(observer) = &self.options.observer {
            (observer.0)(&loaded.snapshot, &report);
        }
        let generation = self.state.applied(report, warnings, timings);
        if bind_errors.is_empty() {
            self.state.set_ready(true, "");
        } else {
            let why: Vec<String> = bind_errors.iter().map(ToString::to_string).collect();
            self.state.set_ready(false, why.join("; "));
        }
        tracing::info!(
            generation,
            load_ms = timings.load_ms,
            compile_ms = timings.compile_ms,
            apply_ms = timings.apply_ms,
            "configuration applied"
        );
        generation
    }

    /// The address a Gateway listener port is bound to.
    pub fn addr(&self, port: u16) -> Option<SocketAddr> {
        self.server.local_addr(port)
    }

    /// Stops accepting and drains in-flight requests.
    pub async fn shutdown(&self) {
        self.state.set_ready(false, "shutting down");
        self.server.shutdown().await;
    }
}
