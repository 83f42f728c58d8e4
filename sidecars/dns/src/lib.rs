//! dns: the bottle's DNS responder, the agent's only resolver.
//!
//! The agent's `dns:` points at this responder, so Docker's embedded resolver (which answers
//! the bottle's container names itself) sends it every other name. It answers the few names
//! of its config and refuses every other name at once (REFUSED): nothing is ever forwarded,
//! so no lookup — and no data hidden in a name, `<hex-secret>.attacker.example` — leaves the
//! bottle, whatever Docker would otherwise do (CVE-2024-29018). See `docs/dns.md`.
//!
//! # Layout
//! | module | job |
//! | --- | --- |
//! | [`config`] | `dns.json`: listen address, the bottle's names and addresses, TTL |
//! | [`names`] | the name table, and the only rendering of a queried name fit for a log line |
//! | [`message`] | one message in, at most one out: answers, NODATA, REFUSED, FORMERR, truncation |
//! | [`refusals`] | the rate-limited log line of a refused query |
//! | [`server`] | the UDP and TCP (length-prefixed) loops, their bounds |
//! | [`cli`] | `sidecars dns`: the daemon's entry point |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod message;
pub mod names;
pub mod refusals;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};

use sidecars_common::shutdown::Shutdown;

pub use config::Config;
pub use message::{Outcome, Responder, Transport};
pub use server::Limits;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The TCP listener has no local address (cannot happen for a bound socket).
    #[error("tcp listener: {0}")]
    Tcp(std::io::Error),
    /// The UDP socket could not be bound on the TCP listener's address.
    #[error("cannot listen on udp {addr}: {source}; is another process using the port?")]
    Udp {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Run the responder on `listener` (TCP, bound by the caller) and a UDP socket bound on the
/// same address, until `shutdown` fires.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let addr = listener.local_addr().map_err(RunError::Tcp)?;
    let udp = UdpSocket::bind(addr)
        .await
        .map_err(|source| RunError::Udp { addr, source })?;
    let responder = Arc::new(Responder::new(&config));
    tracing::info!(%addr, names = ?responder.names().keys(), ttl_s = config.ttl_s, "dns listening (udp and tcp); every other name is refused");
    server::serve(udp, listener, responder, Limits::default(), shutdown).await;
    Ok(())
}

/// Command-line entry point of `sidecars dns`.
pub mod cli {
    use std::path::PathBuf;
    use std::process::ExitCode;

    use argh::FromArgs;

    /// Run the bottle's DNS responder (UDP and TCP :53): answers the bottle's names, refuses
    /// every other name, forwards nothing.
    #[derive(FromArgs)]
    #[argh(subcommand, name = "dns")]
    pub struct Args {
        /// config file (default /etc/sidecars/dns.json)
        #[argh(option)]
        pub config: Option<PathBuf>,
    }

    /// Run the daemon until SIGTERM.
    pub fn main(args: Args) -> ExitCode {
        sidecars_common::daemon::daemon_main::<crate::Config, _, _, _>(
            bottle_spec::DNS_NAME,
            args.config.as_deref(),
            crate::run,
        )
    }
}
