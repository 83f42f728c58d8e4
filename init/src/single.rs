//! Single-command mode, `sidecar-init -- CMD ARGS...`: tini semantics for one process.
//!
//! Why no async runtime here: one child needs only `sigwait` in a loop, like tini. All
//! catchable signals are blocked (so even as PID 1 none is dropped) and taken synchronously:
//! SIGCHLD reaps (the child and any orphan), everything else is forwarded to the child. Init
//! exits with the child's code, 128+N if it died of signal N, 127 if CMD does not exist and
//! 126 if it cannot be executed.

use std::ffi::OsString;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::reaper::{self, ExitStatus};
use crate::spawn::{inherited_signals, kill_raw, spawn, ChildSignals, Group, SpawnSpec};

/// Signals left unblocked: faults must keep their default action, and KILL/STOP can't be
/// blocked anyway.
const UNBLOCKED: [Signal; 9] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGFPE,
    Signal::SIGILL,
    Signal::SIGTRAP,
    Signal::SIGABRT,
    Signal::SIGSYS,
    Signal::SIGKILL,
    Signal::SIGSTOP,
];

fn say(msg: &str) {
    eprintln!("init | {msg}");
}

/// Runs `argv` as the only child and returns the exit code to use.
pub fn run(argv: &[OsString]) -> i32 {
    if argv.is_empty() {
        say("usage: sidecar-init -- CMD [ARGS...]");
        return 2;
    }
    reaper::become_reaper(|m| say(&format!("warning: {m}")));
    let mut mask = SigSet::all();
    for s in UNBLOCKED {
        mask.remove(s);
    }
    if let Err(e) = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&mask), None) {
        say(&format!("cannot block signals: {e}"));
        return 1;
    }
    let spec = SpawnSpec {
        argv,
        env: None,
        user: None,
        group: Group::Foreground,
        signals: ChildSignals::Restore(inherited_signals()),
        capture: false,
        harden: false,
    };
    let child = match spawn(&spec) {
        Ok(c) => c.pid,
        Err(e) => {
            let cmd = argv[0].to_string_lossy();
            say(&format!("cannot run {cmd}: {e}"));
            return if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
        }
    };
    loop {
        let sig = match mask.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig == Signal::SIGCHLD {
            let mut code = None;
            for (pid, status) in reaper::reap_all() {
                if pid == child {
                    code = Some(status);
                }
            }
            if let Some(status) = code {
                // Reap orphans that already exited; like tini, don't wait for live ones.
                reaper::reap_all();
                return exit_code(status);
            }
        } else {
            kill_raw(child, sig as i32);
        }
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    status.code()
}
