//! The config file's types and how it is read.
//!
//! Why a two-step load: serde stops at the first error, but `check-config` must report every
//! problem. So the file is parsed to a JSON value first (syntax errors), then the top level and
//! each daemon are deserialized separately (one structural error each, with its JSON path from
//! `serde_path_to_error`), and finally [`crate::validate`] checks the meaning of what parsed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Problem;

/// Where the supervisor looks for its config when neither `--config` nor
/// `SIDECAR_INIT_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/sidecars/init.json";
/// Where the control socket lives when neither `--socket`, `SIDECAR_INIT_SOCKET` nor the
/// config's `socket` key says otherwise (the image must keep `/run` writable, e.g. a tmpfs).
pub const DEFAULT_SOCKET_PATH: &str = "/run/sidecar-init.sock";
/// Default whole-shutdown budget: well inside docker's 10 s stop timeout.
pub const DEFAULT_GRACE_MS: u64 = 8000;
/// Default time a dependency gets to pass its ready probe before dependents give up waiting.
pub const DEFAULT_READY_TIMEOUT_MS: u64 = 30_000;

/// The whole config file: the daemons and bundle-wide settings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Budget for the whole shutdown; every group still alive when it runs out gets SIGKILL.
    /// Also the default per-daemon grace.
    #[serde(default = "default_grace_ms")]
    pub grace_ms: u64,
    /// The daemons, in file order (the order only matters for logs: start order follows
    /// `depends_on`).
    pub daemons: Vec<DaemonConfig>,
    /// Where to POST a small JSON event on every daemon start/exit/restart/failure (operator
    /// notification, e.g. supervise). Fire-and-forget.
    #[serde(default)]
    pub notify_url: Option<String>,
    /// Control socket path for `health`/`status` (overridden by `SIDECAR_INIT_SOCKET`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// When a restarting daemon counts as crash-looping and is marked `failed` instead.
    #[serde(default)]
    pub crash_loop: CrashLoop,
    /// Where each daemon's private credentials directory is created
    /// (`<root>/<daemon>/`; default `/run/sidecars/credentials`).
    #[serde(default)]
    pub credentials_root: Option<PathBuf>,
    /// The handler-spawn service for pack-exec (absent: none).
    #[serde(default)]
    pub handlers: Option<HandlersConfig>,
}

/// The handler-spawn service's section (one type with the renderer's: the contract crate).
pub use bottle_spec::{HandlerLimits, HandlersConfig};

fn default_grace_ms() -> u64 {
    DEFAULT_GRACE_MS
}

/// Crash-loop detection: more than `max_restarts` restarts within `window_ms` marks the daemon
/// `failed` (health goes red) instead of restarting it forever.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CrashLoop {
    /// Restarts allowed within the window; the exit after that marks the daemon failed.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Sliding window the restarts are counted in.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
}

fn default_max_restarts() -> u32 {
    5
}
fn default_window_ms() -> u64 {
    60_000
}

impl Default for CrashLoop {
    fn default() -> Self {
        CrashLoop {
            max_restarts: default_max_restarts(),
            window_ms: default_window_ms(),
        }
    }
}

