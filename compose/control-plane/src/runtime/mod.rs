//! The runtime seam: how a bottle's compose model becomes containers, and how they are
//! inspected and torn down. Backends implement [`Runtime`] around the model
//! ([`bottle_compose::model::Project`]), not around CLI strings, so one rendered model drives
//! every backend the same way:
//!
//! - [`compose_cli::ComposeCli`] shells out to `docker compose` / `docker-compose`;
//! - [`engine::Engine`] talks to the Docker Engine API directly (no compose needed), creating
//!   exactly what compose would (same names and labels, so either backend, or compose by hand,
//!   can inspect and take down what the other brought up);
//! - [`select::select`] picks one from the environment (`BOT_BOTTLE_RUNTIME`).
//!
//! See docs/runtime.md.

pub mod command;
pub mod compose_cli;
pub mod engine;
pub mod files;
pub mod select;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bottle_compose::model::Project;
use tokio::sync::mpsc;

use crate::api::{DownReport, PublishedPort, ServiceStatus};

/// Label compose puts on everything of a project (containers, networks, volumes). Both backends
/// find a project's objects by it, so neither needs the project directory to inspect or remove.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// Label compose puts on a service's containers: how a container is mapped back to its service.
pub const SERVICE_LABEL: &str = "com.docker.compose.service";

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

    /// Run a command in a service's container, as `user` (`"UID:GID"`, like `docker exec
    /// -u`) or, with `None`, as the container's user. Nobody in the sidecars container holds
    /// `CAP_DAC_OVERRIDE`, so a tool working on a daemon's files must run as that daemon's
    /// uid (`supervise-ctl` as supervise's).
    async fn exec(
        &self,
        project: &str,
        service: &str,
        argv: &[String],
        user: Option<&str>,
    ) -> Result<ExecOutput, RuntimeError>;

    /// Run a command in a service's container (as `user`, like [`Runtime::exec`]) with its
    /// stdin and stdout as one byte stream, its stderr turned into a read error: how the
    /// control plane talks to a daemon listening on the container's loopback
    /// (`sidecars pack-exec-relay`) without a published port or the host's network.
    async fn exec_stream(
        &self,
        project: &str,
        service: &str,
        argv: &[String],
        user: Option<&str>,
    ) -> Result<ExecStream, RuntimeError>;

    /// The IPv4 subnets of every Docker network that exists, except the networks of
    /// `project` itself (compose's project label): what a new bottle's agent network must not
    /// overlap ([`bottle_spec::Subnet::for_project`]). Networks without IPv4 IPAM config
    /// (`host`, `none`) have none.
    async fn network_subnets(
        &self,
        project: &str,
    ) -> Result<Vec<bottle_spec::Subnet>, RuntimeError>;

    /// Every bottle that has containers in the runtime, found by the renderer's slug label
    /// (`io.bot-bottle.slug`), whichever control plane made it, with its containers: how a
    /// restarted control plane (or one whose state dir was lost) finds its bottles again, and
    /// how `ps` gets every bottle's state in one query instead of one per bottle. Sorted by
    /// project.
    async fn bottles(&self) -> Result<Vec<FoundBottle>, RuntimeError>;

    /// How this backend delivers a bottle's files ([`files::FileDelivery`]): it decides
    /// whether the control plane chowns the project directory or records owners.
    fn file_delivery(&self) -> files::FileDelivery {
        files::FileDelivery::Bind
    }

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

/// A boxed runtime is a runtime, so the backend can be chosen at run time
/// ([`select::select`] returns `Box<dyn Runtime>`) and still drive `Controller<R: Runtime>`.
#[async_trait]
impl<T: Runtime + ?Sized> Runtime for Box<T> {
    async fn describe(&self) -> Result<String, RuntimeError> {
        (**self).describe().await
    }

    async fn up(
        &self,
        project: &Project,
        dir: &Path,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        (**self).up(project, dir, timeout).await
    }

    async fn down(&self, project: &str, dir: Option<&Path>) -> Result<DownReport, RuntimeError> {
        (**self).down(project, dir).await
    }

