//! git-gate: the agent's git remote (`git://sidecars:9418/<repo>`).
//!
//! At start git-gate creates or refreshes a bare mirror of each configured upstream under
//! `base_dir`, then serves them over git:// with real git (`upload-pack`, `receive-pack`).
//! Fetches refresh the mirror from upstream first (at most every `min_fetch_interval_s`).
//! Pushes pass a pre-receive hook — this same binary, `sidecars git-gate-hook pre-receive` —
//! that enforces the ref rules, scans every new commit's added lines with the shared secret
//! scanner, and forwards a clean push to the upstream with credentials the agent never sees.
//!
//! # Layout
//! | module | job |
//! | --- | --- |
//! | [`config`] | `git-gate.json`: repos, upstreams, credentials, limits |
//! | [`pktline`] | the git:// request line and `ERR` answers |
//! | [`server`] | accept loop; repo check, refresh, spawn and wire upload-pack/receive-pack |
//! | [`mirror`] | bare mirrors: creation, hook and attributes install, fetch, HEAD |
//! | [`credentials`] | upstream credentials as scoped HTTP headers via the environment |
//! | [`git`] | running git with a timeout |
//! | [`hook`] | the pre-receive check: rules, scan, forward to upstream |
//! | [`rules`] | ref-update policy (deletions, force pushes) |
//! | [`scan`] | diff parsing and secret scanning of added lines |
//! | [`objects`] | scanning commit messages and identities, annotated tags, blob and tree refs |
//! | [`cli`] | `sidecars git-gate` and `sidecars git-gate-hook` |
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod credentials;
pub mod git;
pub mod hook;
pub mod mirror;
pub mod objects;
pub mod pktline;
pub mod rules;
pub mod scan;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use sidecars_common::shutdown::Shutdown;

pub use config::Config;
use mirror::Mirror;

/// What every connection needs.
pub struct State {
    /// The validated config.
    pub config: Config,
    /// One mirror per configured repo.
    pub mirrors: Vec<Mirror>,
    /// The program the pre-receive hook execs.
    pub hook_program: PathBuf,
}

/// Why git-gate could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `base_dir` cannot be created.
    #[error("cannot create base_dir {path}: {source}")]
    BaseDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `hooks_dir` has no usable `pre-receive` hook.
    #[error("hooks_dir: {path}: {source} (the image ships the hook at /usr/share/sidecars/git-hooks/pre-receive)")]
    Hooks {
        /// The hook's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The hook program is unknown (no `hook_program` and no current executable).
    #[error("cannot find the hook program: {0}")]
    HookProgram(std::io::Error),
    /// Serving failed.
    #[error("listener: {0}")]
    Serve(std::io::Error),
}

/// The repo name a request path asks for: `/app`, `/app.git`, `app.git/` → `app`. Anything
/// that is not a plain name (`..`, slashes, absolute paths, `~user`) is refused here, before
/// any lookup, so no path ever reaches the filesystem.
pub fn repo_from_path(path: &str) -> Result<&str, &'static str> {
    let p = path.strip_prefix('/').unwrap_or(path);
    let p = p.strip_suffix('/').unwrap_or(p);
    let p = p.strip_suffix(".git").unwrap_or(p);
    if p.contains("..") || p.contains('/') || p.starts_with('~') || !config::valid_repo_name(p) {
        return Err("invalid repository path");
    }
    Ok(p)
}

/// The hook must exist and be executable; a hook git-gate's own uid could rewrite is logged,
/// since the wall is that nothing in the container can (see [`mirror::HOOK_SCRIPT`]).
fn check_hooks_dir(dir: &std::path::Path) -> Result<(), RunError> {
    use std::os::unix::fs::MetadataExt;
    let hook = dir.join("pre-receive");
    let meta = std::fs::metadata(&hook).map_err(|source| RunError::Hooks {
        path: hook.clone(),
        source,
    })?;
    if !meta.is_file() || meta.mode() & 0o111 == 0 {
        return Err(RunError::Hooks {
            path: hook,
            source: std::io::Error::other("not an executable file"),
        });
    }
    let writable = nix::unistd::access(&hook, nix::unistd::AccessFlags::W_OK).is_ok()
        && !is_read_only_mount(&hook);
    if writable {
        tracing::warn!(
            hook = %hook.display(),
            "the pre-receive hook is writable by git-gate's uid; in the image it is read-only"
        );
    }
    Ok(())
}

