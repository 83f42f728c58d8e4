//! The SSRF address policy both proxies apply to every address they connect to.
//!
//! An agent must not reach the sidecars' own ports, the host, the cloud metadata service or the
//! operator's private network through the proxy chain. So pipelock and egress resolve names
//! themselves, refuse any address in a non-public range, and connect to exactly the address
//! they checked (no second lookup, so no DNS-rebinding window).
//!
//! Host strings are parsed the way `inet_aton` and browsers do before any lookup, so odd
//! spellings of an IPv4 address (`0x7f.1`, `2130706433`, `017700000001`, `127.1`) are seen as
//! the address they name; a numeric-looking host that is not a valid address is refused rather
//! than handed to the resolver (which might read it differently).
//!
//! Tests and sidecar-internal hops opt back in to specific ranges with `allow_cidrs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use ipnet::IpNet;

/// Why an address or host was refused. The message is the operator-facing reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// A literal address (or one the name resolved to) is in a forbidden range.
    #[error("{shown} is {reason}")]
    Forbidden {
        /// The host as the client wrote it, with the address when it differs
        /// (`localhost resolves to 127.0.0.1`).
        shown: String,
        /// The range's description, e.g. `loopback`.
        reason: &'static str,
    },
    /// The host looks numeric but is not a valid address: refused, never resolved.
    #[error("{0} is a malformed IP literal")]
    Malformed(String),
    /// The name did not resolve (or resolved to nothing).
    #[error("cannot resolve {host}: {message}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's message.
        message: String,
    },
}

/// Which addresses may be connected to: everything public, plus the explicit exceptions.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// A policy that refuses every non-public address except those inside `allow_cidrs`.
    pub fn new(allow_cidrs: Vec<IpNet>) -> Self {
        AddressPolicy { allow: allow_cidrs }
    }

    /// `Ok` if `ip` may be connected to; otherwise the range it falls in.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match forbidden_reason(ip) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// Resolve `host` (a name or any spelling of an address) and check every address it
    /// yields. All must pass: a name that resolves to a public and a loopback address is
    /// refused, since the caller could otherwise be steered to either.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, SsrfError> {
        let host = normalize_host(host);
        match parse_ip_literal(&host) {
            Literal::Ip(ip) => {
                self.check_ip(ip).map_err(|reason| SsrfError::Forbidden {
                    shown: show_literal(&host, ip),
                    reason,
                })?;
                return Ok(vec![SocketAddr::new(ip, port)]);
            }
            Literal::Malformed => return Err(SsrfError::Malformed(host)),
            Literal::Name => {}
        }
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|err| SsrfError::Resolve {
                host: host.clone(),
                message: err.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(SsrfError::Resolve {
                host,
                message: "no addresses".into(),
            });
        }
        // IPv4 first: containers often have no IPv6 route, and callers try addresses in order.
        addrs.sort_by_key(|a| a.is_ipv6());
        addrs.dedup();
        for addr in &addrs {
            self.check_ip(addr.ip())
                .map_err(|reason| SsrfError::Forbidden {
                    shown: format!("{host} resolves to {}", addr.ip()),
                    reason,
                })?;
        }
        Ok(addrs)
    }
}

fn show_literal(host: &str, ip: IpAddr) -> String {
    let canonical = ip.to_string();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare == canonical {
        canonical
    } else {
        format!("{host} ({canonical})")
    }
}

/// Lower-case, strip a trailing dot, keep IPv6 brackets off: the form host rules and the
/// resolver see.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    match h.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        Some(inner) => inner.to_string(),
        None => h,
    }
}

/// What a host string is, before any resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Literal {
    /// An address in some spelling.
    Ip(IpAddr),
    /// Numeric-looking but invalid (`1.2.3.4.5`, `999.1.1.1`, `0x1g`): never resolve it.
    Malformed,
    /// A DNS name.
    Name,
}

/// Classify a (normalized) host: IPv6 literal, IPv4 in any `inet_aton` spelling (1–4 parts,
/// each decimal, `0x` hex or `0` octal, the last part filling the remaining bytes), or a name.
/// Like the WHATWG URL parser, a host whose last label is numeric is an IPv4 attempt.
pub fn parse_ip_literal(host: &str) -> Literal {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        // Zone ids (`fe80::1%eth0`) are refused as malformed: there is no reason to use one.
        return match host.parse::<Ipv6Addr>() {
            Ok(ip) => Literal::Ip(IpAddr::V6(ip)),
            Err(_) => Literal::Malformed,
        };
    }
    let last = host.rsplit('.').next().unwrap_or("");
    let numeric_last = !last.is_empty()
        && (last.bytes().all(|b| b.is_ascii_digit())
            || ((last.starts_with("0x") || last.starts_with("0X"))
                && last[2..].bytes().all(|b| b.is_ascii_hexdigit())));
    if !numeric_last {
        return Literal::Name;
    }
    match parse_inet_aton(host) {
        Some(ip) => Literal::Ip(IpAddr::V4(ip)),
        None => Literal::Malformed,
    }
}

fn parse_inet_aton(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for part in &parts {
        nums.push(parse_aton_part(part)?);
    }
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    let last_bits = 8 * (4 - init.len() as u32);
    if last_bits < 32 && *last >= (1u64 << last_bits) || *last > u32::MAX as u64 {
        return None;
    }
    let mut value: u32 = 0;
    for (i, &n) in init.iter().enumerate() {
        value |= (n as u32) << (24 - 8 * i as u32);
    }
    value |= *last as u32;
    Some(Ipv4Addr::from(value))
}

