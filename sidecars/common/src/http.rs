//! The HTTP server scaffold every daemon runs on (hyper 1 + hyper-util).
//!
//! It owns the parts that are the same everywhere: the accept loop, HTTP/1.1 and HTTP/2 with
//! upgrades (pipelock's `CONNECT` needs them; [`ServeOptions::http1_only`] serves HTTP/1.1 on
//! the raw socket so tunnels can be relayed zero-copy), a request id on every request (taken
//! from a sane incoming `x-request-id` or minted), one access-log line per request, and
//! graceful shutdown: stop accepting, let in-flight requests finish within a drain timeout,
//! then return.
//! Daemons implement [`Handler`] and never touch sockets or connection builders.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::body::Body;
use crate::shutdown::Shutdown;

/// The header carrying the request id in both directions.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What a handler knows about the request besides the request itself.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The id logged with this request and returned in `x-request-id` and error bodies.
    pub request_id: String,
    /// The TCP peer (egress uses it for its allow-from ACL).
    pub peer: SocketAddr,
    /// Fires when the daemon begins shutting down (long-polls end early on it).
    pub shutdown: Shutdown,
}

/// A daemon's request handler. Implementations are shared across connections behind an `Arc`.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request. Errors are responses too (see [`crate::error::ApiError`]).
    fn handle(
        &self,
        req: Request<Incoming>,
        ctx: RequestContext,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Knobs of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The daemon's name, for log lines.
    pub name: &'static str,
    /// How long in-flight requests may run after shutdown begins before connections are cut.
    pub drain_timeout: Duration,
    /// Whether to log one line per request (proxies log their own, richer lines).
    pub access_log: bool,
    /// Serve HTTP/1.1 only, with hyper's own HTTP/1 connection on the raw socket instead of
    /// hyper-util's auto (HTTP/1 + HTTP/2) builder. The auto builder wraps every socket to
    /// sniff the protocol, so an upgraded connection (a `CONNECT` tunnel) can never be taken
    /// back as the `TcpStream`; with this on, `Upgraded::downcast::<TokioIo<TcpStream>>()`
    /// succeeds and proxies can relay tunnels zero-copy (see [`crate::proxy::relay_upgraded`]).
    /// Off by default; the proxies turn it on (no proxy client speaks HTTP/2 to a proxy).
    pub http1_only: bool,
}

impl ServeOptions {
    /// Defaults: 10 s drain, access log on, HTTP/1.1 and HTTP/2.
    pub fn new(name: &'static str) -> Self {
        ServeOptions {
            name,
            drain_timeout: Duration::from_secs(10),
            access_log: true,
            http1_only: false,
        }
    }
}

/// Serve `handler` on `listener` until `shutdown` fires, then drain in-flight requests for at
/// most `opts.drain_timeout` and return. Returns an error only if accepting fails fatally.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    opts: ServeOptions,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let http1 = http1::Builder::new();
    // Connections of the HTTP/1-only mode hold a clone each; the drain waits for all to drop
    // (hyper-util's `GracefulShutdown` cannot watch an upgradeable HTTP/1 connection).
    let (http1_alive, mut http1_drained) = mpsc::channel::<()>(1);
    let local = listener.local_addr()?;
    tracing::info!(daemon = opts.name, addr = %local, "listening");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE/ECONNABORTED and friends are transient: log, back off, go on.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let shutdown_for_conn = shutdown.clone();
        let access_log = opts.access_log;
        let service = service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            let shutdown = shutdown_for_conn.clone();
            async move {
                let started = Instant::now();
                let request_id = request_id_from(&req);
                let method = req.method().clone();
                // Only the path: query strings may carry secrets and must never be logged.
                let path = if method == http::Method::CONNECT {
                    req.uri()
                        .authority()
                        .map(|a| a.to_string())
                        .unwrap_or_default()
                } else {
                    req.uri().path().to_string()
                };
                let ctx = RequestContext {
                    request_id: request_id.clone(),
                    peer,
                    shutdown,
                };
                let mut resp = handler.handle(req, ctx).await;
                if let Ok(value) = HeaderValue::from_str(&request_id) {
                    resp.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                if access_log {
                    let status = resp.status().as_u16();
                    let ms = format!("{:.3}", started.elapsed().as_secs_f64() * 1000.0);
                    // Health probes arrive every second from sidecar-init and Docker: keep them
                    // out of the default log unless they fail.
                    if path == "/health" && status == 200 {
                        tracing::debug!(request_id = %request_id, %method, path = %path, status, ms = %ms, "request");
                    } else {
                        tracing::info!(request_id = %request_id, %method, path = %path, status, ms = %ms, "request");
                    }
                }
                Ok::<_, Infallible>(resp)
            }
        });
        if opts.http1_only {
            let conn = http1
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let alive = http1_alive.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _alive = alive;
                tokio::pin!(conn);
                let result = tokio::select! {
                    result = conn.as_mut() => result,
                    _ = shutdown.wait() => {
                        // Finish the request in flight, then close (like `GracefulShutdown`).
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(err) = result {
                    tracing::debug!(%peer, err = %err, "connection ended with an error");
                }
            });
            continue;
        }
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%peer, err = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(http1_alive);
    tracing::info!(daemon = opts.name, "draining in-flight requests");
    let all_closed = async {
        graceful.shutdown().await;
        // `None` once every HTTP/1-only connection task has ended.
        let _ = http1_drained.recv().await;
    };
    tokio::select! {
        _ = all_closed => tracing::info!(daemon = opts.name, "all connections closed"),
        _ = tokio::time::sleep(opts.drain_timeout) => {
            tracing::warn!(daemon = opts.name, timeout_ms = opts.drain_timeout.as_millis() as u64, "drain timeout; closing remaining connections");
        }
    }
    Ok(())
}

/// Take a well-formed incoming request id (so a caller can correlate across hops) or mint one.
fn request_id_from<B>(req: &Request<B>) -> String {
    req.headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

/// A fresh request id: 16 hex digits, a per-process random prefix plus a counter, so ids are
/// unique within a process and unlikely to collide across restarts.
pub fn new_request_id() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:016x}",
        seed.rotate_left(17) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    )
}