fn is_read_only_mount(path: &std::path::Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// Prepare the mirrors, then serve git:// on `listener` until `shutdown`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: Shutdown,
) -> Result<(), RunError> {
    std::fs::create_dir_all(&config.base_dir).map_err(|source| RunError::BaseDir {
        path: config.base_dir.clone(),
        source,
    })?;
    check_hooks_dir(&config.hooks_dir)?;
    let hook_program = match &config.hook_program {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(RunError::HookProgram)?,
    };
    let timeout = Duration::from_secs(config.upstream_timeout_s);
    let mirrors: Vec<Mirror> = config
        .repos
        .iter()
        .map(|r| {
            Mirror::new(
                r.clone(),
                &config.base_dir,
                &config.credentials_dir,
                timeout,
            )
        })
        .collect();
    // Mirrors are prepared concurrently; one unreachable upstream does not stop the others
    // (its mirror is served as it is and retried on the next fetch).
    let results = futures_util::future::join_all(
        mirrors.iter().map(|m| async move { (m, m.ensure().await) }),
    )
    .await;
    for (m, result) in results {
        match result {
            Ok(()) => tracing::info!(repo = %m.repo.name, path = %m.path.display(), "mirror ready"),
            Err(err) => {
                tracing::error!(repo = %m.repo.name, %err, "mirror not refreshed; serving what is there")
            }
        }
    }
    let state = Arc::new(State {
        config,
        mirrors,
        hook_program,
    });
    server::serve(listener, state, shutdown)
        .await
        .map_err(RunError::Serve)
}

/// Command-line entry points: the daemon and its hook.
pub mod cli {
    use std::path::PathBuf;
    use std::process::ExitCode;

    use argh::FromArgs;

    /// Run the git-gate daemon (git:// on :9418).
    #[derive(FromArgs)]
    #[argh(subcommand, name = "git-gate")]
    pub struct Args {
        /// config file (default /etc/sidecars/git-gate.json)
        #[argh(option)]
        pub config: Option<PathBuf>,
    }

    /// Run the daemon until SIGTERM.
    pub fn main(args: Args) -> ExitCode {
        sidecars_common::daemon::daemon_main::<crate::Config, _, _, _>(
            "git-gate",
            args.config.as_deref(),
            crate::run,
        )
    }

    /// git-gate's hooks, run by git inside the mirrors (not for people).
    #[derive(FromArgs)]
    #[argh(subcommand, name = "git-gate-hook")]
    pub struct HookArgs {
        /// the hook: pre-receive
        #[argh(positional)]
        pub hook: String,
    }

    /// Run the named hook.
    pub fn hook_main(args: HookArgs) -> ExitCode {
        match args.hook.as_str() {
            "pre-receive" => crate::hook::pre_receive_main(),
            other => {
                eprintln!("git-gate-hook: unknown hook {other:?} (only pre-receive)");
                ExitCode::from(2)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths() {
        assert_eq!(repo_from_path("/app"), Ok("app"));
        assert_eq!(repo_from_path("/app.git"), Ok("app"));
        assert_eq!(repo_from_path("/app.git/"), Ok("app"));
        for bad in [
            "/../app",
            "/app/../x",
            "/etc/passwd",
            "//app",
            "/~root/app",
            "/",
            "/.git",
            "/a b",
        ] {
            assert!(repo_from_path(bad).is_err(), "{bad}");
        }
    }
}
