//! Forward-proxy plumbing shared by pipelock and egress: the proxy request's target, hop-by-hop
//! headers, the "checked address" header between the two hops, denial answers, connecting to a
//! checked address and relaying a tunnel with idle and lifetime limits (zero-copy for blind
//! tunnels when the scaffold serves HTTP/1.1 on the raw socket).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{header, HeaderMap, HeaderName, Method, Request, Response, StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::body::Body;
use crate::error::ApiError;

/// The header pipelock adds when it forwards to egress: the address(es) it resolved and
/// checked, comma-separated `ip:port`. Egress connects to exactly these (after checking them
/// again) instead of resolving the name a second time, which closes the DNS-rebinding window
/// between the hops. Both hops strip it from anything they pass on.
pub const CHECKED_ADDR_HEADER: &str = "x-pipelock-addr";

/// Where a proxy request goes: the host as written (lower-cased, without brackets or a trailing
/// dot) and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address literal, normalized by [`crate::ssrf::normalize_host`].
    pub host: String,
    /// Destination port.
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The target of a `CONNECT host:port` or an absolute-form `http://host[:port]/...` request.
/// `None` for anything else (origin-form requests are the daemon's own endpoints).
pub fn target_of<B>(req: &Request<B>) -> Result<Option<Target>, String> {
    if req.method() == Method::CONNECT {
        let authority = req
            .uri()
            .authority()
            .ok_or_else(|| "CONNECT needs host:port".to_string())?;
        let port = authority
            .port_u16()
            .ok_or_else(|| "CONNECT needs an explicit port".to_string())?;
        return Ok(Some(Target {
            host: crate::ssrf::normalize_host(authority.host()),
            port,
        }));
    }
    let uri = req.uri();
    let Some(authority) = uri.authority() else {
        return Ok(None);
    };
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err("send https:// requests through a CONNECT tunnel".into()),
        Some(other) => return Err(format!("unsupported scheme {other}")),
        None => return Err("absolute-form request without a scheme".into()),
    }
    if authority.as_str().contains('@') {
        return Err("userinfo in the request URL is not allowed".into());
    }
    Ok(Some(Target {
        host: crate::ssrf::normalize_host(authority.host()),
        port: authority.port_u16().unwrap_or(80),
    }))
}

/// Remove hop-by-hop headers (RFC 9110 §7.6.1), including those named in `Connection`, and
/// the proxy-only ones. Every proxy hop must do this before forwarding either way.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Parse [`CHECKED_ADDR_HEADER`]'s value. `None` if absent; `Err` if malformed.
pub fn checked_addrs(headers: &HeaderMap) -> Result<Option<Vec<SocketAddr>>, String> {
    let Some(value) = headers.get(CHECKED_ADDR_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| format!("{CHECKED_ADDR_HEADER} is not text"))?;
    let addrs: Result<Vec<SocketAddr>, _> = text.split(',').map(|a| a.trim().parse()).collect();
    match addrs {
        Ok(a) if !a.is_empty() => Ok(Some(a)),
        _ => Err(format!("{CHECKED_ADDR_HEADER} is malformed")),
    }
}

/// Format addresses for [`CHECKED_ADDR_HEADER`].
pub fn format_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// An error answer whose one-line reason is also the status line's reason phrase, so clients
/// that only show the status line of a failed CONNECT (curl, Python's `requests`) still show
/// why: `HTTP/1.1 403 blocked: host not on allowlist: evil.example`.
pub fn deny(err: ApiError, request_id: &str) -> Response<Body> {
    let phrase: String = err
        .message
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect();
    let mut resp = err.into_response(request_id);
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(phrase.into_bytes()) {
        resp.extensions_mut().insert(reason);
    }
    resp
}

/// A 403 with the reason `blocked: <why>`.
pub fn blocked(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "blocked", format!("blocked: {why}"))
}

/// Connect to the first of `addrs` that answers within `timeout` each, in order.
pub async fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to connect");
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(err)) => last = err,
            Err(_) => {
                last = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                )
            }
        }
    }
    Err(last)
}

/// How long a tunnel may live.
#[derive(Debug, Clone, Copy)]
pub struct TunnelLimits {
    /// Close after this long without a byte in either direction.
    pub idle: Duration,
    /// Close after this long regardless.
    pub max_lifetime: Duration,
}

/// How a relayed tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both sides closed (or one failed, which closes the other).
    Closed,
    /// No traffic for [`TunnelLimits::idle`].
    Idle,
    /// [`TunnelLimits::max_lifetime`] elapsed.
    MaxLifetime,
}

