//! The shared `main` of a daemon: logging, config, runtime, listener, shutdown, exit code.
//!
//! Each daemon crate provides `run(listener, config, shutdown)`; the multi-call binary calls
//! [`daemon_main`] with it. Exit codes are decided here, once: 0 clean shutdown, 1 runtime
//! failure (e.g. the port is taken), 2 bad config (the message names the field).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::config::{self, ConfigError, Validate};
use crate::shutdown::{self, Shutdown};

/// Exit code for a bad or unreadable config.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure after the config was accepted.
pub const EXIT_RUNTIME: u8 = 1;

/// A daemon config: parsed from JSON, self-validating, and naming the address to listen on.
pub trait DaemonConfig: DeserializeOwned + Validate + Default {
    /// The TCP address the daemon listens on.
    fn listen(&self) -> SocketAddr;
}

/// Load the config for `name`: an explicit `--config` path must exist; the default path
/// (`/etc/sidecars/<name>.json`) may be absent, which means "all defaults".
pub fn load_config<C: DaemonConfig>(name: &str, explicit: Option<&Path>) -> Result<C, ConfigError> {
    match explicit {
        Some(path) => config::load(path),
        None => {
            let default = default_config_path(name);
            if default.exists() {
                config::load(&default)
            } else {
                tracing::info!(path = %default.display(), "no config file; using defaults");
                Ok(C::default())
            }
        }
    }
}

/// `/etc/sidecars/<name>.json`, where the control plane mounts each daemon's config.
pub fn default_config_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/etc/sidecars/{name}.json"))
}

/// Run a daemon to completion and map the outcome to an exit code.
///
/// `run` gets a bound listener, the validated config and a [`Shutdown`] that fires on
/// SIGTERM/SIGINT; it should return once it has drained.
pub fn daemon_main<C, F, Fut, E>(name: &'static str, config_path: Option<&Path>, run: F) -> ExitCode
where
    C: DaemonConfig,
    F: FnOnce(TcpListener, C, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    crate::logging::init();
    let config: C = match load_config(name, config_path) {
        Ok(c) => c,
        Err(err) => {
            // One line, through tracing (stderr), so it carries the daemon's log format.
            tracing::error!("{name}: {err}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let workers = std::thread::available_parallelism()
        .map(|n| n.get().min(4))
        .unwrap_or(2);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("{name}: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    runtime.block_on(async move {
        let addr = config.listen();
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(err) => {
                tracing::error!(%addr, %err, "cannot listen; is another process using the port?");
                return ExitCode::from(EXIT_RUNTIME);
            }
        };
        let shutdown = Shutdown::from_future(shutdown::signal());
        match run(listener, config, shutdown).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(err) => {
                tracing::error!(%err, "daemon failed");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}
