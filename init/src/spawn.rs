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
//! In the child, between fork and exec, only async-signal-safe calls run: `setsid` (a
//! daemon's own session) or `setpgid` + `tcsetpgrp` (the single command's own foreground
//! process group), then `sigaction` and `sigprocmask` for its signal state — clean defaults
//! for daemons, or exactly what init inherited for the single command ([`ChildSignals`]):
//! Rust ignores SIGPIPE and init blocks signals, and no child may inherit either by accident.
//! std drops privileges (setgroups, setgid, setuid) before our hook runs.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
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
    /// The child's session and process group.
    pub group: Group,
    /// The child's signal dispositions and mask.
    pub signals: ChildSignals,
    /// Pipe stdout/stderr back to init (and stdin from /dev/null); otherwise inherit all three.
    pub capture: bool,
    /// Supervised daemons: `no_new_privs` and no core dumps before exec (see
    /// [`crate::hardening`]). Single-command mode passes the environment through unchanged.
    pub harden: bool,
}

/// Where a child's process group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// A new session and process group (supervised daemons: nothing of init's terminal).
    NewSession,
    /// A process group of its own in init's session, made the terminal's foreground group
    /// when stdin is init's terminal (single-command mode, as tini and dumb-init do: job
    /// control and signals to the group reach the command, not init).
    Foreground,
}

/// Signal dispositions and a mask, as bit sets: bit `n - 1` stands for signal `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignalState {
    /// Signals set to `SIG_IGN`.
    pub ignored: u64,
    /// Signals in the mask.
    pub blocked: u64,
}

/// What signal state a child starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildSignals {
    /// Every disposition default, nothing blocked (supervised daemons: the same clean start
    /// whatever started init).
    Default,
    /// These ignored and these blocked, every other disposition default (single-command
    /// mode: what init itself was started with, see [`inherited_signals`]).
    Restore(SignalState),
}

static INHERITED_IGNORED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static INHERITED_BLOCKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records the signal state init was started with. A constructor, so that it runs before
/// Rust's runtime, which sets SIGPIPE to ignored and so hides whether the parent had.
#[ctor::ctor(unsafe)]
fn record_inherited_signals() {
    let s = current_signals();
    INHERITED_IGNORED.store(s.ignored, std::sync::atomic::Ordering::Relaxed);
    INHERITED_BLOCKED.store(s.blocked, std::sync::atomic::Ordering::Relaxed);
}

/// The signal state init was started with (before its runtime or init changed anything).
pub fn inherited_signals() -> SignalState {
    SignalState {
        ignored: INHERITED_IGNORED.load(std::sync::atomic::Ordering::Relaxed),
        blocked: INHERITED_BLOCKED.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// Signals 1..=SIGRTMAX, at most 64 (bit sets are `u64`).
fn signal_numbers() -> std::ops::RangeInclusive<libc::c_int> {
    1..=libc::SIGRTMAX().min(64)
}

/// This process's signal state now. Only `sigaction` and `sigprocmask` queries.
pub fn current_signals() -> SignalState {
    let mut state = SignalState::default();
    // SAFETY: `set` is initialised by sigemptyset before use, and sigprocmask with a null new
    // set only reads the mask; `old` is plain data the kernel fills.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut set) == 0 {
            for sig in signal_numbers() {
                if libc::sigismember(&set, sig) == 1 {
                    state.blocked |= 1 << (sig - 1);
                }
            }
        }
        for sig in signal_numbers() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                state.ignored |= 1 << (sig - 1);
            }
        }
    }
    state
}

