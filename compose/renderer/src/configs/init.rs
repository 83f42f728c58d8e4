//! `init.json`: sidecar-init's daemon table, with the bottle's per-daemon overrides.
//!
//! The default table is the one baked into the image (`images/sidecars/init.json`; a test
//! keeps them equal). It lists the DNS responder (always on, first) and all five daemons;
//! `SIDECARS_DAEMONS` (set on the service) selects the enabled ones, so optional dependencies
//! stay declared in one place.
//!
//! Every entry names the daemon's own uid (`user`, from `bottle_spec::Daemon::user`): init
//! runs as root with only `CHOWN KILL SETGID SETUID` and starts each daemon under its uid. A
//! daemon's `credentials` map a file name in its private credentials directory to the mounted
//! secret init copies there before any daemon starts (see [`crate::configs::credentials`]).
//! With pack-exec, `handlers` tells init how to start pack handlers for pack-exec over the
//! spawn socket, and their per-call limits.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::configs::{credentials, fixed_credentials};
use crate::daemon::Daemon;
use crate::manifest::{Manifest, RestartPolicy};
use crate::validate::parse_size;

/// Whole-shutdown budget of init (well inside compose's 10 s `stop_grace_period`).
pub const GRACE_MS: u64 = 8000;
/// Default SIGTERM → SIGKILL grace of one daemon.
pub const DAEMON_GRACE_MS: u64 = 5000;
/// init's control socket (on the `/run/sidecars` tmpfs), used by `sidecar-init health`.
pub const SOCKET: &str = bottle_spec::INIT_SOCKET;
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
    /// How init starts pack handlers for pack-exec (only when pack-exec runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handlers: Option<Handlers>,
    /// The daemon table.
    pub daemons: Vec<InitDaemon>,
}

/// init's handler spawner and its per-call limits: the contract crate's types, the ones
/// sidecar-init parses.
pub use bottle_spec::{HandlerLimits, HandlersConfig as Handlers};

/// One supervised daemon.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InitDaemon {
    /// Daemon name (log prefix, `SIDECARS_DAEMONS` entry).
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The daemon's own environment.
    pub env: BTreeMap<String, String>,
    /// `UID:GID` init starts the daemon as (its own uid).
    pub user: Option<String>,
    /// File name in the daemon's credentials directory → mounted secret init copies there.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, String>,
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
        Daemon::Egress => (
            Ready::Http("9099/health".into()),
            vec![],
            Some("SIGHUP".to_string()),
        ),
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
        user: Some(d.user()),
        credentials: fixed_credentials(d),
        ready: Some(ready),
        depends_on,
        restart: RestartPolicy::OnFailure,
        grace_ms: DAEMON_GRACE_MS,
        ready_timeout_ms: None,
        reload_signal,
        // The kill switch's "read the file again", sent to init by `sidecars kill-switch`.
        forward_signals: match d {
            Daemon::Pipelock | Daemon::Egress => {
                vec![bottle_spec::KILL_SWITCH_SIGNAL.to_string()]
            }
            _ => vec![],
        },
    }
}

/// The DNS responder's entry: always on (not a manifest daemon), no dependencies, ready
/// when its TCP port answers.
pub fn dns_daemon() -> InitDaemon {
    InitDaemon {
        name: bottle_spec::DNS_NAME.to_string(),
        argv: vec![
            DAEMON_BINARY.to_string(),
            bottle_spec::DNS_NAME.to_string(),
            "--config".to_string(),
            bottle_spec::DNS_CONFIG.to_string(),
        ],
        env: BTreeMap::new(),
        user: Some(format!("{0}:{0}", bottle_spec::DNS_UID)),
        credentials: BTreeMap::new(),
        ready: Some(Ready::Tcp(bottle_spec::DNS_PORT)),
        depends_on: vec![],
        restart: RestartPolicy::OnFailure,
        grace_ms: DAEMON_GRACE_MS,
        ready_timeout_ms: None,
        reload_signal: None,
        forward_signals: vec![],
    }
}

/// The handler spawner with `limits`.
pub fn handlers(limits: HandlerLimits) -> Handlers {
    Handlers::bundle(limits)
}

/// The bottle's handler limits: `resources.handlers` over the defaults.
pub fn handler_limits(m: &Manifest) -> HandlerLimits {
    let mut limits = HandlerLimits::default();
    let Some(h) = &m.resources.handlers else {
        return limits;
    };
    if let Some(n) = h.processes {
        limits.processes = u64::from(n);
    }
    if let Some(bytes) = h.address_space.as_deref().and_then(parse_size) {
        limits.address_space_bytes = bytes;
    }
    if let Some(bytes) = h.file_size.as_deref().and_then(parse_size) {
        limits.file_size_bytes = bytes;
    }
    if let Some(n) = h.open_files {
        limits.open_files = u64::from(n);
    }
    limits
}

/// The default table (the DNS responder and all five daemons, the handler spawner with the
/// default limits), as baked into the image.
pub fn default_config() -> InitConfig {
    let mut daemons = vec![dns_daemon()];
    daemons.extend(Daemon::ALL.iter().map(|d| default_daemon(*d)));
    InitConfig {
        grace_ms: GRACE_MS,
        socket: SOCKET.to_string(),
        notify_url: Some(NOTIFY_URL.to_string()),
        handlers: Some(handlers(HandlerLimits::default())),
        daemons,
    }
}

/// The bottle's `init.json`: the default table with the manifest's credentials, handler
/// limits and `daemon_settings` applied. Events go to supervise only when it is enabled; the
/// handler spawner exists only with pack-exec; a disabled daemon declares no credentials (its
/// secrets are not mounted).
pub fn render(m: &Manifest) -> InitConfig {
    let mut config = default_config();
    if !m.daemons.contains(&Daemon::Supervise) {
        config.notify_url = None;
    }
    config.handlers = m.daemons.contains(&Daemon::PackExec).then(|| {
        let mut h = handlers(handler_limits(m));
        // Without pipelock a handler has no way out at all.
        if !m.daemons.contains(&Daemon::Pipelock) {
            h.proxy = None;
        }
        // egress intercepts TLS with the bottle's CA: handlers trust it through the bundle.
        if m.daemons.contains(&Daemon::Egress) {
            for var in bottle_spec::CA_BUNDLE_VARS {
                h.env
                    .insert(var.to_string(), bottle_spec::HANDLER_CA_BUNDLE.to_string());
            }
        }
        if m.unsafe_allow_unjailed_packs {
            h.jail = bottle_spec::JailMode::UnsafeFallback;
        }
        h
    });
    for entry in config.daemons.iter_mut() {
        let Some(daemon) = Daemon::from_name(&entry.name) else {
            continue; // the DNS responder: not configurable
        };
        entry.credentials = credentials(daemon, m);
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
