//! Checks what a parsed config means and turns it into a [`Plan`]: the enabled daemons with
//! resolved dependencies, signals, users and probes.
//!
//! Why one pass that collects everything: `check-config` must print every problem with its
//! JSON path at once, and the supervisor must run only what `check-config` would accept, so
//! both go through [`plan`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use nix::sys::signal::Signal;

use std::path::PathBuf;

use crate::config::{Config, DaemonConfig, HandlersConfig, OnReadyTimeout, RestartPolicy};
use crate::error::Problem;
use crate::graph;
use crate::notify::NotifyTarget;
use crate::probe::Probe;
use crate::signals;

/// Name of the environment variable that selects a subset of the daemons.
pub const SELECT_ENV: &str = "SIDECARS_DAEMONS";

/// A user to drop to before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// Numeric uid.
    pub uid: u32,
    /// Numeric gid (defaults to the uid's number when omitted).
    pub gid: u32,
}

/// One enabled daemon, ready to supervise.
#[derive(Debug, Clone)]
pub struct DaemonPlan {
    /// Name (log prefix).
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Own environment (added to the minimal base).
    pub env: BTreeMap<String, String>,
    /// User to drop to.
    pub user: Option<User>,
    /// Ready probe, if any.
    pub probe: Option<Probe>,
    /// Indexes (into [`Plan::daemons`]) of enabled dependencies.
    pub deps: Vec<usize>,
    /// Indexes of enabled daemons that depend on this one.
    pub dependents: Vec<usize>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// SIGTERM-to-SIGKILL grace at shutdown.
    pub grace: Duration,
    /// Sent to the daemon when init gets SIGHUP.
    pub reload_signal: Option<Signal>,
    /// Forwarded to the daemon when init gets them.
    pub forward_signals: Vec<Signal>,
    /// How long dependents wait for the ready probe.
    pub ready_timeout: Duration,
    /// What a ready timeout does.
    pub on_ready_timeout: OnReadyTimeout,
    /// Credentials to hand out: file name → source.
    pub credentials: BTreeMap<String, PathBuf>,
}

/// Everything the supervisor needs, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Enabled daemons, in config order.
    pub daemons: Vec<DaemonPlan>,
    /// Whole-shutdown budget.
    pub grace: Duration,
    /// Crash-loop rule: restarts allowed within the window.
    pub max_restarts: u32,
    /// Crash-loop window.
    pub crash_window: Duration,
    /// Where to send events, if anywhere.
    pub notify: Option<NotifyTarget>,
    /// Root of the per-daemon credentials directories.
    pub credentials_root: PathBuf,
    /// The handler-spawn service, if configured.
    pub handlers: Option<HandlersConfig>,
}

/// Default root of the per-daemon credentials directories.
pub const DEFAULT_CREDENTIALS_ROOT: &str = "/run/sidecars/credentials";

/// Whether `n` can name a credential file: one path component of `A-Z a-z 0-9 . _ -`, not
/// `.` or `..`, so a name can never point outside the daemon's directory.
pub fn valid_credential_name(n: &str) -> bool {
    valid_name(n) && n != "." && n != ".."
}

