//! Listening sockets: one accept loop per port, opened and closed to follow the config.
//!
//! [`Server::reconcile`] binds every port the current config serves and closes the ones it
//! no longer does; a closed port stops accepting and drains its connections. Connections
//! speak HTTP/1.1, or HTTP/2 when the client opens with the HTTP/2 preface (prior
//! knowledge, or after ALPN `h2` on TLS), on the same port. A port whose listeners are
//! HTTPS terminates TLS first ([`tls`]); plain and TLS connections then share one serving
//! path, generic over the byte stream.
//!
//! - [`accept`]: accepting with backoff and bounded logging when descriptors run out;
//! - [`conn`]: one connection, with the watchdog that closes idle and stuck ones;
//! - [`http1`]: Keyway's own HTTP/1.1 loop for bodyless `GET`/`HEAD` requests, which hands
//!   the connection to hyper's server at the first request it does not take ([`rewind`]);
//! - [`limits`]: the open-file limit and the default `--max-connections`.
//!
//! Client connections are capped across all ports ([`ServerOptions::max_connections`]):
//! above the cap a new connection is closed as soon as it is accepted, so the process
//! keeps the descriptors it needs for upstreams and its admin port.

pub mod accept;
pub(crate) mod conn;
mod http1;
pub mod limits;
mod rewind;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::body::Body;
use crate::request::{ConnInfo, Gateway, TlsInfo};
use accept::{Accepter, RateLimited};
use bytes::Bytes;
use conn::{Connections, Entry, Tracked};
use rewind::Rewind;

/// How listeners are opened and connections handled.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Address every listener binds.
    pub bind: IpAddr,
    /// Gateway listener port -> port actually bound (0 for any free port); unmapped ports
    /// are bound as written. Lets manifests that name port 80 run without privileges.
    pub port_map: BTreeMap<u16, u16>,
    /// Bind every listener to a free port chosen by the OS (tests); see
    /// [`Server::local_addr`] for where each one went.
    pub ephemeral_ports: bool,
    /// Time a client has to send a request's headers, and the longest a connection (HTTP/1.1
    /// or HTTP/2) may sit with no request in progress, from accept on.
    pub header_read_timeout: Duration,
    /// Client connections open at once, over all ports; more are closed on accept.
    pub max_connections: usize,
    /// Largest request head accepted; bigger ones get 431.
    pub max_header_bytes: usize,
    /// Time in-flight requests get to finish when a port closes or the process stops.
    pub drain_timeout: Duration,
    /// HTTP/2 connections are pinged at this interval and closed if a ping goes unanswered.
    pub http2_keepalive: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            bind: IpAddr::from([0, 0, 0, 0]),
            port_map: BTreeMap::new(),
            ephemeral_ports: false,
            header_read_timeout: Duration::from_secs(30),
            max_connections: 4096,
            max_header_bytes: 64 * 1024,
            drain_timeout: Duration::from_secs(10),
            http2_keepalive: Duration::from_secs(60),
        }
    }
}

/// A port that failed to open.
#[derive(Debug, Clone)]
pub struct BindError {
    /// The Gateway listener port.
    pub port: u16,
    /// The address that could not be bound.
    pub addr: SocketAddr,
    /// The OS error.
    pub error: String,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "listener port {}: cannot bind {}: {}",
            self.port, self.addr, self.error
        )
    }
}

