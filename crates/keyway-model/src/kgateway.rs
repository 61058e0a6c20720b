//! kgateway's custom resources (`gateway.kgateway.dev/v1alpha1`) that Keyway understands.
//!
//! Only the fields Keyway acts on are typed. Any other field of a `TrafficPolicy` spec is kept
//! as raw JSON in `unsupported` so the compiler can say it was ignored, instead of failing to
//! load a manifest copied from kgateway's docs.

pub mod backend;
pub mod traffic_policy;

/// API group of kgateway's resources.
pub const GROUP: &str = "gateway.kgateway.dev";