/// A started child.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid (also its process group id).
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
    let (group, signals) = (spec.group, spec.signals);
    let harden = spec.harden;
    // Compiled before the fork (the child must not allocate).
    let filters: &'static [seccompiler::BpfProgram] = if harden {
        crate::jail::daemon_filters()
    } else {
        &[]
    };
    // SAFETY: the hook runs in the forked child before exec and calls only async-signal-safe
    // functions (setsid, setpgid, tcsetpgrp, sigaction via signal(), sigprocmask, prctl,
    // setrlimit); it allocates nothing and takes no locks. `io::Error::last_os_error` only
    // reads errno.
    unsafe {
        cmd.pre_exec(move || {
            // The group first: tcsetpgrp from a background group raises SIGTTOU, which init's
            // mask (still in force here) blocks.
            match group {
                Group::NewSession => {
                    if libc::setsid() < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Group::Foreground => own_foreground_group()?,
            }
            match signals {
                ChildSignals::Default => default_signals()?,
                ChildSignals::Restore(state) => restore_signals(state)?,
            }
            if harden {
                crate::hardening::in_child(None)?;
                for f in filters {
                    seccompiler::apply_filter(f).map_err(|_| io::Error::last_os_error())?;
                }
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
    restore_signals(SignalState::default())
}

/// `state`'s ignored signals ignored, every other disposition default, and `state`'s mask.
/// Async-signal-safe.
fn restore_signals(state: SignalState) -> io::Result<()> {
    let bit = |set: u64, sig: libc::c_int| sig <= 64 && set & (1 << (sig - 1)) != 0;
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            let action = if bit(state.ignored, sig) {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            };
            // SAFETY: plain syscall wrapper; fails harmlessly (EINVAL) for signals the libc
            // reserves.
            unsafe { libc::signal(sig, action) };
        }
    }
    // SAFETY: `mask` is a valid sigset_t initialised by sigemptyset before use.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        for sig in 1..=libc::SIGRTMAX() {
            if bit(state.blocked, sig) {
                libc::sigaddset(&mut mask, sig);
            }
        }
        if libc::sigprocmask(libc::SIG_SETMASK, &mask, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A process group of the child's own, made the foreground group of init's terminal when
/// stdin is that terminal (no terminal, or another one: nothing to hand over, as tini).
/// Async-signal-safe.
fn own_foreground_group() -> io::Result<()> {
    // SAFETY: plain syscall wrappers on this process and fd 0.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::tcsetpgrp(0, libc::getpgrp()) != 0 {
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::ENXIO)) {
                return Err(e);
            }
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
    /// The jail's child part; `None` runs the handler unjailed (the unsafe opt-out).
    pub jail: Option<crate::jail::ChildJail>,
}

/// The jail steps, in order, as the child reports them before trying each one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// Own session, signal dispositions, limits.
    Setup = 1,
    /// `unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC)`.
    Namespaces,
    /// `uid_map`/`gid_map`.
    IdMap,
    /// Bring the jail's loopback up.
    Loopback,
    /// The proxy listener on the jail's loopback.
    ProxyListener,
    /// The call's temp dir.
    TempDir,
    /// Landlock.
    Landlock,
    /// seccomp.
    Seccomp,
    /// Everything done; the next failure is the exec itself.
    Exec,
}

impl Step {
    /// Every step, in order.
    const ALL: [Step; 9] = [
        Step::Setup,
        Step::Namespaces,
        Step::IdMap,
        Step::Loopback,
        Step::ProxyListener,
        Step::TempDir,
        Step::Landlock,
        Step::Seccomp,
        Step::Exec,
    ];

    fn from_byte(b: u8) -> Option<Step> {
        Step::ALL.into_iter().find(|s| *s as u8 == b)
    }

    /// Whether a failure at this step means the jail cannot be had (not a bad request).
    pub fn is_jail(self) -> bool {
        matches!(
            self,
            Step::Namespaces
                | Step::IdMap
                | Step::Loopback
                | Step::ProxyListener
                | Step::Landlock
                | Step::Seccomp
        )
    }

