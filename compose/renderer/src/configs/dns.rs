//! `dns.json`: the bottle's DNS responder (always running, not a manifest daemon): the
//! agent's only resolver. It answers the bottle's own names and refuses every other one
//! without forwarding it (docs/security.md, "DNS"). The shape is the dns daemon's config
//! (`listen`, `names`, `ttl_s`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::render::SIDECARS;

/// TTL of every answer, seconds.
pub const TTL_S: u32 = 60;

/// The DNS responder's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsConfig {
    /// All interfaces, port 53 (UDP and TCP): the agent reaches it at the sidecars
    /// container's fixed address on the agent network.
    pub listen: String,
    /// Name → its IPv4 addresses (`sidecars` → the container's fixed address).
    pub names: BTreeMap<String, Vec<Ipv4Addr>>,
    /// TTL of the answers, seconds.
    pub ttl_s: u32,
}

/// Render `dns.json` for a bottle whose sidecars container has `sidecars_ip` on the agent
/// network.
pub fn render(sidecars_ip: Ipv4Addr) -> serde_json::Value {
    let config = DnsConfig {
        listen: format!("0.0.0.0:{}", bottle_spec::DNS_PORT),
        names: BTreeMap::from([(SIDECARS.to_string(), vec![sidecars_ip])]),
        ttl_s: TTL_S,
    };
    serde_json::to_value(config).unwrap_or_default()
}
