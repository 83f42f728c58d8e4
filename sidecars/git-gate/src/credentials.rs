//! Upstream credentials: read from `credentials_dir` by git-gate only, handed to the git
//! processes that talk to the upstream through the environment — never written into the
//! mirror's config, where the agent could read them through git.
//!
//! A credential file holds either `user:password` or a bare token (sent as user
//! `x-access-token`, which GitHub, Gitea and GitLab accept). It becomes an
//! `Authorization: Basic …` header scoped to the upstream URL (`http.<url>.extraHeader`),
//! passed as `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n` so it never shows up
//! in a process's argv.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::config::{upstream_kind, RepoConfig, UpstreamKind};

/// Why a credential could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file named by `credential` cannot be read.
    #[error("cannot read credential file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("credential file {0} is empty")]
    Empty(PathBuf),
}

/// The credential file of `repo`, if it has one.
pub fn credential_path(repo: &RepoConfig, credentials_dir: &Path) -> Option<PathBuf> {
    repo.credential.as_ref().map(|c| credentials_dir.join(c))
}

/// `Authorization` header value for the credential text.
pub fn authorization(secret: &str) -> String {
    let userpass = if secret.contains(':') {
        secret.to_string()
    } else {
        format!("x-access-token:{secret}")
    };
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(userpass)
    )
}

/// Environment for a git process that talks to `upstream`: no prompts, no credential helpers
/// of the host, and the credential (if any) as a header scoped to the upstream URL.
pub fn upstream_env(
    upstream: &str,
    credential_file: Option<&Path>,
) -> Result<Vec<(OsString, OsString)>, CredentialError> {
    let mut config: Vec<(String, String)> = vec![("credential.helper".into(), String::new())];
    if let (Some(UpstreamKind::Http), Some(path)) = (upstream_kind(upstream), credential_file) {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(CredentialError::Empty(path.to_path_buf()));
        }
        config.push((
            format!("http.{upstream}.extraHeader"),
            format!("Authorization: {}", authorization(secret)),
        ));
    }
    let mut env: Vec<(OsString, OsString)> = vec![
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("GIT_ASKPASS".into(), "true".into()),
        ("GCM_INTERACTIVE".into(), "never".into()),
        ("GIT_CONFIG_COUNT".into(), config.len().to_string().into()),
    ];
    for (i, (k, v)) in config.into_iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}").into(), k.into()));
        env.push((format!("GIT_CONFIG_VALUE_{i}").into(), v.into()));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_and_userpass_become_basic_auth() {
        assert_eq!(authorization("u:p"), "Basic dTpw");
        assert!(authorization("tok").starts_with("Basic eC1hY2Nlc3MtdG9rZW46"));
    }

    #[test]
    fn header_only_for_http_upstreams() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "s3cr3t-token\n").unwrap();
        let env = upstream_env("https://example.com/a.git", Some(&f)).unwrap();
        let value = env
            .iter()
            .find(|(k, _)| k == "GIT_CONFIG_VALUE_1")
            .map(|(_, v)| v.to_string_lossy().into_owned())
            .unwrap();
        assert!(value.starts_with("Authorization: Basic "));
        let env = upstream_env("/srv/a.git", Some(&f)).unwrap();
        assert!(!env.iter().any(|(k, _)| k == "GIT_CONFIG_VALUE_1"));
        assert!(upstream_env("https://x/a", Some(&dir.path().join("missing"))).is_err());
    }
}
