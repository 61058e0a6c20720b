//! `backendRefs` to upstreams: Services through their EndpointSlices, kgateway Backends
//! through their static hosts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::uri::Authority;
use keyway_model::core::{EndpointSlice, Service};
use keyway_model::ObjectKey;
use keyway_store::{Endpoint, Upstream};

use crate::context::Context;

/// Why a backendRef could not be resolved: a Gateway API `ResolvedRefs` reason and a message.
#[derive(Clone, Debug)]
pub struct BackendError {
    /// `BackendNotFound`, `RefNotPermitted`, `InvalidKind`, `UnsupportedValue`.
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
}

/// A reference as written in a route, with defaults applied.
pub struct BackendRef<'a> {
    /// API group (`""` for Service).
    pub group: &'a str,
    /// Kind (`Service` by default).
    pub kind: &'a str,
    /// Name.
    pub name: &'a str,
    /// Namespace (the route's by default).
    pub namespace: &'a str,
    /// Port (required for Services).
    pub port: Option<i32>,
}

/// Resolves references, sharing one [`Upstream`] per Service port or Backend so balancing
/// state is shared by every rule that sends there.
pub struct Resolver<'c, 'a> {
    ctx: &'c Context<'a>,
    cache: HashMap<String, Arc<Upstream>>,
}

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

impl<'c, 'a> Resolver<'c, 'a> {
    /// A resolver over the snapshot.
    pub(crate) fn new(ctx: &'c Context<'a>) -> Self {
        Resolver {
            ctx,
            cache: HashMap::new(),
        }
    }

    /// Resolves one reference made by an HTTPRoute in `from_ns`.
    pub fn resolve(
        &mut self,
        from_ns: &str,
        r: &BackendRef<'_>,
    ) -> Result<Arc<Upstream>, BackendError> {
        let what = format!("{} {}/{}", r.kind, r.namespace, r.name);
        let (grant_group, grant_kind) = match (r.group, r.kind) {
            ("" | "core", "Service") => ("", "Service"),
            (keyway_model::kgateway::GROUP, "Backend") => (keyway_model::kgateway::GROUP, "Backend"),
            _ => {
                return Err(BackendError {
                    reason: "InvalidKind",
                    message: format!(
                        "backendRef kind {:?} in group {:?} is not supported (Service, or gateway.kgateway.dev Backend)",
                        r.kind, r.group
                    ),
                })
            }
        };
        if !self.ctx.grant_allows(
            ("gateway.networking.k8s.io", "HTTPRoute", from_ns),
            (grant_group, grant_kind, r.namespace, r.name),
        ) {
            return Err(BackendError {
                reason: "RefNotPermitted",
                message: format!(
                    "{what} is in another namespace and no ReferenceGrant in {} allows HTTPRoutes from {from_ns} to refer to it",
                    r.namespace
                ),
            });
        }
        let cache_key = format!("{what}:{}", r.port.unwrap_or(0));
        if let Some(u) = self.cache.get(&cache_key) {
            return Ok(u.clone());
        }
        let key = ObjectKey::new(r.namespace, r.name);
        let (name, endpoints) = if grant_kind == "Service" {
            let Some(port) = r.port else {
                return Err(BackendError {
                    reason: "UnsupportedValue",
                    message: format!("backendRef to {what} needs a port"),
                });
            };
            let Some(svc) = self.ctx.snap.services.get(&key) else {
                return Err(BackendError {
                    reason: "BackendNotFound",
                    message: format!("{what} not found"),
                });
            };
            (
                format!("{what}:{port}"),
                self.service_endpoints(&key, &svc.value, port, &what)?,
            )
        } else {
            (what.clone(), self.backend_endpoints(&key, &what)?)
        };
        let upstream = Arc::new(Upstream::new(
            Arc::from(name),
            endpoints,
            self.ctx.options.balance,
        ));
        self.cache.insert(cache_key, upstream.clone());
        Ok(upstream)
    }

    fn service_endpoints(
        &self,
        key: &ObjectKey,
        svc: &Service,
        port: i32,
        what: &str,
    ) -> Result<Vec<Endpoint>, BackendError> {
        let spec = svc.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            let host = spec.external_name.unwrap_or_default();
            return Ok(authority(&host, port)
                .into_iter()
                .map(Endpoint::new)
                .collect());
        }
        let svc_port = spec.ports.iter().flatten().find(|p| p.port == port);
        let Some(svc_port) = svc_port else {
            return Err(BackendError {
                reason: "BackendNotFound",
                message: format!("{what} has no port {port}"),
            });
        };
        let port_name = svc_port.name.clone().unwrap_or_default();
        let mut out: Vec<Endpoint> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let slices = self.ctx.snap.endpoint_slices.iter().filter(|(k, s)| {
            k.namespace == key.namespace && service_of(&s.value) == Some(&key.name)
        });
        for (_, slice) in slices {
            let slice = &slice.value;
            let Some(slice_port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.clone().unwrap_or_default() == port_name)
                .and_then(|p| p.port)
            else {
                continue;
            };
            for ep in slice.endpoints.iter().flatten() {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                for addr in &ep.addresses {
                    if let Some(a) = authority(addr, slice_port) {
                        if seen.insert(a.clone()) {
                            out.push(Endpoint::new(a));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn backend_endpoints(
        &self,
        key: &ObjectKey,
        what: &str,
    ) -> Result<Vec<Endpoint>, BackendError> {
        let Some(backend) = self.ctx.snap.backends.get(key) else {
            return Err(BackendError {
                reason: "BackendNotFound",
                message: format!("{what} not found"),
            });
        };
        let spec = &backend.value.spec;
        let Some(st) = spec.static_.as_ref() else {
            let kinds: Vec<_> = spec.unsupported.keys().map(String::as_str).collect();
            return Err(BackendError {
                reason: "UnsupportedValue",
                message: format!(
                    "{what}: only static backends are supported (found {})",
                    if kinds.is_empty() {
                        "no spec.static".to_string()
                    } else {
                        kinds.join(", ")
                    }
                ),
            });
        };
        let mut out = Vec::new();
        for (i, h) in st.hosts.iter().enumerate() {
            match authority(&h.host, h.port) {
                Some(a) => out.push(Endpoint::new(a)),
                None => {
                    return Err(BackendError {
                        reason: "UnsupportedValue",
                        message: format!(
                            "{what}: spec.static.hosts[{i}]: {:?} port {} is not a valid address",
                            h.host, h.port
                        ),
                    })
                }
            }
        }
        Ok(out)
    }
}

fn service_of(slice: &EndpointSlice) -> Option<&String> {
    slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)
}

/// `host:port` for an IP (bracketing IPv6) or a DNS name.
fn authority(host: &str, port: i32) -> Option<Authority> {
    let port = u16::try_from(port).ok().filter(|p| *p > 0)?;
    let text = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        _ => format!("{host}:{port}"),
    };
    text.parse().ok()
}
