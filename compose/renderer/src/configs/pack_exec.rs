//! `pack-exec.json`: where pack-exec listens (agent and operator listeners), keeps its state,
//! finds the bottle's packs and asks sidecar-init to start handlers. The shape is pack-exec's
//! `Config` (sidecars/pack-exec/src/config.rs); unset keys keep pack-exec's defaults.

use serde::Serialize;

use crate::configs::daemon_credential;
use crate::daemon::Daemon;
use crate::manifest::Manifest;

/// Where the bottle's pack directories are mounted (read-only) in the sidecars container.
pub const PACKS_DIR: &str = bottle_spec::BOTTLE_PACKS_DIR;
/// pack-exec's writable state (installed packs): a named volume.
pub const STATE_DIR: &str = "/var/lib/sidecars/packs";
/// The host pack-exec's operator listener binds: the container's loopback, reachable by no
/// other container (the agent's included) and not published. The control plane reaches it by
/// an exec of `sidecars pack-exec-relay --operator` in the sidecars container.
pub const OPERATOR_HOST: &str = "127.0.0.1";

/// The subset of pack-exec's config the renderer sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackExecConfig {
    /// Agent listener (all interfaces of the container, the daemon's port): list, get, call.
    pub listen: String,
    /// Writable state directory (a volume).
    pub state_dir: String,
    /// Read-only directory of packs installed at start.
    pub packs_dir: String,
    /// sidecar-init's handler-spawn socket: pack-exec holds no capability and asks init to
    /// start each handler under a handler uid.
    pub spawner: String,
    /// Operator listener (install, replace, delete): `127.0.0.1:9001`.
    pub operator_listen: String,
    /// The operator token (pack-exec's credential `operator-token`).
    pub operator_token_file: String,
    /// Install packs without a valid signature (the manifest's `allow_unsigned_packs`).
    pub allow_unsigned: bool,
}

/// Render `pack-exec.json` for a bottle.
pub fn render(m: &Manifest) -> serde_json::Value {
    let config = PackExecConfig {
        listen: format!("0.0.0.0:{}", Daemon::PackExec.port()),
        state_dir: STATE_DIR.to_string(),
        packs_dir: PACKS_DIR.to_string(),
        spawner: bottle_spec::SPAWN_SOCKET.to_string(),
        operator_listen: format!("{OPERATOR_HOST}:{}", bottle_spec::PACK_EXEC_OPERATOR_PORT),
        operator_token_file: daemon_credential(
            Daemon::PackExec,
            bottle_spec::PACK_EXEC_OPERATOR_TOKEN,
        ),
        allow_unsigned: m.allow_unsigned_packs,
    };
    serde_json::to_value(config).unwrap_or_default()
}
