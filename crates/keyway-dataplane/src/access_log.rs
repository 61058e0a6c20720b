//! The access log: one line per request, written in blocks by a background thread.
//!
//! A request formats its line straight into a shared block (one short lock, no allocation
//! once the block has grown) and goes on. A block is handed to the writer thread when it
//! holds [`BLOCK_BYTES`], and the writer takes whatever is pending when nothing has been
//! handed over for [`AccessLog::new`]'s `flush_every`: the `buffer=64k flush=1s` of an nginx
//! `access_log`. One `write` per block instead of per line is what makes the log cheap;
//! going through `tracing`'s formatter and one write per line cost about a sixth of the
//! gateway's throughput on one core.
//!
//! Lines look exactly like the `tracing` events they replace (target `keyway::access`, in
//! the text or JSON format of the other log lines), so parsers keep working, and
//! `RUST_LOG` still filters them. When the writer cannot keep up (stderr a pipe nobody
//! reads), whole blocks are dropped and counted, never waited for.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// A block is handed to the writer once it holds this many bytes.
pub const BLOCK_BYTES: usize = 64 * 1024;

/// How lines are written: as the other log lines are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `2026-12-01T10:00:00.000000Z  INFO keyway::access: method=GET ...`
    Text,
    /// `{"timestamp":"...","level":"INFO","method":"GET",...,"target":"keyway::access"}`
    Json,
}

/// One request's line. Strings are written as given; the caller never passes a key.
#[derive(Debug)]
pub struct Line<'a> {
    /// Request method.
    pub method: &'a str,
    /// Path, never the query (it may carry a key).
    pub path: &'a str,
    /// Response status.
    pub status: u16,
    /// Time from the request head to the response head, in microseconds (written as
    /// milliseconds with up to three decimals: `duration_ms`).
    pub duration_us: u64,
    /// `namespace/name` of the Gateway, or `-`.
    pub gateway: &'a str,
    /// `namespace/name` of the route, or `-`.
    pub route: &'a str,
    /// Client id of the key presented, or `-`.
    pub client: &'a str,
    /// Why the request was refused, or `-`.
    pub reason: &'a str,
    /// The backend, or `-`.
    pub upstream: &'a str,
    /// `x-request-id`.
    pub request_id: &'a str,
    /// The client's address, as `Display` writes a socket address (formatted once per
    /// connection: [`crate::request::ConnInfo::peer_text`]).
    pub peer: &'a str,
}

struct Pending {
    block: Vec<u8>,
    lines: u64,
}

enum Message {
    /// A block and how many lines it holds.
    Block(Vec<u8>, u64),
    Stop(SyncSender<()>),
}

/// The access log's buffer and the channel to its writer.
pub struct AccessLog {
    format: Format,
    pending: Mutex<Pending>,
    tx: Sender<Message>,
    /// Lines handed to the writer and not yet written.
    queued: Arc<AtomicU64>,
    max_queued: u64,
    dropped: AtomicU64,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessLog({:?})", self.format)
    }
}

/// Keeps the writer thread; dropping it writes every pending line and stops the thread.
pub struct Guard {
    log: Arc<AccessLog>,
    thread: Option<JoinHandle<()>>,
}

