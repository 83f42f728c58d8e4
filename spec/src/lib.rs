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
/// `SETGID` (to start each daemon and handler under its own uid), `KILL` (to signal them: a
/// uid-0 sender needs it for a target of another uid) and `CHOWN` (to give each daemon its
/// private credentials directory); see [`INIT_CAPABILITIES`].
pub const INIT_UID: u32 = 0;
/// The capabilities the sidecars container keeps (`cap_add` after `cap_drop: [ALL]`). Every
/// process but init drops them all when it switches to its uid.
pub const INIT_CAPABILITIES: [&str; 4] = ["CHOWN", "KILL", "SETGID", "SETUID"];

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

/// The bottle's DNS responder, always running in the sidecars container (not selectable in a
/// manifest's `daemons`): the agent's only resolver. It answers the bottle's own names and
/// refuses every other name without forwarding it anywhere, so no lookup (and no data hidden
/// in a name) leaves the bottle, whatever Docker's embedded DNS would do.
pub const DNS_NAME: &str = "dns";
/// Port of the DNS responder (UDP and TCP; Docker lets unprivileged processes bind low ports
/// in a container: `net.ipv4.ip_unprivileged_port_start=0`).
pub const DNS_PORT: u16 = 53;
/// uid (= gid) of the DNS responder.
pub const DNS_UID: u32 = 10006;
/// Config file of the DNS responder.
pub const DNS_CONFIG: &str = "/etc/sidecars/dns.json";

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
        assert!(!uids.contains(&DNS_UID) && !HANDLER_UIDS.contains(&DNS_UID));
        assert!(HANDLER_UIDS.clone().count() >= 16);
    }

    #[test]
    fn ports_are_distinct() {
        let mut ports: BTreeSet<u16> = Daemon::ALL.iter().map(|d| d.port()).collect();
        ports.insert(PACK_EXEC_OPERATOR_PORT);
        ports.insert(SUPERVISE_OPERATOR_PORT);
        ports.insert(DNS_PORT);
        assert_eq!(ports.len(), Daemon::ALL.len() + 3);
    }
}

/// The agent network's subnet: fixed per bottle so that the sidecars container has a known
/// address the agent's `dns:` can name (its DNS responder). One /28 per bottle out of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Subnet {
    /// Network address (host bits zero).
    pub base: std::net::Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

/// The default pool bottles' agent networks are carved from (`BOT_BOTTLE_SUBNET_POOL`).
pub const DEFAULT_SUBNET_POOL: Subnet = Subnet {
    base: std::net::Ipv4Addr::new(10, 213, 0, 0),
    prefix: 16,
};
/// Prefix length of one bottle's agent network: 14 usable addresses, 2 needed.
pub const BOTTLE_SUBNET_PREFIX: u8 = 28;

