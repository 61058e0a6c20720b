//! `keyway`: a Kubernetes Gateway API gateway with kgateway's API key authentication.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use keyway::app::{self, App, AppOptions};
use keyway::logging::{self, LogFormat};
use keyway_dataplane::listener::limits;
use keyway_dataplane::{EscapedSlashes, ServerOptions, Settings};
use keyway_sources::kubernetes::{KubeOptions, KubeSource};
use keyway_sources::{FileSource, Source};
use keyway_store::upstream::Balance;
use kube::CustomResourceExt;
use std::sync::Arc;

/// mimalloc: the request path allocates small, short-lived buffers (header maps, bodies)
/// on every request; glibc's allocator spends noticeably more time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "keyway", version, about, propagate_version = true)]
struct Cli {
    /// Log line format (level from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Gateways defined in manifest files.
    Run(Box<RunArgs>),
    /// Load and compile manifests without serving; print what would be served and every
    /// problem. Exits 1 if anything is wrong.
    Check(ConfigArgs),
    /// Print the CustomResourceDefinitions of TrafficPolicy and Backend as Keyway reads them.
    Crds,
    /// Print what `kubectl apply -f -` needs to run Keyway in a cluster: Namespace,
    /// ServiceAccount, least-privilege RBAC, Deployment, Service, PodDisruptionBudget and
    /// the GatewayClass `keyway`.
    Manifests(ManifestArgs),
    /// Make a new API key (256 bits from the OS's random source): the key goes to stderr,
    /// once; a Secret manifest holding it (or only its hash, with --hash) to stdout.
    Keygen(KeygenArgs),
    /// Run the httpbin-like sample upstream used by the quickstart.
    EchoServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
    },
}

#[derive(Args)]
struct KeygenArgs {
    /// The client id: the Secret entry's name.
    #[arg(long)]
    client: String,
    /// The Secret's name.
    #[arg(long, default_value = "api-keys")]
    secret: String,
    /// The Secret's namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Store only the key's SHA-256 (`keyHash`): the Secret never holds the key.
    #[arg(long)]
    hash: bool,
    /// The key stops working this long from now (`expiresAt`), e.g. `90d`.
    #[arg(long, value_parser = humantime::parse_duration)]
    expires_in: Option<Duration>,
}

#[derive(Args)]
struct ManifestArgs {
    /// Namespace Keyway runs in (and holds its status Lease in).
    #[arg(long, default_value = "keyway")]
    namespace: String,
    /// Replicas of the Deployment.
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// Read Secrets only in this namespace (repeatable; default: all): the RBAC grants
    /// Secrets in these namespaces only.
    #[arg(long, value_name = "NS")]
    watch_namespace: Vec<String>,
    /// Container image.
    #[arg(long, default_value_t = keyway::kubernetes::manifests::default_image())]
    image: String,
    /// The controller name the GatewayClass `keyway` names.
    #[arg(long, default_value = "keyway.dev/gateway-controller")]
    controller_name: String,
}