impl AccessLog {
    /// Starts the writer thread on `out`. Lines reach `out` within `flush_every` of being
    /// logged, or sooner when a block fills. While the writer is behind by `max_queued`
    /// lines (and by at least one block), further blocks are dropped and counted.
    pub fn new(
        format: Format,
        out: impl Write + Send + 'static,
        flush_every: Duration,
        max_queued: u64,
    ) -> (Arc<AccessLog>, Guard) {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicU64::new(0));
        let written = queued.clone();
        let log = Arc::new(AccessLog {
            format,
            pending: Mutex::new(Pending {
                block: Vec::with_capacity(BLOCK_BYTES + 1024),
                lines: 0,
            }),
            tx,
            queued,
            max_queued,
            dropped: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&log);
        let thread = std::thread::Builder::new()
            .name("keyway-access-log".into())
            .spawn(move || {
                let mut out = out;
                loop {
                    match rx.recv_timeout(flush_every) {
                        Ok(Message::Block(block, lines)) => {
                            let _ = out.write_all(&block);
                            written.fetch_sub(lines, Ordering::Relaxed);
                        }
                        Ok(Message::Stop(done)) => {
                            let _ = out.flush();
                            let _ = done.send(());
                            return;
                        }
                        Err(RecvTimeoutError::Timeout) => {
                            let Some(log) = weak.upgrade() else { return };
                            let (block, _) = log.take();
                            if !block.is_empty() {
                                let _ = out.write_all(&block);
                                let _ = out.flush();
                            }
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .expect("spawn the access-log writer");
        let guard = Guard {
            log: log.clone(),
            thread: Some(thread),
        };
        (log, guard)
    }

    /// Appends one request's line.
    pub fn log(&self, line: &Line<'_>) {
        // Formatted before the lock, into a per-thread scratch buffer, so the lock is held
        // only for a copy.
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            format(self.format, SystemTime::now(), line, scratch);
            let full = {
                let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                p.block.extend_from_slice(scratch);
                p.lines += 1;
                (p.block.len() >= BLOCK_BYTES).then(|| {
                    let lines = std::mem::take(&mut p.lines);
                    let next = Vec::with_capacity(BLOCK_BYTES + 1024);
                    (std::mem::replace(&mut p.block, next), lines)
                })
            };
            if let Some((block, lines)) = full {
                self.send(block, lines);
            }
        });
    }

    /// Lines dropped so far because the writer could not keep up.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, block: Vec<u8>, lines: u64) {
        let queued = self.queued.load(Ordering::Relaxed);
        if queued > 0 && queued + lines > self.max_queued {
            self.dropped.fetch_add(lines, Ordering::Relaxed);
            return;
        }
        self.queued.fetch_add(lines, Ordering::Relaxed);
        if self.tx.send(Message::Block(block, lines)).is_err() {
            self.queued.fetch_sub(lines, Ordering::Relaxed);
            self.dropped.fetch_add(lines, Ordering::Relaxed);
        }
    }

    /// What is pending, and how many lines it holds.
    fn take(&self) -> (Vec<u8>, u64) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut p.block), std::mem::take(&mut p.lines))
    }
}

