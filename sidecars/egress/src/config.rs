//! `egress.json`: who may use egress, which hosts get credentials, and the CA it mints
//! certificates with.
//!
//! ```json
//! {
//!   "listen": "127.0.0.1:9099",
//!   "allow_from": ["127.0.0.1/32"],
//!   "routes": [{"host": "api.github.com", "headers": {"Authorization": "Bearer ${cred:github}"},
//!               "rules": [{"deny": "* /repos/*/*/actions/secrets/**"}, "read-only"]}],
//!   "vault": {"OPENAI": {"file": "/run/secrets/openai", "hosts": ["api.openai.com"]}},
//!   "credentials_dir": "/run/secrets/credentials",
//!   "ca_cert": "/etc/sidecars/ca/ca.crt",
//!   "ca_key": "/etc/sidecars/ca/ca.key"
//! }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use sidecars_common::config::Validate;
use sidecars_common::daemon::DaemonConfig;
use sidecars_common::ssrf::IpNet;

/// The whole config; every key is optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on. In the bundle, `127.0.0.1:9099` (only pipelock reaches it).
    pub listen: SocketAddr,
    /// Peers (CIDRs) that may use egress; others get 403. Default: loopback only.
    pub allow_from: Vec<IpNet>,
    /// Hosts whose requests get headers injected (TLS is terminated for them).
    pub routes: Vec<Route>,
    /// `${vault:NAME}` placeholders: the file holding NAME's value and the hosts it may go to.
    pub vault: BTreeMap<String, VaultEntry>,
    /// Directory of credential files; `${cred:NAME}` is the file `NAME` there, trailing
    /// newline trimmed.
    pub credentials_dir: Option<PathBuf>,
    /// PEM certificate of the bottle's CA (agents trust it); needed when any host is
    /// intercepted (routes or vault).
    pub ca_cert: Option<PathBuf>,
    /// PEM private key of the bottle's CA.
    pub ca_key: Option<PathBuf>,
    /// Extra PEM files of root certificates trusted for upstream TLS, besides the webpki roots.
    pub extra_roots: Vec<PathBuf>,
    /// Address ranges exempt from the SSRF guard.
    pub allow_cidrs: Vec<IpNet>,
    /// A blind tunnel with no traffic for this long is closed.
    pub tunnel_idle_timeout_secs: u64,
    /// Any tunnel is closed after this long.
    pub tunnel_max_lifetime_secs: u64,
    /// Timeout for connecting (and the TLS handshake) upstream.
    pub connect_timeout_secs: u64,
    /// Terminate TLS for every host name, not only route and vault hosts, so DLP sees what the
    /// agent sends over HTTPS (needs `ca_cert`/`ca_key`). Hosts in `passthrough` and IP
    /// literals stay blind.
    pub intercept_all: bool,
    /// Exact host names tunnelled blind even with `intercept_all` (clients that pin their
    /// server's certificate). A DLP gap for those hosts: egress cannot see their traffic.
    pub passthrough: Vec<String>,
    /// Files whose values must never leave (as pipelock's): scanned for in every intercepted
    /// request, before any credential is injected.
    pub secret_files: Vec<PathBuf>,
    /// Minimum Shannon entropy (bits/char) of a `token=`/`key=`… value to count as a secret.
    pub entropy_threshold: f64,
    /// Intercepted request bodies are buffered and scanned up to this many bytes; larger
    /// bodies are refused (413), never forwarded unscanned.
    pub max_body_scan_bytes: usize,
    /// The operator's DLP allowlist (`bottle_spec::DlpAllow`): findings it names are
    /// dropped. Never read from anything the agent writes.
    pub dlp_allow: bottle_spec::DlpAllow,
    /// The kill switch's file (`bottle_spec::KILL_SWITCH_FILE` in the bundle): while it
    /// exists everything is refused and open tunnels are closed; re-read on SIGUSR1.
    pub kill_switch_file: Option<PathBuf>,
}

/// Headers injected into every request to one host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Exact host name (case-insensitive).
    pub host: String,
    /// Header name → value template; `${cred:NAME}` is replaced by the credential. An agent's
    /// own header of the same name is dropped.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Ordered method/path rules deciding which requests may carry the route's credential
    /// (`bottle_spec::route_rules`); none = every request.
    #[serde(default)]
    pub rules: Vec<bottle_spec::route_rules::RuleSpec>,
}

/// One `${vault:NAME}` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultEntry {
    /// File holding the value (trailing newline trimmed).
    pub file: PathBuf,
    /// Exact hosts the value may be sent to; a placeholder sent anywhere else is refused.
    pub hosts: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9099)),
            allow_from: vec![
                IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
                IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            routes: Vec::new(),
            vault: BTreeMap::new(),
            credentials_dir: None,
            ca_cert: None,
            ca_key: None,
            extra_roots: Vec::new(),
            allow_cidrs: Vec::new(),
            tunnel_idle_timeout_secs: 300,
            tunnel_max_lifetime_secs: 3600,
            connect_timeout_secs: 10,
            intercept_all: false,
            passthrough: Vec::new(),
            secret_files: Vec::new(),
            entropy_threshold: 3.5,
            max_body_scan_bytes: 1 << 20,
            kill_switch_file: None,
            dlp_allow: bottle_spec::DlpAllow::default(),
        }
    }
}

impl DaemonConfig for Config {
    fn listen(&self) -> SocketAddr {
        self.listen
    }
}

impl Validate for Config {
    fn problems(&self) -> Vec<String> {
        let mut p = self.dlp_allow.problem_lines();
        if self.tunnel_idle_timeout_secs == 0
            || self.tunnel_max_lifetime_secs == 0
            || self.connect_timeout_secs == 0
        {
            p.push("tunnel_idle_timeout_secs/tunnel_max_lifetime_secs/connect_timeout_secs: must be at least 1".into());
        }
        // Building the runtime state reads every file the config names: report what fails now,
        // at startup, rather than on the first request.
        if let Err(problems) = crate::state::State::build(self) {
            p.extend(problems);
        }
        p
    }
}
