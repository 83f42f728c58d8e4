//! `egress.json`: credential injection for routed hosts, vault placeholders, the bottle CA.
//! The shape is egress's `Config` (sidecars/egress/src/config.rs, `deny_unknown_fields`); a
//! test parses the rendered file with egress's own parser.
//!
//! The manifest writes a route's credential as `${vault:NAME}` (one syntax for "the value of
//! credential NAME"; egress's own `${cred:NAME}` is accepted as a synonym); egress's route
//! templates read `${cred:NAME}` from `credentials_dir`, so the references are rewritten here.
//! Validation guarantees no other `${` occurs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::configs::{credential_path, CA_CERT, CA_KEY, SECRETS_DIR};
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
    /// The mounted credential files (absent when the bottle declares none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_dir: Option<String>,
    /// The bottle CA's certificate (mounted read-only).
    pub ca_cert: String,
    /// The bottle CA's key (mounted read-only).
    pub ca_key: String,
    /// The manifest's SSRF exceptions (egress applies the guard again).
    pub allow_cidrs: Vec<String>,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressRoute {
    /// Exact host.
    pub host: String,
    /// Header → template with `${cred:NAME}`.
    pub headers: BTreeMap<String, String>,
}

/// One vault entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressVault {
    /// The mounted credential file.
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
            })
            .collect(),
        vault: m
            .vault
            .iter()
            .map(|(name, entry)| {
                (
                    name.clone(),
                    EgressVault {
                        file: credential_path(name),
                        hosts: entry.hosts.clone(),
                    },
                )
            })
            .collect(),
        credentials_dir: (!m.credentials.is_empty()).then(|| SECRETS_DIR.to_string()),
        ca_cert: CA_CERT.to_string(),
        ca_key: CA_KEY.to_string(),
        allow_cidrs: m.allow_cidrs.clone(),
    };
    serde_json::to_value(config).unwrap_or_default()
}
