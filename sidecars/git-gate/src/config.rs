//! `git-gate.json`: the repositories served, where their mirrors live, where credentials are.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sidecars_common::config::Validate;
use sidecars_common::daemon::DaemonConfig;

/// The daemon's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The git:// listener.
    pub listen: SocketAddr,
    /// Where the bare mirrors live (`<base_dir>/<name>.git`).
    pub base_dir: PathBuf,
    /// The repositories served; nothing else is.
    pub repos: Vec<RepoConfig>,
    /// Directory of credential files, named by each repo's `credential`.
    pub credentials_dir: PathBuf,
    /// A fetch or clone by the agent refreshes the mirror from upstream at most this often.
    pub min_fetch_interval_s: u64,
    /// Most concurrent git connections; more wait in the accept backlog.
    pub max_connections: usize,
    /// Program the pre-receive hook runs (`<program> git-gate-hook pre-receive`). Default:
    /// this executable, which is the `sidecars` multi-call binary in production.
    pub hook_program: Option<PathBuf>,
    /// Longest a single upstream fetch or push may take, in seconds.
    pub upstream_timeout_s: u64,
    /// Largest push accepted: the total size of the objects it brings (as git stores them).
    pub max_push_bytes: u64,
    /// Largest file (blob) a push may bring.
    pub max_file_bytes: u64,
    /// Directory holding the `pre-receive` hook every push runs (`core.hooksPath`, passed on
    /// receive-pack's command line). In the image it is read-only: no process can rewrite it.
    pub hooks_dir: PathBuf,
    /// The operator's DLP allowlist (`bottle_spec::DlpAllow`): findings it names (and files
    /// under its `paths`) are dropped. Never read from anything the agent writes.
    pub dlp_allow: bottle_spec::DlpAllow,
}

/// Where the image ships the hook (read-only root filesystem).
pub const DEFAULT_HOOKS_DIR: &str = "/usr/share/sidecars/git-hooks";

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9418)),
            base_dir: PathBuf::from("/git"),
            repos: Vec::new(),
            credentials_dir: PathBuf::from("/run/secrets/git-gate"),
            min_fetch_interval_s: 5,
            max_connections: 64,
            hook_program: None,
            upstream_timeout_s: 300,
            max_push_bytes: 512 << 20,
            max_file_bytes: 50 << 20,
            hooks_dir: PathBuf::from(DEFAULT_HOOKS_DIR),
            dlp_allow: bottle_spec::DlpAllow::default(),
        }
    }
}

/// One served repository.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Name in the agent's URL: `git://sidecars:9418/<name>` (or `<name>.git`).
    pub name: String,
    /// Where pushes go and fetches come from: `https://`, `http://`, `git://`, `file://` URL
    /// or an absolute path.
    pub upstream: String,
    /// File name in `credentials_dir` for an http(s) upstream; none for other schemes.
    #[serde(default)]
    pub credential: Option<String>,
    /// Branches that may be neither deleted nor rewritten (non-fast-forward).
    #[serde(default)]
    pub protect: Vec<String>,
    /// Paths (globs: `*` within a segment, `**` across) no pushed commit may add, change or
    /// delete. Absent: `bottle_spec::DEFAULT_DENY_PATHS` (CI configuration); `[]` relaxes.
    #[serde(default)]
    pub deny_paths: Option<Vec<String>>,
}

impl RepoConfig {
    /// The repository's `deny_paths`, defaults filled in.
    pub fn deny_paths(&self) -> Vec<String> {
        match &self.deny_paths {
            Some(paths) => paths.clone(),
            None => bottle_spec::DEFAULT_DENY_PATHS.map(String::from).to_vec(),
        }
    }
}

/// True for names we can put in a path and a URL without surprises.
pub fn valid_repo_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(['.', '-'])
        && !name.ends_with(".git")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The upstream's kind, which decides how credentials are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// `http://` or `https://`: credentials as an HTTP header.
    Http,
    /// `git://`: anonymous.
    Git,
    /// `file://` or an absolute path: local.
    Local,
}

