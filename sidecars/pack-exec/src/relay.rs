//! `sidecars pack-exec-relay`: one connection between this process's stdin/stdout and one of
//! pack-exec's listeners on the container's loopback.
//!
//! Why: the control plane reaches a bottle's pack-exec through the Docker Engine (an exec in
//! the sidecars container, which whoever holds the Docker socket may do anyway), not through a
//! port published on the host. So the operator listener binds the container's loopback only —
//! no other container, the agent's included, and no host user can reach it — and a control
//! plane that runs as a container on a bridge network reaches bottles as well as one on the
//! host. The relay connects only to loopback, to one of the two fixed ports: it is not a way to
//! open arbitrary connections.
//!
//! Exit codes: 0 once pack-exec closed the connection, 1 when it cannot connect or the copy
//! fails, 2 usage.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use argh::FromArgs;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Relay stdin/stdout to pack-exec's agent listener (or, with --operator, its operator
/// listener) on 127.0.0.1.
#[derive(FromArgs)]
#[argh(subcommand, name = "pack-exec-relay")]
pub struct Args {
    /// the operator listener (install, delete) instead of the agent listener
    #[argh(switch)]
    pub operator: bool,
}

/// The loopback address of the listener `args` names.
pub fn target(args: &Args) -> SocketAddr {
    let port = if args.operator {
        bottle_spec::PACK_EXEC_OPERATOR_PORT
    } else {
        bottle_spec::Daemon::PackExec.port()
    };
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Copy both ways until pack-exec closes its side (the control plane sends
/// `Connection: close`), so the relay never waits on a stdin that stays open.
pub async fn relay<I, O>(addr: SocketAddr, stdin: I, mut stdout: O) -> std::io::Result<()>
where
    I: tokio::io::AsyncRead + Unpin,
    O: tokio::io::AsyncWrite + Unpin,
{
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut from_daemon, mut to_daemon) = stream.into_split();
    let mut stdin = BufReader::new(stdin);
    let upstream = async {
        tokio::io::copy_buf(&mut stdin, &mut to_daemon).await?;
        // stdin ended: half-close, and keep reading the answer.
        to_daemon.shutdown().await?;
        std::future::pending::<std::io::Result<()>>().await
    };
    let downstream = async {
        tokio::io::copy(&mut from_daemon, &mut stdout).await?;
        stdout.flush().await
    };
    tokio::select! {
        done = downstream => done,
        failed = upstream => failed,
    }
}

/// `sidecars pack-exec-relay`.
pub fn main(args: Args) -> ExitCode {
    let addr = target(&args);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pack-exec-relay: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(relay(addr, tokio::io::stdin(), tokio::io::stdout())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pack-exec-relay: {addr}: {e} (is pack-exec running in this container?)");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn bytes_go_both_ways_and_the_relay_ends_when_the_daemon_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; 5];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(b"answer to ").await.unwrap();
            s.write_all(&got).await.unwrap();
            // Closes while the client's stdin is still open.
        });
        // A stdin that never ends after its first bytes.
        let (mut client_in, relay_in) = tokio::io::duplex(64);
        client_in.write_all(b"hello").await.unwrap();
        let mut out = Vec::new();
        relay(addr, relay_in, &mut out).await.unwrap();
        server.await.unwrap();
        assert_eq!(out, b"answer to hello");
        drop(client_in);
    }

    #[tokio::test]
    async fn nothing_listening_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = relay(addr, tokio::io::empty(), tokio::io::sink())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn it_reaches_only_the_two_listeners_on_loopback() {
        let agent = target(&Args { operator: false });
        let operator = target(&Args { operator: true });
        assert!(agent.ip().is_loopback() && operator.ip().is_loopback());
        assert_eq!(agent.port(), bottle_spec::Daemon::PackExec.port());
        assert_eq!(operator.port(), bottle_spec::PACK_EXEC_OPERATOR_PORT);
    }
}
