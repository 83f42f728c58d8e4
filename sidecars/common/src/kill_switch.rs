//! The kill switch both proxies obey: while its file exists, every request is refused with
//! `503 kill switch engaged` and every open tunnel is closed; when it is gone, the policy
//! applies again.
//!
//! Why a file and a signal, not only a signal: the state must outlive a daemon restart (init
//! restarts a crashed proxy; it must come back refusing), and a signal carries no state. So
//! the file is the state (`bottle_spec::KILL_SWITCH_FILE`) and the signal
//! (`bottle_spec::KILL_SWITCH_SIGNAL`, forwarded by init) says "read it again"; a proxy also
//! reads it when it starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::StatusCode;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::shutdown::Shutdown;

/// A proxy's view of the kill switch.
#[derive(Debug)]
pub struct KillSwitch {
    file: Option<PathBuf>,
    engaged: watch::Sender<bool>,
}

impl KillSwitch {
    /// The switch kept in `file` (none: never engaged), read now.
    pub fn new(file: Option<PathBuf>) -> Arc<KillSwitch> {
        let engaged = file.as_deref().is_some_and(Path::exists);
        if engaged {
            tracing::warn!(
                rule = "kill-switch",
                "kill switch engaged at start: refusing everything"
            );
        }
        Arc::new(KillSwitch {
            file,
            engaged: watch::channel(engaged).0,
        })
    }

    /// Whether everything is refused now.
    pub fn engaged(&self) -> bool {
        *self.engaged.borrow()
    }

    /// Read the file again (on the signal); logs a change.
    pub fn reload(&self) {
        let now = self.file.as_deref().is_some_and(Path::exists);
        let changed = self.engaged.send_if_modified(|state| {
            let changed = *state != now;
            *state = now;
            changed
        });
        if changed && now {
            tracing::warn!(
                rule = "kill-switch",
                "kill switch engaged: refusing everything, closing open tunnels"
            );
        } else if changed {
            tracing::warn!(
                rule = "kill-switch",
                "kill switch released: the policy applies again"
            );
        }
    }

    /// Re-read the file on every `bottle_spec::KILL_SWITCH_SIGNAL` (SIGUSR1) until `shutdown`. Installs the handler now (so a signal right after start is not the
    /// default action, which would kill the daemon).
    pub fn listen_for_signal(self: &Arc<Self>, shutdown: Shutdown) -> std::io::Result<()> {
        let me = self.clone();
        crate::shutdown::on_signal(
            tokio::signal::unix::SignalKind::user_defined1(),
            shutdown,
            move || me.reload(),
        )
    }

    /// Resolves once the switch is engaged (at once if it is): what an open tunnel waits on
    /// beside its relay.
    pub async fn until_engaged(&self) {
        let mut rx = self.engaged.subscribe();
        // Err only if the sender is gone, which it is not while `self` lives.
        let _ = rx.wait_for(|engaged| *engaged).await;
    }
}

/// The answer to every request while the switch is engaged.
pub fn refusal() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "kill_switch",
        "blocked: kill switch engaged (the operator stopped all outside traffic of this bottle)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_is_the_state_and_reload_follows_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kill-switch");
        let ks = KillSwitch::new(Some(file.clone()));
        assert!(!ks.engaged());
        std::fs::write(&file, "on\n").unwrap();
        assert!(!ks.engaged(), "only a reload reads the file");
        let waiter = {
            let ks = ks.clone();
            tokio::spawn(async move { ks.until_engaged().await })
        };
        ks.reload();
        assert!(ks.engaged());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("an open tunnel hears of it")
            .unwrap();
        // A restart while on starts engaged.
        assert!(KillSwitch::new(Some(file.clone())).engaged());
        std::fs::remove_file(&file).unwrap();
        ks.reload();
        assert!(!ks.engaged());
        assert!(!KillSwitch::new(None).engaged());
    }
}
