//! Loading a daemon's JSON config file.
//!
//! Operators edit these files by hand (or the control plane renders them), so every error must
//! say which file and which field is wrong: `pipelock.json: allow[2].ports[0]: invalid type ...`.
//! Daemon config structs use `#[serde(deny_unknown_fields)]` so a typo is an error, not a
//! silently ignored key.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a config could not be loaded. Each variant's message tells the operator what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, permissions).
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file we tried to read.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The JSON is malformed or a field has the wrong shape or an unknown name.
    #[error("invalid config {origin}: at `{field}`: {message}")]
    Parse {
        /// The file name (or `<inline>`), for the message.
        origin: String,
        /// JSON path of the offending field, e.g. `allow[2].ports`; `.` for the whole document.
        field: String,
        /// What serde said about it.
        message: String,
    },
    /// The JSON parsed but a value is out of range or inconsistent. Lists every problem.
    #[error("invalid config {origin}:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file name (or `<inline>`).
        origin: String,
        /// One line per problem, each starting with the field's path.
        problems: Vec<String>,
    },
}

/// A config that can check itself after parsing: ranges, cross-field rules. Returning every
/// problem at once saves the operator a fix-one-rerun loop.
pub trait Validate {
    /// Every problem found, each as `field.path: what is wrong and what to do`. Empty = valid.
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Read and parse a config file, then validate it.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parse and validate config text; `origin` names it in error messages.
pub fn parse<T: DeserializeOwned + Validate>(text: &str, origin: &str) -> Result<T, ConfigError> {
    // An empty file means "all defaults": daemons ship without a config in tests and examples.
    let text = if text.trim().is_empty() { "{}" } else { text };
    let de = &mut serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(de).map_err(|err| {
        let field = err.path().to_string();
        ConfigError::Parse {
            origin: origin.to_string(),
            field,
            message: err.into_inner().to_string(),
        }
    })?;
    let problems = value.problems();
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        #[serde(default)]
        items: Vec<Item>,
        #[serde(default)]
        limit: u32,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        #[allow(dead_code)]
        port: u16,
    }
    impl Validate for Sample {
        fn problems(&self) -> Vec<String> {
            let mut p = Vec::new();
            if self.limit > 10 {
                p.push(format!("limit: {} is over the maximum 10", self.limit));
            }
            p
        }
    }

    #[test]
    fn error_names_the_nested_field() {
        let err = parse::<Sample>(r#"{"items":[{"port":1},{"port":"x"}]}"#, "s.json").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("items[1].port"), "{msg}");
        assert!(msg.contains("s.json"), "{msg}");
    }

    #[test]
    fn unknown_key_is_named() {
        let msg = parse::<Sample>(r#"{"limt": 3}"#, "s.json")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("limt"), "{msg}");
    }

    #[test]
    fn validation_lists_every_problem() {
        let msg = parse::<Sample>(r#"{"limit": 11}"#, "s.json")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("limit: 11 is over the maximum 10"), "{msg}");
    }

    #[test]
    fn empty_file_means_defaults() {
        let s = parse::<Sample>("  \n", "s.json").expect("defaults");
        assert_eq!(s.limit, 0);
    }

    #[test]
    fn missing_file_names_the_path() {
        let msg = load::<Sample>(Path::new("/nonexistent/x.json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/nonexistent/x.json"), "{msg}");
    }
}