#[derive(Args)]
struct ConfigArgs {
    /// A YAML manifest file or a directory of them (repeatable).
    #[arg(long, short = 'c', required = true)]
    config: Vec<PathBuf>,
    /// Serve only Gateways of this GatewayClass (default: all).
    #[arg(long)]
    gateway_class: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// A YAML manifest file or a directory of them (repeatable); standalone mode.
    #[arg(
        long,
        short = 'c',
        required_unless_present = "kubernetes",
        conflicts_with = "kubernetes"
    )]
    config: Vec<PathBuf>,
    /// Serve only Gateways of this GatewayClass (default: all; in Kubernetes mode, every
    /// class naming --controller-name).
    #[arg(long)]
    gateway_class: Option<String>,
    /// Serve from the Kubernetes API server (kubeconfig inference: KUBECONFIG,
    /// ~/.kube/config, else the in-cluster service account) instead of files.
    #[arg(long)]
    kubernetes: bool,
    /// Kubernetes mode: serve the Gateways of GatewayClasses naming this controller.
    #[arg(
        long,
        default_value = "keyway.dev/gateway-controller",
        env = "KEYWAY_CONTROLLER_NAME"
    )]
    controller_name: String,
    /// Kubernetes mode: read Secrets only in this namespace (repeatable; default: all).
    #[arg(long, value_name = "NS")]
    watch_namespace: Vec<String>,
    /// Kubernetes mode: this replica's name, its identity in the status Lease.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Kubernetes mode: the namespace of the status Lease (`keyway-status`).
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
    /// Kubernetes mode: the Service in front of the replicas (NS/NAME); its load-balancer
    /// or cluster addresses are the Gateways' `status.addresses`.
    #[arg(long, value_name = "NS/NAME")]
    service: Option<String>,
    /// Kubernetes mode: write status only while holding the `keyway-status` Lease. Off:
    /// this replica always writes (run a single replica then).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Kubernetes mode: how long the status Lease is held without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// Kubernetes mode: how often the leader reads every object again to put right a
    /// status someone else changed (reads only while nothing differs).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    status_resync: Duration,
    /// Address every Gateway listener binds.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Bind a listener port of the manifests to another port: `80=8080` serves the
    /// Gateway's port-80 listener on 8080 (manifests from a cluster, without privileges);
    /// `=0` lets the OS choose (the log says where). Repeatable.
    #[arg(long, value_name = "LISTENER=BIND", value_parser = parse_port_map)]
    port_map: Vec<(u16, u16)>,
    /// Address of the admin port (/healthz, /readyz, /metrics, /config_dump, /status).
    #[arg(long, default_value = "127.0.0.1:19000")]
    admin_address: SocketAddr,
    /// Time to wait for upstream response headers once the whole request has been sent (a
    /// rule's `timeouts` overrides it).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    upstream_timeout: Duration,
    /// Longest pause in a request body while it is sent upstream (then 408).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    body_idle_timeout: Duration,
    /// Pooled upstream connections unused this long are closed.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    upstream_idle_timeout: Duration,
    /// Time to wait for an upstream connection.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Time a client has to send request headers, from accept on; also the longest a
    /// connection (HTTP/1.1 or HTTP/2) may stay open with no request in progress.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// Largest request head accepted (bigger gets 431).
    #[arg(long, default_value_t = 65536)]
    max_header_bytes: usize,
    /// Most header fields in a request, HTTP/1.1 and HTTP/2 alike (more gets 431).
    #[arg(long, default_value_t = 100)]
    max_headers: usize,
    /// Client connections open at once, over all listeners; more are closed on accept.
    /// Default: what the open-file limit (raised to its hard limit at start) can carry,
    /// half of it less a reserve, since each client connection may need an upstream one.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Encoded slashes and backslashes in request paths (`%2F`, `%5C`, `\`): `reject`
    /// (400), `unescape` (decode to `/`, normalise, then route), or `keep` (forward as is:
    /// unsafe with upstreams that decode them, such as nginx).
    #[arg(long, value_enum, default_value_t = SlashAction::Reject)]
    escaped_slashes: SlashAction,
    /// Clients with their own `keyway_api_key_allowed_total` series; the others are
    /// counted under `client="_other"`.
    #[arg(long, default_value_t = 1000)]
    metrics_max_clients: usize,
    /// Time in-flight requests get to finish on shutdown.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Load balancing across a backend's endpoints.
    #[arg(long, value_enum, default_value_t = Lb::RoundRobin)]
    lb: Lb,
    /// Quiet time after a manifest file changes before reloading.
    #[arg(long, default_value = "25ms", value_parser = humantime::parse_duration)]
    reload_debounce: Duration,
    /// Write one access-log line per request.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    access_log: bool,
    /// Worker threads serving requests (default: one per CPU core).
    #[arg(long)]
    threads: Option<usize>,
    /// Do not watch the config paths (reload on SIGHUP only).
    #[arg(long)]
    no_watch: bool,
}

