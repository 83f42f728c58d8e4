//! Proxy-chain benchmarks against baselines measured in the same run, with the real release
//! `sidecars` binary as pipelock and egress (run by `bench/proxy.sh`):
//! 1. CONNECT tunnel throughput through pipelock→egress vs. a direct TCP connection (same
//!    client and source, alternating rounds, medians);
//! 2. latency of small keep-alive HTTP requests: direct, via pipelock, via pipelock→egress;
//! 3. requests/s of plain-HTTP keep-alive requests through pipelock (absolute-form, 32
//!    connections) vs. direct;
//! 4. RSS of pipelock and egress per 1,000 idle tunnels.
//!
//! Prints a markdown table.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::*;

/// A TCP source that sends `total` bytes to each connection.
async fn source(total: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let block = vec![0x5au8; 256 * 1024];
                let mut left = total;
                while left > 0 {
                    let n = left.min(block.len());
                    if s.write_all(&block[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A TCP server that holds connections open and echoes.
async fn holder() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A tiny HTTP server answering `ok`.
async fn http_ok() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A bare TCP forwarder to `next` on its own thread and runtime (as if another process): no
/// HTTP, no policy, just the relay, zero-copy (`splice`) or copying. Two of them in a row are
/// the ceiling for any two-hop chain on this machine.
fn forwarder(next: SocketAddr, zero_copy: bool) -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::from_std(l).unwrap();
            let limits = sidecars_common::proxy::TunnelLimits {
                idle: Duration::from_secs(60),
                max_lifetime: Duration::from_secs(3600),
            };
            while let Ok((a, _)) = l.accept().await {
                let _ = a.set_nodelay(true);
                tokio::spawn(async move {
                    let b = TcpStream::connect(next).await.unwrap();
                    b.set_nodelay(true).unwrap();
                    if zero_copy {
                        let pipes = sidecars_common::splice::Pipes::new().unwrap();
                        sidecars_common::splice::relay(
                            a,
                            Bytes::new(),
                            b,
                            Bytes::new(),
                            pipes,
                            limits,
                        )
                        .await;
                    } else {
                        sidecars_common::proxy::relay(a, b, limits, 64 * 1024).await;
                    }
                });
            }
        });
    });
    addr
}

/// MB/s of reading everything `source` sends.
async fn throughput(proxy: Option<SocketAddr>, source: SocketAddr) -> f64 {
    let mut s = connect_via(proxy, source).await;
    let mut buf = vec![0u8; 256 * 1024];
    let started = Instant::now();
    let mut got = 0usize;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    got as f64 / 1e6 / started.elapsed().as_secs_f64()
}

