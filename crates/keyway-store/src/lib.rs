//! Compiled state: what the data plane executes, and nothing it has to interpret.
//!
//! `keyway-compile` builds a [`Config`] from a snapshot of Kubernetes objects; the data
//! plane holds it behind an atomic pointer and swaps it whole on reload. Everything here is
//! plain, immutable data plus the few cheap methods the request path calls (host and path
//! matching, weighted choice), so a newcomer can read the request path against it without
//! knowing any Gateway API rule: those were all applied by the compiler.
//!
//! The one piece of mutable state is load-balancing bookkeeping (atomics), which the data
//! plane attaches from its own long-lived store when the config is swapped in.
//!
//! `Serialize` renders the config for `/config_dump`; API keys are never part of it (a
//! policy shows only how many keys it holds).
#![forbid(unsafe_code)]

pub mod auth;
pub mod host;
pub mod route;
pub mod tls;
pub mod upstream;

use std::collections::BTreeMap;
use std::sync::Arc;

use http::HeaderName;
use serde::{Serialize, Serializer};

pub use auth::{ApiKeyPolicy, Auth, KeyDigest};
pub use host::HostPattern;
pub use route::{
    Action, Forward, HeaderFilter, HeaderMatch, PathMatch, PathRewrite, QueryMatch, Redirect,
    Rewrite, Route, RouteMatch, ValueMatch,
};
pub use tls::ListenerTls;
pub use upstream::{Balance, Endpoint, EndpointState, Target, Upstream, WeightedBackend};

/// Body of the 500 a route answers when its configuration could not be built (kgateway's
/// wording, so clients and runbooks written for kgateway keep working).
pub const INVALID_ROUTE_BODY: &str =
    "invalid route configuration detected and replaced with a direct response.";

/// The whole runtime configuration: listeners by port.
#[derive(Debug, Default, Serialize)]
pub struct Config {
    /// Listeners grouped by the port they are served on.
    pub ports: BTreeMap<u16, Port>,
}

impl Config {
    /// The listeners of one port, if it is served.
    pub fn port(&self, port: u16) -> Option<&Port> {
        self.ports.get(&port)
    }

    /// Every upstream some route may forward to, once per route that names it (the same
    /// upstream shared by several routes comes up several times).
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.ports
            .values()
            .flat_map(|p| &p.listeners)
            .flat_map(|l| &l.virtual_hosts)
            .flat_map(|v| &v.routes)
            .filter_map(|r| match &*r.action {
                Action::Forward(f) => Some(f),
                _ => None,
            })
            .flat_map(|f| &f.backends)
            .filter_map(|b| match &b.target {
                Target::Upstream(u) => Some(u),
                Target::Invalid(_) => None,
            })
    }
}

/// All listeners that share one port, most specific hostname first.
#[derive(Debug, Default, Serialize)]
pub struct Port {
    /// Ordered: exact hostnames, then wildcards (longest first), then listeners without one.
    pub listeners: Vec<Arc<Listener>>,
    /// Whether the port speaks TLS (HTTPS listeners; HTTP and HTTPS never share a port).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
}

impl Port {
    /// The listener that serves `host` (Gateway API listener isolation: the most specific
    /// hostname that matches wins).
    pub fn listener(&self, host: &str) -> Option<&Arc<Listener>> {
        self.listeners.iter().find(|l| l.hostname.matches(host))
    }
}

/// One Gateway listener with the routes attached to it.
#[derive(Debug, Serialize)]
pub struct Listener {
    /// `namespace/name` of the Gateway.
    pub gateway: Arc<str>,
    /// Listener name.
    pub name: Arc<str>,
    /// Port from the Gateway spec (the one `Location` headers use).
    pub port: u16,
    /// The listener's hostname, `Any` when unset.
    pub hostname: HostPattern,
    /// Virtual hosts, most specific first.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Headers through which a policy on this listener's Gateway asserts identity
    /// (`clientIdHeader`): removed from every request before authentication, so they
    /// reach the upstream only as Keyway set them.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_names")]
    pub identity_headers: Vec<HeaderName>,
    /// HTTPS listeners: the certificate presented (or why handshakes are refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

fn ser_names<S: Serializer>(n: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(n.iter().map(HeaderName::as_str))
}

impl Listener {
    /// The virtual host serving `host`.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        self.virtual_hosts.iter().find(|v| v.hostname.matches(host))
    }
}

/// The routes that serve one hostname pattern, in match precedence order.
#[derive(Debug, Serialize)]
pub struct VirtualHost {
    /// Hostnames this virtual host answers.
    pub hostname: HostPattern,
    /// Routes in the order they are tried: the first that matches serves.
    pub routes: Vec<Arc<Route>>,
}
