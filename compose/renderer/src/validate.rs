//! Semantic checks of a parsed manifest: every problem, each with its field's path.
//!
//! Shape errors (types, unknown keys) are caught by serde before this runs; this pass checks
//! values (formats, ranges) and cross-field rules (a route's credential must be declared, an
//! allowlist needs pipelock, ...).

use std::collections::BTreeSet;

use crate::daemon::Daemon;
use crate::error::Problem;
use crate::manifest::{HandlerLimits, Limits, Manifest};

/// Longest slug: keeps `bot-bottle-sidecars-<slug>` and network names well under Docker's
/// limits.
pub const MAX_SLUG_LEN: usize = 41;
/// Bundle-wide shutdown budget of sidecar-init (ms); one daemon's grace cannot exceed it.
pub const MAX_GRACE_MS: u64 = 8000;
/// Largest `pids` of a service (the kernel's `pid_max` ceiling).
pub const MAX_PIDS: u32 = 4_194_304;
/// Smallest `resources.agent.pids`.
pub const MIN_AGENT_PIDS: u32 = 16;
/// Smallest `resources.sidecars.pids`: init, up to six daemons with their runtime threads,
/// and handlers all count.
pub const MIN_SIDECARS_PIDS: u32 = 64;

/// Every problem of `m`; empty means valid.
pub fn problems(m: &Manifest) -> Vec<Problem> {
    let mut p = Vec::new();
    if !is_slug(&m.slug) {
        p.push(Problem::new(
            "slug",
            format!(
                "{:?} must match ^[a-z0-9][a-z0-9-]{{0,40}}$ (lowercase letters, digits, '-')",
                m.slug
            ),
        ));
    }
    agent(m, &mut p);
    daemons(m, &mut p);
    egress_inputs(m, &mut p);
    git(m, &mut p);
    packs(m, &mut p);
    limits(
        "resources.agent",
        &m.resources.agent,
        MIN_AGENT_PIDS,
        &mut p,
    );
    limits(
        "resources.sidecars",
        &m.resources.sidecars,
        MIN_SIDECARS_PIDS,
        &mut p,
    );
    if let Some(h) = &m.resources.handlers {
        needs(m, "resources.handlers", Daemon::PackExec, &mut p);
        handler_limits(h, &mut p);
    }
    if m.allow_unsigned_packs {
        needs(m, "allow_unsigned_packs", Daemon::PackExec, &mut p);
    }
    if let Some(image) = &m.sidecar_image {
        if let Err(why) = check_image(image) {
            p.push(Problem::new("sidecar_image", why));
        }
    }
    p
}

fn agent(m: &Manifest, p: &mut Vec<Problem>) {
    if let Err(why) = check_image(&m.agent.image) {
        p.push(Problem::new("agent.image", why));
    }
    if let Some(command) = &m.agent.command {
        if command.is_empty() {
            p.push(Problem::new(
                "agent.command",
                "must not be empty (leave it out to use the image's command)",
            ));
        } else if command[0].is_empty() {
            p.push(Problem::new(
                "agent.command[0]",
                "the program must not be empty",
            ));
        }
        for (i, arg) in command.iter().enumerate() {
            if arg.contains('\0') {
                p.push(Problem::new(
                    format!("agent.command[{i}]"),
                    "contains a NUL byte",
                ));
            }
        }
    }
    let reserved = crate::render::agent_env(m);
    for (key, value) in &m.agent.env {
        let path = format!("agent.env.{key}");
        if !is_env_name(key) {
            p.push(Problem::new(
                &path,
                "is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)",
            ));
        }
        if value.contains('\0') {
            p.push(Problem::new(&path, "contains a NUL byte"));
        }
        if reserved.contains_key(key) {
            p.push(Problem::new(
                &path,
                "is set by the renderer for the enabled daemons (it points the agent at the sidecars); remove it",
            ));
        }
    }
    if let Some(user) = &m.agent.user {
        if let Err(why) = check_user(user) {
            p.push(Problem::new("agent.user", why));
        }
    }
}

