//! `dns.json`: where the responder listens, the bottle's names and their addresses, the TTL.
//!
//! ```json
//! {"listen": "0.0.0.0:53", "names": {"sidecars": ["10.213.0.2"]}, "ttl_s": 60}
//! ```
//!
//! Every key is optional. Names are matched case-insensitively, with or without the trailing
//! dot; each maps to one or more IPv4 (answered as `A`) and/or IPv6 (`AAAA`) addresses.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use sidecars_common::config::Validate;
use sidecars_common::daemon::DaemonConfig;

/// Most addresses one name may have (a UDP answer of this many `A` records still fits in 512
/// bytes; more would only ever be truncated).
pub const MAX_ADDRESSES_PER_NAME: usize = 16;
/// Most names one config may hold.
pub const MAX_NAMES: usize = 256;
/// Largest TTL accepted, in seconds (one day).
pub const MAX_TTL_S: u32 = 86_400;
/// Longest name in presentation form without the trailing dot (RFC 1035: 255 octets on the
/// wire).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// The responder's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The address served over both UDP and TCP.
    pub listen: SocketAddr,
    /// The bottle's names and their addresses. Every other name is refused.
    pub names: BTreeMap<String, Vec<IpAddr>>,
    /// TTL of every answer, in seconds.
    pub ttl_s: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], bottle_spec::DNS_PORT)),
            names: BTreeMap::new(),
            ttl_s: 60,
        }
    }
}

/// Why a configured name is not acceptable; the message completes `names.<name>: `.
pub fn name_problem(name: &str) -> Option<String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Some("a name must have at least one label".to_string());
    }
    if bare.len() > MAX_NAME_LEN {
        return Some(format!(
            "is {} characters long; the most is {MAX_NAME_LEN}",
            bare.len()
        ));
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Some("has an empty label (two dots in a row, or a leading dot)".to_string());
        }
        if label.len() > MAX_LABEL_LEN {
            return Some(format!(
                "has a label of {} characters; the most is {MAX_LABEL_LEN}",
                label.len()
            ));
        }
        if let Some(c) = label.chars().find(|c| !is_name_char(*c)) {
            return Some(format!(
                "contains {c:?}; names use letters, digits, '-' and '_' between dots"
            ));
        }
    }
    None
}

/// The characters of a configured label: what Docker allows in container and service names.
pub(crate) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// The lookup key of a configured name: lower case, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn address_problem(addr: &IpAddr) -> Option<&'static str> {
    let bad = match addr {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    bad.then_some("is not a host address (unspecified, multicast or broadcast)")
}

impl Validate for Config {
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.names.len() > MAX_NAMES {
            p.push(format!(
                "names: {} names; the most is {MAX_NAMES}",
                self.names.len()
            ));
        }
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for (name, addrs) in &self.names {
            if let Some(problem) = name_problem(name) {
                p.push(format!("names.{name}: {problem}"));
                continue;
            }
            if let Some(first) = seen.insert(normalize(name), name) {
                p.push(format!(
                    "names.{name}: the same name as {first:?} (names ignore case and the trailing dot)"
                ));
            }
            if addrs.is_empty() {
                p.push(format!("names.{name}: needs at least one address"));
            }
            if addrs.len() > MAX_ADDRESSES_PER_NAME {
                p.push(format!(
                    "names.{name}: {} addresses; the most is {MAX_ADDRESSES_PER_NAME}",
                    addrs.len()
                ));
            }
            for (i, addr) in addrs.iter().enumerate() {
                if let Some(problem) = address_problem(addr) {
                    p.push(format!("names.{name}[{i}]: {addr} {problem}"));
                }
                if addrs[..i].contains(addr) {
                    p.push(format!("names.{name}[{i}]: {addr} is listed twice"));
                }
            }
        }
        if self.ttl_s > MAX_TTL_S {
            p.push(format!(
                "ttl_s: {} is out of range (0 to {MAX_TTL_S})",
                self.ttl_s
            ));
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

    fn err(text: &str) -> String {
        parse::<Config>(text, "dns.json").unwrap_err().to_string()
    }

    #[test]
    fn the_documented_example_parses() {
        let c: Config = parse(
            r#"{"listen": "0.0.0.0:53", "names": {"sidecars": ["10.213.0.2"]}, "ttl_s": 60}"#,
            "dns.json",
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:53".parse().unwrap());
        assert_eq!(
            c.names["sidecars"],
            vec!["10.213.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(c.ttl_s, 60);
    }

    #[test]
    fn defaults_listen_on_the_contract_port_and_refuse_everything() {
        let c: Config = parse("", "dns.json").unwrap();
        assert_eq!(c.listen.port(), 53);
        assert!(c.names.is_empty());
        assert_eq!(c.ttl_s, 60);
    }

    #[test]
    fn a_bad_address_names_its_field() {
        let msg = err(r#"{"names": {"sidecars": ["10.213.0.2", "10.213.0.300"]}}"#);
        assert!(msg.contains("names.sidecars[1]"), "{msg}");
        let msg = err(r#"{"names": {"sidecars": ["0.0.0.0"]}}"#);
        assert!(
            msg.contains("names.sidecars[0]: 0.0.0.0 is not a host address"),
            "{msg}"
        );
        let msg = err(r#"{"names": {"sidecars": ["fd00::1", "fd00::1"]}}"#);
        assert!(
            msg.contains("names.sidecars[1]: fd00::1 is listed twice"),
            "{msg}"
        );
    }

    #[test]
    fn a_bad_name_is_named() {
        for (name, why) in [
            ("a..b", "empty label"),
            (".", "at least one label"),
            ("", "at least one label"),
            ("bad name", "contains ' '"),
            ("x\\u0000y", "contains '\\0'"),
        ] {
            let msg = err(&format!(r#"{{"names": {{"{name}": ["10.0.0.1"]}}}}"#));
            assert!(msg.contains("names."), "{name}: {msg}");
            assert!(msg.contains(why), "{name}: {msg}");
        }
        let long = "a".repeat(64);
        let msg = err(&format!(r#"{{"names": {{"{long}.b": ["10.0.0.1"]}}}}"#));
        assert!(msg.contains("label of 64 characters"), "{msg}");
    }

    #[test]
    fn names_that_differ_only_in_case_or_trailing_dot_collide() {
        let msg = err(r#"{"names": {"Sidecars": ["10.0.0.1"], "sidecars.": ["10.0.0.2"]}}"#);
        assert!(msg.contains("the same name as"), "{msg}");
    }

    #[test]
    fn a_name_needs_an_address_and_ttl_is_bounded_and_unknown_keys_are_named() {
        assert!(err(r#"{"names": {"sidecars": []}}"#)
            .contains("names.sidecars: needs at least one address"));
        assert!(err(r#"{"ttl_s": 86401}"#).contains("ttl_s: 86401"));
        assert!(err(r#"{"ttl": 5}"#).contains("ttl"));
        assert!(err(r#"{"listen": "nope"}"#).contains("listen"));
    }

    #[test]
    fn normalize_ignores_case_and_trailing_dot() {
        assert_eq!(normalize("SideCars."), "sidecars");
        assert_eq!(normalize("a.B"), "a.b");
    }
}
