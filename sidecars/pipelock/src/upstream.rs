//! The next hop: egress (the bundle's normal case) or the destination itself (`upstream: null`).
//!
//! Tunnels: with egress, pipelock opens a TCP connection to egress and sends
//! `CONNECT host:port` with the addresses it resolved and checked in `X-Pipelock-Addr`; egress
//! checks them again and connects to exactly those, so neither hop resolves the name twice.
//! Plain HTTP: requests go to egress in absolute form with the same header, over a pooled
//! keep-alive client; directly, they go to the checked address with the original `Host`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{StatusCode, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sidecars_common::body::Body;
use sidecars_common::proxy::{
    connect_any, error_chain, format_addrs, DirectClient, Target, CHECKED_ADDR_HEADER,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Split `host:port` (`[v6]:port` too).
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Why the next hop could not be reached, or refused.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect (or the CONNECT handshake) failed.
    #[error("{0}")]
    Io(String),
    /// egress answered the CONNECT with an error status; its reason is passed on.
    #[error("{reason}")]
    Refused {
        /// egress's status.
        status: StatusCode,
        /// egress's one-line reason.
        reason: String,
    },
}

/// A tunnel to the destination: the stream, plus any bytes egress sent after its `200`.
pub struct Tunnel {
    /// The connected stream (to egress, already past its CONNECT answer, or to the destination).
    pub stream: TcpStream,
    /// Bytes already read past the CONNECT answer (server-speaks-first protocols).
    pub leftover: Bytes,
}

/// Open a tunnel to `target` (whose checked addresses are `addrs`), through `egress` if set.
pub async fn open_tunnel(
    egress: Option<&str>,
    target: &Target,
    addrs: &[SocketAddr],
    request_id: &str,
    timeout: Duration,
) -> Result<Tunnel, UpstreamError> {
    let Some(egress) = egress else {
        let stream = connect_any(addrs, timeout)
            .await
            .map_err(|e| UpstreamError::Io(format!("cannot connect to {target}: {e}")))?;
        return Ok(Tunnel {
            stream,
            leftover: Bytes::new(),
        });
    };
    let mut stream = connect_egress(egress, timeout).await?;
    let head = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{CHECKED_ADDR_HEADER}: {}\r\nx-request-id: {request_id}\r\n\r\n",
        format_addrs(addrs)
    );
    let io = |e: std::io::Error| UpstreamError::Io(format!("egress: {e}"));
    stream.write_all(head.as_bytes()).await.map_err(io)?;
    // egress answers after it has connected upstream, which is bounded by its own timeout.
    let (status, reason, leftover) =
        tokio::time::timeout(timeout * 3, read_response_head(&mut stream))
            .await
            .map_err(|_| UpstreamError::Io("egress did not answer the CONNECT in time".into()))??;
    if status != StatusCode::OK {
        return Err(UpstreamError::Refused { status, reason });
    }
    Ok(Tunnel { stream, leftover })
}

async fn connect_egress(egress: &str, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(egress)
        .await
        .map_err(|e| UpstreamError::Io(format!("cannot resolve egress {egress}: {e}")))?
        .collect();
    connect_any(&addrs, timeout)
        .await
        .map_err(|e| UpstreamError::Io(format!("cannot connect to egress {egress}: {e}")))
}

/// Read an HTTP response head; returns status, reason phrase and any bytes after the head.
async fn read_response_head(
    stream: &mut TcpStream,
) -> Result<(StatusCode, String, Bytes), UpstreamError> {
    const MAX_HEAD: usize = 16 * 1024;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| UpstreamError::Io(format!("egress: {e}")))?;
        if n == 0 {
            return Err(UpstreamError::Io("egress closed the connection".into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = resp
                    .code
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::BAD_GATEWAY);
                let reason = resp.reason.unwrap_or("").to_string();
                let leftover = buf.split_off(len).freeze();
                return Ok((status, reason, leftover));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(UpstreamError::Io("egress sent an oversized answer".into()))
            }
            Err(e) => return Err(UpstreamError::Io(format!("egress sent a bad answer: {e}"))),
        }
    }
}

/// The pooled keep-alive HTTP client for plain-HTTP requests to the next hop.
#[derive(Clone)]
pub enum Forwarder {
    /// To the destination's checked address.
    Direct(DirectClient),
    /// To egress, in absolute form.
    Egress(Client<EgressConnector, Body>),
}

impl Forwarder {
    /// A client for `egress` (or direct when `None`).
    pub fn new(egress: Option<&str>, connect_timeout: Duration) -> Forwarder {
        match egress {
            None => Forwarder::Direct(DirectClient::new(connect_timeout)),
            Some(addr) => Forwarder::Egress(
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .pool_max_idle_per_host(64)
                    .build(EgressConnector {
                        addr: addr.to_string(),
                        timeout: connect_timeout,
                    }),
            ),
        }
    }

    /// Send `req` (absolute-form URI, hop-by-hop headers already stripped) to the destination
    /// whose checked addresses are `addrs`.
    pub async fn send(
        &self,
        mut req: http::Request<Body>,
        target: &Target,
        addrs: &[SocketAddr],
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        match self {
            Forwarder::Direct(client) => {
                let addr = *addrs.first().ok_or("no address")?;
                client
                    .send(req, addr)
                    .await
                    .map_err(|e| format!("cannot reach {target}: {e}"))
            }
            Forwarder::Egress(client) => {
                if let Ok(v) = format_addrs(addrs).parse() {
                    req.headers_mut().insert(CHECKED_ADDR_HEADER, v);
                }
                client
                    .request(req)
                    .await
                    .map_err(|e| format!("egress: {}", error_chain(&e)))
            }
        }
    }
}

/// A connector that always dials egress and marks the connection as a proxy, so the client
/// sends absolute-form request targets.
#[derive(Clone, Debug)]
pub struct EgressConnector {
    addr: String,
    timeout: Duration,
}

impl tower_service::Service<Uri> for EgressConnector {
    type Response = ProxyStream;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyStream, UpstreamError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        let addr = self.addr.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let stream = connect_egress(&addr, timeout).await?;
            Ok(ProxyStream(TokioIo::new(stream)))
        })
    }
}

/// A TCP connection to a proxy (see [`EgressConnector`]).
pub struct ProxyStream(TokioIo<TcpStream>);

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        Connected::new().proxy(true)
    }
}

impl hyper::rt::Read for ProxyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ProxyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        assert_eq!(
            parse_host_port("egress:9099"),
            Some(("egress".into(), 9099))
        );
        assert_eq!(parse_host_port("[::1]:9"), Some(("::1".into(), 9)));
        assert_eq!(parse_host_port("egress"), None);
        assert_eq!(parse_host_port(":9"), None);
    }
}
