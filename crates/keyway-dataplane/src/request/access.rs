//! Phases 4 and 5: whether a routed request may go on, and as whom. The whole access
//! decision in one pure function over the compiled listener and route, so it can be tested
//! (and mutation-tested) without a socket.

use std::sync::Arc;

use http::request::Parts;
use http::Method;
use keyway_store::{Auth, Listener, Route};

use super::auth;
use super::error::ProxyError;

/// A request that may proceed.
#[derive(Debug, PartialEq, Eq)]
pub enum Access<'r> {
    /// The route needs no key.
    Open,
    /// A key of this client was presented (and removed, unless the policy forwards it).
    Client {
        /// `namespace/name` of the TrafficPolicy that authenticated it.
        policy: &'r Arc<str>,
        /// The client's credential record.
        client: keyway_store::auth::Client<'r>,
    },
}

/// Decides access for a request routed to `route` on `listener`:
///
/// - `CONNECT` opens a tunnel; only a route that names the method asked for one (405);
/// - every header through which a policy on this Gateway asserts identity is removed, so
///   it reaches the upstream only as the authenticating policy sets it;
/// - a policy that could not be built refuses (500, fail closed); an API key policy
///   authenticates (401 when it refuses).
pub fn check<'r>(
    listener: &Listener,
    route: &'r Route,
    parts: &mut Parts,
) -> Result<Access<'r>, ProxyError> {
    if parts.method == Method::CONNECT && route.matcher.method.as_ref() != Some(&Method::CONNECT) {
        return Err(ProxyError::MethodNotAllowed);
    }
    for h in &listener.identity_headers {
        parts.headers.remove(h);
    }
    match &route.auth {
        Auth::None => Ok(Access::Open),
        Auth::Invalid { .. } => Err(ProxyError::InvalidPolicy),
        Auth::ApiKey { policy } => {
            let client = auth::authenticate(policy, parts).map_err(ProxyError::Unauthorized)?;
            Ok(Access::Client {
                policy: &policy.name,
                client,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
    use keyway_store::auth::{digest, Credentials};
    use keyway_store::{Action, ApiKeyPolicy, HostPattern, PathMatch, RouteMatch};

    fn listener(identity: &[&'static str]) -> Listener {
        Listener {
            gateway: Arc::from("default/gw"),
            name: Arc::from("http"),
            port: 80,
            hostname: HostPattern::Any,
            virtual_hosts: Vec::new(),
            identity_headers: identity
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
            tls: None,
        }
    }

    fn route(auth: Auth, method: Option<Method>) -> Route {
        Route {
            route: Arc::from("default/r"),
            rule: 0,
            rule_name: None,
            matcher: RouteMatch {
                path: PathMatch::Prefix(String::new()),
                method,
                headers: Vec::new(),
                query: Vec::new(),
            },
            auth,
            action: Arc::new(Action::Direct {
                status: http::StatusCode::OK,
                body: bytes::Bytes::new(),
            }),
            timeout: None,
        }
    }

    fn api_key(client_id_header: Option<&'static str>) -> Auth {
        let credentials = Credentials::from_iter([(digest(b"k-1"), Arc::from("alice"))]);
        Auth::ApiKey {
            policy: Arc::new(ApiKeyPolicy {
                name: Arc::from("default/p"),
                headers: vec![HeaderName::from_static("api-key")],
                queries: Vec::new(),
                cookies: Vec::new(),
                forward_credential: false,
                client_id_header: client_id_header.map(HeaderName::from_static),
                metadata_headers: Vec::new(),
                credentials,
            }),
        }
    }

    fn parts(method: &str, headers: &[(&str, &str)]) -> Parts {
        super::super::test_parts(method, "/x", headers)
    }

    #[test]
    fn open_routes_still_lose_client_sent_identity_headers() {
        let l = listener(&["x-client-id", "x-partner"]);
        let r = route(Auth::None, None);
        let mut p = parts(
            "GET",
            &[
                ("x-client-id", "admin"),
                ("x-partner", "p"),
                ("x-other", "o"),
            ],
        );
        assert_eq!(check(&l, &r, &mut p), Ok(Access::Open));
        assert!(p.headers.get("x-client-id").is_none());
        assert!(p.headers.get("x-partner").is_none());
        assert_eq!(p.headers["x-other"], "o");
    }

    #[test]
    fn a_key_policy_allows_with_a_key_and_sets_only_its_own_identity() {
        let l = listener(&["x-client-id", "x-partner"]);
        let r = route(api_key(Some("x-client-id")), None);
        let mut p = parts(
            "GET",
            &[
                ("api-key", "k-1"),
                ("x-client-id", "admin"),
                ("x-partner", "p"),
            ],
        );
        let got = check(&l, &r, &mut p).unwrap();
        assert_eq!(
            got,
            Access::Client {
                policy: &Arc::from("default/p"),
                client: keyway_store::auth::Client::plain(&Arc::from("alice"))
            }
        );
        assert_eq!(p.headers["x-client-id"], "alice");
        assert!(p.headers.get("x-partner").is_none());
        assert!(p.headers.get("api-key").is_none());
        let mut none = parts("GET", &[]);
        assert_eq!(
            check(&l, &r, &mut none),
            Err(ProxyError::Unauthorized(auth::Denied::Missing))
        );
        let mut wrong = parts("GET", &[("api-key", "k-2")]);
        assert_eq!(
            check(&l, &r, &mut wrong),
            Err(ProxyError::Unauthorized(auth::Denied::Unknown))
        );
    }

    #[test]
    fn a_broken_policy_refuses_even_with_a_key() {
        let r = route(
            Auth::Invalid {
                policy: Arc::from("default/p"),
            },
            None,
        );
        let mut p = parts("GET", &[("api-key", "k-1")]);
        assert_eq!(
            check(&listener(&[]), &r, &mut p),
            Err(ProxyError::InvalidPolicy)
        );
    }

    #[test]
    fn connect_only_where_the_route_names_it() {
        let l = listener(&[]);
        for auth in [Auth::None, api_key(None)] {
            let r = route(auth.clone(), None);
            let mut p = parts("CONNECT", &[("api-key", "k-1")]);
            assert_eq!(check(&l, &r, &mut p), Err(ProxyError::MethodNotAllowed));
            let r = route(auth, Some(Method::GET));
            let mut p = parts("CONNECT", &[("api-key", "k-1")]);
            assert_eq!(check(&l, &r, &mut p), Err(ProxyError::MethodNotAllowed));
        }
        let r = route(Auth::None, Some(Method::CONNECT));
        let mut p = parts("CONNECT", &[]);
        assert_eq!(check(&l, &r, &mut p), Ok(Access::Open));
        // A CONNECT route with a policy still needs the key.
        let r = route(api_key(None), Some(Method::CONNECT));
        let mut p = parts("CONNECT", &[]);
        assert_eq!(
            check(&l, &r, &mut p),
            Err(ProxyError::Unauthorized(auth::Denied::Missing))
        );
    }
}
