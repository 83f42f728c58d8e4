//! pipelock: the agent's HTTP(S) proxy (`HTTPS_PROXY=http://sidecars:8888`) and the first of
//! two hops out of a bottle.
//!
//! Every request is checked, cheapest first: DLP over what pipelock can see (target, headers,
//! plain-HTTP body) → allowlist (host pattern + port) → per-destination rate limit → tunnel
//! limit → SSRF guard (pipelock resolves the name itself and refuses non-public addresses).
//! Allowed traffic goes to egress (which injects credentials) with the checked addresses
//! attached, or straight to the destination when `upstream` is `null`. Denials are `403`
//! with a one-line reason (also the status line's reason phrase), logged with the rule that
//! fired and never the secret. SIGHUP reloads the config atomically; a bad new config is
//! logged and the old one kept.
//!
//! # Layout
//! | module | job |
//! | --- | --- |
//! | [`config`] | `pipelock.json`: keys, defaults, validation |
//! | [`policy`] | the compiled policy: allowlist patterns, SSRF policy, DLP scanner, limits |
//! | [`ratelimit`] | per-destination token buckets |
//! | [`upstream`] | the next hop: CONNECT through egress or directly; the pooled HTTP client |
//! | [`proxy`] | the request handler: health, CONNECT tunnels, plain-HTTP forwarding |
//! | [`pack`] | the pack listener: handlers' traffic relayed by sidecar-init, with the pack's name |
//! | [`cli`] | `sidecars pipelock [--config PATH]` and SIGHUP reload |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod pack;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod upstream;

use std::path::PathBuf;
use std::sync::Arc;

use sidecars_common::http::{serve, ServeOptions};
use sidecars_common::shutdown::Shutdown;
use tokio::net::TcpListener;

pub use config::Config;
pub use proxy::Pipelock;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config could not be compiled (e.g. a secret file vanished after validation).
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// Serving failed, or the SIGHUP handler could not be installed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Serve pipelock on `listener` until `shutdown` fires. No reload (tests drive
/// [`Pipelock::reload`] directly, or run the binary).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    run_with_reload(listener, config, shutdown, None).await
}

/// [`run`], and reload the config from `reload_from` on every SIGHUP.
pub async fn run_with_reload(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
    reload_from: Option<PathBuf>,
) -> Result<(), RunError> {
    let pipelock = Arc::new(Pipelock::new(&config)?);
    if config.kill_switch_file.is_some() {
        pipelock.kill_switch.listen_for_signal(shutdown.clone())?;
    }
    if let Some(addr) = config.pack_listen {
        let packs = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen for pack traffic on {addr}: {e}"),
            )
        })?;
        tokio::spawn(pack::serve(packs, pipelock.clone(), shutdown.clone()));
    }
    if let Some(path) = reload_from {
        let pipelock = pipelock.clone();
        sidecars_common::shutdown::on_signal(
            tokio::signal::unix::SignalKind::hangup(),
            shutdown.clone(),
            move || pipelock.reload_from(&path),
        )?;
    }
    let mut opts = ServeOptions::new("pipelock");
    // pipelock logs its own lines: the scaffold's would print request paths, which may hold
    // the very secrets DLP refuses.
    opts.access_log = false;
    // HTTP/1.1 on the raw socket, so CONNECT tunnels are relayed zero-copy.
    opts.http1_only = true;
    serve(listener, pipelock, opts, shutdown).await?;
    Ok(())
}

/// Command-line entry point of `sidecars pipelock`.
pub mod cli {
    use std::path::PathBuf;
    use std::process::ExitCode;

    use argh::FromArgs;
    use sidecars_common::daemon::{daemon_main, default_config_path};

    /// Run pipelock, the agent's filtering HTTP(S) proxy (SIGHUP reloads the config).
    #[derive(FromArgs)]
    #[argh(subcommand, name = "pipelock")]
    pub struct Args {
        /// config file (default /etc/sidecars/pipelock.json)
        #[argh(option)]
        pub config: Option<PathBuf>,
    }

    /// Run the daemon to completion.
    pub fn main(args: Args) -> ExitCode {
        let reload_from = args
            .config
            .clone()
            .unwrap_or_else(|| default_config_path("pipelock"));
        daemon_main(
            "pipelock",
            args.config.as_deref(),
            move |listener, config, shutdown| {
                super::run_with_reload(listener, config, shutdown, Some(reload_from))
            },
        )
    }
}