impl Drop for Guard {
    /// Hands over what is pending and waits (at most a second) until it is written.
    fn drop(&mut self) {
        let (block, lines) = self.log.take();
        if !block.is_empty() {
            self.log.send(block, lines);
        }
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if self.log.tx.send(Message::Stop(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(1));
        }
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
    /// The timestamp's whole seconds as last formatted: `2026-12-01T10:00:00`.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Writes `line` as of `now`, ending in a newline.
///
/// `core::fmt` is avoided where a field is plain (numbers, IPv4 addresses, strings with
/// nothing to escape): through it the line cost about 7,700 instructions, a sixth of a
/// whole proxied request. What needs escaping still goes the way `tracing` writes it.
fn format(format: Format, now: SystemTime, line: &Line<'_>, out: &mut Vec<u8>) {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let json = format == Format::Json;
    if json {
        out.extend_from_slice(b"{\"timestamp\":\"");
    }
    SECOND.with_borrow_mut(|(secs, text)| {
        if *secs != since.as_secs() {
            *secs = since.as_secs();
            text.clear();
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(*secs);
            let _ = write!(text, "{}", humantime::format_rfc3339_seconds(whole));
            text.pop(); // the `Z`, written after the fraction
        }
        out.extend_from_slice(text.as_bytes());
    });
    out.push(b'.');
    let micros = since.subsec_micros();
    for div in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push(b'0' + (micros / div % 10) as u8);
    }
    out.push(b'Z');
    let strings = [
        ("gateway", line.gateway),
        ("route", line.route),
        ("client", line.client),
        ("reason", line.reason),
        ("upstream", line.upstream),
        ("request_id", line.request_id),
    ];
    let mut num = itoa::Buffer::new();
    if json {
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"method\":");
        json_str(out, line.method);
        out.extend_from_slice(b",\"path\":");
        json_str(out, line.path);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(num.format(line.status).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        millis(out, line.duration_us);
        for (name, value) in strings {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            json_str(out, value);
        }
        out.extend_from_slice(b",\"peer\":\"");
        out.extend_from_slice(line.peer.as_bytes());
        out.extend_from_slice(b"\",\"target\":\"keyway::access\"}\n");
    } else {
        out.extend_from_slice(b"  INFO keyway::access: method=");
        out.extend_from_slice(line.method.as_bytes());
        out.extend_from_slice(b" path=");
        out.extend_from_slice(line.path.as_bytes());
        out.extend_from_slice(b" status=");
        out.extend_from_slice(num.format(line.status).as_bytes());
        out.extend_from_slice(b" duration_ms=");
        millis(out, line.duration_us);
        for (name, value) in strings {
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            if plain(value) {
                out.push(b'"');
                out.extend_from_slice(value.as_bytes());
                out.push(b'"');
            } else {
                let _ = write!(out, "{value:?}");
            }
        }
        out.extend_from_slice(b" peer=");
        out.extend_from_slice(line.peer.as_bytes());
        out.push(b'\n');
    }
}

/// Printable ASCII without a quote or a backslash: written inside quotes as it is, in both formats.
///
/// Eight bytes at a time (every field of every line is checked: byte by byte this was a
/// third of the line's cost). Each test is exact for the word as a whole: "some byte is
/// below 0x20", "some byte is above 0x7e", "some byte is zero" (after `^` with the quote
/// or the backslash).
fn plain(s: &str) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let has_below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH != 0;
    let has_above = |v: u64, n: u64| (v.wrapping_add(ONES * (127 - n)) | v) & HIGH != 0;
    let mut words = s.as_bytes().chunks_exact(8);
    for w in words.by_ref() {
        let v = u64::from_ne_bytes(w.try_into().expect("eight bytes"));
        if has_below(v, 0x20)
            || has_above(v, 0x7e)
            || has_zero(v ^ (ONES * u64::from(b'"')))
            || has_zero(v ^ (ONES * u64::from(b'\\')))
        {
            return false;
        }
    }
    words.remainder().iter().all(|&b| plain_byte(b))
}

