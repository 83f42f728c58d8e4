//! The bottle manifest: what a user writes (TOML, or JSON) to describe one bottle.
//!
//! Every struct denies unknown fields, so a typo is an error naming the field instead of a
//! silently ignored key. Parsing goes through `serde_path_to_error` so a type error names its
//! path (`agent.command[1]`); [`crate::validate`] then reports every semantic problem at once.
//! Strings are literal: nothing in a manifest is ever interpolated (see [`crate::yaml`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::daemon::Daemon;
use crate::error::ManifestError;

/// Default of [`Manifest::https_body_limit`] (64 MiB): uploads of this size stream through
/// egress's DLP in constant memory.
pub const DEFAULT_HTTPS_BODY_LIMIT: u64 = 64 << 20;

/// A whole bottle: one agent, one sidecars container and what the daemons need.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short name of the bottle: project, container and network names derive from it.
    pub slug: String,
    /// The agent container.
    pub agent: Agent,
    /// Which daemons run in the sidecars container (default: `["pack-exec"]`).
    #[serde(default = "default_daemons")]
    pub daemons: Vec<Daemon>,
    /// Per-daemon supervision overrides (restart policy, grace, ...), keyed by daemon name
    /// (string keys, so a bad key's path is reported; names are checked by validation).
    #[serde(default)]
    pub daemon_settings: BTreeMap<String, DaemonSettings>,
    /// Destinations the agent may reach through pipelock.
    #[serde(default)]
    pub allowlist: Vec<AllowRule>,
    /// Address ranges (CIDRs) exempt from the SSRF guard of pipelock and egress: an operator's
    /// deliberate exception (tests reaching a server on loopback), never a default.
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
    /// Hosts for which egress injects credentials.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Exact host names whose HTTPS egress tunnels blind instead of decrypting and scanning
    /// (clients that pin their server's certificate). A DLP gap for those hosts.
    #[serde(default)]
    pub passthrough: Vec<String>,
    /// Largest decrypted HTTPS request body egress scans and forwards (a size: `64m`; at
    /// least `1m`; default [`DEFAULT_HTTPS_BODY_LIMIT`]); a larger one is refused with 413.
    /// egress streams bodies through the DLP in 1 MiB windows, so its memory does not grow
    /// with this bound.
    #[serde(default)]
    pub https_body_limit: Option<String>,
    /// Credentials (by name) holding PEM root certificates egress trusts for upstream TLS
    /// besides the public roots: a private CA of hosts the agent reaches, which egress now
    /// verifies itself since it decrypts. Not secrets, so not DLP values.
    #[serde(default)]
    pub upstream_roots: Vec<String>,
    /// The operator's DLP allowlist (`regexes`, `stopwords`, `paths` for git-gate): findings
    /// it names are dropped by pipelock, egress and git-gate. Only the operator writes it;
    /// nothing in a pushed repository or a request is read as an allowlist.
    #[serde(default)]
    pub dlp_allow: bottle_spec::DlpAllow,
    /// Credentials by name: files on the host, mounted into the sidecars container only.
    #[serde(default)]
    pub credentials: BTreeMap<String, Credential>,
    /// `${vault:NAME}` placeholders the agent may write into its own requests: egress
    /// substitutes credential NAME only for the listed hosts. Keyed by credential name.
    #[serde(default)]
    pub vault: BTreeMap<String, VaultEntry>,
    /// Repositories git-gate serves to the agent.
    #[serde(default)]
    pub git: Vec<GitRepo>,
    /// Pack directories (relative to the manifest's directory) pack-exec serves.
    #[serde(default)]
    pub packs: Vec<String>,
    /// Whether pack-exec installs packs that carry no valid signature (default false: an
    /// unsigned pack is refused). Written into `pack-exec.json` as `allow_unsigned`.
    #[serde(default)]
    pub allow_unsigned_packs: bool,
    /// Destinations pack handlers may reach through pipelock; absent = the same as
    /// `allowlist`.
    #[serde(default)]
    pub pack_allowlist: Option<Vec<AllowRule>>,
    /// UNSAFE: run pack handlers without their jail when the kernel or runtime cannot give it
    /// (instead of refusing every call). A handler then shares the guards' network and files.
    #[serde(default)]
    pub unsafe_allow_unjailed_packs: bool,
    /// Limits of each service and of pack handlers.
    #[serde(default)]
    pub resources: Resources,
    /// A demo upstream service on the bottle's egress network (the default bottle's offline
    /// stand-in for the outside world); absent in real bottles.
    #[serde(default)]
    pub demo_upstream: Option<DemoUpstream>,
    /// Sidecars image for this bottle (the `BOT_BOTTLE_SIDECAR_IMAGE` env var wins over it).
    #[serde(default)]
    pub sidecar_image: Option<String>,
}

