//! Typed errors and the one place they become exit codes.
//!
//! Why one place: the exit code is part of the contract (a config error is 2, an unhealthy
//! bundle 1); scattering `process::exit` calls would let them drift.

use std::fmt;

/// One config problem: the JSON path it sits at and what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path such as `daemons[1].depends_on[0]`; empty for the file as a whole.
    pub path: String,
    /// What is wrong, phrased so the reader knows what to change.
    pub message: String,
}

impl Problem {
    /// Builds a problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Everything that can stop `sidecar-init` before or outside supervision.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config (file, selection or flags) is unusable; every problem is listed.
    #[error("invalid config {source_name}:\n{}", list(.problems))]
    Config {
        /// Which file (or "SIDECARS_DAEMONS") the problems come from.
        source_name: String,
        /// All problems found.
        problems: Vec<Problem>,
    },
    /// Command-line usage error.
    #[error("{0}")]
    Usage(String),
    /// The control socket could not be created (read-only /run, non-root...).
    #[error("cannot create control socket {path}: {source} (make its directory writable, e.g. a tmpfs on /run, or set SIDECAR_INIT_SOCKET / the config's \"socket\" to a writable path)")]
    SocketBind {
        /// The socket path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `health`/`status` could not talk to the running init.
    #[error("cannot reach sidecar-init at {path}: {source} (is it running? is SIDECAR_INIT_SOCKET the same as the init's?)")]
    Control {
        /// The socket path.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A daemon's credentials could not be handed out (nothing was started).
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),
    /// Any other OS-level failure during setup (runtime, signals).
    #[error("{context}: {source}")]
    Io {
        /// What init was doing.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    /// The process exit code for this error: 2 for anything the operator must fix in config or
    /// flags, 1 for runtime failures (unreachable init, OS errors).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. }
            | Error::Usage(_)
            | Error::SocketBind { .. }
            | Error::Credentials(_) => 2,
            Error::Control { .. } | Error::Io { .. } => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_exit_2_and_list_every_problem() {
        let e = Error::Config {
            source_name: "x.json".into(),
            problems: vec![Problem::new("a", "bad"), Problem::new("", "worse")],
        };
        assert_eq!(e.exit_code(), 2);
        assert_eq!(
            e.to_string(),
            "invalid config x.json:\n  - a: bad\n  - worse"
        );
    }
}
