//! init's relay of a jailed handler's proxy connections to pipelock.
//!
//! The handler's jail has a loopback only; its proxy variables name a listener on it that the
//! jailed child created and handed to init ([`crate::spawn::StartedHandler`]). A socket keeps
//! the network namespace it was made in, so init accepts there while connecting out from the
//! sidecars container's own namespace — to pipelock's pack listener and nowhere else, with a
//! preamble naming the pack and the call ([`bottle_spec::pack_proxy`]). The relay ends with the
//! call: aborting its task drops the listener and every connection.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use bottle_spec::pack_proxy::{preamble, Origin};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Connections one call may have open through the relay at once; more are closed at accept.
pub const MAX_CONNECTIONS_PER_CALL: usize = 32;

/// Starts relaying `listener`'s connections to `pipelock` as `origin`.
pub fn start(
    listener: OwnedFd,
    pipelock: SocketAddr,
    origin: Origin,
) -> std::io::Result<JoinHandle<()>> {
    let std_listener = std::net::TcpListener::from(listener);
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    Ok(tokio::spawn(serve(listener, pipelock, origin)))
}

async fn serve(listener: TcpListener, pipelock: SocketAddr, origin: Origin) {
    let line = preamble(&origin);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((conn, _)) = accepted else { continue };
                if conns.len() >= MAX_CONNECTIONS_PER_CALL {
                    tracing::warn!(pack = %origin.pack, call = %origin.call_id, "a handler has {MAX_CONNECTIONS_PER_CALL} proxy connections open; closing a new one");
                    continue;
                }
                let line = line.clone();
                conns.spawn(relay(conn, pipelock, line));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn relay(mut conn: TcpStream, pipelock: SocketAddr, line: String) {
    let Ok(mut up) = TcpStream::connect(pipelock).await else {
        tracing::warn!("cannot reach pipelock's pack listener at {pipelock}; a handler's proxy connection is closed");
        return;
    };
    let _ = conn.set_nodelay(true);
    let _ = up.set_nodelay(true);
    if up.write_all(line.as_bytes()).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
}