/// What a relayed tunnel carried.
#[derive(Debug, Clone, Copy)]
pub struct RelayStats {
    /// Bytes from `a` to `b` (client to server).
    pub up: u64,
    /// Bytes from `b` to `a`.
    pub down: u64,
    /// Why it ended.
    pub end: RelayEnd,
    /// Whether the bytes moved with `splice(2)` (see [`crate::splice`]) rather than through a
    /// user-space buffer.
    pub zero_copy: bool,
}

/// Copy bytes both ways between `a` and `b` (half-closes propagate) until both finish, the
/// tunnel is idle too long or it reaches its maximum lifetime.
pub async fn relay<A, B>(a: A, b: B, limits: TunnelLimits, buffer: usize) -> RelayStats
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Tracked {
        inner: a,
        last: last.clone(),
        started,
        read: 0,
    };
    let mut b = Tracked {
        inner: b,
        last: last.clone(),
        started,
        read: 0,
    };
    let end = {
        let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, buffer, buffer);
        tokio::pin!(copy);
        wait_end(copy, &last, started, limits).await
    };
    RelayStats {
        up: a.read,
        down: b.read,
        end,
        zero_copy: false,
    }
}

/// The client side of a CONNECT tunnel after the upgrade, with the bytes it has sent that
/// are still to go upstream. Taking it apart first lets a proxy look at those bytes (egress
/// reads the TLS ClientHello of a blind tunnel) before anything is relayed.
pub struct TunnelClient {
    io: TunnelIo,
    /// Bytes read from the client that the next hop has not seen yet.
    pending: bytes::BytesMut,
}

enum TunnelIo {
    /// The raw socket (the scaffold ran `http1_only`): relayed zero-copy.
    Raw(TcpStream),
    /// Anything else: relayed by copying.
    Upgraded(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>),
}

impl TunnelClient {
    /// Take apart an upgraded CONNECT request.
    pub fn new(client: hyper::upgrade::Upgraded) -> TunnelClient {
        use hyper_util::rt::TokioIo;
        match client.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => TunnelClient {
                io: TunnelIo::Raw(parts.io.into_inner()),
                pending: bytes::BytesMut::from(&parts.read_buf[..]),
            },
            Err(upgraded) => TunnelClient {
                io: TunnelIo::Upgraded(TokioIo::new(upgraded)),
                pending: bytes::BytesMut::new(),
            },
        }
    }

    /// What the client has sent so far that is still to go upstream.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Read more from the client onto [`TunnelClient::pending`]; `Ok(0)` at its end.
    pub async fn read_more(&mut self) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        self.pending.reserve(4096);
        match &mut self.io {
            TunnelIo::Raw(s) => s.read_buf(&mut self.pending).await,
            TunnelIo::Upgraded(s) => s.read_buf(&mut self.pending).await,
        }
    }

    /// Relay the tunnel: `to_client` bytes the next hop already sent (e.g. past egress's
    /// `200`) go to the client first, the pending bytes upstream first; then zero-copy through
    /// [`crate::splice::relay`] on the raw socket, or [`relay`]'s copying with `buffer` bytes
    /// per direction (also when no pipe can be had).
    pub async fn relay(
        self,
        to_client: bytes::Bytes,
        mut upstream: TcpStream,
        limits: TunnelLimits,
        buffer: usize,
    ) -> RelayStats {
        use tokio::io::AsyncWriteExt;
        let closed = RelayStats {
            up: 0,
            down: 0,
            end: RelayEnd::Closed,
            zero_copy: false,
        };
        let pending = self.pending.freeze();
        match self.io {
            TunnelIo::Raw(mut client) => match crate::splice::Pipes::new() {
                Ok(pipes) => {
                    crate::splice::relay(client, to_client, upstream, pending, pipes, limits).await
                }
                Err(err) => {
                    tracing::debug!(%err, "no pipe for a zero-copy tunnel; copying instead");
                    if client.write_all(&to_client).await.is_err()
                        || upstream.write_all(&pending).await.is_err()
                    {
                        return closed;
                    }
                    relay(client, upstream, limits, buffer).await
                }
            },
            TunnelIo::Upgraded(mut client) => {
                if client.write_all(&to_client).await.is_err()
                    || upstream.write_all(&pending).await.is_err()
                {
                    return closed;
                }
                relay(client, upstream, limits, buffer).await
            }
        }
    }
}

