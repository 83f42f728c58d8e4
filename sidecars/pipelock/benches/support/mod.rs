//! What the proxy benchmarks share: the release daemons as child processes, free ports, and
//! opening a CONNECT tunnel.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A daemon child process, killed when dropped.
pub struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
impl Proc {
    /// User + system CPU time so far, in seconds (`/proc/PID/stat` ticks, USER_HZ = 100).
    pub fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the comm.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `sidecars DAEMON` with `config` (its `listen` set to a free port); waits until it
/// accepts connections.
pub async fn start(
    bin: &PathBuf,
    daemon: &str,
    config: serde_json::Value,
    dir: &std::path::Path,
) -> (Proc, SocketAddr) {
    let port = free_port();
    let mut config = config;
    config["listen"] = json!(format!("127.0.0.1:{port}"));
    let path = dir.join(format!("{daemon}-{port}.json"));
    std::fs::write(&path, config.to_string()).unwrap();
    let mut child = Command::new(bin)
        .args([daemon, "--config"])
        .arg(&path)
        .env("SIDECARS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return (Proc(child), addr);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{daemon} did not start");
}

/// A TCP connection to `target`, through a CONNECT tunnel of `proxy` when given.
pub async fn connect_via(proxy: Option<SocketAddr>, target: SocketAddr) -> TcpStream {
    match proxy {
        Some(proxy) => connect_to(proxy, &target.to_string()).await,
        None => {
            let s = TcpStream::connect(target).await.unwrap();
            s.set_nodelay(true).unwrap();
            s
        }
    }
}

/// A CONNECT tunnel of `proxy` to `target` (`host:port`), its `200` read.
pub async fn connect_to(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "proxy closed");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// The `p`-th percentile of sorted `v`.
pub fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p) as usize]
}

/// A benchmark's `main`: `--sidecars PATH` names the release binary (default
/// `target/release/sidecars`); `bench` runs on a 2-thread tokio runtime.
pub fn run_bench<F: std::future::Future<Output = ()>>(bench: impl FnOnce(PathBuf) -> F) {
    let mut args = std::env::args().skip(1);
    let mut bin = PathBuf::from("target/release/sidecars");
    while let Some(a) = args.next() {
        if a == "--sidecars" {
            bin = PathBuf::from(args.next().expect("--sidecars PATH"));
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench(bin));
}
