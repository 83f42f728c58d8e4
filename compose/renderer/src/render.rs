//! Manifest → [`Bundle`]: the compose model plus the files the project directory needs.
//!
//! Pure: the same manifest and options always give the same bundle; nothing here reads the
//! environment, the clock or the disk. The control plane resolves its inputs (e.g.
//! `BOT_BOTTLE_SIDECAR_IMAGE`) and passes them in [`RenderOptions`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use bottle_spec::Subnet;
use serde::Serialize;

use crate::configs::{self, ConfigFile};
use crate::daemon::Daemon;
use crate::error::{Problem, RenderError};
use crate::manifest::{Limits, Manifest};
use crate::model::{
    DependsOn, Healthcheck, Ipam, IpamPool, Mount, Network, PortBinding, Project, Service,
    ServiceNetwork, Volume,
};
use crate::validate::{self, format_size, parse_size};

/// The sidecars image when neither `BOT_BOTTLE_SIDECAR_IMAGE` nor the manifest names one:
/// what `scripts/images.sh` builds.
pub const DEFAULT_SIDECAR_IMAGE: &str = "sidecar-bundle/sidecars:dev";
/// Default prefix of project and container names.
pub const DEFAULT_PREFIX: &str = "bot-bottle";
/// Name of the agent service.
pub const AGENT: &str = "agent";
/// Name of the sidecars service, and its DNS name on the internal network.
pub const SIDECARS: &str = "sidecars";
/// Label carrying the bottle's slug (on services, networks and volumes).
pub const LABEL_SLUG: &str = "io.bot-bottle.slug";
/// Label carrying the service's role (`agent` or `sidecars`).
pub const LABEL_ROLE: &str = "io.bot-bottle.role";
/// Label of the sidecars service carrying a SHA-256 of the config files its daemons read only
/// at start ([`ConfigFile::reloadable`] false). The files are bind-mounted, so neither compose
/// nor the Engine backend sees their contents change; with this label a changed file changes
/// the service's definition, and `up` recreates the container instead of leaving a daemon on
/// its old config. Reloadable files stay out of it: a running bottle takes them on reload.
pub const LABEL_RESTART_DIGEST: &str = "io.bot-bottle.restart-digest";
/// The unprivileged user the agent runs as by default (nobody).
pub const NOBODY: &str = "65534:65534";
/// The sidecars container's user: root, for sidecar-init alone, which keeps only
/// `bottle_spec::INIT_CAPABILITIES` and starts every daemon under its own uid.
pub const SIDECARS_USER: &str = "0:0";
/// Default `resources.sidecars.pids`.
pub const DEFAULT_SIDECARS_PIDS: u32 = 512;
/// Default `resources.agent.pids`.
pub const DEFAULT_AGENT_PIDS: u32 = 1024;
/// Default `resources.sidecars.tmp_size` (64m).
pub const DEFAULT_SIDECARS_TMP: u64 = 64 << 20;
/// Default `resources.agent.tmp_size` (256m).
pub const DEFAULT_AGENT_TMP: u64 = 256 << 20;
/// Size of the sidecars container's `/run/sidecars` tmpfs: init's sockets and the daemons'
/// credentials directories.
pub const RUN_SIDECARS_TMP: u64 = 16 << 20;
/// Default host file of pack-exec's operator token (relative to the project dir), created by
/// the control plane and mounted at `configs::OPERATOR_TOKEN_MOUNT`.
pub const DEFAULT_OPERATOR_TOKEN_FILE: &str = "./secrets/pack-exec-operator-token";
/// Compose stop grace of both services: sidecar-init finishes inside it (8 s budget).
pub const STOP_GRACE: &str = "10s";
/// Directory (relative to the project dir) of the values the control plane generates for
/// `credentials.NAME.generate` (one file per name, root-only like every bundle secret).
pub const GENERATED_CREDENTIALS_DIR: &str = "secrets/credentials";
/// Name of the demo upstream service (`demo_upstream`), and its DNS name on the egress network.
pub const DEMO_UPSTREAM: &str = "demo-upstream";
/// The demo upstream's HTTP port.
pub const DEMO_UPSTREAM_HTTP_PORT: u16 = 8080;
/// Directory (relative to the project dir) the manifest's packs are copied into.
pub const PACKS_DIR: &str = "packs";
/// Named volume holding pack-exec's state.
pub const PACK_STATE_VOLUME: &str = "pack-exec-state";
/// Named volume holding git-gate's mirrors.
pub const GIT_MIRRORS_VOLUME: &str = "git-gate-mirrors";
/// Named volume holding supervise's approval queue.
pub const SUPERVISE_QUEUE_VOLUME: &str = "supervise-queue";
/// The bottle CA's certificate in the agent (what `NODE_EXTRA_CA_CERTS` names).
pub const AGENT_CA_CERT: &str = "/etc/bot-bottle/ca.crt";
/// The agent's CA bundle: public roots plus the bottle CA (what `SSL_CERT_FILE`,
/// `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE` and `GIT_SSL_CAINFO` name: they *replace* the
/// system store, and hosts egress does not intercept present their real certificates).
pub const AGENT_CA_BUNDLE: &str = "/etc/bot-bottle/ca-bundle.crt";
/// Agent variables naming the full bundle (the contract's list less Node's, which the agent
/// gets pointed at the bottle CA alone).
pub const CA_BUNDLE_VARS: [&str; 4] = [
    bottle_spec::CA_BUNDLE_VARS[0],
    bottle_spec::CA_BUNDLE_VARS[1],
    bottle_spec::CA_BUNDLE_VARS[2],
    bottle_spec::CA_BUNDLE_VARS[3],
];

