//! The five daemons of the bundle and the facts the renderer needs about each: its port, how
//! the agent reaches it, what init waits for, and whether its config can be rendered yet.
//!
//! One table, so the compose file, the init config and the agent's environment can never
//! disagree about a port.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A daemon of the sidecars container. The declaration order is the dependency order
/// (egress before pipelock), which is also the order of `SIDECARS_DAEMONS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Daemon {
    /// Last hop: TLS interception for routed hosts, credential injection.
    Egress,
    /// The agent's forward proxy: allowlist, SSRF guard, DLP.
    Pipelock,
    /// The agent's git remote: secret-scanned pushes.
    GitGate,
    /// MCP approval queue.
    Supervise,
    /// Command-pack runner.
    PackExec,
}

impl Daemon {
    /// Every daemon, in dependency order.
    pub const ALL: [Daemon; 5] = [
        Daemon::Egress,
        Daemon::Pipelock,
        Daemon::GitGate,
        Daemon::Supervise,
        Daemon::PackExec,
    ];

    /// The name used everywhere: init's daemon name, log prefix, config file stem, manifest.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Egress => "egress",
            Daemon::Pipelock => "pipelock",
            Daemon::GitGate => "git-gate",
            Daemon::Supervise => "supervise",
            Daemon::PackExec => "pack-exec",
        }
    }

    /// The daemon called `name`, if any.
    pub fn from_name(name: &str) -> Option<Daemon> {
        Daemon::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The port the daemon listens on inside the sidecars container.
    pub fn port(self) -> u16 {
        match self {
            Daemon::Egress => 9099,
            Daemon::Pipelock => 8888,
            Daemon::GitGate => 9418,
            Daemon::Supervise => 9100,
            Daemon::PackExec => 9000,
        }
    }

    /// Whether the port is published on the host's loopback (ephemeral host port): the
    /// agent-facing daemons, for agents outside the project, plus pack-exec for the operator's
    /// CLI. Egress is reached only through pipelock.
    pub fn published(self) -> bool {
        !matches!(self, Daemon::Egress)
    }

    /// Whether this version of the renderer can render the daemon's config file. A daemon
    /// without one would start without its config, so enabling it is refused until its
    /// renderer module lands (see [`crate::configs`]).
    pub fn supported(self) -> bool {
        crate::configs::renderer_for(self).is_some()
    }

    /// Path of the daemon's config file inside the sidecars container.
    pub fn config_path(self) -> String {
        format!("/etc/sidecars/{}.json", self.name())
    }
}

impl fmt::Display for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_sorted_in_dependency_order() {
        let mut sorted = Daemon::ALL;
        sorted.sort();
        assert_eq!(sorted, Daemon::ALL);
        assert!(Daemon::Egress < Daemon::Pipelock);
    }

    #[test]
    fn serde_names_match_name() {
        for d in Daemon::ALL {
            assert_eq!(
                serde_json::to_value(d).unwrap(),
                serde_json::Value::String(d.name().into())
            );
        }
    }
}
