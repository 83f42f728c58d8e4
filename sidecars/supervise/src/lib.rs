//! supervise: the agent's line to the operator.
//!
//! An MCP server (streamable HTTP at `/mcp`) whose tools let an agent ask a human to approve
//! an action and wait for the answer. Requests live in a durable on-disk queue that the
//! operator works through with `sidecars supervise-ctl` (or the control plane, which uses the
//! same [`queue`] module) — directly on the files, with or without the daemon running. A
//! second, operator-only listener takes daemon lifecycle events from sidecar-init and serves
//! the approvals API for the control plane while the bottle runs.
//!
//! # Layout
//! | module | job |
//! | --- | --- |
//! | [`config`] | `supervise.json`: listeners, queue directory, limits |
//! | [`queue`] | the durable queue: `Queue::open`, `submit`, `list`, `get`, `decide`, events |
//! | [`durable`] | crash-safe writes: temp file, fsync, rename/link, fsync of the directory |
//! | [`tools`] | `request_approval`, `get_approval`, `wait_for_approval` |
//! | [`waiters`] | waking waiters on decisions (in-process notify + a poll while waiting) |
//! | [`agent_http`] | the agent listener: `/mcp` (the shared MCP transport) and `/health` |
//! | [`operator_http`] | the operator listener: `/v1/events`, `/v1/approvals` |
//! | [`ctl`] | `sidecars supervise-ctl`: list/show/approve/deny/events on the queue files |
//! | [`cli`] | `sidecars supervise`: the daemon's entry point |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod agent_http;
pub mod config;
pub mod ctl;
pub mod durable;
pub mod operator_http;
pub mod queue;
pub mod tools;
pub mod waiters;

use std::sync::Arc;
use std::time::Duration;

use http::{Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;

use sidecars_common::body::{json as json_response, Body};
use sidecars_common::http::{serve, ServeOptions};
use sidecars_common::shutdown::Shutdown;

pub use config::Config;
pub use queue::{Approval, Queue, QueueError, Status, Verdict};

/// What both listeners share.
pub struct State {
    /// The validated config.
    pub config: Config,
    /// The durable queue.
    pub queue: Queue,
    /// Wakes `wait_for_approval` callers on in-process decisions.
    pub decisions: Arc<waiters::Decisions>,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The queue directory is unusable.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The operator listener could not be bound, or serving failed.
    #[error("operator listener {addr}: {source}")]
    Operator {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The agent listener failed.
    #[error("agent listener: {0}")]
    Agent(std::io::Error),
}

/// Run supervise on `listener` (agent side), binding the operator listener from the config.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let addr = config.operator_listen;
    let operator = TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Operator { addr, source })?;
    run_with_operator(listener, operator, config, shutdown).await
}

/// Run supervise on two already-bound listeners (tests bind both to port 0).
pub async fn run_with_operator(
    listener: TcpListener,
    operator: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    let queue_dir = config.queue_dir.clone();
    let queue = waiters::blocking(move || Queue::open(queue_dir)).await?;
    let decisions = Arc::new(waiters::Decisions::default());
    let tools = tools::Tools::new(
        queue.clone(),
        decisions.clone(),
        Duration::from_secs(config.max_wait_s),
    );
    let mcp = sidecars_common::mcp::Endpoint {
        server: tools,
        sessions: Arc::new(sidecars_common::mcp::Sessions::new(config.max_sessions)),
        max_body_bytes: config.max_body_bytes,
    };
    let state = Arc::new(State {
        queue,
        decisions,
        config,
    });
    let operator_addr = operator.local_addr().ok();
    tracing::info!(queue_dir = %state.queue.dir().display(), operator = ?operator_addr, "supervise starting");
    let agent = serve(
        listener,
        Arc::new(agent_http::AgentHandler {
            state: state.clone(),
            mcp,
        }),
        ServeOptions::new("supervise"),
        shutdown.clone(),
    );
    let op = serve(
        operator,
        Arc::new(operator_http::OperatorHandler {
            state: state.clone(),
        }),
        ServeOptions::new("supervise-operator"),
        shutdown,
    );
    let (a, o) = tokio::join!(agent, op);
    a.map_err(RunError::Agent)?;
    o.map_err(|source| RunError::Operator {
        addr: state.config.operator_listen,
        source,
    })
}

/// `GET /health` on both listeners: ok while the queue directory is reachable.
async fn health(state: &State) -> Response<Body> {
    let dir = state.queue.dir().to_path_buf();
    let ok = tokio::task::spawn_blocking(move || dir.join("requests").is_dir())
        .await
        .unwrap_or(false);
    if ok {
        json_response(StatusCode::OK, &json!({"status": "ok"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unavailable", "message": "the queue directory is not reachable"}),
        )
    }
}

/// Command-line entry point of `sidecars supervise`.
pub mod cli {
    use std::path::PathBuf;
    use std::process::ExitCode;

    use argh::FromArgs;

    /// Run the supervise daemon (MCP approvals on :9100, operator API on 127.0.0.1:9101).
    #[derive(FromArgs)]
    #[argh(subcommand, name = "supervise")]
    pub struct Args {
        /// config file (default /etc/sidecars/supervise.json)
        #[argh(option)]
        pub config: Option<PathBuf>,
    }

    /// Run the daemon until SIGTERM.
    pub fn main(args: Args) -> ExitCode {
        sidecars_common::daemon::daemon_main::<crate::Config, _, _, _>(
            "supervise",
            args.config.as_deref(),
            crate::run,
        )
    }
}
