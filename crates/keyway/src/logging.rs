//! Logs through `tracing`: text or JSON, level from `RUST_LOG` (default `info`).
//!
//! Lines are written to stderr by a background thread from a bounded buffer. When the
//! buffer is full (stderr is a pipe nobody reads, a terminal paused with Ctrl-S, a stalled
//! log shipper) new lines are dropped and counted, never waited for: a request must not
//! stall because its access-log line cannot be written. The count is exported as
//! `keyway_log_lines_dropped_total`.
//!
//! Access-log lines take their own, cheaper path ([`access_log`]): formatted on the request
//! path in the same format, written in 64 KiB blocks at least once a second.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keyway_dataplane::access_log::{self, AccessLog};

use tracing_appender::non_blocking::{ErrorCounter, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Lines each buffer holds before new ones are dropped (the access log: lines handed to its
/// writer, at least one block); `KEYWAY_LOG_BUFFER_LINES` changes it.
const BUFFER_LINES: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();
static ACCESS: OnceLock<Arc<AccessLog>> = OnceLock::new();

/// Starts the access log on stderr, in the format of the other lines; keep the guard
/// alive until the server has stopped, so the last lines are written.
pub fn access_log(format: LogFormat) -> (Arc<AccessLog>, access_log::Guard) {
    let format = match format {
        LogFormat::Text => access_log::Format::Text,
        LogFormat::Json => access_log::Format::Json,
    };
    let (log, guard) = AccessLog::new(
        format,
        std::io::stderr(),
        Duration::from_secs(1),
        buffer_lines() as u64,
    );
    let _ = ACCESS.set(log.clone());
    (log, guard)
}

/// Lines each buffer (the log's, the access log's) holds before new ones are dropped.
fn buffer_lines() -> usize {
    std::env::var("KEYWAY_LOG_BUFFER_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BUFFER_LINES)
}

/// Installs the global subscriber; keep the returned guard alive until exit so the last
/// lines are flushed.
pub fn init(format: LogFormat) -> WorkerGuard {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = buffer_lines();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(lines)
        .lossy(true)
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}

/// Log lines dropped so far because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
        + ACCESS.get().map_or(0, |a| a.dropped_lines())
}
