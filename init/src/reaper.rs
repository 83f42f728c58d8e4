//! Reaping: the one owner of every `waitpid`, plus the PID-1/subreaper setup.
//!
//! Why drain in a loop: SIGCHLD deliveries coalesce (ten children exiting at once may raise
//! one signal), so on every SIGCHLD init calls `waitpid(-1, WNOHANG)` until there is nothing
//! left. Orphaned grandchildren are re-parented to init (PID 1, or a subreaper) and reaped by
//! the same loop, so no zombie is left behind.

use std::fmt;

use crate::spawn::{decode_status, wait_any_nohang, Waited};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// Decodes a raw wait status.
    pub fn from_raw(status: i32) -> Self {
        match decode_status(status) {
            Ok(c) => ExitStatus::Code(c),
            Err(s) => ExitStatus::Signal(s),
        }
    }

    /// The shell convention: the code itself, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    /// The signal's name (e.g. `SIGSEGV`), if it was killed by one.
    pub fn signal_name(self) -> Option<String> {
        match self {
            ExitStatus::Code(_) => None,
            ExitStatus::Signal(s) => Some(signal_name(s)),
        }
    }
}

/// `SIGSEGV` for 11, `SIG45` for a signal nix cannot name.
pub fn signal_name(s: i32) -> String {
    nix::sys::signal::Signal::try_from(s)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("SIG{s}"))
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "code {c}"),
            ExitStatus::Signal(s) => write!(f, "signal {} ({})", s, signal_name(*s)),
        }
    }
}

/// Collects every child that has exited, without blocking.
pub fn reap_all() -> Vec<(i32, ExitStatus)> {
    let mut out = Vec::new();
    while let Waited::Child(pid, status) = wait_any_nohang() {
        out.push((pid, ExitStatus::from_raw(status)));
    }
    out
}

/// Whether init runs as PID 1 of its namespace.
pub fn is_pid1() -> bool {
    nix::unistd::getpid().as_raw() == 1
}

/// Makes init a child subreaper when it is not PID 1, so orphaned grandchildren are re-parented
/// to it and reaped. Warns (through `warn`) when it is neither PID 1 nor a subreaper.
pub fn become_reaper(warn: impl FnOnce(String)) {
    if is_pid1() {
        return;
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        warn(format!(
            "not PID 1 and PR_SET_CHILD_SUBREAPER failed ({e}): orphaned grandchildren will not be reaped by init"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_shell_convention() {
        assert_eq!(ExitStatus::Code(3).code(), 3);
        assert_eq!(ExitStatus::Signal(11).code(), 139);
        assert_eq!(ExitStatus::Signal(11).to_string(), "signal 11 (SIGSEGV)");
        assert_eq!(
            ExitStatus::Signal(11).signal_name().as_deref(),
            Some("SIGSEGV")
        );
        assert_eq!(signal_name(45), "SIG45");
    }
}
