//! `supervise.json`: where supervise listens and where its queue lives.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use sidecars_common::config::Validate;
use sidecars_common::daemon::DaemonConfig;

/// The daemon's configuration. Every key is optional; the defaults are the bundle's layout.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Agent-facing listener: MCP at `/mcp` and `/health`.
    pub listen: SocketAddr,
    /// Operator listener: events from sidecar-init and the approvals API. It must stay
    /// unreachable from the agent, hence loopback by default.
    pub operator_listen: SocketAddr,
    /// Directory of the durable queue (a volume, so approvals survive the container).
    pub queue_dir: PathBuf,
    /// Largest accepted request body on either listener, in bytes.
    pub max_body_bytes: usize,
    /// Upper bound for `wait_for_approval`'s `timeout_s`, so one call cannot hold a
    /// connection forever.
    pub max_wait_s: u64,
    /// Most MCP sessions kept at once; the least recently used is dropped beyond it (its
    /// client gets 404 and re-initialises, as the spec prescribes).
    pub max_sessions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9100)),
            operator_listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            queue_dir: PathBuf::from("/run/supervise/queue"),
            max_body_bytes: 1024 * 1024,
            max_wait_s: 600,
            max_sessions: 1024,
        }
    }
}

impl Validate for Config {
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.listen == self.operator_listen && self.listen.port() != 0 {
            p.push(format!(
                "operator_listen: {} is the same address as listen; the operator endpoint must not be reachable by the agent",
                self.operator_listen
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_body_bytes) {
            p.push(format!(
                "max_body_bytes: {} is out of range (1024 to 67108864)",
                self.max_body_bytes
            ));
        }
        if self.max_wait_s == 0 || self.max_wait_s > 3600 {
            p.push(format!(
                "max_wait_s: {} is out of range (1 to 3600)",
                self.max_wait_s
            ));
        }
        if self.max_sessions == 0 {
            p.push("max_sessions: must be at least 1".to_string());
        }
        if self.queue_dir.as_os_str().is_empty() {
            p.push("queue_dir: must not be empty".to_string());
        }
        p
    }
}

impl DaemonConfig for Config {
    fn listen(&self) -> SocketAddr {
        self.listen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidecars_common::config::parse;

    #[test]
    fn defaults_are_the_bundle_layout() {
        let c: Config = parse("", "supervise.json").unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.operator_listen, "127.0.0.1:9101".parse().unwrap());
        assert_eq!(c.queue_dir, PathBuf::from("/run/supervise/queue"));
    }

    #[test]
    fn operator_listener_may_not_equal_agent_listener() {
        let err = parse::<Config>(
            r#"{"listen":"0.0.0.0:9100","operator_listen":"0.0.0.0:9100"}"#,
            "supervise.json",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("operator_listen"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse::<Config>(r#"{"queue_dri":"/x"}"#, "supervise.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue_dri"), "{err}");
    }
}