/// Host-side files of the bottle's CA, created by the control plane (not the renderer: it
/// holds a private key and is random), bind-mounted read-only. Paths are relative to the
/// project directory (compose resolves them there) or absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaFiles {
    /// PEM certificate: into the sidecars container (egress) and the agent.
    pub cert: String,
    /// PEM private key: into the sidecars container only.
    pub key: String,
    /// Public roots + the bottle CA: into the agent only.
    pub bundle: String,
}

impl Default for CaFiles {
    fn default() -> Self {
        CaFiles {
            cert: "./ca/ca.crt".to_string(),
            key: "./ca/ca.key".to_string(),
            bundle: "./ca/ca-bundle.crt".to_string(),
        }
    }
}

/// The bridge driver option that names the host-side interface of a network.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// The bridge driver option that leaves the host without an address on a network.
///
/// Why: with no host address on the agent's bridge, the host is not a peer on that network at
/// all — no gateway answers, and packets for the host's other addresses have no next hop — so
/// the agent cannot reach services listening on the host (Docker's `internal: true` alone still
/// delivers them). It is a network option, so every runtime backend applies it without touching
/// the host's firewall; the control plane's iptables rule (`host_guard`) is a second layer.
pub const INHIBIT_IPV4_OPTION: &str = "com.docker.network.bridge.inhibit_ipv4";

/// Host interface name of a project's internal network: `bb` + 12 hex digits of a stable hash
/// of the project name (Linux allows 15 characters).
///
/// Why: Docker's `internal: true` stops forwarding out of the host but not packets addressed to
/// the host itself, so an agent could reach services listening on any host address through its
/// network's gateway. A fixed, predictable name lets the control plane drop that input traffic
/// with a firewall rule installed *before* the network and the agent exist.
pub fn internal_bridge_name(project: &str) -> String {
    // FNV-1a, 64 bit: stable across Rust versions and platforms (unlike DefaultHasher).
    let hash = project.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("bb{:012x}", hash >> 16)
}

/// Inputs of the renderer that are not in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Prefix of project and container names (default `bot-bottle`).
    pub prefix: String,
    /// Sidecars image override (the control plane passes `BOT_BOTTLE_SIDECAR_IMAGE`); wins
    /// over the manifest's `sidecar_image`.
    pub sidecar_image: Option<String>,
    /// Where the control plane keeps the bottle's CA (used when egress is enabled).
    pub ca: CaFiles,
    /// The agent network's subnet (the control plane picks one that overlaps no existing
    /// network, with `Subnet::for_project`). `None`: the hash choice of
    /// `Subnet::for_project(DEFAULT_SUBNET_POOL, <project>, &[])`, what `render` prints when
    /// it cannot look at Docker. At most a /29 (network, gateway, sidecars, agent, broadcast).
    pub internal_subnet: Option<Subnet>,
    /// Host file of pack-exec's operator token, created by the control plane (random, like
    /// the CA key); relative to the project dir or absolute. Mounted when pack-exec is on.
    pub pack_exec_operator_token: String,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            sidecar_image: None,
            ca: CaFiles::default(),
            internal_subnet: None,
            pack_exec_operator_token: DEFAULT_OPERATOR_TOKEN_FILE.to_string(),
        }
    }
}

