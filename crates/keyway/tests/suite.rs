//! Keyway's integration tests, one binary: every module starts the gateway (in-process or
//! the `keyway` binary) beside real upstreams and clients on 127.0.0.1.
//!
//! They were fourteen binaries, each linking the whole gateway and its dependencies; one
//! binary links once, which took minutes off a cold `cargo test` on two cores. Run one
//! area with `cargo test -p keyway --test suite wire::`.

mod support;

mod api_key_auth;
mod cli;
mod conformance;
mod hardening;
mod key_entries;
mod kubernetes;
mod kubernetes_status;
mod promises;
mod proxying;
mod reload;
mod routing;
mod smuggling;
mod tls;
mod wire;