fn plain_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// A JSON string, escaped as `serde_json` escapes it.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if plain(s) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// `micros` as milliseconds, as `{:?}` writes the `f64` `micros / 1000` (what `tracing`
/// wrote for the duration): the shortest digits that read back, which for a whole number
/// of microseconds below 10^15 (31 years) are the decimal itself, trailing zeros dropped,
/// `.0` on whole milliseconds. Integer arithmetic: through `ryu` this was 470 instructions
/// of a line's 3,200.
fn millis(out: &mut Vec<u8>, micros: u64) {
    if micros >= 1_000_000_000_000_000 {
        let _ = write!(out, "{:?}", micros as f64 / 1000.0);
        return;
    }
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let mut frac = micros % 1000;
    out.push(b'.');
    if frac == 0 {
        out.push(b'0');
        return;
    }
    for div in [100, 10, 1] {
        out.push(b'0' + (frac / div) as u8);
        frac %= div;
        if frac == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::Receiver;

    fn line() -> Line<'static> {
        Line {
            method: "GET",
            path: "/p/\"q\"",
            status: 200,
            duration_us: 250,
            gateway: "default/gw",
            route: "default/r",
            client: "alice",
            reason: "-",
            upstream: "Service default/app:80",
            request_id: "rid-1",
            peer: "127.0.0.1:5555",
        }
    }

    /// The line `tracing`'s formatter writes for the event the access log replaces.
    fn tracing_line(json: bool) -> String {
        tracing_line_of(&line(), json)
    }

    fn tracing_line_of(l: &Line<'_>, json: bool) -> String {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let make = move || Sink(sink.clone());
        let builder = tracing_subscriber::fmt().with_ansi(false).with_writer(make);
        let emit = || {
            tracing::info!(
                target: "keyway::access",
                method = %l.method,
                path = %l.path,
                status = l.status,
                duration_ms = l.duration_us as f64 / 1000.0,
                gateway = l.gateway,
                route = l.route,
                client = l.client,
                reason = l.reason,
                upstream = l.upstream,
                request_id = l.request_id,
                peer = %l.peer,
            )
        };
        if json {
            tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        out
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn ours(f: Format, now: SystemTime) -> String {
        ours_of(&line(), f, now)
    }

    fn ours_of(l: &Line<'_>, f: Format, now: SystemTime) -> String {
        let mut out = Vec::new();
        format(f, now, l, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_word_at_a_time_check_agrees_with_the_byte_at_a_time_one() {
        // Every byte value at every position of strings of 1 to 24 bytes, around plain
        // ones: the word tests must neither miss a byte nor refuse a plain string.
        let base = "abcdefghijklmnopqrstuvwx";
        for len in 1..=base.len() {
            assert!(plain(&base[..len]));
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = base.as_bytes()[..len].to_vec();
                    bytes[at] = b;
                    let Ok(s) = std::str::from_utf8(&bytes) else {
                        continue;
                    };
                    assert_eq!(plain(s), plain_byte(b), "{len} bytes, {b:#x} at {at}");
                }
            }
        }
        // Multi-byte characters (never plain) in every position of a word.
        for at in 0..9 {
            let s = format!("{}\u{e9}{}", &base[..at], &base[..8]);
            assert!(!plain(&s), "{s}");
        }
    }

    #[test]
    fn escaped_fields_numbers_and_addresses_as_tracing_writes_them() {
        let now = SystemTime::now();
        let mut cases = vec![line()];
        let odd = [
            "caf\u{e9}",
            "tab\there",
            "quote\"d",
            "back\\slash",
            "nl\n",
            "del\u{7f}",
            "\u{200b}zw",
            "",
        ];
        for (i, s) in odd.iter().enumerate() {
            let mut l = line();
            l.client = s;
            l.path = s;
            l.request_id = s;
            l.status = [0, 7, 99, 404, 65535, 100, 503, 1000][i];
            l.duration_us = [
                0,
                1,
                10,
                123_457,
                3_000,
                999_999_999_999_999,
                123_456_500,
                u64::MAX,
            ][i];
            l.peer = [
                "[::1]:80",
                "10.0.0.255:0",
                "255.255.255.255:65535",
                "[fe80::1%2]:8080",
            ][i % 4];
            cases.push(l);
        }
        for l in &cases {
            for json in [false, true] {
                let f = if json { Format::Json } else { Format::Text };
                assert_eq!(
                    untimed(&ours_of(l, f, now), json),
                    untimed(&tracing_line_of(l, json), json),
                    "{l:?}"
                );
            }
        }
        // Durations as `{:?}` writes them (as `tracing` did): every microsecond of the
        // first second, then a walk up to past the cut-over to `{:?}` itself.
        let mut out = Vec::new();
        let check = |out: &mut Vec<u8>, us: u64| {
            out.clear();
            millis(out, us);
            assert_eq!(
                std::str::from_utf8(out).unwrap(),
                format!("{:?}", us as f64 / 1000.0),
                "{us}"
            );
        };
        for us in 0..1_000_000 {
            check(&mut out, us);
        }
        let mut us = 1_000_000_u64;
        while us < 10_000_000_000_000_000 {
            for near in [us - 1, us, us + 1, us / 1000 * 1000, us / 1000 * 1000 + 10] {
                check(&mut out, near);
            }
            us = us / 7 * 9 + 13;
        }
        check(&mut out, u64::MAX);
    }

    /// Drops the timestamp (the first 27 bytes of a text line, the field of a JSON one).
    fn untimed(s: &str, json: bool) -> String {
        if json {
            let mut v: serde_json::Value = serde_json::from_str(s).unwrap();
            v.as_object_mut().unwrap().remove("timestamp");
            v.to_string()
        } else {
            s[27..].to_string()
        }
    }

    #[test]
    fn lines_are_those_of_the_tracing_formatter() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_583_200_012_345);
        let text = ours(Format::Text, now);
        assert!(
            text.starts_with("2025-12-01T10:00:00.012345Z  INFO"),
            "{text}"
        );
        assert_eq!(untimed(&text, false), untimed(&tracing_line(false), false));
        let json = ours(Format::Json, now);
        assert!(
            json.starts_with(r#"{"timestamp":"2025-12-01T10:00:00.012345Z","#),
            "{json}"
        );
        assert!(json.ends_with("\"target\":\"keyway::access\"}\n"), "{json}");
        let theirs = tracing_line(true);
        assert_eq!(untimed(&json, true), untimed(&theirs, true));
        // Field order too, not only the same object.
        let keys = |s: &str| -> Vec<String> {
            s.split("\":")
                .map(|p| p.rsplit('"').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(keys(&json), keys(&theirs));
        // The cached second moves on.
        let later = ours(Format::Text, now + Duration::from_secs(61));
        assert!(later.starts_with("2025-12-01T10:01:01.012345Z"), "{later}");
    }

    /// An output that hands each write to the test, and can be made to block.
    struct Chan(mpsc::Sender<Vec<u8>>, Arc<Mutex<()>>);
    impl Write for Chan {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _held = self.1.lock().unwrap();
            let _ = self.0.send(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn started(flush: Duration) -> (Arc<AccessLog>, Guard, Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new(Mutex::new(()));
        let (log, guard) = AccessLog::new(Format::Text, Chan(tx, gate), flush, 1 << 20);
        (log, guard, rx)
    }

    #[test]
    fn a_full_block_is_written_at_once_in_one_write() {
        let (log, _guard, rx) = started(Duration::from_secs(3600));
        let one = ours(Format::Text, SystemTime::now()).len();
        let n = BLOCK_BYTES.div_ceil(one);
        for _ in 0..n - 1 {
            log.log(&line());
        }
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "not before it is full"
        );
        log.log(&line());
        let block = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(block.iter().filter(|&&b| b == b'\n').count(), n);
        assert!(block.len() >= BLOCK_BYTES);
    }

    #[test]
    fn a_quiet_log_is_written_within_the_flush_interval() {
        let (log, _guard, rx) = started(Duration::from_millis(50));
        log.log(&line());
        let t = std::time::Instant::now();
        let block = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(String::from_utf8(block)
            .unwrap()
            .contains("keyway::access: method=GET"));
    }

    #[test]
    fn dropping_the_guard_writes_what_is_pending() {
        let (log, guard, rx) = started(Duration::from_secs(3600));
        log.log(&line());
        log.log(&line());
        drop(guard);
        let block = rx.recv_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(block.iter().filter(|&&b| b == b'\n').count(), 2);
    }

    #[test]
    fn a_stuck_writer_costs_lines_counted_never_a_wait() {
        let (tx, _rx) = mpsc::channel();
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let one = ours(Format::Text, SystemTime::now()).len();
        let per_block = BLOCK_BYTES.div_ceil(one) as u64;
        // Room for two blocks' lines: the one the writer is stuck on and one queued.
        let (log, guard) = AccessLog::new(
            Format::Text,
            Chan(tx, gate.clone()),
            Duration::from_secs(3600),
            2 * per_block,
        );
        let t = std::time::Instant::now();
        for _ in 0..6 * per_block {
            log.log(&line());
        }
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(
            log.dropped_lines(),
            4 * per_block,
            "{per_block} lines a block"
        );
        drop(held);
        drop(guard);
    }

    #[test]
    fn one_block_always_goes_even_over_a_small_limit() {
        let (tx, rx) = mpsc::channel();
        let (log, _guard) = AccessLog::new(
            Format::Text,
            Chan(tx, Arc::new(Mutex::new(()))),
            Duration::from_secs(3600),
            1,
        );
        let one = ours(Format::Text, SystemTime::now()).len();
        for _ in 0..BLOCK_BYTES.div_ceil(one) {
            log.log(&line());
        }
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
        assert_eq!(log.dropped_lines(), 0);
    }
}
