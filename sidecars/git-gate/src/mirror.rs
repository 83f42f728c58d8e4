//! The bare mirrors under `base_dir`: creation, the installed hook, and refreshes from upstream.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::RepoConfig;
use crate::credentials::{credential_path, upstream_env, CredentialError};
use crate::git::{git, GitError};

/// The pre-receive hook every push runs. It is not installed in the mirrors: the image ships
/// it read-only (`/usr/share/sidecars/git-hooks/pre-receive`, from `hooks/pre-receive` in this
/// crate) and git-gate runs receive-pack with `-c core.hooksPath=<hooks_dir>`, which outranks
/// any repository config — so no process, git-gate's own uid included, can swap the hook at
/// run time. It only hands over to the `sidecars` binary named in the environment of the
/// receive-pack git-gate spawns.
pub const HOOK_SCRIPT: &str = include_str!("../hooks/pre-receive");

/// Why a mirror could not be prepared or refreshed.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// A git command failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The credential is unusable.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// Writing the hook or attributes failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One served repository and its mirror.
#[derive(Debug)]
pub struct Mirror {
    /// The configured repo.
    pub repo: RepoConfig,
    /// `<base_dir>/<name>.git`.
    pub path: PathBuf,
    /// The credential file, if any.
    pub credential_file: Option<PathBuf>,
    /// When the last fetch was attempted; the lock also coalesces concurrent refreshes.
    last_fetch: Mutex<Option<Instant>>,
    /// HEAD follows the upstream's default branch. Until it does (the upstream was unreachable
    /// at start), every successful refresh tries again: otherwise the agent's clones would find
    /// HEAD naming a branch the upstream does not have and check nothing out.
    head_known: AtomicBool,
    timeout: Duration,
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), MirrorError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| MirrorError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(path, text).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)
}

impl Mirror {
    /// The mirror of `repo` under `base_dir`.
    pub fn new(
        repo: RepoConfig,
        base_dir: &Path,
        credentials_dir: &Path,
        timeout: Duration,
    ) -> Mirror {
        Mirror {
            path: base_dir.join(format!("{}.git", repo.name)),
            credential_file: credential_path(&repo, credentials_dir),
            repo,
            last_fetch: Mutex::new(None),
            head_known: AtomicBool::new(false),
            timeout,
        }
    }

    fn env(&self) -> Result<Vec<(OsString, OsString)>, CredentialError> {
        upstream_env(&self.repo.upstream, self.credential_file.as_deref())
    }

    /// Create the mirror if needed, (re)apply its settings, empty its own hooks dir (never
    /// used: see [`HOOK_SCRIPT`]), fetch from upstream
    /// and point HEAD at the upstream's default branch.
    pub async fn ensure(&self) -> Result<(), MirrorError> {
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        if !self.path.join("HEAD").exists() {
            git(
                parent,
                [
                    OsString::from("init"),
                    "--bare".into(),
                    "--quiet".into(),
                    self.path.clone().into(),
                ],
                &[],
                self.timeout,
            )
            .await?;
        }
        for (key, value) in [
            // Check every pushed object; refuse corrupt or malicious packs.
            ("receive.fsckObjects", "true"),
            // Protection is the hook's job; let it see deletions so it can explain refusals.
            ("receive.denyDeletes", "false"),
            ("receive.denyDeleteCurrent", "false"),
            ("core.logAllRefUpdates", "false"),
        ] {
            git(&self.path, ["config", key, value], &[], self.timeout).await?;
        }
        let hooks = self.path.join("hooks");
        if let Ok(entries) = std::fs::read_dir(&hooks) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let info = self.path.join("info");
        std::fs::create_dir_all(&info).map_err(|source| MirrorError::Io {
            path: info.clone(),
            source,
        })?;
        // Highest-precedence attributes: a pushed .gitattributes cannot mark a text file
        // `-diff`/`binary` to hide it from the scan. Real binaries are still detected by git.
        write(&info.join("attributes"), "* !diff\n", 0o644)?;
        self.fetch().await?;
        self.set_head().await;
        Ok(())
    }

    /// Point HEAD at the upstream's default branch (best effort: an empty upstream has none).
    async fn set_head(&self) {
        let Ok(env) = self.env() else { return };
        let out = match git(
            &self.path,
            ["ls-remote", "--symref", &self.repo.upstream, "HEAD"],
            &env,
            self.timeout,
        )
        .await
        {
            Ok(out) => out,
            Err(err) => {
                tracing::warn!(repo = %self.repo.name, %err, "cannot read the upstream's HEAD");
                return;
            }
        };
        let text = String::from_utf8_lossy(&out);
        let target = text.lines().find_map(|l| {
            l.strip_prefix("ref: ")
                .and_then(|r| r.split('\t').next())
                .filter(|r| r.starts_with("refs/heads/"))
        });
        if let Some(target) = target {
            match git(
                &self.path,
                ["symbolic-ref", "HEAD", target],
                &[],
                self.timeout,
            )
            .await
            {
                Ok(_) => self.head_known.store(true, Ordering::Relaxed),
                Err(err) => tracing::warn!(repo = %self.repo.name, %err, "cannot set HEAD"),
            }
        }
    }

    /// Fetch branches and tags from upstream, pruning what upstream deleted.
    pub async fn fetch(&self) -> Result<(), MirrorError> {
        let env = self.env()?;
        let started = std::time::Instant::now();
        git(
            &self.path,
            [
                "fetch",
                "--quiet",
                "--prune",
                "--no-write-fetch-head",
                &self.repo.upstream,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ],
            &env,
            self.timeout,
        )
        .await?;
        tracing::debug!(repo = %self.repo.name, ms = started.elapsed().as_millis() as u64, "mirror refreshed");
        Ok(())
    }

    /// Refresh before serving the agent, at most once per `min_interval`; concurrent callers
    /// share one fetch. An unreachable upstream is logged and the mirror served as it is.
    pub async fn refresh(&self, min_interval: Duration) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < min_interval) {
            return;
        }
        match self.fetch().await {
            Ok(()) if !self.head_known.load(Ordering::Relaxed) => self.set_head().await,
            Ok(()) => {}
            Err(err) => {
                tracing::warn!(repo = %self.repo.name, %err, "upstream fetch failed; serving the mirror as it is")
            }
        }
        *last = Some(Instant::now());
    }
}