fn parse_aton_part(part: &str) -> Option<u64> {
    if part.is_empty() || part.len() > 12 {
        return None;
    }
    if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        if hex.is_empty() {
            return Some(0);
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if part.len() > 1 && part.starts_with('0') {
        return u64::from_str_radix(&part[1..], 8).ok();
    }
    part.parse().ok()
}

/// The forbidden range `ip` falls in, or `None` for a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([169, 254, 169, 254], 32, "the cloud metadata address"),
        ([255, 255, 255, 255], 32, "the broadcast address"),
        ([0, 0, 0, 0], 8, "unspecified (0.0.0.0/8)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([10, 0, 0, 0], 8, "private (RFC 1918)"),
        ([172, 16, 0, 0], 12, "private (RFC 1918)"),
        ([192, 168, 0, 0], 16, "private (RFC 1918)"),
        ([169, 254, 0, 0], 16, "link-local"),
        (
            [100, 64, 0, 0],
            10,
            "shared address space (CGNAT, RFC 6598)",
        ),
        ([192, 0, 0, 0], 24, "reserved (IETF protocol assignments)"),
        ([192, 0, 2, 0], 24, "reserved (documentation)"),
        ([198, 51, 100, 0], 24, "reserved (documentation)"),
        ([203, 0, 113, 0], 24, "reserved (documentation)"),
        ([198, 18, 0, 0], 15, "reserved (benchmarking)"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved (240.0.0.0/4)"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("the cloud metadata address");
    }
    if s[0..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some("an IPv4-mapped IPv6 address");
    }
    if s[0..6] == [0, 0, 0, 0, 0, 0] {
        return Some("an IPv4-compatible IPv6 address");
    }
    if s[0..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0 {
        return Some("an IPv4-translated IPv6 address");
    }
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        return Some("a NAT64 address");
    }
    if s[0] == 0x2002 {
        return Some("a 6to4 address");
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some("a Teredo address");
    }
    if s[0] == 0x2001 && s[1] == 0xdb8 {
        return Some("reserved (documentation)");
    }
    if s[0] == 0x100 && s[1..4] == [0, 0, 0] {
        return Some("reserved (discard prefix)");
    }
    if s[0] & 0xfe00 == 0xfc00 {
        return Some("unique local (fc00::/7)");
    }
    if s[0] & 0xffc0 == 0xfe80 {
        return Some("link-local");
    }
    if s[0] & 0xffc0 == 0xfec0 {
        return Some("site-local");
    }
    if s[0] & 0xff00 == 0xff00 {
        return Some("multicast");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Literal {
        parse_ip_literal(&normalize_host(s))
    }

    #[test]
    fn odd_ipv4_spellings_parse_to_loopback() {
        let lo = Literal::Ip(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        for s in [
            "127.0.0.1",
            "0x7f.1",
            "2130706433",
            "017700000001",
            "127.1",
            "0177.0.0.1",
            "0x7f000001",
            "127.0.1",
            "0x7F.0.0.1",
            "127.0.0.1.",
        ] {
            assert_eq!(lit(s), lo, "{s}");
        }
    }

    #[test]
    fn malformed_numeric_hosts_are_not_names() {
        for s in [
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.256",
            "08.1.1.1",
            "1.2.3.0x",
            "fe80::1%eth0",
        ] {
            assert_ne!(lit(s), Literal::Name, "{s}");
        }
        assert_eq!(
            lit("1.2.3.0x"),
            Literal::Ip(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 0)))
        );
        assert_eq!(lit("example.com"), Literal::Name);
        assert_eq!(lit("1.example.com"), Literal::Name);
        assert_eq!(lit("xn--80ak6aa92e.com"), Literal::Name);
    }

    #[test]
    fn ranges() {
        let policy = AddressPolicy::default();
        for s in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "2002:7f00:1::",
            "240.0.0.1",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert!(policy.check_ip(ip).is_err(), "{s} should be refused");
        }
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "2606:4700::1111",
            "100.128.0.1",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            assert!(policy.check_ip(ip).is_ok(), "{s} should be allowed");
        }
    }

    #[test]
    fn allow_cidrs_reopen_only_their_range() {
        let policy = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(policy.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(policy
            .check_ip("::ffff:127.0.0.1".parse().unwrap())
            .is_err());
        assert!(policy.check_ip("10.0.0.1".parse().unwrap()).is_err());
    }

    #[tokio::test]
    async fn resolve_checks_names_and_literals() {
        let policy = AddressPolicy::default();
        let err = policy.resolve("localhost", 80).await.unwrap_err();
        assert!(err.to_string().contains("localhost resolves to"), "{err}");
        let err = policy.resolve("0x7f.1", 80).await.unwrap_err();
        assert_eq!(err.to_string(), "0x7f.1 (127.0.0.1) is loopback");
        let err = policy.resolve("[::1]", 80).await.unwrap_err();
        assert_eq!(err.to_string(), "::1 is loopback");
        let ok = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()])
            .resolve("127.0.0.1", 8)
            .await
            .unwrap();
        assert_eq!(ok, vec!["127.0.0.1:8".parse().unwrap()]);
    }
}
