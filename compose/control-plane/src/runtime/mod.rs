//! The runtime seam: how a bottle's compose model becomes containers, and how they are
//! inspected and torn down. Backends implement [`Runtime`] around the model
//! ([`bottle_compose::model::Project`]), not around CLI strings, so the Docker Engine API
//! (bollard) and Kubernetes backends can plug in later. This backend is
//! [`compose_cli::ComposeCli`].

pub mod command;
pub mod compose_cli;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bottle_compose::model::Project;
use tokio::sync::mpsc;

use crate::api::{DownReport, ServiceStatus};

/// A container runtime able to run bottles.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// One line saying what the backend is (e.g. `compose CLI: docker-compose 1.29.2`).
    async fn describe(&self) -> Result<String, RuntimeError>;

    /// Create or update the project's networks, volumes and containers from the model and
    /// start them. `dir` is the project directory holding the bind-mounted files (relative
    /// mount sources are relative to it). Returns once the runtime has started everything
    /// (health is checked by the caller with [`Runtime::containers`]).
    async fn up(
        &self,
        project: &Project,
        dir: &Path,
        timeout: Duration,
    ) -> Result<(), RuntimeError>;

    /// Remove the project's containers, networks and volumes (named and anonymous).
    /// Idempotent: an unknown project is not an error. `dir` is the project directory, when
    /// it still exists.
    async fn down(&self, project: &str, dir: Option<&Path>) -> Result<DownReport, RuntimeError>;

    /// The project's containers with state, health and published ports.
    async fn containers(&self, project: &str) -> Result<Vec<ServiceStatus>, RuntimeError>;

    /// Stream a service's container output (stdout and stderr, line by line).
    async fn logs(
        &self,
        project: &str,
        service: &str,
        options: LogOptions,
    ) -> Result<mpsc::Receiver<LogLine>, RuntimeError>;

    /// Run a command in a service's container.
    async fn exec(
        &self,
        project: &str,
        service: &str,
        argv: &[String],
    ) -> Result<ExecOutput, RuntimeError>;

    /// Where `container_port` of `service` is published on the host, if it is.
    async fn published_port(
        &self,
        project: &str,
        service: &str,
        container_port: u16,
    ) -> Result<Option<SocketAddr>, RuntimeError> {
        let containers = self.containers(project).await?;
        Ok(containers
            .iter()
            .filter(|c| c.service == service)
            .flat_map(|c| c.ports.iter())
            .find(|p| p.container_port == container_port)
            .map(|p| p.host))
    }
}

/// Options of [`Runtime::logs`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new lines.
    pub follow: bool,
    /// Only the last N lines of the existing output.
    pub tail: Option<u64>,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

/// One line of container output (without its newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Where it came from.
    pub stream: Stream,
    /// The bytes of the line (not necessarily UTF-8).
    pub line: Vec<u8>,
}

/// Result of [`Runtime::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code of the command.
    pub code: i32,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
}

/// Why a runtime operation failed. Command failures carry the command and its stderr.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No compose implementation found.
    #[error("no compose command found (tried {tried}); install docker compose v2 or docker-compose, or set BOT_BOTTLE_COMPOSE")]
    ComposeNotFound {
        /// The commands tried.
        tried: String,
    },
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its stderr (trimmed).
        stderr: String,
    },
    /// A command ran past its deadline and was killed.
    #[error("`{command}` did not finish within {seconds} s (killed)")]
    Timeout {
        /// The command line.
        command: String,
        /// The deadline.
        seconds: u64,
    },
    /// A command's output could not be understood.
    #[error("unexpected output from `{command}`: {message}")]
    Output {
        /// The command line.
        command: String,
        /// What was wrong.
        message: String,
    },
    /// The bottle did not become healthy.
    #[error("{0}")]
    Unhealthy(String),
    /// Writing a file of the project failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The model cannot be expressed by this backend.
    #[error("cannot serialize the compose model: {0}")]
    Model(String),
}
