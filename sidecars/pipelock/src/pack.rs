//! The pack listener: pack handlers' traffic, relayed by sidecar-init from each call's jail.
//!
//! Every connection starts with one preamble line naming the pack and the call
//! ([`bottle_spec::pack_proxy`]); then it is an ordinary proxy connection, checked exactly as
//! the agent's (DLP, allowlist — `pack_allow` when set —, rate limit, SSRF), and every log line
//! of it carries the pack's name and call id. The listener is on loopback: only processes of
//! the sidecars container reach it, and a handler's jail has no route to it except init's relay.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bottle_spec::pack_proxy::{parse, Origin, MAX_PREAMBLE_BYTES};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::TokioIo;
use sidecars_common::http::{new_request_id, RequestContext};
use sidecars_common::shutdown::Shutdown;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::Instrument;

use crate::Pipelock;

/// How long a relayed connection may take to send its preamble.
pub const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves pack traffic on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, pipelock: Arc<Pipelock>, shutdown: Shutdown) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(daemon = "pipelock", %addr, "listening for pack traffic");
    }
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(%err, "pack listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let pipelock = pipelock.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut stream = stream;
            let origin = match tokio::time::timeout(PREAMBLE_TIMEOUT, read_preamble(&mut stream))
                .await
            {
                Ok(Ok(origin)) => origin,
                Ok(Err(why)) => {
                    tracing::warn!(%peer, "pack listener: refused a connection: {why}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "pack listener: no preamble within {PREAMBLE_TIMEOUT:?}");
                    return;
                }
            };
            let span = tracing::info_span!("pack", pack = %origin.pack, call = %origin.call_id);
            serve_connection(stream, peer, pipelock, shutdown)
                .instrument(span)
                .await;
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    pipelock: Arc<Pipelock>,
    shutdown: Shutdown,
) {
    let _ = stream.set_nodelay(true);
    let span = tracing::Span::current();
    let service = service_fn(move |req: Request<Incoming>| {
        let pipelock = pipelock.clone();
        let ctx = RequestContext {
            request_id: new_request_id(),
            peer,
            shutdown: shutdown.clone(),
        };
        async move { Ok::<_, Infallible>(pipelock.serve_request(req, ctx, true).await) }
            .instrument(span.clone())
    });
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(err) = conn.await {
        tracing::debug!(%peer, %err, "pack connection ended with an error");
    }
}

/// Reads exactly the preamble line (peeking first, so not a byte of the proxy request is
/// consumed with it).
async fn read_preamble(stream: &mut TcpStream) -> Result<Origin, String> {
    let mut buf = [0u8; MAX_PREAMBLE_BYTES];
    loop {
        let n = stream.peek(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the preamble".into());
        }
        if let Some(end) = buf[..n].iter().position(|&b| b == b'\n') {
            let line = std::str::from_utf8(&buf[..end])
                .map_err(|_| "the preamble is not UTF-8".to_string())?
                .to_string();
            let mut consumed = vec![0u8; end + 1];
            stream
                .read_exact(&mut consumed)
                .await
                .map_err(|e| e.to_string())?;
            return parse(&line);
        }
        if n == buf.len() {
            return Err(format!(
                "no preamble in the first {MAX_PREAMBLE_BYTES} bytes"
            ));
        }
        // Only part of the line has arrived: wait for more.
        stream.readable().await.map_err(|e| e.to_string())?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