impl Subnet {
    /// Parses `A.B.C.D/N` (host bits must be zero).
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let bad = || format!("{text:?} is not an IPv4 subnet like 10.213.0.0/16");
        let (base, prefix) = Subnet::split(text).ok_or_else(bad)?;
        let subnet = Subnet { base, prefix };
        if u32::from(base) & !subnet.mask() != 0 {
            return Err(format!(
                "{text:?} has host bits set (did you mean {}?)",
                subnet.network()
            ));
        }
        Ok(subnet)
    }

    /// Parses `A.B.C.D/N` as the network containing it (host bits masked off, as a network
    /// created with `--subnet 10.1.2.3/24` is reported); `None` for IPv6 or anything else.
    pub fn containing(text: &str) -> Option<Subnet> {
        Subnet::split(text).map(|(base, prefix)| Subnet { base, prefix }.network())
    }

    fn split(text: &str) -> Option<(std::net::Ipv4Addr, u8)> {
        let (addr, prefix) = text.trim().split_once('/')?;
        let base = addr.parse().ok()?;
        let prefix = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some((base, prefix))
    }

    /// The same prefix with the host bits cleared.
    fn network(self) -> Subnet {
        Subnet {
            base: std::net::Ipv4Addr::from(u32::from(self.base) & self.mask()),
            prefix: self.prefix,
        }
    }

    fn mask(self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// Whether two subnets share an address.
    pub fn overlaps(self, other: Subnet) -> bool {
        let m = self.mask() & other.mask();
        u32::from(self.base) & m == u32::from(other.base) & m
    }

    /// The address Docker's IPAM reserves as the gateway (first host).
    pub fn gateway(self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::from(u32::from(self.base) + 1)
    }

    /// The sidecars container's fixed address (second host).
    pub fn sidecars_ip(self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::from(u32::from(self.base) + 2)
    }

    /// The bottle subnet for `project` in `pool`: the /28 a stable hash of the name points at,
    /// or the next one that overlaps nothing in `taken` (networks that already exist). `None`
    /// when the pool is full or smaller than a /28.
    pub fn for_project(pool: Subnet, project: &str, taken: &[Subnet]) -> Option<Subnet> {
        if pool.prefix > BOTTLE_SUBNET_PREFIX {
            return None;
        }
        let slots = 1u64 << (BOTTLE_SUBNET_PREFIX - pool.prefix);
        // FNV-1a, 64 bit: stable across Rust versions and platforms.
        let hash = project.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        let size = 1u64 << (32 - BOTTLE_SUBNET_PREFIX);
        (0..slots)
            .map(|i| (hash + i) % slots)
            .map(|slot| Subnet {
                base: std::net::Ipv4Addr::from(
                    (u64::from(u32::from(pool.base)) + slot * size) as u32,
                ),
                prefix: BOTTLE_SUBNET_PREFIX,
            })
            .find(|s| !taken.iter().any(|t| t.overlaps(*s)))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

#[cfg(test)]
mod subnet_tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        let s = Subnet::parse("10.213.0.0/16").unwrap();
        assert_eq!(s, DEFAULT_SUBNET_POOL);
        assert_eq!(s.to_string(), "10.213.0.0/16");
        assert!(Subnet::parse("10.213.0.1/16")
            .unwrap_err()
            .contains("10.213.0.0/16"));
        assert!(Subnet::parse("10.213.0.0").is_err());
        assert!(Subnet::parse("10.213.0.0/33").is_err());
        assert_eq!(
            Subnet::containing("10.1.2.3/24").unwrap().to_string(),
            "10.1.2.0/24"
        );
        assert_eq!(Subnet::containing("fd00::/64"), None);
        assert_eq!(Subnet::containing("10.0.0.0/33"), None);
    }

    #[test]
    fn a_project_gets_a_stable_free_slot_inside_the_pool() {
        let a = Subnet::for_project(DEFAULT_SUBNET_POOL, "bot-bottle-a", &[]).unwrap();
        assert_eq!(
            a,
            Subnet::for_project(DEFAULT_SUBNET_POOL, "bot-bottle-a", &[]).unwrap()
        );
        assert!(DEFAULT_SUBNET_POOL.overlaps(a));
        assert_eq!(a.prefix, BOTTLE_SUBNET_PREFIX);
        assert_eq!(u32::from(a.sidecars_ip()), u32::from(a.base) + 2);
        let b = Subnet::for_project(DEFAULT_SUBNET_POOL, "bot-bottle-a", &[a]).unwrap();
        assert_ne!(a, b);
        assert!(!a.overlaps(b));
        // a taken network covering the whole pool leaves nothing
        assert_eq!(
            Subnet::for_project(
                DEFAULT_SUBNET_POOL,
                "x",
                &[Subnet::parse("10.0.0.0/8").unwrap()]
            ),
            None
        );
    }
}

/// The `handlers` section of sidecar-init's config, written by the renderer and read by init:
/// one type for both. pack-exec (which holds no capability) asks init over `socket` to start
/// each pack handler under a free uid of `first_uid..=last_uid`, with these limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlersConfig {
    /// The socket path (owned by `client_uid`, mode 0600; peers of another uid are refused).
    pub socket: std::path::PathBuf,
    /// The only uid served (pack-exec's).
    pub client_uid: u32,
    /// First uid of the handler range (inclusive).
    pub first_uid: u32,
    /// Last uid of the handler range (inclusive).
    pub last_uid: u32,
    /// Where per-call temp dirs are created (a sticky, world-writable tmpfs such as `/tmp`).
    #[serde(default = "default_handler_tmp")]
    pub tmp_dir: std::path::PathBuf,
    /// Per-call resource limits.
    #[serde(default)]
    pub limits: HandlerLimits,
    /// pipelock's pack listener, where init relays every connection a handler opens to
    /// `127.0.0.1:`[`HANDLER_PROXY_PORT`] inside its jail (prefixed with
    /// [`pack_proxy::preamble`]). `None`: handlers have no network at all.
    #[serde(default)]
    pub proxy: Option<std::net::SocketAddr>,
    /// Variables set in every handler's environment over the pack's own (the bottle's CA
    /// bundle, for example). The proxy variables are init's: see [`pack_proxy::handler_env`].
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Directories a pack may live in (a request's `pack_dir` must be one of their children).
    #[serde(default = "default_pack_roots")]
    pub pack_roots: Vec<std::path::PathBuf>,
    /// Whether handlers must be jailed (see [`JailMode`]).
    #[serde(default)]
    pub jail: JailMode,
}

