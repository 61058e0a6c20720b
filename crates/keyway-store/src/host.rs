//! Hostname patterns as Gateway API defines them.

use std::fmt;

use serde::{Serialize, Serializer};

/// A hostname a listener or route answers: exact, wildcard, or anything.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Every hostname.
    Any,
    /// One hostname, lowercase.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`: matches one or more labels
    /// in front of it, never the bare `example.com`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses a Gateway API hostname (`example.com`, `*.example.com`), lowercased.
    pub fn parse(hostname: Option<&str>) -> HostPattern {
        match hostname {
            None | Some("") | Some("*") => HostPattern::Any,
            Some(h) => {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix('*') {
                    Some(suffix) => HostPattern::Wildcard(suffix.to_string()),
                    None => HostPattern::Exact(h),
                }
            }
        }
    }

    /// Whether a request's host (port already removed) is served by this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    /// Sort key: exact first, then wildcards by suffix length (longest first), then `Any`.
    pub fn specificity(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            HostPattern::Exact(h) => (0, std::cmp::Reverse(h.len())),
            HostPattern::Wildcard(s) => (1, std::cmp::Reverse(s.len())),
            HostPattern::Any => (2, std::cmp::Reverse(0)),
        }
    }

    /// The intersection of a listener's and a route's hostname, as Gateway API defines
    /// route attachment: `None` when they share no hostname.
    pub fn intersect(&self, other: &HostPattern) -> Option<HostPattern> {
        use HostPattern::*;
        match (self, other) {
            (Any, x) | (x, Any) => Some(x.clone()),
            (Exact(a), Exact(b)) => (a == b).then(|| self.clone()),
            (Exact(e), w @ Wildcard(_)) | (w @ Wildcard(_), Exact(e)) => {
                w.matches(e).then(|| Exact(e.clone()))
            }
            (Wildcard(a), Wildcard(b)) => {
                if a.ends_with(b.as_str()) {
                    Some(self.clone())
                } else if b.ends_with(a.as_str()) {
                    Some(other.clone())
                } else {
                    None
                }
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::HostPattern as H;

    #[test]
    fn wildcards_need_a_label_in_front() {
        let w = H::parse(Some("*.example.com"));
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(w.matches("A.EXAMPLE.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
    }

    #[test]
    fn intersection_keeps_the_more_specific_side() {
        let any = H::Any;
        let w = H::parse(Some("*.example.com"));
        let ww = H::parse(Some("*.foo.example.com"));
        let e = H::parse(Some("bar.example.com"));
        assert_eq!(any.intersect(&e), Some(e.clone()));
        assert_eq!(w.intersect(&e), Some(e.clone()));
        assert_eq!(w.intersect(&ww), Some(ww.clone()));
        assert_eq!(ww.intersect(&w), Some(ww.clone()));
        assert_eq!(e.intersect(&H::parse(Some("other.com"))), None);
        assert_eq!(w.intersect(&H::parse(Some("example.com"))), None);
        assert_eq!(w.intersect(&H::parse(Some("*.other.com"))), None);
    }
}