    /// What the step does, for error messages.
    pub fn what(self) -> &'static str {
        match self {
            Step::Setup => "setting up the handler process",
            Step::Namespaces => "creating the call's user and network namespaces (unshare CLONE_NEWUSER|CLONE_NEWNET: refused by Docker's default seccomp profile, allowed by the bundle's)",
            Step::IdMap => "mapping the call's uid in its user namespace",
            Step::Loopback => "bringing up the jail's loopback",
            Step::ProxyListener => "listening for the proxy on the jail's loopback",
            Step::TempDir => "creating the call's temp dir",
            Step::Landlock => "enforcing the Landlock ruleset",
            Step::Seccomp => "installing the seccomp filter",
            Step::Exec => "executing the handler",
        }
    }
}

/// Why a handler did not start.
#[derive(Debug)]
pub struct HandlerSpawnError {
    /// The last step the child reached (`None`: it never ran).
    pub step: Option<Step>,
    /// The OS error.
    pub error: io::Error,
}

impl std::fmt::Display for HandlerSpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some(step) => write!(f, "{}: {}", step.what(), self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// A started handler.
#[derive(Debug)]
pub struct StartedHandler {
    /// Its pid (= its process group).
    pub pid: i32,
    /// The listener on the jail's loopback the proxy variables name (jailed, proxied calls).
    pub proxy_listener: Option<OwnedFd>,
    /// The user and network namespaces the child made (first call of a uid slot).
    pub namespaces: Option<crate::jail::SlotNamespaces>,
}

/// Report datagram markers that carry descriptors (never a [`Step`] value).
const FD_LISTENER: u8 = 0xF1;
const FD_NAMESPACES: u8 = 0xF2;

/// Starts a handler in its own session under its own uid, hardened, limited and (with
/// `jail`) jailed; returns its pid (= its process group).
pub fn spawn_handler(spec: HandlerSpec<'_>) -> Result<StartedHandler, HandlerSpawnError> {
    use std::os::unix::ffi::OsStrExt;
    let plain = |error: io::Error| HandlerSpawnError { step: None, error };
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| plain(io::Error::new(io::ErrorKind::InvalidInput, "empty argv")))?;
    let dir = std::ffi::CString::new(spec.dir.as_os_str().as_bytes()).map_err(|_| {
        plain(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NUL in the call dir",
        ))
    })?;
    // The child reports each step (one datagram each) and passes the proxy listener here.
    let (report_parent, report_child) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Datagram,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| plain(e.into()))?;
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().envs(spec.env);
    cmd.gid(spec.uid).uid(spec.uid);
    let [stdin, stdout, stderr] = spec.stdio;
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    let limits = spec.limits;
    let jail = spec.jail;
    let report = report_child.as_raw_fd();
    // SAFETY: as in `spawn`: only async-signal-safe calls (sigaction, sigprocmask, setsid,
    // prctl, setrlimit, unshare, open/write/close, socket/ioctl/bind/listen/sendmsg, mkdir,
    // chdir, the Landlock and seccomp syscalls) on memory prepared before the fork (`dir`,
    // `jail`); nothing allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            child_step(report, Step::Setup);
            default_signals()?;
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            crate::hardening::in_child(Some(&limits))?;
            if let Some(j) = &jail {
                child_step(report, Step::Namespaces);
                if let Some(ns) = &j.reuse {
                    // The slot's namespaces from an earlier call (its uid owns the user
                    // namespace, so it may enter it), and a fresh IPC namespace per call.
                    if libc::setns(ns.user.as_raw_fd(), libc::CLONE_NEWUSER) != 0
                        || libc::setns(ns.net.as_raw_fd(), libc::CLONE_NEWNET) != 0
                        || libc::unshare(libc::CLONE_NEWIPC) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                } else {
                    if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWIPC)
                        != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    child_step(report, Step::IdMap);
                    // The uid change made the process non-dumpable, which gives its /proc
                    // files to root; exec would reset the flag anyway.
                    if libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    write_proc(c"/proc/self/setgroups", b"deny")?;
                    write_proc(c"/proc/self/uid_map", j.id_map.as_bytes())?;
                    write_proc(c"/proc/self/gid_map", j.id_map.as_bytes())?;
                    child_step(report, Step::Loopback);
                    loopback_up()?;
                    // Hand init the new namespaces: the slot's next calls enter them instead
                    // of paying for new ones.
                    send_own_namespaces(report)?;
                }
                if j.proxy {
                    child_step(report, Step::ProxyListener);
                    proxy_listener(report)?;
                }
            }
            child_step(report, Step::TempDir);
            // Already running as the call's uid: the dir is born its own.
            if libc::mkdir(dir.as_ptr(), 0o700) != 0 || libc::chdir(dir.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(j) = &jail {
                child_step(report, Step::Landlock);
                landlock_add_path(j.ruleset.as_raw_fd(), c".", j.dir_access)?;
                landlock_add_path(j.ruleset.as_raw_fd(), c"/proc/self", j.proc_access)?;
                if libc::syscall(libc::SYS_landlock_restrict_self, j.ruleset.as_raw_fd(), 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                child_step(report, Step::Seccomp);
                for f in &j.filters {
                    seccompiler::apply_filter(f).map_err(|_| io::Error::last_os_error())?;
                }
            }
            child_step(report, Step::Exec);
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    drop(cmd);
    drop(report_child);
    // Every datagram is queued by now: the child sent them before its exec (or failure).
    let mut last = None;
    let mut listener = None;
    let mut namespaces = None;
    let mut buf = [0u8; 1];
    loop {
        match recv_with_fds_flags(
            report_parent.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok((0, _)) | Err(_) => break,
            Ok((_, fds)) => match buf[0] {
                FD_LISTENER => listener = fds.into_iter().next(),
                FD_NAMESPACES => {
                    let mut fds = fds.into_iter();
                    if let (Some(user), Some(net)) = (fds.next(), fds.next()) {
                        namespaces = Some(crate::jail::SlotNamespaces { user, net });
                    }
                }
                b => {
                    if let Some(step) = Step::from_byte(b) {
                        last = Some(step);
                    }
                }
            },
        }
    }
    match spawned {
        Ok(child) => {
            let pid = child.id() as i32;
            drop(child);
            Ok(StartedHandler {
                pid,
                proxy_listener: listener,
                namespaces,
            })
        }
        Err(error) => Err(HandlerSpawnError { step: last, error }),
    }
}

/// Sends the step marker (best effort: the report only improves the error message).
fn child_step(report: libc::c_int, step: Step) {
    let b = [step as u8];
    // SAFETY: plain syscall on a valid buffer.
    unsafe { libc::send(report, b.as_ptr().cast(), 1, libc::MSG_DONTWAIT) };
}

/// Writes `data` to a `/proc/self` file. Async-signal-safe.
fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; `data` is a valid buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = io::Error::last_os_error();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(err);
        }
    }
    Ok(())
}

