//! Header rules every proxied request and response follows.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, and the proxy
/// credentials of §11.7). `Trailer` is not one of them: it declares the trailer fields of
/// the message end to end, and the upstream connection only sends trailers it declares.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::UPGRADE,
];

/// Where `name` is in [`HOP_BY_HOP`]: one match on the name (its length first), cheaper
/// than comparing it with seven names.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    match name.as_str() {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "proxy-authenticate" => Some(3),
        "proxy-authorization" => Some(4),
        "te" => Some(5),
        "upgrade" => Some(6),
        _ => None,
    }
}

/// `x-request-id`.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Removes hop-by-hop headers and every header the `Connection` header names.
/// `Transfer-Encoding` is left to hyper, which re-frames the body itself.
///
/// One pass over the names finds which hop-by-hop headers are present, and only those are
/// removed: most requests carry none, so eight hashed removals of absent headers (2% of a
/// request's instructions) are skipped. (Responses read by Keyway's own HTTP/1 reader drop
/// their hop-by-hop fields as they are read, by the same rules: `upstream::fields`.)
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u8;
    for k in headers.keys() {
        if let Some(i) = hop_by_hop_index(k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // `Connection` may name any header, but never `Host`: the upstream needs it. A name
    // that is itself hop-by-hop goes below, if present. Most lists name only those
    // (`keep-alive`, `upgrade`), and then nothing is collected.
    let names_others = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|n| {
            !n.is_empty()
                && !n.eq_ignore_ascii_case(b"host")
                && !HOP_BY_HOP
                    .iter()
                    .any(|h| n.eq_ignore_ascii_case(h.as_str().as_bytes()))
        });
    let named: Vec<HeaderName> = if !names_others {
        Vec::new()
    } else {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|l| l.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .filter(|n| n != header::HOST && !HOP_BY_HOP.contains(n))
            .collect()
    };
    for n in named {
        headers.remove(n);
    }
    for (i, h) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(h);
        }
    }
}

