//! Signal names, which signals may be forwarded, and the stream of signals init acts on.
//!
//! Why it matters: PID 1 gets no default signal actions, so a signal init does not register a
//! handler for is silently dropped. Init registers exactly the signals it acts on: the shutdown
//! trio, SIGHUP (reload), SIGCHLD (reap) and every signal some daemon asks to be forwarded.

use std::str::FromStr;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::UnboundedSender;

/// Signals that start a graceful shutdown.
pub const SHUTDOWN: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT];

/// Parses `"SIGUSR1"` or `"USR1"`.
pub fn parse(name: &str) -> Option<Signal> {
    if name.starts_with("SIG") {
        Signal::from_str(name).ok()
    } else {
        Signal::from_str(&format!("SIG{name}")).ok()
    }
}

/// Why `sig` cannot be listed in `forward_signals`, if it cannot.
pub fn why_not_forwardable(sig: Signal) -> Option<&'static str> {
    use Signal::*;
    match sig {
        SIGKILL | SIGSTOP => Some("it cannot be caught"),
        SIGTERM | SIGINT | SIGQUIT => Some("init handles it (graceful shutdown)"),
        SIGHUP => Some("init handles it (reload: use reload_signal)"),
        SIGCHLD => Some("init handles it (reaping)"),
        SIGSEGV | SIGBUS | SIGFPE | SIGILL | SIGTRAP | SIGABRT | SIGSYS => {
            Some("it is a fault signal, not a message")
        }
        _ => None,
    }
}

/// Why `sig` cannot be a `reload_signal`, if it cannot.
pub fn why_not_reload(sig: Signal) -> Option<&'static str> {
    match sig {
        Signal::SIGKILL | Signal::SIGSTOP => Some("it cannot be handled by the daemon"),
        _ => None,
    }
}

/// Registers a handler for each of `sigs` and sends every delivery to `tx`. Must run before
/// the first child is spawned so no SIGCHLD is missed. Deliveries of one signal coalesce; the
/// receiver must treat SIGCHLD as "drain all exited children".
pub fn listen(sigs: &[Signal], tx: UnboundedSender<Signal>) -> std::io::Result<()> {
    for &sig in sigs {
        let mut stream = signal(SignalKind::from_raw(sig as i32))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse("SIGHUP"), Some(Signal::SIGHUP));
        assert_eq!(parse("USR2"), Some(Signal::SIGUSR2));
        assert_eq!(parse("SIGFOO"), None);
        assert_eq!(parse("sighup"), None);
        assert!(why_not_forwardable(Signal::SIGUSR1).is_none());
        assert!(why_not_forwardable(Signal::SIGTERM).is_some());
        assert!(why_not_reload(Signal::SIGKILL).is_some());
    }
}