/// Whether pack handlers are jailed (user + network namespace, Landlock, seccomp).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JailMode {
    /// Jailed, or refused (`sandbox_unavailable`) where the kernel or runtime cannot jail.
    #[default]
    Required,
    /// UNSAFE: jailed where possible, otherwise run unjailed (a handler then shares the
    /// guards' network and files); a warning on every unjailed call.
    UnsafeFallback,
    /// UNSAFE: never jailed (for measuring the jail's cost); a warning on every call.
    UnsafeOff,
}

fn default_pack_roots() -> Vec<std::path::PathBuf> {
    PACK_ROOTS.iter().map(std::path::PathBuf::from).collect()
}

/// Where packs live in the sidecars container: the seed packs shipped in the image, the
/// bottle's own (bind-mounted from the project dir) and the operator's installs (pack-exec's
/// state dir, `packs/<name>@<seq>`). A handler may read its own pack's directory only.
pub const PACK_ROOTS: [&str; 3] = [
    SHIPPED_PACKS_DIR,
    BOTTLE_PACKS_DIR,
    "/var/lib/sidecars/packs/packs",
];

pub mod path_glob;

pub mod dlp_allow;
pub use dlp_allow::DlpAllow;

/// Paths a push may not add, change or delete unless the operator relaxes it for the
/// repository (git-gate's `deny_paths`): CI configuration runs on the upstream's runners with
/// the repository's secrets, so an agent able to change it could read them out.
pub const DEFAULT_DENY_PATHS: [&str; 6] = [
    ".github/workflows/**",
    ".gitlab-ci.yml",
    ".circleci/**",
    "Jenkinsfile",
    ".buildkite/**",
    "azure-pipelines.yml",
];

/// Compile a repository-relative path glob (`deny_paths`): `*` within a segment, `**` across.
pub fn repo_path_glob(glob: &str) -> Result<path_glob::PathGlob, String> {
    if glob.starts_with('/') {
        return Err(format!(
            "{glob:?}: write repository paths without a leading `/`"
        ));
    }
    path_glob::PathGlob::parse(&format!("/{glob}"))
}
pub mod route_rules;

/// The kill switch: while this file exists, pipelock and egress refuse everything (`503 kill
/// switch engaged`) and close their open tunnels. `sidecars kill-switch on|off` (run by the
/// control plane in the sidecars container, as root) writes or removes it on the
/// `/run/sidecars` tmpfs and sends [`KILL_SWITCH_SIGNAL`] to init, which forwards it to both
/// proxies; they also read the file when they start, so a restarted daemon stays off.
pub const KILL_SWITCH_FILE: &str = "/run/sidecars/kill-switch";
/// The signal that tells the proxies to read [`KILL_SWITCH_FILE`] again (forwarded by init).
pub const KILL_SWITCH_SIGNAL: &str = "SIGUSR1";

/// A pack's manifest files, at the pack's root; a pack holds exactly one (pack-exec refuses
/// both, and so does `control-plane packs install`). helmdeck's marketplace publishes YAML.
pub mod pack_manifest {
    /// helmdeck's marketplace manifest (YAML).
    pub const YAML: &str = "helmdeck-pack.yaml";
    /// The same fields as JSON.
    pub const JSON: &str = "pack.json";
    /// Both, in the order they are looked for.
    pub const ALL: [&str; 2] = [YAML, JSON];
    /// A marketplace catalog's index at its root (`catalog_version: v1`, `packs[]`).
    pub const CATALOG_INDEX: &str = "index.yaml";
    /// The catalog format this bundle reads.
    pub const CATALOG_VERSION: &str = "v1";
}

