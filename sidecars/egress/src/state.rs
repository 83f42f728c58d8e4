//! Everything egress needs at run time, built from the config once at startup (this also
//! validates the config: every file it names is read here).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use rustls::{ClientConfig, RootCertStore};
use scanner::{values_from_text, Scanner, SecretConfig};
use sidecars_common::proxy::{DirectClient, TunnelLimits};
use sidecars_common::ssrf::{normalize_host, AddressPolicy, IpNet};

use crate::ca::Ca;
use crate::config::Config;
use crate::creds::{expand_template, read_credential, valid_name, VaultValue};
use crate::redact::Redactor;

/// Per-host interception: the headers to inject and the values to redact from responses.
#[derive(Debug, Default)]
pub struct HostRules {
    /// Injected headers (the agent's headers of these names are dropped first).
    pub inject: Vec<(HeaderName, HeaderValue)>,
    /// Credential values that may go to this host, redacted from its responses.
    pub redactor: Option<Arc<Redactor>>,
    /// The route's method/path rules, checked before anything is injected.
    pub rules: bottle_spec::route_rules::Rules,
}

/// The runtime state.
pub struct State {
    /// Who may connect.
    pub allow_from: Vec<IpNet>,
    /// The SSRF guard.
    pub addresses: AddressPolicy,
    /// Intercepted hosts (routes and vault scopes), lower-case.
    pub hosts: HashMap<String, HostRules>,
    /// `${vault:NAME}` values.
    pub vault: HashMap<String, VaultValue>,
    /// The CA, if any host is intercepted.
    pub ca: Option<Ca>,
    /// TLS client config for intercepted upstreams.
    pub tls: Arc<ClientConfig>,
    /// Plain-HTTP client.
    pub http: DirectClient,
    /// Blind-tunnel limits.
    pub tunnel: TunnelLimits,
    /// Connect (and TLS handshake) timeout.
    pub connect_timeout: Duration,
    /// Terminate TLS for every host name but the passthrough ones (config `intercept_all`).
    pub intercept_all: bool,
    /// Hosts kept blind under `intercept_all`, lower-case.
    pub passthrough: HashSet<String>,
    /// DLP on intercepted requests: token formats and the configured secrets' values.
    pub scanner: Scanner,
    /// Largest intercepted request body scanned (and so forwarded).
    pub max_body_scan_bytes: usize,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("hosts", &self.hosts.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl State {
    /// Build from `config`, reading credential, vault, CA and root files. On failure, every
    /// problem, each starting with the config field's path.
    pub fn build(config: &Config) -> Result<State, Vec<String>> {
        let mut problems = Vec::new();
        let mut hosts: HashMap<String, HostRules> = HashMap::new();
        let mut secrets_by_host: HashMap<String, Vec<String>> = HashMap::new();
        for (i, route) in config.routes.iter().enumerate() {
            let host = normalize_host(&route.host);
            if host.is_empty() || host.contains('*') {
                problems.push(format!(
                    "routes[{i}].host: {:?} must be an exact host name",
                    route.host
                ));
                continue;
            }
            let rules = hosts.entry(host.clone()).or_default();
            if !route.rules.is_empty() {
                if !rules.rules.is_empty() {
                    problems.push(format!(
                        "routes[{i}].rules: another route for {host} has rules already; give one route per host its rules"
                    ));
                }
                match bottle_spec::route_rules::compile(&route.rules) {
                    Ok(compiled) => rules.rules = compiled,
                    Err(e) => problems.push(format!("routes[{i}].{e}")),
                }
            }
            for (name, template) in &route.headers {
                let field = format!("routes[{i}].headers.{name}");
                let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                    problems.push(format!("{field}: not a valid header name"));
                    continue;
                };
                match expand_template(template, config.credentials_dir.as_deref()) {
                    Ok((value, used)) => match HeaderValue::from_str(&value) {
                        Ok(mut v) => {
                            v.set_sensitive(true);
                            rules.inject.push((header, v));
                            secrets_by_host
                                .entry(host.clone())
                                .or_default()
                                .extend(used);
                        }
                        Err(_) => problems.push(format!("{field}: not a valid header value")),
                    },
                    Err(why) => problems.push(format!("{field}: {why}")),
                }
            }
        }
        let mut vault = HashMap::new();
        for (name, entry) in &config.vault {
            let field = format!("vault.{name}");
            if !valid_name(name) {
                problems.push(format!("{field}: invalid name (letters, digits, _ - .)"));
                continue;
            }
            if entry.hosts.is_empty() {
                problems.push(format!(
                    "{field}.hosts: empty; name the hosts it may be sent to"
                ));
            }
            match read_credential(&entry.file) {
                Ok(value) => {
                    let scoped: Vec<String> =
                        entry.hosts.iter().map(|h| normalize_host(h)).collect();
                    for h in &scoped {
                        hosts.entry(h.clone()).or_default();
                        secrets_by_host
                            .entry(h.clone())
                            .or_default()
                            .push(value.clone());
                    }
                    vault.insert(
                        name.clone(),
                        VaultValue {
                            value,
                            hosts: scoped,
                        },
                    );
                }
                Err(why) => problems.push(format!("{field}.file: {why}")),
            }
        }
        for (host, values) in secrets_by_host {
            if let Some(rules) = hosts.get_mut(&host) {
                rules.redactor = Redactor::new(&values).map(Arc::new);
            }
        }
        let ca = match (&config.ca_cert, &config.ca_key) {
            (Some(cert), Some(key)) => {
                match (std::fs::read_to_string(cert), std::fs::read_to_string(key)) {
                    (Ok(c), Ok(k)) => match Ca::load(&c, &k) {
                        Ok(ca) => Some(ca),
                        Err(e) => {
                            problems.push(format!("ca_cert/ca_key: {e}"));
                            None
                        }
                    },
                    (Err(e), _) => {
                        problems.push(format!("ca_cert: cannot read {}: {e}", cert.display()));
                        None
                    }
                    (_, Err(e)) => {
                        problems.push(format!("ca_key: cannot read {}: {e}", key.display()));
                        None
                    }
                }
            }
            (None, None) => {
                if config.intercept_all {
                    problems.push(
                        "ca_cert/ca_key: required with intercept_all (egress terminates TLS for every host)".into(),
                    );
                } else if !hosts.is_empty() {
                    problems.push(
                        "ca_cert/ca_key: required when routes or vault entries exist (egress terminates TLS for those hosts)".into(),
                    );
                }
                None
            }
            _ => {
                problems.push("ca_cert/ca_key: set both or neither".into());
                None
            }
        };
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for (i, path) in config.extra_roots.iter().enumerate() {
            let field = format!("extra_roots[{i}]");
            match std::fs::read(path) {
                Ok(pem) => {
                    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                        .filter_map(Result::ok)
                        .collect();
                    if certs.is_empty() {
                        problems.push(format!("{field}: no PEM certificate in {}", path.display()));
                    }
                    for cert in certs {
                        if let Err(e) = roots.add(cert) {
                            problems.push(format!("{field}: {e}"));
                        }
                    }
                }
                Err(e) => problems.push(format!("{field}: cannot read {}: {e}", path.display())),
            }
        }
        let tls = match ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        {
            Ok(b) => {
                let mut c = b.with_root_certificates(roots).with_no_client_auth();
                c.alpn_protocols = vec![b"http/1.1".to_vec()];
                Arc::new(c)
            }
            Err(e) => {
                problems.push(format!("TLS: {e}"));
                return Err(problems);
            }
        };
        let mut values = Vec::new();
        for (i, path) in config.secret_files.iter().enumerate() {
            match std::fs::read(path) {
                Ok(bytes) => values.extend(values_from_text(&String::from_utf8_lossy(&bytes))),
                Err(e) => problems.push(format!(
                    "secret_files[{i}]: cannot read {}: {e}",
                    path.display()
                )),
            }
        }
        if !(0.0..=8.0).contains(&config.entropy_threshold) {
            problems.push("entropy_threshold: must be between 0 and 8 bits per character".into());
        }
        if config.max_body_scan_bytes == 0 {
            problems.push("max_body_scan_bytes: must be at least 1".into());
        }
        let mut passthrough = HashSet::new();
        for (i, host) in config.passthrough.iter().enumerate() {
            let h = normalize_host(host);
            if h.is_empty() || h.contains('*') {
                problems.push(format!(
                    "passthrough[{i}]: {host:?} must be an exact host name"
                ));
            } else if hosts.contains_key(&h) {
                problems.push(format!(
                    "passthrough[{i}]: {h} is a route or vault host, which egress must intercept to inject its credential"
                ));
            } else {
                passthrough.insert(h);
            }
        }
        let scanner = match Scanner::new(&SecretConfig {
            values,
            entropy_threshold: config.entropy_threshold,
            allow_regexes: config.dlp_allow.regexes.clone(),
            allow_stopwords: config.dlp_allow.stopwords.clone(),
            ..SecretConfig::default()
        }) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!("secret_files: {e}"));
                None
            }
        };
        let (Some(scanner), true) = (scanner, problems.is_empty()) else {
            return Err(problems);
        };
        let connect_timeout = Duration::from_secs(config.connect_timeout_secs);
        Ok(State {
            allow_from: config.allow_from.clone(),
            addresses: AddressPolicy::new(config.allow_cidrs.clone()),
            hosts,
            vault,
            ca,
            tls,
            http: DirectClient::new(connect_timeout),
            tunnel: TunnelLimits {
                idle: Duration::from_secs(config.tunnel_idle_timeout_secs),
                max_lifetime: Duration::from_secs(config.tunnel_max_lifetime_secs),
            },
            connect_timeout,
            intercept_all: config.intercept_all,
            passthrough,
            scanner,
            max_body_scan_bytes: config.max_body_scan_bytes,
        })
    }

    /// Whether egress terminates TLS for a CONNECT to `host`: route and vault hosts always;
    /// with `intercept_all`, every host name but the passthrough ones (IP literals stay blind:
    /// no certificate name to mint for them).
    pub fn intercepts(&self, host: &str) -> bool {
        self.hosts.contains_key(host)
            || (self.intercept_all
                && !self.passthrough.contains(host)
                && !crate::sni::is_ip_literal(host))
    }

    /// Intercepted host names (for the startup log line).
    pub fn intercepted(&self) -> HashSet<&str> {
        self.hosts.keys().map(String::as_str).collect()
    }
}