fn daemons(m: &Manifest, p: &mut Vec<Problem>) {
    if m.daemons.is_empty() {
        p.push(Problem::new(
            "daemons",
            "must enable at least one daemon (sidecar-init needs one, and reads an empty SIDECARS_DAEMONS as \"all\")",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, d) in m.daemons.iter().enumerate() {
        if !seen.insert(*d) {
            p.push(Problem::new(
                format!("daemons[{i}]"),
                format!("{d} is listed twice"),
            ));
        }
    }
    if m.daemons.contains(&Daemon::Egress) && !m.daemons.contains(&Daemon::Pipelock) {
        p.push(Problem::new(
            "daemons",
            "egress needs pipelock: it listens on the sidecars container's loopback and is reached only through pipelock",
        ));
    }
    for (name, settings) in &m.daemon_settings {
        let base = format!("daemon_settings.{name}");
        match Daemon::from_name(name) {
            None => p.push(Problem::new(
                &base,
                format!(
                    "unknown daemon {name:?} (one of: {})",
                    Daemon::ALL.map(Daemon::name).join(", ")
                ),
            )),
            Some(d) if !m.daemons.contains(&d) => {
                p.push(Problem::new(&base, format!("{d} is not in `daemons`")))
            }
            Some(_) => {}
        }
        if let Some(g) = settings.grace_ms {
            if !(100..=MAX_GRACE_MS).contains(&g) {
                p.push(Problem::new(
                    format!("{base}.grace_ms"),
                    format!("{g} is out of range (100 to {MAX_GRACE_MS}: the bundle's whole shutdown budget)"),
                ));
            }
        }
        if let Some(t) = settings.ready_timeout_ms {
            if !(100..=600_000).contains(&t) {
                p.push(Problem::new(
                    format!("{base}.ready_timeout_ms"),
                    format!("{t} is out of range (100 to 600000)"),
                ));
            }
        }
        for (key, value) in &settings.env {
            if !is_env_name(key) {
                p.push(Problem::new(
                    format!("{base}.env.{key}"),
                    "is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)",
                ));
            }
            if value.contains('\0') {
                p.push(Problem::new(
                    format!("{base}.env.{key}"),
                    "contains a NUL byte",
                ));
            }
        }
    }
}

fn needs(m: &Manifest, field: &str, daemon: Daemon, p: &mut Vec<Problem>) {
    if !m.daemons.contains(&daemon) {
        p.push(Problem::new(
            field,
            format!("is used by {daemon}, which is not in `daemons`"),
        ));
    }
}

fn allow_rules(key: &str, rules: &[crate::manifest::AllowRule], p: &mut Vec<Problem>) {
    for (i, rule) in rules.iter().enumerate() {
        if !is_host_pattern(&rule.host) {
            p.push(Problem::new(
                format!("{key}[{i}].host"),
                format!("{:?} is not a host name or *.suffix pattern", rule.host),
            ));
        }
        if rule.ports.is_empty() {
            p.push(Problem::new(
                format!("{key}[{i}].ports"),
                "must not be empty",
            ));
        }
        for (j, port) in rule.ports.iter().enumerate() {
            if *port == 0 {
                p.push(Problem::new(
                    format!("{key}[{i}].ports[{j}]"),
                    "0 is not a port (1 to 65535)",
                ));
            }
        }
    }
}

fn egress_inputs(m: &Manifest, p: &mut Vec<Problem>) {
    if !m.allowlist.is_empty() {
        needs(m, "allowlist", Daemon::Pipelock, p);
    }
    allow_rules("allowlist", &m.allowlist, p);
    if let Some(rules) = &m.pack_allowlist {
        needs(m, "pack_allowlist", Daemon::Pipelock, p);
        needs(m, "pack_allowlist", Daemon::PackExec, p);
        allow_rules("pack_allowlist", rules, p);
    }
    if !m.allow_cidrs.is_empty() {
        needs(m, "allow_cidrs", Daemon::Pipelock, p);
    }
    for (i, cidr) in m.allow_cidrs.iter().enumerate() {
        if !is_cidr(cidr) {
            p.push(Problem::new(
                format!("allow_cidrs[{i}]"),
                format!("{cidr:?} is not a CIDR like 127.0.0.0/8 or ::1/128"),
            ));
        }
    }
    if !m.routes.is_empty() {
        needs(m, "routes", Daemon::Egress, p);
    }
    if !m.passthrough.is_empty() {
        needs(m, "passthrough", Daemon::Egress, p);
    }
    if let Some(size) = &m.https_body_limit {
        needs(m, "https_body_limit", Daemon::Egress, p);
        size_at_least("https_body_limit", size, 1 << 20, "1m", p);
    }
    for (field, why) in m.dlp_allow.problems() {
        p.push(Problem::new(format!("dlp_allow.{field}"), why));
    }
    if !m.dlp_allow.paths.is_empty() {
        needs(m, "dlp_allow.paths", Daemon::GitGate, p);
    }
    if !m.upstream_roots.is_empty() {
        needs(m, "upstream_roots", Daemon::Egress, p);
    }
    for (i, name) in m.upstream_roots.iter().enumerate() {
        if !m.credentials.contains_key(name) {
            p.push(Problem::new(
                format!("upstream_roots[{i}]"),
                format!("{name:?} is not a declared credential: add [credentials.{name}] with file = the PEM file of the root"),
            ));
        } else if m.vault.contains_key(name)
            || m.git.iter().any(|g| g.credential.as_deref() == Some(name))
            || m.routes
                .iter()
                .any(|r| r.headers.values().any(|v| vault_refs(v).any(|x| x == name)))
        {
            p.push(Problem::new(
                format!("upstream_roots[{i}]"),
                format!("{name:?} is also used as a secret; a root certificate gets a credential of its own"),
            ));
        }
    }
    for (i, host) in m.passthrough.iter().enumerate() {
        let field = format!("passthrough[{i}]");
        if !is_host_pattern(host) || host.contains('*') {
            p.push(Problem::new(
                field,
                format!("{host:?} is not an exact host name"),
            ));
        } else if m.routes.iter().any(|r| r.host.eq_ignore_ascii_case(host))
            || m.vault
                .values()
                .any(|v| v.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)))
        {
            p.push(Problem::new(
                field,
                format!("{host:?} gets a credential (a route or vault host): egress must decrypt it to inject one"),
            ));
        } else if !on_allowlist(m, host) {
            p.push(Problem::new(
                field,
                format!(
                    "{host:?} is not on the allowlist: pipelock refuses it before egress sees it"
                ),
            ));
        }
    }
    for (i, route) in m.routes.iter().enumerate() {
        if !is_host_pattern(&route.host) || route.host.starts_with('*') {
            p.push(Problem::new(
                format!("routes[{i}].host"),
                format!("{:?} is not a host name", route.host),
            ));
        } else if !on_allowlist(m, &route.host) {
            p.push(Problem::new(
                format!("routes[{i}].host"),
                format!(
                    "{:?} is not on the allowlist: pipelock would refuse it before egress sees it",
                    route.host
                ),
            ));
        }
        if let Err(e) = bottle_spec::route_rules::compile(&route.rules) {
            // `e` starts with `rules[j]: `.
            let (field, what) = e.split_once(": ").unwrap_or(("rules", e.as_str()));
            p.push(Problem::new(format!("routes[{i}].{field}"), what));
        }
        if !route.rules.is_empty() && m.routes.iter().filter(|r| r.host == route.host).count() > 1 {
            p.push(Problem::new(
                format!("routes[{i}].rules"),
                format!(
                    "{:?} has more than one route: give its rules to one route",
                    route.host
                ),
            ));
        }
        for (name, value) in &route.headers {
            let path = format!("routes[{i}].headers.{name}");
            if !is_header_name(name) {
                p.push(Problem::new(&path, "is not a valid HTTP header name"));
            }
            if value.contains(['\r', '\n', '\0']) {
                p.push(Problem::new(&path, "contains a line break or NUL"));
            }
            if value
                .split("${")
                .skip(1)
                .any(|rest| !rest.starts_with("vault:") && !rest.starts_with("cred:"))
            {
                p.push(Problem::new(
                    &path,
                    "`${` may only start a ${vault:NAME} (or ${cred:NAME}) reference (egress reads no other placeholder)",
                ));
            }
            for reference in vault_refs(value) {
                if !m.credentials.contains_key(reference) {
                    p.push(Problem::new(
                        &path,
                        format!("references ${{vault:{reference}}}, which is not in `credentials`"),
                    ));
                }
            }
        }
    }
    if !m.vault.is_empty() {
        needs(m, "vault", Daemon::Egress, p);
    }
    for (name, entry) in &m.vault {
        let path = format!("vault.{name}");
        if !m.credentials.contains_key(name) {
            p.push(Problem::new(
                &path,
                format!("{name:?} is not in `credentials` (a vault entry scopes the credential of the same name)"),
            ));
        }
        if entry.hosts.is_empty() {
            p.push(Problem::new(
                format!("{path}.hosts"),
                "must not be empty: name the hosts the credential may be sent to",
            ));
        }
        for (j, host) in entry.hosts.iter().enumerate() {
            if !is_host_pattern(host) || host.starts_with('*') {
                p.push(Problem::new(
                    format!("{path}.hosts[{j}]"),
                    format!("{host:?} is not a host name (exact names only)"),
                ));
            } else if !on_allowlist(m, host) {
                p.push(Problem::new(
                    format!("{path}.hosts[{j}]"),
                    format!("{host:?} is not on the allowlist: pipelock would refuse it before egress sees it"),
                ));
            }
        }
    }
    for (name, cred) in &m.credentials {
        let path = format!("credentials.{name}");
        if !is_credential_name(name) {
            p.push(Problem::new(
                &path,
                "is not a valid credential name ([A-Z][A-Z0-9_]*)",
            ));
        }
        match (&cred.file, cred.generate) {
            (Some(file), false) if !file.starts_with('/') => p.push(Problem::new(
                format!("{path}.file"),
                format!("{file:?} must be an absolute path on the host"),
            )),
            (Some(_), true) => p.push(Problem::new(
                &path,
                "has both `file` and `generate = true`: keep one (a file you provide, or a value the control plane generates)",
            )),
            (None, false) => p.push(Problem::new(
                &path,
                "needs `file = \"/absolute/path\"` (a file holding the secret) or `generate = true` (the control plane generates a demo value)",
            )),
            _ => {}
        }
        let used = m
            .routes
            .iter()
            .any(|r| r.headers.values().any(|v| vault_refs(v).any(|x| x == name)))
            || m.git.iter().any(|g| g.credential.as_deref() == Some(name))
            || m.vault.contains_key(name)
            || m.upstream_roots.iter().any(|r| r == name);
        if !used {
            p.push(Problem::new(
                &path,
                "is not used by any route, vault entry, git repository or upstream_roots",
            ));
        }
    }
}