    async fn containers(&self, project: &str) -> Result<Vec<ServiceStatus>, RuntimeError> {
        (**self).containers(project).await
    }

    async fn logs(
        &self,
        project: &str,
        service: &str,
        options: LogOptions,
    ) -> Result<mpsc::Receiver<LogLine>, RuntimeError> {
        (**self).logs(project, service, options).await
    }

    async fn exec(
        &self,
        project: &str,
        service: &str,
        argv: &[String],
        user: Option<&str>,
    ) -> Result<ExecOutput, RuntimeError> {
        (**self).exec(project, service, argv, user).await
    }

    async fn exec_stream(
        &self,
        project: &str,
        service: &str,
        argv: &[String],
        user: Option<&str>,
    ) -> Result<ExecStream, RuntimeError> {
        (**self).exec_stream(project, service, argv, user).await
    }

    async fn network_subnets(
        &self,
        project: &str,
    ) -> Result<Vec<bottle_spec::Subnet>, RuntimeError> {
        (**self).network_subnets(project).await
    }

    async fn bottles(&self) -> Result<Vec<FoundBottle>, RuntimeError> {
        (**self).bottles().await
    }

    fn file_delivery(&self) -> files::FileDelivery {
        (**self).file_delivery()
    }

    async fn published_port(
        &self,
        project: &str,
        service: &str,
        container_port: u16,
    ) -> Result<Option<SocketAddr>, RuntimeError> {
        (**self)
            .published_port(project, service, container_port)
            .await
    }
}

/// Both directions of an exec'd process: write its stdin, read its stdout.
pub trait ExecIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send> ExecIo for T {}

/// What [`Runtime::exec_stream`] returns.
pub type ExecStream = std::pin::Pin<Box<dyn ExecIo>>;

/// A chunk the exec'd process wrote on stderr, as the read error of its stream: the relay
/// writes there only when it fails, and this way the failure reaches the caller's error
/// message instead of a bare "connection closed".
pub fn stderr_as_error(stderr: &[u8]) -> std::io::Error {
    std::io::Error::other(String::from_utf8_lossy(stderr).trim().to_string())
}

/// What a backend read about one container (from `docker inspect` or the Engine API), before
/// it becomes a [`ServiceStatus`]. Both backends go through [`ContainerFacts::into_status`], so
/// state, health, exit code and ports mean the same whichever backend reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFacts {
    /// Container name (a leading `/`, as Docker reports it, is removed).
    pub name: String,
    /// Container labels (the service comes from [`SERVICE_LABEL`]).
    pub labels: HashMap<String, String>,
    /// Docker's state (`created`, `running`, `exited`, ...).
    pub status: String,
    /// Exit code of the last run (only reported once the container is not running).
    pub exit_code: i64,
    /// Health status, when the container has a healthcheck.
    pub health: Option<String>,
    /// Published ports: `"9000/tcp"` → `(host ip, host port)` bindings; `None` bindings
    /// (exposed, not published) are empty.
    pub ports: Vec<(String, Vec<(String, String)>)>,
}

impl ContainerFacts {
    /// The status the control plane reports. An empty host IP means every address
    /// (`0.0.0.0`); bindings that do not parse are skipped.
    pub fn into_status(self) -> ServiceStatus {
        let mut ports: Vec<PublishedPort> = self
            .ports
            .into_iter()
            .filter_map(|(key, bindings)| {
                let port: u16 = key.split('/').next()?.parse().ok()?;
                Some((port, bindings))
            })
            .flat_map(|(port, bindings)| {
                bindings
                    .into_iter()
                    .filter_map(move |(host_ip, host_port)| {
                        let ip: IpAddr = if host_ip.is_empty() {
                            IpAddr::from([0, 0, 0, 0])
                        } else {
                            host_ip.parse().ok()?
                        };
                        Some(PublishedPort {
                            container_port: port,
                            host: SocketAddr::new(ip, host_port.parse().ok()?),
                        })
                    })
            })
            .collect();
        ports.sort_by_key(|p| (p.container_port, p.host));
        let exited = self.status != "running" && self.status != "created";
        ServiceStatus {
            service: self.labels.get(SERVICE_LABEL).cloned().unwrap_or_default(),
            container: self.name.trim_start_matches('/').to_string(),
            state: self.status,
            health: self.health,
            exit_code: exited.then_some(self.exit_code),
            ports,
        }
    }
}

