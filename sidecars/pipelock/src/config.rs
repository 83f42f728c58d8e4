//! `pipelock.json`: what the agent may reach and how hard pipelock looks.
//!
//! ```json
//! {
//!   "listen": "0.0.0.0:8888",
//!   "upstream": "127.0.0.1:9099",
//!   "allow": [{"host": "api.github.com"}, {"host": "*.pypi.org", "ports": [443]}],
//!   "allow_cidrs": [],
//!   "secret_files": ["/run/secrets/agent.env"],
//!   "rate_limit_per_minute": 600,
//!   "max_tunnels": 1024
//! }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use sidecars_common::config::Validate;
use sidecars_common::daemon::DaemonConfig;
use sidecars_common::ssrf::IpNet;

/// The whole config. Every key is optional; the defaults are the bundle's.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the proxy port (the agent's `HTTPS_PROXY`).
    pub listen: SocketAddr,
    /// egress as `host:port`; `null` connects to destinations directly (no credential
    /// injection). Default `127.0.0.1:9099`, egress inside the same container.
    pub upstream: Option<String>,
    /// Destinations the agent may reach; everything else is refused.
    pub allow: Vec<AllowRule>,
    /// Address ranges exempt from the SSRF guard (e.g. `["127.0.0.0/8"]` for a test upstream).
    pub allow_cidrs: Vec<IpNet>,
    /// Files whose values must never leave (env files, token files): every line of at least
    /// 8 characters, and the value of `KEY=VALUE` lines, in raw/base64/base32/hex/URL form.
    pub secret_files: Vec<PathBuf>,
    /// Requests (and tunnels) per destination host per minute; 0 = unlimited.
    pub rate_limit_per_minute: u32,
    /// Concurrent CONNECT tunnels; more are answered 503.
    pub max_tunnels: usize,
    /// A tunnel with no traffic for this long is closed.
    pub tunnel_idle_timeout_secs: u64,
    /// A tunnel is closed after this long, busy or not.
    pub tunnel_max_lifetime_secs: u64,
    /// Plain-HTTP request bodies are buffered and scanned up to this many bytes; larger bodies
    /// are refused (413), never forwarded unscanned.
    pub max_body_scan_bytes: usize,
    /// Minimum Shannon entropy (bits/char) of a `token=`/`key=`… value to count as a secret.
    pub entropy_threshold: f64,
    /// Timeout for connecting to egress or a destination.
    pub connect_timeout_secs: u64,
    /// Listener for pack handlers' traffic, relayed by sidecar-init with a preamble naming the
    /// pack and the call (`bottle_spec::pack_proxy`). Loopback only; `null` = none.
    pub pack_listen: Option<SocketAddr>,
    /// Destinations pack handlers may reach; `null` (default) = the same as `allow`.
    pub pack_allow: Option<Vec<AllowRule>>,
    /// The kill switch's file (`bottle_spec::KILL_SWITCH_FILE` in the bundle): while it
    /// exists everything is refused; re-read on SIGUSR1. `null` = no kill switch.
    pub kill_switch_file: Option<PathBuf>,
    /// The operator's DLP allowlist (`bottle_spec::DlpAllow`): findings it names are
    /// dropped. Never read from anything the agent writes.
    pub dlp_allow: bottle_spec::DlpAllow,
}

/// One allowed destination.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// `example.com` (exactly that host), `*.example.com` (any subdomain, not the apex) or `*`.
    pub host: String,
    /// Allowed ports; default 443 and 80.
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
}

fn default_ports() -> Vec<u16> {
    vec![443, 80]
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8888)),
            upstream: Some("127.0.0.1:9099".into()),
            allow: Vec::new(),
            allow_cidrs: Vec::new(),
            secret_files: Vec::new(),
            rate_limit_per_minute: 600,
            max_tunnels: 1024,
            tunnel_idle_timeout_secs: 300,
            tunnel_max_lifetime_secs: 3600,
            max_body_scan_bytes: 1 << 20,
            entropy_threshold: 3.5,
            connect_timeout_secs: 10,
            pack_listen: None,
            pack_allow: None,
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
        let lists = [
            ("allow", Some(&self.allow)),
            ("pack_allow", self.pack_allow.as_ref()),
        ];
        for (key, list) in lists {
            for (i, rule) in list.into_iter().flatten().enumerate() {
                if let Err(why) = crate::policy::HostPattern::parse(&rule.host) {
                    p.push(format!("{key}[{i}].host: {why}"));
                }
                if rule.ports.is_empty() {
                    p.push(format!(
                        "{key}[{i}].ports: empty; omit it for the default [443, 80]"
                    ));
                }
                if rule.ports.contains(&0) {
                    p.push(format!("{key}[{i}].ports: 0 is not a port"));
                }
            }
        }
        if let Some(addr) = self.pack_listen {
            if !addr.ip().is_loopback() {
                p.push(format!(
                    "pack_listen: {addr} is not a loopback address (only sidecar-init's relay may reach it)"
                ));
            }
        }
        if let Some(up) = &self.upstream {
            if crate::upstream::parse_host_port(up).is_none() {
                p.push(format!("upstream: {up:?} is not host:port"));
            }
        }
        for (i, file) in self.secret_files.iter().enumerate() {
            if let Err(err) = std::fs::read(file) {
                p.push(format!(
                    "secret_files[{i}]: cannot read {}: {err}",
                    file.display()
                ));
            }
        }
        if self.max_tunnels == 0 {
            p.push("max_tunnels: must be at least 1".into());
        }
        if self.tunnel_idle_timeout_secs == 0 || self.tunnel_max_lifetime_secs == 0 {
            p.push("tunnel_idle_timeout_secs/tunnel_max_lifetime_secs: must be at least 1".into());
        }
        if self.connect_timeout_secs == 0 {
            p.push("connect_timeout_secs: must be at least 1".into());
        }
        if !(0.0..=8.0).contains(&self.entropy_threshold) {
            p.push("entropy_threshold: must be between 0 and 8 bits per character".into());
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidecars_common::config::parse;

    #[test]
    fn defaults_and_null_upstream() {
        let c: Config = parse("{}", "t").unwrap();
        assert_eq!(c.upstream.as_deref(), Some("127.0.0.1:9099"));
        let c: Config =
            parse(r#"{"upstream": null, "allow": [{"host": "*.a.com"}]}"#, "t").unwrap();
        assert_eq!(c.upstream, None);
        assert_eq!(c.allow[0].ports, vec![443, 80]);
    }

    #[test]
    fn bad_fields_are_named() {
        let err = parse::<Config>(
            r#"{"allow": [{"host": "a.com"}, {"host": "a*.com", "ports": []}], "allow_cidrs": ["10.0.0.0/8"], "secret_files": ["/nonexistent"]}"#,
            "pipelock.json",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("allow[1].host"), "{err}");
        assert!(err.contains("allow[1].ports"), "{err}");
        assert!(err.contains("secret_files[0]"), "{err}");
        let err = parse::<Config>(r#"{"allow_cidrs": ["nope"]}"#, "p")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allow_cidrs[0]"), "{err}");
    }
}