fn git(m: &Manifest, p: &mut Vec<Problem>) {
    if !m.git.is_empty() {
        needs(m, "git", Daemon::GitGate, p);
    }
    let mut names = BTreeSet::new();
    for (i, repo) in m.git.iter().enumerate() {
        if !is_repo_name(&repo.name) {
            p.push(Problem::new(
                format!("git[{i}].name"),
                format!("{:?} must match ^[a-z0-9][a-z0-9._-]*$, at most 100 characters, not ending in .git", repo.name),
            ));
        } else if !names.insert(repo.name.as_str()) {
            p.push(Problem::new(
                format!("git[{i}].name"),
                format!("{:?} is used twice", repo.name),
            ));
        }
        let u = &repo.upstream;
        let http = ["https://", "http://"].iter().any(|s| u.starts_with(s));
        let scheme_ok =
            http || ["git://", "file://"].iter().any(|s| u.starts_with(s)) || u.starts_with('/');
        if !scheme_ok || u.contains(char::is_whitespace) {
            p.push(Problem::new(
                format!("git[{i}].upstream"),
                format!(
                    "{u:?} is not a git-gate upstream (https://, http://, git://, file:// URL or an absolute path; ssh is not supported)"
                ),
            ));
        } else if http
            && u.split("://")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|authority| authority.contains('@'))
        {
            p.push(Problem::new(
                format!("git[{i}].upstream"),
                "carries credentials in the URL: declare them in `credentials` and name them in `credential`",
            ));
        }
        for (j, glob) in repo.deny_paths.iter().flatten().enumerate() {
            if let Err(e) = bottle_spec::repo_path_glob(glob) {
                p.push(Problem::new(format!("git[{i}].deny_paths[{j}]"), e));
            }
        }
        if let Some(c) = &repo.credential {
            if !m.credentials.contains_key(c) {
                p.push(Problem::new(
                    format!("git[{i}].credential"),
                    format!("{c:?} is not in `credentials`"),
                ));
            }
            if scheme_ok && !http {
                p.push(Problem::new(
                    format!("git[{i}].credential"),
                    "only http(s) upstreams take a credential",
                ));
            }
        }
    }
}