/// Sets `x-forwarded-for` (appending the peer's IP to every value the client sent, in
/// order: several `X-Forwarded-For` lines are one list) and `x-forwarded-proto`, as Envoy
/// does at the edge. (`x-request-id` is settled when the request arrives, for the access
/// log.)
pub fn set_forwarded(headers: &mut HeaderMap, peer_ip: &HeaderValue, scheme: &'static str) {
    // One hashed lookup finds the client's lines or the place for Keyway's.
    match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(e) => {
            e.insert(peer_ip.clone());
        }
        header::Entry::Occupied(mut e) => {
            let mut joined = Vec::with_capacity(64);
            for v in e.iter() {
                joined.extend_from_slice(v.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(peer_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                e.insert(v);
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
}

/// The fields Keyway adds to a request that carried none of them, as [`set_forwarded`] and
/// [`RequestId`] would put them in the map: `x-request-id` (when Keyway made it),
/// `x-forwarded-for` and `x-forwarded-proto`. They stay out of the map and are written as
/// the head's last lines ([`AddedFields::write`]): inserting them (three hashed inserts of
/// custom names) and building the id's value were 4% of a proxied request. Only where
/// nothing reads the map after them: no route or backend header filter (those see them in
/// the map), and an upstream head Keyway writes itself (hyper's client gets them
/// [`inserted`](AddedFields::insert_into)).
#[derive(Clone, Debug)]
pub struct AddedFields {
    request_id: Option<[u8; 36]>,
    peer_ip: HeaderValue,
    scheme: &'static str,
}

impl AddedFields {
    /// The fields for a client at `peer_ip` on a `scheme` listener, and the id Keyway
    /// made for the request, if it did.
    pub fn new(request_id: Option<&[u8; 36]>, peer_ip: &HeaderValue, scheme: &'static str) -> Self {
        AddedFields {
            request_id: request_id.copied(),
            peer_ip: peer_ip.clone(),
            scheme,
        }
    }

    /// Appends the fields as head lines.
    pub fn write(&self, out: &mut bytes::BytesMut) {
        if let Some(id) = &self.request_id {
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(id);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"x-forwarded-for: ");
        out.extend_from_slice(self.peer_ip.as_bytes());
        out.extend_from_slice(b"\r\nx-forwarded-proto: ");
        out.extend_from_slice(self.scheme.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// Puts the fields in a map that may have the client's forwarding fields: its
    /// `x-forwarded-for` lines get Keyway's address appended, its `x-forwarded-proto` is
    /// replaced ([`set_forwarded`]).
    pub fn insert_into_merging(self, headers: &mut HeaderMap) {
        if let Some(id) = &self.request_id {
            headers.insert(X_REQUEST_ID.clone(), made_value(id));
        }
        set_forwarded(headers, &self.peer_ip, self.scheme);
    }

    /// Puts the fields in a map that has none of them.
    pub fn insert_into(self, headers: &mut HeaderMap) {
        if let Some(id) = &self.request_id {
            headers.insert(X_REQUEST_ID.clone(), made_value(id));
        }
        headers.insert(X_FORWARDED_FOR.clone(), self.peer_ip);
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(self.scheme),
        );
    }
}

/// Makes the client's headers fit an HTTP/1.1 upstream request Keyway frames itself:
///
/// - `Transfer-Encoding` goes: the body was de-framed on the way in and is framed anew on
///   the way out (chunked, or by the `Content-Length` the client's body was checked
///   against), so the client's list of codings (`identity, chunked`, two `chunked` lines)
///   must not travel on;
/// - `Expect: 100-continue` was answered to the client already (the body is read only
///   once it is forwarded); the upstream gets the body straight away, not the expectation;
/// - HTTP/2 splits cookies into one field per crumb; HTTP/1.1 allows one `Cookie` line,
///   so several are joined with `; ` (RFC 9113 §8.2.3).
///
/// One pass over the names says which of the three are there (most requests have none of
/// them): three hashed lookups of absent names cost more.
///
/// Returns whether the client sent `x-forwarded-for` or `x-forwarded-proto` (found in the
/// same pass), which [`set_forwarded`] must then merge or replace in the map.
pub fn prepare_for_upstream(headers: &mut HeaderMap) -> bool {
    let (mut coded, mut expects, mut cookie, mut forwarded) = (false, false, false, false);
    for name in headers.keys() {
        coded |= name == header::TRANSFER_ENCODING;
        expects |= name == header::EXPECT;
        cookie |= name == header::COOKIE;
        forwarded |= name == X_FORWARDED_FOR || name == X_FORWARDED_PROTO;
    }
    if coded {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if expects {
        headers.remove(header::EXPECT);
    }
    if !cookie {
        return forwarded;
    }
    let mut cookies = headers.get_all(header::COOKIE).iter();
    if let (Some(_), Some(_)) = (cookies.next(), cookies.next()) {
        let mut joined = Vec::with_capacity(256);
        for (i, v) in headers.get_all(header::COOKIE).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            headers.insert(header::COOKIE, v);
        }
    }
    forwarded
}

/// A request's `x-request-id`: the client's, or a UUID made for it. A made one stays
/// its 36 bytes until something needs a header value; Keyway's own upstream writer puts
/// it in the head as a line ([`AddedFields`]), so most requests never build one.
#[derive(Clone, Debug)]
pub enum RequestId {
    /// The client's (the first, if it sent several).
    Sent(HeaderValue),
    /// Made by Keyway.
    Made([u8; 36]),
}

impl RequestId {
    /// The id of a request with these headers.
    pub fn of(headers: &HeaderMap) -> Self {
        match headers.get(&X_REQUEST_ID) {
            Some(v) => RequestId::Sent(v.clone()),
            None => RequestId::Made(uuid()),
        }
    }

    /// The id as text, for the access log (`-` for a client's that is not UTF-8).
    pub fn as_str(&self) -> &str {
        match self {
            RequestId::Sent(v) => v.to_str().unwrap_or("-"),
            RequestId::Made(b) => std::str::from_utf8(b).unwrap_or("-"),
        }
    }

    /// The id Keyway made, which the upstream request must still get.
    pub fn made(&self) -> Option<&[u8; 36]> {
        match self {
            RequestId::Made(b) => Some(b),
            RequestId::Sent(_) => None,
        }
    }
}

/// A random UUID (version 4), as Envoy generates for `x-request-id`.
fn uuid() -> [u8; 36] {
    let mut b: [u8; 16] = fastrand::u128(..).to_le_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_text(b)
}

/// `b` in the UUID's text form, `8-4-4-4-12` lower-case hex digits. Every place is a
/// constant, so this compiles to straight-line stores: it runs for every request that
/// arrives without an id.
fn uuid_text(b: [u8; 16]) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each byte's two digits start; the places between groups keep their dash.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut out = [b'-'; 36];
    for (byte, at) in b.into_iter().zip(AT) {
        out[at] = HEX[usize::from(byte >> 4)];
        out[at + 1] = HEX[usize::from(byte & 0xf)];
    }
    out
}

/// `made` as a header value.
fn made_value(made: &[u8; 36]) -> HeaderValue {
    HeaderValue::from_bytes(made).expect("hex and dashes are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h["x-kept"], "1");
    }

    #[test]
    fn the_hop_by_hop_match_agrees_with_the_list() {
        for (i, h) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(h), Some(i), "{h}");
        }
        for other in [header::HOST, header::TRAILER, header::TRANSFER_ENCODING] {
            assert_eq!(hop_by_hop_index(&other), None, "{other}");
        }
    }

    #[test]
    fn only_present_hop_by_hop_headers_go_and_the_rest_stay() {
        // `Connection` naming hop-by-hop headers that are absent, and one that is present
        // without being named: each present one goes, whatever names it.
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, upgrade, x-named"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-named", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("h"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "x-kept"]);

        // The last of the list (`upgrade`) alone, and `Proxy-Authorization` alone.
        for name in [header::UPGRADE, header::PROXY_AUTHORIZATION] {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert!(h.get(&name).is_none(), "{name}");
            assert_eq!(h.len(), 1);
        }

        // `Connection: host` does not remove `Host`.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Host"));
        h.insert(header::HOST, HeaderValue::from_static("h"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h[header::HOST], "h");
        assert!(h.get(header::CONNECTION).is_none());
    }

    #[test]
    fn uuid_text_is_the_hex_of_each_byte_in_groups_of_8_4_4_4_12() {
        let mut rng = fastrand::Rng::with_seed(36);
        for round in 0..1000 {
            let b: [u8; 16] = match round {
                0 => [0; 16],
                1 => [0xff; 16],
                _ => rng.u128(..).to_le_bytes(),
            };
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            let want = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            assert_eq!(std::str::from_utf8(&uuid_text(b)).unwrap(), want);
        }
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let made = RequestId::of(&HeaderMap::new());
        let s = made.as_str();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_eq!(made_value(made.made().unwrap()), s);
        assert_ne!(uuid(), uuid());
        let mut sent = HeaderMap::new();
        sent.insert("x-request-id", HeaderValue::from_static("mine"));
        let sent = RequestId::of(&sent);
        assert_eq!((sent.as_str(), sent.made()), ("mine", None));
    }

    #[test]
    fn forwarded_for_keeps_every_line() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.2, 10.0.0.3"),
        );
        set_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "http");
        let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]);
    }

    #[test]
    fn cookie_crumbs_are_joined_and_framing_dropped() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("b=2"));
        h.append(
            "transfer-encoding",
            HeaderValue::from_static("identity, chunked"),
        );
        assert!(!prepare_for_upstream(&mut h), "no forwarding field");
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1; b=2"]);
        assert!(h.get("transfer-encoding").is_none());
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        set_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn the_clients_forwarding_fields_are_found_by_either_name() {
        for (name, sent) in [
            ("x-forwarded-for", true),
            ("X-Forwarded-Proto", true),
            ("x-forwarded-host", false),
            ("forwarded", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert("host", HeaderValue::from_static("h"));
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
            assert_eq!(prepare_for_upstream(&mut h), sent, "{name}");
        }
    }

    #[test]
    fn forwarding_fields_as_lines_and_in_a_map_say_the_same() {
        let peer = HeaderValue::from_static("192.0.2.7");
        let mut out = bytes::BytesMut::new();
        AddedFields::new(None, &peer, "https").write(&mut out);
        assert_eq!(
            &out[..],
            b"x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: https\r\n"
        );
        let (mut inserted, mut set) = (HeaderMap::new(), HeaderMap::new());
        AddedFields::new(None, &peer, "https").insert_into(&mut inserted);
        set_forwarded(&mut set, &peer, "https");
        assert_eq!(inserted, set);

        let id = RequestId::of(&HeaderMap::new());
        let added = AddedFields::new(id.made(), &peer, "http");
        out.clear();
        added.write(&mut out);
        let lines = format!(
            "x-request-id: {}\r\nx-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\n",
            id.as_str()
        );
        assert_eq!(&out[..], lines.as_bytes());
        let mut inserted = HeaderMap::new();
        added.insert_into(&mut inserted);
        assert_eq!(inserted["x-request-id"], id.as_str());
        assert_eq!(inserted.len(), 3);
    }
}
