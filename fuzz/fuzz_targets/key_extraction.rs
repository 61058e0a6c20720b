//! Key extraction from headers, query and cookies: never panics; a request is allowed only
//! with a configured key; and once allowed, the key is gone from every configured source,
//! so the same request authenticated again finds no key at all.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use http::HeaderName;
use keyway_dataplane::request::auth::{authenticate, Denied};
use keyway_store::auth::{digest, Credentials};
use keyway_store::ApiKeyPolicy;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    query: String,
    headers: Vec<(u8, Vec<u8>)>,
    forward: bool,
}

const KEYS: [&str; 3] = ["k-123", "k+456/=", "Bearer-ish key"];
const NAMES: [&str; 6] = [
    "api-key",
    "x-api-key",
    "cookie",
    "x-client-id",
    "authorization",
    "host",
];

fn policy(forward: bool) -> ApiKeyPolicy {
    let credentials: Credentials = KEYS
        .iter()
        .enumerate()
        .map(|(i, k)| (digest(k.as_bytes()), Arc::from(format!("client{i}"))))
        .collect();
    ApiKeyPolicy {
        name: Arc::from("fuzz/p"),
        headers: vec![
            HeaderName::from_static("api-key"),
            HeaderName::from_static("x-api-key"),
        ],
        queries: vec!["api_key".into(), "k".into()],
        cookies: vec!["session".into(), "auth".into()],
        forward_credential: forward,
        client_id_header: Some(HeaderName::from_static("x-client-id")),
        metadata_headers: Vec::new(),
        credentials,
    }
}

fuzz_target!(|input: Input| {
    let Ok(uri) = http::Uri::try_from(format!("/p?{}", input.query)) else {
        return;
    };
    let mut b = http::Request::builder().uri(uri);
    for (n, v) in &input.headers {
        let name = NAMES[*n as usize % NAMES.len()];
        let Ok(value) = http::HeaderValue::from_bytes(v) else {
            continue;
        };
        b = b.header(name, value);
    }
    let Ok(req) = b.body(()) else { return };
    let (mut parts, ()) = req.into_parts();
    let p = policy(input.forward);
    match authenticate(&p, &mut parts) {
        Ok(client) => {
            assert!(client.id().starts_with("client"));
            assert_eq!(parts.headers.get_all("x-client-id").iter().count(), 1);
            if !input.forward {
                assert_eq!(
                    authenticate(&p, &mut parts),
                    Err(Denied::Missing),
                    "{parts:?}"
                );
            }
        }
        Err(_) => {}
    }
});
