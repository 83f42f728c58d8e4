//! Types shared by the CLI and the later HTTP API (`serve`): what a bottle looks like from
//! outside, and the one error type with its exit code / error code. Defined once so the two
//! front ends cannot drift.

use std::net::SocketAddr;

use serde::Serialize;

use crate::runtime::RuntimeError;

/// Process exit code: success.
pub const EXIT_OK: u8 = 0;
/// Process exit code: the runtime (Docker, compose, a daemon) failed.
pub const EXIT_RUNTIME: u8 = 1;
/// Process exit code: bad usage or an invalid manifest.
pub const EXIT_USAGE: u8 = 2;

/// One bottle as `ps` (and `GET /v1/bottles`) shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BottleSummary {
    /// The bottle's slug.
    pub slug: String,
    /// Compose project name.
    pub project: String,
    /// Overall state, derived from the services.
    pub state: BottleState,
    /// Each container of the project.
    pub services: Vec<ServiceStatus>,
}

/// Overall state of a bottle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BottleState {
    /// Every service runs and the sidecars are healthy.
    Running,
    /// Containers run, the sidecars' healthcheck has not passed yet.
    Starting,
    /// The sidecars report unhealthy.
    Unhealthy,
    /// Some container exited or is missing.
    Degraded,
    /// No container exists (known in the state dir only).
    Down,
}

impl BottleState {
    /// Derive the state from the containers of a project.
    pub fn of(services: &[ServiceStatus]) -> BottleState {
        if services.is_empty() {
            return BottleState::Down;
        }
        let sidecars = services.iter().find(|s| s.service == "sidecars");
        let all_running = services.iter().all(|s| s.state == "running");
        match sidecars.and_then(|s| s.health.as_deref()) {
            _ if !all_running || services.len() < 2 => BottleState::Degraded,
            Some("healthy") => BottleState::Running,
            Some("unhealthy") => BottleState::Unhealthy,
            Some(_) => BottleState::Starting,
            None if sidecars.is_some() => BottleState::Running,
            None => BottleState::Degraded,
        }
    }

    /// Lowercase name, as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            BottleState::Running => "running",
            BottleState::Starting => "starting",
            BottleState::Unhealthy => "unhealthy",
            BottleState::Degraded => "degraded",
            BottleState::Down => "down",
        }
    }
}

/// One container of a bottle, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceStatus {
    /// Compose service name (`agent`, `sidecars`).
    pub service: String,
    /// Container name.
    pub container: String,
    /// Runtime state (`running`, `exited`, `created`, ...).
    pub state: String,
    /// Healthcheck status (`starting`, `healthy`, `unhealthy`), if the service has one.
    pub health: Option<String>,
    /// Exit code, once exited.
    pub exit_code: Option<i64>,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
}

/// A container port published on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PublishedPort {
    /// Port inside the container.
    pub container_port: u16,
    /// Where it is reachable on the host.
    pub host: SocketAddr,
}

/// What `up` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpReport {
    /// The bottle after start.
    pub bottle: BottleSummary,
    /// Project directory (config files, packs, compose file).
    pub dir: String,
    /// The agent's environment as rendered (how it reaches the sidecars).
    pub agent_env: Vec<(String, String)>,
    /// Each enabled daemon's published port on the host, by daemon name.
    pub endpoints: Vec<Endpoint>,
    /// Things the operator should know (CA generated, no system roots found, ...).
    pub notes: Vec<String>,
}

/// A daemon reachable from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Daemon name.
    pub daemon: String,
    /// Port inside the sidecars container.
    pub container_port: u16,
    /// Host address it is published on.
    pub host: SocketAddr,
}

/// What `down` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DownReport {
    /// Containers removed.
    pub containers: usize,
    /// Networks removed.
    pub networks: usize,
    /// Volumes removed.
    pub volumes: usize,
    /// Whether a project directory was removed from the state dir.
    pub state_removed: bool,
}

impl DownReport {
    /// True when there was nothing to remove (unknown or already-down bottle).
    pub fn nothing(&self) -> bool {
        self.containers == 0 && self.networks == 0 && self.volumes == 0 && !self.state_removed
    }
}

