//! The operator listener's facts: where it binds (`operator_listen`, including
//! `default-route:PORT`) and the bearer token that guards it (`operator_token_file`).
//!
//! Why `default-route:`: in the sidecars container the default route is on the egress network
//! (the agent's network is `internal: true`, without a gateway). Docker DNATs published ports
//! to that network's address, and the agent has no route to it — so a listener bound there is
//! reachable from the host's published loopback port but not from the agent.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The kernel's IPv4 route table.
pub const ROUTE_TABLE: &str = "/proc/net/route";
/// Shortest accepted operator token, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest accepted operator token, in bytes (it travels in a header).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The `operator_listen` prefix that binds on the default route's interface.
pub const DEFAULT_ROUTE_PREFIX: &str = "default-route:";

/// `operator_listen`: a socket address, or `default-route:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum OperatorListen {
    /// Bind exactly this address.
    Addr(SocketAddr),
    /// Bind `PORT` on the IPv4 address of the interface carrying the default route.
    DefaultRoute(u16),
}

impl TryFrom<String> for OperatorListen {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if let Some(port) = text.strip_prefix(DEFAULT_ROUTE_PREFIX) {
            return port
                .parse()
                .map(OperatorListen::DefaultRoute)
                .map_err(|_| format!("`{text}`: `{port}` is not a port number (0 to 65535)"));
        }
        text.parse().map(OperatorListen::Addr).map_err(|_| {
            format!(
                "`{text}` is neither a socket address (`127.0.0.1:9001`) nor `default-route:PORT`"
            )
        })
    }
}

impl fmt::Display for OperatorListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperatorListen::Addr(a) => write!(f, "{a}"),
            OperatorListen::DefaultRoute(p) => write!(f, "{DEFAULT_ROUTE_PREFIX}{p}"),
        }
    }
}

impl OperatorListen {
    /// The port asked for.
    pub fn port(&self) -> u16 {
        match self {
            OperatorListen::Addr(a) => a.port(),
            OperatorListen::DefaultRoute(p) => *p,
        }
    }

    /// The address to bind: as written, or resolved from this machine's default route.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        match *self {
            OperatorListen::Addr(a) => Ok(a),
            OperatorListen::DefaultRoute(port) => {
                let ip = default_route_ipv4()?;
                Ok(SocketAddr::new(IpAddr::V4(ip), port))
            }
        }
    }
}

/// The default route of an IPv4 route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    /// The interface carrying it.
    pub iface: String,
    /// Its gateway (used to pick the interface's address on the gateway's subnet).
    pub gateway: Ipv4Addr,
}

/// The default route (destination and mask `00000000`, flag `RTF_UP`; the lowest metric if
/// several) in the text of `/proc/net/route`. `None` if there is none.
pub fn parse_default_route(table: &str) -> Result<Option<DefaultRoute>, String> {
    const RTF_UP: u32 = 0x1;
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("the route table is empty")?
        .split_whitespace()
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("the route table has no `{name}` column"))
    };
    let (iface, dest, gw, flags, metric, mask) = (
        col("Iface")?,
        col("Destination")?,
        col("Gateway")?,
        col("Flags")?,
        col("Metric")?,
        col("Mask")?,
    );
    let hex = |s: &str| u32::from_str_radix(s, 16).map_err(|_| format!("`{s}` is not hex"));
    let mut best: Option<(u32, DefaultRoute)> = None;
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let field = |i: usize| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| format!("short route table line `{line}`"))
        };
        if hex(field(dest)?)? != 0 || hex(field(mask)?)? != 0 {
            continue;
        }
        if hex(field(flags)?)? & RTF_UP == 0 {
            continue;
        }
        let metric: u32 = field(metric)?
            .parse()
            .map_err(|_| format!("bad metric in `{line}`"))?;
        // The kernel prints the network-order address as a native u32 (`%08X`): its native
        // bytes are the address (`010200C0` is 192.0.2.1 on a little-endian machine).
        let gateway = Ipv4Addr::from(hex(field(gw)?)?.to_ne_bytes());
        let route = DefaultRoute {
            iface: field(iface)?.to_string(),
            gateway,
        };
        if best.as_ref().is_none_or(|(m, _)| metric < *m) {
            best = Some((metric, route));
        }
    }
    Ok(best.map(|(_, r)| r))
}