/// One supervised daemon.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Unique name: the log prefix, the `SIDECARS_DAEMONS` selector, the `depends_on` target.
    pub name: String,
    /// Program and arguments (argv[0] is looked up on the daemon's own PATH).
    pub argv: Vec<String>,
    /// The daemon's whole environment on top of the minimal base (PATH, HOME): init's own
    /// environment never leaks into a daemon, so one daemon's secrets never reach another.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `"UID"` or `"UID:GID"` (numbers) to drop to before exec.
    #[serde(default)]
    pub user: Option<String>,
    /// Credentials to hand to this daemon: file name in its private directory → source file
    /// (mounted, readable by init alone). Copied before any daemon starts into
    /// `<credentials_root>/<name>/`, owned by the daemon's uid, and named in its
    /// `CREDENTIALS_DIRECTORY`.
    #[serde(default)]
    pub credentials: BTreeMap<String, PathBuf>,
    /// How to tell the daemon is ready: `{"tcp": PORT}` or `{"http": "PORT/PATH"}`; none means
    /// ready as soon as it runs.
    #[serde(default)]
    pub ready: Option<ReadyProbe>,
    /// Daemons that must be ready before this one starts (and that stop after it).
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
    /// What to do when the daemon exits on its own.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Time between SIGTERM and SIGKILL of its process group at shutdown (default: the
    /// top-level `grace_ms`).
    #[serde(default)]
    pub grace_ms: Option<u64>,
    /// Signal sent to this daemon when init receives SIGHUP (config reload). Without it the
    /// daemon never sees SIGHUP.
    #[serde(default)]
    pub reload_signal: Option<String>,
    /// Signals init passes on to this daemon when it receives them (never blindly: a proxy may
    /// use SIGUSR1 as a kill switch).
    #[serde(default)]
    pub forward_signals: Vec<String>,
    /// How long dependents wait for this daemon's ready probe.
    #[serde(default = "default_ready_timeout_ms")]
    pub ready_timeout_ms: u64,
    /// What happens when the ready probe has not passed in time.
    #[serde(default)]
    pub on_ready_timeout: OnReadyTimeout,
}

fn default_ready_timeout_ms() -> u64 {
    DEFAULT_READY_TIMEOUT_MS
}

/// A readiness probe against the daemon's own port on 127.0.0.1.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadyProbe {
    /// Ready once a TCP connect to 127.0.0.1:PORT succeeds.
    Tcp(u16),
    /// Ready once `GET http://127.0.0.1:PORT/PATH` answers 2xx; written `"PORT/PATH"`.
    Http(String),
}

/// A `depends_on` entry: a plain name, or `{"name": ..., "optional": true}` for a dependency
/// that may be left out by `SIDECARS_DAEMONS`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "a daemon name or {\"name\": \"...\", \"optional\": true}"
)]
pub enum Dependency {
    /// Required dependency.
    Name(String),
    /// Dependency with options.
    Detailed(DetailedDependency),
}

/// The object form of a dependency.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DetailedDependency {
    /// The daemon depended on.
    pub name: String,
    /// When true, a dependency not enabled by `SIDECARS_DAEMONS` is simply dropped.
    #[serde(default)]
    pub optional: bool,
}

impl Dependency {
    /// The daemon depended on.
    pub fn name(&self) -> &str {
        match self {
            Dependency::Name(n) => n,
            Dependency::Detailed(d) => &d.name,
        }
    }
    /// Whether a disabled dependency is tolerated.
    pub fn optional(&self) -> bool {
        matches!(self, Dependency::Detailed(d) if d.optional)
    }
}

/// Restart policy after a daemon exits on its own.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Leave it exited; its code counts toward init's exit code.
    Never,
    /// Restart after a non-zero exit or a signal (the default).
    #[default]
    OnFailure,
    /// Restart after any exit.
    Always,
}

/// What a ready-probe timeout does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnReadyTimeout {
    /// Log it and start the dependents anyway (the default).
    #[default]
    StartAnyway,
    /// Mark the daemon failed, stop it, and do not start its dependents.
    Fail,
}

/// Top level with the daemons left as raw JSON, so each daemon's errors are found separately.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_grace_ms")]
    grace_ms: u64,
    daemons: Vec<serde_json::Value>,
    #[serde(default)]
    notify_url: Option<String>,
    #[serde(default)]
    socket: Option<PathBuf>,
    #[serde(default)]
    crash_loop: CrashLoop,
    #[serde(default)]
    credentials_root: Option<PathBuf>,
    #[serde(default)]
    handlers: Option<HandlersConfig>,
}

/// Reads the file at `path` and parses it, collecting every structural problem.
pub fn load_file(path: &Path) -> Result<Config, Vec<Problem>> {
    let text = std::fs::read(path).map_err(|e| {
        vec![Problem::new(
            "",
            format!(
                "cannot read config file {}: {e} (pass --config PATH or set SIDECAR_INIT_CONFIG)",
                path.display()
            ),
        )]
    })?;
    parse(&text)
}

