//! Black-box tests of the HTTP scaffold over real TCP on 127.0.0.1:0.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use sidecars_common::body::{empty, json, read_limited, Body, ReadBodyError};
use sidecars_common::error::ApiError;
use sidecars_common::http::{serve, Handler, RequestContext, ServeOptions};
use sidecars_common::proxy::{relay_upgraded, RelayEnd, RelayStats, TunnelLimits};
use sidecars_common::shutdown::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

struct Echo;

impl Handler for Echo {
    async fn handle(&self, req: Request<Incoming>, ctx: RequestContext) -> Response<Body> {
        match req.uri().path() {
            "/health" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
            "/slow" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                json(StatusCode::OK, &serde_json::json!({"slow": true}))
            }
            "/upload" => {
                let (parts, body) = req.into_parts();
                match read_limited(&parts.headers, body, 16).await {
                    Ok(bytes) => json(StatusCode::OK, &serde_json::json!({"len": bytes.len()})),
                    Err(ReadBodyError::TooLarge { limit }) => ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("over {limit}"),
                    )
                    .into_response(&ctx.request_id),
                    Err(err) => ApiError::new(StatusCode::BAD_REQUEST, "io", err.to_string())
                        .into_response(&ctx.request_id),
                }
            }
            _ => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such path")
                .into_response(&ctx.request_id),
        }
    }
}

async fn start() -> (
    std::net::SocketAddr,
    sidecars_common::shutdown::ShutdownTrigger,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    start_with(Echo, false).await
}

async fn start_with<H: Handler>(
    handler: H,
    http1_only: bool,
) -> (
    std::net::SocketAddr,
    sidecars_common::shutdown::ShutdownTrigger,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (trigger, shutdown) = Shutdown::new();
    let mut opts = ServeOptions::new("test");
    opts.drain_timeout = Duration::from_secs(5);
    opts.http1_only = http1_only;
    let task = tokio::spawn(serve(listener, Arc::new(handler), opts, shutdown));
    (addr, trigger, task)
}

/// A minimal blind CONNECT proxy on the scaffold, reporting each tunnel's stats.
struct Connect {
    stats: mpsc::UnboundedSender<RelayStats>,
}

impl Handler for Connect {
    async fn handle(&self, mut req: Request<Incoming>, _ctx: RequestContext) -> Response<Body> {
        let target = req
            .uri()
            .authority()
            .expect("CONNECT authority")
            .to_string();
        let upstream = TcpStream::connect(target).await.expect("connect upstream");
        let on_upgrade = hyper::upgrade::on(&mut req);
        let stats = self.stats.clone();
        tokio::spawn(async move {
            let upgraded = on_upgrade.await.expect("upgrade");
            let limits = TunnelLimits {
                idle: Duration::from_secs(10),
                max_lifetime: Duration::from_secs(20),
            };
            let s =
                relay_upgraded(upgraded, Bytes::from_static(b"hi "), upstream, limits, 1024).await;
            let _ = stats.send(s);
        });
        Response::new(empty())
    }
}

/// The client sends the CONNECT head and its first payload bytes in ONE write (so the
/// scaffold reads them past the head), more bytes, then half-closes. The upstream answers
/// only after it has seen EOF, which proves the half-close crossed the tunnel while the other
/// direction stayed open; the answer must reach the client after the proxy's read-ahead.
async fn tunnel_round_trip(http1_only: bool) -> RelayStats {
    let up = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up_addr = up.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut s, _) = up.accept().await.expect("accept");
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.expect("read to EOF");
        s.write_all(format!("saw {}", String::from_utf8_lossy(&got)).as_bytes())
            .await
            .expect("reply");
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (addr, trigger, task) = start_with(Connect { stats: tx }, http1_only).await;
    let mut client = TcpStream::connect(addr).await.expect("connect");
    client
        .write_all(
            format!("CONNECT {up_addr} HTTP/1.1\r\nHost: {up_addr}\r\n\r\nearly-bytes;").as_bytes(),
        )
        .await
        .expect("write head + payload");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(client.read(&mut b).await.expect("read head"), 1);
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    client.write_all(b"late-bytes").await.expect("write");
    client.shutdown().await.expect("half-close");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut got))
        .await
        .expect("tunnel answered in time")
        .expect("read");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "hi saw early-bytes;late-bytes"
    );
    let stats = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("relay ended")
        .expect("stats");
    trigger.trigger();
    task.await.expect("join").expect("serve");
    stats
}

#[tokio::test]
async fn http1_only_tunnels_are_zero_copy_with_read_ahead_and_half_close() {
    let stats = tunnel_round_trip(true).await;
    assert!(stats.zero_copy, "the raw socket was not handed back");
    assert_eq!(stats.end, RelayEnd::Closed);
    assert_eq!(stats.up, "early-bytes;late-bytes".len() as u64);
    assert_eq!(stats.down, "hi saw early-bytes;late-bytes".len() as u64);
}

#[tokio::test]
async fn auto_builder_tunnels_fall_back_to_copying_with_the_same_bytes() {
    let stats = tunnel_round_trip(false).await;
    assert!(!stats.zero_copy);
    assert_eq!(stats.end, RelayEnd::Closed);
}

async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test]
async fn health_and_request_id() {
    let (addr, trigger, task) = start().await;
    let resp = raw(
        addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("x-request-id: "),
        "{resp}"
    );
    assert!(resp.contains(r#"{"status":"ok"}"#), "{resp}");
    // A sane incoming id is echoed so callers can correlate across hops.
    let resp = raw(
        addr,
        "GET /health HTTP/1.1\r\nHost: x\r\nx-request-id: abc-123\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.contains("x-request-id: abc-123"), "{resp}");
    // A hostile one is replaced.
    let resp = raw(
        addr,
        "GET /nope HTTP/1.1\r\nHost: x\r\nx-request-id: a b\"c\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    assert!(!resp.contains("a b\"c"), "{resp}");
    assert!(resp.contains(r#""error":"not_found""#), "{resp}");
    trigger.trigger();
    task.await.expect("join").expect("serve");
}

#[tokio::test]
async fn body_limit_answers_413() {
    let (addr, trigger, task) = start().await;
    let resp = raw(addr, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nConnection: close\r\n\r\n0123456789012345678901234567890123456789").await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    let resp = raw(addr, "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n14\r\n01234567890123456789\r\n0\r\n\r\n").await;
    assert!(
        resp.starts_with("HTTP/1.1 413"),
        "chunked over the limit: {resp}"
    );
    let resp = raw(
        addr,
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd",
    )
    .await;
    assert!(resp.contains(r#"{"len":4}"#), "{resp}");
    trigger.trigger();
    task.await.expect("join").expect("serve");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
    drains_in_flight_requests(false).await;
}

#[tokio::test]
async fn http1_only_shutdown_lets_in_flight_requests_finish_and_stops_accepting() {
    drains_in_flight_requests(true).await;
}

async fn drains_in_flight_requests(http1_only: bool) {
    let (addr, trigger, task) = start_with(Echo, http1_only).await;
    let slow = tokio::spawn(raw(
        addr,
        "GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    trigger.trigger();
    let resp = slow.await.expect("join");
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "in-flight request was cut: {resp}"
    );
    tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("serve returned after drain")
        .expect("join")
        .expect("serve");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
