//! HTTPS through the chain, three ways in the same run, with the real release `sidecars` as
//! pipelock and egress (run by `bench/https.sh`):
//!
//! - **direct**: the client's TLS straight to the upstream (the floor);
//! - **blind**: CONNECT through pipelock → egress with the host in `passthrough` (egress only
//!   checks the ClientHello's SNI, then relays);
//! - **intercepted**: `intercept_all`: egress terminates TLS with a bottle-CA certificate, runs
//!   DLP on the request line, headers and body, and re-encrypts to the upstream.
//!
//! Measured: p50/p99 of small GETs on one keep-alive connection; a new connection each time
//! (CONNECT + handshake + one GET, egress's per-host certificate cache warm); uploads of
//! `HTTPS_BENCH_UPLOAD_MIB` (default 64) MiB bodies, MB/s, and egress's CPU per MB while
//! intercepting (decrypt, scan, re-encrypt). Prints a markdown table.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::*;

/// An HTTPS upstream on 127.0.0.1 for `localhost`: `GET` → `ok`, `POST` → the body's length.
async fn upstream(tls: Arc<rustls::ServerConfig>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let _ = s.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok(s) = tokio_rustls::TlsAcceptor::from(tls).accept(s).await else {
                    return;
                };
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut body = req.into_body();
                    let mut n = 0usize;
                    while let Some(Ok(frame)) = body.frame().await {
                        n += frame.data_ref().map_or(0, |d| d.len());
                    }
                    let text = if n == 0 {
                        "ok".to_string()
                    } else {
                        n.to_string()
                    };
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// How the client reaches the upstream.
#[derive(Clone, Copy)]
struct Way {
    /// pipelock, or none (direct).
    proxy: Option<SocketAddr>,
    /// The roots the client trusts (the upstream's CA, or the bottle's).
    roots: &'static Arc<rustls::ClientConfig>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn open(way: Way, port: u16) -> Sender {
    let tcp = match way.proxy {
        Some(proxy) => connect_to(proxy, &format!("localhost:{port}")).await,
        None => {
            let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.set_nodelay(true).unwrap();
            s
        }
    };
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(way.roots.clone())
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(sender: &mut Sender, port: u16, body: Bytes) -> Bytes {
    sender.ready().await.unwrap();
    let method = if body.is_empty() { "GET" } else { "POST" };
    let req = Request::builder()
        .method(method)
        .uri("/p")
        .header("host", format!("localhost:{port}"))
        .body(Full::new(body))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "{resp:?}");
    resp.into_body().collect().await.unwrap().to_bytes()
}

/// Small GETs on one keep-alive connection: latencies in µs, sorted.
async fn keep_alive(way: Way, port: u16, n: usize) -> Vec<f64> {
    let mut sender = open(way, port).await;
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let t = Instant::now();
        send(&mut sender, port, Bytes::new()).await;
        if i >= 100 {
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    out.sort_by(f64::total_cmp);
    out
}

/// A new connection (CONNECT, TLS handshake, one GET) each time: µs, sorted.
async fn fresh(way: Way, port: u16, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut sender = open(way, port).await;
        send(&mut sender, port, Bytes::new()).await;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out.sort_by(f64::total_cmp);
    out
}

/// MB/s of uploading `body` `rounds` times on one connection.
async fn upload(way: Way, port: u16, body: &Bytes, rounds: usize) -> f64 {
    let mut sender = open(way, port).await;
    let t = Instant::now();
    for _ in 0..rounds {
        let got = send(&mut sender, port, body.clone()).await;
        assert_eq!(got, body.len().to_string().as_bytes());
    }
    (body.len() * rounds) as f64 / 1e6 / t.elapsed().as_secs_f64()
}

fn client_config(ca_pem: &str) -> &'static Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(ca_pem) {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Box::leak(Box::new(Arc::new(cfg)))
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

fn main() {
    run_bench(bench);
}

async fn bench(bin: PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mib: usize = std::env::var("HTTPS_BENCH_UPLOAD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let (up_cert, up_key) = egress::generate_ca("bench-upstream-ca").unwrap();
    let (bottle_cert, bottle_key) = egress::generate_ca("bench-bottle-ca").unwrap();
    let up_ca = egress::ca::Ca::load(&up_cert, &up_key).unwrap();
    let files = |name: &str, pem: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p
    };
    let (up_crt, bottle_crt, bottle_key_file) = (
        files("up.crt", &up_cert),
        files("bottle.crt", &bottle_cert),
        files("bottle.key", &bottle_key),
    );
    let port = upstream(up_ca.server_config("localhost").unwrap())
        .await
        .port();
    let loopback = json!(["127.0.0.0/8"]);
    let chain = |passthrough: serde_json::Value| {
        let (bin, dir, loopback) = (bin.clone(), dir.path().to_path_buf(), loopback.clone());
        let (up_crt, bottle_crt, bottle_key_file) =
            (up_crt.clone(), bottle_crt.clone(), bottle_key_file.clone());
        async move {
            let egress = start(
                &bin,
                "egress",
                json!({"allow_cidrs": loopback, "intercept_all": true, "passthrough": passthrough,
                       "ca_cert": bottle_crt, "ca_key": bottle_key_file, "extra_roots": [up_crt],
                       "max_body_scan_bytes": (mib << 20) + 1}),
                &dir,
            )
            .await;
            let pipelock = start(
                &bin,
                "pipelock",
                json!({"upstream": egress.1.to_string(), "allow_cidrs": loopback,
                       "allow": [{"host": "localhost", "ports": [port]}],
                       "rate_limit_per_minute": 0}),
                &dir,
            )
            .await;
            (egress, pipelock)
        }
    };
    let (blind_egress, blind_pipelock) = chain(json!(["localhost"])).await;
    let (icpt_egress, icpt_pipelock) = chain(json!([])).await;
    let upstream_roots = client_config(&up_cert);
    let bottle_roots = client_config(&bottle_cert);
    let direct = Way {
        proxy: None,
        roots: upstream_roots,
    };
    let blind = Way {
        proxy: Some(blind_pipelock.1),
        roots: upstream_roots,
    };
    let intercepted = Way {
        proxy: Some(icpt_pipelock.1),
        roots: bottle_roots,
    };
    let ways = [
        ("direct", direct),
        ("blind", blind),
        ("intercepted", intercepted),
    ];
    // Warm-up: caches (egress mints the leaf certificate on first use), page cache.
    for (_, way) in ways {
        keep_alive(way, port, 200).await;
        fresh(way, port, 5).await;
    }
    let rounds = 3;
    let mut small: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut conn: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut mbps: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let body = Bytes::from(
        (0..mib << 20)
            .map(|i| b"the quick brown fox jumps over the lazy dog\n"[i % 44])
            .collect::<Vec<u8>>(),
    );
    let mut egress_cpu_per_mb = Vec::new();
    for _ in 0..rounds {
        for (i, (_, way)) in ways.iter().enumerate() {
            let lat = keep_alive(*way, port, 2000).await;
            small[i].push(pct(&lat, 0.5));
            small[i].push(pct(&lat, 0.99));
            let fresh = fresh(*way, port, 100).await;
            conn[i].push(pct(&fresh, 0.5));
            let cpu0 = icpt_egress.0.cpu_secs();
            mbps[i].push(upload(*way, port, &body, 2).await);
            if i == 2 {
                egress_cpu_per_mb
                    .push((icpt_egress.0.cpu_secs() - cpu0) / (2.0 * mib as f64 * 1.048576));
            }
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // small[i] alternates p50, p99 per round.
    let p50 = |i: usize| median(&small[i].iter().step_by(2).copied().collect::<Vec<_>>());
    let p99 = |i: usize| {
        median(
            &small[i]
                .iter()
                .skip(1)
                .step_by(2)
                .copied()
                .collect::<Vec<_>>(),
        )
    };
    let ms = |us: f64| format!("{:.3} ms", us / 1000.0);
    let (d, b, x) = (p50(0), p50(1), p50(2));
    let met = |ok: bool| if ok { "met" } else { "**missed**" };
    let cpu = median(&egress_cpu_per_mb);
    let scan_mbs = 1.0 / cpu;
    println!("| what | direct | blind (passthrough) | intercepted + DLP | goal | |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| small GET, one keep-alive connection, p50 / p99 | {} / {} | {} / {} | {} / {} | added by interception ≤ 1 ms at p50 (vs blind: {:+.3} ms; vs direct: {:+.3} ms) | {} |",
        ms(d), ms(p99(0)), ms(b), ms(p99(1)), ms(x), ms(p99(2)),
        (x - b) / 1000.0, (x - d) / 1000.0, met(x - b <= 1000.0)
    );
    println!(
        "| new connection each time: CONNECT + TLS handshake + one GET, p50 (leaf cache warm) | {} | {} | {} | — | |",
        ms(median(&conn[0])), ms(median(&conn[1])), ms(median(&conn[2]))
    );
    let (ud, ub, ux) = (median(&mbps[0]), median(&mbps[1]), median(&mbps[2]));
    println!(
        "| upload of {mib} MiB bodies, one connection | {ud:.0} MB/s | {ub:.0} MB/s | {ux:.0} MB/s ({:.0}% of blind) | ≥ 50% of blind | {} |",
        100.0 * ux / ub,
        met(ux >= 0.5 * ub)
    );
    println!(
        "| egress CPU while intercepting the uploads (TLS in + DLP + TLS out) | | | {:.1} ms/MB = {scan_mbs:.0} MB/s per core | DLP ≥ 250 MB/s per core | {} |",
        cpu * 1000.0,
        met(scan_mbs >= 250.0)
    );
    drop((blind_egress, blind_pipelock, icpt_egress, icpt_pipelock));
}
