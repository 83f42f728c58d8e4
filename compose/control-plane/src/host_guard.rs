//! The host guard's second layer: a firewall rule that keeps the agent away from services on
//! the host.
//!
//! Docker's `internal: true` network stops traffic from being forwarded off the host, but a
//! packet addressed to one of the host's own addresses (the network's gateway, docker0, eth0…)
//! is delivered locally: an agent could reach any service listening on the host. The first
//! layer is in the rendered network itself: the host gets no address on the agent's bridge
//! ([`bottle_compose::render::INHIBIT_IPV4_OPTION`]), so there is nothing to talk to. This
//! second layer needs root and iptables on the Docker host: the renderer gives the internal
//! network's bridge a fixed name ([`bottle_compose::render::internal_bridge_name`]); before the
//! network is created, this module inserts `INPUT -i <bridge> -j DROP` for IPv4 and IPv6.
//! Traffic between the agent and the sidecars is bridged, never host input, so it is
//! unaffected. `down` removes the rules.
//!
//! `BOT_BOTTLE_HOST_GUARD` picks the [`Mode`]: `auto` (default: install the rule where
//! iptables works, else rely on the first layer and say so), `on` (refuse to start a bottle
//! without the rule), `off` (never touch the firewall).

use std::time::Duration;

use crate::runtime::command::{run, Finished};

/// Why the guard could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum HostGuardError {
    /// iptables failed or is missing.
    #[error(
        "cannot install the host guard for bridge {bridge} ({detail}); without it the agent can \
         reach services listening on this host if its network's bridge has a host address. Run \
         the control plane as root on a host with iptables, or set BOT_BOTTLE_HOST_GUARD=auto to \
         rely on the bridge having no host address"
    )]
    Install {
        /// The bridge interface the rule is for.
        bridge: String,
        /// What iptables said.
        detail: String,
    },
}

/// How the firewall layer is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Install the rule when iptables works; otherwise a note, and the bridge without a host
    /// address is the only layer (the distroless control-plane image has no iptables).
    Auto,
    /// The rule is required: `up` fails when it cannot be installed.
    Required,
    /// Never touch the firewall.
    Off,
}

impl Mode {
    /// From `BOT_BOTTLE_HOST_GUARD` (`auto`, `on`, `off`; unset or empty = `auto`).
    pub fn parse(value: Option<&str>) -> Result<Mode, String> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("auto") => Ok(Mode::Auto),
            Some("on") | Some("required") => Ok(Mode::Required),
            Some("off") => Ok(Mode::Off),
            Some(other) => Err(format!(
                "BOT_BOTTLE_HOST_GUARD={other:?}: use auto (default), on, or off"
            )),
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(15);
/// Both address families; the agent's network may get IPv6.
const TOOLS: [&str; 2] = ["iptables", "ip6tables"];

fn rule(bridge: &str) -> Vec<String> {
    ["INPUT", "-i", bridge, "-j", "DROP"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

async fn iptables(tool: &str, op: &str, bridge: &str) -> Option<Finished> {
    let mut argv = vec![tool.to_string(), "-w".to_string(), op.to_string()];
    argv.extend(rule(bridge));
    run(&argv, None, TIMEOUT).await.ok()
}

/// Drop host-bound input from `bridge` (idempotent). IPv4 is required; IPv6 is best effort
/// (hosts without ip6tables have no IPv6 path to protect).
pub async fn install(bridge: &str) -> Result<(), HostGuardError> {
    for tool in TOOLS {
        let present = iptables(tool, "-C", bridge)
            .await
            .is_some_and(|o| o.code == Some(0));
        if present {
            continue;
        }
        let inserted = iptables(tool, "-I", bridge).await;
        match inserted {
            Some(o) if o.code == Some(0) => {
                tracing::info!(%bridge, tool, "host guard installed");
            }
            other if tool == "iptables" => {
                let detail = other
                    .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "iptables not found".to_string());
                return Err(HostGuardError::Install {
                    bridge: bridge.to_string(),
                    detail,
                });
            }
            _ => tracing::warn!(%bridge, "ip6tables unavailable: IPv6 host input not guarded"),
        }
    }
    Ok(())
}

/// Remove the rules (every copy; idempotent, never fails: a leftover DROP for a bridge that no
/// longer exists matches nothing).
pub async fn remove(bridge: &str) {
    for tool in TOOLS {
        for _ in 0..8 {
            match iptables(tool, "-D", bridge).await {
                Some(o) if o.code == Some(0) => continue,
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_bad_values_say_what_to_use() {
        assert_eq!(Mode::parse(None), Ok(Mode::Auto));
        assert_eq!(Mode::parse(Some("")), Ok(Mode::Auto));
        assert_eq!(Mode::parse(Some("ON")), Ok(Mode::Required));
        assert_eq!(Mode::parse(Some("off")), Ok(Mode::Off));
        assert!(Mode::parse(Some("maybe")).unwrap_err().contains("auto"));
    }
}