/// Every failure of a control-plane operation. `exit_code` and `code` map it for the CLI and
/// the HTTP API in one place.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The manifest is invalid (every problem listed).
    #[error(transparent)]
    Manifest(#[from] bottle_compose::ManifestError),
    /// Rendering refused its inputs.
    #[error(transparent)]
    Render(#[from] bottle_compose::RenderError),
    /// Bad usage (arguments).
    #[error("{0}")]
    Usage(String),
    /// No bottle with that slug is known or running.
    #[error("no bottle {slug:?} (see `control-plane ps`)")]
    UnknownBottle {
        /// The slug asked for.
        slug: String,
    },
    /// A bottle with that slug already exists (or is being created): creating it again over
    /// the API would silently replace it.
    #[error(
        "bottle {slug:?} already exists (DELETE /v1/bottles/{slug} first, or pick another slug)"
    )]
    Conflict {
        /// The slug asked for.
        slug: String,
    },
    /// `reload` was asked for what only a start applies (the message names it and says to
    /// run `up`); nothing was written.
    #[error("{0}")]
    NeedsUp(String),
    /// The host guard (firewall rule for the agent's network) could not be installed.
    #[error(transparent)]
    HostGuard(#[from] crate::host_guard::HostGuardError),
    /// The runtime (Docker, compose) failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Reading or writing a file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What we were doing ("cannot write", ...).
        what: &'static str,
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A daemon answered with an error (its JSON body is kept).
    #[error("{daemon} answered {status}: {body}")]
    Daemon {
        /// Daemon name.
        daemon: String,
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// The bottle's CA could not be generated.
    #[error("cannot generate the bottle CA: {0}")]
    Ca(String),
    /// Credential files of the manifest that cannot be used: missing, not a regular file,
    /// readable by group or others, or not owned by root. Every problem at once, one a line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Credentials(Vec<CredentialProblem>),
    /// A file of the project directory could not be given to its daemon's uid (the control
    /// plane is not root).
    #[error("cannot give {path} to {owner}: {message}; the control plane must run as root to give each daemon's files to its uid")]
    NotRoot {
        /// The file.
        path: String,
        /// `uid:gid` it was meant for.
        owner: String,
        /// The OS error.
        message: String,
    },
    /// No subnet is left for the bottle's agent network.
    #[error("no free /{prefix} left for the agent network in BOT_BOTTLE_SUBNET_POOL={pool} (every one overlaps an existing Docker network): remove unused networks (`docker network prune`) or set BOT_BOTTLE_SUBNET_POOL to a larger or another range", prefix = bottle_spec::BOTTLE_SUBNET_PREFIX)]
    NoSubnet {
        /// The pool.
        pool: bottle_spec::Subnet,
    },
    /// pack-exec's operator listener refused the bottle's operator token.
    #[error("{0}")]
    OperatorToken(String),
    /// An approvals operation failed inside the bottle (unknown id, already decided, ...).
    #[error("{0}")]
    Approval(String),
    /// A request to a daemon failed before an answer.
    #[error("cannot reach {daemon} at {addr}: {message}")]
    Unreachable {
        /// Daemon name.
        daemon: String,
        /// Where we tried.
        addr: String,
        /// Why.
        message: String,
    },
}

/// One unusable credential file (see [`ControlError::Credentials`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialProblem {
    /// The credential's name in the manifest.
    pub name: String,
    /// The host path, as the manifest gives it.
    pub path: String,
    /// What is wrong, and the command that fixes it.
    pub message: String,
}

impl std::fmt::Display for CredentialProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "credentials.{}.file: {}: {}",
            self.name, self.path, self.message
        )
    }
}

impl ControlError {
    /// Process exit code: 2 for usage/manifest errors, 1 for everything at run time.
    pub fn exit_code(&self) -> u8 {
        match self {
            ControlError::Manifest(_)
            | ControlError::Render(_)
            | ControlError::Usage(_)
            | ControlError::NeedsUp(_)
            | ControlError::Credentials(_) => EXIT_USAGE,
            _ => EXIT_RUNTIME,
        }
    }

