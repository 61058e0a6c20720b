//! Accepting connections without spinning or flooding the log when accepting fails.
//!
//! `accept` fails when the process is out of file descriptors (`EMFILE`), the system is
//! (`ENFILE`), or memory is short; the listening socket stays readable, so a loop that just
//! retries burns a core and writes thousands of identical lines a second. [`Accepter`] backs
//! off (5 ms, doubling up to 1 s, reset by the next success) and logs at most once a second,
//! saying how many errors it did not print. The data-plane ports and the admin port use it.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A log line at most once per interval, counting the ones held back.
#[derive(Debug)]
pub struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimited {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        RateLimited {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were held back since
    /// the last one; `None` when this one should be held back.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now < last + self.every => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

/// Accepts connections on one listener, backing off on errors.
pub struct Accepter {
    what: String,
    backoff: Duration,
    log: RateLimited,
    errors: Option<Counter>,
}

impl Accepter {
    /// `what` names the listener in log lines (`listener port 8080`, `admin`); `errors`
    /// counts every failure.
    pub fn new(what: impl Into<String>, errors: Option<Counter>) -> Self {
        Accepter {
            what: what.into(),
            backoff: Duration::ZERO,
            log: RateLimited::new(Duration::from_secs(1)),
            errors,
        }
    }

    /// The next connection. Cancel-safe: dropping the future loses no connection.
    pub async fn accept(&mut self, listener: &TcpListener) -> (TcpStream, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => {
                    self.backoff = Duration::ZERO;
                    return accepted;
                }
                Err(e) => {
                    if let Some(c) = &self.errors {
                        c.inc();
                    }
                    self.backoff = (self.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                    if let Some(held_back) = self.log.allow() {
                        tracing::warn!(
                            listener = %self.what,
                            error = %e,
                            retry_in_ms = self.backoff.as_millis() as u64,
                            not_logged = held_back,
                            "accept failed"
                        );
                    }
                    tokio::time::sleep(self.backoff).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_limited_counts_what_it_holds_back() {
        let mut r = RateLimited::new(Duration::from_secs(1));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(r.allow(), Some(2));
    }
}
