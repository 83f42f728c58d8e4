//! The Docker Engine API backend: the bottle's compose model applied with direct API calls
//! (bollard over the unix socket), for hosts without a compose command (e.g. the control plane
//! in a container with only the socket mounted).
//!
//! It creates exactly what `docker-compose -p <project> up -d` creates from the same model —
//! names (`<project>_<key>` networks and volumes, the model's container names), compose's
//! labels, aliases, mounts, limits and healthcheck — so compose run by hand, the compose CLI
//! backend and this one can each inspect and take down what another brought up
//! (`tests/e2e/tests/backends.rs` compares both backends' containers field by field).
//!
//! - **Pure mapping.** [`plan_container`], [`network_request`] and [`volume_request`] turn the
//!   model into API request bodies without Docker; the [`Engine`] methods only sequence calls.
//! - **Start order.** Services start in `depends_on` order ([`start_order`]); a dependent is
//!   created only once its dependencies meet their condition (`service_healthy`: Docker's
//!   health status is `healthy`), as compose does, bounded by `up`'s timeout.
//! - **Idempotent `up`.** Existing networks and volumes are kept; a container of the project
//!   whose config hash or image changed is replaced, an unchanged one only started.
//! - **Errors.** A daemon that cannot be reached at all is [`RuntimeError::Unreachable`];
//!   everything else the daemon refuses is [`RuntimeError::Engine`] naming the operation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::StartExecResults;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointIpamConfig, EndpointSettings,
    ExecConfig, HealthConfig, HostConfig, Ipam, IpamConfig, Mount as ApiMount, MountType,
    MountVolumeOptions, NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
    NetworkingConfig, PortBinding as ApiPortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, LogsOptions, RemoveContainerOptions, RemoveVolumeOptions,
    StopContainerOptions, UploadToContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use bottle_compose::model::{Mount, Network, Project, Service, Volume};
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, OnceCell};

use super::command::display;
use super::compose_cli::{write_compose_files, COMPOSE_FILE};
use super::files::{FileDelivery, FileVolume};
use super::{
    statuses, ContainerFacts, ExecOutput, ExecStream, FoundBottle, LogLine, LogOptions, Runtime,
    RuntimeError, Stream, PROJECT_LABEL, SERVICE_LABEL,
};
use crate::api::{DownReport, ServiceStatus};

/// A files volume's loader container: `<volume>-loader`.
pub const LOADER_SUFFIX: &str = "-loader";
/// Label on loader containers (the project they fill for), so `down` finds leftovers.
pub const LOADER_LABEL: &str = "io.bot-bottle.files-loader";
/// Label on files volumes: where the service mounts them.
pub const FILES_LABEL: &str = "io.bot-bottle.files";
/// Where a loader mounts its volume.
const LOADER_MOUNT: &str = "/fill";
/// A loader's command: never run.
const LOADER_COMMAND: &str = "sidecar-bundle-files-loader";

/// Where the Docker socket is when `DOCKER_HOST` names no unix socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The compose version written into `com.docker.compose.version`: the one whose output this
/// backend reproduces (what docker-compose 1.29.2 writes), so objects look alike whoever made
/// them.
pub const COMPOSE_VERSION: &str = "1.29.2";
/// Compose's label naming a network's key in the project.
pub const NETWORK_LABEL: &str = "com.docker.compose.network";
/// Compose's label naming a volume's key in the project.
pub const VOLUME_LABEL: &str = "com.docker.compose.volume";
/// Compose's label telling service containers (`False`) from `run` containers (`True`).
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";
/// Compose's replica number label (compose refuses containers without it).
pub const CONTAINER_NUMBER_LABEL: &str = "com.docker.compose.container-number";
/// Compose's label naming the project directory.
pub const WORKING_DIR_LABEL: &str = "com.docker.compose.project.working_dir";
/// Compose's label naming the compose files (as given with `-f`: `compose.yaml`, relative to
/// the working directory label).
pub const CONFIG_FILES_LABEL: &str = "com.docker.compose.project.config_files";
/// Compose's label carrying its version.
pub const VERSION_LABEL: &str = "com.docker.compose.version";
/// Compose's label carrying a hash of the service's configuration: `up` replaces a container
/// whose hash differs from the model's. This backend's hash is its own (a SHA-256 of the
/// service's model), so compose recreates an Engine-made container on its next `up`, and
/// vice versa: harmless, and never a stale container.
pub const CONFIG_HASH_LABEL: &str = "com.docker.compose.config-hash";

/// Deadline of one API request (answer headers; streamed bodies like logs are not bounded).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// Deadline of `exec` (the same as the compose CLI backend's docker queries).
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);
/// Health polling interval while `up` waits for a dependency.
const POLL: Duration = Duration::from_millis(250);
/// Longest one run of a healthcheck command may take while a dependent waits on it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two runs of a healthcheck command while a dependent waits on it.
const PROBE_PAUSE: Duration = Duration::from_millis(20);

/// Inspections in flight at once when listing containers.
const INSPECT_CONCURRENCY: usize = 16;

/// The Docker Engine API backend. Connects lazily: constructing it makes no request, so a
/// control plane can start (and report 503s) while Docker is down.
pub struct Engine {
    socket: String,
    docker: OnceCell<Docker>,
    files: FileDelivery,
}

/// The socket path named by `DOCKER_HOST` when it is `unix://…`, else [`DEFAULT_SOCKET`]
/// (TCP and SSH hosts are not supported by this backend; a warning says so).
pub fn socket_path(docker_host: Option<&str>) -> String {
    match docker_host.map(str::trim).filter(|h| !h.is_empty()) {
        Some(host) => match host.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => path.to_string(),
            _ => {
                tracing::warn!(
                    docker_host = host,
                    "DOCKER_HOST is not a unix:// socket; the Engine backend uses {DEFAULT_SOCKET}"
                );
                DEFAULT_SOCKET.to_string()
            }
        },
        None => DEFAULT_SOCKET.to_string(),
    }
}

impl Engine {
    /// A backend talking to the socket named by `docker_host` (the value of `DOCKER_HOST`).
    pub fn new(docker_host: Option<String>) -> Engine {
        Engine {
            socket: socket_path(docker_host.as_deref()),
            docker: OnceCell::new(),
            files: FileDelivery::Bind,
        }
    }

    /// The same backend delivering bottles' files as `files` says ([`super::files`]).
    pub fn with_files(self, files: FileDelivery) -> Engine {
        Engine { files, ..self }
    }