/// Smallest agent network: a /29 holds the network address, the gateway, the sidecars
/// container, the agent and the broadcast address.
pub const MAX_SUBNET_PREFIX: u8 = 29;

/// Everything a runtime needs to bring a bottle up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bundle {
    /// The bottle's slug.
    pub slug: String,
    /// The compose model.
    pub project: Project,
    /// Config files to write under the project dir (bind-mounted read-only).
    pub files: Vec<ConfigFile>,
    /// Pack directories to copy into the project dir; `None` when pack-exec is off (then no
    /// packs directory is mounted).
    pub packs: Option<Vec<PackCopy>>,
    /// The CA files the control plane must provide before `up` (egress enabled), else `None`.
    pub ca: Option<CaFiles>,
    /// The host file of pack-exec's operator token the control plane must provide before
    /// `up` (pack-exec enabled), else `None`.
    pub pack_exec_operator_token: Option<String>,
    /// The agent network's subnet (the option's, or the hash choice).
    pub internal_subnet: Subnet,
    /// Credential files on the host, bind-mounted read-only into the sidecars container only.
    /// The control plane checks they exist; their contents are never read or copied.
    pub credentials: Vec<CredentialMount>,
    /// The sidecars container's seccomp profile (with pack-exec: the handler jail needs
    /// `unshare`), written into the project dir and named by the service's `security_opt`.
    pub seccomp_profile: Option<ProjectFile>,
}

/// A file the control plane writes into the project dir for the runtime (not mounted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectFile {
    /// Path relative to the project dir.
    pub path: String,
    /// Contents.
    pub contents: String,
}

/// One credential file mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialMount {
    /// The credential's name.
    pub name: String,
    /// Absolute path on the host (from the manifest), or, when `generated`, a path relative to
    /// the project dir (`./secrets/credentials/NAME`).
    pub host_path: String,
    /// The control plane generates the value (`credentials.NAME.generate`).
    pub generated: bool,
    /// Path in the sidecars container (`/run/secrets/bottle/<NAME>`), readable by
    /// sidecar-init only, which copies it to the daemons that declare it.
    pub target: String,
}

/// One pack directory to copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackCopy {
    /// The path as written in the manifest (relative to the manifest's directory).
    pub source: String,
    /// Destination relative to the project dir (`packs/<name>`).
    pub dest: String,
}

/// Project name of a bottle: `<prefix>-<slug>`.
pub fn project_name(prefix: &str, slug: &str) -> String {
    format!("{prefix}-{slug}")
}

/// Container name of a bottle's service: `<prefix>-<service>-<slug>`.
pub fn container_name(prefix: &str, service: &str, slug: &str) -> String {
    format!("{prefix}-{service}-{slug}")
}

