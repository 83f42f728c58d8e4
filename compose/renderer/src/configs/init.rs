//! `init.json`: sidecar-init's daemon table, with the bottle's per-daemon overrides.
//!
//! The default table is the one baked into the image (`images/sidecars/init.json`; a test
//! keeps them equal). All five daemons are listed; `SIDECARS_DAEMONS` (set on the service)
//! selects the enabled ones, so optional dependencies stay declared in one place.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::daemon::Daemon;
use crate::manifest::{Manifest, RestartPolicy};

/// Whole-shutdown budget of init (well inside compose's 10 s `stop_grace_period`).
pub const GRACE_MS: u64 = 8000;
/// Default SIGTERM → SIGKILL grace of one daemon.
pub const DAEMON_GRACE_MS: u64 = 5000;
/// init's control socket (on the `/run/sidecars` tmpfs), used by `sidecar-init health`.
pub const SOCKET: &str = "/run/sidecars/init.sock";
/// supervise's operator listener, where init posts daemon events (only when supervise runs).
pub const NOTIFY_URL: &str = "http://127.0.0.1:9101/v1/events";
/// The multi-call daemon binary in the sidecars image.
pub const DAEMON_BINARY: &str = "/usr/local/bin/sidecars";

/// sidecar-init's config file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InitConfig {
    /// Whole-shutdown budget, ms.
    pub grace_ms: u64,
    /// Control socket path.
    pub socket: String,
    /// Where daemon events are posted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// The daemon table.
    pub daemons: Vec<InitDaemon>,
}

/// One supervised daemon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InitDaemon {
    /// Daemon name (log prefix, `SIDECARS_DAEMONS` entry).
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The daemon's own environment.
    pub env: BTreeMap<String, String>,
    /// User to switch to (none: the container's user).
    pub user: Option<String>,
    /// Ready probe.
    pub ready: Option<Ready>,
    /// Dependencies (ready before this one starts).
    pub depends_on: Vec<Dependency>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Stop grace, ms.
    pub grace_ms: u64,
    /// How long dependents wait for the ready probe, ms (init's default when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_timeout_ms: Option<u64>,
    /// Signal sent on SIGHUP (config reload).
    pub reload_signal: Option<String>,
    /// Signals forwarded as-is.
    pub forward_signals: Vec<String>,
}

/// A ready probe against the daemon's own port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ready {
    /// TCP connect to the port.
    Tcp(u16),
    /// `GET` of `PORT/PATH` answering 2xx.
    Http(String),
}

/// A dependency: a name, or a name that may be disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Dependency {
    /// Required.
    Name(String),
    /// Optional (dropped when `SIDECARS_DAEMONS` leaves it out).
    Optional {
        /// The daemon depended on.
        name: String,
        /// Always true in this form.
        optional: bool,
    },
}

/// The default entry of a daemon, before overrides.
pub fn default_daemon(d: Daemon) -> InitDaemon {
    let (ready, depends_on, reload_signal) = match d {
        Daemon::Egress => (Ready::Http("9099/health".into()), vec![], None),
        Daemon::Pipelock => (
            Ready::Http("8888/health".into()),
            vec![Dependency::Optional {
                name: Daemon::Egress.name().into(),
                optional: true,
            }],
            Some("SIGHUP".to_string()),
        ),
        Daemon::GitGate => (Ready::Tcp(d.port()), vec![], None),
        Daemon::Supervise => (Ready::Http("9100/health".into()), vec![], None),
        Daemon::PackExec => (Ready::Http("9000/health".into()), vec![], None),
    };
    InitDaemon {
        name: d.name().to_string(),
        argv: vec![
            DAEMON_BINARY.to_string(),
            d.name().to_string(),
            "--config".to_string(),
            d.config_path(),
        ],
        env: BTreeMap::new(),
        user: None,
        ready: Some(ready),
        depends_on,
        restart: RestartPolicy::OnFailure,
        grace_ms: DAEMON_GRACE_MS,
        ready_timeout_ms: None,
        reload_signal,
        forward_signals: vec![],
    }
}

/// The default table (all five daemons), as baked into the image.
pub fn default_config() -> InitConfig {
    InitConfig {
        grace_ms: GRACE_MS,
        socket: SOCKET.to_string(),
        notify_url: Some(NOTIFY_URL.to_string()),
        daemons: Daemon::ALL.iter().map(|d| default_daemon(*d)).collect(),
    }
}

/// The bottle's `init.json`: the default table with the manifest's `daemon_settings` applied.
/// Events go to supervise only when it is enabled.
pub fn render(m: &Manifest) -> InitConfig {
    let mut config = default_config();
    if !m.daemons.contains(&Daemon::Supervise) {
        config.notify_url = None;
    }
    for (daemon, entry) in Daemon::ALL.iter().zip(config.daemons.iter_mut()) {
        let Some(settings) = m.daemon_settings.get(daemon.name()) else {
            continue;
        };
        if let Some(restart) = settings.restart {
            entry.restart = restart;
        }
        if let Some(grace) = settings.grace_ms {
            entry.grace_ms = grace;
        }
        if settings.ready_timeout_ms.is_some() {
            entry.ready_timeout_ms = settings.ready_timeout_ms;
        }
        entry
            .env
            .extend(settings.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    config
}