/// Parses `"UID"` or `"UID:GID"`.
pub fn parse_user(s: &str) -> Option<User> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid: u32 = u.parse().ok()?;
    let gid: u32 = match g {
        Some(g) => g.parse().ok()?,
        None => uid,
    };
    Some(User { uid, gid })
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Validates `config` for the daemons selected by `selection` (the value of
/// `SIDECARS_DAEMONS`, `None` or empty = all) and builds the plan. Returns every problem found.
pub fn plan(config: &Config, selection: Option<&str>) -> Result<Plan, Vec<Problem>> {
    let mut problems = Vec::new();
    check_top_level(config, &mut problems);
    let notify = match &config.notify_url {
        Some(u) => match NotifyTarget::parse(u) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(Problem::new("notify_url", e));
                None
            }
        },
        None => None,
    };
    if config.daemons.is_empty() {
        problems.push(Problem::new("daemons", "at least one daemon is required"));
    }

    // Names, duplicates.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, d) in config.daemons.iter().enumerate() {
        if !valid_name(&d.name) {
            problems.push(Problem::new(
                format!("daemons[{i}].name"),
                format!(
                    "{:?} is not a valid name (1-64 of A-Z a-z 0-9 - _ .)",
                    d.name
                ),
            ));
        } else if d.name == "init" {
            problems.push(Problem::new(
                format!("daemons[{i}].name"),
                "\"init\" is reserved for init's own log lines",
            ));
        }
        if let Some(&first) = index.get(d.name.as_str()) {
            problems.push(Problem::new(
                format!("daemons[{i}].name"),
                format!("duplicate name {:?} (also daemons[{first}])", d.name),
            ));
        } else {
            index.insert(&d.name, i);
        }
    }

    // Per-daemon fields and dependency names.
    let mut all_deps: Vec<Vec<usize>> = vec![Vec::new(); config.daemons.len()];
    for (i, d) in config.daemons.iter().enumerate() {
        check_daemon(i, d, &mut problems);
        for (j, dep) in d.depends_on.iter().enumerate() {
            match index.get(dep.name()) {
                Some(&k) => {
                    if !all_deps[i].contains(&k) {
                        all_deps[i].push(k)
                    }
                }
                None => problems.push(Problem::new(
                    format!("daemons[{i}].depends_on[{j}]"),
                    format!("unknown daemon {:?}", dep.name()),
                )),
            }
        }
    }
    for cycle in graph::find_cycles(&all_deps) {
        let mut spelled: Vec<&str> = cycle
            .iter()
            .map(|&k| config.daemons[k].name.as_str())
            .collect();
        spelled.push(spelled[0]);
        problems.push(Problem::new(
            format!("daemons[{}].depends_on", cycle[0]),
            format!("dependency cycle {}", spelled.join(" -> ")),
        ));
    }

    // Selection.
    let enabled: Vec<bool> = match selection.map(str::trim).filter(|s| !s.is_empty()) {
        None => vec![true; config.daemons.len()],
        Some(sel) => {
            let mut on = vec![false; config.daemons.len()];
            for name in sel.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match index.get(name) {
                    Some(&k) => on[k] = true,
                    None => {
                        let known: Vec<&str> =
                            config.daemons.iter().map(|d| d.name.as_str()).collect();
                        problems.push(Problem::new(
                            SELECT_ENV,
                            format!("unknown daemon {name:?} (known: {})", known.join(", ")),
                        ))
                    }
                }
            }
            on
        }
    };
    for (i, d) in config.daemons.iter().enumerate() {
        if !enabled[i] {
            continue;
        }
        for (j, dep) in d.depends_on.iter().enumerate() {
            if let Some(&k) = index.get(dep.name()) {
                if !enabled[k] && !dep.optional() {
                    problems.push(Problem::new(
                        format!("daemons[{i}].depends_on[{j}]"),
                        format!(
                            "{:?} needs {:?}, which {SELECT_ENV} does not enable (enable it, or write {{\"name\": {:?}, \"optional\": true}})",
                            d.name, dep.name(), dep.name()
                        ),
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    // Build the plan over enabled daemons only.
    let old_to_new: Vec<Option<usize>> = {
        let mut next = 0;
        enabled
            .iter()
            .map(|&on| {
                on.then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    };
    let mut daemons: Vec<DaemonPlan> = Vec::new();
    for (i, d) in config.daemons.iter().enumerate() {
        if !enabled[i] {
            continue;
        }
        let deps = all_deps[i].iter().filter_map(|&k| old_to_new[k]).collect();
        daemons.push(DaemonPlan {
            name: d.name.clone(),
            argv: d.argv.clone(),
            env: d.env.clone(),
            user: d.user.as_deref().and_then(parse_user),
            probe: d.ready.as_ref().and_then(|p| Probe::parse(p).ok()),
            deps,
            dependents: Vec::new(),
            restart: d.restart,
            grace: Duration::from_millis(d.grace_ms.unwrap_or(config.grace_ms)),
            reload_signal: d.reload_signal.as_deref().and_then(signals::parse),
            forward_signals: d
                .forward_signals
                .iter()
                .filter_map(|s| signals::parse(s))
                .collect(),
            ready_timeout: Duration::from_millis(d.ready_timeout_ms),
            on_ready_timeout: d.on_ready_timeout,
            credentials: d.credentials.clone(),
        });
    }
    let deps: Vec<Vec<usize>> = daemons.iter().map(|d| d.deps.clone()).collect();
    for (i, ds) in graph::dependents(&deps).into_iter().enumerate() {
        daemons[i].dependents = ds;
    }
    Ok(Plan {
        daemons,
        grace: Duration::from_millis(config.grace_ms),
        max_restarts: config.crash_loop.max_restarts,
        crash_window: Duration::from_millis(config.crash_loop.window_ms),
        notify,
        credentials_root: config
            .credentials_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CREDENTIALS_ROOT)),
        handlers: config.handlers.clone(),
    })
}

fn check_top_level(config: &Config, problems: &mut Vec<Problem>) {
    if config.crash_loop.window_ms == 0 {
        problems.push(Problem::new(
            "crash_loop.window_ms",
            "must be greater than 0",
        ));
    }
    if config.grace_ms > 3_600_000 {
        problems.push(Problem::new("grace_ms", "must be at most 3600000 (1 hour)"));
    }
    if let Some(s) = &config.socket {
        if s.as_os_str().is_empty() {
            problems.push(Problem::new("socket", "must not be empty"));
        }
    }
    if let Some(root) = &config.credentials_root {
        if !root.is_absolute() {
            problems.push(Problem::new("credentials_root", "must be an absolute path"));
        }
    }
    if let Some(h) = &config.handlers {
        if h.first_uid == 0 || h.first_uid > h.last_uid {
            problems.push(Problem::new(
                "handlers.first_uid",
                "the handler uid range must be non-empty and must not include 0 (root)",
            ));
        }
        if (h.first_uid..=h.last_uid).contains(&h.client_uid) {
            problems.push(Problem::new(
                "handlers.client_uid",
                "pack-exec's uid must not be inside the handler uid range",
            ));
        }
        for uid in config
            .daemons
            .iter()
            .filter_map(|d| d.user.as_deref().and_then(parse_user))
        {
            if (h.first_uid..=h.last_uid).contains(&uid.uid) {
                problems.push(Problem::new(
                    "handlers.first_uid",
                    format!(
                        "uid {} of a daemon is inside the handler uid range",
                        uid.uid
                    ),
                ));
            }
        }
        if !h.socket.is_absolute() || !h.tmp_dir.is_absolute() {
            problems.push(Problem::new(
                "handlers",
                "socket and tmp_dir must be absolute paths",
            ));
        }
        let l = h.limits;
        if l.processes == 0 || l.address_space_bytes < (16 << 20) || l.open_files < 16 {
            problems.push(Problem::new(
                "handlers.limits",
                "processes must be > 0, address_space_bytes >= 16 MiB, open_files >= 16",
            ));
        }
    }
}

fn check_daemon(i: usize, d: &DaemonConfig, problems: &mut Vec<Problem>) {
    let at = |field: &str| format!("daemons[{i}].{field}");
    match d.argv.first() {
        None => problems.push(Problem::new(
            at("argv"),
            "must not be empty (argv[0] is the program)",
        )),
        Some(p) if p.is_empty() => {
            problems.push(Problem::new(at("argv[0]"), "program must not be empty"))
        }
        Some(_) => {}
    }
    for (j, a) in d.argv.iter().enumerate() {
        if a.contains('\0') {
            problems.push(Problem::new(
                at(&format!("argv[{j}]")),
                "contains a NUL byte",
            ));
        }
    }
    for (k, v) in &d.env {
        // Never echo values: they may be secrets.
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            problems.push(Problem::new(
                at(&format!("env.{k}")),
                "variable names must be non-empty without '=' or NUL",
            ));
        }
        if v.contains('\0') {
            problems.push(Problem::new(
                at(&format!("env.{k}")),
                "value contains a NUL byte",
            ));
        }
    }
    for (name, source) in &d.credentials {
        if !valid_credential_name(name) {
            problems.push(Problem::new(
                at(&format!("credentials.{name}")),
                "a credential's file name is one path component of A-Z a-z 0-9 . _ - (not . or ..)",
            ));
        }
        if !source.is_absolute() {
            problems.push(Problem::new(
                at(&format!("credentials.{name}")),
                "the source must be an absolute path",
            ));
        }
    }
    let uid = d.user.as_deref().and_then(parse_user).map(|u| u.uid);
    if !d.credentials.is_empty() && uid.is_none_or(|u| u == 0) {
        problems.push(Problem::new(
            at("credentials"),
            "a daemon holding credentials needs its own non-root \"user\" (the credentials directory is owned by it)",
        ));
    }
    if let Some(u) = &d.user {
        if parse_user(u).is_none() {
            problems.push(Problem::new(
                at("user"),
                format!("{u:?} is not \"UID\" or \"UID:GID\" (numbers, e.g. \"65534:65534\")"),
            ));
        }
    }
    if let Some(p) = &d.ready {
        if let Err(e) = Probe::parse(p) {
            problems.push(Problem::new(at("ready"), e));
        }
    }
    if let Some(s) = &d.reload_signal {
        match signals::parse(s) {
            None => problems.push(Problem::new(
                at("reload_signal"),
                format!("unknown signal {s:?}"),
            )),
            Some(sig) => {
                if let Some(why) = signals::why_not_reload(sig) {
                    problems.push(Problem::new(
                        at("reload_signal"),
                        format!("{s} is not allowed: {why}"),
                    ));
                }
            }
        }
    }
    for (j, s) in d.forward_signals.iter().enumerate() {
        let path = at(&format!("forward_signals[{j}]"));
        match signals::parse(s) {
            None => problems.push(Problem::new(path, format!("unknown signal {s:?}"))),
            Some(sig) => {
                if let Some(why) = signals::why_not_forwardable(sig) {
                    problems.push(Problem::new(
                        path,
                        format!("{s} cannot be forwarded: {why}"),
                    ));
                }
            }
        }
    }
    if d.ready_timeout_ms == 0 {
        problems.push(Problem::new(
            at("ready_timeout_ms"),
            "must be greater than 0",
        ));
    }
    if d.grace_ms.is_some_and(|g| g > 3_600_000) {
        problems.push(Problem::new(
            at("grace_ms"),
            "must be at most 3600000 (1 hour)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn problems(json: &str, sel: Option<&str>) -> Vec<String> {
        let c = parse(json.as_bytes()).unwrap();
        match plan(&c, sel) {
            Ok(_) => vec![],
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn reports_every_problem_with_paths() {
        let p = problems(
            r#"{"daemons": [
                {"name": "a", "argv": ["x"], "depends_on": ["b"]},
                {"name": "b", "argv": ["x"], "depends_on": ["a", "nope"]},
                {"name": "a", "argv": []},
                {"name": "c", "argv": ["x"], "user": "nobody", "reload_signal": "SIGFOO",
                 "forward_signals": ["SIGUSR1", "SIGTERM", "BOGUS"], "ready": {"tcp": 0}}
            ], "notify_url": "https://x"}"#,
            None,
        );
        let want = [
            "notify_url: ",
            "daemons[2].name: duplicate name \"a\" (also daemons[0])",
            "daemons[1].depends_on[1]: unknown daemon \"nope\"",
            "daemons[2].argv: must not be empty",
            "daemons[3].user: \"nobody\" is not",
            "daemons[3].reload_signal: unknown signal \"SIGFOO\"",
            "daemons[3].forward_signals[1]: SIGTERM cannot be forwarded",
            "daemons[3].forward_signals[2]: unknown signal \"BOGUS\"",
            "daemons[3].ready: tcp port",
            "daemons[0].depends_on: dependency cycle a -> b -> a",
        ];
        for w in want {
            assert!(
                p.iter().any(|x| x.starts_with(w)),
                "missing {w:?} in {p:#?}"
            );
        }
        assert_eq!(p.len(), want.len(), "{p:#?}");
    }

    #[test]
    fn selection_unknown_name_and_missing_dependency() {
        let json = r#"{"daemons": [
            {"name": "egress", "argv": ["x"]},
            {"name": "gg", "argv": ["x"]},
            {"name": "pipelock", "argv": ["x"], "depends_on": ["egress", {"name": "gg", "optional": true}]}
        ]}"#;
        assert!(problems(json, Some("egress,pipelock")).is_empty());
        let p = problems(json, Some("pipelock,bogus"));
        assert!(
            p.iter()
                .any(|x| x.starts_with("SIDECARS_DAEMONS: unknown daemon \"bogus\"")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|x| x.starts_with("daemons[2].depends_on[0]: \"pipelock\" needs \"egress\"")),
            "{p:?}"
        );

        let c = parse(json.as_bytes()).unwrap();
        let plan = plan(&c, Some("egress, pipelock")).unwrap();
        assert_eq!(plan.daemons.len(), 2);
        assert_eq!(plan.daemons[1].deps, vec![0]);
        assert_eq!(plan.daemons[0].dependents, vec![1]);
        let all = super::plan(&c, None).unwrap();
        assert_eq!(all.daemons[2].deps, vec![0, 1]);
    }

    #[test]
    fn users() {
        assert_eq!(
            parse_user("65534:65534"),
            Some(User {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(
            parse_user("1000"),
            Some(User {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!(parse_user("a:b"), None);
        assert_eq!(parse_user("1:"), None);
    }

    #[test]
    fn env_values_are_never_echoed() {
        let p = problems(
            r#"{"daemons": [{"name": "a", "argv": ["x"], "env": {"A=B": "s3cret"}}]}"#,
            None,
        );
        assert_eq!(p.len(), 1);
        assert!(!p[0].contains("s3cret"));
    }
}