/// The state requests use, replaced whole on a reload (SIGHUP): a request — or the next
/// request on an open keep-alive tunnel — takes the current one, so rotated credentials apply
/// from the next request without dropping connections.
#[derive(Debug)]
pub struct Live {
    current: std::sync::RwLock<Arc<State>>,
}

impl Live {
    /// Start with `state`.
    pub fn new(state: State) -> Arc<Live> {
        Arc::new(Live {
            current: std::sync::RwLock::new(Arc::new(state)),
        })
    }

    /// The state now.
    pub fn get(&self) -> Arc<State> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Use `state` from now on.
    pub fn replace(&self, state: State) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
    }

    /// Build the state from the config at `path` and use it; a bad config or an unreadable
    /// file keeps the current state, and the log says why (paths and fields, never values).
    pub fn reload_from(&self, path: &std::path::Path) {
        let built = sidecars_common::config::load::<Config>(path)
            .map_err(|e| e.to_string())
            .and_then(|c| State::build(&c).map_err(|p| p.join("; ")));
        match built {
            Ok(state) => {
                let hosts = state.hosts.len();
                self.replace(state);
                tracing::info!(path = %path.display(), intercepted_hosts = hosts, "config reloaded");
            }
            Err(err) => tracing::error!(
                path = %path.display(),
                "config reload rejected; keeping the previous config: {err}"
            ),
        }
    }
}