struct PortTask {
    local: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The set of open listener ports.
pub struct Server {
    gateway: Arc<Gateway>,
    options: ServerOptions,
    builder: Arc<auto::Builder<TokioExecutor>>,
    http1: http1::Limits,
    ports: Mutex<HashMap<u16, PortTask>>,
    bind_errors: Mutex<Vec<BindError>>,
    refused_log: Mutex<RateLimited>,
}

/// Keeps a connection counted in `keyway_connections_open` (the count the cap is checked
/// against) until it closes.
struct OpenGuard(prometheus_client::metrics::gauge::Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Server {
    /// A server with no port open yet; call [`Server::reconcile`].
    pub fn new(gateway: Arc<Gateway>, options: ServerOptions) -> Arc<Self> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .max_buf_size(options.max_header_bytes.max(8192))
            .max_headers(gateway.settings().max_headers)
            .writev(false);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(options.http2_keepalive)
            .max_header_list_size(options.max_header_bytes as u32);
        let http1 = http1::Limits {
            max_headers: gateway.settings().max_headers,
            max_head: options.max_header_bytes.max(8192),
        };
        Arc::new(Server {
            gateway,
            options,
            builder: Arc::new(builder),
            http1,
            ports: Mutex::new(HashMap::new()),
            bind_errors: Mutex::new(Vec::new()),
            refused_log: Mutex::new(RateLimited::new(Duration::from_secs(1))),
        })
    }

    /// Client connections open right now, over all ports.
    pub fn open_connections(&self) -> usize {
        self.gateway.metrics.connections_open.get().max(0) as usize
    }

    /// The request path this server feeds.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Opens the ports the current config serves and closes the others. Returns the ports
    /// that could not be opened (they are retried on the next call).
    pub async fn reconcile(self: &Arc<Self>) -> Vec<BindError> {
        let config = self.gateway.config();
        let wanted: Vec<u16> = config.ports.keys().copied().collect();
        let mut errors = Vec::new();
        let mut to_stop = Vec::new();
        {
            let mut ports = self.ports.lock().expect("ports lock");
            let stale: Vec<u16> = ports
                .keys()
                .filter(|p| !wanted.contains(p))
                .copied()
                .collect();
            for p in stale {
                if let Some(t) = ports.remove(&p) {
                    tracing::info!(port = p, addr = %t.local, "closing listener port");
                    to_stop.push(t);
                }
            }
        }
        for t in to_stop {
            let _ = t.stop.send(true);
            // The task drains its own connections; do not wait for it here.
            drop(t.task);
        }
        for port in wanted {
            if self.ports.lock().expect("ports lock").contains_key(&port) {
                continue;
            }
            let bind_port = match self.options.ephemeral_ports {
                true => 0,
                false => self.options.port_map.get(&port).copied().unwrap_or(port),
            };
            let addr = SocketAddr::new(self.options.bind, bind_port);
            match bind(addr) {
                Ok(listener) => {
                    let local = listener.local_addr().unwrap_or(addr);
                    tracing::info!(port, addr = %local, "listening");
                    let (stop, stopped) = watch::channel(false);
                    let task = tokio::spawn(self.clone().accept_loop(port, listener, stopped));
                    self.ports
                        .lock()
                        .expect("ports lock")
                        .insert(port, PortTask { local, stop, task });
                }
                Err(e) => {
                    let err = BindError {
                        port,
                        addr,
                        error: e.to_string(),
                    };
                    tracing::error!("{err}");
                    errors.push(err);
                }
            }
        }
        *self.bind_errors.lock().expect("bind errors lock") = errors.clone();
        errors
    }

    /// Ports that failed to open on the last reconcile.
    pub fn bind_errors(&self) -> Vec<BindError> {
        self.bind_errors.lock().expect("bind errors lock").clone()
    }

    /// The address a Gateway listener port is actually bound to.
    pub fn local_addr(&self, port: u16) -> Option<SocketAddr> {
        self.ports
            .lock()
            .expect("ports lock")
            .get(&port)
            .map(|t| t.local)
    }

    /// Stops accepting on every port and waits (up to the drain timeout) for in-flight
    /// requests to finish.
    pub async fn shutdown(&self) {
        let tasks: Vec<PortTask> = self
            .ports
            .lock()
            .expect("ports lock")
            .drain()
            .map(|(_, t)| t)
            .collect();
        for t in &tasks {
            let _ = t.stop.send(true);
        }
        for t in tasks {
            let _ = t.task.await;
        }
    }

    async fn accept_loop(
        self: Arc<Self>,
        port: u16,
        listener: TcpListener,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut accepter = Accepter::new(
            format!("port {port}"),
            Some(self.gateway.metrics.accept_errors.clone()),
        );
        let open = Arc::new(Connections::default());
        let watchdog = tokio::spawn(Connections::watch(
            Arc::downgrade(&open),
            self.options.header_read_timeout,
        ));
        let mut tasks = JoinSet::new();
        let acceptor = TlsAcceptor::from(tls::server_config(self.gateway.clone(), port));
        loop {
            let (stream, peer) = tokio::select! {
                accepted = accepter.accept(&listener) => accepted,
                // Reap finished connections as they go, so the set stays small.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                _ = stop.changed() => break,
            };
            if let Some(guard) = self.admit() {
                // HTTP or HTTPS is the port's current config's say (the compiler never
                // puts both on one port).
                let tls = self
                    .gateway
                    .config()
                    .port(port)
                    .is_some_and(|p| p.tls)
                    .then(|| acceptor.clone());
                self.serve(&mut tasks, &open, port, stream, peer, guard, tls);
            }
        }
        drop(listener);
        open.close_all();
        if !tasks.is_empty() {
            tracing::info!(port, connections = tasks.len(), "draining connections");
        }
        let drained = tokio::time::timeout(self.options.drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(port, "drain timeout reached; closing remaining connections");
            tasks.shutdown().await;
        }
        watchdog.abort();
    }

    /// Counts a new connection in, or refuses it (closing it at once) when
    /// `max_connections` are open.
    fn admit(&self) -> Option<OpenGuard> {
        let gauge = self.gateway.metrics.connections_open.clone();
        let open = gauge.inc().max(0) as usize;
        let guard = OpenGuard(gauge);
        if open < self.options.max_connections {
            return Some(guard);
        }
        self.gateway.metrics.connections_refused.inc();
        if let Some(held_back) = self.refused_log.lock().expect("log lock").allow() {
            tracing::warn!(
                max_connections = self.options.max_connections,
                not_logged = held_back,
                "connection refused: --max-connections are open"
            );
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn serve(
        &self,
        tasks: &mut JoinSet<()>,
        open: &Arc<Connections>,
        port: u16,
        stream: TcpStream,
        peer: SocketAddr,
        guard: OpenGuard,
        tls: Option<TlsAcceptor>,
    ) {
        let _ = stream.set_nodelay(true);
        let gateway = self.gateway.clone();
        let builder = self.builder.clone();
        let limits = self.http1;
        let entry = open.add();
        let handshake_timeout = self.options.header_read_timeout;
        tasks.spawn(async move {
            let mut info = ConnInfo::new(port, peer);
            match tls {
                None => drive(builder, Some(limits), stream, gateway, info, &entry).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let session = stream.get_ref().1;
                            info.tls = Some(TlsInfo {
                                server_name: session.server_name().map(Box::from),
                            });
                            // HTTP/2 chosen by ALPN goes straight to hyper.
                            let limits = (session.alpn_protocol() != Some(b"h2")).then_some(limits);
                            drive(builder, limits, stream, gateway, info, &entry).await;
                        }
                        Ok(Err(e)) => {
                            gateway.metrics.tls_handshake_failures.inc();
                            tracing::debug!(%peer, port, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            gateway.metrics.tls_handshake_failures.inc();
                            tracing::debug!(%peer, port, "TLS handshake timed out");
                        }
                    }
                }
            }
            drop(entry);
            drop(guard);
        });
    }
}

/// Serves HTTP on one accepted connection, plain or TLS, until it ends: Keyway's own
/// HTTP/1.1 loop first (unless `http1` is `None`: HTTP/2 by ALPN), then hyper's server
/// for the rest if that loop hands the connection over.
async fn drive<IO>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    http1: Option<http1::Limits>,
    io: IO,
    gateway: Arc<Gateway>,
    info: ConnInfo,
    entry: &Entry,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let control = entry.control().clone();
    let io = match http1 {
        None => Rewind::new(Bytes::new(), io),
        Some(limits) => match http1::serve(io, &gateway, &info, &control, limits).await {
            http1::Ended::Closed => return,
            http1::Ended::Handoff(io) => io,
        },
    };
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let in_flight = control.begin();
        let gateway = gateway.clone();
        let info = info.clone();
        async move {
            let mut resp = gateway.handle(&info, req.map(Body::Stream)).await;
            // hyper writes the map only.
            crate::upstream::fields::materialize(&mut resp);
            Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, in_flight)))
        }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    conn::drive(conn, entry.control()).await;
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