fn packs(m: &Manifest, p: &mut Vec<Problem>) {
    if !m.packs.is_empty() {
        needs(m, "packs", Daemon::PackExec, p);
    }
    let mut names = BTreeSet::new();
    for (i, path) in m.packs.iter().enumerate() {
        match pack_dir_name(path) {
            None => p.push(Problem::new(
                format!("packs[{i}]"),
                format!("{path:?} is not a directory path ending in the pack's name"),
            )),
            Some(name) => {
                if !names.insert(name) {
                    p.push(Problem::new(
                        format!("packs[{i}]"),
                        format!("a pack directory named {name:?} is listed twice"),
                    ));
                }
            }
        }
    }
}

/// The directory name a pack path is copied under (`../packs/cmd.upper` → `cmd.upper`), or
/// `None` when the path has no usable last component.
pub fn pack_dir_name(path: &str) -> Option<&str> {
    if path.contains('\0') {
        return None;
    }
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let ok = !last.is_empty()
        && last != "."
        && last != ".."
        && last
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ok.then_some(last)
}

fn limits(base: &str, l: &Limits, min_pids: u32, p: &mut Vec<Problem>) {
    if let Some(cpus) = l.cpus {
        if !(cpus > 0.0 && cpus <= 1024.0) {
            p.push(Problem::new(
                format!("{base}.cpus"),
                format!("{cpus} is out of range (more than 0, at most 1024)"),
            ));
        }
    }
    if let Some(mem) = &l.memory {
        if !is_memory(mem) {
            p.push(Problem::new(
                format!("{base}.memory"),
                format!("{mem:?} is not a size like 512m or 2g (number, then b, k, m or g), at least 4m"),
            ));
        }
    }
    if let Some(pids) = l.pids {
        if !(min_pids..=MAX_PIDS).contains(&pids) {
            p.push(Problem::new(
                format!("{base}.pids"),
                format!("{pids} is out of range ({min_pids} to {MAX_PIDS})"),
            ));
        }
    }
    if let Some(size) = &l.tmp_size {
        size_at_least(&format!("{base}.tmp_size"), size, 1 << 20, "1m", p);
    }
}

