//! The operations of the control plane, written once for the CLI and the later HTTP API:
//! render, up (and wait until healthy), down, ps, logs, packs. Front ends only parse input and
//! print results.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bottle_compose::render::{enabled_daemons, SIDECARS};
use bottle_compose::{render, Bundle, Daemon, RenderOptions};
use bytes::Bytes;
use tokio::sync::mpsc;

use bottle_spec::Subnet;

use crate::api::{BottleState, BottleSummary, ControlError, DownReport, Endpoint, UpReport};
use crate::approvals::{self, Answer, Op};
use crate::host_guard::Mode as HostGuardMode;
use crate::logs;
use crate::owners::Owners;
use crate::packs::{InstallFlags, PackAnswer, PackClient, Relay};
use crate::project::{check_bind_sources, write_project, ConfigChanges};
use crate::runtime::files::FileDelivery;
use crate::runtime::{FoundBottle, LogLine, LogOptions, Runtime, RuntimeError};
use crate::source::{Loaded, Source};
use crate::state::{BottleRecord, StateDir};
use bottle_compose::render::internal_bridge_name;

/// Settings resolved by the front end (from flags and the environment).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Renderer inputs (name prefix, sidecar image override).
    pub render: RenderOptions,
    /// How long `up` waits for the bottle to be healthy.
    pub up_timeout: Duration,
    /// Deadline of one request to a daemon.
    pub request_timeout: Duration,
    /// Candidates for the host's public roots, first readable wins (the agent's CA bundle is
    /// these roots plus the bottle CA). Default [`crate::ca::SYSTEM_ROOTS`].
    pub system_roots: Vec<PathBuf>,
    /// The host guard's firewall layer (`BOT_BOTTLE_HOST_GUARD`, default auto).
    pub host_guard: crate::host_guard::Mode,
    /// Where bottles' agent networks are carved from (`BOT_BOTTLE_SUBNET_POOL`, default
    /// [`bottle_spec::DEFAULT_SUBNET_POOL`]).
    pub subnet_pool: Subnet,
}

/// The renderer options of the control plane's project layout: the CA key and pack-exec's
/// operator token under `secrets/` (see [`crate::secrets`]).
pub fn render_options() -> RenderOptions {
    RenderOptions {
        ca: crate::ca::files(),
        pack_exec_operator_token: format!("./{}", crate::secrets::OPERATOR_TOKEN_FILE),
        ..RenderOptions::default()
    }
}

/// `BOT_BOTTLE_SUBNET_POOL`: unset or empty is the default pool; anything else must be an
/// IPv4 subnet (`10.213.0.0/16`) large enough for one bottle's /28.
pub fn subnet_pool(value: Option<&str>) -> Result<Subnet, ControlError> {
    let Some(text) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(bottle_spec::DEFAULT_SUBNET_POOL);
    };
    let pool = Subnet::parse(text)
        .map_err(|e| ControlError::Usage(format!("BOT_BOTTLE_SUBNET_POOL: {e}")))?;
    if pool.prefix > bottle_spec::BOTTLE_SUBNET_PREFIX {
        return Err(ControlError::Usage(format!(
            "BOT_BOTTLE_SUBNET_POOL: {pool} is smaller than one bottle's /{} network",
            bottle_spec::BOTTLE_SUBNET_PREFIX
        )));
    }
    Ok(pool)
}

/// The agent network's subnet for `project`: the one it has (`kept`, from its state record)
/// unless another network overlaps it now, else [`Subnet::for_project`] in `pool` avoiding
/// `taken` (every other network's subnets). A full pool is [`ControlError::NoSubnet`].
pub fn choose_subnet(
    pool: Subnet,
    project: &str,
    kept: Option<Subnet>,
    taken: &[Subnet],
) -> Result<Subnet, ControlError> {
    if let Some(kept) = kept.filter(|k| !taken.iter().any(|t| t.overlaps(*k))) {
        return Ok(kept);
    }
    Subnet::for_project(pool, project, taken).ok_or(ControlError::NoSubnet { pool })
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            render: render_options(),
            up_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(120),
            system_roots: crate::ca::SYSTEM_ROOTS.iter().map(PathBuf::from).collect(),
            host_guard: crate::host_guard::Mode::Auto,
            subnet_pool: bottle_spec::DEFAULT_SUBNET_POOL,
        }
    }
}

/// A rendered manifest.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The loaded manifest.
    pub loaded: Loaded,
    /// The bundle.
    pub bundle: Bundle,
    /// The compose YAML.
    pub yaml: String,
}

/// The control plane over one runtime and one state directory.
pub struct Controller<R> {
    runtime: R,
    state: StateDir,
    settings: Settings,
    /// Slugs whose `create` is in flight: a second concurrent create of the same slug is a
    /// conflict, not a race on the same project directory.
    creating: Mutex<HashSet<String>>,
}

