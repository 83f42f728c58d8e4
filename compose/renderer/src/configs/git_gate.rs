//! `git-gate.json`: the repositories git-gate serves, their mirrors, their credentials. The
//! shape is git-gate's `Config` (sidecars/git-gate/src/config.rs, `deny_unknown_fields`); a
//! test parses the rendered file with git-gate's own parser.

use serde::Serialize;

use crate::daemon::Daemon;
use crate::manifest::Manifest;

/// Where the bare mirrors live: the named volume `git-gate-mirrors` (owned by git-gate's uid
/// in the image, so the volume is initialised with that owner).
pub const BASE_DIR: &str = "/git";

/// The keys of git-gate's config the renderer sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitGateConfig {
    /// All interfaces: the agent's remote is `git://sidecars:9418/<name>`.
    pub listen: String,
    /// Mirrors (a volume).
    pub base_dir: String,
    /// The manifest's repositories.
    pub repos: Vec<Repo>,
    /// git-gate's credentials directory (filled by sidecar-init with the repositories'
    /// credentials); a repo's `credential` is a file name there.
    pub credentials_dir: String,
    /// The manifest's `dlp_allow` (absent when empty).
    #[serde(skip_serializing_if = "bottle_spec::DlpAllow::is_empty")]
    pub dlp_allow: bottle_spec::DlpAllow,
}

/// One repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repo {
    /// Name in the agent's URL.
    pub name: String,
    /// Upstream URL.
    pub upstream: String,
    /// Credential file name (http(s) upstreams only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The manifest's `deny_paths` (absent: git-gate's defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_paths: Option<Vec<String>>,
}

/// Render `git-gate.json` for a bottle.
pub fn render(m: &Manifest) -> serde_json::Value {
    let config = GitGateConfig {
        listen: format!("0.0.0.0:{}", Daemon::GitGate.port()),
        base_dir: BASE_DIR.to_string(),
        repos: m
            .git
            .iter()
            .map(|r| Repo {
                name: r.name.clone(),
                upstream: r.upstream.clone(),
                credential: r.credential.clone(),
                deny_paths: r.deny_paths.clone(),
            })
            .collect(),
        credentials_dir: Daemon::GitGate.credentials_dir(),
        dlp_allow: m.dlp_allow.clone(),
    };
    serde_json::to_value(config).unwrap_or_default()
}
