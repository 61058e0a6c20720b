//! Compiled state: what the data plane executes, and nothing it has to interpret.
//!
//! `keyway-compile` builds a [`Config`] from a snapshot of Kubernetes objects; the data
//! plane holds it behind an atomic pointer and swaps it whole on reload. Everything here is
//! plain, immutable data plus the few cheap methods the request path calls (host and path
//! matching, weighted choice), so a newcomer can read the request path against it without
//! knowing any Gateway API rule: those were all applied by the compiler.
//!
//! The one piece of mutable state is per-upstream load-balancing bookkeeping (atomics).
//!
//! `Serialize` renders the config for `/config_dump`; API keys are never part of it (a
//! policy shows only how many keys it holds).

pub mod auth;
pub mod host;
pub mod route;
pub mod upstream;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

pub use auth::{ApiKeyPolicy, Auth, KeyDigest};
pub use host::HostPattern;
pub use route::{
    Action, Forward, HeaderFilter, HeaderMatch, PathMatch, PathRewrite, QueryMatch, Redirect,
    Rewrite, Route, RouteMatch, ValueMatch,
};
pub use upstream::{Balance, Endpoint, Target, Upstream, WeightedBackend};

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
}

/// All listeners that share one port, most specific hostname first.
#[derive(Debug, Default, Serialize)]
pub struct Port {
    /// Ordered: exact hostnames, then wildcards (longest first), then listeners without one.
    pub listeners: Vec<Arc<Listener>>,
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