/// The IPv4 address of the interface carrying this machine's default route.
pub fn default_route_ipv4() -> Result<Ipv4Addr, String> {
    let table = std::fs::read_to_string(ROUTE_TABLE)
        .map_err(|e| format!("cannot read {ROUTE_TABLE}: {e}"))?;
    let route = parse_default_route(&table)
        .map_err(|e| format!("cannot parse {ROUTE_TABLE}: {e}"))?
        .ok_or_else(|| {
            format!(
                "there is no default route ({ROUTE_TABLE} has no 00000000 destination): the \
                 container is on no network with a gateway; attach the egress network or give \
                 an explicit address"
            )
        })?;
    interface_ipv4(&route)
}

/// The IPv4 address of `route.iface`: the one on the gateway's subnet, else the first.
fn interface_ipv4(route: &DefaultRoute) -> Result<Ipv4Addr, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("getifaddrs: {e}"))?;
    let mut first = None;
    for ifa in addrs.filter(|a| a.interface_name == route.iface) {
        let Some(ip) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|a| a.ip())
        else {
            continue;
        };
        let mask = ifa
            .netmask
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map_or(0, |m| u32::from(m.ip()));
        if u32::from(ip) & mask == u32::from(route.gateway) & mask {
            return Ok(ip);
        }
        first.get_or_insert(ip);
    }
    first.ok_or_else(|| {
        format!(
            "the default route's interface `{}` has no IPv4 address",
            route.iface
        )
    })
}

/// The operator's bearer token. Only its SHA-256 is kept; `Debug` never shows it.
#[derive(Clone)]
pub struct OperatorToken {
    digest: [u8; 32],
}

impl fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OperatorToken(<redacted>)")
    }
}

impl OperatorToken {
    /// Read the token from `path` (one trailing newline is dropped). Errors describe the
    /// problem without the token's bytes.
    pub fn read(path: &Path) -> Result<OperatorToken, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let token = bytes
            .strip_suffix(b"\r\n")
            .or_else(|| bytes.strip_suffix(b"\n"))
            .unwrap_or(&bytes);
        if token.len() < MIN_TOKEN_BYTES {
            return Err(format!(
                "the token in {} is {} bytes; at least {MIN_TOKEN_BYTES} are required",
                path.display(),
                token.len()
            ));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "the token in {} is longer than {MAX_TOKEN_BYTES} bytes",
                path.display()
            ));
        }
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "the token in {} holds whitespace or non-printable bytes; it must be printable \
                 ASCII (it is sent as `Authorization: Bearer <token>`)",
                path.display()
            ));
        }
        Ok(OperatorToken {
            digest: Sha256::digest(token).into(),
        })
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let other: [u8; 32] = Sha256::digest(presented).into();
        let diff = self
            .digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    /// Whether an `Authorization` header value is `Bearer <token>` (scheme case-insensitive).
    pub fn authorizes(&self, header: &[u8]) -> bool {
        let Some(space) = header.iter().position(|b| *b == b' ') else {
            return false;
        };
        let (scheme, rest) = header.split_at(space);
        let credentials = trim_spaces(rest);
        scheme.eq_ignore_ascii_case(b"bearer") && self.matches(credentials)
    }
}

fn trim_spaces(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| *c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|c| *c != b' ').map_or(start, |i| i + 1);
    &b[start..end]
}

/// The operator listener as the config describes it, checked: where to bind and the token.
#[derive(Debug, Clone)]
pub struct OperatorSettings {
    /// The address to bind (resolved).
    pub addr: SocketAddr,
    /// As written in the config, for logs.
    pub listen: OperatorListen,
    /// The token file.
    pub token_file: PathBuf,
    /// The token.
    pub token: OperatorToken,
}

