//! The fake API server's tests, one binary (one link instead of four): its Rust API, the
//! HTTP conventions on the wire, RBAC, and kube-rs as a client we did not write.

mod common;

mod api;
mod http;
mod kube;
mod rbac;