/// The environment the renderer gives the agent for the enabled daemons: how it reaches
/// each one through the `sidecars` name. Variables of disabled daemons are absent.
pub fn agent_env(m: &Manifest) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for d in &m.daemons {
        match d {
            Daemon::Pipelock => {
                let proxy = format!("http://{SIDECARS}:{}", d.port());
                for key in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
                    env.insert(key.to_string(), proxy.clone());
                }
                let no_proxy = format!("{SIDECARS},localhost,127.0.0.1");
                env.insert("NO_PROXY".to_string(), no_proxy.clone());
                env.insert("no_proxy".to_string(), no_proxy);
            }
            Daemon::GitGate => {
                let base = format!("git://{SIDECARS}:{}/", d.port());
                let url = match m.git.first() {
                    Some(repo) => format!("{base}{}", repo.name),
                    None => base,
                };
                env.insert("GIT_GATE_URL".to_string(), url);
            }
            Daemon::Supervise => {
                env.insert(
                    "MCP_SUPERVISE_URL".to_string(),
                    format!("http://{SIDECARS}:{}/mcp", d.port()),
                );
            }
            Daemon::PackExec => {
                env.insert(
                    "PACK_EXEC_URL".to_string(),
                    format!("http://{SIDECARS}:{}", d.port()),
                );
                env.insert(
                    "MCP_PACKS_URL".to_string(),
                    format!("http://{SIDECARS}:{}/mcp", d.port()),
                );
            }
            Daemon::Egress => {
                env.insert("NODE_EXTRA_CA_CERTS".to_string(), AGENT_CA_CERT.to_string());
                for key in CA_BUNDLE_VARS {
                    env.insert(key.to_string(), AGENT_CA_BUNDLE.to_string());
                }
            }
        }
    }
    env
}

/// The enabled daemons in dependency order (the `SIDECARS_DAEMONS` order).
pub fn enabled_daemons(m: &Manifest) -> Vec<Daemon> {
    Daemon::ALL
        .into_iter()
        .filter(|d| m.daemons.contains(d))
        .collect()
}

