//! Running one handler call: spawn, feed stdin, read bounded stdout/stderr, enforce the
//! timeout, and leave no process and no file behind.
//!
//! The handler is the leader of its own process group (`process_group(0)`), so the whole tree
//! — grandchildren included — is killed with one `killpg(SIGKILL)`: on timeout, on output
//! overflow, and also right after the leader exits (background stragglers die with it). The
//! group is only ever signalled while the leader is not yet reaped (alive or a zombie), so its
//! pgid cannot have been recycled: the leader's exit is detected with
//! `waitid(WEXITED | WNOWAIT)` on SIGCHLD, the group is killed, and only then is the leader
//! reaped. std's spawn already resets the signal mask and SIGPIPE in the child, so no
//! `pre_exec` (and no `unsafe`) is needed. A handler that escapes its group with `setsid`
//! is outside this guarantee (see docs/pack-exec.md).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{chown, Gid, Pid, Uid};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::RunAs;
use crate::manifest::{Pack, HANDLER_PATH};
use crate::stderr;

/// How a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The handler could not be started (exec failed: missing interpreter, permissions).
    #[error("cannot start the handler: {0}")]
    Spawn(io::Error),
    /// The handler ran past `timeout_s`; its process group was killed.
    #[error("the handler ran longer than its timeout of {}s and was killed", .0.as_secs())]
    Timeout(Duration),
    /// stdout exceeded `max_output_bytes`; reading stopped there and the group was killed.
    #[error("the handler printed more than max_output_bytes ({0} bytes); it was killed")]
    OutputTooLarge(usize),
    /// Non-zero exit or death by a signal.
    #[error("the handler {status}{}", if .stderr.is_empty() { String::new() } else { format!(": {}", .stderr) })]
    Failed {
        /// "exited with status N" / "was killed by signal N".
        status: String,
        /// The stderr tail (≤ 4 KiB).
        stderr: String,
    },
    /// Every handler uid is in use (more calls than the bottle's handler range).
    #[error("{0}")]
    Busy(String),
    /// The handler sandbox cannot be had: sidecar-init's spawn service is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// pack-exec's own plumbing failed (temp dir, pipes, wait): a bug or a broken host.
    #[error("{0}")]
    Internal(String),
}

/// Spawns handlers; one per daemon.
#[derive(Debug, Clone)]
pub struct Runner {
    tmp_root: PathBuf,
    run_as: Option<RunAs>,
    spawner: Option<PathBuf>,
}

impl Runner {
    /// Calls get working directories under `tmp_root`; handlers run as `run_as` if given (the
    /// caller passes it only when pack-exec runs as root).
    pub fn new(tmp_root: PathBuf, run_as: Option<RunAs>) -> Runner {
        Runner {
            tmp_root,
            run_as,
            spawner: None,
        }
    }

    /// Handlers are started by sidecar-init's spawn service at `socket` (each under a uid of
    /// its own, with the bottle's per-call limits; see [`crate::spawner`]) instead of by
    /// pack-exec itself.
    pub fn via_init(socket: PathBuf) -> Runner {
        Runner {
            tmp_root: PathBuf::new(),
            run_as: None,
            spawner: Some(socket),
        }
    }

    /// Run `pack` with `input` on stdin; returns its stdout (≤ `max_output_bytes`) if it exited 0.
    pub async fn run(
        &self,
        pack: &Pack,
        input: &[u8],
        call_id: &str,
    ) -> Result<Vec<u8>, ExecError> {
        if let Some(socket) = &self.spawner {
            return crate::spawner::run(socket, pack, input, call_id).await;
        }
        let dir = CallDir::create(&self.tmp_root, call_id, self.run_as)?;
        let result = self.run_in(pack, input, call_id, &dir.path).await;
        dir.remove().await;
        result
    }

    async fn run_in(
        &self,
        pack: &Pack,
        input: &[u8],
        call_id: &str,
        dir: &Path,
    ) -> Result<Vec<u8>, ExecError> {
        let mut cmd = Command::new(&pack.program);
        cmd.args(&pack.args)
            .env_clear()
            .env("PATH", HANDLER_PATH)
            .env("LANG", "C.UTF-8")
            .envs(pack.env.iter().map(|(k, v)| (k, v)))
            .env("HOME", dir)
            .env("TMPDIR", dir)
            .env("PACK_NAME", &pack.name)
            .env("PACK_CALL_ID", call_id)
            .env("PACK_DIR", &pack.dir)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(run_as) = self.run_as {
            cmd.uid(run_as.uid).gid(run_as.gid);
        }
        // Subscribe before spawning so the leader's SIGCHLD cannot be missed.
        let mut sigchld = signal(SignalKind::child())
            .map_err(|e| ExecError::Internal(format!("cannot watch SIGCHLD: {e}")))?;
        let mut child = cmd.spawn().map_err(ExecError::Spawn)?;
        let pid = child
            .id()
            .map(|p| Pid::from_raw(p as i32))
            .ok_or_else(|| ExecError::Internal("spawned handler has no pid".into()))?;
        // Declared after `child`, so it is dropped (and kills the group) before `child` is.
        let mut group = Group {
            pgid: pid,
            armed: true,
        };
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(ExecError::Internal("handler pipes missing".into()));
        };

