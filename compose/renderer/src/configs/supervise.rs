//! `supervise.json`: the MCP approval server's listeners and its durable queue. The shape is
//! supervise's `Config` (sidecars/supervise/src/config.rs, `deny_unknown_fields`); a test
//! parses the rendered file with supervise's own parser.

use serde::Serialize;

use crate::daemon::Daemon;
use crate::manifest::Manifest;

/// The queue: the named volume `supervise-queue`, so approvals survive a container restart
/// (owned by supervise's uid in the image, so the volume is initialised with that owner).
/// The control plane's `approvals` commands run `supervise-ctl` on this directory inside
/// the container.
pub const QUEUE_DIR: &str = "/run/supervise/queue";
/// Operator listener (sidecar-init's events): loopback only, unreachable by the agent.
pub const OPERATOR_LISTEN: &str = "127.0.0.1:9101";

/// The keys of supervise's config the renderer sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuperviseConfig {
    /// All interfaces: the agent's `MCP_SUPERVISE_URL`.
    pub listen: String,
    /// Loopback operator listener.
    pub operator_listen: String,
    /// The queue directory (a volume).
    pub queue_dir: String,
}

/// Render `supervise.json` for a bottle.
pub fn render(_m: &Manifest) -> serde_json::Value {
    let config = SuperviseConfig {
        listen: format!("0.0.0.0:{}", Daemon::Supervise.port()),
        operator_listen: OPERATOR_LISTEN.to_string(),
        queue_dir: QUEUE_DIR.to_string(),
    };
    serde_json::to_value(config).unwrap_or_default()
}
