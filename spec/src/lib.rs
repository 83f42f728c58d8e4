//! The contract of a bottle, written once: the daemons of the sidecars container with their
//! ports, config paths, uids and state directories, the uid range of pack handlers, and the
//! paths where secrets and sockets live. The renderer, the control plane, sidecar-init's
//! config, the image (checked by a test against `Dockerfile.sidecars`) and the docs all read
//! this table, so no two of them can disagree about which uid owns what.
//!
//! Why one uid per daemon: the sidecars container is one network namespace and one image, so
//! its rooms (`docs/security.md`) are made of uids and file modes. A uid shared by two
//! daemons would let either read the other's secrets, signal it or ptrace it.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

/// sidecar-init's uid: root *without* the root capabilities. It keeps only `SETUID`,
/// `SETGID` (to start each daemon and handler under its own uid) and `CHOWN` (to give each
/// daemon its private credentials directory); see [`INIT_CAPABILITIES`].
pub const INIT_UID: u32 = 0;
/// The capabilities the sidecars container keeps (`cap_add` after `cap_drop: [ALL]`). Every
/// process but init drops them all when it switches to its uid.
pub const INIT_CAPABILITIES: [&str; 3] = ["CHOWN", "SETGID", "SETUID"];

/// The uids pack handlers run as: one per running call, never shared by two live calls, never
/// a daemon's. pack-exec's concurrency is bounded by the size of this range.
pub const HANDLER_UIDS: RangeInclusive<u32> = 10100..=10163;

/// Where the control plane mounts the operator's credential files (read-only, each
/// `root:root 0400` on the host): readable by init alone, which hands each daemon a copy of
/// the ones it declares.
pub const SECRETS_MOUNT: &str = "/run/secrets/bottle";
/// Where the control plane mounts the secrets it generates itself (the CA key, operator
/// tokens), likewise readable by init alone.
pub const BUNDLE_SECRETS_MOUNT: &str = "/run/secrets/bundle";
/// Root of the per-daemon credentials directories init creates on the `/run/sidecars`
/// tmpfs (systemd's `$CREDENTIALS_DIRECTORY` pattern).
pub const CREDENTIALS_ROOT: &str = "/run/sidecars/credentials";
/// The variable naming a daemon's credentials directory in its environment.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";
/// sidecar-init's control socket (`sidecar-init health|status`), root-only.
pub const INIT_SOCKET: &str = "/run/sidecars/init.sock";
/// sidecar-init's handler-spawn socket: pack-exec asks init to start each handler under a
/// handler uid (pack-exec holds no capability to do it itself). Only pack-exec's uid is
/// served.
pub const SPAWN_SOCKET: &str = "/run/sidecars/spawn.sock";
/// Directory of the daemons' config files in the sidecars container.
pub const CONFIG_DIR: &str = "/etc/sidecars";
/// File name (in pack-exec's credentials directory) of pack-exec's operator token.
pub const PACK_EXEC_OPERATOR_TOKEN: &str = "operator-token";
/// File name (in egress's credentials directory) of the bottle CA's private key.
pub const CA_KEY_CREDENTIAL: &str = "ca.key";
/// pack-exec's operator listener port (install, replace, delete): bound only on the
/// interface of the container's default route (the egress network, where Docker publishes
/// ports), never on the agent's network.
pub const PACK_EXEC_OPERATOR_PORT: u16 = 9001;
/// supervise's operator listener (loopback only).
pub const SUPERVISE_OPERATOR_PORT: u16 = 9101;

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

/// The facts of one daemon (one row of the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonFacts {
    /// The name used everywhere: init's daemon name, log prefix, config file stem, manifest.
    pub name: &'static str,
    /// The port it listens on inside the sidecars container.
    pub port: u16,
    /// Its uid (and gid: every daemon has a group of its own number).
    pub uid: u32,
    /// Writable state it alone owns (a named volume), if any.
    pub state_dir: Option<&'static str>,
    /// Whether its port is published on the host's loopback (agent-facing daemons, for agents
    /// outside the project). Egress is reached only through pipelock.
    pub published: bool,
}