/// Render a bottle. Fails only when the manifest is invalid (it is validated again here, so a
/// hand-built [`Manifest`] cannot skip the checks) or the options are malformed.
pub fn render(m: &Manifest, opts: &RenderOptions) -> Result<Bundle, RenderError> {
    let problems = validate::problems(m);
    if !problems.is_empty() {
        return Err(RenderError::Manifest(problems));
    }
    let mut bad = Vec::new();
    if !validate::is_slug(&opts.prefix) || opts.prefix.len() > 20 {
        bad.push(Problem::new(
            "prefix",
            format!("{:?} must match ^[a-z0-9][a-z0-9-]{{0,19}}$", opts.prefix),
        ));
    }
    if let Some(image) = &opts.sidecar_image {
        if let Err(why) = validate::check_image(image) {
            bad.push(Problem::new("BOT_BOTTLE_SIDECAR_IMAGE", why));
        }
    }
    let subnet = match opts.internal_subnet {
        Some(s) => Some(s),
        None => Subnet::for_project(
            bottle_spec::DEFAULT_SUBNET_POOL,
            &project_name(&opts.prefix, &m.slug),
            &[],
        ),
    };
    match subnet {
        Some(s) if s.prefix <= MAX_SUBNET_PREFIX => {}
        Some(s) => bad.push(Problem::new(
            "internal_subnet",
            format!("{s} is too small: the agent network needs at least a /{MAX_SUBNET_PREFIX}"),
        )),
        None => bad.push(Problem::new(
            "internal_subnet",
            "the default pool has no free subnet",
        )),
    }
    if opts.pack_exec_operator_token.is_empty() || opts.pack_exec_operator_token.contains('\0') {
        bad.push(Problem::new(
            "pack_exec_operator_token",
            "must be a file path",
        ));
    }
    let subnet = match subnet {
        Some(s) if bad.is_empty() => s,
        _ => return Err(RenderError::Options(bad)),
    };
    let sidecars_ip = subnet.sidecars_ip();

    let slug = m.slug.as_str();
    let internal = format!("{slug}-internal");
    let egress = format!("{slug}-egress");
    let slug_labels = BTreeMap::from([(LABEL_SLUG.to_string(), slug.to_string())]);
    let enabled = enabled_daemons(m);

    // Config files: init's table, the DNS responder's, then each enabled daemon's own.
    let mut files = vec![
        ConfigFile::json("init", &configs::init::render(m), false),
        ConfigFile::json(
            bottle_spec::DNS_NAME,
            &configs::dns::render(sidecars_ip),
            false,
        ),
    ];
    for d in &enabled {
        files.push(ConfigFile::json(
            d.name(),
            &configs::renderer_for(*d)(m),
            configs::reloads(*d),
        ));
    }

    let mut volumes = BTreeMap::new();
    let mut mounts: Vec<Mount> = files
        .iter()
        .map(|f| Mount::Bind {
            source: format!("./{}", f.path),
            target: f.target.clone(),
            read_only: true,
        })
        .collect();
    let packs = enabled.contains(&Daemon::PackExec).then(|| {
        mounts.push(Mount::Bind {
            source: format!("./{PACKS_DIR}"),
            target: configs::pack_exec::PACKS_DIR.to_string(),
            read_only: true,
        });
        mounts.push(Mount::Volume {
            source: PACK_STATE_VOLUME.to_string(),
            target: configs::pack_exec::STATE_DIR.to_string(),
            read_only: false,
        });
        volumes.insert(
            PACK_STATE_VOLUME.to_string(),
            Volume {
                labels: slug_labels.clone(),
            },
        );
        m.packs
            .iter()
            .filter_map(|source| {
                let name = validate::pack_dir_name(source)?;
                Some(PackCopy {
                    source: source.clone(),
                    dest: format!("{PACKS_DIR}/{name}"),
                })
            })
            .collect()
    });

    let credentials: Vec<CredentialMount> = m
        .credentials
        .iter()
        .map(|(name, c)| CredentialMount {
            name: name.clone(),
            host_path: match &c.file {
                Some(file) if !c.generate => file.clone(),
                _ => format!("./{GENERATED_CREDENTIALS_DIR}/{name}"),
            },
            generated: c.generate,
            target: configs::credential_path(name),
        })
        .collect();
    mounts.extend(credentials.iter().map(|c| Mount::Bind {
        source: c.host_path.clone(),
        target: c.target.clone(),
        read_only: true,
    }));
    let mut agent_mounts = Vec::new();
    let ca = enabled.contains(&Daemon::Egress).then(|| {
        mounts.push(Mount::Bind {
            source: opts.ca.cert.clone(),
            target: configs::CA_CERT.to_string(),
            read_only: true,
        });
        mounts.push(Mount::Bind {
            source: opts.ca.key.clone(),
            target: configs::CA_KEY_MOUNT.to_string(),
            read_only: true,
        });
        agent_mounts.push(Mount::Bind {
            source: opts.ca.cert.clone(),
            target: AGENT_CA_CERT.to_string(),
            read_only: true,
        });
        agent_mounts.push(Mount::Bind {
            source: opts.ca.bundle.clone(),
            target: AGENT_CA_BUNDLE.to_string(),
            read_only: true,
        });
        // Pack handlers' traffic is intercepted like the agent's: they get the same bundle.
        if enabled.contains(&Daemon::PackExec) {
            mounts.push(Mount::Bind {
                source: opts.ca.bundle.clone(),
                target: bottle_spec::HANDLER_CA_BUNDLE.to_string(),
                read_only: true,
            });
        }
        opts.ca.clone()
    });
    let pack_exec_operator_token = enabled.contains(&Daemon::PackExec).then(|| {
        mounts.push(Mount::Bind {
            source: opts.pack_exec_operator_token.clone(),
            target: configs::OPERATOR_TOKEN_MOUNT.to_string(),
            read_only: true,
        });
        opts.pack_exec_operator_token.clone()
    });
    for (daemon, volume, target) in [
        (
            Daemon::GitGate,
            GIT_MIRRORS_VOLUME,
            configs::git_gate::BASE_DIR,
        ),
        (
            Daemon::Supervise,
            SUPERVISE_QUEUE_VOLUME,
            configs::supervise::QUEUE_DIR,
        ),
    ] {
        if enabled.contains(&daemon) {
            mounts.push(Mount::Volume {
                source: volume.to_string(),
                target: target.to_string(),
                read_only: false,
            });
            volumes.insert(
                volume.to_string(),
                Volume {
                    labels: slug_labels.clone(),
                },
            );
        }
    }

    let sidecar_image = opts
        .sidecar_image
        .clone()
        .or_else(|| m.sidecar_image.clone())
        .unwrap_or_else(|| DEFAULT_SIDECAR_IMAGE.to_string());
    // The DNS responder always runs, first.
    let daemon_list: Vec<&str> = std::iter::once(bottle_spec::DNS_NAME)
        .chain(enabled.iter().map(|d| d.name()))
        .collect();
    let published: Vec<u16> = enabled
        .iter()
        .filter(|d| d.published())
        .map(|d| d.port())
        .collect();
    // pack-exec's operator listener is not published: it binds the container's loopback and
    // the control plane reaches it through the Engine (configs::pack_exec::OPERATOR_HOST).
    // The handler jail needs `unshare` (crate::seccomp): only bottles with pack-exec ship it.
    let seccomp_profile = enabled.contains(&Daemon::PackExec).then(|| ProjectFile {
        path: crate::seccomp::PROFILE_FILE.to_string(),
        contents: crate::seccomp::profile_text(),
    });
    let mut sidecars_security = hardened(&m.resources.sidecars, DEFAULT_SIDECARS_PIDS).security_opt;
    if let Some(p) = &seccomp_profile {
        sidecars_security.push(format!("seccomp=./{}", p.path));
    }
    let sidecars = Service {
        image: sidecar_image,
        container_name: container_name(&opts.prefix, SIDECARS, slug),
        hostname: Some(SIDECARS.to_string()),
        init: None,
        user: SIDECARS_USER.to_string(),
        command: None,
        environment: BTreeMap::from([("SIDECARS_DAEMONS".to_string(), daemon_list.join(","))]),
        labels: {
            let mut labels = role_labels(slug, SIDECARS);
            labels.insert(LABEL_RESTART_DIGEST.to_string(), restart_digest(&files));
            labels
        },
        networks: BTreeMap::from([
            (
                internal.clone(),
                ServiceNetwork {
                    aliases: vec![SIDECARS.to_string()],
                    ipv4_address: Some(sidecars_ip),
                },
            ),
            (egress.clone(), ServiceNetwork::default()),
        ]),
        ports: published
            .into_iter()
            .map(|port| PortBinding {
                host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                host_port: None,
                container_port: port,
            })
            .collect(),
        volumes: mounts,
        tmpfs: vec![
            tmp(&m.resources.sidecars, DEFAULT_SIDECARS_TMP),
            format!(
                "/run/sidecars:size={},mode=0755",
                format_size(RUN_SIDECARS_TMP)
            ),
        ],
        cap_add: bottle_spec::INIT_CAPABILITIES.map(String::from).to_vec(),
        security_opt: sidecars_security,
        healthcheck: Some(Healthcheck {
            test: vec!["CMD".into(), "/sidecar-init".into(), "health".into()],
            interval: "1s".into(),
            timeout: "3s".into(),
            retries: 3,
            start_period: "10s".into(),
        }),
        depends_on: BTreeMap::new(),
        ..hardened(&m.resources.sidecars, DEFAULT_SIDECARS_PIDS)
    };

    let mut env = m.agent.env.clone();
    env.extend(agent_env(m));
    let agent = Service {
        image: m.agent.image.clone(),
        container_name: container_name(&opts.prefix, AGENT, slug),
        hostname: None,
        init: m.agent.init.then_some(true),
        user: m.agent.user.clone().unwrap_or_else(|| NOBODY.to_string()),
        command: m.agent.command.clone(),
        environment: env,
        labels: role_labels(slug, AGENT),
        networks: BTreeMap::from([(internal.clone(), ServiceNetwork::default())]),
        // Docker's embedded resolver answers the bottle's container names and forwards every
        // other name to the bottle's DNS responder, which refuses it.
        dns: vec![IpAddr::V4(sidecars_ip)],
        ports: vec![],
        volumes: agent_mounts,
        tmpfs: vec![tmp(&m.resources.agent, DEFAULT_AGENT_TMP)],
        healthcheck: None,
        depends_on: BTreeMap::from([(
            SIDECARS.to_string(),
            DependsOn {
                condition: "service_healthy".to_string(),
            },
        )]),
        ..hardened(&m.resources.agent, DEFAULT_AGENT_PIDS)
    };

    let mut sidecars = sidecars;
    let mut services = BTreeMap::new();
    if let Some(demo) = &m.demo_upstream {
        // git-gate fetches from it at start: start it first (it serves within ~0.1 s; a miss is
        // retried on the agent's next clone or fetch).
        sidecars.depends_on.insert(
            DEMO_UPSTREAM.to_string(),
            DependsOn {
                condition: "service_started".to_string(),
            },
        );
        services.insert(
            DEMO_UPSTREAM.to_string(),
            demo_upstream(demo, opts, slug, &egress),
        );
    }
    services.insert(AGENT.to_string(), agent);
    services.insert(SIDECARS.to_string(), sidecars);
    let project = Project {
        name: project_name(&opts.prefix, slug),
        services,
        networks: BTreeMap::from([
            (
                internal,
                Network {
                    internal: true,
                    driver_opts: BTreeMap::from([
                        (
                            BRIDGE_NAME_OPTION.to_string(),
                            internal_bridge_name(&project_name(&opts.prefix, slug)),
                        ),
                        (INHIBIT_IPV4_OPTION.to_string(), "true".to_string()),
                    ]),
                    ipam: Some(Ipam {
                        config: vec![IpamPool {
                            subnet: subnet.to_string(),
                            gateway: subnet.gateway(),
                        }],
                    }),
                    labels: slug_labels.clone(),
                },
            ),
            (
                egress,
                Network {
                    internal: false,
                    driver_opts: BTreeMap::new(),
                    ipam: None,
                    labels: slug_labels,
                },
            ),
        ]),
        volumes,
    };
    Ok(Bundle {
        slug: slug.to_string(),
        project,
        files,
        packs,
        ca,
        pack_exec_operator_token,
        internal_subnet: subnet,
        credentials,
        seccomp_profile,
    })
}

