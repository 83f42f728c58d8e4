//! The compiled policy: the allowlist, the SSRF address policy and the DLP scanner, built from
//! a [`Config`] once (at start and on each reload) and then shared read-only by every request.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use scanner::{values_from_text, Scanner, SecretConfig};
use sidecars_common::proxy::TunnelLimits;
use sidecars_common::ssrf::AddressPolicy;

use crate::config::Config;

/// One allowlist host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host (the SSRF guard still applies).
    Any,
    /// `example.com`: exactly this host.
    Exact(String),
    /// `*.example.com`: any subdomain of `example.com` (stored as `.example.com`).
    Suffix(String),
}

impl HostPattern {
    /// Parse a pattern; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<HostPattern, String> {
        let p = sidecars_common::ssrf::normalize_host(pattern);
        if p == "*" {
            return Ok(HostPattern::Any);
        }
        let (suffix, rest) = match p.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        let valid = !rest.is_empty()
            && rest.len() <= 253
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b))
            && !rest.starts_with('.')
            && !rest.contains("..");
        if !valid {
            return Err(format!(
                "{pattern:?} is not a host pattern (use example.com, *.example.com or *)"
            ));
        }
        Ok(if suffix {
            HostPattern::Suffix(format!(".{rest}"))
        } else {
            HostPattern::Exact(rest.to_string())
        })
    }

    /// Whether a normalized host matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// Everything a request is checked against. Replaced whole on reload.
#[derive(Debug)]
pub struct Policy {
    /// Allowed (host pattern, ports) pairs.
    pub allow: Vec<(HostPattern, Vec<u16>)>,
    /// Pack handlers' own list (`None`: they get `allow`).
    pub pack_allow: Option<Vec<(HostPattern, Vec<u16>)>>,
    /// The SSRF guard.
    pub addresses: AddressPolicy,
    /// The DLP scanner (built-in rules + configured secret values).
    pub scanner: Scanner,
    /// Where to forward: egress, or `None` to connect directly.
    pub upstream: Option<String>,
    /// Per-destination requests per minute (0 = unlimited).
    pub rate_limit_per_minute: u32,
    /// Concurrent tunnel cap.
    pub max_tunnels: usize,
    /// Tunnel idle/lifetime limits.
    pub tunnel: TunnelLimits,
    /// Plain-HTTP body scan bound.
    pub max_body_scan_bytes: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// The config it was built from (to tell what a reload changed).
    pub config: Config,
}

/// Why a policy could not be built (a secret file vanished between validation and now, or the
/// scanner could not be compiled).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A secret file is unreadable.
    #[error("cannot read secret file {path}: {source}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The scanner failed to build.
    #[error(transparent)]
    Scanner(#[from] scanner::ScannerError),
    /// A host pattern is invalid (normally caught by validation).
    #[error("{0}")]
    Pattern(String),
}

impl Policy {
    /// Compile `config`. Reads the secret files now, so a reload picks up their new contents.
    pub fn build(config: &Config) -> Result<Arc<Policy>, PolicyError> {
        let compile = |rules: &[crate::config::AllowRule]| {
            rules
                .iter()
                .map(|rule| {
                    Ok((
                        HostPattern::parse(&rule.host).map_err(PolicyError::Pattern)?,
                        rule.ports.clone(),
                    ))
                })
                .collect::<Result<Vec<_>, PolicyError>>()
        };
        let allow = compile(&config.allow)?;
        let pack_allow = config.pack_allow.as_deref().map(compile).transpose()?;
        let mut values = Vec::new();
        for path in &config.secret_files {
            let bytes = std::fs::read(path).map_err(|source| PolicyError::SecretFile {
                path: path.clone(),
                source,
            })?;
            values.extend(values_from_text(&String::from_utf8_lossy(&bytes)));
        }
        let scanner = Scanner::new(&SecretConfig {
            values,
            entropy_threshold: config.entropy_threshold,
            allow_regexes: config.dlp_allow.regexes.clone(),
            allow_stopwords: config.dlp_allow.stopwords.clone(),
            ..SecretConfig::default()
        })?;
        Ok(Arc::new(Policy {
            allow,
            pack_allow,
            addresses: AddressPolicy::new(config.allow_cidrs.clone()),
            scanner,
            upstream: config.upstream.clone(),
            rate_limit_per_minute: config.rate_limit_per_minute,
            max_tunnels: config.max_tunnels,
            tunnel: TunnelLimits {
                idle: Duration::from_secs(config.tunnel_idle_timeout_secs),
                max_lifetime: Duration::from_secs(config.tunnel_max_lifetime_secs),
            },
            max_body_scan_bytes: config.max_body_scan_bytes,
            connect_timeout: Duration::from_secs(config.connect_timeout_secs),
            config: config.clone(),
        }))
    }

    /// `Ok` if `host:port` is on the allowlist (pack handlers': `pack_allow` when set), else
    /// the denial reason.
    pub fn check_allowlist(&self, host: &str, port: u16, from_pack: bool) -> Result<(), String> {
        let list = match (&self.pack_allow, from_pack) {
            (Some(packs), true) => packs,
            _ => &self.allow,
        };
        let mut host_listed = false;
        for (pattern, ports) in list {
            if pattern.matches(host) {
                host_listed = true;
                if ports.contains(&port) {
                    return Ok(());
                }
            }
        }
        if host_listed {
            Err(format!("port {port} not allowed for {host}"))
        } else {
            Err(format!("host not on allowlist: {host}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = HostPattern::parse("*.Example.com").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
        assert!(HostPattern::parse("example.com.")
            .unwrap()
            .matches("example.com"));
        assert!(HostPattern::parse("a*.com").is_err());
        assert!(HostPattern::parse("").is_err());
        assert!(HostPattern::parse("[::1]").unwrap().matches("::1"));
    }

    #[test]
    fn allowlist_reasons() {
        let config: Config = sidecars_common::config::parse(
            r#"{"allow": [{"host": "a.com", "ports": [443]}]}"#,
            "t",
        )
        .unwrap();
        let p = Policy::build(&config).unwrap();
        assert!(p.check_allowlist("a.com", 443, false).is_ok());
        assert_eq!(
            p.check_allowlist("a.com", 80, false).unwrap_err(),
            "port 80 not allowed for a.com"
        );
        assert_eq!(
            p.check_allowlist("evil.example", 443, false).unwrap_err(),
            "host not on allowlist: evil.example"
        );
    }
}
