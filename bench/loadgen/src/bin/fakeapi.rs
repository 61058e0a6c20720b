//! The repository's fake Kubernetes API server as a process, for benchmarks that run
//! `keyway run --kubernetes` replicas against it.
//!
//! `fakeapi --kubeconfig-dir DIR --token a --token b FILE...`
//! applies every YAML file, writes one kubeconfig per token (`DIR/kubeconfig-<token>`),
//! prints `ready` and serves until killed. Benchmarks then change objects through the REST
//! API as `kubectl` would (PUT, DELETE).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Where the kubeconfigs go (the server listens on a port the OS picks, printed on
    /// stdout and written into them).
    #[arg(long)]
    kubeconfig_dir: PathBuf,
    #[arg(long)]
    token: Vec<String>,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 1.0)]
    bookmark_interval: f64,
    files: Vec<PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let api = keyway_fakeapi::FakeApiServer::start().await;
    api.faults()
        .set_bookmark_interval(std::time::Duration::from_secs_f64(args.bookmark_interval));
    for f in &args.files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        api.apply_yaml(&text);
    }
    for t in &args.token {
        api.write_kubeconfig(&args.kubeconfig_dir, t);
    }
    let addr: SocketAddr = api.addr();
    println!("ready {addr}");
    let _ = tokio::signal::ctrl_c().await;
}