async fn http_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Send `n` sequential GETs on one keep-alive connection; latencies in µs.
async fn latencies(via: Option<SocketAddr>, target: SocketAddr, n: usize) -> Vec<f64> {
    let mut sender = http_client(via.unwrap_or(target)).await;
    let uri = if via.is_some() {
        format!("http://{target}/")
    } else {
        "/".to_string()
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 200 {
        let req = Request::get(&uri)
            .header("host", target.to_string())
            .body(Empty::new())
            .unwrap();
        sender.ready().await.unwrap();
        let t = Instant::now();
        let resp = sender.send_request(req).await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.into_body().collect().await.unwrap();
        if i >= 200 {
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

/// Requests/s with `conns` keep-alive connections for `secs`.
async fn rps(via: Option<SocketAddr>, target: SocketAddr, conns: usize, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(async move {
            let mut sender = http_client(via.unwrap_or(target)).await;
            let uri = if via.is_some() {
                format!("http://{target}/")
            } else {
                "/".to_string()
            };
            let mut n = 0u64;
            while Instant::now() < deadline {
                let req = Request::get(&uri)
                    .header("host", target.to_string())
                    .body(Empty::new())
                    .unwrap();
                sender.ready().await.unwrap();
                let resp = sender.send_request(req).await.unwrap();
                assert!(resp.status().is_success(), "{}", resp.status());
                resp.into_body().collect().await.unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / secs
}

fn main() {
    run_bench(bench);
}

async fn bench(bin: PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let gib = std::env::var("PROXY_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2usize << 30);
    let src = source(gib).await;
    let ok = http_ok().await;
    let hold = holder().await;
    let loopback = json!(["127.0.0.0/8"]);
    let allow = json!([{"host": "127.0.0.1", "ports": [src.port(), ok.port(), hold.port()]}]);
    let (egress, eg_addr) = start(
        &bin,
        "egress",
        json!({"allow_from": ["127.0.0.1/32"], "allow_cidrs": loopback}),
        dir.path(),
    )
    .await;
    let (pipelock, pl_addr) = start(
        &bin,
        "pipelock",
        json!({
            "upstream": eg_addr.to_string(), "allow": allow, "allow_cidrs": loopback,
            "rate_limit_per_minute": 0, "max_tunnels": 4096,
        }),
        dir.path(),
    )
    .await;
    let (_solo, solo_addr) = start(
        &bin,
        "pipelock",
        json!({
            "upstream": null, "allow": allow, "allow_cidrs": loopback, "rate_limit_per_minute": 0,
        }),
        dir.path(),
    )
    .await;

    // 1. Throughput: the same client and source for both, alternating rounds (the order
    // flips every round so neither always runs on a warmer machine), median of each.
    let rounds = std::env::var("PROXY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(5);
    let bare_splice = forwarder(forwarder(src, true), true);
    let bare_copy = forwarder(forwarder(src, false), false);
    let (mut directs, mut chaineds) = (Vec::new(), Vec::new());
    let (mut splices, mut copies) = (Vec::new(), Vec::new());
    let mut chain_cpu = 0f64;
    for round in 0..rounds {
        // [direct, chain, bare splice, bare copy], rotated by one each round.
        let mut got = [0f64; 4];
        for k in 0..4 {
            let which = (k + round) % 4;
            got[which] = match which {
                0 => throughput(None, src).await,
                1 => {
                    let cpu = pipelock.cpu_secs() + egress.cpu_secs();
                    let mbs = throughput(Some(pl_addr), src).await;
                    chain_cpu += pipelock.cpu_secs() + egress.cpu_secs() - cpu;
                    mbs
                }
                2 => throughput(None, bare_splice).await,
                _ => throughput(None, bare_copy).await,
            };
        }
        eprintln!(
            "round {}: direct {:.0} MB/s, pipelock→egress {:.0} MB/s, bare 2-hop splice {:.0} MB/s, bare 2-hop copy {:.0} MB/s",
            round + 1, got[0], got[1], got[2], got[3]
        );
        directs.push(got[0]);
        chaineds.push(got[1]);
        splices.push(got[2]);
        copies.push(got[3]);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (direct, chained) = (median(&mut directs), median(&mut chaineds));
    let (bare_splice, bare_copy) = (median(&mut splices), median(&mut copies));
    // 2. Latency.
    let n = 3000;
    let lat_direct = latencies(None, ok, n).await;
    let lat_pl = latencies(Some(solo_addr), ok, n).await;
    let lat_chain = latencies(Some(pl_addr), ok, n).await;
    // 3. Requests/s.
    let rps_direct = rps(None, ok, 32, 4.0).await;
    let rps_pl = rps(Some(solo_addr), ok, 32, 4.0).await;
    let rps_chain = rps(Some(pl_addr), ok, 32, 4.0).await;
    // 4. RSS per 1,000 idle tunnels (each has carried one small round trip).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pl_before, eg_before) = (pipelock.rss_kib(), egress.rss_kib());
    let mut tunnels = Vec::new();
    for _ in 0..1000 {
        let mut s = connect_via(Some(pl_addr), hold).await;
        s.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        tunnels.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pl_after, eg_after) = (pipelock.rss_kib(), egress.rss_kib());
    drop(tunnels);

    let p50 = |v: &[f64]| pct(v, 0.5);
    let yes = |b: bool| if b { "yes" } else { "no" };
    let added_pl = p50(&lat_pl) - p50(&lat_direct);
    let added_eg = p50(&lat_chain) - p50(&lat_pl);
    println!("### Proxy chain (pipelock → egress)\n");
    println!("Loopback, release `sidecars` binary, 2 cores shared by client, daemons and upstream; baselines measured in the same run. Tunnel throughput: the same in-process client and source for direct and chained, {:.1} GiB per run, {} alternating rounds, median of each.\n", gib as f64 / (1u64 << 30) as f64, rounds);
    println!("| measure | result | baseline (same run) | ratio / added | goal | met |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!("| CONNECT tunnel throughput, pipelock→egress | {:.0} MB/s | direct TCP {:.0} MB/s | {:.0}% | ≥ 80% of direct | {} |", chained, direct, 100.0 * chained / direct, yes(chained / direct >= 0.8));
    println!(
        "| CPU of pipelock + egress per GiB tunneled | {:.2} s/GiB | — | — | — | — |",
        chain_cpu / rounds as f64 / (gib as f64 / (1u64 << 30) as f64)
    );
    println!("| ceiling: two bare TCP forwarders, zero-copy (no HTTP, no policy) | {:.0} MB/s | direct TCP {:.0} MB/s | {:.0}% | — | — |", bare_splice, direct, 100.0 * bare_splice / direct);
    println!("| reference: two bare TCP forwarders, copying | {:.0} MB/s | direct TCP {:.0} MB/s | {:.0}% | — | — |", bare_copy, direct, 100.0 * bare_copy / direct);
    println!("| CONNECT tunnel throughput, pipelock→egress vs. the zero-copy ceiling | {:.0} MB/s | two bare forwarders {:.0} MB/s | {:.0}% | — | — |", chained, bare_splice, 100.0 * chained / bare_splice);
    println!("| small HTTP request p50 latency, via pipelock | {:.0} µs (p99 {:.0}) | direct {:.0} µs (p99 {:.0}) | +{:.0} µs | ≤ 1 ms added per hop | {} |", p50(&lat_pl), pct(&lat_pl, 0.99), p50(&lat_direct), pct(&lat_direct, 0.99), added_pl, yes(added_pl <= 1000.0));
    println!("| small HTTP request p50 latency, via pipelock→egress | {:.0} µs (p99 {:.0}) | via pipelock {:.0} µs | +{:.0} µs (egress hop) | ≤ 1 ms added per hop | {} |", p50(&lat_chain), pct(&lat_chain, 0.99), p50(&lat_pl), added_eg, yes(added_eg <= 1000.0));
    println!("| plain-HTTP keep-alive requests/s through pipelock (32 conns) | {:.0} req/s | direct {:.0} req/s | {:.0}% | ≥ 5,000 req/s | {} |", rps_pl, rps_direct, 100.0 * rps_pl / rps_direct, yes(rps_pl >= 5000.0));
    println!("| plain-HTTP keep-alive requests/s through pipelock→egress (32 conns) | {:.0} req/s | direct {:.0} req/s | {:.0}% | — | — |", rps_chain, rps_direct, 100.0 * rps_chain / rps_direct);
    println!("| RSS per 1,000 idle tunnels | pipelock +{:.1} MiB, egress +{:.1} MiB | idle daemons {:.1} / {:.1} MiB | — | — | — |", (pl_after as f64 - pl_before as f64) / 1024.0, (eg_after as f64 - eg_before as f64) / 1024.0, pl_before as f64 / 1024.0, eg_before as f64 / 1024.0);
}
