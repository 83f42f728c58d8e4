//! The compose model: typed structs for the subset of the compose specification a bottle
//! uses. Runtime backends consume this model (the compose CLI backend serializes it with
//! [`crate::yaml::to_yaml`]; an Engine API backend would create containers from it), so values
//! here are the real, unescaped values: `$` escaping is a property of the YAML output only.
//!
//! Maps are `BTreeMap`s so the output is deterministic (golden files).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Serialize, Serializer};

/// A compose project: what `docker compose -p <name> -f <file>` manages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Project {
    /// Project name (`<prefix>-<slug>`). Not written to the YAML: docker-compose v1 rejects a
    /// top-level `name:`, so runtimes pass it as `-p` (see docs/compose.md).
    #[serde(skip)]
    pub name: String,
    /// Services by name (`agent`, `sidecars`).
    pub services: BTreeMap<String, Service>,
    /// Networks by key (`<slug>-internal`, `<slug>-egress`).
    pub networks: BTreeMap<String, Network>,
    /// Named volumes by key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, Volume>,
}

/// One service (one container).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    /// Image reference.
    pub image: String,
    /// Fixed container name, so `docker logs bot-bottle-sidecars-<slug>` works.
    pub container_name: String,
    /// Host name inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Docker's init as PID 1 (signal forwarding, reaping) for commands that don't do it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Numeric `UID:GID` the container runs as.
    pub user: String,
    /// argv overriding the image's command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Environment variables.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// Networks the service is attached to, with per-network options.
    pub networks: BTreeMap<String, ServiceNetwork>,
    /// DNS servers of the container (Docker's embedded resolver forwards the names it does
    /// not know itself to these). The agent's is the bottle's own DNS responder.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// Published ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortBinding>,
    /// Bind and volume mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Mount>,
    /// tmpfs mounts, `PATH[:options]` (compose's short syntax, e.g.
    /// `/tmp:size=64m,mode=1777`; the Engine backend splits it at the first `:`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// Read-only root filesystem.
    pub read_only: bool,
    /// Capabilities dropped.
    pub cap_drop: Vec<String>,
    /// Capabilities added back after `cap_drop` (the sidecars container keeps
    /// `bottle_spec::INIT_CAPABILITIES` for sidecar-init).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Security options.
    pub security_opt: Vec<String>,
    /// Services this one waits for, with the condition.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, DependsOn>,
    /// Container healthcheck.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// SIGTERM → SIGKILL time at stop.
    pub stop_grace_period: String,
    /// CPU limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit (`512m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<String>,
    /// Most tasks (processes and threads) the container may have at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u32>,
}

/// Per-network options of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ServiceNetwork {
    /// Extra DNS names of the service on that network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Fixed address on that network (needs the network's [`Ipam`] subnet); none: Docker
    /// picks one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<Ipv4Addr>,
}

/// A published port: `host_ip:host_port:container_port`, host port ephemeral when `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortBinding {
    /// Host address to bind (loopback for bottles).
    pub host_ip: IpAddr,
    /// Host port; `None` lets Docker pick a free one.
    pub host_port: Option<u16>,
    /// Port inside the container.
    pub container_port: u16,
}

impl Serialize for PortBinding {
    /// The short syntax (`127.0.0.1::9000`): accepted by compose v1 and v2 alike.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let host_port = self.host_port.map(|p| p.to_string()).unwrap_or_default();
        s.serialize_str(&format!(
            "{}:{}:{}",
            self.host_ip, host_port, self.container_port
        ))
    }
}

/// A mount in the long syntax.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Mount {
    /// A host path (relative paths are relative to the compose file's directory).
    Bind {
        /// Host path.
        source: String,
        /// Path in the container.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
    /// A named volume of the project.
    Volume {
        /// Volume key in [`Project::volumes`].
        source: String,
        /// Path in the container.
        target: String,
        /// Mounted read-only.
        read_only: bool,
    },
}

/// `depends_on` entry in the long syntax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependsOn {
    /// `service_started`, `service_healthy`, ...
    pub condition: String,
}

/// A container healthcheck.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `["CMD", program, args...]`.
    pub test: Vec<String>,
    /// Time between checks.
    pub interval: String,
    /// Time one check may take.
    pub timeout: String,
    /// Consecutive failures before unhealthy.
    pub retries: u32,
    /// Failures during this time after start don't count.
    pub start_period: String,
}

/// A network of the project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Network {
    /// No route out of the host: containers on it reach only each other.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Driver options; the internal network's bridge gets a fixed name so the control plane
    /// can firewall it before it exists (see `render::internal_bridge_name`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Fixed addressing (the agent network's subnet, so the sidecars container can have a
    /// fixed address); none: Docker picks a subnet from its default pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipam: Option<Ipam>,
    /// Network labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A network's address management, compose's `ipam` (default driver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ipam {
    /// Address pools (a bottle uses one).
    pub config: Vec<IpamPool>,
}

/// One address pool of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpamPool {
    /// CIDR, `10.213.4.16/28`.
    pub subnet: String,
    /// The gateway address Docker reserves in it (first host).
    pub gateway: Ipv4Addr,
}

/// A named volume of the project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// Volume labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
