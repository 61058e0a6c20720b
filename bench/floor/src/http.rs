//! The little HTTP/1 framing the floor needs: where a head ends, how long a response is,
//! and whether the head carries the key.

/// Each direction's buffer; a head or response longer than this is a broken benchmark.
pub const BUF: usize = 8192;

/// What a request without the key gets.
pub const DENY: &[u8] = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";

/// The length of the head, `\r\n\r\n` included, once it has all arrived.
pub fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// The length of the whole response (head and `Content-Length` body), once its head has
/// arrived.
pub fn response_len(b: &[u8]) -> Option<usize> {
    let end = head_end(b)?;
    let mut body = 0;
    for line in b[..end].split(|&c| c == b'\n') {
        if let Some(v) = line
            .get(..15)
            .filter(|n| n.eq_ignore_ascii_case(b"content-length:"))
        {
            let v = std::str::from_utf8(&line[v.len()..]).expect("ASCII length");
            body = v.trim().parse().expect("a Content-Length");
        }
    }
    Some(end + body)
}

/// The one valid key, as the field line that carries it.
pub struct KeyCheck {
    line: Vec<u8>,
}

impl KeyCheck {
    pub fn new(key: &str) -> Self {
        KeyCheck {
            line: format!("\r\napi-key: {key}\r\n").into_bytes(),
        }
    }

    /// Whether the head carries the key (field name in any case, one space, exact value).
    pub fn allows(&self, head: &[u8]) -> bool {
        let n = self.line.len();
        head.windows(n)
            .any(|w| w[..10].eq_ignore_ascii_case(&self.line[..10]) && w[10..] == self.line[10..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_key() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
        assert_eq!(response_len(resp), Some(resp.len()));
        let k = KeyCheck::new("k-1");
        assert!(k.allows(b"GET / HTTP/1.1\r\nAPI-Key: k-1\r\n\r\n"));
        assert!(!k.allows(b"GET / HTTP/1.1\r\napi-key: k-2\r\n\r\n"));
        assert!(!k.allows(b"GET / HTTP/1.1\r\napi-key: K-1\r\n\r\n"));
    }
}
