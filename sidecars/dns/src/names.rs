//! The bottle's names: the lookup table built from the config, and the only rendering of a
//! *queried* name that may reach a log line.
//!
//! A refused name is attacker-controlled data: `<hex-secret>.attacker.example` is the classic
//! DNS exfiltration query. So nothing but [`log_tail`] (the last two labels, each shown only
//! if it is short and plain) and the name's length and label count is ever logged for it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

use crate::config::{self, Config};

/// Longest label [`log_tail`] shows as text; a longer one is shown as its length only (a
/// secret fits in one label of the last two as well, e.g. `<secret>.example`).
pub const MAX_LOGGED_LABEL: usize = 20;

/// The addresses of one name, by family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    /// Answered to `A` queries.
    pub v4: Vec<Ipv4Addr>,
    /// Answered to `AAAA` queries.
    pub v6: Vec<Ipv6Addr>,
}

/// The bottle's names, keyed by [`key_of`] (lower case, no trailing dot).
#[derive(Debug, Clone, Default)]
pub struct Names {
    map: HashMap<String, Addresses>,
}

impl Names {
    /// The table of a validated config.
    pub fn from_config(config: &Config) -> Names {
        let mut map: HashMap<String, Addresses> = HashMap::new();
        for (name, addrs) in &config.names {
            let entry = map.entry(config::normalize(name)).or_default();
            for addr in addrs {
                match addr {
                    IpAddr::V4(v4) if !entry.v4.contains(v4) => entry.v4.push(*v4),
                    IpAddr::V6(v6) if !entry.v6.contains(v6) => entry.v6.push(*v6),
                    _ => {}
                }
            }
        }
        Names { map }
    }

    /// The addresses of `name` if it is one of the bottle's names.
    pub fn lookup(&self, name: &Name) -> Option<&Addresses> {
        self.map.get(&key_of(name)?)
    }

    /// The configured names (their keys), sorted.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.map.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }
}

/// The lookup key of a queried name: its labels in lower case joined by dots, or `None` if a
/// label holds a byte no configured name can contain (so it cannot match, and is not
/// rendered at all).
pub fn key_of(name: &Name) -> Option<String> {
    let mut key = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if label.is_empty() || !label.iter().all(|b| config::is_name_char(char::from(*b))) {
            return None;
        }
        if i > 0 {
            key.push('.');
        }
        key.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    (!key.is_empty()).then_some(key)
}

/// Length of the name in presentation form without the trailing dot (labels and the dots
/// between them), as logged.
pub fn presentation_len(name: &Name) -> usize {
    let (labels, bytes) = name.iter().fold((0usize, 0usize), |(n, len), label| {
        (n + 1, len + label.len())
    });
    bytes + labels.saturating_sub(1)
}

/// Number of labels (the root name has none).
pub fn label_count(name: &Name) -> usize {
    name.iter().count()
}

/// The last two labels of `name`, safe to log: each in lower case if it is at most
/// [`MAX_LOGGED_LABEL`] bytes of letters, digits, `-` and `_`, otherwise `<N bytes>`. The root
/// name is `.`.
pub fn log_tail(name: &Name) -> String {
    let mut tail: Vec<String> = name.iter().rev().take(2).map(safe_label).collect();
    if tail.is_empty() {
        return ".".to_string();
    }
    tail.reverse();
    tail.join(".")
}

fn safe_label(label: &[u8]) -> String {
    let plain = label.len() <= MAX_LOGGED_LABEL
        && label.iter().all(|b| config::is_name_char(char::from(*b)));
    if plain {
        label
            .iter()
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect()
    } else {
        format!("<{} bytes>", label.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidecars_common::config::parse;

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    #[test]
    fn lookup_ignores_case_and_the_trailing_dot() {
        let config: Config = parse(
            r#"{"names": {"Sidecars.": ["10.213.0.2", "fd00::2"], "git.bottle": ["10.213.0.3"]}}"#,
            "dns.json",
        )
        .unwrap();
        let names = Names::from_config(&config);
        for q in ["sidecars", "sidecars.", "SIDECARS.", "SideCars"] {
            let got = names.lookup(&name(q)).expect(q);
            assert_eq!(got.v4, vec![Ipv4Addr::new(10, 213, 0, 2)]);
            assert_eq!(got.v6, vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]);
        }
        assert!(names.lookup(&name("GIT.Bottle.")).is_some());
        assert!(names.lookup(&name("bottle")).is_none());
        assert!(names.lookup(&name("x.sidecars")).is_none());
        assert!(names.lookup(&Name::root()).is_none());
        assert_eq!(names.keys(), vec!["git.bottle", "sidecars"]);
    }

    #[test]
    fn a_label_with_odd_bytes_matches_nothing() {
        let odd = Name::from_labels(vec![b"side\0cars".to_vec()]).unwrap();
        assert_eq!(key_of(&odd), None);
        let dotted = Name::from_labels(vec![b"a.b".to_vec()]).unwrap();
        assert_eq!(key_of(&dotted), None);
    }

    #[test]
    fn the_log_tail_is_the_last_two_short_plain_labels() {
        let secret = "6b65793d73757065727365637265740a";
        let q = name(&format!("{secret}.more.Attacker.Example."));
        assert_eq!(log_tail(&q), "attacker.example");
        assert_eq!(
            presentation_len(&q),
            secret.len() + ".more.attacker.example".len()
        );
        assert_eq!(label_count(&q), 4);
        // A secret in one of the last two labels is not shown either.
        assert_eq!(
            log_tail(&name(&format!("{secret}.example"))),
            "<32 bytes>.example"
        );
        let binary = Name::from_labels(vec![b"x".to_vec(), b"\x01\xff".to_vec()]).unwrap();
        assert_eq!(log_tail(&binary), "x.<2 bytes>");
        assert_eq!(log_tail(&name("localhost")), "localhost");
        assert_eq!(log_tail(&Name::root()), ".");
        assert_eq!(presentation_len(&Name::root()), 0);
    }
}