/// `ifconfig lo up` in the new network namespace. Async-signal-safe.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a zeroed `ifreq` is valid; the name is copied within bounds; the socket is
    // closed on every path.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING) as i16;
        let r = libc::ioctl(s, libc::SIOCSIFFLAGS as _, &req);
        let err = io::Error::last_os_error();
        libc::close(s);
        if r != 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// Listens on `127.0.0.1:HANDLER_PROXY_PORT` in the jail and sends the listener to init over
/// `report` (`SCM_RIGHTS`). Async-signal-safe.
fn proxy_listener(report: libc::c_int) -> io::Result<()> {
    // SAFETY: every struct is zero-initialised and filled within bounds; the listener is closed
    // on every path (init holds its own copy once sent).
    unsafe {
        let l = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if l < 0 {
            return Err(io::Error::last_os_error());
        }
        // The slot's namespace is reused: connections of an earlier call may linger in
        // TIME_WAIT on this port.
        let one: libc::c_int = 1;
        libc::setsockopt(
            l,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = bottle_spec::HANDLER_PROXY_PORT.to_be();
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let ok = libc::bind(
            l,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) == 0
            && libc::listen(l, 64) == 0;
        if !ok {
            let err = io::Error::last_os_error();
            libc::close(l);
            return Err(err);
        }
        let sent = send_fds(report, FD_LISTENER, &[l]);
        let err = io::Error::last_os_error();
        libc::close(l);
        if sent < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// Sends `fds` with a one-byte `marker` over `report` (`SCM_RIGHTS`); the `sendmsg` result.
/// Async-signal-safe.
fn send_fds(report: libc::c_int, marker: u8, fds: &[libc::c_int]) -> isize {
    const MAX: usize = 4;
    let n = fds.len().min(MAX);
    let marker = [marker];
    // SAFETY: every struct is zero-initialised and filled within bounds; the control buffer is
    // sized (64 bytes) and aligned for up to MAX descriptors.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: marker.as_ptr() as *mut libc::c_void,
            iov_len: 1,
        };
        #[repr(C)]
        union Control {
            buf: [u8; 64],
            _align: libc::cmsghdr,
        }
        let mut control: Control = std::mem::zeroed();
        let bytes = (n * std::mem::size_of::<libc::c_int>()) as u32;
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.buf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(bytes) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr().cast::<u8>(),
            libc::CMSG_DATA(cmsg),
            bytes as usize,
        );
        libc::sendmsg(report, &msg, libc::MSG_DONTWAIT)
    }
}