        let write_input = async move {
            // EPIPE just means the handler did not read all of its input: its business.
            let _ = stdin.write_all(input).await;
            let _ = stdin.shutdown().await;
        };
        let mut stdin_fut = pin!(write_input);
        let mut stdout_fut = pin!(read_capped(stdout, pack.max_output_bytes));
        let mut stderr_fut = pin!(stderr::capture(stderr, &pack.name, call_id));
        let mut exit_fut = pin!(leader_exited(pid, &mut sigchld));
        let mut deadline = pin!(tokio::time::sleep(pack.timeout));

        let mut out: Option<Vec<u8>> = None;
        let mut err: Option<stderr::Captured> = None;
        let (mut stdin_done, mut exited) = (false, false);
        let end = loop {
            if out.is_some() && err.is_some() && exited {
                break End::Done;
            }
            tokio::select! {
                r = &mut stdout_fut, if out.is_none() => match r {
                    Ok(Some(bytes)) => out = Some(bytes),
                    Ok(None) => break End::Overflow,
                    Err(e) => break End::Broken(format!("reading the handler's stdout: {e}")),
                },
                c = &mut stderr_fut, if err.is_none() => err = Some(c),
                () = &mut stdin_fut, if !stdin_done => stdin_done = true,
                () = &mut exit_fut, if !exited => {
                    exited = true;
                    // The leader is a zombie, so its pgid is still ours: kill any stragglers
                    // (they would otherwise hold the pipes open or outlive the call).
                    group.kill();
                }
                () = &mut deadline => break End::Timeout,
            }
        };
        if !matches!(end, End::Done) {
            group.kill();
        }
        // From here on the leader gets reaped: never signal its pgid again.
        group.armed = false;
        let status = reap(&mut child).await?;
        match end {
            End::Timeout => Err(ExecError::Timeout(pack.timeout)),
            End::Overflow => Err(ExecError::OutputTooLarge(pack.max_output_bytes)),
            End::Broken(msg) => Err(ExecError::Internal(msg)),
            End::Done if status.success() => Ok(out.unwrap_or_default()),
            End::Done => Err(ExecError::Failed {
                status: describe(status),
                stderr: err.map(|c| c.tail()).unwrap_or_default(),
            }),
        }
    }
}

pub(crate) enum End {
    Done,
    Timeout,
    Overflow,
    Broken(String),
}

/// The handler's process group; killed on drop while armed (a cancelled call leaves nothing).
struct Group {
    pgid: Pid,
    armed: bool,
}

impl Group {
    fn kill(&self) {
        match killpg(self.pgid, Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(err) => {
                tracing::warn!(pgid = self.pgid.as_raw(), %err, "cannot kill a handler's process group")
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

/// Resolves once the leader has exited, without reaping it (`WNOWAIT`).
async fn leader_exited(pid: Pid, sigchld: &mut tokio::signal::unix::Signal) {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => {}
            Err(Errno::EINTR) => continue,
            // Exited (or already reaped, ECHILD): either way it is gone.
            _ => return,
        }
        if sigchld.recv().await.is_none() {
            // The signal driver is gone (runtime shutting down): fall back to polling.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn reap(child: &mut tokio::process::Child) -> Result<ExitStatus, ExecError> {
    // After SIGKILL (or a normal exit) this is immediate; the bound only guards against a
    // process stuck in uninterruptible sleep.
    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(e)) => Err(ExecError::Internal(format!("waiting for the handler: {e}"))),
        Err(_) => Err(ExecError::Internal(
            "the handler did not die within 10 s of SIGKILL".into(),
        )),
    }
}

/// Read at most `cap + 1` bytes: `None` means the cap was exceeded (and reading stopped).
pub(crate) async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    stdout: R,
    cap: usize,
) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(cap.min(16 * 1024));
    stdout.take(cap as u64 + 1).read_to_end(&mut buf).await?;
    Ok(if buf.len() > cap { None } else { Some(buf) })
}

pub(crate) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended abnormally".to_string(),
    }
}

/// A call's working directory (also its `HOME` and `TMPDIR`), removed after the call.
struct CallDir {
    path: PathBuf,
    removed: bool,
}

impl CallDir {
    fn create(root: &Path, call_id: &str, run_as: Option<RunAs>) -> Result<CallDir, ExecError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = root.join(call_id);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| ExecError::Internal(format!("cannot create {}: {e}", path.display())))?;
        let dir = CallDir {
            path,
            removed: false,
        };
        if let Some(r) = run_as {
            chown(
                &dir.path,
                Some(Uid::from_raw(r.uid)),
                Some(Gid::from_raw(r.gid)),
            )
            .map_err(|e| {
                ExecError::Internal(format!("cannot chown {}: {e}", dir.path.display()))
            })?;
        }
        Ok(dir)
    }

    async fn remove(mut self) {
        self.removed = true;
        // Most handlers leave nothing behind: one rmdir, no thread hop.
        if std::fs::remove_dir(&self.path).is_ok() {
            return;
        }
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&path)).await;
        if !matches!(result, Ok(Ok(()))) {
            tracing::warn!(dir = %self.path.display(), "cannot remove a call's temp dir");
        }
    }
}

impl Drop for CallDir {
    fn drop(&mut self) {
        if !self.removed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
