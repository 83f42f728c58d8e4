//! `pack-exec.json`: where pack-exec listens, keeps its state and finds the bottle's packs.
//! The shape is pack-exec's `Config` (sidecars/pack-exec/src/config.rs); unset keys keep
//! pack-exec's defaults.

use serde::Serialize;

use crate::daemon::Daemon;
use crate::manifest::Manifest;

/// Where the bottle's pack directories are mounted (read-only) in the sidecars container.
pub const PACKS_DIR: &str = "/etc/sidecars/packs";
/// pack-exec's writable state (installed packs): a named volume.
pub const STATE_DIR: &str = "/var/lib/sidecars/packs";

/// The subset of pack-exec's config the renderer sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackExecConfig {
    /// Listen address (all interfaces of the container, the daemon's port).
    pub listen: String,
    /// Writable state directory (a volume).
    pub state_dir: String,
    /// Read-only directory of packs installed at start.
    pub packs_dir: String,
}

/// Render `pack-exec.json` for a bottle.
pub fn render(_manifest: &Manifest) -> serde_json::Value {
    let config = PackExecConfig {
        listen: format!("0.0.0.0:{}", Daemon::PackExec.port()),
        state_dir: STATE_DIR.to_string(),
        packs_dir: PACKS_DIR.to_string(),
    };
    serde_json::to_value(config).unwrap_or_default()
}
