//! `sidecars git-gate-hook pre-receive`: the check every push passes before it lands.
//!
//! Runs inside `git receive-pack` (cwd = the mirror, new objects in the quarantine that git
//! exposes through the environment). In order: ref policy (deletions, force pushes), secret
//! scan of every new commit, then the push to the upstream with git-gate's credentials. Only
//! when the upstream accepted does the hook exit 0 and the mirror's refs move. Everything it
//! prints reaches the pushing client as `remote:` lines; nothing it prints contains a secret.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use scanner::{values_from_text, Scanner, SecretConfig};
use serde::{Deserialize, Serialize};

use crate::credentials::upstream_env;
use crate::rules::{Policy, RefUpdate};
use crate::scan::{scan_diff, Leak, Stats};

/// Environment variable carrying [`HookSettings`] as JSON (set by git-gate on receive-pack).
pub const SETTINGS_ENV: &str = "GIT_GATE_HOOK";
/// Environment variable naming the program the hook script execs.
pub const PROGRAM_ENV: &str = "GIT_GATE_HOOK_BIN";

/// What the hook needs to know, handed over by git-gate for one push.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HookSettings {
    /// Repository name (for messages and logs).
    pub repo: String,
    /// Where the push is forwarded.
    pub upstream: String,
    /// The upstream's credential file, if any.
    pub credential_file: Option<PathBuf>,
    /// Branches that may be neither deleted nor rewritten.
    pub protect: Vec<String>,
    /// Files whose contents must never be pushed (git-gate's own credentials).
    pub secret_files: Vec<PathBuf>,
    /// Longest the upstream push may take, in seconds.
    pub upstream_timeout_s: u64,
    /// Path globs no new commit may add, change or delete (the repository's `deny_paths`).
    #[serde(default)]
    pub deny_paths: Vec<String>,
    /// Largest push (objects brought, in bytes); 0 = no limit.
    #[serde(default)]
    pub max_push_bytes: u64,
    /// Largest file a push may bring, in bytes; 0 = no limit.
    #[serde(default)]
    pub max_file_bytes: u64,
    /// The operator's DLP allowlist.
    #[serde(default)]
    pub dlp_allow: bottle_spec::DlpAllow,
}

/// A refusal or failure, as lines for the client.
type Refusal = Vec<String>;

/// Entry point of `sidecars git-gate-hook pre-receive`.
pub fn pre_receive_main() -> ExitCode {
    let stdin = std::io::stdin();
    let mut stderr = std::io::stderr();
    let result = std::env::var(SETTINGS_ENV)
        .map_err(|_| {
            vec![format!(
                "{SETTINGS_ENV} is not set: receive-pack was not started by git-gate"
            )]
        })
        .and_then(|s| {
            serde_json::from_str::<HookSettings>(&s)
                .map_err(|e| vec![format!("bad {SETTINGS_ENV}: {e}")])
        })
        .and_then(|settings| pre_receive(&settings, stdin.lock()));
    match result {
        Ok(lines) => {
            for l in lines {
                let _ = writeln!(stderr, "git-gate: {l}");
            }
            ExitCode::SUCCESS
        }
        Err(lines) => {
            let _ = writeln!(stderr, "git-gate: push refused");
            for l in lines {
                let _ = writeln!(stderr, "git-gate: {l}");
            }
            ExitCode::FAILURE
        }
    }
}

fn git(args: &[&str]) -> Command {
    let mut c = Command::new("git");
    c.args(args);
    c
}

fn git_ok(args: &[&str]) -> Result<String, Refusal> {
    crate::objects::git_bytes(args).map(|out| String::from_utf8_lossy(&out).trim().to_string())
}