/// A bottle in detail (`GET /v1/bottles/{slug}`): containers, each daemon's health as
/// sidecar-init reports it, and where the daemons are published.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BottleDetail {
    /// State and containers.
    #[serde(flatten)]
    pub summary: BottleSummary,
    /// `sidecar-init status --json` from the sidecars container (`null` when it cannot run).
    pub daemons: Option<serde_json::Value>,
    /// Why `daemons` is null, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemons_error: Option<String>,
    /// Each enabled daemon's published port on the host.
    pub endpoints: Vec<Endpoint>,
}

/// Releases a slug claimed by [`Controller::create`] when the create ends (any way).
struct Claim<'a> {
    set: &'a Mutex<HashSet<String>>,
    slug: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.slug);
        }
    }
}

impl<R: Runtime> Controller<R> {
    /// A controller.
    pub fn new(runtime: R, state: StateDir, settings: Settings) -> Controller<R> {
        Controller {
            runtime,
            state,
            settings,
            creating: Mutex::new(HashSet::new()),
        }
    }

    /// The runtime backend (for `describe` and the API's health answer).
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// Load and render a manifest (pure apart from reading the manifest). Without Docker to
    /// ask which subnets are taken, the agent network gets the pool's hash choice for the
    /// project (what `up` picks too unless that one is in use).
    pub fn render(&self, source: Source) -> Result<Rendered, ControlError> {
        let loaded = source.load()?;
        let project = bottle_compose::render::project_name(
            &self.settings.render.prefix,
            &loaded.manifest.slug,
        );
        let subnet = choose_subnet(self.settings.subnet_pool, &project, None, &[])?;
        self.render_loaded(loaded, subnet)
    }

    /// Render a loaded manifest with the agent network on `subnet`.
    fn render_loaded(&self, loaded: Loaded, subnet: Subnet) -> Result<Rendered, ControlError> {
        let opts = RenderOptions {
            internal_subnet: Some(subnet),
            ..self.settings.render.clone()
        };
        let bundle = render(&loaded.manifest, &opts)?;
        let yaml = bottle_compose::to_yaml(&bundle.project)
            .map_err(|e| RuntimeError::Model(e.to_string()))?;
        Ok(Rendered {
            loaded,
            bundle,
            yaml,
        })
    }

    /// Write a rendered bottle (compose file, configs, packs, and the CA and operator token
    /// when egress / pack-exec are on, so the directory runs by hand too) into `dir`. Owners
    /// are applied where permitted (`render` needs no root); the notes say where they were
    /// not.
    pub fn write(&self, rendered: &Rendered, dir: &Path) -> Result<Vec<String>, ControlError> {
        let mut owners = Owners::best_effort();
        self.write_dir(rendered, dir, &mut owners)?;
        let path = dir.join(crate::runtime::compose_cli::COMPOSE_FILE);
        crate::source::write_file(&path, rendered.yaml.as_bytes(), 0o644)?;
        Ok(owners.note().into_iter().collect())
    }

    /// The project directory's files (not the compose file): configs, packs, the generated
    /// secrets and the CA. Returns notes (a CA was generated, no system roots).
    fn write_dir(
        &self,
        rendered: &Rendered,
        dir: &Path,
        owners: &mut Owners,
    ) -> Result<Vec<String>, ControlError> {
        let bundle = &rendered.bundle;
        let mut notes = Vec::new();
        write_project(bundle, &rendered.loaded, dir, owners)?;
        if bundle.pack_exec_operator_token.is_some() {
            crate::secrets::ensure_operator_token(dir, owners)?;
        }
        let generated = crate::secrets::ensure_generated_credentials(
            dir,
            bundle
                .credentials
                .iter()
                .filter(|c| c.generated)
                .map(|c| c.name.as_str()),
            owners,
        )?;
        if !generated.is_empty() {
            notes.push(format!(
                "generated demo credential(s) {} into {} (random values known only to this bottle)",
                generated.join(", "),
                dir.join(bottle_compose::render::GENERATED_CREDENTIALS_DIR)
                    .display()
            ));
        }
        if let Some(ca) = &bundle.ca {
            let outcome =
                crate::ca::ensure(dir, ca, &bundle.slug, &self.settings.system_roots, owners)?;
            if outcome.generated {
                notes.push(format!(
                    "generated the bottle CA {}",
                    dir.join(ca.cert.trim_start_matches("./")).display()
                ));
            }
            if outcome.system_roots.is_none() {
                notes.push(
                    "no system CA bundle found on this host: the agent's bundle holds only the bottle CA, so HTTPS to hosts egress does not intercept fails for tools using SSL_CERT_FILE (set BOT_BOTTLE_SYSTEM_ROOTS)"
                        .to_string(),
                );
            }
        }
        check_bind_sources(bundle, dir)?;
        Ok(notes)
    }

