//! Servers Keyway's authors did not write, started on 127.0.0.1 for one test.
//!
//! Each decodes what it receives its own way, which is the point: nginx decodes `%2F` in a
//! path and resolves `..` before choosing a file; Python's `http.server` takes the
//! request-target literally. A missing program is a failed test, never a skipped one:
//! `.ci/run` installs them.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A program serving on a loopback port until dropped.
pub struct External {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for External {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl External {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its working directory (document root under `html/`, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The lines of a file it wrote in its directory (nginx's `access.log`).
    pub fn log(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until the program listens, and learns on which port.
    fn wait_listening(mut self, what: &str) -> External {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(port) = listening_port(self.child.id()) {
                self.addr = SocketAddr::from(([127, 0, 0, 1], port));
                if TcpStream::connect(self.addr).is_ok() {
                    return self;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{what} exited before listening ({status}); see {}",
                    self.dir.path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{what} did not listen within 10 s");
    }
}

/// The port a process listens on: its TCP socket in state LISTEN, found through its open
/// files, so a test never has to pick a port and hope nobody takes it meanwhile.
pub fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        // `local_address` is HEXIP:HEXPORT, state 0A is LISTEN, the inode is column 9.
        let (local, state, inode) = (cols.get(1)?, cols.get(3)?, cols.get(9)?);
        if *state != "0A" || !inodes.iter().any(|i| i == inode) {
            return None;
        }
        u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
    })
}

/// A loopback port reserved for a program that cannot be told to use port 0 (nginx): a
/// socket bound with `SO_REUSEPORT` and never listening holds the port, so the OS hands it
/// to nobody else, while the program binds it too with `reuseport`. Drop it once the
/// program listens.
fn reserved_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseport(true).expect("SO_REUSEPORT");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let port = socket.local_addr().expect("addr").port();
    (socket, port)
}

/// The path of a program, from `PATH` or the usual system directories.
pub fn program(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not installed (`.ci/run` installs it: apt-get install {name})")
        })
}

/// Writes `files` (relative path, content) under `root`.
fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
}

/// nginx serving `files` as static content from `html/`, one process (no workers), its
/// access log in `access.log` with the request line exactly as received.
pub fn nginx(files: &[(&str, &str)]) -> External {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_files(&d.join("html"), files);
    std::fs::create_dir_all(d.join("tmp")).expect("mkdir");
    let (reservation, port) = reserved_port();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  log_format raw '$request|$uri';\n  access_log {d}/access.log raw;\n\
           client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
           server {{\n    listen 127.0.0.1:{port} reuseport;\n    root {d}/html;\n    location / {{ default_type text/plain; }}\n  }}\n}}\n",
        d = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf).expect("write conf");
    let child = Command::new(program("nginx"))
        .arg("-p")
        .arg(d)
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let nginx = External {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        dir,
    }
    .wait_listening("nginx");
    drop(reservation);
    nginx
}

/// Python's `http.server` serving `files` from its directory.
pub fn python_http_server(files: &[(&str, &str)]) -> External {
    let dir = tempfile::tempdir().expect("tempdir");
    write_files(&dir.path().join("html"), files);
    let child = Command::new(program("python3"))
        .args([
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir.path().join("html"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3 -m http.server");
    External {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        dir,
    }
    .wait_listening("python3 -m http.server")
}
