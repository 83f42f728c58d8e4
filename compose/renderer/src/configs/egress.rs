//! `egress.json`: credential injection for routed hosts, vault placeholders, the bottle CA.
//! The shape is egress's `Config` (sidecars/egress/src/config.rs, `deny_unknown_fields`); a
//! test parses the rendered file with egress's own parser.
//!
//! The manifest writes a route's credential as `${vault:NAME}` (one syntax for "the value of
//! credential NAME"; egress's own `${cred:NAME}` is accepted as a synonym); egress's route
//! templates read `${cred:NAME}` from `credentials_dir`, so the references are rewritten here.
//! Validation guarantees no other `${` occurs.
//!
//! Every secret egress reads (route and vault credentials, the CA key) is in its own
//! credentials directory, `/run/sidecars/credentials/egress/`, where sidecar-init copies them
//! (see [`crate::configs::credentials`]); egress cannot read the mounted originals.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::configs::{daemon_credential, CA_CERT};
use crate::daemon::Daemon;
use crate::manifest::Manifest;

/// Peers allowed to use egress: pipelock, in the same container, over loopback.
pub const ALLOW_FROM: &str = "127.0.0.1/32";

/// The keys of egress's config the renderer sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressConfig {
    /// Loopback only: the agent cannot reach egress, only pipelock can.
    pub listen: String,
    /// Only pipelock (loopback, IPv4: pipelock connects to `127.0.0.1:9099`).
    pub allow_from: Vec<String>,
    /// Hosts whose requests get headers injected.
    pub routes: Vec<EgressRoute>,
    /// `${vault:NAME}` scopes.
    pub vault: BTreeMap<String, EgressVault>,
    /// egress's credentials directory (filled by sidecar-init): `${cred:NAME}` is the file
    /// `NAME` there.
    pub credentials_dir: String,
    /// The bottle CA's certificate (mounted read-only).
    pub ca_cert: String,
    /// The bottle CA's key: egress's credential `ca.key`.
    pub ca_key: String,
    /// The manifest's SSRF exceptions (egress applies the guard again).
    pub allow_cidrs: Vec<String>,
    /// Always: egress decrypts every allowlisted HTTPS host name (the agent trusts the bottle
    /// CA) so DLP sees the traffic; `passthrough` hosts and IP literals stay blind.
    pub intercept_all: bool,
    /// The manifest's `passthrough`.
    pub passthrough: Vec<String>,
    /// The manifest's `https_body_limit` (or its default), in bytes.
    pub max_body_scan_bytes: u64,
    /// The manifest's `upstream_roots`, as egress's credential copies.
    pub extra_roots: Vec<String>,
    /// Every credential of the bottle, as egress's own copies: their values must never leave
    /// over HTTPS either.
    pub secret_files: Vec<String>,
    /// The kill switch's file (`bottle_spec::KILL_SWITCH_FILE`; `control-plane kill-switch`).
    pub kill_switch_file: String,
    /// The manifest's `dlp_allow` without git-gate's `paths` (absent when empty).
    #[serde(skip_serializing_if = "bottle_spec::DlpAllow::is_empty")]
    pub dlp_allow: bottle_spec::DlpAllow,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressRoute {
    /// Exact host.
    pub host: String,
    /// Header → template with `${cred:NAME}`.
    pub headers: BTreeMap<String, String>,
    /// The manifest's rules, as written (egress compiles them with the same code).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<bottle_spec::route_rules::RuleSpec>,
}

/// One vault entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressVault {
    /// The credential's file in egress's credentials directory.
    pub file: String,
    /// Hosts the value may be sent to.
    pub hosts: Vec<String>,
}

/// `${vault:NAME}` → `${cred:NAME}` (egress's route-template syntax).
pub fn route_template(value: &str) -> String {
    value.replace("${vault:", "${cred:")
}

/// Render `egress.json` for a bottle.
pub fn render(m: &Manifest) -> serde_json::Value {
    let config = EgressConfig {
        listen: format!("127.0.0.1:{}", Daemon::Egress.port()),
        allow_from: vec![ALLOW_FROM.to_string()],
        routes: m
            .routes
            .iter()
            .map(|r| EgressRoute {
                host: r.host.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), route_template(v)))
                    .collect(),
                rules: r.rules.clone(),
            })
            .collect(),
        vault: m
            .vault
            .iter()
            .map(|(name, entry)| {
                (
                    name.clone(),
                    EgressVault {
                        file: daemon_credential(Daemon::Egress, name),
                        hosts: entry.hosts.clone(),
                    },
                )
            })
            .collect(),
        credentials_dir: Daemon::Egress.credentials_dir(),
        ca_cert: CA_CERT.to_string(),
        ca_key: daemon_credential(Daemon::Egress, bottle_spec::CA_KEY_CREDENTIAL),
        allow_cidrs: m.allow_cidrs.clone(),
        intercept_all: true,
        passthrough: m.passthrough.clone(),
        // Validated: a size of at least 1m.
        max_body_scan_bytes: m
            .https_body_limit
            .as_deref()
            .and_then(crate::validate::parse_size)
            .unwrap_or(crate::manifest::DEFAULT_HTTPS_BODY_LIMIT),
        extra_roots: m
            .upstream_roots
            .iter()
            .map(|n| daemon_credential(Daemon::Egress, n))
            .collect(),
        secret_files: m
            .credentials
            .keys()
            .filter(|n| !m.upstream_roots.contains(n))
            .map(|n| daemon_credential(Daemon::Egress, n))
            .collect(),
        kill_switch_file: bottle_spec::KILL_SWITCH_FILE.to_string(),
        dlp_allow: m.dlp_allow.proxies(),
    };
    serde_json::to_value(config).unwrap_or_default()
}