    /// The socket path this backend uses.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The client, connected and version-negotiated on first use (retried after a failure).
    async fn docker(&self) -> Result<&Docker, RuntimeError> {
        self.docker
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_unix(
                    &self.socket,
                    REQUEST_TIMEOUT_SECS,
                    API_DEFAULT_VERSION,
                )
                .map_err(|e| self.err("connect", e))?;
                // The client speaks the newest API bollard knows; Docker 20.10 (API 1.41)
                // rejects newer versions, so agree on the daemon's.
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| self.err("negotiate the API version", e))
            })
            .await
    }

    fn err(&self, op: impl Into<String>, e: DockerError) -> RuntimeError {
        engine_error(&self.socket, op.into(), e)
    }

    /// Ids of the project's containers (all states), optionally only one service's.
    async fn container_ids(
        &self,
        project: &str,
        service: Option<&str>,
    ) -> Result<Vec<String>, RuntimeError> {
        let docker = self.docker().await?;
        let mut labels = vec![format!("{PROJECT_LABEL}={project}")];
        if let Some(s) = service {
            labels.push(format!("{SERVICE_LABEL}={s}"));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), labels)])),
            ..Default::default()
        };
        let list = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.err(format!("list the containers of {project}"), e))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Inspect containers, several at a time (a listing of 20 bottles is 40 inspections).
    /// A container removed between the listing and its inspection is left out.
    async fn facts_of(&self, ids: Vec<String>) -> Result<Vec<ContainerFacts>, RuntimeError> {
        use futures_util::stream::{self, TryStreamExt};
        let found: Vec<Option<ContainerFacts>> = stream::iter(ids)
            .map(|id| async move {
                Ok::<_, RuntimeError>(self.inspect(&id).await?.map(container_facts))
            })
            .buffer_unordered(INSPECT_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn container_of(&self, project: &str, service: &str) -> Result<String, RuntimeError> {
        let ids = self.container_ids(project, Some(service)).await?;
        ids.into_iter().next().ok_or_else(|| {
            RuntimeError::Unhealthy(format!(
                "project {project} has no {service} container (is the bottle up?)"
            ))
        })
    }

    async fn inspect(&self, name: &str) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        let docker = self.docker().await?;
        match docker.inspect_container(name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.err(format!("inspect container {name}"), e)),
        }
    }

    /// Create the network unless it exists; an existing one must match the model (compose
    /// refuses a changed network too: it has to be recreated, which `down` does).
    async fn ensure_network(&self, request: NetworkCreateRequest) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let name = request.name.clone();
        match docker.inspect_network(&name, None).await {
            Ok(existing) => {
                let options = existing.options.unwrap_or_default();
                let wanted = request.options.clone().unwrap_or_default();
                let same_options = wanted.iter().all(|(k, v)| options.get(k) == Some(v));
                // A fixed subnet must be the existing network's (the model's fixed addresses
                // live in it).
                let subnets = |ipam: Option<&Ipam>| -> BTreeSet<String> {
                    ipam.and_then(|i| i.config.as_ref())
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c.subnet.clone())
                        .collect()
                };
                let wanted_subnets = subnets(request.ipam.as_ref());
                let same_subnets =
                    wanted_subnets.is_empty() || wanted_subnets == subnets(existing.ipam.as_ref());
                if existing.internal.unwrap_or(false) != request.internal.unwrap_or(false)
                    || !same_options
                    || !same_subnets
                {
                    return Err(RuntimeError::Engine {
                        op: format!("create network {name}"),
                        message: "a network of that name exists with other settings (internal flag, driver options or subnet); take the bottle down first so it is recreated".to_string(),
                    });
                }
                Ok(())
            }
            Err(e) if is_not_found(&e) => match docker.create_network(request).await {
                Ok(_) => Ok(()),
                // Created concurrently by someone else: fine.
                Err(DockerError::DockerResponseServerError {
                    status_code: 409, ..
                }) => Ok(()),
                Err(e) => Err(self.err(format!("create network {name}"), e)),
            },
            Err(e) => Err(self.err(format!("inspect network {name}"), e)),
        }
    }

    async fn ensure_volume(&self, request: VolumeCreateRequest) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let name = request.name.clone().unwrap_or_default();
        match docker.inspect_volume(&name).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => docker
                .create_volume(request)
                .await
                .map(drop)
                .map_err(|e| self.err(format!("create volume {name}"), e)),
            Err(e) => Err(self.err(format!("inspect volume {name}"), e)),
        }
    }

    /// The image's id, pulling the image first when it is not present (as compose does).
    async fn image_id(&self, image: &str) -> Result<String, RuntimeError> {
        let docker = self.docker().await?;
        match docker.inspect_image(image).await {
            Ok(i) => return Ok(i.id.unwrap_or_default()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(self.err(format!("inspect image {image}"), e)),
        }
        let (repo, tag) = split_image(image);
        let options = CreateImageOptions {
            from_image: Some(repo),
            tag: Some(tag),
            ..Default::default()
        };
        let mut pull = docker.create_image(Some(options), None, None);
        while let Some(item) = pull.next().await {
            let failure = match item {
                Ok(info) => info.error_detail.and_then(|d| d.message),
                Err(e) => Some(e.to_string()),
            };
            if let Some(message) = failure {
                return Err(RuntimeError::Engine {
                    op: format!("pull image {image}"),
                    message: format!(
                        "{message} (the image is not present locally: build it, e.g. with scripts/images.sh, or make its registry reachable)"
                    ),
                });
            }
        }
        docker
            .inspect_image(image)
            .await
            .map(|i| i.id.unwrap_or_default())
            .map_err(|e| self.err(format!("inspect image {image}"), e))
    }

    /// Stop (with the container's own stop timeout, i.e. the service's `stop_grace_period`)
    /// and remove a container with its anonymous volumes. A container already gone is fine.
    async fn stop_and_remove(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        match docker
            .stop_container(id, None::<StopContainerOptions>)
            .await
        {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(self.err(format!("stop container {id}"), e)),
        }
        let options = RemoveContainerOptions {
            v: true,
            force: true,
            ..Default::default()
        };
        match docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            // 404: gone; 409: removal already in progress.
            Err(DockerError::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(self.err(format!("remove container {id}"), e)),
        }
    }

    /// Attach the container to its networks the way compose does at start: every network gets
    /// the aliases (service name, model aliases) plus the container's short id; an endpoint
    /// made at create time without the short id is replaced.
    async fn connect_networks(&self, id: &str, plan: &ContainerPlan) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let short = short_id(id);
        let connected = self
            .inspect(id)
            .await?
            .and_then(|c| c.network_settings)
            .and_then(|n| n.networks)
            .unwrap_or_default();
        for PlannedNetwork {
            name: network,
            aliases,
            ipv4_address,
        } in &plan.networks
        {
            if let Some(endpoint) = connected.get(network) {
                let has_short = endpoint
                    .aliases
                    .as_ref()
                    .is_some_and(|a| a.iter().any(|x| x == short));
                if has_short {
                    continue;
                }
                let request = NetworkDisconnectRequest {
                    container: id.to_string(),
                    force: None,
                };
                docker
                    .disconnect_network(network, request)
                    .await
                    .map_err(|e| self.err(format!("disconnect {} from {network}", plan.name), e))?;
            }
            let request = NetworkConnectRequest {
                container: id.to_string(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(with_alias(aliases, short)),
                    ipam_config: endpoint_ipam(ipv4_address.as_deref()),
                    ..Default::default()
                }),
            };
            docker
                .connect_network(network, request)
                .await
                .map_err(|e| self.err(format!("connect {} to {network}", plan.name), e))?;
        }
        Ok(())
    }

    /// Create (or keep, or replace) one service's container and attach its networks, without
    /// starting it. Returns its id when it still has to be started.
    ///
    /// Why apart from starting: every container of the bottle is prepared at once, while the
    /// first ones start and get ready; a dependent then only has to be started once its
    /// dependencies meet their condition (what compose guarantees: nothing of it *runs* before).
    async fn prepare_container(
        &self,
        project: &str,
        plan: &ContainerPlan,
    ) -> Result<Option<String>, RuntimeError> {
        let docker = self.docker().await?;
        let image = plan.body.image.clone().unwrap_or_default();
        let image_id = self.image_id(&image).await?;
        if let Some(existing) = self.inspect(&plan.name).await? {
            let labels = existing
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            let owner = labels.get(PROJECT_LABEL);
            if owner.map(String::as_str) != Some(project) {
                return Err(RuntimeError::Engine {
                    op: format!("create container {}", plan.name),
                    message: format!(
                        "a container of that name exists and belongs to {} (remove it with `docker rm -f {}`)",
                        owner.map_or("no compose project".to_string(), |p| format!("project {p}")),
                        plan.name
                    ),
                });
            }
            let id = existing.id.clone().unwrap_or_else(|| plan.name.clone());
            let unchanged = labels.get(CONFIG_HASH_LABEL) == Some(&plan.config_hash)
                && existing.image.as_deref() == Some(image_id.as_str());
            if unchanged {
                let running = existing
                    .state
                    .as_ref()
                    .and_then(|s| s.running)
                    .unwrap_or(false);
                if !running {
                    self.connect_networks(&id, plan).await?;
                    return Ok(Some(id));
                }
                return Ok(None);
            }
            tracing::info!(container = %plan.name, "configuration or image changed: recreating");
            self.stop_and_remove(&id).await?;
        }
        let options = CreateContainerOptions {
            name: Some(plan.name.clone()),
            ..Default::default()
        };
        let created = docker
            .create_container(Some(options), plan.body.clone())
            .await
            .map_err(|e| self.err(format!("create container {}", plan.name), e))?;
        for warning in &created.warnings {
            tracing::warn!(container = %plan.name, "{warning}");
        }
        self.connect_networks(&created.id, plan).await?;
        Ok(Some(created.id))
    }

    async fn start(&self, id: &str, plan: &ContainerPlan) -> Result<(), RuntimeError> {
        self.docker()
            .await?
            .start_container(id, None)
            .await
            .map_err(|e| self.err(format!("start container {}", plan.name), e))
    }

    /// Run `argv` in container `id` (as `user`) and collect its output and exit code.
    async fn exec_in(
        &self,
        id: &str,
        argv: &[String],
        user: Option<&str>,
    ) -> Result<ExecOutput, RuntimeError> {
        let docker = self.docker().await?;
        let config = ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(argv.to_vec()),
            user: user.map(String::from),
            ..Default::default()
        };
        let created = docker
            .create_exec(id, config)
            .await
            .map_err(|e| self.err(format!("exec in {id}"), e))?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        match docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| self.err(format!("exec in {id}"), e))?
        {
            StartExecResults::Attached { mut output, .. } => {
                while let Some(item) = output.next().await {
                    match item.map_err(|e| self.err(format!("exec in {id}"), e))? {
                        LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            stdout.extend_from_slice(&message)
                        }
                        LogOutput::StdIn { .. } => {}
                    }
                }
            }
            StartExecResults::Detached => {}
        }
        // The output ends when the process does; the exit code can lag a moment behind.
        loop {
            let info = docker
                .inspect_exec(&created.id)
                .await
                .map_err(|e| self.err(format!("inspect exec in {id}"), e))?;
            if info.running != Some(true) {
                let code = info
                    .exit_code
                    .and_then(|c| i32::try_from(c).ok())
                    .unwrap_or(-1);
                return Ok(ExecOutput {
                    code,
                    stdout,
                    stderr,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Run a service's healthcheck command in its container once, the way Docker's healthcheck
    /// does (`CMD` argv, or `CMD-SHELL` through `/bin/sh -c`): whether it exited 0.
    ///
    /// Why: Docker runs the first check only one `interval` after the start (Docker < 25 has no
    /// `start_interval`), so a dependent waiting for Docker's `healthy` waits about a second
    /// for a bundle that is ready in ~0.2 s. Running the same command back to back while a
    /// dependent waits gives the same answer, as soon as it is true.
    async fn probe_health(&self, container: &str, test: &[String]) -> bool {
        let Some(argv) = super::healthcheck_argv(test) else {
            return false;
        };
        let run = self.exec_in(container, &argv, None);
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, run).await,
            Ok(Ok(ExecOutput { code: 0, .. }))
        )
    }

    /// Wait until `dependency`'s container meets `condition` (compose's `depends_on`
    /// conditions), or fail with what its healthcheck last said.
    ///
    /// For `service_healthy` the service's own healthcheck command (`test`) is also run back to
    /// back while waiting ([`Engine::probe_health`]); its first success meets the condition.
    async fn wait_for(
        &self,
        container: &str,
        condition: &str,
        test: Option<&[String]>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        loop {
            let info = self.inspect(container).await?.ok_or_else(|| {
                RuntimeError::Unhealthy(format!("container {container} disappeared during up"))
            })?;
            match dependency_state(&info, condition) {
                DependencyState::Met => return Ok(()),
                DependencyState::Waiting(_)
                    if condition == "service_healthy"
                        && is_running(&info)
                        && match test {
                            Some(test) => self.probe_health(container, test).await,
                            None => false,
                        } =>
                {
                    return Ok(())
                }
                DependencyState::Failed(why) => {
                    return Err(RuntimeError::Unhealthy(format!(
                        "container {container} {why} (see `docker logs {container}`)"
                    )))
                }
                DependencyState::Waiting(state) => {
                    if Instant::now() >= deadline {
                        return Err(RuntimeError::Unhealthy(format!(
                            "container {container} did not become {} within {} s ({state}; see `docker logs {container}`)",
                            condition_goal(condition),
                            timeout.as_secs()
                        )));
                    }
                }
            }
            let pause = if condition == "service_healthy" && test.is_some() {
                PROBE_PAUSE
            } else {
                POLL
            };
            tokio::time::sleep(pause).await;
        }
    }

    async fn up_inner(
        &self,
        project: &Project,
        dir: &Path,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let deadline = started + timeout;
        // Validate everything before touching Docker.
        let order = start_order(project)?;
        let mut plans = order
            .iter()
            .map(|s| plan_container(project, s, dir))
            .collect::<Result<Vec<_>, _>>()?;
        if self.files == FileDelivery::Volumes {
            let owners =
                crate::owners::load_record(dir).map_err(|e| RuntimeError::Files(e.to_string()))?;
            for plan in &mut plans {
                deliver_in_volumes(plan, project, dir, &owners)?;
            }
        }
        write_compose_files(project, dir)?;
        // Independent of each other: at once.
        let networks = project.networks.iter().map(|(key, network)| {
            self.ensure_network(network_request(&project.name, key, network))
        });
        for result in futures_util::future::join_all(networks).await {
            result?;
        }
        let t = crate::timing::phase("engine: networks", started);
        for (key, volume) in &project.volumes {
            self.ensure_volume(volume_request(&project.name, key, volume))
                .await?;
        }
        self.remove_orphans(project).await?;
        let t = crate::timing::phase("engine: volumes, orphans", t);
        let t = if self.files == FileDelivery::Volumes {
            self.fill_file_volumes(&project.name, &plans).await?;
            crate::timing::phase("engine: files volumes", t)
        } else {
            t
        };
        // Every container is created (not started) at once; then each is started in order,
        // once its dependencies meet their condition.
        let prepared = plans
            .iter()
            .map(|plan| self.prepare_container(&project.name, plan));
        let mut pending = Vec::new();
        for result in futures_util::future::join_all(prepared).await {
            pending.push(result?);
        }
        let mut t = crate::timing::phase("engine: create every container", t);
        for (plan, id) in plans.iter().zip(pending) {
            let service = &project.services[&plan.service];
            for (dependency, condition) in &service.depends_on {
                let dependency = &project.services[dependency];
                let test = dependency.healthcheck.as_ref().map(|h| h.test.as_slice());
                self.wait_for(
                    &dependency.container_name,
                    &condition.condition,
                    test,
                    deadline,
                    timeout,
                )
                .await?;
            }
            if !service.depends_on.is_empty() {
                t = crate::timing::phase(
                    &format!("engine: {} waits for its dependencies", plan.service),
                    t,
                );
            }
            if let Some(id) = id {
                self.start(&id, plan).await?;
                t = crate::timing::phase(&format!("engine: start {}", plan.service), t);
            }
        }
        if self.files == FileDelivery::Volumes {
            self.remove_stale_file_volumes(&project.name, &plans).await;
        }
        Ok(())
    }

    /// Every files volume the plans mount, filled unless it already is (see
    /// [`super::files`]); at once, as they are independent.
    async fn fill_file_volumes(
        &self,
        project: &str,
        plans: &[ContainerPlan],
    ) -> Result<(), RuntimeError> {
        let mut seen = BTreeSet::new();
        let fills = plans.iter().flat_map(|plan| {
            let image = plan.body.image.clone().unwrap_or_default();
            plan.file_volumes
                .iter()
                .filter(|v| seen.insert(v.name.clone()))
                .map(move |v| self.fill_file_volume(project, v, image.clone()))
                .collect::<Vec<_>>()
        });
        for result in futures_util::future::join_all(fills).await {
            result?;
        }
        Ok(())
    }

    /// One files volume: kept when it exists without a loader (complete), else (re)filled
    /// through a created-never-started loader container of `image`, removed once the archive
    /// is in.
    async fn fill_file_volume(
        &self,
        project: &str,
        volume: &FileVolume,
        image: String,
    ) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let loader = format!("{}{LOADER_SUFFIX}", volume.name);
        let exists = match docker.inspect_volume(&volume.name).await {
            Ok(_) => true,
            Err(e) if is_not_found(&e) => false,
            Err(e) => return Err(self.err(format!("inspect volume {}", volume.name), e)),
        };
        let leftover = self.inspect(&loader).await?.is_some();
        if exists && !leftover {
            return Ok(());
        }
        if leftover {
            tracing::info!(volume = %volume.name, "a fill was interrupted: filling again");
            self.stop_and_remove(&loader).await?;
            if exists {
                docker
                    .remove_volume(&volume.name, None::<RemoveVolumeOptions>)
                    .await
                    .map_err(|e| self.err(format!("remove volume {}", volume.name), e))?;
            }
        }
        let body = ContainerCreateBody {
            image: Some(image),
            // Never started: the command only has to exist for the create to pass.
            cmd: Some(vec![LOADER_COMMAND.to_string()]),
            labels: Some(HashMap::from([(
                LOADER_LABEL.to_string(),
                project.to_string(),
            )])),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_string()),
                mounts: Some(vec![ApiMount {
                    typ: Some(MountType::VOLUME),
                    source: Some(volume.name.clone()),
                    target: Some(LOADER_MOUNT.to_string()),
                    read_only: Some(false),
                    volume_options: Some(MountVolumeOptions {
                        no_copy: Some(true),
                        labels: Some(HashMap::from([
                            (PROJECT_LABEL.to_string(), project.to_string()),
                            (FILES_LABEL.to_string(), volume.target.clone()),
                        ])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(loader.clone()),
            ..Default::default()
        };
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.err(format!("create the loader of volume {}", volume.name), e))?;
        let upload = UploadToContainerOptions {
            path: LOADER_MOUNT.to_string(),
            ..Default::default()
        };
        docker
            .upload_to_container(
                &loader,
                Some(upload),
                bollard::body_full(bytes::Bytes::from(volume.archive.clone())),
            )
            .await
            .map_err(|e| self.err(format!("fill volume {}", volume.name), e))?;
        self.stop_and_remove(&loader).await
    }

    /// Files volumes of the project that no plan mounts any more (an earlier `up`'s files):
    /// removed where Docker lets us (one still mounted by a container is kept for later).
    async fn remove_stale_file_volumes(&self, project: &str, plans: &[ContainerPlan]) {
        let Ok(docker) = self.docker().await else {
            return;
        };
        let keep: BTreeSet<&str> = plans
            .iter()
            .flat_map(|p| p.file_volumes.iter().map(|v| v.name.as_str()))
            .collect();
        let options = ListVolumesOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![
                    format!("{PROJECT_LABEL}={project}"),
                    FILES_LABEL.to_string(),
                ],
            )])),
        };
        let Ok(list) = docker.list_volumes(Some(options)).await else {
            return;
        };
        for v in list.volumes.unwrap_or_default() {
            if !keep.contains(v.name.as_str()) {
                if let Err(e) = docker
                    .remove_volume(&v.name, None::<RemoveVolumeOptions>)
                    .await
                {
                    tracing::debug!(volume = %v.name, error = %e, "stale files volume kept");
                }
            }
        }
    }

    /// Compose's `--remove-orphans`: containers of the project whose service left the model.
    async fn remove_orphans(&self, project: &Project) -> Result<(), RuntimeError> {
        for id in self.container_ids(&project.name, None).await? {
            let Some(info) = self.inspect(&id).await? else {
                continue;
            };
            let service = info
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(SERVICE_LABEL).cloned())
                .unwrap_or_default();
            if !project.services.contains_key(&service) {
                tracing::info!(container = %id, %service, "removing orphan container");
                self.stop_and_remove(&id).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Runtime for Engine {
    async fn describe(&self) -> Result<String, RuntimeError> {
        let docker = self.docker().await?;
        let version = docker
            .version()
            .await
            .map_err(|e| self.err("read the daemon version", e))?;
        Ok(format!(
            "Docker Engine API {} (Docker {}) at unix://{}",
            docker.client_version(),
            version.version.unwrap_or_else(|| "?".to_string()),
            self.socket
        ))
    }

    async fn up(
        &self,
        project: &Project,
        dir: &Path,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        // The health waits inside report their own, clearer timeout first; this bounds the
        // API calls around them.
        let outer = timeout + Duration::from_secs(5);
        tokio::time::timeout(outer, self.up_inner(project, dir, timeout))
            .await
            .unwrap_or_else(|_| {
                Err(RuntimeError::Timeout {
                    command: format!("up {} (Docker Engine API)", project.name),
                    seconds: outer.as_secs(),
                })
            })
    }

    async fn down(&self, project: &str, _dir: Option<&Path>) -> Result<DownReport, RuntimeError> {
        let docker = self.docker().await?;
        let filter = || {
            Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{PROJECT_LABEL}={project}")],
            )]))
        };
        let mut containers = self.container_ids(project, None).await?;
        // Loaders left by an interrupted fill hold their volumes: they go first.
        let loaders = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LOADER_LABEL}={project}")],
            )])),
            ..Default::default()
        };
        let loaders = docker
            .list_containers(Some(loaders))
            .await
            .map_err(|e| self.err(format!("list the loaders of {project}"), e))?;
        containers.extend(loaders.into_iter().filter_map(|c| c.id));
        let networks: Vec<String> = docker
            .list_networks(Some(ListNetworksOptions { filters: filter() }))
            .await
            .map_err(|e| self.err(format!("list the networks of {project}"), e))?
            .into_iter()
            .filter_map(|n| n.id)
            .collect();
        let volumes: Vec<String> = docker
            .list_volumes(Some(ListVolumesOptions { filters: filter() }))
            .await
            .map_err(|e| self.err(format!("list the volumes of {project}"), e))?
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect();
        let report = DownReport {
            containers: containers.len(),
            networks: networks.len(),
            volumes: volumes.len(),
            state_removed: false,
        };
        if report.nothing() {
            return Ok(report);
        }
        // Stop in parallel: each container gets its own grace, and the total stays one grace.
        let stops = containers.iter().map(|id| self.stop_and_remove(id));
        for result in futures_util::future::join_all(stops).await {
            result?;
        }
        for id in &networks {
            match docker.remove_network(id).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(self.err(format!("remove network {id}"), e)),
            }
        }
        for name in &volumes {
            match docker
                .remove_volume(name, None::<RemoveVolumeOptions>)
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(self.err(format!("remove volume {name}"), e)),
            }
        }
        Ok(report)
    }

    async fn bottles(&self) -> Result<Vec<FoundBottle>, RuntimeError> {
        let docker = self.docker().await?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![bottle_compose::render::LABEL_SLUG.to_string()],
            )])),
            ..Default::default()
        };
        let list = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.err("list the bottles' containers", e))?;
        let ids: Vec<String> = list.into_iter().filter_map(|c| c.id).collect();
        Ok(FoundBottle::group(self.facts_of(ids).await?))
    }

    async fn containers(&self, project: &str) -> Result<Vec<ServiceStatus>, RuntimeError> {
        let ids = self.container_ids(project, None).await?;
        Ok(statuses(self.facts_of(ids).await?))
    }

    async fn logs(
        &self,
        project: &str,
        service: &str,
        options: LogOptions,
    ) -> Result<mpsc::Receiver<LogLine>, RuntimeError> {
        let id = self.container_of(project, service).await?;
        let docker = self.docker().await?.clone();
        let request = LogsOptions {
            follow: options.follow,
            stdout: true,
            stderr: true,
            tail: options
                .tail
                .map_or_else(|| "all".to_string(), |n| n.to_string()),
            ..Default::default()
        };
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut stream = docker.logs(&id, Some(request));
            let mut out = LineBuffer::default();
            let mut err = LineBuffer::default();
            while let Some(item) = stream.next().await {
                let (which, buffer, bytes) = match item {
                    Ok(LogOutput::StdErr { message }) => (Stream::Stderr, &mut err, message),
                    Ok(
                        LogOutput::StdOut { message }
                        | LogOutput::Console { message }
                        | LogOutput::StdIn { message },
                    ) => (Stream::Stdout, &mut out, message),
                    Err(e) => {
                        tracing::debug!(container = %id, "log stream ended: {e}");
                        break;
                    }
                };
                for line in buffer.push(&bytes) {
                    if tx
                        .send(LogLine {
                            stream: which,
                            line,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            for (stream, buffer) in [(Stream::Stdout, out), (Stream::Stderr, err)] {
                if let Some(line) = buffer.finish() {
                    if tx.send(LogLine { stream, line }).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn exec(
        &self,
        project: &str,
        service: &str,
        argv: &[String],
        user: Option<&str>,
    ) -> Result<ExecOutput, RuntimeError> {
        let id = self.container_of(project, service).await?;
        tokio::time::timeout(EXEC_TIMEOUT, self.exec_in(&id, argv, user))
            .await
            .unwrap_or_else(|_| {
                Err(RuntimeError::Timeout {
                    command: format!("exec in {project}/{service}: {}", display(argv)),
                    seconds: EXEC_TIMEOUT.as_secs(),
                })
            })
    }

    fn file_delivery(&self) -> FileDelivery {
        self.files
    }

    async fn exec_stream(
        &self,
        project: &str,
        service: &str,
        argv: &[String],
        user: Option<&str>,
    ) -> Result<ExecStream, RuntimeError> {
        let id = self.container_of(project, service).await?;
        let docker = self.docker().await?;
        let config = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(argv.to_vec()),
            user: user.map(String::from),
            ..Default::default()
        };
        let op = || format!("exec in {project}/{service}: {}", display(argv));
        let created = docker
            .create_exec(&id, config)
            .await
            .map_err(|e| self.err(op(), e))?;
        match docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| self.err(op(), e))?
        {
            StartExecResults::Attached { output, input } => {
                let stdout = output.filter_map(|item| async move {
                    match item {
                        Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                            Some(Ok(message))
                        }
                        Ok(LogOutput::StdErr { message }) => {
                            Some(Err(super::stderr_as_error(&message)))
                        }
                        Ok(LogOutput::StdIn { .. }) => None,
                        Err(e) => Some(Err(std::io::Error::other(e))),
                    }
                });
                let reader = tokio_util::io::StreamReader::new(Box::pin(stdout));
                Ok(Box::pin(tokio::io::join(reader, input)))
            }
            StartExecResults::Detached => Err(RuntimeError::Engine {
                op: op(),
                message: "the Engine started the exec detached".to_string(),
            }),
        }
    }

    async fn network_subnets(
        &self,
        project: &str,
    ) -> Result<Vec<bottle_spec::Subnet>, RuntimeError> {
        let docker = self.docker().await?;
        let networks = docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(|e| self.err("list the networks", e))?;
        Ok(super::foreign_subnets(&networks, project))
    }
}

/// One service's container as Engine API requests: the create body (including the primary
/// network's endpoint, as compose sends it) and the networks to (re)connect at start.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    /// The service's key in the model.
    pub service: String,
    /// The container name.
    pub name: String,
    /// The create-container body.
    pub body: ContainerCreateBody,
    /// Every network of the service, in compose's order (sorted by name).
    pub networks: Vec<PlannedNetwork>,
    /// The configuration hash written into [`CONFIG_HASH_LABEL`].
    pub config_hash: String,
    /// The files volumes its bind mounts became ([`deliver_in_volumes`]); empty with bind
    /// mounts.
    pub file_volumes: Vec<FileVolume>,
}

/// One network a container is attached to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PlannedNetwork {
    /// The network's full name.
    pub name: String,
    /// The aliases compose gives the container there (service name first, then the model's;
    /// the container's short id is added once it is known).
    pub aliases: Vec<String>,
    /// The container's fixed address there (the model's `ipv4_address`), if any.
    pub ipv4_address: Option<String>,
}

/// The endpoint's IPAM config for a fixed address, as compose sends it (`IPAMConfig:
/// {IPv4Address}`); none without one.
fn endpoint_ipam(ipv4_address: Option<&str>) -> Option<EndpointIpamConfig> {
    ipv4_address.map(|ip| EndpointIpamConfig {
        ipv4_address: Some(ip.to_string()),
        ..Default::default()
    })
}

/// Docker name of a project-scoped network or volume: compose's `<project>_<key>`.
pub fn full_name(project: &str, key: &str) -> String {
    format!("{project}_{key}")
}

/// The create request of one network of the model, with compose's labels.
pub fn network_request(project: &str, key: &str, network: &Network) -> NetworkCreateRequest {
    let mut labels: HashMap<String, String> = network.labels.clone().into_iter().collect();
    labels.insert(PROJECT_LABEL.to_string(), project.to_string());
    labels.insert(NETWORK_LABEL.to_string(), key.to_string());
    labels.insert(VERSION_LABEL.to_string(), COMPOSE_VERSION.to_string());
    NetworkCreateRequest {
        name: full_name(project, key),
        driver: Some("bridge".to_string()),
        internal: Some(network.internal),
        // compose sets it for every network on API >= 1.24
        attachable: Some(true),
        options: Some(network.driver_opts.clone().into_iter().collect()),
        // compose: `IPAMConfig(driver=... or 'default', pool_configs=[...])`, no options
        ipam: network.ipam.as_ref().map(|ipam| Ipam {
            driver: Some("default".to_string()),
            config: Some(
                ipam.config
                    .iter()
                    .map(|pool| IpamConfig {
                        subnet: Some(pool.subnet.clone()),
                        gateway: Some(pool.gateway.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            options: None,
        }),
        labels: Some(labels),
        ..Default::default()
    }
}

/// The create request of one named volume of the model, with compose's labels.
pub fn volume_request(project: &str, key: &str, volume: &Volume) -> VolumeCreateRequest {
    let mut labels: HashMap<String, String> = volume.labels.clone().into_iter().collect();
    labels.insert(PROJECT_LABEL.to_string(), project.to_string());
    labels.insert(VOLUME_LABEL.to_string(), key.to_string());
    labels.insert(VERSION_LABEL.to_string(), COMPOSE_VERSION.to_string());
    VolumeCreateRequest {
        name: Some(full_name(project, key)),
        driver: Some("local".to_string()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// Services in start order: every service after the services it `depends_on` (ties by
/// name). Fails on an unknown dependency or a cycle.
pub fn start_order(project: &Project) -> Result<Vec<String>, RuntimeError> {
    let mut order: Vec<String> = Vec::new();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    for (name, service) in &project.services {
        for dependency in service.depends_on.keys() {
            if !project.services.contains_key(dependency) {
                return Err(RuntimeError::Model(format!(
                    "services.{name}.depends_on: no service {dependency:?}"
                )));
            }
        }
    }
    while placed.len() < project.services.len() {
        let ready: Vec<&str> = project
            .services
            .iter()
            .filter(|(name, _)| !placed.contains(name.as_str()))
            .filter(|(_, s)| s.depends_on.keys().all(|d| placed.contains(d.as_str())))
            .map(|(name, _)| name.as_str())
            .collect();
        if ready.is_empty() {
            let stuck: Vec<&str> = project
                .services
                .keys()
                .map(String::as_str)
                .filter(|n| !placed.contains(n))
                .collect();
            return Err(RuntimeError::Model(format!(
                "depends_on has a cycle among {}",
                stuck.join(", ")
            )));
        }
        for name in ready {
            placed.insert(name);
            order.push(name.to_string());
        }
    }
    Ok(order)
}

/// The model's service `service` as Engine API requests, the way docker-compose 1.29 builds
/// them (long-syntax mounts as `Mounts`, ports as `ExposedPorts` + `PortBindings`, durations
/// in nanoseconds, the alphabetically first network as `NetworkMode`). `dir` is the project
/// directory: relative bind sources are resolved against it and it names the compose labels.
pub fn plan_container(
    project: &Project,
    service: &str,
    dir: &Path,
) -> Result<ContainerPlan, RuntimeError> {
    let s = project
        .services
        .get(service)
        .ok_or_else(|| RuntimeError::Model(format!("no service {service:?}")))?;
    let field = |name: &str| format!("services.{service}.{name}");
    let dir = absolute(dir);

    let mut labels: HashMap<String, String> = s.labels.clone().into_iter().collect();
    let config_hash = config_hash(project, service, &dir)?;
    for (k, v) in [
        (PROJECT_LABEL, project.name.clone()),
        (SERVICE_LABEL, service.to_string()),
        (ONEOFF_LABEL, "False".to_string()),
        (CONTAINER_NUMBER_LABEL, "1".to_string()),
        (WORKING_DIR_LABEL, dir.display().to_string()),
        // The file as named on compose's command line (`-f compose.yaml`, run in `dir`),
        // which is what compose writes here.
        (CONFIG_FILES_LABEL, COMPOSE_FILE.to_string()),
        (VERSION_LABEL, COMPOSE_VERSION.to_string()),
        (CONFIG_HASH_LABEL, config_hash.clone()),
    ] {
        labels.insert(k.to_string(), v);
    }

    let mut exposed: Vec<String> = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<ApiPortBinding>>> = HashMap::new();
    for p in &s.ports {
        let key = format!("{}/tcp", p.container_port);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(ApiPortBinding {
                host_ip: Some(p.host_ip.to_string()),
                host_port: Some(p.host_port.map(|h| h.to_string()).unwrap_or_default()),
            });
    }

    let mounts: Vec<ApiMount> = s
        .volumes
        .iter()
        .map(|m| match m {
            Mount::Bind {
                source,
                target,
                read_only,
            } => ApiMount {
                typ: Some(MountType::BIND),
                source: Some(resolve(&dir, source).display().to_string()),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                ..Default::default()
            },
            Mount::Volume {
                source,
                target,
                read_only,
            } => ApiMount {
                typ: Some(MountType::VOLUME),
                source: Some(full_name(&project.name, source)),
                target: Some(target.clone()),
                read_only: Some(*read_only),
                ..Default::default()
            },
        })
        .collect();

    let tmpfs: HashMap<String, String> = s
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((path, options)) => (path.to_string(), options.to_string()),
            None => (t.clone(), String::new()),
        })
        .collect();

    let healthcheck = match &s.healthcheck {
        None => None,
        Some(h) => {
            let nanos = |name: &str, value: &str| {
                parse_duration(value)
                    .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                    .map_err(|why| RuntimeError::Model(format!("{}: {why}", field(name))))
            };
            Some(HealthConfig {
                test: Some(h.test.clone()),
                interval: Some(nanos("healthcheck.interval", &h.interval)?),
                timeout: Some(nanos("healthcheck.timeout", &h.timeout)?),
                retries: Some(i64::from(h.retries)),
                start_period: Some(nanos("healthcheck.start_period", &h.start_period)?),
                ..Default::default()
            })
        }
    };
    let stop_timeout = parse_duration(&s.stop_grace_period)
        .map_err(|why| RuntimeError::Model(format!("{}: {why}", field("stop_grace_period"))))?;
    // Docker takes whole seconds; never shorten the grace.
    let stop_timeout =
        i64::try_from(stop_timeout.as_secs() + u64::from(stop_timeout.subsec_nanos() > 0))
            .unwrap_or(i64::MAX);
    let memory = s
        .mem_limit
        .as_deref()
        .map(parse_bytes)
        .transpose()
        .map_err(|why| RuntimeError::Model(format!("{}: {why}", field("mem_limit"))))?;
    let nano_cpus = match s.cpus {
        Some(c) if !(c.is_finite() && c > 0.0) => {
            return Err(RuntimeError::Model(format!(
                "{}: {c} is not a positive number",
                field("cpus")
            )))
        }
        // Truncated like compose does (`int(cpus * 1e9)`).
        Some(c) => Some((c * 1e9) as i64),
        None => None,
    };

    let mut networks: Vec<PlannedNetwork> = s
        .networks
        .iter()
        .map(|(key, n)| {
            let mut aliases = vec![service.to_string()];
            for a in &n.aliases {
                if !aliases.contains(a) {
                    aliases.push(a.clone());
                }
            }
            PlannedNetwork {
                name: full_name(&project.name, key),
                aliases,
                ipv4_address: n.ipv4_address.map(|ip| ip.to_string()),
            }
        })
        .collect();
    networks.sort();
    for key in s.networks.keys() {
        if !project.networks.contains_key(key) {
            return Err(RuntimeError::Model(format!(
                "{}: no network {key:?} in the project",
                field("networks")
            )));
        }
    }
    let primary = networks.first().cloned();

    let host_config = HostConfig {
        network_mode: primary.as_ref().map(|n| n.name.clone()),
        // compose always sends these, empty or not (Docker reports `[]`/`{}`, not null)
        port_bindings: Some(bindings),
        binds: Some(Vec::new()),
        volumes_from: Some(Vec::new()),
        mounts: (!mounts.is_empty()).then_some(mounts),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        readonly_rootfs: Some(s.read_only),
        cap_drop: (!s.cap_drop.is_empty()).then(|| s.cap_drop.clone()),
        cap_add: (!s.cap_add.is_empty()).then(|| s.cap_add.clone()),
        security_opt: (!s.security_opt.is_empty())
            .then(|| security_opts(&dir, &s.security_opt))
            .transpose()?,
        dns: (!s.dns.is_empty()).then(|| s.dns.iter().map(ToString::to_string).collect()),
        init: s.init,
        nano_cpus,
        memory,
        pids_limit: s.pids_limit.map(i64::from),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(s.image.clone()),
        hostname: s.hostname.clone(),
        user: Some(s.user.clone()),
        cmd: s.command.clone(),
        env: Some(env_list(&s.environment)),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        // compose sends an empty map (its short-syntax volumes would go here)
        volumes: Some(Vec::new()),
        healthcheck,
        stop_timeout: Some(stop_timeout),
        host_config: Some(host_config),
        networking_config: primary.map(|n| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                n.name,
                EndpointSettings {
                    aliases: Some(n.aliases),
                    ipam_config: endpoint_ipam(n.ipv4_address.as_deref()),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    Ok(ContainerPlan {
        service: service.to_string(),
        name: s.container_name.clone(),
        body,
        networks,
        config_hash,
        file_volumes: Vec::new(),
    })
}

/// [`FileDelivery::Volumes`]: the plan's bind mounts replaced by read-only mounts of files
/// volumes (see [`super::files`]); `owners` is the project directory's record. The volumes'
/// names join the config hash, so a changed file recreates the container with the new volume.
pub fn deliver_in_volumes(
    plan: &mut ContainerPlan,
    project: &Project,
    dir: &Path,
    owners: &super::files::OwnerMap,
) -> Result<(), RuntimeError> {
    let s = &project.services[&plan.service];
    let dir = absolute(dir);
    let volumes = super::files::file_volumes(
        &project.name,
        &s.volumes,
        &s.tmpfs,
        &dir,
        owners,
        |source| resolve(&dir, source),
    )?;
    let host = plan
        .body
        .host_config
        .get_or_insert_with(HostConfig::default);
    let mut mounts: Vec<ApiMount> = host
        .mounts
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ != Some(MountType::BIND))
        .collect();
    let mut hash = Sha256::new();
    hash.update(plan.config_hash.as_bytes());
    for v in &volumes {
        hash.update(v.name.as_bytes());
        mounts.push(ApiMount {
            typ: Some(MountType::VOLUME),
            source: Some(v.name.clone()),
            target: Some(v.target.clone()),
            read_only: Some(true),
            volume_options: Some(MountVolumeOptions {
                no_copy: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    mounts.sort_by(|a, b| a.target.cmp(&b.target));
    host.mounts = (!mounts.is_empty()).then_some(mounts);
    plan.config_hash = hex::encode(hash.finalize());
    if let Some(labels) = plan.body.labels.as_mut() {
        labels.insert(CONFIG_HASH_LABEL.to_string(), plan.config_hash.clone());
    }
    plan.file_volumes = volumes;
    Ok(())
}

/// `KEY=value` entries, in the model's (sorted) order.
fn env_list(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// SHA-256 of what determines the service's container: its model, its networks and volumes,
/// the project and the directory (bind sources depend on it).
fn config_hash(project: &Project, service: &str, dir: &Path) -> Result<String, RuntimeError> {
    #[derive(Serialize)]
    struct Input<'a> {
        project: &'a str,
        service: &'a str,
        dir: &'a Path,
        definition: &'a Service,
        networks: BTreeMap<&'a str, Option<&'a Network>>,
        volumes: &'a BTreeMap<String, Volume>,
        compose_version: &'a str,
    }
    let definition = &project.services[service];
    let input = Input {
        project: &project.name,
        service,
        dir,
        definition,
        networks: definition
            .networks
            .keys()
            .map(|k| (k.as_str(), project.networks.get(k)))
            .collect(),
        volumes: &project.volumes,
        compose_version: COMPOSE_VERSION,
    };
    let json = serde_json::to_vec(&input).map_err(|e| RuntimeError::Model(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(json)))
}

/// `dir` made absolute against the current directory, lexically (no symlinks resolved, as
/// compose's `os.path.abspath`).
fn absolute(dir: &Path) -> PathBuf {
    let joined = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(dir))
            .unwrap_or_else(|_| dir.to_path_buf())
    };
    crate::source::normalize(&joined)
}

/// `security_opt` as the Engine API takes it: a seccomp profile named by path (what compose
/// files and `docker run` accept) is sent as its contents, as the docker CLI and compose do.
fn security_opts(dir: &Path, opts: &[String]) -> Result<Vec<String>, RuntimeError> {
    opts.iter()
        .map(|opt| {
            let profile = opt
                .strip_prefix("seccomp=")
                .or_else(|| opt.strip_prefix("seccomp:"))
                .filter(|v| *v != "unconfined" && !v.trim_start().starts_with('{'));
            let Some(path) = profile else {
                return Ok(opt.clone());
            };
            let file = resolve(dir, path);
            std::fs::read_to_string(&file)
                .map(|json| format!("seccomp={json}"))
                .map_err(|e| {
                    RuntimeError::Model(format!(
                        "security_opt: cannot read the seccomp profile {}: {e}",
                        file.display()
                    ))
                })
        })
        .collect()
}

/// A bind source: absolute paths as they are, relative ones against the project directory;
/// `.` and `..` resolved lexically.
fn resolve(dir: &Path, source: &str) -> PathBuf {
    crate::source::normalize(&dir.join(source))
}

/// A compose duration (`1s`, `500ms`, `1m30s`, `1.5h`, `10us`, or a bare number of seconds)
/// as a [`Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return seconds(secs, text);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?}: a number needs a unit (h, m, s, ms, us, ns)"))?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (like 1s, 500ms, 1m30s)"))?;
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?} (use h, m, s, ms, us or ns)"
                ))
            }
        };
        total += value * scale;
        rest = tail;
    }
    seconds(total, text)
}

fn seconds(secs: f64, text: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a valid duration"))
}

/// A compose/docker byte size (`512m`, `1g`, `1.5g`, `100k`, `512mb`, `1024`) in bytes; units
/// are powers of 1024, as Docker reads them.
pub fn parse_bytes(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a size (like 512m, 1g, 100k)");
    let s = text.trim().to_ascii_lowercase();
    let s = match s.strip_suffix('b') {
        Some(rest) if rest.ends_with(|c: char| c.is_ascii_alphabetic()) => rest.to_string(),
        _ => s,
    };
    let (digits, scale) = match s.chars().last() {
        Some('b') => (&s[..s.len() - 1], 1f64),
        Some('k') => (&s[..s.len() - 1], 1024f64),
        Some('m') => (&s[..s.len() - 1], 1024f64 * 1024.0),
        Some('g') => (&s[..s.len() - 1], 1024f64 * 1024.0 * 1024.0),
        Some(c) if c.is_ascii_digit() => (s.as_str(), 1f64),
        _ => return Err(bad()),
    };
    let value: f64 = digits.parse().map_err(|_| bad())?;
    let bytes = value * scale;
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < i64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// `repo[:tag]` → (repo, tag), tag `latest` when absent; a digest reference stays whole.
fn split_image(image: &str) -> (String, String) {
    if let Some((repo, digest)) = image.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => (
            image[..slash + i].to_string(),
            image[slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn with_alias(aliases: &[String], extra: &str) -> Vec<String> {
    let mut all = aliases.to_vec();
    if !all.iter().any(|a| a == extra) {
        all.insert(1.min(all.len()), extra.to_string());
    }
    all
}

fn is_running(info: &ContainerInspectResponse) -> bool {
    info.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

/// Where a dependency stands with respect to a `depends_on` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DependencyState {
    Met,
    /// Not yet; the text describes the current state for a timeout message.
    Waiting(String),
    /// Will not be met; the text says why.
    Failed(String),
}

fn condition_goal(condition: &str) -> &'static str {
    match condition {
        "service_healthy" => "healthy",
        "service_completed_successfully" => "completed successfully",
        _ => "started",
    }
}

fn dependency_state(info: &ContainerInspectResponse, condition: &str) -> DependencyState {
    let state = info.state.clone().unwrap_or_default();
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    let exit = state.exit_code.unwrap_or(0);
    let exited = matches!(status.as_str(), "exited" | "dead");
    match condition {
        "service_healthy" => {
            let Some(health) = state.health else {
                return DependencyState::Failed(
                    "has no healthcheck, but a service waits for it to be healthy".to_string(),
                );
            };
            let health_status = health.status.map(|s| s.to_string()).unwrap_or_default();
            let last = health
                .log
                .unwrap_or_default()
                .last()
                .and_then(|r| r.output.clone())
                .and_then(|o| last_line(&o))
                .map_or_else(String::new, |l| format!("; last check: {l}"));
            if exited {
                DependencyState::Failed(format!(
                    "exited with code {exit} before becoming healthy{last}"
                ))
            } else if health_status == "healthy" {
                DependencyState::Met
            } else if health_status == "unhealthy" {
                DependencyState::Failed(format!("is unhealthy{last}"))
            } else {
                DependencyState::Waiting(format!("health: {health_status}{last}"))
            }
        }
        "service_completed_successfully" => match (exited, exit) {
            (true, 0) => DependencyState::Met,
            (true, code) => DependencyState::Failed(format!("exited with code {code}")),
            (false, _) => DependencyState::Waiting(format!("state: {status}")),
        },
        _ => {
            if exited {
                DependencyState::Failed(format!("exited with code {exit}"))
            } else {
                DependencyState::Met
            }
        }
    }
}

/// The last non-empty line of a healthcheck's output, shortened for a message.
fn last_line(output: &str) -> Option<String> {
    let line = output
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())?;
    let mut short: String = line.chars().take(300).collect();
    if short.len() < line.len() {
        short.push('…');
    }
    Some(short)
}

/// Engine API inspection → the facts [`ContainerFacts::into_status`] maps (the same mapping
/// as the compose CLI backend's `docker inspect`).
fn container_facts(info: ContainerInspectResponse) -> ContainerFacts {
    let state = info.state.unwrap_or_default();
    ContainerFacts {
        name: info.name.unwrap_or_default(),
        labels: info.config.and_then(|c| c.labels).unwrap_or_default(),
        status: state.status.map(|s| s.to_string()).unwrap_or_default(),
        exit_code: state.exit_code.unwrap_or(0),
        health: state
            .health
            .map(|h| h.status.map(|s| s.to_string()).unwrap_or_default()),
        ports: info
            .network_settings
            .and_then(|n| n.ports)
            .unwrap_or_default()
            .into_iter()
            .map(|(key, bindings)| {
                let bindings = bindings
                    .unwrap_or_default()
                    .into_iter()
                    .map(|b| {
                        (
                            b.host_ip.unwrap_or_default(),
                            b.host_port.unwrap_or_default(),
                        )
                    })
                    .collect();
                (key, bindings)
            })
            .collect(),
    }
}

/// Splits chunks of container output into lines: Docker's log frames follow the container's
/// writes, not its lines.
#[derive(Debug, Default)]
struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    /// Complete lines in `bytes` (plus what was pending), without `\n` or a trailing `\r`.
    fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(line);
        }
        lines
    }

    /// The unterminated last line, if any.
    fn finish(mut self) -> Option<Vec<u8>> {
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        (!self.pending.is_empty()).then_some(self.pending)
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// A bollard error as a [`RuntimeError`]: "cannot reach the daemon" as
/// [`RuntimeError::Unreachable`] with what to check, the rest as [`RuntimeError::Engine`].
fn engine_error(socket: &str, op: String, e: DockerError) -> RuntimeError {
    if let Some(why) = unreachable_reason(&e) {
        let why = if why.starts_with("permission denied") {
            socket_access_hint(socket).unwrap_or(why)
        } else {
            why
        };
        return RuntimeError::Unreachable(format!(
            "cannot reach the Docker Engine at {socket}: {why}"
        ));
    }
    let message = match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        DockerError::RequestTimeoutError => {
            format!("the daemon did not answer within {REQUEST_TIMEOUT_SECS} s")
        }
        other => other.to_string(),
    };
    RuntimeError::Engine { op, message }
}

fn unreachable_reason(e: &DockerError) -> Option<String> {
    match e {
        DockerError::SocketNotFoundError(_) => Some(io_reason(std::io::ErrorKind::NotFound, None)),
        DockerError::IOError { err } => {
            is_connect_kind(err.kind()).then(|| io_reason(err.kind(), Some(err)))
        }
        DockerError::HyperLegacyError { err } if err.is_connect() => {
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    return Some(io_reason(io.kind(), Some(io)));
                }
                source = s.source();
            }
            Some(format!("{err}"))
        }
        _ => None,
    }
}

/// For a refused socket: who may use it and who we are, with the fix. The non-root way to run
/// the control-plane image is the socket's group (`--group-add <gid>`), which only the host
/// knows; so say it.
fn socket_access_hint(socket: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(socket).ok()?;
    let groups: Vec<String> = nix::unistd::getgroups()
        .unwrap_or_default()
        .iter()
        .map(|g| g.as_raw().to_string())
        .collect();
    Some(format!(
        "permission denied: the socket is owned by {}:{} with mode {:04o}, and this process runs as uid {} gid {} (supplementary groups: [{}]). Give it the socket's group: `docker run --group-add {} ...` for the control-plane image (or `usermod -aG` on a host), or run it as root",
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777,
        nix::unistd::geteuid(),
        nix::unistd::getegid(),
        groups.join(", "),
        meta.gid()
    ))
}

fn is_connect_kind(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(kind, NotFound | PermissionDenied | ConnectionRefused)
}

fn io_reason(kind: std::io::ErrorKind, err: Option<&std::io::Error>) -> String {
    use std::io::ErrorKind::*;
    match kind {
        NotFound => "the socket does not exist (is Docker running, and is the socket mounted here? DOCKER_HOST=unix:///path names another one)".to_string(),
        PermissionDenied => "permission denied (is the socket readable and writable by this user? run as root or as a member of the socket's group)".to_string(),
        ConnectionRefused => "connection refused (is the Docker daemon running?)".to_string(),
        _ => err.map_or_else(|| format!("{kind}"), |e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_compose::model::{
        DependsOn, Healthcheck, Ipam as ModelIpam, IpamPool, PortBinding, ServiceNetwork,
    };
    use std::net::{IpAddr, Ipv4Addr};

    fn service(name: &str) -> Service {
        Service {
            image: "img:1".into(),
            container_name: format!("bb-{name}-x"),
            hostname: None,
            init: None,
            user: "65534:65534".into(),
            command: None,
            environment: BTreeMap::new(),
            labels: BTreeMap::from([("io.bot-bottle.slug".into(), "x".into())]),
            networks: BTreeMap::from([("x-internal".into(), ServiceNetwork::default())]),
            dns: vec![],
            ports: vec![],
            volumes: vec![],
            tmpfs: vec![],
            read_only: true,
            cap_drop: vec!["ALL".into()],
            cap_add: vec![],
            security_opt: vec!["no-new-privileges:true".into()],
            depends_on: BTreeMap::new(),
            healthcheck: None,
            stop_grace_period: "10s".into(),
            cpus: None,
            mem_limit: None,
            pids_limit: None,
        }
    }

    fn project() -> Project {
        let mut sidecars = service("sidecars");
        sidecars.hostname = Some("sidecars".into());
        sidecars.environment = BTreeMap::from([("SIDECARS_DAEMONS".into(), "pack-exec".into())]);
        sidecars.networks = BTreeMap::from([
            (
                "x-internal".into(),
                ServiceNetwork {
                    aliases: vec!["sidecars".into(), "extra".into()],
                    ipv4_address: Some(Ipv4Addr::new(10, 213, 0, 2)),
                },
            ),
            ("x-egress".into(), ServiceNetwork::default()),
        ]);
        sidecars.user = "0:0".into();
        sidecars.cap_add = vec![
            "CHOWN".into(),
            "KILL".into(),
            "SETGID".into(),
            "SETUID".into(),
        ];
        sidecars.pids_limit = Some(512);
        sidecars.ports = [9000, 9001]
            .map(|container_port| PortBinding {
                host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                host_port: None,
                container_port,
            })
            .to_vec();
        sidecars.volumes = vec![
            Mount::Bind {
                source: "./config/init.json".into(),
                target: "/etc/init.json".into(),
                read_only: true,
            },
            Mount::Bind {
                source: "/abs/cred".into(),
                target: "/run/secrets/c".into(),
                read_only: true,
            },
            Mount::Volume {
                source: "state".into(),
                target: "/var/lib/state".into(),
                read_only: false,
            },
        ];
        sidecars.tmpfs = vec![
            "/tmp:size=64m,mode=1777".into(),
            "/run/s:size=16m,mode=0755".into(),
        ];
        sidecars.healthcheck = Some(Healthcheck {
            test: vec!["CMD".into(), "/sidecar-init".into(), "health".into()],
            interval: "1s".into(),
            timeout: "500ms".into(),
            retries: 3,
            start_period: "1m30s".into(),
        });
        sidecars.cpus = Some(1.5);
        sidecars.mem_limit = Some("512m".into());
        let mut agent = service("agent");
        agent.init = Some(true);
        agent.command = Some(vec!["sleep".into(), "infinity".into()]);
        agent.environment = BTreeMap::from([("A".into(), "x=$y".into())]);
        agent.dns = vec![IpAddr::V4(Ipv4Addr::new(10, 213, 0, 2))];
        agent.pids_limit = Some(1024);
        agent.tmpfs = vec!["/tmp:size=256m,mode=1777".into()];
        agent.depends_on = BTreeMap::from([(
            "sidecars".into(),
            DependsOn {
                condition: "service_healthy".into(),
            },
        )]);
        Project {
            name: "bb-x".into(),
            services: BTreeMap::from([("agent".into(), agent), ("sidecars".into(), sidecars)]),
            networks: BTreeMap::from([
                (
                    "x-internal".into(),
                    Network {
                        internal: true,
                        driver_opts: BTreeMap::from([(
                            "com.docker.network.bridge.name".into(),
                            "bb0123".into(),
                        )]),
                        ipam: Some(ModelIpam {
                            config: vec![IpamPool {
                                subnet: "10.213.0.0/28".into(),
                                gateway: Ipv4Addr::new(10, 213, 0, 1),
                            }],
                        }),
                        labels: BTreeMap::from([("io.bot-bottle.slug".into(), "x".into())]),
                    },
                ),
                ("x-egress".into(), Network::default()),
            ]),
            volumes: BTreeMap::from([("state".into(), Volume::default())]),
        }
    }

    #[test]
    fn durations_parse_like_compose() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "10x", "1m30", "-1s", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(parse_bytes("512m"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_bytes("512M"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_bytes("512mb"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(parse_bytes("100k"), Ok(102_400));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("10b"), Ok(10));
        for bad in ["", "m", "12x", "1.2.3m", "-5m"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn socket_comes_from_a_unix_docker_host_only() {
        assert_eq!(socket_path(None), DEFAULT_SOCKET);
        assert_eq!(socket_path(Some("unix:///run/d.sock")), "/run/d.sock");
        assert_eq!(socket_path(Some("tcp://1.2.3.4:2375")), DEFAULT_SOCKET);
        assert_eq!(socket_path(Some("")), DEFAULT_SOCKET);
    }

    #[test]
    fn images_split_into_repo_and_tag() {
        assert_eq!(split_image("a/b:dev"), ("a/b".into(), "dev".into()));
        assert_eq!(split_image("a/b"), ("a/b".into(), "latest".into()));
        assert_eq!(
            split_image("reg:5000/a/b"),
            ("reg:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            split_image("reg:5000/a:1"),
            ("reg:5000/a".into(), "1".into())
        );
        assert_eq!(split_image("a@sha256:00"), ("a".into(), "sha256:00".into()));
    }

    #[test]
    fn networks_and_volumes_carry_compose_names_and_labels() {
        let p = project();
        let n = network_request(&p.name, "x-internal", &p.networks["x-internal"]);
        assert_eq!(n.name, "bb-x_x-internal");
        assert_eq!(n.internal, Some(true));
        assert_eq!(n.driver.as_deref(), Some("bridge"));
        assert_eq!(
            n.options.unwrap()["com.docker.network.bridge.name"],
            "bb0123"
        );
        let labels = n.labels.unwrap();
        assert_eq!(labels[PROJECT_LABEL], "bb-x");
        assert_eq!(labels[NETWORK_LABEL], "x-internal");
        assert_eq!(labels[VERSION_LABEL], COMPOSE_VERSION);
        assert_eq!(labels["io.bot-bottle.slug"], "x");
        // The fixed subnet, as compose sends it: the default driver, one pool, no options.
        assert_eq!(
            n.ipam,
            Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some("10.213.0.0/28".into()),
                    gateway: Some("10.213.0.1".into()),
                    ..Default::default()
                }]),
                options: None,
            })
        );
        let e = network_request(&p.name, "x-egress", &p.networks["x-egress"]);
        assert_eq!(e.ipam, None, "no subnet in the model: Docker picks one");
        let v = volume_request(&p.name, "state", &p.volumes["state"]);
        assert_eq!(v.name.as_deref(), Some("bb-x_state"));
        let labels = v.labels.unwrap();
        assert_eq!(labels[PROJECT_LABEL], "bb-x");
        assert_eq!(labels[VOLUME_LABEL], "state");
    }

    #[test]
    fn services_start_after_their_dependencies() {
        let mut p = project();
        assert_eq!(start_order(&p).unwrap(), ["sidecars", "agent"]);
        p.services.get_mut("sidecars").unwrap().depends_on = BTreeMap::from([(
            "agent".into(),
            DependsOn {
                condition: "service_started".into(),
            },
        )]);
        let err = start_order(&p).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
        p.services.get_mut("sidecars").unwrap().depends_on = BTreeMap::from([(
            "nope".into(),
            DependsOn {
                condition: "service_started".into(),
            },
        )]);
        assert!(start_order(&p).is_err());
    }

    #[test]
    fn the_sidecars_container_is_created_like_compose_creates_it() {
        let p = project();
        let plan = plan_container(&p, "sidecars", Path::new("/state/bottles/x")).unwrap();
        assert_eq!(plan.name, "bb-sidecars-x");
        let b = &plan.body;
        assert_eq!(b.image.as_deref(), Some("img:1"));
        assert_eq!(b.hostname.as_deref(), Some("sidecars"));
        assert_eq!(b.user.as_deref(), Some("0:0"));
        assert_eq!(b.cmd, None);
        assert_eq!(
            b.env.as_deref(),
            Some(&["SIDECARS_DAEMONS=pack-exec".to_string()][..])
        );
        let labels = b.labels.clone().unwrap();
        for (k, v) in [
            (PROJECT_LABEL, "bb-x"),
            (SERVICE_LABEL, "sidecars"),
            (ONEOFF_LABEL, "False"),
            (CONTAINER_NUMBER_LABEL, "1"),
            (WORKING_DIR_LABEL, "/state/bottles/x"),
            (CONFIG_FILES_LABEL, "compose.yaml"),
            (VERSION_LABEL, COMPOSE_VERSION),
            ("io.bot-bottle.slug", "x"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
        }
        assert_eq!(labels[CONFIG_HASH_LABEL].len(), 64);
        assert_eq!(labels[CONFIG_HASH_LABEL], plan.config_hash);
        assert_eq!(
            b.exposed_ports.as_deref(),
            Some(&["9000/tcp".to_string(), "9001/tcp".to_string()][..])
        );
        assert_eq!(b.stop_timeout, Some(10));
        let h = b.healthcheck.clone().unwrap();
        assert_eq!(
            h.test.unwrap(),
            ["CMD", "/sidecar-init", "health"].map(String::from)
        );
        assert_eq!(h.interval, Some(1_000_000_000));
        assert_eq!(h.timeout, Some(500_000_000));
        assert_eq!(h.retries, Some(3));
        assert_eq!(h.start_period, Some(90_000_000_000));

        let hc = b.host_config.clone().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("bb-x_x-egress"));
        assert_eq!(
            hc.port_bindings.as_ref().unwrap()["9000/tcp"],
            Some(vec![ApiPortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }])
        );
        let mounts = hc.mounts.unwrap();
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].typ, Some(MountType::BIND));
        assert_eq!(
            mounts[0].source.as_deref(),
            Some("/state/bottles/x/config/init.json")
        );
        assert_eq!(mounts[0].target.as_deref(), Some("/etc/init.json"));
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[1].source.as_deref(), Some("/abs/cred"));
        assert_eq!(mounts[2].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[2].source.as_deref(), Some("bb-x_state"));
        assert_eq!(mounts[2].read_only, Some(false));
        assert_eq!(
            hc.port_bindings.as_ref().unwrap()["9001/tcp"],
            Some(vec![ApiPortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }])
        );
        // Split at the first `:` like compose's `convert_tmpfs_mounts`: size and mode intact.
        let tmpfs = hc.tmpfs.unwrap();
        assert_eq!(tmpfs.len(), 2);
        assert_eq!(tmpfs["/tmp"], "size=64m,mode=1777");
        assert_eq!(tmpfs["/run/s"], "size=16m,mode=0755");
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(hc.cap_add.unwrap(), ["CHOWN", "KILL", "SETGID", "SETUID"]);
        assert_eq!(hc.security_opt.unwrap(), ["no-new-privileges:true"]);
        assert_eq!(hc.pids_limit, Some(512));
        assert_eq!(hc.dns, None);
        assert_eq!(hc.init, None);
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        assert_eq!(hc.memory, Some(512 * 1024 * 1024));

        assert_eq!(
            plan.networks,
            vec![
                PlannedNetwork {
                    name: "bb-x_x-egress".to_string(),
                    aliases: vec!["sidecars".to_string()],
                    ipv4_address: None,
                },
                PlannedNetwork {
                    name: "bb-x_x-internal".to_string(),
                    aliases: vec!["sidecars".to_string(), "extra".to_string()],
                    ipv4_address: Some("10.213.0.2".to_string()),
                },
            ]
        );
        let endpoints = b
            .networking_config
            .clone()
            .unwrap()
            .endpoints_config
            .unwrap();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            endpoints["bb-x_x-egress"].aliases.as_deref(),
            Some(&["sidecars".to_string()][..])
        );
        assert_eq!(endpoints["bb-x_x-egress"].ipam_config, None);
        // The fixed address goes with the (re)connect of the internal network at start.
        assert_eq!(
            endpoint_ipam(plan.networks[1].ipv4_address.as_deref()),
            Some(EndpointIpamConfig {
                ipv4_address: Some("10.213.0.2".into()),
                ..Default::default()
            })
        );
    }

    #[test]
    fn a_fixed_address_on_the_primary_network_is_sent_at_create() {
        let mut p = project();
        p.services
            .get_mut("agent")
            .unwrap()
            .networks
            .get_mut("x-internal")
            .unwrap()
            .ipv4_address = Some(Ipv4Addr::new(10, 213, 0, 3));
        let plan = plan_container(&p, "agent", Path::new("/d")).unwrap();
        let endpoints = plan
            .body
            .networking_config
            .unwrap()
            .endpoints_config
            .unwrap();
        assert_eq!(
            endpoints["bb-x_x-internal"]
                .ipam_config
                .as_ref()
                .and_then(|c| c.ipv4_address.as_deref()),
            Some("10.213.0.3")
        );
    }

    #[test]
    fn the_agent_keeps_its_literal_env_command_and_init() {
        let p = project();
        let plan = plan_container(&p, "agent", Path::new("/d")).unwrap();
        let b = &plan.body;
        assert_eq!(b.cmd, Some(vec!["sleep".into(), "infinity".into()]));
        // The model is unescaped: `$` reaches the container as is (compose reads `$$`).
        assert_eq!(b.env.as_deref(), Some(&["A=x=$y".to_string()][..]));
        let hc = b.host_config.clone().unwrap();
        assert_eq!(hc.init, Some(true));
        // The bottle's DNS responder, as compose's `dns:` sends it.
        assert_eq!(hc.dns, Some(vec!["10.213.0.2".to_string()]));
        assert_eq!(hc.pids_limit, Some(1024));
        assert_eq!(hc.cap_add, None);
        assert_eq!(hc.tmpfs.unwrap()["/tmp"], "size=256m,mode=1777");
        assert_eq!(hc.port_bindings, Some(HashMap::new()));
        assert_eq!(b.exposed_ports, None);
        assert_eq!(b.healthcheck, None);
        assert_eq!(hc.network_mode.as_deref(), Some("bb-x_x-internal"));
    }

    #[test]
    fn the_config_hash_follows_the_model() {
        let p = project();
        let a = plan_container(&p, "sidecars", Path::new("/d")).unwrap();
        assert_eq!(
            a.config_hash,
            plan_container(&p, "sidecars", Path::new("/d"))
                .unwrap()
                .config_hash
        );
        let mut q = p.clone();
        q.services.get_mut("sidecars").unwrap().environment.clear();
        let b = plan_container(&q, "sidecars", Path::new("/d")).unwrap();
        assert_ne!(a.config_hash, b.config_hash);
        let c = plan_container(&p, "sidecars", Path::new("/e")).unwrap();
        assert_ne!(a.config_hash, c.config_hash);
    }

    #[test]
    fn bad_model_values_are_model_errors_naming_the_field() {
        let mut p = project();
        p.services.get_mut("sidecars").unwrap().mem_limit = Some("lots".into());
        let err = plan_container(&p, "sidecars", Path::new("/d"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("services.sidecars.mem_limit"), "{err}");
        let mut p = project();
        p.services
            .get_mut("sidecars")
            .unwrap()
            .healthcheck
            .as_mut()
            .unwrap()
            .interval = "soon".into();
        let err = plan_container(&p, "sidecars", Path::new("/d"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("healthcheck.interval"), "{err}");
    }

    #[test]
    fn relative_paths_are_resolved_lexically() {
        assert_eq!(
            resolve(Path::new("/a/b"), "./c/../d"),
            PathBuf::from("/a/b/d")
        );
        assert_eq!(resolve(Path::new("/a/b"), "/x/y"), PathBuf::from("/x/y"));
    }

    #[test]
    fn log_chunks_become_lines() {
        let mut b = LineBuffer::default();
        assert!(b.push(b"hel").is_empty());
        assert_eq!(b.push(b"lo\r\nwor"), vec![b"hello".to_vec()]);
        assert_eq!(b.push(b"ld\n\nx"), vec![b"world".to_vec(), Vec::new()]);
        assert_eq!(b.finish(), Some(b"x".to_vec()));
        assert_eq!(LineBuffer::default().finish(), None);
    }

    #[test]
    fn short_id_joins_the_aliases_after_the_service_name() {
        let a = with_alias(&["sidecars".into(), "extra".into()], "0123456789ab");
        assert_eq!(a, ["sidecars", "0123456789ab", "extra"]);
        assert_eq!(with_alias(&a, "0123456789ab"), a);
    }

    #[test]
    fn health_decides_whether_a_dependent_may_start() {
        use bollard::models::{
            ContainerState, ContainerStateStatusEnum, Health, HealthStatusEnum, HealthcheckResult,
        };
        let info =
            |status: ContainerStateStatusEnum, health: Option<HealthStatusEnum>, code: i64| {
                ContainerInspectResponse {
                    state: Some(ContainerState {
                        status: Some(status),
                        exit_code: Some(code),
                        health: health.map(|h| Health {
                            status: Some(h),
                            log: Some(vec![HealthcheckResult {
                                output: Some("checking\npipelock: not ready\n".into()),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            };
        use ContainerStateStatusEnum::*;
        use HealthStatusEnum::*;
        assert_eq!(
            dependency_state(&info(RUNNING, Some(HEALTHY), 0), "service_healthy"),
            DependencyState::Met
        );
        assert_eq!(
            dependency_state(&info(RUNNING, Some(STARTING), 0), "service_healthy"),
            DependencyState::Waiting("health: starting; last check: pipelock: not ready".into())
        );
        assert_eq!(
            dependency_state(&info(RUNNING, Some(UNHEALTHY), 0), "service_healthy"),
            DependencyState::Failed("is unhealthy; last check: pipelock: not ready".into())
        );
        assert!(matches!(
            dependency_state(&info(EXITED, Some(STARTING), 3), "service_healthy"),
            DependencyState::Failed(m) if m.contains("code 3")
        ));
        assert!(matches!(
            dependency_state(&info(RUNNING, None, 0), "service_healthy"),
            DependencyState::Failed(m) if m.contains("no healthcheck")
        ));
        assert_eq!(
            dependency_state(&info(RUNNING, None, 0), "service_started"),
            DependencyState::Met
        );
        assert_eq!(
            dependency_state(&info(EXITED, None, 0), "service_completed_successfully"),
            DependencyState::Met
        );
    }

    #[test]
    fn a_seccomp_profile_named_by_path_is_sent_as_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.json"),
            "{\"defaultAction\": \"SCMP_ACT_ERRNO\"}",
        )
        .unwrap();
        let opts = security_opts(
            dir.path(),
            &[
                "no-new-privileges:true".into(),
                "seccomp=./p.json".into(),
                "seccomp=unconfined".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            opts,
            [
                "no-new-privileges:true",
                "seccomp={\"defaultAction\": \"SCMP_ACT_ERRNO\"}",
                "seccomp=unconfined"
            ]
        );
        let err = security_opts(dir.path(), &["seccomp=./missing.json".into()]).unwrap_err();
        assert!(err.to_string().contains("missing.json"), "{err}");
    }

    #[test]
    fn inspect_results_map_like_the_cli_backend() {
        use bollard::models::{
            ContainerConfig, ContainerState, ContainerStateStatusEnum, Health, HealthStatusEnum,
            NetworkSettings,
        };
        let info = ContainerInspectResponse {
            name: Some("/bb-sidecars-x".into()),
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::RUNNING),
                exit_code: Some(0),
                health: Some(Health {
                    status: Some(HealthStatusEnum::HEALTHY),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                labels: Some(HashMap::from([(SERVICE_LABEL.into(), "sidecars".into())])),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                ports: Some(HashMap::from([
                    (
                        "9000/tcp".into(),
                        Some(vec![ApiPortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            host_port: Some("49153".into()),
                        }]),
                    ),
                    ("9099/tcp".into(), None),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = statuses([container_facts(info)]);
        assert_eq!(s[0].service, "sidecars");
        assert_eq!(s[0].container, "bb-sidecars-x");
        assert_eq!(s[0].state, "running");
        assert_eq!(s[0].health.as_deref(), Some("healthy"));
        assert_eq!(s[0].exit_code, None);
        assert_eq!(s[0].ports.len(), 1);
        assert_eq!(s[0].ports[0].host, "127.0.0.1:49153".parse().unwrap());
    }

    #[test]
    fn connection_failures_are_unreachable_with_a_hint() {
        let e = engine_error(
            "/nope.sock",
            "connect".into(),
            DockerError::SocketNotFoundError("/nope.sock".into()),
        );
        assert!(
            matches!(&e, RuntimeError::Unreachable(m) if m.contains("/nope.sock") && m.contains("does not exist")),
            "{e}"
        );
        let e = engine_error(
            "/s",
            "connect".into(),
            DockerError::IOError {
                err: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            },
        );
        assert!(
            matches!(&e, RuntimeError::Unreachable(m) if m.contains("permission denied")),
            "{e}"
        );
        let e = engine_error(
            "/s",
            "create container c".into(),
            DockerError::DockerResponseServerError {
                status_code: 409,
                message: "Conflict".into(),
            },
        );
        assert!(
            matches!(&e, RuntimeError::Engine { op, message } if op == "create container c" && message.contains("409")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable() {
        let engine = Engine::new(Some("unix:///nonexistent/docker.sock".into()));
        let err = engine.describe().await.unwrap_err();
        assert!(matches!(err, RuntimeError::Unreachable(_)), "{err}");
        let err = engine.containers("p").await.unwrap_err();
        assert!(matches!(err, RuntimeError::Unreachable(_)), "{err}");
    }
}