/// Parses config text, collecting every structural problem (syntax, types, unknown fields).
pub fn parse(text: &[u8]) -> Result<Config, Vec<Problem>> {
    let value: serde_json::Value = serde_json::from_slice(text).map_err(|e| {
        vec![Problem::new(
            "",
            format!(
                "not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )]
    })?;
    let raw: RawConfig = serde_path_to_error::deserialize(value)
        .map_err(|e| vec![Problem::new(path_string(e.path()), e.inner().to_string())])?;
    let mut problems = Vec::new();
    let mut daemons = Vec::with_capacity(raw.daemons.len());
    for (i, v) in raw.daemons.into_iter().enumerate() {
        match serde_path_to_error::deserialize::<_, DaemonConfig>(v) {
            Ok(d) => daemons.push(d),
            Err(e) => {
                let inner = path_string(e.path());
                let at = if inner.is_empty() {
                    format!("daemons[{i}]")
                } else {
                    format!("daemons[{i}].{inner}")
                };
                problems.push(Problem::new(at, e.inner().to_string()));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Config {
        grace_ms: raw.grace_ms,
        daemons,
        notify_url: raw.notify_url,
        socket: raw.socket,
        crash_loop: raw.crash_loop,
        credentials_root: raw.credentials_root,
        handlers: raw.handlers,
    })
}

/// serde_path_to_error prints `.` for the root and `a.b[0]` style paths; we want "" for root.
fn path_string(p: &serde_path_to_error::Path) -> String {
    let s = p.to_string();
    if s == "." {
        String::new()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(br#"{"daemons":[{"name":"a","argv":["/bin/true"]}]}"#).unwrap();
        assert_eq!(c.grace_ms, DEFAULT_GRACE_MS);
        let d = &c.daemons[0];
        assert_eq!(d.restart, RestartPolicy::OnFailure);
        assert_eq!(d.ready_timeout_ms, DEFAULT_READY_TIMEOUT_MS);
        assert_eq!(d.on_ready_timeout, OnReadyTimeout::StartAnyway);
        assert_eq!(c.crash_loop, CrashLoop::default());
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            br#"{"grace_ms": 8000, "notify_url": "http://127.0.0.1:9100/internal/events",
                 "socket": "/tmp/x.sock", "crash_loop": {"max_restarts": 2, "window_ms": 1000},
                 "daemons": [
                   {"name": "egress", "argv": ["/bin/sh", "-c", "x"], "env": {"K": "V"},
                    "user": "65534:65534", "ready": {"tcp": 9099}, "restart": "always",
                    "grace_ms": 5000, "reload_signal": "SIGHUP", "forward_signals": ["SIGUSR2"],
                    "ready_timeout_ms": 100, "on_ready_timeout": "fail"},
                   {"name": "p", "argv": ["x"], "ready": {"http": "9100/health"},
                    "depends_on": ["egress", {"name": "gg", "optional": true}], "ready": null}
                 ]}"#,
        );
        // duplicate key "ready" is accepted by serde_json Value (last wins)
        let c = c.unwrap();
        assert_eq!(c.daemons[0].ready, Some(ReadyProbe::Tcp(9099)));
        assert_eq!(c.daemons[1].depends_on[1].name(), "gg");
        assert!(c.daemons[1].depends_on[1].optional());
        assert!(!c.daemons[1].depends_on[0].optional());
    }

    #[test]
    fn every_daemon_error_is_reported_with_its_path() {
        let errs = parse(
            br#"{"daemons": [
                {"name": "a", "argv": ["x"], "colour": 1},
                {"name": "b", "argv": ["x"], "restart": "sometimes"},
                {"name": "c", "argv": "x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[0].path, "daemons[0].colour");
        assert!(errs[0].message.contains("unknown field `colour`"));
        assert_eq!(errs[1].path, "daemons[1].restart");
        assert_eq!(errs[2].path, "daemons[2].argv");
    }

    #[test]
    fn top_level_unknown_field_and_bad_json() {
        let errs = parse(br#"{"daemons": [], "grace": 1}"#).unwrap_err();
        assert!(
            errs[0].message.contains("unknown field `grace`"),
            "{errs:?}"
        );
        let errs = parse(b"{").unwrap_err();
        assert!(errs[0].message.contains("not valid JSON"));
    }
}
