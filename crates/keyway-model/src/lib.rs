//! The input side of Keyway's pipeline: the Kubernetes objects it reads, as typed values.
//!
//! Every source (YAML files, the Kubernetes API server) produces a [`Snapshot`]:
//! the complete set of objects that make up the desired state, each tagged with the
//! [`Origin`] it came from so that errors can point at a file and line. The compiler
//! (`keyway-compile`) turns a snapshot into runtime configuration; nothing else interprets
//! these objects.
//!
//! Gateway API kinds come from the `gateway-api` crate and core kinds from `k8s-openapi`;
//! kgateway's own kinds ([`TrafficPolicy`], [`Backend`]) are defined here with kube's
//! `CustomResource` derive, so `keyway crds` prints exactly what we parse.
//!
//! Secrets are the one exception to "use the upstream type as is": they are converted at
//! load time into [`Secret`], whose values are redacted in `Debug` output, so a stray
//! `{:?}` can never put an API key into a log.
#![forbid(unsafe_code)]

pub mod kgateway;
pub mod secret;
pub mod snapshot;

pub use kgateway::{backend::Backend, traffic_policy::TrafficPolicy};
pub use secret::{digest, Client, ClientExtra, KeyDigest, Secret, SecretKeys, SecretValue};
pub use snapshot::{Kind, Object, ObjectKey, Origin, Snapshot};

/// Gateway API kinds, re-exported so the rest of the workspace names one path.
pub mod gateway {
    pub use gateway_api::gatewayclasses::*;
    pub use gateway_api::gateways::*;
    pub use gateway_api::httproutes::*;
    pub use gateway_api::referencegrants::*;
}

/// Core Kubernetes kinds Keyway reads.
pub mod core {
    pub use k8s_openapi::api::core::v1::{Namespace, Service};
    pub use k8s_openapi::api::discovery::v1::EndpointSlice;
    pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        LabelSelector, LabelSelectorRequirement, ObjectMeta, Time,
    };
}