const TABLE: [DaemonFacts; 5] = [
    DaemonFacts {
        name: "egress",
        port: 9099,
        uid: 10001,
        state_dir: None,
        published: false,
    },
    DaemonFacts {
        name: "pipelock",
        port: 8888,
        uid: 10002,
        state_dir: None,
        published: true,
    },
    DaemonFacts {
        name: "git-gate",
        port: 9418,
        uid: 10003,
        state_dir: Some("/git"),
        published: true,
    },
    DaemonFacts {
        name: "supervise",
        port: 9100,
        uid: 10004,
        state_dir: Some("/run/supervise/queue"),
        published: true,
    },
    DaemonFacts {
        name: "pack-exec",
        port: 9000,
        uid: 10005,
        state_dir: Some("/var/lib/sidecars/packs"),
        published: true,
    },
];

impl Daemon {
    /// Every daemon, in dependency order.
    pub const ALL: [Daemon; 5] = [
        Daemon::Egress,
        Daemon::Pipelock,
        Daemon::GitGate,
        Daemon::Supervise,
        Daemon::PackExec,
    ];

    /// Its row of the table.
    pub fn facts(self) -> DaemonFacts {
        TABLE[self as usize]
    }

    /// The name used everywhere: init's daemon name, log prefix, config file stem, manifest.
    pub fn name(self) -> &'static str {
        self.facts().name
    }

    /// The daemon called `name`, if any.
    pub fn from_name(name: &str) -> Option<Daemon> {
        Daemon::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The port the daemon listens on inside the sidecars container.
    pub fn port(self) -> u16 {
        self.facts().port
    }

    /// Whether the port is published on the host's loopback.
    pub fn published(self) -> bool {
        self.facts().published
    }

    /// Its uid (= its gid).
    pub fn uid(self) -> u32 {
        self.facts().uid
    }

    /// `"UID:GID"`, as init's config and `docker exec -u` take it.
    pub fn user(self) -> String {
        format!("{0}:{0}", self.uid())
    }

    /// Path of the daemon's config file inside the sidecars container.
    pub fn config_path(self) -> String {
        format!("{CONFIG_DIR}/{}.json", self.name())
    }

    /// The private directory init fills with the credentials this daemon declares.
    pub fn credentials_dir(self) -> String {
        format!("{CREDENTIALS_ROOT}/{}", self.name())
    }

    /// Writable state it alone owns, if any.
    pub fn state_dir(self) -> Option<&'static str> {
        self.facts().state_dir
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
    use std::collections::BTreeSet;

    #[test]
    fn all_is_sorted_in_dependency_order_and_matches_the_table() {
        let mut sorted = Daemon::ALL;
        sorted.sort();
        assert_eq!(sorted, Daemon::ALL);
        assert!(Daemon::Egress < Daemon::Pipelock);
        for (i, d) in Daemon::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
            assert_eq!(Daemon::from_name(d.name()), Some(*d));
        }
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

    #[test]
    fn every_uid_is_distinct_unprivileged_and_outside_the_handler_range() {
        let uids: BTreeSet<u32> = Daemon::ALL.iter().map(|d| d.uid()).collect();
        assert_eq!(uids.len(), Daemon::ALL.len(), "two daemons share a uid");
        for uid in &uids {
            assert!(*uid >= 1000 && *uid != 65534, "uid {uid}");
            assert!(!HANDLER_UIDS.contains(uid), "uid {uid} is a handler uid");
        }
        assert!(!HANDLER_UIDS.contains(&INIT_UID));
        assert!(HANDLER_UIDS.clone().count() >= 16);
    }

    #[test]
    fn ports_are_distinct() {
        let mut ports: BTreeSet<u16> = Daemon::ALL.iter().map(|d| d.port()).collect();
        ports.insert(PACK_EXEC_OPERATOR_PORT);
        ports.insert(SUPERVISE_OPERATOR_PORT);
        assert_eq!(ports.len(), Daemon::ALL.len() + 2);
    }
}
