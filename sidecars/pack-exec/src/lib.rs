//! pack-exec: runs helmdeck-style command-handler packs warm, inside the sidecar.
//!
//! helmdeck spawns a container per call (500 ms–2 s); pack-exec keeps validated manifests in
//! memory and spawns only the handler process, in its own process group, temp dir and uid,
//! with the timeout, output cap, schemas and concurrency limit enforced on every call.
//!
//! # Layout
//! | module | job |
//! | --- | --- |
//! | [`config`] | `pack-exec.json`: listener, state and shipped-packs dirs, limits, `run_as` |
//! | [`manifest`] | `pack.json` fields and their validation into a ready-to-run [`Pack`] |
//! | [`schema`] | the JSON-Schema subset of `input_schema` / `output_schema` |
//! | [`archive`] | safe tar / tar.gz extraction (every entry path checked, no links out) |
//! | [`trust`] | the `trust.sha256` pack hash |
//! | [`store`] | installed packs on disk (atomic, persistent) + shipped packs, in-memory registry |
//! | [`reach`] | start-up check that `run_as` handlers can reach the pack and call dirs |
//! | [`examples`] | a manifest's `examples` and the subset comparison of the install-time self-test |
//! | [`exec`] | one call: spawn, stdin/stdout/stderr, timeout, group kill, temp dir |
//! | [`stderr`] | bounded stderr capture: tail for messages, lines to the log |
//! | [`api`] | HTTP routes and the error-code mapping, for the agent and operator listeners |
//! | [`mcp`] | every pack as an MCP tool at `/mcp` on the agent listener (`cmd.upper` ↔ `cmd-upper`) |
//! | [`operator`] | the operator listener: `default-route:` lookup, the bearer token |
//! | [`relay`] | `sidecars pack-exec-relay`: stdin/stdout to a listener on loopback (the control plane's way in) |
//! | [`cli`] | `sidecars pack-exec`: the daemon's entry point |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod archive;
pub mod config;
pub mod examples;
pub mod exec;
pub mod manifest;
pub mod mcp;
pub mod operator;
pub mod reach;
pub mod relay;
pub mod schema;
pub mod spawner;
pub mod stderr;
pub mod store;
pub mod trust;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use sidecars_common::http::{serve, ServeOptions};
use sidecars_common::shutdown::Shutdown;

