//! Bearer-token authentication of the HTTP API.
//!
//! One shared token, from `CONTROL_PLANE_TOKEN` or `--token-file`. The comparison is constant
//! time (`subtle`), so response timing does not leak how many leading bytes of a guess were
//! right. The token is never logged: [`Token`]'s `Debug` prints a placeholder.

use std::path::Path;

use http::HeaderMap;
use subtle::ConstantTimeEq;

/// Shortest token accepted: 16 bytes, so a guessable word cannot guard Docker-socket power.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why no usable token could be configured.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Neither source is set and `--insecure-no-auth` was not given.
    #[error("no API token: set CONTROL_PLANE_TOKEN or pass --token-file PATH (or, for a local experiment only, --insecure-no-auth)")]
    Missing,
    /// The token file cannot be read.
    #[error("cannot read the token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The token is too short or has characters a header cannot carry.
    #[error("the API token from {origin} is unusable: {reason}")]
    Unusable {
        /// `CONTROL_PLANE_TOKEN` or the file path.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Both sources are set: refusing to guess which one the operator meant.
    #[error("both CONTROL_PLANE_TOKEN and --token-file are set; use one")]
    Ambiguous,
}

/// The API token. Kept out of `Debug`/`Display` so it cannot end up in a log line.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token from its text (surrounding whitespace, e.g. a file's newline, is dropped).
    pub fn new(origin: &str, text: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        let unusable = |reason: &str| TokenError::Unusable {
            origin: origin.to_string(),
            reason: reason.to_string(),
        };
        if text.len() < MIN_TOKEN_LEN {
            return Err(unusable(&format!(
                "it has {} bytes; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)",
                text.len()
            )));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(unusable(
                "it must be printable ASCII without spaces (it travels in an HTTP header)",
            ));
        }
        Ok(Token(text.as_bytes().to_vec()))
    }

    /// The token from the environment value or the file (exactly one of them).
    pub fn load(env: Option<String>, file: Option<&Path>) -> Result<Option<Token>, TokenError> {
        let env = env.filter(|v| !v.trim().is_empty());
        match (env, file) {
            (Some(_), Some(_)) => Err(TokenError::Ambiguous),
            (Some(v), None) => Token::new("CONTROL_PLANE_TOKEN", &v).map(Some),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Token::new(&path.display().to_string(), &text).map(Some)
            }
            (None, None) => Ok(None),
        }
    }

    /// Whether the request's `Authorization: Bearer <token>` carries this token.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let scheme = b"bearer ";
        if value.len() < scheme.len() || !value[..scheme.len()].eq_ignore_ascii_case(scheme) {
            return false;
        }
        let presented = value[scheme.len()..].trim_ascii();
        // `ct_eq` on slices of different lengths is false without comparing contents; the
        // length of the real token is not a secret worth hiding (it is at least 16 bytes).
        presented.ct_eq(&self.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let t = Token::new("test", "0123456789abcdef-token").unwrap();
        assert!(t.admits(&headers("Bearer 0123456789abcdef-token")));
        assert!(t.admits(&headers("bearer 0123456789abcdef-token")));
        assert!(!t.admits(&headers("Bearer 0123456789abcdef-toke")));
        assert!(!t.admits(&headers("Bearer 0123456789abcdef-token2")));
        assert!(!t.admits(&headers("Basic 0123456789abcdef-token")));
        assert!(!t.admits(&headers("Bearer")));
        assert!(!t.admits(&HeaderMap::new()));
    }

    #[test]
    fn short_or_spaced_tokens_are_refused_and_never_printed() {
        let err = Token::new("CONTROL_PLANE_TOKEN", "short").unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
        assert!(!err.to_string().contains("short"), "{err}");
        assert!(Token::new("f", "has a space in the middle!!").is_err());
        let t = Token::new("f", "0123456789abcdef-secret").unwrap();
        assert!(!format!("{t:?}").contains("secret"));
    }

    #[test]
    fn load_takes_exactly_one_source() {
        assert!(Token::load(None, None).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "0123456789abcdef-from-file\n").unwrap();
        let t = Token::load(None, Some(&f)).unwrap().unwrap();
        assert!(t.admits(&headers("Bearer 0123456789abcdef-from-file")));
        assert!(matches!(
            Token::load(Some("0123456789abcdef-env".into()), Some(&f)),
            Err(TokenError::Ambiguous)
        ));
        assert!(matches!(
            Token::load(None, Some(&dir.path().join("missing"))),
            Err(TokenError::Read { .. })
        ));
    }
}
