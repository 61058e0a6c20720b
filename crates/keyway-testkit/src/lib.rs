//! Test support for Keyway's integration tests.
//!
//! Keyway's own echo server parses requests with hyper, the same library the gateway uses,
//! so it forgives what hyper forgives and reports what hyper parsed, not what was sent. The
//! parties here report the wire itself or are programs Keyway's authors did not write:
//!
//! - [`raw`]: an upstream on a plain socket that records every request byte for byte
//!   (request line, header lines in order and case, body framing) and answers as told;
//! - [`external`]: nginx and Python's `http.server` started on loopback, each decoding
//!   request targets its own way.
#![forbid(unsafe_code)]

pub mod external;
pub mod raw;