fn handler_limits(h: &HandlerLimits, p: &mut Vec<Problem>) {
    let base = "resources.handlers";
    if let Some(n) = h.processes {
        if !(1..=65_536).contains(&n) {
            p.push(Problem::new(
                format!("{base}.processes"),
                format!("{n} is out of range (1 to 65536)"),
            ));
        }
    }
    if let Some(n) = h.open_files {
        if !(16..=1_048_576).contains(&n) {
            p.push(Problem::new(
                format!("{base}.open_files"),
                format!("{n} is out of range (16 to 1048576)"),
            ));
        }
    }
    if let Some(size) = &h.address_space {
        size_at_least(&format!("{base}.address_space"), size, 16 << 20, "16m", p);
    }
    if let Some(size) = &h.file_size {
        size_at_least(&format!("{base}.file_size"), size, 1 << 10, "1k", p);
    }
}

/// A problem at `path` unless `size` parses ([`parse_size`]) to at least `floor` bytes.
fn size_at_least(path: &str, size: &str, floor: u64, floor_text: &str, p: &mut Vec<Problem>) {
    if parse_size(size).is_none_or(|bytes| bytes < floor) {
        p.push(Problem::new(
            path,
            format!("{size:?} is not a size like 64m or 1g (number, then b, k, m or g), at least {floor_text}"),
        ));
    }
}

/// Whether pipelock's allowlist lets the agent reach `host` (exact name, or a `*.suffix`
/// rule covering a subdomain of it).
fn on_allowlist(m: &Manifest, host: &str) -> bool {
    m.allowlist
        .iter()
        .any(|rule| match rule.host.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => rule.host == host,
        })
}