/// Classify an upstream URL; `None` for schemes git-gate does not support (ssh, ext, ...).
pub fn upstream_kind(upstream: &str) -> Option<UpstreamKind> {
    let lower = upstream.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        Some(UpstreamKind::Http)
    } else if lower.starts_with("git://") {
        Some(UpstreamKind::Git)
    } else if lower.starts_with("file://") || upstream.starts_with('/') {
        Some(UpstreamKind::Local)
    } else {
        None
    }
}

impl Validate for Config {
    fn problems(&self) -> Vec<String> {
        let mut p = self.dlp_allow.problem_lines();
        let mut names = HashSet::new();
        for (i, r) in self.repos.iter().enumerate() {
            if !valid_repo_name(&r.name) {
                p.push(format!(
                    "repos[{i}].name: {:?} must be 1-100 of [A-Za-z0-9._-], not start with '.' or '-', not end in .git",
                    r.name
                ));
            }
            if !names.insert(r.name.as_str()) {
                p.push(format!("repos[{i}].name: {:?} is listed twice", r.name));
            }
            match upstream_kind(&r.upstream) {
                None => p.push(format!(
                    "repos[{i}].upstream: use an https://, http://, git://, file:// URL or an absolute path (ssh is not supported)"
                )),
                Some(UpstreamKind::Http) => {
                    if r.upstream.split("://").nth(1).is_some_and(|rest| rest.split('/').next().is_some_and(|auth| auth.contains('@'))) {
                        p.push(format!("repos[{i}].upstream: put credentials in credentials_dir, not in the URL"));
                    }
                }
                Some(_) => {
                    if r.credential.is_some() {
                        p.push(format!("repos[{i}].credential: only http(s) upstreams take a credential"));
                    }
                }
            }
            if let Some(c) = &r.credential {
                if c.is_empty() || c.contains('/') || c.starts_with('.') {
                    p.push(format!(
                        "repos[{i}].credential: {c:?} must be a plain file name in credentials_dir"
                    ));
                }
            }
            for (j, glob) in r.deny_paths().iter().enumerate() {
                if let Err(e) = bottle_spec::repo_path_glob(glob) {
                    p.push(format!("repos[{i}].deny_paths[{j}]: {e}"));
                }
            }
            for (j, b) in r.protect.iter().enumerate() {
                if b.is_empty() || b.starts_with("refs/") || b.contains("..") {
                    p.push(format!(
                        "repos[{i}].protect[{j}]: {b:?} must be a branch name such as \"main\""
                    ));
                }
            }
        }
        if self.max_connections == 0 {
            p.push("max_connections: must be at least 1".into());
        }
        if self.max_push_bytes == 0 || self.max_file_bytes == 0 {
            p.push("max_push_bytes/max_file_bytes: must be at least 1".into());
        }
        if self.upstream_timeout_s == 0 {
            p.push("upstream_timeout_s: must be at least 1".into());
        }
        if !self.base_dir.is_absolute() {
            p.push("base_dir: must be an absolute path".into());
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

    #[test]
    fn defaults() {
        let c: Config = parse("", "git-gate.json").unwrap();
        assert_eq!(c.listen.port(), 9418);
        assert_eq!(c.base_dir, PathBuf::from("/git"));
        assert_eq!(c.min_fetch_interval_s, 5);
    }

    #[test]
    fn bad_repos_are_all_reported() {
        let err = parse::<Config>(
            r#"{"repos":[
                {"name":"../x","upstream":"/srv/x.git"},
                {"name":"a","upstream":"ssh://h/a.git"},
                {"name":"b","upstream":"https://u:p@h/b.git"},
                {"name":"c","upstream":"/srv/c.git","credential":"tok"}
            ]}"#,
            "git-gate.json",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "repos[0].name",
            "repos[1].upstream",
            "repos[2].upstream",
            "repos[3].credential",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
    }

    #[test]
    fn repo_names() {
        for ok in ["app", "my-repo", "a.b_c"] {
            assert!(valid_repo_name(ok), "{ok}");
        }
        for bad in ["", ".git", "..", "a/b", "-x", "app.git", "a b", "/abs"] {
            assert!(!valid_repo_name(bad), "{bad}");
        }
    }
}
