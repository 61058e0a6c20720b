//! The `keyway` binary's library half: process wiring shared by `main` and the
//! integration tests.
//!
//! - [`app`]: load → compile → serve → reload, for standalone mode;
//! - [`admin`]: the admin port; [`state`]: what it reports;
//! - [`check`]: `keyway check`'s human-readable summary;
//! - [`echo`]: the httpbin-like sample upstream of the quickstart;
//! - [`keygen`]: `keyway keygen`, new keys and the Secret that holds them;
//! - [`kubernetes`]: Kubernetes mode's status writer (one leader) and install manifests;
//! - [`watch`]: live reload when a manifest file changes.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod check;
pub mod echo;
pub mod keygen;
pub mod kubernetes;
pub mod logging;
pub mod state;
pub mod watch;