pub use config::Config;
pub use manifest::Pack;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `state_dir` is unusable.
    #[error("state_dir {path}: {source}")]
    State {
        /// The configured directory.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Handlers would run as `run_as` but cannot reach the pack files or call dirs.
    #[error(transparent)]
    Unreachable(#[from] reach::Unreachable),
    /// The operator listener's settings no longer check out (they did at config load).
    #[error("{0}")]
    Operator(String),
    /// The operator listener could not bind.
    #[error("operator_listen: cannot listen on {addr}: {source}")]
    OperatorBind {
        /// The resolved address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

/// Refuse to start when handlers run as `run_as` could not reach their files: installs would
/// succeed (pack-exec is root) and every call would then fail.
fn handlers_can_reach(
    store: &store::Store,
    config: &Config,
    run_as: config::RunAs,
) -> Result<(), RunError> {
    let mut dirs = vec![
        store.packs_root().to_path_buf(),
        store.tmp_dir().to_path_buf(),
    ];
    if config.packs_dir.is_dir() {
        dirs.push(config.packs_dir.clone());
    }
    for dir in dirs {
        reach::check(&dir, run_as).map_err(|source| RunError::State {
            path: dir.clone(),
            source,
        })??;
    }
    Ok(())
}

/// The operator listener, bound, with its token.
#[derive(Debug)]
pub struct OperatorListener {
    listener: TcpListener,
    token: operator::OperatorToken,
}

impl OperatorListener {
    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// Bind the operator listener `config` asks for (`operator_listen`, `default-route:` resolved
/// now) with the token of `operator_token_file`; `None` when there is none.
pub async fn bind_operator(config: &Config) -> Result<Option<OperatorListener>, RunError> {
    let Some(settings) = config
        .operator()
        .map_err(|problems| RunError::Operator(problems.join("; ")))?
    else {
        return Ok(None);
    };
    let listener =
        TcpListener::bind(settings.addr)
            .await
            .map_err(|source| RunError::OperatorBind {
                addr: settings.addr,
                source,
            })?;
    tracing::info!(
        operator_listen = %settings.listen,
        addr = %listener.local_addr().unwrap_or(settings.addr),
        token_file = %settings.token_file.display(),
        "operator listener bound (install, replace, delete; bearer token required)"
    );
    Ok(Some(OperatorListener {
        listener,
        token: settings.token,
    }))
}

/// Run pack-exec on `listener` (the agent's) and on the operator listener the config names,
/// until `shutdown` fires, then let in-flight calls finish (bounded by the drain timeout) and
/// return.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let operator = bind_operator(&config).await?;
    run_with(listener, operator, config, shutdown).await
}

/// [`run`] with the operator listener already bound (or none): tests bind it on port 0.
pub async fn run_with(
    listener: TcpListener,
    operator: Option<OperatorListener>,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let state_dir = config.state_dir.clone();
    let packs_dir = config.packs_dir.clone();
    let store = tokio::task::spawn_blocking(move || store::Store::open(&state_dir, &packs_dir))
        .await
        .map_err(|e| RunError::State {
            path: config.state_dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?
        .map_err(|source| RunError::State {
            path: config.state_dir.clone(),
            source,
        })?;
    let store = Arc::new(store);
    let run_as = if nix::unistd::geteuid().is_root() {
        tracing::info!(
            uid = config.run_as.uid,
            gid = config.run_as.gid,
            "handlers run as run_as"
        );
        Some(config.run_as)
    } else {
        None
    };
    if let (Some(run_as), None) = (run_as, &config.spawner) {
        handlers_can_reach(&store, &config, run_as)?;
    }
    let calls = api::Calls {
        runner: match &config.spawner {
            Some(socket) => exec::Runner::via_init(socket.clone()),
            None => exec::Runner::new(store.tmp_dir().to_path_buf(), run_as),
        },
        slots: Arc::new(Semaphore::new(config.concurrency)),
        concurrency: config.concurrency,
    };
    let sessions = Arc::new(sidecars_common::mcp::Sessions::new(config.max_mcp_sessions));
    tokio::spawn(announce_changes(
        store.subscribe(),
        sessions.clone(),
        shutdown.clone(),
    ));
    let api = api::Api {
        mcp: Some(sidecars_common::mcp::Endpoint {
            server: mcp::PackTools {
                store: store.clone(),
                calls: calls.clone(),
            },
            sessions,
            max_body_bytes: config.max_body_bytes,
        }),
        calls,
        store,
        max_body_bytes: config.max_body_bytes,
        access: api::Access::Agent,
    };
    let Some(operator) = operator else {
        serve(
            listener,
            Arc::new(api),
            ServeOptions::new("pack-exec"),
            shutdown,
        )
        .await?;
        return Ok(());
    };
    // Same store, runner and handler slots: one daemon, two doors.
    let operator_api = api::Api {
        store: api.store.clone(),
        calls: api.calls.clone(),
        mcp: None,
        max_body_bytes: api.max_body_bytes,
        access: api::Access::Operator {
            token: operator.token,
            allow_unsigned: config.allow_unsigned,
        },
    };
    tokio::try_join!(
        serve(
            listener,
            Arc::new(api),
            ServeOptions::new("pack-exec"),
            shutdown.clone(),
        ),
        serve(
            operator.listener,
            Arc::new(operator_api),
            ServeOptions::new("pack-exec-operator"),
            shutdown,
        ),
    )?;
    Ok(())
}

/// Tell every open MCP stream that the tool list changed, each time the pack set does.
async fn announce_changes(
    mut changes: tokio::sync::watch::Receiver<u64>,
    sessions: Arc<sidecars_common::mcp::Sessions>,
    shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                sessions.notify_all(sidecars_common::mcp::TOOLS_LIST_CHANGED);
            }
            _ = shutdown.wait() => return,
        }
    }
}

/// Command-line entry point of `sidecars pack-exec`.
pub mod cli {
    use std::path::PathBuf;
    use std::process::ExitCode;

    use argh::FromArgs;

    /// Run the pack-exec daemon (warm command-pack runner, :9000).
    #[derive(FromArgs)]
    #[argh(subcommand, name = "pack-exec")]
    pub struct Args {
        /// config file (default /etc/sidecars/pack-exec.json)
        #[argh(option)]
        pub config: Option<PathBuf>,
    }

    /// Run the daemon; exit 0 after a clean shutdown, 1 on a runtime failure, 2 on a bad config.
    pub fn main(args: Args) -> ExitCode {
        sidecars_common::daemon::daemon_main::<crate::Config, _, _, _>(
            "pack-exec",
            args.config.as_deref(),
            crate::run,
        )
    }
}
