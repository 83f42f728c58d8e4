//! Zero-copy tunnel relay: bytes move socket → pipe → socket with `splice(2)` and never enter
//! user space.
//!
//! A blind tunnel (pipelock's CONNECT, egress's tunnel to a host it does not intercept) has no
//! reason to look at its bytes, yet copying them through a user-space buffer costs two copies
//! and two syscalls per chunk per hop. Here each direction owns a pipe: one `splice` moves what
//! the source socket has into the pipe (page references, not copies, on Linux), a second moves
//! the pipe's contents into the destination socket. Sockets stay non-blocking and tokio's
//! readiness API (`readable()`/`writable()` + `try_io`) drives the calls, so a tunnel costs no
//! thread. nix wraps the syscalls safely; this module needs no `unsafe`.
//!
//! Semantics match [`crate::proxy::relay`]: half-closes propagate (when one side stops sending,
//! the other side's write half is shut down and the opposite direction goes on), an error in
//! either direction ends the tunnel, and the idle and lifetime limits apply.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::sys::socket::{shutdown, Shutdown};
use nix::unistd::pipe2;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::proxy::{wait_end, RelayStats, TunnelLimits};

/// Bytes asked of one `splice` call. The pipe takes what fits (64 KiB by default).
const CHUNK: usize = 1 << 20;

/// One pipe per direction of a tunnel.
pub struct Pipes {
    up: Pipe,
    down: Pipe,
}

struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

/// The smallest pipe worth splicing through. An unprivileged user past
/// `/proc/sys/fs/pipe-user-pages-soft` (16,384 pages per user by default, i.e. about 256
/// tunnels through both hops when pipelock and egress share a uid) gets 2-page pipes; moving
/// 8 KiB per syscall pair is slower than copying with a 64 KiB buffer, so those tunnels copy.
const MIN_PIPE: usize = 64 * 1024;

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let size = fcntl(write.as_raw_fd(), FcntlArg::F_GETPIPE_SZ)?;
        if (size as usize) < MIN_PIPE {
            return Err(io::Error::other(format!(
                "pipe of {size} bytes (per-user pipe limit reached)"
            )));
        }
        Ok(Pipe { read, write })
    }
}

impl Pipes {
    /// The two pipes a tunnel needs. Fails when the process is out of file descriptors or the
    /// user is past its pipe-memory soft limit; the caller then relays by copying instead.
    pub fn new() -> io::Result<Pipes> {
        Ok(Pipes {
            up: Pipe::new()?,
            down: Pipe::new()?,
        })
    }
}

/// Relay between `a` (the client) and `b` (the server) until both directions end, either
/// fails, the tunnel is idle for `limits.idle` or reaches `limits.max_lifetime`. `to_a` and
/// `to_b` are bytes already read from the other side (read-ahead past an HTTP head); they are
/// sent first, in order, and counted.
pub async fn relay(
    a: TcpStream,
    to_a: Bytes,
    b: TcpStream,
    to_b: Bytes,
    pipes: Pipes,
    limits: TunnelLimits,
) -> RelayStats {
    let started = Instant::now();
    let last = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let end = {
        let both = async {
            let up = pump(&a, &b, to_b, &pipes.up, &up, &last, started);
            let down = pump(&b, &a, to_a, &pipes.down, &down, &last, started);
            // Like `copy_bidirectional`: the first error ends both directions.
            let _ = tokio::try_join!(up, down);
        };
        tokio::pin!(both);
        wait_end(both, &last, started, limits).await
    };
    RelayStats {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        end,
        zero_copy: true,
    }
}

/// One direction: `pending`, then everything `from` sends, into `to`; then shut down `to`'s
/// write half so its peer sees the end of this direction.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    pending: Bytes,
    pipe: &Pipe,
    moved: &AtomicU64,
    last: &AtomicU64,
    started: Instant,
) -> io::Result<()> {
    let touch = || last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    let mut pending = pending;
    while !pending.is_empty() {
        to.writable().await?;
        match to.try_write(&pending) {
            Ok(n) => {
                let _ = pending.split_to(n);
                moved.fetch_add(n as u64, Ordering::Relaxed);
                touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
    loop {
        // The pipe is empty here, so `EAGAIN` can only mean "the socket has nothing yet".
        from.readable().await?;
        let n = match from.try_io(Interest::READABLE, || {
            Ok(splice(
                from.as_fd(),
                None,
                pipe.write.as_fd(),
                None,
                CHUNK,
                flags,
            )?)
        }) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        touch();
        // Drain the pipe completely before reading more; the pipe holds `n` bytes, so
        // `EAGAIN` can only mean "the socket's send buffer is full".
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                Ok(splice(
                    pipe.read.as_fd(),
                    None,
                    to.as_fd(),
                    None,
                    left,
                    flags,
                )?)
            }) {
                Ok(m) => {
                    left -= m;
                    moved.fetch_add(m as u64, Ordering::Relaxed);
                    touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
    // Half-close: the peer reads EOF; the other direction keeps going.
    match shutdown(to.as_raw_fd(), Shutdown::Write) {
        Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::RelayEnd;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    fn limits(idle_ms: u64, life_ms: u64) -> TunnelLimits {
        TunnelLimits {
            idle: Duration::from_millis(idle_ms),
            max_lifetime: Duration::from_millis(life_ms),
        }
    }

    #[tokio::test]
    async fn pending_bytes_first_then_half_close_both_ways() {
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let relay = tokio::spawn(relay(
            a,
            Bytes::from_static(b"early-down "),
            b,
            Bytes::from_static(b"early-up "),
            Pipes::new().unwrap(),
            limits(5_000, 10_000),
        ));
        client.write_all(b"more-up").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), server.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"early-up more-up");
        // The client's half-close reached the server; the other direction still works.
        server.write_all(b"reply").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"early-down reply");
        let stats = relay.await.unwrap();
        assert_eq!((stats.up, stats.down), (16, 16));
        assert_eq!(stats.end, RelayEnd::Closed);
        assert!(stats.zero_copy);
    }

    #[tokio::test]
    async fn idle_and_lifetime_limits_end_the_relay() {
        let (_client, a) = pair().await;
        let (b, _server) = pair().await;
        let stats = relay(
            a,
            Bytes::new(),
            b,
            Bytes::new(),
            Pipes::new().unwrap(),
            limits(50, 5_000),
        )
        .await;
        assert_eq!(stats.end, RelayEnd::Idle);

        // Steady traffic is not idle, but the lifetime still ends it.
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while server.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
        });
        tokio::spawn(async move {
            while client.write_all(b"tick").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let started = Instant::now();
        let stats = relay(
            a,
            Bytes::new(),
            b,
            Bytes::new(),
            Pipes::new().unwrap(),
            limits(100, 400),
        )
        .await;
        assert_eq!(stats.end, RelayEnd::MaxLifetime);
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert!(stats.up > 0);
    }
}