/// Statuses of a project's containers, sorted by service (the order both backends report).
pub fn statuses(facts: impl IntoIterator<Item = ContainerFacts>) -> Vec<ServiceStatus> {
    let mut out: Vec<ServiceStatus> = facts.into_iter().map(ContainerFacts::into_status).collect();
    out.sort_by(|a, b| a.service.cmp(&b.service));
    out
}

impl RuntimeError {
    /// Whether the failure is "Docker is not reachable" (socket missing, daemon down,
    /// permission denied) rather than a failed operation: the API answers 503 for it, since
    /// retrying later can succeed and nothing about the request was wrong.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, RuntimeError::Unreachable(_))
    }
}

/// The IPv4 subnets of `networks` (as the Engine API and `docker network inspect` both report
/// them), leaving out `project`'s own networks. Both backends go through it. Host bits are
/// tolerated (masked off): a network created with `--subnet 10.1.2.3/24` keeps that text.
pub fn foreign_subnets(
    networks: &[bollard::models::Network],
    project: &str,
) -> Vec<bottle_spec::Subnet> {
    let mut out: Vec<bottle_spec::Subnet> = networks
        .iter()
        .filter(|n| {
            n.labels
                .as_ref()
                .and_then(|l| l.get(PROJECT_LABEL))
                .map(String::as_str)
                != Some(project)
        })
        .flat_map(|n| n.ipam.iter().flat_map(|i| i.config.iter().flatten()))
        .filter_map(|c| {
            c.subnet
                .as_deref()
                .and_then(bottle_spec::Subnet::containing)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A bottle found in the runtime by its labels ([`Runtime::bottles`]), with its containers.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundBottle {
    /// Compose project name (`com.docker.compose.project`).
    pub project: String,
    /// The bottle's slug (`io.bot-bottle.slug`).
    pub slug: String,
    /// Its containers, as [`Runtime::containers`] would report them.
    pub services: Vec<ServiceStatus>,
}

impl FoundBottle {
    /// Group containers into bottles by their project and slug labels, sorted by project;
    /// containers missing either label are skipped (not made by a control plane).
    pub fn group(facts: impl IntoIterator<Item = ContainerFacts>) -> Vec<FoundBottle> {
        let mut groups: std::collections::BTreeMap<(String, String), Vec<ContainerFacts>> =
            std::collections::BTreeMap::new();
        for f in facts {
            let project = f
                .labels
                .get(PROJECT_LABEL)
                .filter(|p| !p.is_empty())
                .cloned();
            let slug = f
                .labels
                .get(bottle_compose::render::LABEL_SLUG)
                .filter(|s| !s.is_empty())
                .cloned();
            if let (Some(project), Some(slug)) = (project, slug) {
                groups.entry((project, slug)).or_default().push(f);
            }
        }
        groups
            .into_iter()
            .map(|((project, slug), facts)| FoundBottle {
                project,
                slug,
                services: statuses(facts),
            })
            .collect()
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
    /// The Docker daemon cannot be reached at all (socket missing, connection refused,
    /// permission denied). Kept apart from other failures because nothing about the request was
    /// wrong: the HTTP API answers 503 for it, and the fix is on the host.
    #[error("{0}")]
    Unreachable(String),
    /// A Docker Engine API call failed (the daemon answered with an error, or the answer made
    /// no sense). `op` says what the backend was doing.
    #[error("Docker Engine API: {op}: {message}")]
    Engine {
        /// What the backend was doing (`create container bot-bottle-agent-x`, ...).
        op: String,
        /// Why it failed, with what to do about it when known.
        message: String,
    },
    /// A bottle's files cannot be packed into its files volumes ([`files`]).
    #[error("{0}")]
    Files(String),
    /// A `BOT_BOTTLE_*` setting has a value that cannot be used (the message says which).
    #[error("{0}")]
    Setting(String),
    /// `BOT_BOTTLE_RUNTIME` names no backend.
    #[error("BOT_BOTTLE_RUNTIME={value:?} is not a runtime backend: use compose, engine or auto")]
    UnknownBackend {
        /// The value found.
        value: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(
        name: &str,
        project: Option<&str>,
        slug: Option<&str>,
        service: &str,
    ) -> ContainerFacts {
        let mut labels = HashMap::from([(SERVICE_LABEL.to_string(), service.to_string())]);
        if let Some(p) = project {
            labels.insert(PROJECT_LABEL.to_string(), p.to_string());
        }
        if let Some(s) = slug {
            labels.insert(
                bottle_compose::render::LABEL_SLUG.to_string(),
                s.to_string(),
            );
        }
        ContainerFacts {
            name: name.to_string(),
            labels,
            status: "running".to_string(),
            exit_code: 0,
            health: None,
            ports: vec![],
        }
    }

    #[test]
    fn subnets_of_other_networks_are_taken() {
        let net = |project: Option<&str>, subnets: &[&str]| bollard::models::Network {
            labels: project.map(|p| HashMap::from([(PROJECT_LABEL.to_string(), p.to_string())])),
            ipam: Some(bollard::models::Ipam {
                config: Some(
                    subnets
                        .iter()
                        .map(|s| bollard::models::IpamConfig {
                            subnet: Some(s.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let found = foreign_subnets(
            &[
                net(Some("bb-a"), &["10.213.0.16/28"]),
                net(Some("bb-b"), &["10.213.0.32/28", "fd00::/64"]),
                net(None, &["172.17.0.0/16"]),
                net(None, &[]),
                net(None, &["10.1.2.3/24", "garbage"]),
            ],
            "bb-a",
        );
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["10.1.2.0/24", "10.213.0.32/28", "172.17.0.0/16"]);
    }

    #[test]
    fn containers_group_into_bottles_by_their_labels() {
        let found = FoundBottle::group([
            facts("/bb-sidecars-b", Some("bb-b"), Some("b"), "sidecars"),
            facts("/bb-agent-a", Some("bb-a"), Some("a"), "agent"),
            facts("/bb-agent-b", Some("bb-b"), Some("b"), "agent"),
            facts("/stray", None, Some("c"), "agent"),
            facts("/stray2", Some("bb-d"), None, "agent"),
        ]);
        let summary: Vec<(&str, &str, Vec<&str>)> = found
            .iter()
            .map(|f| {
                (
                    f.project.as_str(),
                    f.slug.as_str(),
                    f.services.iter().map(|s| s.service.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("bb-a", "a", vec!["agent"]),
                ("bb-b", "b", vec!["agent", "sidecars"])
            ]
        );
    }
}

/// The argv that runs a compose healthcheck `test` the way Docker does: `CMD` is the argv,
/// `CMD-SHELL` goes through `/bin/sh -c`; `NONE` and anything else have none.
pub fn healthcheck_argv(test: &[String]) -> Option<Vec<String>> {
    match test.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
        Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
            Some(vec!["/bin/sh".into(), "-c".into(), rest.join(" ")])
        }
        _ => None,
    }
}

#[cfg(test)]
mod healthcheck_tests {
    use super::healthcheck_argv;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn healthcheck_tests_become_the_argv_docker_runs() {
        assert_eq!(
            healthcheck_argv(&v(&["CMD", "/sidecar-init", "health"])),
            Some(v(&["/sidecar-init", "health"]))
        );
        assert_eq!(
            healthcheck_argv(&v(&["CMD-SHELL", "curl -f localhost"])),
            Some(v(&["/bin/sh", "-c", "curl -f localhost"]))
        );
        assert_eq!(healthcheck_argv(&v(&["NONE"])), None);
        assert_eq!(healthcheck_argv(&v(&["CMD"])), None);
        assert_eq!(healthcheck_argv(&[]), None);
    }
}
