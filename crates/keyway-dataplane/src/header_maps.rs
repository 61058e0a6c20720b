//! Request header maps passed from the end of one request to the start of the next on the
//! same thread.
//!
//! Why: a `HeaderMap` is two allocations (its index and its entries), made when a request's
//! head is parsed and freed when the upstream has been sent the request: about 500 of a
//! proxied request's 25,000 instructions (`bench/instructions.sh`), and two of its six
//! allocations. A worker runs one request at a time per connection and many connections,
//! so a map freed by one request is almost always wanted by the next: each thread keeps one
//! spare, emptied. Only a map of ordinary size is kept, so a request with many fields
//! leaves no large map behind.
//!
//! Emptying a map drops its names and values (a request's values are slices of its head)
//! and keeps only the two buffers, so nothing of one request reaches the next.

use std::cell::Cell;

use http::HeaderMap;

/// The most fields a kept map holds without growing (a map's capacity is three quarters of
/// a power of two: this one's index has 128 slots, about 10 KiB with its entries). An API
/// client sends a dozen fields or so; hyper allows 100.
const KEEP_UP_TO: usize = 96;

thread_local! {
    static SPARE: Cell<Option<HeaderMap>> = const { Cell::new(None) };
}

/// An empty map with room for `fields` fields: this thread's spare if it has one.
pub(crate) fn with_capacity(fields: usize) -> HeaderMap {
    match SPARE.take() {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Keeps `map`, emptied, as this thread's spare, unless it is larger than ordinary.
pub(crate) fn give_back(mut map: HeaderMap) {
    if map.capacity() <= KEEP_UP_TO {
        map.clear();
        SPARE.set(Some(map));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_map_given_back_comes_back_empty_with_its_room() {
        let mut map = with_capacity(8);
        map.insert("x-api-key", HeaderValue::from_static("secret"));
        map.append("accept", HeaderValue::from_static("*/*"));
        let room = map.capacity();
        give_back(map);
        let again = with_capacity(4);
        assert!(again.is_empty(), "nothing of one request reaches the next");
        assert_eq!(again.capacity(), room, "the spare, not a new map");
        assert!(
            with_capacity(4).capacity() < room,
            "one spare only, then new maps"
        );
    }

    #[test]
    fn a_spare_too_small_grows_to_what_is_asked() {
        give_back(HeaderMap::with_capacity(2));
        assert!(with_capacity(40).capacity() >= 40);
    }

    #[test]
    fn a_larger_map_than_ordinary_is_not_kept() {
        let largest = HeaderMap::<HeaderValue>::with_capacity(KEEP_UP_TO);
        assert_eq!(largest.capacity(), KEEP_UP_TO, "a capacity a map can have");
        give_back(largest);
        assert!(SPARE.take().is_some());
        let larger = HeaderMap::with_capacity(KEEP_UP_TO + 1);
        assert!(larger.capacity() > KEEP_UP_TO);
        give_back(larger);
        assert!(SPARE.take().is_none());
        give_back(HeaderMap::with_capacity(KEEP_UP_TO / 2));
        assert!(SPARE.take().is_some());
    }
}
