//! Per-daemon config files, one module per daemon, plus sidecar-init's own config.
//!
//! Adding a daemon's config is one module here: a `render(&Manifest) -> serde_json::Value`
//! function (typed structs serialized with serde_json) and one arm in [`renderer_for`]. A
//! daemon without an arm cannot be enabled yet (validation says so), because it would start
//! without the config its argv names.

pub mod egress;
pub mod git_gate;
pub mod init;
pub mod pack_exec;
pub mod pipelock;
pub mod supervise;

use serde::Serialize;

use crate::daemon::Daemon;
use crate::manifest::Manifest;

/// Directory of the project dir holding the config files (relative path).
pub const CONFIG_DIR: &str = "config";
/// Where each credential file is bind-mounted (read-only) in the sidecars container:
/// `<SECRETS_DIR>/<NAME>`. egress and git-gate use it as their `credentials_dir`. The agent
/// never gets this mount.
pub const SECRETS_DIR: &str = "/run/secrets/bottle";
/// The bottle CA's certificate in the sidecars container (egress's `ca_cert`).
pub const CA_CERT: &str = "/etc/sidecars/ca/ca.crt";
/// The bottle CA's private key in the sidecars container (egress's `ca_key`).
pub const CA_KEY: &str = "/etc/sidecars/ca/ca.key";

/// Path of credential `name` inside the sidecars container.
pub fn credential_path(name: &str) -> String {
    format!("{SECRETS_DIR}/{name}")
}

/// Renders one daemon's config from the manifest.
pub type Renderer = fn(&Manifest) -> serde_json::Value;

/// The config renderer of `daemon` (every daemon has one: the match is exhaustive).
pub fn renderer_for(daemon: Daemon) -> Renderer {
    match daemon {
        Daemon::PackExec => pack_exec::render,
        Daemon::Egress => egress::render,
        Daemon::Pipelock => pipelock::render,
        Daemon::GitGate => git_gate::render,
        Daemon::Supervise => supervise::render,
    }
}

/// A file the runtime must write into the project directory and bind-mount read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigFile {
    /// Path relative to the project directory (`config/pack-exec.json`).
    pub path: String,
    /// Path inside the sidecars container (`/etc/sidecars/pack-exec.json`).
    pub target: String,
    /// File contents (pretty JSON with a final newline).
    pub contents: String,
}

impl ConfigFile {
    /// The config file of a daemon (or of init, with `stem = "init"`).
    pub fn json(stem: &str, value: &impl Serialize) -> ConfigFile {
        // Serializing plain structs/maps to JSON cannot fail (string keys, no non-finite floats).
        let mut contents = serde_json::to_string_pretty(value).unwrap_or_default();
        contents.push('\n');
        ConfigFile {
            path: format!("{CONFIG_DIR}/{stem}.json"),
            target: format!("/etc/sidecars/{stem}.json"),
            contents,
        }
    }
}