/// Relay a blind CONNECT tunnel: `client` is the upgraded request, `upstream` the next hop,
/// `to_client` bytes the next hop already sent (e.g. past egress's `200`).
///
/// When the server runs with [`crate::http::ServeOptions::http1_only`], the upgrade is the raw
/// client socket: the bytes hyper read past the CONNECT head are sent upstream first and the
/// tunnel is relayed zero-copy by [`crate::splice::relay`]. Otherwise (or when no pipe can be
/// had) it falls back to [`relay`]'s copying with `buffer` bytes per direction. Only for
/// tunnels whose bytes nobody needs to see.
pub async fn relay_upgraded(
    client: hyper::upgrade::Upgraded,
    to_client: bytes::Bytes,
    upstream: TcpStream,
    limits: TunnelLimits,
    buffer: usize,
) -> RelayStats {
    TunnelClient::new(client)
        .relay(to_client, upstream, limits, buffer)
        .await
}

/// Wait for `copy` (a tunnel's relay) to finish, the tunnel to go idle for `limits.idle`
/// (`last` holds the milliseconds after `started` of its last activity) or its lifetime to end.
pub(crate) async fn wait_end<F: std::future::Future + Unpin>(
    mut copy: F,
    last: &AtomicU64,
    started: Instant,
    limits: TunnelLimits,
) -> RelayEnd {
    let deadline = tokio::time::sleep(limits.max_lifetime);
    tokio::pin!(deadline);
    loop {
        let idle_for = started
            .elapsed()
            .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
        let idle_left = limits.idle.saturating_sub(idle_for);
        if idle_left.is_zero() {
            return RelayEnd::Idle;
        }
        tokio::select! {
            _ = &mut copy => return RelayEnd::Closed,
            _ = &mut deadline => return RelayEnd::MaxLifetime,
            _ = tokio::time::sleep(idle_left) => continue,
        }
    }
}

/// A stream that records when it last moved a byte (for the idle limit) and how many it read.
struct Tracked<S> {
    inner: S,
    last: Arc<AtomicU64>,
    started: Instant,
    read: u64,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        self.last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read += n as u64;
            self.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A pooled keep-alive HTTP/1.1 client that sends each request to an address the caller has
/// already checked, keeping the request's own `Host` header (so no second DNS lookup happens).
#[derive(Clone, Debug)]
pub struct DirectClient {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Body,
    >,
}

impl DirectClient {
    /// A client whose connects time out after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> DirectClient {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(64)
                .build(http);
        DirectClient { client }
    }

    /// Send `req` to `addr`. The URI's authority is replaced by the address (the pool is keyed
    /// by it); a missing `Host` header is filled from the original URI first.
    pub async fn send(
        &self,
        mut req: Request<Body>,
        addr: SocketAddr,
    ) -> Result<Response<hyper::body::Incoming>, String> {
        if !req.headers().contains_key(header::HOST) {
            if let Some(Ok(host)) = req
                .uri()
                .authority()
                .map(|a| http::HeaderValue::from_str(a.as_str()))
            {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        *req.uri_mut() = format!("http://{addr}{pq}")
            .parse::<Uri>()
            .map_err(|e| e.to_string())?;
        self.client.request(req).await.map_err(|e| error_chain(&e))
    }
}

/// The message of an error and its sources, for a 502 reason.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Rewrite an absolute-form URI to origin-form (`/path?query`), what an origin server expects.
pub fn origin_form(uri: &Uri) -> Uri {
    let pq = uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("/");
    pq.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let req = Request::connect("Example.COM.:443").body(()).unwrap();
        assert_eq!(
            target_of(&req).unwrap(),
            Some(Target {
                host: "example.com".into(),
                port: 443
            })
        );
        let req = Request::get("http://[::1]/x").body(()).unwrap();
        let t = target_of(&req).unwrap().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert_eq!(t.to_string(), "[::1]:80");
        assert_eq!(
            target_of(&Request::get("/health").body(()).unwrap()).unwrap(),
            None
        );
        assert!(target_of(&Request::get("https://a/").body(()).unwrap()).is_err());
    }

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("proxy-authorization", "Basic x".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[tokio::test]
    async fn relay_closes_idle_tunnels() {
        let (a, _a_peer) = tokio::io::duplex(64);
        let (b, _b_peer) = tokio::io::duplex(64);
        let stats = relay(
            a,
            b,
            TunnelLimits {
                idle: Duration::from_millis(50),
                max_lifetime: Duration::from_secs(5),
            },
            1024,
        )
        .await;
        assert_eq!(stats.end, RelayEnd::Idle);
    }
}