/// Opens the child's own user and network namespaces and sends them to init. Async-signal-safe.
fn send_own_namespaces(report: libc::c_int) -> io::Result<()> {
    // SAFETY: NUL-terminated paths; both descriptors are closed on every path (init holds its
    // own copies once sent).
    unsafe {
        let user = libc::open(
            c"/proc/self/ns/user".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        let net = libc::open(
            c"/proc/self/ns/net".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        let sent = if user >= 0 && net >= 0 {
            send_fds(report, FD_NAMESPACES, &[user, net])
        } else {
            -1
        };
        let err = io::Error::last_os_error();
        for fd in [user, net] {
            if fd >= 0 {
                libc::close(fd);
            }
        }
        if sent < 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// `struct landlock_path_beneath_attr` (packed in the kernel's UAPI).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Adds a path-beneath rule for `path` to `ruleset`. Async-signal-safe (the landlock crate's
/// builder allocates, so the child's two per-call rules are added with the raw syscall).
fn landlock_add_path(ruleset: libc::c_int, path: &std::ffi::CStr, access: u64) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; `attr` is a valid, correctly laid out struct; the
    // descriptor is closed on every path.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let attr = PathBeneathAttr {
            allowed_access: access,
            parent_fd: fd,
        };
        // LANDLOCK_RULE_PATH_BENEATH = 1
        let r = libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            1,
            &attr as *const PathBeneathAttr,
            0,
        );
        let err = io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(err);
        }
    }
    Ok(())
}

/// The kernel's Landlock ABI version (≤ 0: none).
pub fn landlock_abi() -> i32 {
    // SAFETY: the version query takes no pointer (NULL, 0, LANDLOCK_CREATE_RULESET_VERSION).
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    v as i32
}

/// One `recvmsg` into `buf`, taking ownership of any descriptors passed with it
/// (`SCM_RIGHTS`, close-on-exec). Non-blocking sockets answer `WouldBlock` as usual.
pub fn recv_with_fds(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    recv_with_fds_flags(fd, buf, nix::sys::socket::MsgFlags::empty())
}

/// [`recv_with_fds`] with extra `recvmsg` flags.
pub fn recv_with_fds_flags(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
    flags: nix::sys::socket::MsgFlags,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::FromRawFd;
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC | flags,
    )
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