/// The demo upstream service: on the egress network only, unprivileged, read-only, small.
fn demo_upstream(
    demo: &crate::manifest::DemoUpstream,
    opts: &RenderOptions,
    slug: &str,
    egress: &str,
) -> Service {
    let limits = Limits {
        cpus: None,
        memory: Some("128m".to_string()),
        pids: None,
        tmp_size: None,
    };
    Service {
        image: demo.image.clone(),
        container_name: container_name(&opts.prefix, DEMO_UPSTREAM, slug),
        hostname: Some(DEMO_UPSTREAM.to_string()),
        // Reaps the git daemon's children.
        init: Some(true),
        command: Some(vec![DEMO_UPSTREAM.to_string()]),
        labels: role_labels(slug, DEMO_UPSTREAM),
        networks: BTreeMap::from([(egress.to_string(), ServiceNetwork::default())]),
        tmpfs: vec![tmp(&limits, 32 << 20)],
        ..hardened(&limits, 64)
    }
}

/// A service's `/tmp` tmpfs: `resources.<service>.tmp_size` or `default` bytes, world-writable
/// with the sticky bit.
fn tmp(limits: &Limits, default: u64) -> String {
    let size = limits
        .tmp_size
        .as_deref()
        .and_then(parse_size)
        .unwrap_or(default);
    format!("/tmp:size={},mode=1777", format_size(size))
}

