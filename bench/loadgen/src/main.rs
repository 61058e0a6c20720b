//! `keyway-loadgen`: sends requests at a fixed rate over keep-alive connections and reports
//! latency percentiles measured from when each request *should* have been sent, so a stalled
//! server is charged for the requests queued behind it (no coordinated omission, as wrk2).
//!
//! Each of `--connections` connections owns every C-th slot of the schedule
//! `start + i / rate`; it sends a slot's request when its time comes (or at once, if late).
//! Latency runs from the slot's time when the connection was still busy with an earlier
//! response (the server made the request wait), and from the actual send otherwise (so the
//! timer's own millisecond granularity is not charged to the server).
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Parser, Clone)]
#[command(version, about)]
struct Args {
    /// Target, e.g. http://127.0.0.1:8080/path (loopback only).
    #[arg(long)]
    url: http::Uri,
    /// Requests per second, in total.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long to send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: u64,
    /// Extra request headers, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
}

struct Result {
    hist: Histogram<u64>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let out = rt.block_on(run(args.clone()));
    let h = &out.hist;
    let p = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let json = serde_json::json!({
        "rate": args.rate,
        "duration_s": args.duration.as_secs_f64(),
        "connections": args.connections,
        "requests": out.ok + out.non_2xx,
        "ok": out.ok,
        "non_2xx": out.non_2xx,
        "errors": out.errors,
        "latency_ms": {"p50": p(0.50), "p90": p(0.90), "p99": p(0.99), "p999": p(0.999), "max": h.max() as f64 / 1000.0},
    });
    println!("{json}");
}

async fn run(args: Args) -> Result {
    let host = args.url.host().expect("url has a host").to_string();
    let port = args.url.port_u16().unwrap_or(80);
    let addr = format!("{host}:{port}");
    let path = args
        .url
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let headers: Vec<(String, String)> = args
        .headers
        .iter()
        .filter_map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let total = args.rate * args.duration.as_secs_f64() as u64;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (addr, path, headers, host) =
            (addr.clone(), path.clone(), headers.clone(), host.clone());
        let conns = args.connections;
        tasks.push(tokio::spawn(async move {
            let mut r = Result {
                hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
                ok: 0,
                non_2xx: 0,
                errors: 0,
            };
            let stream = TcpStream::connect(&addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut i = c;
            let mut free_since = Instant::now();
            while i < total {
                let due = start + interval * i as u32;
                tokio::time::sleep_until(due.into()).await;
                // Busy at the due time: the server delayed this request, charge from `due`.
                let from = if free_since > due {
                    due
                } else {
                    Instant::now()
                };
                let mut req = http::Request::get(path.as_str()).header("host", host.as_str());
                for (k, v) in &headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let req = req.body(Empty::<Bytes>::new()).unwrap();
                match tx.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let _ = resp.into_body().collect().await;
                        let micros = from.elapsed().as_micros() as u64;
                        free_since = Instant::now();
                        let _ = r.hist.record(micros.max(1));
                        if status.is_success() {
                            r.ok += 1;
                        } else {
                            r.non_2xx += 1;
                        }
                    }
                    Err(_) => {
                        r.errors += 1;
                        break;
                    }
                }
                i += conns;
            }
            r
        }));
    }
    let mut all = Result {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
        ok: 0,
        non_2xx: 0,
        errors: 0,
    };
    for t in tasks {
        let r = t.await.unwrap();
        all.hist.add(&r.hist).unwrap();
        all.ok += r.ok;
        all.non_2xx += r.non_2xx;
        all.errors += r.errors;
    }
    all
}
