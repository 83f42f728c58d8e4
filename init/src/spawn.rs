//! Process primitives: spawning a child, the raw `waitpid`, and raw `kill`. The only module
//! with `unsafe`.
//!
//! Why `std::process::Command` and not `tokio::process`: tokio's child reaper would race init's
//! own `waitpid(-1)` loop (tokio's wait then fails with ECHILD). We spawn with std and never
//! call `Child::wait`: the [`crate::reaper`] owns every wait. std's spawn reports exec failures
//! (ENOENT, EACCES) through a close-on-exec pipe, so a missing binary is an ordinary `Err`
//! here; on that path std reaps its own failed child synchronously, which cannot race the
//! reaper because init supervises on a single thread.
//!
//! In the child, between fork and exec, only async-signal-safe calls run: `sigaction` and
//! `sigprocmask` to give the program default signal dispositions and an empty mask (Rust
//! ignores SIGPIPE and init blocks signals; children would inherit both), and `setsid` for its
//! own session and process group. std drops privileges (setgroups, setgid, setuid) before our
//! hook runs.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::validate::User;

/// PATH every daemon gets unless its own `env` sets one.
pub const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How to start a child.
#[derive(Debug)]
pub struct SpawnSpec<'a, S: AsRef<OsStr>> {
    /// Program and arguments (argv[0] is searched on the child's PATH).
    pub argv: &'a [S],
    /// `Some`: the child's whole environment on top of the base PATH/HOME (init's own
    /// environment is not passed). `None`: inherit init's environment (single-command mode).
    pub env: Option<&'a BTreeMap<String, String>>,
    /// Drop to this uid/gid before exec.
    pub user: Option<User>,
    /// New session and process group (supervised daemons); otherwise stay in init's group.
    pub new_session: bool,
    /// Pipe stdout/stderr back to init (and stdin from /dev/null); otherwise inherit all three.
    pub capture: bool,
    /// Supervised daemons: `no_new_privs` and no core dumps before exec (see
    /// [`crate::hardening`]). Single-command mode passes the environment through unchanged.
    pub harden: bool,
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid (also its process group id with `new_session`).
    pub pid: i32,
    /// Read end of its stdout, when captured.
    pub stdout: Option<OwnedFd>,
    /// Read end of its stderr, when captured.
    pub stderr: Option<OwnedFd>,
}

/// Starts a child per `spec`. Errors carry the OS error of the failed exec or setup.
pub fn spawn<S: AsRef<OsStr>>(spec: &SpawnSpec<'_, S>) -> io::Result<Spawned> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(env) = spec.env {
        cmd.env_clear();
        cmd.env("PATH", BASE_PATH);
        let root = spec.user.is_none_or(|u| u.uid == 0) && nix::unistd::geteuid().is_root();
        cmd.env("HOME", if root { "/root" } else { "/" });
        cmd.envs(env);
    }
    if let Some(u) = spec.user {
        cmd.gid(u.gid);
        cmd.uid(u.uid);
    }
    if spec.capture {
        cmd.stdin(Stdio::null());
        cmd.stdout(Stdio::piped());
        cmd.stderr(Stdio::piped());
    }
    let new_session = spec.new_session;
    let harden = spec.harden;
    // SAFETY: the hook runs in the forked child before exec and calls only async-signal-safe
    // functions (sigaction via signal(), sigprocmask, setsid, prctl, setrlimit); it allocates
    // nothing and takes no locks. `io::Error::last_os_error` only reads errno.
    unsafe {
        cmd.pre_exec(move || {
            default_signals()?;
            if new_session && libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if harden {
                crate::hardening::in_child(None)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    // Dropping `Child` neither waits nor kills: the reaper collects its status.
    drop(child);
    Ok(Spawned {
        pid,
        stdout,
        stderr,
    })
}

/// Default dispositions for every signal and an empty mask: Rust ignores SIGPIPE and init
/// blocks signals, and a child must inherit neither. Async-signal-safe.
fn default_signals() -> io::Result<()> {
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: plain syscall wrapper; fails harmlessly (EINVAL) for signals the libc
            // reserves.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: `empty` is a valid sigset_t initialised by sigemptyset before use.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// How to start one pack handler (see [`crate::handlers`]).
#[derive(Debug)]
pub struct HandlerSpec<'a> {
    /// Program (absolute) and arguments.
    pub argv: &'a [String],
    /// The whole environment.
    pub env: &'a BTreeMap<String, String>,
    /// The call's uid (= gid).
    pub uid: u32,
    /// The call's temp dir: created by the child *as the call's uid* (mode 0700), then its cwd.
    pub dir: &'a std::path::Path,
    /// Per-call limits.
    pub limits: crate::config::HandlerLimits,
    /// stdin, stdout, stderr (pipe ends received from pack-exec).
    pub stdio: [OwnedFd; 3],
}

/// Starts a handler in its own session under its own uid, hardened and limited; returns its
/// pid (= its process group).
pub fn spawn_handler(spec: HandlerSpec<'_>) -> io::Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let dir = std::ffi::CString::new(spec.dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the call dir"))?;
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().envs(spec.env);
    cmd.gid(spec.uid).uid(spec.uid);
    let [stdin, stdout, stderr] = spec.stdio;
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    let limits = spec.limits;
    // SAFETY: as in `spawn`: only async-signal-safe calls (sigaction, sigprocmask, setsid,
    // prctl, setrlimit, mkdir, chdir) on memory prepared before the fork (`dir`).
    unsafe {
        cmd.pre_exec(move || {
            default_signals()?;
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            crate::hardening::in_child(Some(&limits))?;
            // Already running as the call's uid: the dir is born its own.
            if libc::mkdir(dir.as_ptr(), 0o700) != 0 || libc::chdir(dir.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id() as i32;
    drop(child);
    Ok(pid)
}

/// One `recvmsg` into `buf`, taking ownership of any descriptors passed with it
/// (`SCM_RIGHTS`, close-on-exec). Non-blocking sockets answer `WouldBlock` as usual.
pub fn recv_with_fds(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut received = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these descriptors in this process for us;
            // nothing else owns them.
            received.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, received))
}

/// Result of one non-blocking wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// A child changed state: its pid and raw wait status.
    Child(i32, i32),
    /// Children exist, none has exited.
    NoneReady,
    /// No children at all.
    NoChildren,
}

/// `waitpid(-1, WNOHANG)`, retrying on EINTR. Raw so that children killed by real-time
/// signals (which `nix`'s `Signal` cannot name) are still reaped.
pub fn wait_any_nohang() -> Waited {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: plain syscall wrapper; `status` is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            return Waited::Child(pid, status);
        }
        if pid == 0 {
            return Waited::NoneReady;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            _ => return Waited::NoChildren,
        }
    }
}

/// `kill(pid, sig)` with a raw signal number (negative pid = process group). ESRCH (already
/// gone) is not an error worth reporting, so the result is only whether it was delivered.
pub fn kill_raw(pid: i32, sig: i32) -> bool {
    // SAFETY: plain syscall wrapper.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Decodes a raw wait status: `Ok(code)` for a normal exit, `Err(signal)` when killed.
pub fn decode_status(status: i32) -> Result<i32, i32> {
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(libc::WTERMSIG(status))
    }
}