fn parse_port_map(s: &str) -> Result<(u16, u16), String> {
    let (from, to) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected LISTENER=BIND, such as 80=8080"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("{s:?}: {p:?} is not a port number"))
    };
    Ok((port(from)?, port(to)?))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SlashAction {
    Reject,
    Unescape,
    Keep,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Lb {
    RoundRobin,
    LeastRequest,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log_guard = logging::init(cli.log_format);
    match cli.command {
        Command::Check(args) => check(&args),
        Command::Crds => crds(),
        Command::Manifests(args) => manifests(&args),
        Command::Keygen(args) => keygen(&args),
        Command::Run(args) => runtime(args.threads).block_on(run(*args, cli.log_format)),
        Command::EchoServer { listen } => runtime(None).block_on(async move {
            match keyway::echo::spawn(listen).await {
                Ok(addr) => {
                    tracing::info!(%addr, "echo server listening");
                    let _ = tokio::signal::ctrl_c().await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot listen on {listen}: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

/// The async runtime: one thread needs no work stealing, so `--threads 1` gets tokio's
/// single-threaded scheduler; more threads get the multi-threaded one.
fn runtime(threads: Option<usize>) -> tokio::runtime::Runtime {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build().expect("tokio runtime")
}

fn compile_options(args: &ConfigArgs) -> keyway_compile::Options {
    keyway_compile::Options {
        gateway_class: args.gateway_class.clone(),
        ..Default::default()
    }
}

fn check(args: &ConfigArgs) -> ExitCode {
    match app::load_and_compile(&args.config, &compile_options(args)) {
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s); nothing would be served", errors.len());
            ExitCode::FAILURE
        }
        Ok((loaded, compiled)) => {
            let (text, problems) = keyway::check::render(&loaded, &compiled);
            print!("{text}");
            if problems {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

fn crds() -> ExitCode {
    use keyway_model::{Backend, TrafficPolicy};
    for (i, crd) in [TrafficPolicy::crd(), Backend::crd()].iter().enumerate() {
        if i > 0 {
            println!("---");
        }
        match serde_yaml_ng::to_string(crd) {
            Ok(y) => print!("{y}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn keygen(args: &KeygenArgs) -> ExitCode {
    match keyway::keygen::generate(&keyway::keygen::KeygenOptions {
        client: args.client.clone(),
        secret: args.secret.clone(),
        namespace: args.namespace.clone(),
        hash: args.hash,
        expires_in: args.expires_in,
    }) {
        Ok((key, manifest)) => {
            eprintln!(
                "API key for client {:?} (shown once; store it now):",
                args.client
            );
            eprintln!("{key}");
            print!("{manifest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn manifests(args: &ManifestArgs) -> ExitCode {
    let options = keyway::kubernetes::manifests::InstallOptions {
        namespace: args.namespace.clone(),
        replicas: args.replicas,
        watch_namespaces: args.watch_namespace.clone(),
        image: args.image.clone(),
        controller_name: args.controller_name.clone(),
    };
    match keyway::kubernetes::manifests::render(&options) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The replica's identity and namespace in Kubernetes mode: flags, then the downward API
/// variables (as clap reads them), then what a pod always has.
fn pod_identity(args: &RunArgs) -> (String, String) {
    let name = args.pod_name.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "keyway".into());
        format!("{host}-{}", std::process::id())
    });
    let namespace = args.pod_namespace.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .map(|n| n.trim().to_string())
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into())
    });
    (name, namespace)
}

fn parse_service(s: &str) -> Result<keyway_model::ObjectKey, String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(keyway_model::ObjectKey::new(ns, name))
        }
        _ => Err(format!("--service {s:?}: expected NAMESPACE/NAME")),
    }
}

async fn run(args: RunArgs, log_format: LogFormat) -> ExitCode {
    // Dropped last (declared first): every line of the requests served gets written.
    let (access_log, _access_guard) = match args.access_log {
        true => {
            let (log, guard) = logging::access_log(log_format);
            (Some(log), Some(guard))
        }
        false => (None, None),
    };
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut compile = keyway_compile::Options {
        gateway_class: args.gateway_class.clone(),
        controller_name: args.kubernetes.then(|| args.controller_name.clone()),
        ..Default::default()
    };
    compile.balance = match args.lb {
        Lb::RoundRobin => Balance::RoundRobin,
        Lb::LeastRequest => Balance::LeastRequest,
    };
    let nofile = limits::raise_nofile_limit();
    let max_connections = args
        .max_connections
        .unwrap_or_else(|| limits::default_max_connections(nofile));
    tracing::info!(
        open_file_limit = nofile,
        max_connections,
        "connection limits"
    );
    let options = AppOptions {
        compile,
        server: ServerOptions {
            bind: args.bind_address,
            port_map: args.port_map.iter().copied().collect(),
            header_read_timeout: args.header_read_timeout,
            max_header_bytes: args.max_header_bytes,
            max_connections,
            drain_timeout: args.drain_timeout,
            ..Default::default()
        },
        settings: Settings {
            upstream_timeout: args.upstream_timeout,
            connect_timeout: args.connect_timeout,
            body_idle_timeout: args.body_idle_timeout,
            upstream_idle_timeout: args.upstream_idle_timeout,
            access_log,
            max_headers: args.max_headers,
            escaped_slashes: match args.escaped_slashes {
                SlashAction::Reject => EscapedSlashes::Reject,
                SlashAction::Unescape => EscapedSlashes::Unescape,
                SlashAction::Keep => EscapedSlashes::Keep,
            },
            metrics_max_clients: args.metrics_max_clients,
            ..Default::default()
        },
        admin: Some(args.admin_address),
        observer: None,
    };
    let mut options = options;
    let mut status_inputs = None;
    if args.kubernetes {
        let service = match args.service.as_deref().map(parse_service).transpose() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let (observer, inputs) = keyway::kubernetes::status_observer(service);
        options.observer = Some(observer);
        status_inputs = Some(inputs);
    }
    let (source, kube_changes): (Arc<dyn Source>, _) = if args.kubernetes {
        let options = KubeOptions {
            watch_namespaces: args.watch_namespace.clone(),
        };
        match KubeSource::connect(options).await {
            Ok(k) => {
                let changes = k.changes();
                (Arc::new(k), Some(changes))
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        (Arc::new(FileSource::new(args.config.clone())), None)
    };
    let started = tokio::select! {
        started = App::start(source, options) => started,
        () = signals.stop() => return ExitCode::SUCCESS,
    };
    let app = match started {
        Ok(app) => app,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s); not starting", errors.len());
            return ExitCode::FAILURE;
        }
    };
    let status_task = match status_inputs {
        Some(inputs) => match spawn_status(&args, inputs).await {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    if let Some(mut changes) = kube_changes {
        // Every change the API server sends that the compiler reads: the same reload path
        // as a file change; bursts coalesce while a reload runs.
        let app = app.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let _ = app.reload_if_changed(false).await;
            }
        });
    }
    let _watch = if args.no_watch || args.kubernetes {
        None
    } else {
        match keyway::watch::spawn(app.clone(), &args.config, args.reload_debounce) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("error: cannot watch the config paths: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    signals.serve(&app).await;
    if let Some(status) = status_task {
        // Hand the status Lease over before draining: a successor need not wait for it
        // to expire.
        status.stop(Duration::from_secs(2)).await;
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    app.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// The status tasks (the elector and the writer) and how to stop them.
struct StatusTasks {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl StatusTasks {
    /// Stops writing and releases the Lease, waiting at most `within`; whatever is still
    /// running then is aborted (a hung request must not outlive the replica's term).
    async fn stop(self, within: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + within;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// Starts leader election (unless disabled) and the status writer.
async fn spawn_status(
    args: &RunArgs,
    inputs: tokio::sync::watch::Receiver<Option<Arc<keyway::kubernetes::writer::StatusInputs>>>,
) -> Result<StatusTasks, String> {
    use keyway::kubernetes::{lease, writer};
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot connect to the Kubernetes API server: {e}"))?;
    let (identity, namespace) = pod_identity(args);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();
    let leadership = if args.leader_election {
        tracing::info!(%identity, %namespace, lease = lease::LEASE_NAME, "status: leader election");
        let elector = lease::Elector::new(lease::LeaseLock::new(
            client.clone(),
            &namespace,
            lease::LEASE_NAME,
            &identity,
            args.lease_duration,
        ));
        let (tx, rx) = tokio::sync::watch::channel(lease::Leadership::FOLLOWER);
        tasks.push(tokio::spawn(elector.run(tx, until_stopped())));
        rx
    } else {
        // The only writer: one term that does not end.
        let forever = std::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400);
        let (tx, rx) = tokio::sync::watch::channel(lease::Leadership {
            term: 1,
            until: Some(forever),
        });
        // Keep the sender: a closed channel would end the writer.
        tasks.push(tokio::spawn({
            let stopped = until_stopped();
            async move {
                stopped.await;
                drop(tx);
            }
        }));
        rx
    };
    let options = writer::StatusOptions {
        controller: args.controller_name.clone(),
        resync: args.status_resync,
    };
    tasks.push(tokio::spawn(writer::run(
        client,
        options,
        leadership,
        inputs,
        until_stopped(),
    )));
    Ok(StatusTasks { stop, tasks })
}

/// SIGTERM, SIGINT and SIGHUP, caught from the moment `run` starts: a signal that arrives
/// while the config loads, or just after the gateway turned ready, must not kill the process
/// with the default action instead of draining it.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Reloads on SIGHUP; returns on SIGTERM or SIGINT.
    /// Resolves on SIGTERM or SIGINT (before the gateway is up).
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    async fn serve(mut self, app: &App) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading configuration");
                    let _ = app.reload().await;
                }
            }
        }
    }
}