fn default_daemons() -> Vec<Daemon> {
    vec![Daemon::PackExec]
}

/// The agent container: what runs, with which environment.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// Image reference (must exist locally or be pullable).
    pub image: String,
    /// argv to run instead of the image's default command.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Extra environment variables (literal values: `$` is never interpolated).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Numeric `UID[:GID]` to run as; root is refused. Default `65534:65534`.
    #[serde(default)]
    pub user: Option<String>,
    /// Run a tiny init (docker's) as PID 1 so the command gets signals and zombies are reaped.
    /// Default true: a `sleep infinity` agent otherwise ignores SIGTERM and `down` waits 10 s.
    #[serde(default = "default_true")]
    pub init: bool,
}

fn default_true() -> bool {
    true
}

/// Supervision overrides for one daemon; unset fields keep the defaults of the daemon table
/// (see [`crate::configs::init`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSettings {
    /// What sidecar-init does when the daemon exits on its own.
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    /// SIGTERM → SIGKILL grace at shutdown, in milliseconds.
    #[serde(default)]
    pub grace_ms: Option<u64>,
    /// How long dependents wait for the daemon's ready probe, in milliseconds.
    #[serde(default)]
    pub ready_timeout_ms: Option<u64>,
    /// Extra environment for this daemon only (never seen by the other daemons).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The demo upstream: a third service, on the egress network only, that answers HTTP on
/// `:8080` (saying whether a credential arrived, never its value) and serves `demo.git` over
/// `git://` on `:9418`, under the DNS name `demo-upstream`. The agent cannot reach it except
/// through pipelock → egress, and git-gate. See docs/compose.md.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DemoUpstream {
    /// Image holding the `demo-upstream` program (default: the agent-test image
    /// `scripts/images.sh` builds).
    #[serde(default = "default_demo_image")]
    pub image: String,
}

fn default_demo_image() -> String {
    "sidecar-bundle/agent-test:dev".to_string()
}

/// sidecar-init's restart policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Leave it exited.
    Never,
    /// Restart after a non-zero exit or a signal.
    OnFailure,
    /// Restart after any exit.
    Always,
}

/// One allowlist entry for pipelock.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// Host name or `*.suffix` pattern.
    pub host: String,
    /// Allowed destination ports (default `[443]`).
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
}

fn default_ports() -> Vec<u16> {
    vec![443]
}

/// A host egress intercepts to add headers built from credentials.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Host name the route applies to.
    pub host: String,
    /// Headers to set; values may reference credentials as `${vault:NAME}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Ordered method/path rules: which requests may carry the route's credential
    /// (`bottle_spec::route_rules`: `{allow|deny = "METHODS /path/**"}` or `"read-only"`).
    /// None = every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<bottle_spec::route_rules::RuleSpec>,
}

/// Where a credential comes from: exactly one of `file` or `generate`. The value never enters
/// the manifest.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// Absolute path of the file on the host holding the secret.
    #[serde(default)]
    pub file: Option<String>,
    /// The control plane generates a random value into the bottle's project directory at the
    /// first `up` (`secrets/credentials/NAME`, root-only) and keeps it until `down`: for demo
    /// credentials and secrets only the bottle's own services share. Nobody outside the bottle
    /// holds it, so it opens nothing real.
    #[serde(default)]
    pub generate: bool,
}

/// Where a `${vault:NAME}` placeholder may be substituted.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VaultEntry {
    /// Exact host names the credential may be sent to (each must be on the allowlist).
    pub hosts: Vec<String>,
}

