//! egress: the last hop out of a bottle. It accepts proxy requests from pipelock only
//! (`allow_from`), terminates TLS with certificates minted by the bottle's CA for route and
//! vault hosts — and with `intercept_all` for every host name but the `passthrough` ones —
//! scans what it decrypts with the shared DLP, checks route rules, injects credentials the
//! agent never holds, substitutes `${vault:NAME}` placeholders only for the hosts NAME is
//! scoped to, and redacts injected values an upstream echoes back. Other hosts are tunnelled
//! blind, a tunnel to a name only once its TLS ClientHello names that host. Every address it
//! connects to passes the same SSRF guard as pipelock's; the kill switch stops it all.
//!
//! # Layout
//! | module | job |
//! | --- | --- |
//! | [`config`] | `egress.json`: keys, defaults; validation builds the state |
//! | [`state`] | runtime state built from the config: host rules, vault, CA, TLS roots, clients |
//! | [`creds`] | `${cred:NAME}` templates and `${vault:NAME}` substitution with host scoping |
//! | [`ca`] | generating a bottle CA; minting and caching per-host leaf certificates |
//! | [`redact`] | replacing injected values in response headers and (streamed) bodies |
//! | [`intercept`] | request rewriting, the per-tunnel upstream TLS connection, serving inside a tunnel |
//! | [`sni`] | a blind tunnel to a name must open with a ClientHello for that name (no fronting) |
//! | [`proxy`] | the handler: health, ACL, CONNECT (intercepted or blind), plain HTTP |
//! | [`cli`] | `sidecars egress [--config PATH]` |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod ca;
pub mod config;
pub mod creds;
pub mod intercept;
pub mod proxy;
pub mod redact;
pub mod sni;
pub mod state;
pub mod stream_scan;

use std::sync::Arc;

use sidecars_common::http::{serve, ServeOptions};
use sidecars_common::shutdown::Shutdown;
use tokio::net::TcpListener;

pub use ca::generate_ca;
pub use config::Config;

/// Why egress stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config's files could not be loaded (normally caught at validation).
    #[error("invalid config: {}", .0.join("; "))]
    Config(Vec<String>),
    /// Serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Serve egress on `listener` until `shutdown` fires.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    run_with_reload(listener, config, shutdown, None).await
}

/// [`run`], and rebuild the state from `reload_from` on every SIGHUP: routes, vault and
/// credential files are read again (rotation without a restart); a bad config or an
/// unreadable file keeps the previous state. Open connections stay; their next request uses
/// the new state.
pub async fn run_with_reload(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
    reload_from: Option<std::path::PathBuf>,
) -> Result<(), RunError> {
    let state = state::State::build(&config).map_err(RunError::Config)?;
    let mut hosts: Vec<&str> = state.intercepted().into_iter().collect();
    hosts.sort_unstable();
    tracing::info!(intercepted = ?hosts, intercept_all = state.intercept_all, "egress ready");
    let live = state::Live::new(state);
    if let Some(path) = reload_from {
        let live = live.clone();
        sidecars_common::shutdown::on_signal(
            tokio::signal::unix::SignalKind::hangup(),
            shutdown.clone(),
            move || live.reload_from(&path),
        )?;
    }
    let kill_switch =
        sidecars_common::kill_switch::KillSwitch::new(config.kill_switch_file.clone());
    if config.kill_switch_file.is_some() {
        kill_switch.listen_for_signal(shutdown.clone())?;
    }
    let handler = Arc::new(proxy::Egress::new(live, kill_switch));
    let mut opts = ServeOptions::new("egress");
    opts.access_log = false;
    // HTTP/1.1 on the raw socket, so blind tunnels are relayed zero-copy.
    opts.http1_only = true;
    serve(listener, handler, opts, shutdown).await?;
    Ok(())
}

/// Command-line entry point of `sidecars egress`.
pub mod cli {
    use std::path::PathBuf;
    use std::process::ExitCode;

    use argh::FromArgs;
    use sidecars_common::daemon::{daemon_main, default_config_path};

    /// Run egress, the credential-injecting last hop of the proxy chain (SIGHUP reloads the
    /// config and the credential files it names).
    #[derive(FromArgs)]
    #[argh(subcommand, name = "egress")]
    pub struct Args {
        /// config file (default /etc/sidecars/egress.json)
        #[argh(option)]
        pub config: Option<PathBuf>,
    }

    /// Run the daemon to completion.
    pub fn main(args: Args) -> ExitCode {
        let reload_from = args
            .config
            .clone()
            .unwrap_or_else(|| default_config_path("egress"));
        daemon_main(
            "egress",
            args.config.as_deref(),
            move |listener, config, shutdown| {
                super::run_with_reload(listener, config, shutdown, Some(reload_from))
            },
        )
    }
}
