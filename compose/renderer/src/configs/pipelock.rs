//! `pipelock.json`: the agent's forward proxy. The shape is pipelock's `Config`
//! (sidecars/pipelock/src/config.rs, `deny_unknown_fields`); keys not set here keep pipelock's
//! defaults. A test parses the rendered file with pipelock's own parser.

use serde::Serialize;

use crate::configs::daemon_credential;
use crate::daemon::Daemon;
use crate::manifest::Manifest;

/// The keys of pipelock's config the renderer sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PipelockConfig {
    /// All interfaces of the container: the agent reaches it as `sidecars:8888`.
    pub listen: String,
    /// egress in the same container when it is enabled; `null` (written explicitly, since
    /// pipelock's default is egress) connects to destinations directly.
    pub upstream: Option<String>,
    /// The manifest's allowlist; ports always written (the manifest's default `[443]` is
    /// stricter than pipelock's `[443, 80]`).
    pub allow: Vec<Allow>,
    /// The manifest's SSRF exceptions.
    pub allow_cidrs: Vec<String>,
    /// Every credential of the bottle, as pipelock's own copies (its credentials directory):
    /// their values must never leave through the proxy.
    pub secret_files: Vec<String>,
    /// With pack-exec: the loopback listener sidecar-init relays pack handlers' traffic to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_listen: Option<String>,
    /// The manifest's `pack_allowlist` (absent: handlers get `allow`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_allow: Option<Vec<Allow>>,
    /// The kill switch's file (`bottle_spec::KILL_SWITCH_FILE`; `control-plane kill-switch`).
    pub kill_switch_file: String,
    /// The manifest's `dlp_allow` without git-gate's `paths` (absent when empty).
    #[serde(skip_serializing_if = "bottle_spec::DlpAllow::is_empty")]
    pub dlp_allow: bottle_spec::DlpAllow,
}

/// One allowlist rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Allow {
    /// Host name or `*.suffix`.
    pub host: String,
    /// Allowed ports.
    pub ports: Vec<u16>,
}

/// Render `pipelock.json` for a bottle.
pub fn render(m: &Manifest) -> serde_json::Value {
    let config = PipelockConfig {
        listen: format!("0.0.0.0:{}", Daemon::Pipelock.port()),
        upstream: m
            .daemons
            .contains(&Daemon::Egress)
            .then(|| format!("127.0.0.1:{}", Daemon::Egress.port())),
        allow: rules(&m.allowlist),
        allow_cidrs: m.allow_cidrs.clone(),
        secret_files: m
            .credentials
            .keys()
            .filter(|n| !m.upstream_roots.contains(n))
            .map(|n| daemon_credential(Daemon::Pipelock, n))
            .collect(),
        pack_listen: m
            .daemons
            .contains(&Daemon::PackExec)
            .then(|| format!("127.0.0.1:{}", bottle_spec::PIPELOCK_PACK_PORT)),
        pack_allow: m.pack_allowlist.as_deref().map(rules),
        kill_switch_file: bottle_spec::KILL_SWITCH_FILE.to_string(),
        dlp_allow: m.dlp_allow.proxies(),
    };
    serde_json::to_value(config).unwrap_or_default()
}

fn rules(list: &[crate::manifest::AllowRule]) -> Vec<Allow> {
    list.iter()
        .map(|r| Allow {
            host: r.host.clone(),
            ports: r.ports.clone(),
        })
        .collect()
}