/// A repository git-gate mirrors for the agent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GitRepo {
    /// Name in the agent's remote URL: `git://sidecars:9418/<name>`.
    pub name: String,
    /// Upstream URL pushes are forwarded to.
    pub upstream: String,
    /// Name of the credential used to talk to the upstream.
    #[serde(default)]
    pub credential: Option<String>,
    /// Paths no pushed commit may add, change or delete (globs, `*` within a segment, `**`
    /// across). Absent: CI configuration (`bottle_spec::DEFAULT_DENY_PATHS`); `[]` relaxes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_paths: Option<Vec<String>>,
}

/// Limits for both services and for pack handlers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Limits of the agent container.
    #[serde(default)]
    pub agent: Limits,
    /// Limits of the sidecars container.
    #[serde(default)]
    pub sidecars: Limits,
    /// Per-call limits of pack handlers (needs pack-exec); unset fields keep the defaults
    /// (see [`crate::configs::init`]).
    #[serde(default)]
    pub handlers: Option<HandlerLimits>,
}

/// Limits of one service. CPU and memory unset mean unlimited; `pids` and `tmp_size` have
/// per-service defaults (see [`crate::render`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPUs (fractional), e.g. `1.5`.
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Memory with a unit: `512m`, `2g` (b, k, m, g).
    #[serde(default)]
    pub memory: Option<String>,
    /// Most tasks (processes and threads) in the container at once (`pids_limit`).
    #[serde(default)]
    pub pids: Option<u32>,
    /// Size of the container's `/tmp` tmpfs, with a unit like `memory`.
    #[serde(default)]
    pub tmp_size: Option<String>,
}

/// Per-call limits of a pack handler, applied by sidecar-init when it starts the handler
/// (rlimits of the handler's uid).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerLimits {
    /// Most processes (and threads) under the handler's uid (`RLIMIT_NPROC`).
    #[serde(default)]
    pub processes: Option<u32>,
    /// Address space of each process, with a unit: `1g` (`RLIMIT_AS`).
    #[serde(default)]
    pub address_space: Option<String>,
    /// Largest file a handler may write, with a unit: `64m` (`RLIMIT_FSIZE`).
    #[serde(default)]
    pub file_size: Option<String>,
    /// Most open file descriptors per process (`RLIMIT_NOFILE`).
    #[serde(default)]
    pub open_files: Option<u32>,
}

/// The text format of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML (the default).
    Toml,
    /// JSON.
    Json,
}

impl Format {
    /// JSON when the file name ends in `.json` or the text starts with `{`; TOML otherwise.
    pub fn detect(file_name: Option<&str>, text: &str) -> Format {
        let by_name = file_name.and_then(|n| {
            let lower = n.to_ascii_lowercase();
            if lower.ends_with(".json") {
                Some(Format::Json)
            } else if lower.ends_with(".toml") {
                Some(Format::Toml)
            } else {
                None
            }
        });
        by_name.unwrap_or_else(|| {
            if text.trim_start().starts_with('{') {
                Format::Json
            } else {
                Format::Toml
            }
        })
    }
}

impl Manifest {
    /// Parse manifest text (format detected from `file_name` or the text) and validate it.
    /// `origin` names the manifest in error messages.
    pub fn parse(text: &str, file_name: Option<&str>) -> Result<Manifest, ManifestError> {
        let origin = file_name.unwrap_or("<manifest>").to_string();
        let manifest = match Format::detect(file_name, text) {
            Format::Json => {
                let de = &mut serde_json::Deserializer::from_str(text);
                serde_path_to_error::deserialize(de).map_err(|e| ManifestError::Parse {
                    origin: origin.clone(),
                    field: field_path(e.path()),
                    message: e.into_inner().to_string(),
                })?
            }
            Format::Toml => {
                let de = toml::Deserializer::new(text);
                serde_path_to_error::deserialize(de).map_err(|e| ManifestError::Parse {
                    origin: origin.clone(),
                    field: field_path(e.path()),
                    message: toml_message(e.inner()),
                })?
            }
        };
        let problems = crate::validate::problems(&manifest);
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(ManifestError::Invalid { origin, problems })
        }
    }
}

fn field_path(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." {
        "(top level)".to_string()
    } else {
        s
    }
}

/// toml's own message carries a source excerpt over several lines; keep it, minus the trailing
/// newline, since it shows the user where the problem is.
fn toml_message(err: &toml::de::Error) -> String {
    err.to_string().trim_end().to_string()
}