/// [`LABEL_RESTART_DIGEST`]'s value: SHA-256 over each start-only file's path and contents.
fn restart_digest(files: &[ConfigFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for f in files.iter().filter(|f| !f.reloadable) {
        for part in [f.path.as_bytes(), f.contents.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
    }
    hex::encode(hash.finalize())
}

fn role_labels(slug: &str, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_SLUG.to_string(), slug.to_string()),
        (LABEL_ROLE.to_string(), role.to_string()),
    ])
}

/// The hardening both services share; callers fill in the rest.
fn hardened(limits: &Limits, default_pids: u32) -> Service {
    Service {
        image: String::new(),
        container_name: String::new(),
        hostname: None,
        init: None,
        user: NOBODY.to_string(),
        command: None,
        environment: BTreeMap::new(),
        labels: BTreeMap::new(),
        networks: BTreeMap::new(),
        dns: vec![],
        ports: vec![],
        volumes: vec![],
        tmpfs: vec![],
        read_only: true,
        cap_drop: vec!["ALL".to_string()],
        cap_add: vec![],
        security_opt: vec!["no-new-privileges:true".to_string()],
        depends_on: BTreeMap::new(),
        healthcheck: None,
        stop_grace_period: STOP_GRACE.to_string(),
        cpus: limits.cpus,
        mem_limit: limits.memory.clone(),
        pids_limit: Some(limits.pids.unwrap_or(default_pids)),
    }
}