    /// Stable machine-readable code (the HTTP API's `error` field).
    pub fn code(&self) -> &'static str {
        match self {
            ControlError::Manifest(_) => "invalid_manifest",
            ControlError::Render(_) => "invalid_options",
            ControlError::Usage(_) => "usage",
            ControlError::UnknownBottle { .. } => "unknown_bottle",
            ControlError::Conflict { .. } => "conflict",
            ControlError::NeedsUp(_) => "needs_up",
            ControlError::Runtime(_) => "runtime",
            ControlError::HostGuard(_) => "host_guard",
            ControlError::Io { .. } => "io",
            ControlError::Daemon { .. } => "daemon_error",
            ControlError::Unreachable { .. } => "unreachable",
            ControlError::Ca(_) => "ca",
            ControlError::Credentials(_) => "invalid_credential",
            ControlError::NotRoot { .. } => "not_root",
            ControlError::NoSubnet { .. } => "no_subnet",
            ControlError::OperatorToken(_) => "operator_token_refused",
            ControlError::Approval(_) => "approval_failed",
        }
    }

    /// HTTP status of the API's error answer: the client's fault (4xx), the runtime's or a
    /// daemon's (502/503), or ours (500).
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ControlError::Manifest(_)
            | ControlError::Render(_)
            | ControlError::Usage(_)
            | ControlError::Credentials(_) => S::BAD_REQUEST,
            ControlError::UnknownBottle { .. } => S::NOT_FOUND,
            ControlError::Conflict { .. } | ControlError::NeedsUp(_) => S::CONFLICT,
            ControlError::Runtime(e) if e.is_unreachable() => S::SERVICE_UNAVAILABLE,
            ControlError::Runtime(_)
            | ControlError::Unreachable { .. }
            | ControlError::OperatorToken(_) => S::BAD_GATEWAY,
            // Retry once networks are freed, or with another pool.
            ControlError::NoSubnet { .. } => S::SERVICE_UNAVAILABLE,
            ControlError::Daemon { status, .. } => S::from_u16(*status).unwrap_or(S::BAD_GATEWAY),
            // supervise-ctl's own refusals: an unknown id, or a request decided already.
            ControlError::Approval(m) if m.starts_with("no approval") => S::NOT_FOUND,
            ControlError::Approval(m) if m.contains("already") => S::CONFLICT,
            ControlError::Approval(_) => S::UNPROCESSABLE_ENTITY,
            ControlError::HostGuard(_)
            | ControlError::Io { .. }
            | ControlError::Ca(_)
            | ControlError::NotRoot { .. } => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// An I/O error on `path`.
    pub fn io(what: &'static str, path: &std::path::Path, source: std::io::Error) -> ControlError {
        ControlError::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(service: &str, state: &str, health: Option<&str>) -> ServiceStatus {
        ServiceStatus {
            service: service.into(),
            container: format!("c-{service}"),
            state: state.into(),
            health: health.map(String::from),
            exit_code: None,
            ports: vec![],
        }
    }

    #[test]
    fn state_is_derived_from_services() {
        assert_eq!(BottleState::of(&[]), BottleState::Down);
        let up = [
            svc("agent", "running", None),
            svc("sidecars", "running", Some("healthy")),
        ];
        assert_eq!(BottleState::of(&up), BottleState::Running);
        let starting = [
            svc("agent", "running", None),
            svc("sidecars", "running", Some("starting")),
        ];
        assert_eq!(BottleState::of(&starting), BottleState::Starting);
        let sick = [
            svc("agent", "running", None),
            svc("sidecars", "running", Some("unhealthy")),
        ];
        assert_eq!(BottleState::of(&sick), BottleState::Unhealthy);
        let exited = [
            svc("agent", "exited", None),
            svc("sidecars", "running", Some("healthy")),
        ];
        assert_eq!(BottleState::of(&exited), BottleState::Degraded);
        assert_eq!(
            BottleState::of(&[svc("sidecars", "running", Some("healthy"))]),
            BottleState::Degraded
        );
    }
}