    /// Render, write the project dir, start the bottle and wait until it is healthy. An
    /// existing bottle of the same slug is updated in place (the CLI's `up`).
    pub async fn up(&self, source: Source) -> Result<UpReport, ControlError> {
        let rendered = self.render(source)?;
        self.up_rendered(rendered).await
    }

    /// `up` for a bottle that must not exist yet (the API's `POST /v1/bottles`): a slug that
    /// is known in the state dir, has containers, or is being created right now is a
    /// [`ControlError::Conflict`]. The manifest is validated before anything is checked or
    /// written, so a bad manifest is a 400 even when the slug exists.
    pub async fn create(&self, source: Source) -> Result<UpReport, ControlError> {
        let rendered = self.render(source)?;
        let slug = rendered.bundle.slug.clone();
        let conflict = || ControlError::Conflict { slug: slug.clone() };
        {
            let mut set = self.creating.lock().map_err(|_| conflict())?;
            if !set.insert(slug.clone()) {
                return Err(conflict());
            }
        }
        let _claim = Claim {
            set: &self.creating,
            slug: slug.clone(),
        };
        if self.state.record(&slug)?.is_some() {
            return Err(conflict());
        }
        if !self
            .runtime
            .containers(&rendered.bundle.project.name)
            .await?
            .is_empty()
        {
            return Err(conflict());
        }
        self.up_rendered(rendered).await
    }

    async fn up_rendered(&self, rendered: Rendered) -> Result<UpReport, ControlError> {
        let started = Instant::now();
        let slug = rendered.bundle.slug.clone();
        let dir = self.state.bottle_dir(&slug);
        // Before anything is asked of Docker, written or started.
        let delivery = self.runtime.file_delivery();
        let reader = (delivery == FileDelivery::Volumes).then(|| nix::unistd::geteuid().as_raw());
        crate::credentials::check(
            rendered
                .bundle
                .credentials
                .iter()
                .filter(|c| !c.generated)
                .map(|c| (c.name.as_str(), c.host_path.as_str())),
            reader,
        )?;
        // The agent network's subnet: kept from the record, else a free one of the pool.
        let project = rendered.bundle.project.name.clone();
        let taken = self.runtime.network_subnets(&project).await?;
        let kept = self.state.record(&slug)?.and_then(|r| r.subnet);
        let subnet = choose_subnet(self.settings.subnet_pool, &project, kept, &taken)?;
        let rendered = if rendered.bundle.internal_subnet == subnet {
            rendered
        } else {
            self.render_loaded(rendered.loaded, subnet)?
        };
        let t = crate::timing::phase("check credentials, choose the subnet", started);
        // Read before the files are rewritten: a running bottle whose only changes are
        // pipelock's or egress's configs keeps its container and is reloaded below.
        let changes = ConfigChanges::between(&rendered.bundle, &dir)?;
        let mut owners = Owners::for_delivery(delivery);
        let mut notes = self.write_dir(&rendered, &dir, &mut owners)?;
        owners.save(&dir)?;
        // Every backend gets the same file on disk: what `GET …/compose.yaml` serves and what
        // an operator can run `docker compose -f` on by hand.
        crate::source::write_file(
            &dir.join(crate::runtime::compose_cli::COMPOSE_FILE),
            rendered.yaml.as_bytes(),
            0o644,
        )?;
        let record = BottleRecord {
            slug: slug.clone(),
            project: rendered.bundle.project.name.clone(),
            source: rendered.loaded.source.describe(),
            daemons: enabled_daemons(&rendered.loaded.manifest)
                .iter()
                .map(|d| d.name().to_string())
                .collect(),
            subnet: Some(subnet),
        };
        self.state.save(&record)?;
        // Before compose creates the network: no window in which the agent reaches the host.
        let bridge = internal_bridge_name(&rendered.bundle.project.name);
        match self.settings.host_guard {
            HostGuardMode::Required => crate::host_guard::install(&bridge).await?,
            HostGuardMode::Auto => {
                if let Err(e) = crate::host_guard::install(&bridge).await {
                    tracing::info!(error = %e, "host guard firewall layer not installed");
                    notes.push(format!(
                        "host guard: no firewall rule for bridge {bridge} (iptables unavailable here); the agent's network has no host address, which keeps it off host services (BOT_BOTTLE_HOST_GUARD=on makes the rule mandatory)"
                    ));
                }
            }
            HostGuardMode::Off => notes.push(
                "host guard firewall layer off (BOT_BOTTLE_HOST_GUARD=off): only the agent's network having no host address keeps it off host services"
                    .to_string(),
            ),
        }
        let t = crate::timing::phase("write the project dir, host guard", t);
        let deadline = Instant::now() + self.settings.up_timeout;
        self.runtime
            .up(&rendered.bundle.project, &dir, self.settings.up_timeout)
            .await?;
        let t = crate::timing::phase("runtime up (agent started)", t);
        let probe = rendered
            .bundle
            .project
            .services
            .get(bottle_compose::render::SIDECARS)
            .and_then(|s| s.healthcheck.as_ref())
            .and_then(|h| crate::runtime::healthcheck_argv(&h.test));
        let bottle = self.wait_healthy(&record, deadline, probe).await?;
        let t = crate::timing::phase("wait until the bottle reports healthy", t);
        // A bind-mounted config rewritten in place is seen by the running container, but
        // pipelock and egress read it only on their reload signal (the start-only files'
        // digest recreated the container if any of those changed; volumes always do).
        if delivery == FileDelivery::Bind && !changes.reloadable.is_empty() {
            self.signal_reload(&record.project).await?;
            notes.push(format!(
                "reloaded the running proxies with their changed config(s): {}",
                changes.reloadable.join(", ")
            ));
            crate::timing::phase("reload the proxies", t);
        }
        crate::timing::phase("up in all", started);
        let names: Vec<String> = enabled_daemons(&rendered.loaded.manifest)
            .iter()
            .map(|d| d.name().to_string())
            .collect();
        let endpoints = endpoints(&names, &bottle);
        let agent_env = bottle_compose::render::agent_env(&rendered.loaded.manifest)
            .into_iter()
            .collect();
        Ok(UpReport {
            bottle,
            dir: dir.display().to_string(),
            agent_env,
            endpoints,
            notes,
        })
    }