/// `ADDRESS/PREFIX` with a prefix that fits the address family.
fn is_cidr(s: &str) -> bool {
    let Some((addr, prefix)) = s.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

/// Credential references in a route's header value: `${vault:NAME}`, or egress's own spelling
/// `${cred:NAME}` (accepted as a synonym).
pub fn vault_refs(value: &str) -> impl Iterator<Item = &str> {
    value.split("${").skip(1).filter_map(|rest| {
        let rest = rest
            .strip_prefix("vault:")
            .or_else(|| rest.strip_prefix("cred:"))?;
        rest.split_once('}').map(|(n, _)| n)
    })
}

/// `^[a-z0-9][a-z0-9-]{0,40}$`.
pub fn is_slug(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.len() <= MAX_SLUG_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_credential_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn is_repo_name(s: &str) -> bool {
    if s.len() > 100 || s.ends_with(".git") {
        return false;
    }
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

fn is_host_pattern(s: &str) -> bool {
    let host = s.strip_prefix("*.").unwrap_or(s);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn is_memory(s: &str) -> bool {
    parse_size(s).is_some_and(|bytes| bytes >= 4 << 20)
}

/// A size of the manifest in bytes: digits, then an optional unit `b`, `k`, `m` or `g`
/// (powers of 1024; lowercase). `None` when malformed or too large for 64 bits.
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n = digits.parse::<u64>().ok()?;
    let factor: u64 = match unit {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// `bytes` in the largest unit that divides it exactly (`64m`, `1g`, `1536k`, `100`): what
/// tmpfs's `size=` takes (no `b` suffix).
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
        if bytes != 0 && bytes % factor == 0 {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// An image reference: no whitespace, no `$`, characters Docker accepts in a reference.
pub fn check_image(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not an image reference (like registry/name:tag or name@sha256:...)"
        ))
    }
}

/// A numeric, non-root `UID[:GID]`.
pub fn check_user(s: &str) -> Result<(), String> {
    let (uid, gid) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid: Option<u32> = uid.parse().ok();
    let gid_ok = gid.is_none_or(|g| g.parse::<u32>().is_ok());
    match uid {
        Some(_) if !gid_ok => Err(format!("{s:?} must be numeric UID or UID:GID")),
        Some(0) => Err("root (uid 0) is refused: the agent runs unprivileged".to_string()),
        Some(_) => Ok(()),
        None => Err(format!("{s:?} must be numeric UID or UID:GID")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert!(is_slug("example"));
        assert!(is_slug("0-a"));
        assert!(is_slug(&"a".repeat(41)));
        assert!(!is_slug(&"a".repeat(42)));
        assert!(!is_slug("-a"));
        assert!(!is_slug("A"));
        assert!(!is_slug(""));
        assert!(!is_slug("a_b"));
    }

    #[test]
    fn memory_sizes() {
        assert!(is_memory("512m"));
        assert!(is_memory("2g"));
        assert!(is_memory("4194304"));
        assert!(!is_memory("1m"));
        assert!(!is_memory("512M"));
        assert!(!is_memory("m"));
        assert!(!is_memory("99999999999999999999g"));
        assert!(!is_memory("18446744073709551615g"));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("100b"), Some(100));
        assert_eq!(parse_size("7"), Some(7));
        assert_eq!(parse_size("1G"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(format_size(64 << 20), "64m");
        assert_eq!(format_size(1 << 30), "1g");
        assert_eq!(format_size(1536 << 10), "1536k");
        assert_eq!(format_size(100), "100");
        assert_eq!(format_size(0), "0");
    }

    #[test]
    fn users() {
        assert!(check_user("1000").is_ok());
        assert!(check_user("1000:1000").is_ok());
        assert!(check_user("0").is_err());
        assert!(check_user("0:0").is_err());
        assert!(check_user("root").is_err());
        assert!(check_user("1000:x").is_err());
    }

    #[test]
    fn pack_names() {
        assert_eq!(pack_dir_name("../packs/cmd.upper"), Some("cmd.upper"));
        assert_eq!(pack_dir_name("cmd.upper/"), Some("cmd.upper"));
        assert_eq!(pack_dir_name(".."), None);
        assert_eq!(pack_dir_name(""), None);
        assert_eq!(pack_dir_name("a b"), None);
    }

    #[test]
    fn cidrs() {
        assert!(is_cidr("127.0.0.0/8"));
        assert!(is_cidr("::1/128"));
        assert!(!is_cidr("127.0.0.1"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("nope/8"));
    }

    #[test]
    fn vault_references() {
        let refs: Vec<_> = vault_refs("Bearer ${vault:A} x ${vault:B_2} ${cred:C} ${X}").collect();
        assert_eq!(refs, ["A", "B_2", "C"]);
    }
}