/// The whole check for the updates read from `input`. `Ok` lines are informational.
pub fn pre_receive(settings: &HookSettings, input: impl BufRead) -> Result<Vec<String>, Refusal> {
    let mut updates = Vec::new();
    for line in input.lines() {
        let line = line.map_err(|e| vec![format!("cannot read the ref updates: {e}")])?;
        if line.trim().is_empty() {
            continue;
        }
        updates.push(
            RefUpdate::parse(&line)
                .ok_or_else(|| vec![format!("malformed ref update {line:?}")])?,
        );
    }
    if updates.is_empty() {
        return Ok(Vec::new());
    }

    // 1. Ref policy.
    let policy = Policy {
        default_branch: git_ok(&["symbolic-ref", "-q", "--short", "HEAD"])
            .ok()
            .filter(|s| !s.is_empty()),
        protect: settings.protect.clone(),
    };
    let mut refusals = Vec::new();
    for u in &updates {
        let ff = if u.is_create() || u.is_delete() || !u.name.starts_with("refs/heads/") {
            true
        } else {
            git(&["merge-base", "--is-ancestor", &u.old, &u.new])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if let Some(why) = policy.check(u, ff) {
            refusals.push(why);
        }
    }
    if !refusals.is_empty() {
        return Err(refusals);
    }

    let tips: Vec<&str> = updates
        .iter()
        .filter(|u| !u.is_delete())
        .map(|u| u.new.as_str())
        .collect();

    // 2. Size limits, before anything is read for scanning.
    if !tips.is_empty() {
        crate::objects::check_sizes(&tips, settings.max_push_bytes, settings.max_file_bytes)?;
    }

    // 2b. Path policy: no new commit touches a denied path.
    let commitish: Vec<String> = tips
        .iter()
        .filter_map(|t| crate::objects::peel_commit(t))
        .collect();
    let commitish: Vec<&str> = commitish.iter().map(String::as_str).collect();
    if !commitish.is_empty() && !settings.deny_paths.is_empty() {
        let touched = denied_paths(&commitish, &settings.deny_paths)?;
        if !touched.is_empty() {
            let mut lines = vec![format!(
                "{} change(s) to paths this repository refuses (CI configuration runs with the repository's secrets):",
                touched.len()
            )];
            lines.extend(touched.iter().map(|(commit, path)| {
                format!(
                    "  commit {} changes {path}",
                    &commit[..commit.len().min(12)]
                )
            }));
            lines.push("drop those changes from the pushed commits; the operator may relax `deny_paths` for this repository".into());
            return Err(lines);
        }
    }

    // 3. Secret scan: what every ref now points at (tags, blobs, trees), the messages and
    // identities of every new commit, and the added lines of every new commit.
    let (leaks, stats) = if tips.is_empty() {
        (Vec::new(), Stats::default())
    } else {
        let scanner = scanner(settings)?;
        let mut leaks = Vec::new();
        let mut budget = crate::objects::MAX_OBJECT_BYTES;
        for tip in &tips {
            crate::objects::scan_ref_target(tip, &scanner, &mut budget, &mut leaks)?;
        }
        // The commits the refs peel to, as the path policy saw them.
        let commits = &commitish;
        leaks.extend(crate::objects::scan_commit_metadata(commits, &scanner)?);
        crate::objects::scan_binaries(commits, &scanner, &mut budget, &mut leaks)?;
        let (diff_leaks, stats) = if commits.is_empty() {
            (Vec::new(), Stats::default())
        } else {
            scan_new_commits(commits, &scanner)?
        };
        leaks.extend(diff_leaks);
        // Files the operator exempts (fixtures, say); never a message, identity or tag.
        // (Places in parentheses — `(commit message)`, `(author)`, `(blob)` — are not files.)
        leaks.retain(|l| l.path.starts_with('(') || !settings.dlp_allow.path_allowed(&l.path));
        (leaks, stats)
    };
    if !leaks.is_empty() {
        let mut lines = vec![format!(
            "{} secret(s) found in the pushed commits (every new commit is checked, so removing a secret in a later commit is not enough):",
            leaks.len()
        )];
        lines.extend(leaks.iter().map(|l: &Leak| format!("  {l}")));
        lines.push("rewrite the commits that add them (git rebase -i, git commit --amend), rotate the secret, and push again".into());
        return Err(lines);
    }

    // 4. Forward to the upstream, atomically, only over what we last saw there.
    let mut info = vec![format!(
        "scanned {} new commit(s), {} added line(s): no secrets",
        stats.commits, stats.lines
    )];
    forward(settings, &updates)?;
    info.push(format!(
        "forwarded {} ref update(s) to the upstream",
        updates.len()
    ));
    Ok(info)
}

/// Every (commit, path) of the new commits that adds, changes or deletes a path matching
/// one of `globs`. A merge counts for the paths it leaves different from every parent (`--cc`,
/// as the secret scan does): what a merged branch's own new commits change is listed with
/// those commits, and merging a branch already upstream is not refused for its history.
fn denied_paths(tips: &[&str], globs: &[String]) -> Result<Vec<(String, String)>, Refusal> {
    let globs: Vec<bottle_spec::path_glob::PathGlob> = globs
        .iter()
        .map(|g| bottle_spec::repo_path_glob(g).map_err(|e| vec![format!("deny_paths: {e}")]))
        .collect::<Result<_, _>>()?;
    let mut args = vec![
        "-c",
        "core.quotePath=false",
        "log",
        "--format=%H",
        "--name-only",
        "--cc",
        "--no-renames",
        "-z",
    ];
    args.extend_from_slice(tips);
    args.extend(["--not", "--all"]);
    let out = git_ok(&args)?;
    let mut found = Vec::new();
    let mut commit = String::new();
    for field in out.split('\0') {
        for line in field.split('\n').filter(|l| !l.is_empty()) {
            if line.len() == 40 && line.bytes().all(|b| b.is_ascii_hexdigit()) {
                commit = line.to_string();
            } else if globs.iter().any(|g| g.matches(&format!("/{line}")))
                && !found
                    .iter()
                    .any(|(c, p): &(String, String)| *c == commit && p == line)
            {
                found.push((commit.clone(), line.to_string()));
            }
        }
    }
    Ok(found)
}

fn scanner(settings: &HookSettings) -> Result<Scanner, Refusal> {
    let mut values = Vec::new();
    for f in &settings.secret_files {
        if let Ok(text) = std::fs::read_to_string(f) {
            values.extend(values_from_text(&text));
        }
    }
    Scanner::new(&SecretConfig {
        values,
        allow_regexes: settings.dlp_allow.regexes.clone(),
        allow_stopwords: settings.dlp_allow.stopwords.clone(),
        ..SecretConfig::default()
    })
    .map_err(|e| vec![e.to_string()])
}

/// `git rev-list <tips> --not --all | git diff-tree --stdin -p --cc` through the scanner.
/// `--all` is the mirror's refs as they were before this push (the quarantine holds the new
/// objects, the refs have not moved), i.e. exactly what the upstream already has.
fn scan_new_commits(tips: &[&str], scanner: &Scanner) -> Result<(Vec<Leak>, Stats), Refusal> {
    let fail = |what: &str, e: std::io::Error| vec![format!("cannot {what}: {e}")];
    let mut rev_list = git(&["rev-list"])
        .args(tips)
        .args(["--not", "--all"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail("list the new commits", e))?;
    let commits = rev_list
        .stdout
        .take()
        .ok_or_else(|| vec!["rev-list has no stdout".to_string()])?;
    let mut diff = git(&[
        "-c",
        "core.quotePath=true",
        "diff-tree",
        "--stdin",
        "-r",
        "-p",
        "--cc",
        "--root",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--no-renames",
        "--src-prefix=a/",
        "--dst-prefix=b/",
    ])
    .stdin(Stdio::from(commits))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .map_err(|e| fail("diff the new commits", e))?;
    let out = diff
        .stdout
        .take()
        .ok_or_else(|| vec!["diff-tree has no stdout".to_string()])?;
    let scanned = scan_diff(BufReader::with_capacity(256 * 1024, out), scanner);
    let rl = rev_list
        .wait_with_output()
        .map_err(|e| fail("list the new commits", e))?;
    let dt = diff
        .wait_with_output()
        .map_err(|e| fail("diff the new commits", e))?;
    if !rl.status.success() {
        return Err(vec![format!(
            "cannot list the new commits: {}",
            String::from_utf8_lossy(&rl.stderr).trim()
        )]);
    }
    if !dt.status.success() {
        return Err(vec![format!(
            "cannot diff the new commits: {}",
            String::from_utf8_lossy(&dt.stderr).trim()
        )]);
    }
    scanned.map_err(|e| fail("read the diff", e))
}

/// Push the updates to the upstream in one atomic push. Each ref carries a lease on the value
/// the mirror had, so an upstream that moved meanwhile refuses instead of being overwritten.
fn forward(settings: &HookSettings, updates: &[RefUpdate]) -> Result<(), Refusal> {
    let env: Vec<(OsString, OsString)> =
        upstream_env(&settings.upstream, settings.credential_file.as_deref())
            .map_err(|e| vec![format!("cannot use the upstream credential: {e}")])?;
    let mut args: Vec<String> = vec!["push".into(), "--porcelain".into(), "--atomic".into()];
    for u in updates {
        let expect = if u.is_create() {
            String::new()
        } else {
            u.old.clone()
        };
        args.push(format!("--force-with-lease={}:{}", u.name, expect));
    }
    args.push(settings.upstream.clone());
    for u in updates {
        if u.is_delete() {
            args.push(format!(":{}", u.name));
        } else {
            args.push(format!("{}:{}", u.new, u.name));
        }
    }
    let mut child = Command::new("git")
        .args(&args)
        .envs(env)
        // The new objects stay reachable through GIT_OBJECT_DIRECTORY and the alternates git
        // set for us; the quarantine marker itself must not leak into a local upstream's
        // receive-pack, which would refuse to update refs "inside quarantine".
        .env_remove("GIT_QUARANTINE_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| vec![format!("cannot run git push: {e}")])?;
    // Read both pipes on threads so a chatty upstream cannot deadlock us, with a deadline.
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + Duration::from_secs(settings.upstream_timeout_s);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = out_t.join().unwrap_or_default();
    let err = err_t.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(()),
        Some(_) => {
            let mut lines = vec!["the upstream refused the push:".to_string()];
            lines.extend(
                err.lines()
                    .chain(out.lines())
                    .map(str::trim_end)
                    .filter(|l| !l.is_empty() && *l != "Done" && !l.starts_with("To "))
                    .map(|l| format!("  {l}")),
            );
            Err(lines)
        }
        None => Err(vec![format!(
            "the upstream did not answer within {} s",
            settings.upstream_timeout_s
        )]),
    }
}