    /// Wait until the bottle is running with healthy sidecars. While Docker still says
    /// `starting`, the sidecars' healthcheck command (`probe`) is run here too: Docker runs its
    /// first check only one `interval` after the start, the bundle is ready well before, and
    /// the same command passing is the same answer (the summary then says `healthy`).
    async fn wait_healthy(
        &self,
        record: &BottleRecord,
        deadline: Instant,
        probe: Option<Vec<String>>,
    ) -> Result<BottleSummary, ControlError> {
        let sidecars = bottle_compose::render::SIDECARS;
        loop {
            let mut services = self.runtime.containers(&record.project).await?;
            let mut state = BottleState::of(&services);
            if let (BottleState::Starting, Some(argv)) = (state, &probe) {
                let passed = self
                    .runtime
                    .exec(&record.project, sidecars, argv, None)
                    .await
                    .is_ok_and(|out| out.code == 0);
                if passed {
                    for s in services.iter_mut().filter(|s| s.service == sidecars) {
                        s.health = Some("healthy".to_string());
                    }
                    state = BottleState::of(&services);
                }
            }
            let summary = BottleSummary {
                slug: record.slug.clone(),
                project: record.project.clone(),
                state,
                services,
            };
            let hint = format!("see `control-plane logs {}`", record.slug);
            match state {
                BottleState::Running => return Ok(summary),
                BottleState::Unhealthy => {
                    return Err(RuntimeError::Unhealthy(format!(
                        "bottle {} is unhealthy: a daemon is not ready ({hint})",
                        record.slug
                    ))
                    .into())
                }
                BottleState::Degraded => {
                    if let Some(dead) = summary.services.iter().find(|s| s.exit_code.is_some()) {
                        return Err(RuntimeError::Unhealthy(format!(
                            "container {} exited with code {} ({hint})",
                            dead.container,
                            dead.exit_code.unwrap_or(-1)
                        ))
                        .into());
                    }
                }
                BottleState::Starting | BottleState::Down => {}
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Unhealthy(format!(
                    "bottle {} is not healthy after {} s (state: {}; {hint})",
                    record.slug,
                    self.settings.up_timeout.as_secs(),
                    state.as_str()
                ))
                .into());
            }
            let pause = if probe.is_some() { 20 } else { 200 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }

    /// Take a bottle down (by slug, or by manifest path) and forget it. Idempotent.
    pub async fn down(&self, target: &str) -> Result<(String, DownReport), ControlError> {
        let slug = self.slug_of(target)?;
        let record = self.state.record(&slug)?;
        let project = record.map(|r| r.project).unwrap_or_else(|| {
            bottle_compose::render::project_name(&self.settings.render.prefix, &slug)
        });
        let dir = self.state.bottle_dir(&slug);
        let mut report = self
            .runtime
            .down(&project, dir.is_dir().then_some(dir.as_path()))
            .await?;
        if self.settings.host_guard != HostGuardMode::Off {
            crate::host_guard::remove(&internal_bridge_name(&project)).await;
        }
        report.state_removed = self.state.remove(&slug)?;
        Ok((slug, report))
    }

    /// A slug, or the slug of the manifest at that path.
    fn slug_of(&self, target: &str) -> Result<String, ControlError> {
        let path = PathBuf::from(target);
        if path.is_file() {
            return Ok(Source::File(path).load()?.manifest.slug);
        }
        if bottle_compose::validate::is_slug(target) {
            Ok(target.to_string())
        } else {
            Err(ControlError::Usage(format!(
                "{target:?} is neither a bottle slug nor a manifest file"
            )))
        }
    }

    /// Every bottle known in the state dir, with its containers' state.
    ///
    /// Bottles with containers in the runtime but no record (the state dir was lost, or a
    /// create was interrupted before its record was written) are listed too, found by their
    /// labels, as long as their project has this control plane's prefix: nothing it made is
    /// orphaned, and each bottle appears once.
    pub async fn ps(&self) -> Result<Vec<BottleSummary>, ControlError> {
        // One runtime query for every bottle's containers, not one per bottle.
        let found = self.runtime.bottles().await?;
        let mut records = self.state.list()?;
        for extra in self.ours(&found) {
            if !records.iter().any(|r| r.slug == extra.slug) {
                records.push(extra);
            }
        }
        records.sort_by(|a, b| a.slug.cmp(&b.slug));
        Ok(records
            .into_iter()
            .map(|record| {
                let services = found
                    .iter()
                    .find(|f| f.project == record.project)
                    .map(|f| f.services.clone())
                    .unwrap_or_default();
                BottleSummary {
                    slug: record.slug,
                    project: record.project,
                    state: BottleState::of(&services),
                    services,
                }
            })
            .collect())
    }

    /// Records for the found bottles under this control plane's prefix.
    fn ours(&self, found: &[FoundBottle]) -> Vec<BottleRecord> {
        let prefix = &self.settings.render.prefix;
        found
            .iter()
            .filter(|b| b.project == bottle_compose::render::project_name(prefix, &b.slug))
            .map(|b| BottleRecord {
                slug: b.slug.clone(),
                project: b.project.clone(),
                source: FOUND_IN_RUNTIME.to_string(),
                daemons: Vec::new(),
                subnet: None,
            })
            .collect()
    }

    /// One bottle in detail: containers, daemon health from `sidecar-init status --json`
    /// (run in the sidecars container), published daemon ports.
    pub async fn inspect(&self, slug: &str) -> Result<BottleDetail, ControlError> {
        let record = self.known(slug).await?;
        let services = self.runtime.containers(&record.project).await?;
        let summary = BottleSummary {
            slug: record.slug.clone(),
            project: record.project.clone(),
            state: BottleState::of(&services),
            services,
        };
        let (daemons, daemons_error) = if summary.state == BottleState::Down {
            (None, Some("the bottle has no containers".to_string()))
        } else {
            let argv = [INIT_PATH, "status", "--json"].map(String::from);
            // As the container's user (root): init's control socket is root's.
            match self
                .runtime
                .exec(&record.project, SIDECARS, &argv, None)
                .await
            {
                Ok(out) if out.code == 0 => match serde_json::from_slice(&out.stdout) {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(format!("unreadable sidecar-init status: {e}"))),
                },
                Ok(out) => (
                    None,
                    Some(format!(
                        "sidecar-init status exited {}: {}",
                        out.code,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                ),
                Err(e) => (None, Some(e.to_string())),
            }
        };
        let endpoints = endpoints(&record.daemons, &summary);
        Ok(BottleDetail {
            summary,
            daemons,
            daemons_error,
            endpoints,
        })
    }

    /// The compose file the bottle was brought up from.
    pub fn compose_yaml(&self, slug: &str) -> Result<String, ControlError> {
        if self.state.record(slug)?.is_none() {
            return Err(ControlError::UnknownBottle {
                slug: slug.to_string(),
            });
        }
        let path = self
            .state
            .bottle_dir(slug)
            .join(crate::runtime::compose_cli::COMPOSE_FILE);
        std::fs::read_to_string(&path).map_err(|e| ControlError::io("cannot read", &path, e))
    }

    /// The record of a bottle: from the state dir, else found in the runtime by its labels.
    async fn known(&self, slug: &str) -> Result<BottleRecord, ControlError> {
        if let Some(record) = self.state.record(slug)? {
            return Ok(record);
        }
        let found = self.runtime.bottles().await?;
        self.ours(&found)
            .into_iter()
            .find(|r| r.slug == slug)
            .ok_or_else(|| ControlError::UnknownBottle {
                slug: slug.to_string(),
            })
    }

    /// The sidecars container's output, optionally only one daemon's lines.
    pub async fn logs(
        &self,
        slug: &str,
        daemon: Option<String>,
        options: LogOptions,
    ) -> Result<mpsc::Receiver<LogLine>, ControlError> {
        let record = self.known(slug).await?;
        let mut raw = self
            .runtime
            .logs(&record.project, SIDECARS, options)
            .await?;
        let Some(daemon) = daemon else {
            return Ok(raw);
        };
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(line) = raw.recv().await {
                if logs::is_from(&line.line, &daemon) && tx.send(line).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    /// How to reach the bottle's pack-exec: a relay exec'd in its sidecars container.
    async fn pack_relay(&self, slug: &str) -> Result<Relay<'_>, ControlError> {
        let record = self.known(slug).await?;
        if !record.daemons.iter().any(|d| d == Daemon::PackExec.name()) {
            return Err(ControlError::Usage(format!(
                "bottle {slug} does not run pack-exec (add it to `daemons`)"
            )));
        }
        Ok(Relay {
            runtime: &self.runtime,
            project: record.project,
            service: SIDECARS.to_string(),
            user: Daemon::PackExec.user(),
        })
    }

    /// A client for the bottle's pack-exec agent listener (list, call).
    pub async fn pack_exec(&self, slug: &str) -> Result<PackClient<'_>, ControlError> {
        let relay = self.pack_relay(slug).await?;
        Ok(PackClient::new(relay, self.settings.request_timeout))
    }

    /// `packs list`.
    pub async fn packs_list(&self, slug: &str) -> Result<Bytes, ControlError> {
        self.pack_exec(slug).await?.list().await
    }

    /// A client for the bottle's pack-exec operator listener (install, delete), with the
    /// bottle's operator token from the project directory.
    pub async fn pack_operator(&self, slug: &str) -> Result<PackClient<'_>, ControlError> {
        let relay = self.pack_relay(slug).await?;
        let token = crate::secrets::operator_token(&self.state.bottle_dir(slug))?;
        Ok(PackClient::operator(
            relay,
            token,
            self.settings.request_timeout,
        ))
    }

    /// `packs install`: the directory as a tar.gz to the operator listener.
    pub async fn packs_install(
        &self,
        slug: &str,
        dir: &Path,
        flags: InstallFlags,
    ) -> Result<(String, PackAnswer), ControlError> {
        if !dir.is_dir() {
            return Err(ControlError::Usage(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        crate::packs::pack_name(dir)?;
        self.pack_operator(slug).await?.install(dir, flags).await
    }

    /// `PUT /v1/bottles/{slug}/packs/{name}`: an archive the client sent, as it is.
    pub async fn packs_install_archive(
        &self,
        slug: &str,
        name: &str,
        archive: Bytes,
        flags: InstallFlags,
    ) -> Result<PackAnswer, ControlError> {
        crate::packs::check_name(name)?;
        self.pack_operator(slug)
            .await?
            .install_archive(name, archive, flags)
            .await
    }

    /// `packs rm` / `DELETE /v1/bottles/{slug}/packs/{name}`.
    pub async fn packs_delete(&self, slug: &str, name: &str) -> Result<PackAnswer, ControlError> {
        crate::packs::check_name(name)?;
        self.pack_operator(slug).await?.delete(name).await
    }

    /// `approvals list|show|approve|deny`: runs `supervise-ctl` in the bottle's sidecars
    /// container (see [`crate::approvals`] for why not on the volume from the host).
    pub async fn approvals(&self, slug: &str, op: Op) -> Result<Answer, ControlError> {
        op.check()?;
        let record = self.known(slug).await?;
        if !record.daemons.iter().any(|d| d == Daemon::Supervise.name()) {
            return Err(ControlError::Usage(format!(
                "bottle {slug} does not run supervise (add it to `daemons`)"
            )));
        }
        // As supervise's uid: its queue is its own (0700) and nobody in the container holds
        // CAP_DAC_OVERRIDE.
        let user = Daemon::Supervise.user();
        let run = |op: Op| {
            let project = record.project.clone();
            let user = user.clone();
            async move {
                let argv = op.argv();
                let out = self
                    .runtime
                    .exec(&project, SIDECARS, &argv, Some(&user))
                    .await?;
                approvals::check_exit(&argv, &out)?;
                Ok::<_, ControlError>((argv, out.stdout))
            }
        };
        match op {
            Op::List { .. } => {
                let (argv, stdout) = run(op).await?;
                Ok(Answer::List(approvals::parse(&argv, &stdout)?))
            }
            Op::Show { ref id } | Op::Decide { ref id, .. } => {
                let show = Op::Show { id: id.clone() };
                if matches!(op, Op::Decide { .. }) {
                    run(op.clone()).await?;
                }
                let (argv, stdout) = run(show).await?;
                Ok(Answer::One(approvals::parse(&argv, &stdout)?))
            }
        }
    }

    /// `kill-switch on|off`: runs `sidecars kill-switch` in the bottle's sidecars container as
    /// root (the switch's file is on init's `/run/sidecars`, and init is signalled to forward
    /// the signal to pipelock and egress).
    pub async fn kill_switch(&self, slug: &str, engage: bool) -> Result<(), ControlError> {
        let record = self.known(slug).await?;
        let proxies = [Daemon::Pipelock.name(), Daemon::Egress.name()];
        if !record.daemons.iter().any(|d| proxies.contains(&d.as_str())) {
            return Err(ControlError::Usage(format!(
                "bottle {slug} runs neither pipelock nor egress: it has no outside traffic to stop"
            )));
        }
        let argv: Vec<String> = [
            bottle_compose::configs::init::DAEMON_BINARY,
            "kill-switch",
            if engage { "on" } else { "off" },
        ]
        .map(String::from)
        .to_vec();
        self.root_in_sidecars(&record.project, &argv).await?;
        tracing::warn!(slug, engaged = engage, "kill switch flipped");
        Ok(())
    }

    /// `reload`: re-renders the bottle from its manifest (`source`, else the one it was
    /// started from: see [`recorded_source`]), rewrites pipelock's and egress's changed
    /// configs in place, and asks sidecar-init to reload (`sidecar-init reload`, run as root
    /// in the sidecars container): every daemon with a reload signal gets its credentials
    /// handed out again from the mounted files (a credential file rotated in place on the
    /// host reaches egress) and then re-reads its config, routes and vault. A bad file keeps
    /// the daemon's current state, logged by the daemon.
    ///
    /// A manifest whose changes take effect only at start (another daemon's config, init's
    /// table, the containers' definition) is refused before anything is written, naming
    /// them: `up` applies it by recreating the sidecars container.
    pub async fn reload(
        &self,
        slug: &str,
        source: Option<Source>,
    ) -> Result<ReloadReport, ControlError> {
        let record = self.known(slug).await?;
        let dir = self.state.bottle_dir(slug);
        let source = match source {
            Some(s) => s,
            None => recorded_source(&record, &dir)?,
        };
        let described = source.describe();
        let loaded = source.load()?;
        if loaded.manifest.slug != slug {
            return Err(ControlError::Usage(format!(
                "{described} is the manifest of bottle {:?}, not of {slug:?}",
                loaded.manifest.slug
            )));
        }
        let subnet = record.subnet.ok_or_else(|| {
            ControlError::Usage(format!(
                "bottle {slug} has no recorded subnet (started by an older control plane): run `control-plane up` once, then reload"
            ))
        })?;
        let rendered = self.render_loaded(loaded, subnet)?;
        let compose = dir.join(crate::runtime::compose_cli::COMPOSE_FILE);
        let deployed = std::fs::read_to_string(&compose)
            .map_err(|e| ControlError::io("cannot read", &compose, e))?;
        let changes = ConfigChanges::between(&rendered.bundle, &dir)?;
        if !changes.restart.is_empty() || deployed != rendered.yaml {
            let what = if changes.restart.is_empty() {
                "the containers' definition (compose.yaml: images, mounts, ports, environment or limits)".to_string()
            } else {
                changes.restart.join(", ")
            };
            return Err(ControlError::NeedsUp(format!(
                "{described} changes what bottle {slug}'s daemons read only at start ({what}); reload applies pipelock's and egress's configs and credentials: run `control-plane up` with this manifest to apply it (recreates the sidecars container)"
            )));
        }
        if !changes.reloadable.is_empty() {
            if self.runtime.file_delivery() == FileDelivery::Volumes {
                return Err(ControlError::NeedsUp(format!(
                    "{} change(s), but this control plane delivers files as volumes ({}=volumes), whose contents a running container never sees change: run `control-plane up` to apply them (recreates the sidecars container)",
                    changes.reloadable.join(", "),
                    crate::runtime::files::FILES_VAR
                )));
            }
            crate::project::write_manifest(&rendered.loaded, &dir)?;
            let mut owners = Owners::for_delivery(FileDelivery::Bind);
            crate::project::write_configs(&rendered.bundle, &dir, &mut owners)?;
        }
        if record.source != described {
            self.state.save(&BottleRecord {
                source: described,
                ..record.clone()
            })?;
        }
        self.signal_reload(&record.project).await?;
        tracing::info!(slug, changed = ?changes.reloadable, "reload requested");
        Ok(ReloadReport {
            slug: slug.to_string(),
            changed: changes.reloadable,
        })
    }

    /// `sidecar-init reload` as root in the project's sidecars container.
    async fn signal_reload(&self, project: &str) -> Result<(), ControlError> {
        let argv: Vec<String> = [INIT_PATH, "reload"].map(String::from).to_vec();
        self.root_in_sidecars(project, &argv).await
    }

    /// Runs `argv` as root in the bottle's sidecars container (init's own tools: the kill
    /// switch, reload); a non-zero exit is an error carrying its stderr.
    async fn root_in_sidecars(&self, project: &str, argv: &[String]) -> Result<(), ControlError> {
        let out = self
            .runtime
            .exec(project, SIDECARS, argv, Some("0:0"))
            .await?;
        if out.code != 0 {
            return Err(RuntimeError::Failed {
                command: argv.join(" "),
                status: format!("exit code {}", out.code),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }
            .into());
        }
        Ok(())
    }

    /// `packs call`.
    pub async fn packs_call(
        &self,
        slug: &str,
        name: &str,
        input: Bytes,
    ) -> Result<Bytes, ControlError> {
        self.pack_exec(slug).await?.call(name, input).await
    }
}

/// What `reload` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// The bottle.
    pub slug: String,
    /// Config files rewritten before the reload signal (empty: the manifest is unchanged,
    /// and the reload hands out the credentials again and re-reads the same configs).
    pub changed: Vec<String>,
}

/// The manifest a bottle was started from, as its record says: the embedded example, the
/// file `up` read (by the path it recorded), or, for a bottle made through the API (or found
/// only by its labels), the copy kept in its project directory.
pub fn recorded_source(record: &BottleRecord, dir: &Path) -> Result<Source, ControlError> {
    if record.source == Source::Example.describe() {
        return Ok(Source::Example);
    }
    let path = PathBuf::from(&record.source);
    if path.is_absolute() {
        if !path.is_file() {
            return Err(ControlError::Usage(format!(
                "bottle {} was started from {}, which is no longer there: pass the manifest to reload",
                record.slug,
                path.display()
            )));
        }
        return Ok(Source::File(path));
    }
    let (text, name) = crate::project::kept_manifest(dir)?;
    Ok(Source::Inline {
        text,
        name: Some(name),
    })
}

/// `source` of a bottle found by its labels without a state record.
pub const FOUND_IN_RUNTIME: &str = "found in the runtime by its labels (no state record)";

/// Where sidecar-init lives in the sidecars image (it is PID 1 there).
pub const INIT_PATH: &str = "/sidecar-init";

/// Each named daemon's published port on the host, from the sidecars container's ports.
fn endpoints(daemons: &[String], bottle: &BottleSummary) -> Vec<Endpoint> {
    daemons
        .iter()
        .filter_map(|name| {
            let daemon = Daemon::from_name(name)?;
            let host = bottle
                .services
                .iter()
                .filter(|s| s.service == SIDECARS)
                .flat_map(|s| s.ports.iter())
                .find(|p| p.container_port == daemon.port())?
                .host;
            Some(Endpoint {
                daemon: name.clone(),
                container_port: daemon.port(),
                host,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Subnet {
        Subnet::parse(text).unwrap()
    }

    #[test]
    fn the_pool_comes_from_the_variable_or_is_the_default() {
        assert_eq!(subnet_pool(None).unwrap(), bottle_spec::DEFAULT_SUBNET_POOL);
        assert_eq!(
            subnet_pool(Some(" ")).unwrap(),
            bottle_spec::DEFAULT_SUBNET_POOL
        );
        assert_eq!(
            subnet_pool(Some("10.50.0.0/20")).unwrap(),
            s("10.50.0.0/20")
        );
        assert_eq!(
            subnet_pool(Some("10.50.0.0/28")).unwrap(),
            s("10.50.0.0/28")
        );
        for bad in ["10.50.0.1/20", "10.50.0.0", "fd00::/64", "10.50.0.0/29"] {
            let err = subnet_pool(Some(bad)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
            assert!(
                err.to_string().starts_with("BOT_BOTTLE_SUBNET_POOL: "),
                "{err}"
            );
        }
    }

    #[test]
    fn a_subnet_is_kept_while_free_else_the_next_free_slot() {
        let pool = s("10.9.0.0/26");
        let hashed = Subnet::for_project(pool, "p", &[]).unwrap();
        assert_eq!(choose_subnet(pool, "p", None, &[]).unwrap(), hashed);
        let next = choose_subnet(pool, "p", None, &[hashed]).unwrap();
        assert_eq!(next, Subnet::for_project(pool, "p", &[hashed]).unwrap());
        assert_ne!(next, hashed);
        // Kept even when the hash slot is free again, and even outside a changed pool.
        assert_eq!(choose_subnet(pool, "p", Some(next), &[]).unwrap(), next);
        let elsewhere = s("172.30.0.16/28");
        assert_eq!(
            choose_subnet(pool, "p", Some(elsewhere), &[]).unwrap(),
            elsewhere
        );
        // A kept subnet someone else holds now is given up.
        assert_eq!(
            choose_subnet(pool, "p", Some(next), &[next]).unwrap(),
            hashed
        );
        // Nothing left: the error names the pool and the variable.
        let err = choose_subnet(pool, "p", None, &[s("10.9.0.0/24")]).unwrap_err();
        assert!(matches!(err, ControlError::NoSubnet { .. }));
        let text = err.to_string();
        assert!(
            text.contains("BOT_BOTTLE_SUBNET_POOL=10.9.0.0/26"),
            "{text}"
        );
        assert_eq!(err.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }
}