/// Check and resolve `operator_listen` + `operator_token_file`: `Ok(None)` when there is no
/// operator listener; otherwise every problem, each starting with the field it is about.
pub fn settings(
    listen: Option<&OperatorListen>,
    token_file: Option<&Path>,
) -> Result<Option<OperatorSettings>, Vec<String>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let mut problems = Vec::new();
    let addr = listen
        .resolve()
        .map_err(|e| problems.push(format!("operator_listen: `{listen}`: {e}")))
        .ok();
    let token = match token_file {
        None => {
            problems.push(
                "operator_token_file: required when operator_listen is set (the file holding \
                 the operator's bearer token)"
                    .to_string(),
            );
            None
        }
        Some(path) => OperatorToken::read(path)
            .map_err(|e| problems.push(format!("operator_token_file: {e}")))
            .ok(),
    };
    match (addr, token, token_file) {
        (Some(addr), Some(token), Some(path)) if problems.is_empty() => {
            Ok(Some(OperatorSettings {
                addr,
                listen: *listen,
                token_file: path.to_path_buf(),
                token,
            }))
        }
        _ => Err(problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t0000D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t010011AC\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth2\t00000000\t0100A8C0\t0003\t0\t0\t5\t00000000\t0\t0\t0
eth3\t00000000\t0100000A\t0002\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
";

    #[test]
    fn route_table_default_route_lowest_metric_and_up() {
        let r = parse_default_route(SAMPLE).unwrap().unwrap();
        // eth3 has the lowest metric but is not up; eth2 beats eth0 on metric.
        assert_eq!(r.iface, "eth2");
        if cfg!(target_endian = "little") {
            assert_eq!(r.gateway, Ipv4Addr::new(192, 168, 0, 1));
        }
    }

    #[test]
    fn route_table_without_default_route() {
        let internal_only = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t0000D50A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
        assert_eq!(parse_default_route(internal_only).unwrap(), None);
        assert!(parse_default_route("").is_err());
        assert!(parse_default_route("Iface Destination\n").is_err());
    }

    #[test]
    fn real_default_route_lookup() {
        let table = std::fs::read_to_string(ROUTE_TABLE).unwrap();
        match parse_default_route(&table).unwrap() {
            Some(route) => {
                let ip = default_route_ipv4().unwrap();
                assert!(!ip.is_unspecified() && !ip.is_loopback(), "{ip}");
                let on_iface = nix::ifaddrs::getifaddrs()
                    .unwrap()
                    .filter(|a| a.interface_name == route.iface)
                    .any(|a| {
                        a.address.and_then(|a| a.as_sockaddr_in().map(|s| s.ip())) == Some(ip)
                    });
                assert!(on_iface, "{ip} is not an address of {}", route.iface);
            }
            None => {
                let e = default_route_ipv4().unwrap_err();
                assert!(e.contains("no default route"), "{e}");
            }
        }
    }

    #[test]
    fn operator_listen_forms() {
        let p = |s: &str| OperatorListen::try_from(s.to_string());
        assert_eq!(
            p("127.0.0.1:9001").unwrap(),
            OperatorListen::Addr("127.0.0.1:9001".parse().unwrap())
        );
        assert_eq!(
            p("default-route:9001").unwrap(),
            OperatorListen::DefaultRoute(9001)
        );
        assert_eq!(
            p("default-route:9001").unwrap().to_string(),
            "default-route:9001"
        );
        assert!(p("default-route:").unwrap_err().contains("port"));
        assert!(p("default-route:70000").is_err());
        assert!(p("localhost:9001")
            .unwrap_err()
            .contains("default-route:PORT"));
    }

    #[test]
    fn token_rules() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, data: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, data).unwrap();
            path
        };
        let good = OperatorToken::read(&write("good", b"0123456789abcdef\n")).unwrap();
        assert!(good.matches(b"0123456789abcdef"));
        assert!(!good.matches(b"0123456789abcdef\n"));
        assert!(!good.matches(b"0123456789abcde"));
        assert!(good.authorizes(b"Bearer 0123456789abcdef"));
        assert!(good.authorizes(b"bearer  0123456789abcdef"));
        assert!(!good.authorizes(b"Basic 0123456789abcdef"));
        assert!(!good.authorizes(b"Bearer0123456789abcdef"));
        assert!(!good.authorizes(b"0123456789abcdef"));
        assert_eq!(format!("{good:?}"), "OperatorToken(<redacted>)");
        assert!(OperatorToken::read(&write("crlf", b"0123456789abcdef\r\n"))
            .unwrap()
            .matches(b"0123456789abcdef"));
        let short = OperatorToken::read(&write("short", b"tooshort-token\n")).unwrap_err();
        assert!(
            short.contains("14 bytes") && !short.contains("tooshort"),
            "{short}"
        );
        let spaced = OperatorToken::read(&write("spaced", b"0123456789 abcdef")).unwrap_err();
        assert!(spaced.contains("printable"), "{spaced}");
        let missing = OperatorToken::read(&dir.path().join("nope")).unwrap_err();
        assert!(missing.contains("cannot read"), "{missing}");
    }
}
