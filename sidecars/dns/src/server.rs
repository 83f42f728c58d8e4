//! The UDP and TCP loops around [`Responder`].
//!
//! UDP: one datagram in, at most one out; datagrams over [`UDP_MAX`] are dropped. TCP
//! (RFC 7766): 2-byte length-prefixed frames, several per connection, answered in order;
//! each frame must arrive and each answer be taken within [`Limits::tcp_idle`], at most
//! [`Limits::max_tcp_connections`] connections are served at once (further ones are closed at
//! once), and a frame that is not a query closes its connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use sidecars_common::shutdown::Shutdown;

use crate::message::{Responder, Transport, HEADER_LEN, UDP_MAX};

/// Receive buffer of the UDP socket: larger than [`UDP_MAX`] so an oversized datagram is
/// seen as such (and dropped) rather than cut to a plausible size.
const UDP_RECV_BUF: usize = 4096;

/// The TCP bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for the next frame (or for the client to take an answer) before the
    /// connection is closed.
    pub tcp_idle: Duration,
    /// Most TCP connections served at once.
    pub max_tcp_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            tcp_idle: Duration::from_secs(10),
            max_tcp_connections: 64,
        }
    }
}

/// Serve `udp` and `tcp` until `shutdown` fires; open TCP connections are then closed.
pub async fn serve(
    udp: UdpSocket,
    tcp: TcpListener,
    responder: Arc<Responder>,
    limits: Limits,
    shutdown: Shutdown,
) {
    tokio::join!(
        serve_udp(udp, responder.clone(), shutdown.clone()),
        serve_tcp(tcp, responder, limits, shutdown),
    );
}

async fn serve_udp(socket: UdpSocket, responder: Arc<Responder>, shutdown: Shutdown) {
    let mut buf = vec![0u8; UDP_RECV_BUF];
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let (len, peer) = tokio::select! {
            biased;
            () = &mut stop => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(err) => {
                    // Transient (e.g. an ICMP error queued on the socket); never fatal.
                    tracing::debug!(%err, "udp receive failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let Some(packet) = buf.get(..len) else {
            continue;
        };
        if let Some(reply) = responder.respond(packet, Transport::Udp) {
            debug_assert!(reply.len() <= UDP_MAX);
            if let Err(err) = socket.send_to(&reply, peer).await {
                tracing::debug!(%peer, %err, "udp send failed");
            }
        }
    }
}

async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    limits: Limits,
    shutdown: Shutdown,
) {
    let permits = Arc::new(Semaphore::new(limits.max_tcp_connections));
    let mut connections = JoinSet::new();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        connections.spawn(connection(stream, peer, responder.clone(), limits.tcp_idle, permit));
                    }
                    Err(_) => {
                        tracing::debug!(%peer, max = limits.max_tcp_connections, "too many tcp connections; closed a new one");
                        drop(stream);
                    }
                },
                Err(err) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(%err, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    connections.shutdown().await;
}

/// Why a TCP connection ended (debug logs only).
enum End {
    /// The client closed it between frames (a readiness probe does this at once).
    Closed,
    /// No frame (or no progress writing) within the idle timeout.
    Idle,
    /// A frame too short to hold a header, or that is no query.
    NotAQuery,
    /// A read or write failed.
    Io(std::io::Error),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => f.write_str("closed by the client"),
            End::Idle => f.write_str("idle timeout"),
            End::NotAQuery => f.write_str("a frame that is no query"),
            End::Io(err) => write!(f, "i/o error: {err}"),
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    responder: Arc<Responder>,
    idle: Duration,
    _permit: OwnedSemaphorePermit,
) {
    let end = loop {
        let frame = match tokio::time::timeout(idle, read_frame(&mut stream)).await {
            Err(_) => break End::Idle,
            Ok(Err(end)) => break end,
            Ok(Ok(frame)) => frame,
        };
        let Some(reply) = responder.respond(&frame, Transport::Tcp) else {
            break End::NotAQuery;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            break End::NotAQuery;
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&reply);
        match tokio::time::timeout(idle, stream.write_all(&out)).await {
            Err(_) => break End::Idle,
            Ok(Err(err)) => break End::Io(err),
            Ok(Ok(())) => {}
        }
    };
    tracing::debug!(%peer, %end, "tcp connection ended");
}

/// One length-prefixed frame (at most 65535 bytes, the prefix's limit).
async fn read_frame(stream: &mut TcpStream) -> Result<Vec<u8>, End> {
    let mut prefix = [0u8; 2];
    match stream.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => return Err(End::Closed),
        Err(err) => return Err(End::Io(err)),
    }
    let len = usize::from(u16::from_be_bytes(prefix));
    if len < HEADER_LEN {
        return Err(End::NotAQuery);
    }
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame).await.map_err(End::Io)?;
    Ok(frame)
}
