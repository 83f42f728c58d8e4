//! Errors of the renderer. Every message names the field to fix; validation returns every
//! problem at once so the user fixes them in one pass.

use std::fmt;

/// One semantic problem: the field's path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Path of the offending field, e.g. `agent.env.HTTPS_PROXY` or `packs[2]`.
    pub path: String,
    /// What is wrong and, where possible, what to do.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not valid TOML/JSON, a field has the wrong type, or a field is unknown.
    #[error("invalid manifest {origin}: at `{field}`: {message}")]
    Parse {
        /// The manifest's file name (or `<manifest>`).
        origin: String,
        /// Path of the offending field.
        field: String,
        /// What the parser said.
        message: String,
    },
    /// The manifest parsed but values are out of range or inconsistent. Lists every problem.
    #[error("invalid manifest {origin}:\n{}", list(.problems))]
    Invalid {
        /// The manifest's file name (or `<manifest>`).
        origin: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

/// Why rendering refused its options (the manifest itself was already validated).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The manifest does not validate (only for manifests not built by [`crate::Manifest::parse`]).
    #[error("invalid manifest:\n{}", list(.0))]
    Manifest(Vec<Problem>),
    /// An option (name prefix, image override) is malformed.
    #[error("invalid render options:\n{}", list(.0))]
    Options(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}