/// The seed packs in the sidecars image.
pub const SHIPPED_PACKS_DIR: &str = "/usr/share/sidecars/packs";
/// The bottle's packs (from its manifest), mounted read-only.
pub const BOTTLE_PACKS_DIR: &str = "/etc/sidecars/packs";

/// The port a handler's proxy variables name, on its own loopback inside the jail; init
/// accepts there and relays to pipelock's pack listener.
pub const HANDLER_PROXY_PORT: u16 = 8888;

/// pipelock's listener for pack traffic relayed by init (loopback of the sidecars container
/// only: the agent cannot reach it, and a handler's jail has no route to it).
pub const PIPELOCK_PACK_PORT: u16 = 8889;

/// The bottle's CA bundle (public roots + the bottle CA) as handlers see it.
pub const HANDLER_CA_BUNDLE: &str = "/etc/ssl/bottle/ca-bundle.crt";

/// Variables that name a CA bundle for the common clients (OpenSSL/curl, Python `requests`,
/// curl, git, Node): set to the bottle's bundle where egress intercepts TLS. The first four
/// *replace* the system store (the bundle holds the public roots too).
pub const CA_BUNDLE_VARS: [&str; 5] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
];

/// How pack traffic reaches pipelock: init opens a connection to pipelock's pack listener per
/// connection a handler opens, writes one preamble line naming the pack and the call, then
/// relays bytes both ways. pipelock applies the bottle's policy (or its `pack_allow`) and logs
/// the pack's name and call id with every request.
pub mod pack_proxy {
    use std::collections::BTreeMap;

    /// The preamble's first word.
    pub const MAGIC: &str = "SIDECARS-PACK";
    /// Longest preamble line accepted, newline included.
    pub const MAX_PREAMBLE_BYTES: usize = 256;

    /// A pack call that traffic comes from.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Origin {
        /// The pack's name.
        pub pack: String,
        /// The call's id.
        pub call_id: String,
    }

    /// Whether `name` may name a pack: `^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$`, at most 128
    /// bytes (helmdeck's `<namespace>.<name>`). pack-exec and init both check it.
    pub fn valid_pack_name(name: &str) -> bool {
        let part = |p: &str| {
            let mut bytes = p.bytes();
            bytes.next().is_some_and(|b| b.is_ascii_lowercase())
                && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        name.len() <= 128
            && name
                .split_once('.')
                .is_some_and(|(a, b)| part(a) && part(b))
    }

    /// The line init writes first on each relayed connection.
    pub fn preamble(origin: &Origin) -> String {
        format!("{MAGIC} {} {}\n", origin.pack, origin.call_id)
    }

    /// Parses a preamble line (without its newline).
    pub fn parse(line: &str) -> Result<Origin, String> {
        let mut words = line.trim_end_matches('\r').split(' ');
        let (Some(MAGIC), Some(pack), Some(call_id), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(format!("expected '{MAGIC} <pack> <call-id>'"));
        };
        if !valid_pack_name(pack) || !super::spawn::valid_call_id(call_id) {
            return Err("bad pack name or call id".into());
        }
        Ok(Origin {
            pack: pack.to_string(),
            call_id: call_id.to_string(),
        })
    }

    /// The proxy variables of a handler's environment (both cases, as curl, Python, git and
    /// Node read them): everything goes to init's relay on the jail's loopback.
    pub fn handler_env() -> BTreeMap<String, String> {
        let url = format!("http://127.0.0.1:{}", super::HANDLER_PROXY_PORT);
        let mut env = BTreeMap::new();
        for key in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY"] {
            env.insert(key.to_string(), url.clone());
            env.insert(key.to_ascii_lowercase(), url.clone());
        }
        // Nothing bypasses the proxy: the jail has no other way out.
        env.insert("NO_PROXY".to_string(), String::new());
        env.insert("no_proxy".to_string(), String::new());
        env
    }
}

fn default_handler_tmp() -> std::path::PathBuf {
    std::path::PathBuf::from(HANDLER_TMP_DIR)
}

/// Parent of the per-call temp dirs in the sidecars container (its `/tmp` tmpfs).
pub const HANDLER_TMP_DIR: &str = "/tmp";

