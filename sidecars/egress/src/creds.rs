//! Credentials: `${cred:NAME}` templates in route headers, and `${vault:NAME}` placeholders the
//! agent writes into its own request headers, substituted only for the hosts NAME is scoped to.
//!
//! All values are read once at startup (restart egress to rotate them); they live only in
//! this process's memory and are never logged or put into an error message.

use std::collections::HashMap;
use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue};

/// Read a credential file: contents with trailing `\r`/`\n` trimmed; must be non-empty and a
/// valid header value.
pub fn read_credential(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    if HeaderValue::from_str(&value).is_err() {
        return Err(format!(
            "{} holds characters not allowed in an HTTP header",
            path.display()
        ));
    }
    Ok(value)
}

/// A credential name: letters, digits, `_`, `-`, `.`, not starting with `.` (no paths).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Expand `${cred:NAME}` in `template`, reading from `dir`. Returns the value and the
/// credential values used (to redact them from responses).
pub fn expand_template(
    template: &str,
    dir: Option<&Path>,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::with_capacity(template.len());
    let mut used = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ in {template:?}"))?;
        let inner = &after[..end];
        let name = inner.strip_prefix("cred:").ok_or_else(|| {
            format!("unknown placeholder ${{{inner}}} (route headers take ${{cred:NAME}})")
        })?;
        if !valid_name(name) {
            return Err(format!("invalid credential name {name:?}"));
        }
        let dir =
            dir.ok_or_else(|| format!("${{cred:{name}}} is used but credentials_dir is not set"))?;
        let value = read_credential(&dir.join(name))?;
        out.push_str(&value);
        used.push(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok((out, used))
}

/// A vault value and where it may go.
#[derive(Clone)]
pub struct VaultValue {
    /// The secret.
    pub value: String,
    /// Exact, lower-case hosts it may be sent to.
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for VaultValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultValue")
            .field("value", &"[REDACTED]")
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// Why a request's placeholders were refused (the message names the placeholder and host,
/// never a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// `${vault:NAME}` with no such entry.
    #[error("unknown vault placeholder ${{vault:{0}}}")]
    Unknown(String),
    /// `${vault:NAME}` sent to a host it is not scoped to.
    #[error("vault placeholder ${{vault:{name}}} is not scoped to {host}")]
    NotScoped {
        /// The placeholder's name.
        name: String,
        /// The request's host.
        host: String,
    },
}

/// Replace every `${vault:NAME}` in the request's header values with NAME's value, if all are
/// scoped to `host`; otherwise refuse the whole request (nothing is substituted).
pub fn substitute_vault(
    headers: &mut HeaderMap,
    host: &str,
    vault: &HashMap<String, VaultValue>,
) -> Result<(), VaultError> {
    const MARK: &[u8] = b"${vault:";
    let names: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| v.as_bytes().windows(MARK.len()).any(|w| w == MARK))
        .map(|(n, _)| n.clone())
        .collect();
    let mut replaced: Vec<(HeaderName, Vec<HeaderValue>)> = Vec::new();
    for name in names {
        let mut values = Vec::new();
        for value in headers.get_all(&name) {
            let text = String::from_utf8_lossy(value.as_bytes());
            let mut out = String::with_capacity(text.len());
            let mut rest: &str = &text;
            while let Some(start) = rest.find("${vault:") {
                out.push_str(&rest[..start]);
                let after = &rest[start + MARK.len()..];
                let Some(end) = after.find('}') else {
                    out.push_str(&rest[start..]);
                    rest = "";
                    break;
                };
                let key = &after[..end];
                let entry = vault
                    .get(key)
                    .ok_or_else(|| VaultError::Unknown(key.chars().take(64).collect()))?;
                if !entry.hosts.iter().any(|h| h == host) {
                    return Err(VaultError::NotScoped {
                        name: key.to_string(),
                        host: host.to_string(),
                    });
                }
                out.push_str(&entry.value);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            // Values were checked to be header-safe when loaded.
            if let Ok(v) = HeaderValue::from_str(&out) {
                values.push(v);
            }
        }
        replaced.push((name, values));
    }
    for (name, values) in replaced {
        headers.remove(&name);
        for v in values {
            headers.append(name.clone(), v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("gh"), "tok123\n").unwrap();
        let (v, used) = expand_template("Bearer ${cred:gh}", Some(dir.path())).unwrap();
        assert_eq!(v, "Bearer tok123");
        assert_eq!(used, vec!["tok123"]);
        assert!(expand_template("${cred:../x}", Some(dir.path())).is_err());
        assert!(expand_template("${cred:gh}", None)
            .unwrap_err()
            .contains("credentials_dir"));
        assert!(expand_template("${vault:gh}", Some(dir.path())).is_err());
        assert_eq!(expand_template("plain", None).unwrap().0, "plain");
    }

    #[test]
    fn vault_scoping() {
        let vault = HashMap::from([(
            "K".to_string(),
            VaultValue {
                value: "s3cret".into(),
                hosts: vec!["api.a.com".into()],
            },
        )]);
        let mut h = HeaderMap::new();
        h.insert("x-key", "k=${vault:K};".parse().unwrap());
        substitute_vault(&mut h, "api.a.com", &vault).unwrap();
        assert_eq!(h["x-key"], "k=s3cret;");
        let mut h = HeaderMap::new();
        h.insert("x-key", "${vault:K}".parse().unwrap());
        let err = substitute_vault(&mut h, "evil.com", &vault).unwrap_err();
        assert_eq!(
            err.to_string(),
            "vault placeholder ${vault:K} is not scoped to evil.com"
        );
        assert_eq!(h["x-key"], "${vault:K}");
        let mut h = HeaderMap::new();
        h.insert("x-key", "${vault:NOPE}".parse().unwrap());
        assert!(matches!(
            substitute_vault(&mut h, "api.a.com", &vault),
            Err(VaultError::Unknown(_))
        ));
    }
}