impl HandlersConfig {
    /// The bundle's spawn service: pack-exec's uid, the handler range, these limits, handler
    /// traffic relayed to pipelock's pack listener.
    pub fn bundle(limits: HandlerLimits) -> HandlersConfig {
        HandlersConfig {
            socket: SPAWN_SOCKET.into(),
            client_uid: Daemon::PackExec.uid(),
            first_uid: *HANDLER_UIDS.start(),
            last_uid: *HANDLER_UIDS.end(),
            tmp_dir: HANDLER_TMP_DIR.into(),
            limits,
            proxy: Some(std::net::SocketAddr::from((
                std::net::Ipv4Addr::LOCALHOST,
                PIPELOCK_PACK_PORT,
            ))),
            env: Default::default(),
            pack_roots: default_pack_roots(),
            jail: JailMode::Required,
        }
    }
}

/// Resource limits of one handler call (`setrlimit`, applied as the handler's uid; the
/// process count is per uid, and every call has a uid of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandlerLimits {
    /// `RLIMIT_NPROC`: processes (and threads) of the call's uid.
    pub processes: u64,
    /// `RLIMIT_AS`: address space of each process, bytes.
    pub address_space_bytes: u64,
    /// `RLIMIT_FSIZE`: largest file a process may write, bytes.
    pub file_size_bytes: u64,
    /// `RLIMIT_NOFILE`: open file descriptors per process.
    pub open_files: u64,
}

impl Default for HandlerLimits {
    fn default() -> Self {
        HandlerLimits {
            processes: 64,
            address_space_bytes: 1 << 30,
            file_size_bytes: 64 << 20,
            open_files: 256,
        }
    }
}

/// The handler-spawn protocol between pack-exec (client) and sidecar-init (server) over
/// [`SPAWN_SOCKET`], written once for both sides.
///
/// One connection per call. The client sends one frame: a 4-byte big-endian length and a
/// JSON [`spawn::Request`], with the handler's stdin, stdout and stderr pipe ends attached to
/// it as `SCM_RIGHTS`. The server answers with JSON lines ([`spawn::Event`]): `started` (or
/// `error`), later `exited` — sent only once every process of the call's uid is gone and its
/// temp dir removed. The client may write a `{"op":"kill"}` line at any time; closing the
/// connection kills the call too.
pub mod spawn {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    /// The error code of a call refused because the jail cannot be had.
    pub const SANDBOX_UNAVAILABLE: &str = "sandbox_unavailable";

    /// Largest request frame accepted.
    pub const MAX_REQUEST_BYTES: u32 = 256 * 1024;

    /// Start one handler.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Request {
        /// The call's id (`[A-Za-z0-9-]{1,64}`): names its temp dir.
        pub call_id: String,
        /// The pack's name (logged by pipelock with the call's traffic).
        pub pack: String,
        /// The pack's directory: the one pack directory the handler may read.
        pub pack_dir: std::path::PathBuf,
        /// Absolute program path and arguments.
        pub argv: Vec<String>,
        /// The handler's whole environment; the server sets `HOME` and `TMPDIR` to the
        /// call's temp dir itself.
        pub env: BTreeMap<String, String>,
    }

    /// What the server says.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "event", rename_all = "lowercase")]
    pub enum Event {
        /// The handler runs.
        Started {
            /// Its pid (= its process group).
            pid: i32,
            /// The call's uid.
            uid: u32,
        },
        /// The handler could not be started.
        Error {
            /// `busy` (no free handler uid), `invalid` (bad request), `spawn` (exec failed) or
            /// [`SANDBOX_UNAVAILABLE`] (the kernel or runtime cannot give the jail).
            code: String,
            /// What happened.
            message: String,
        },
        /// The handler ended, and everything it left is gone.
        Exited {
            /// Its exit code, when it exited.
            code: Option<i32>,
            /// The signal that killed it, when one did.
            signal: Option<i32>,
        },
    }

    /// What the client may send after the request.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(tag = "op", rename_all = "lowercase")]
    pub enum Op {
        /// Kill the call (timeout, output overflow).
        Kill,
    }

    /// Whether `id` may name a call.
    pub fn valid_call_id(id: &str) -> bool {
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }
}
