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

/// How a substituted value is written where the placeholder was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// As it is (header values, `text/*` bodies).
    Raw,
    /// Percent-encoded, every byte but the unreserved ones (URL path and query, form bodies).
    Percent,
    /// As the inside of a JSON string (JSON bodies).
    JsonString,
}

const MARK: &str = "${vault:";

/// Whether `bytes` holds a placeholder, as written or in the percent-encoded spellings a
/// client's URL or form encoder makes of `${`, `:` and `}`.
pub fn has_placeholder(bytes: &[u8]) -> bool {
    let lower = bytes.to_ascii_lowercase();
    [
        MARK.as_bytes(),
        b"$%7bvault:",
        b"%24%7bvault%3a",
        b"%24%7bvault:",
    ]
    .iter()
    .any(|m| lower.windows(m.len()).any(|w| w == *m))
}

/// `%24`, `%7B`, `%3A`, `%7D` back to `$ { : }`, so an encoded placeholder reads as one.
fn decode_marks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).map(str::to_ascii_uppercase);
        let decoded = match code.as_deref() {
            Some("24") => Some('$'),
            Some("7B") => Some('{'),
            Some("3A") => Some(':'),
            Some("7D") => Some('}'),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn place(value: &str, placement: Placement) -> String {
    match placement {
        Placement::Raw => value.to_string(),
        Placement::Percent => {
            let mut out = String::with_capacity(value.len() * 3);
            for b in value.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
        Placement::JsonString => {
            let quoted = serde_json::to_string(value).unwrap_or_default();
            quoted[1..quoted.len().saturating_sub(1)].to_string()
        }
    }
}

/// `text` with every `${vault:NAME}` replaced by NAME's value written for `placement`, if all
/// are scoped to `host` (else the error, and nothing is substituted); `None` when `text`
/// holds no placeholder. With `Placement::Percent` the encoded spellings count too.
pub fn substitute_text(
    text: &str,
    host: &str,
    vault: &HashMap<String, VaultValue>,
    placement: Placement,
) -> Result<Option<String>, VaultError> {
    if !has_placeholder(text.as_bytes()) {
        return Ok(None);
    }
    let decoded;
    let text = if placement == Placement::Percent || !text.contains(MARK) {
        decoded = decode_marks(text);
        decoded.as_str()
    } else {
        text
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(MARK) {
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
        out.push_str(&place(&entry.value, placement));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// Replace every `${vault:NAME}` in the request's header values with NAME's value, if all are
/// scoped to `host`; otherwise refuse the whole request (nothing is substituted).
pub fn substitute_vault(
    headers: &mut HeaderMap,
    host: &str,
    vault: &HashMap<String, VaultValue>,
) -> Result<(), VaultError> {
    let names: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| has_placeholder(v.as_bytes()))
        .map(|(n, _)| n.clone())
        .collect();
    let mut replaced: Vec<(HeaderName, Vec<HeaderValue>)> = Vec::new();
    for name in names {
        let mut values = Vec::new();
        for value in headers.get_all(&name) {
            let text = String::from_utf8_lossy(value.as_bytes());
            let out = substitute_text(&text, host, vault, Placement::Raw)?
                .unwrap_or_else(|| text.to_string());
            // Values were checked to be header-safe when loaded.
            if let Ok(mut v) = HeaderValue::from_str(&out) {
                v.set_sensitive(true);
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

/// The request target with placeholders in its path and query substituted (percent-encoded);
/// `None` when it holds none.
pub fn substitute_uri(
    uri: &http::Uri,
    host: &str,
    vault: &HashMap<String, VaultValue>,
) -> Result<Option<http::Uri>, VaultError> {
    let Some(pq) = uri.path_and_query() else {
        return Ok(None);
    };
    let Some(new_pq) = substitute_text(pq.as_str(), host, vault, Placement::Percent)? else {
        return Ok(None);
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = new_pq.parse().ok();
    Ok(http::Uri::from_parts(parts).ok())
}

/// A buffered body with placeholders substituted, written for its `content_type`: JSON
/// (as string content), form (percent-encoded), `text/*` (raw). Other types are left as they
/// are (a binary upload is not rewritten). `None` when nothing changed.
pub fn substitute_body(
    body: &[u8],
    content_type: Option<&str>,
    host: &str,
    vault: &HashMap<String, VaultValue>,
) -> Result<Option<Vec<u8>>, VaultError> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let placement = if ct.starts_with("application/json") || ct.contains("+json") {
        Placement::JsonString
    } else if ct.starts_with("application/x-www-form-urlencoded") {
        Placement::Percent
    } else if ct.starts_with("text/") {
        Placement::Raw
    } else {
        return Ok(None);
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return Ok(None);
    };
    Ok(substitute_text(text, host, vault, placement)?.map(String::into_bytes))
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

    #[test]
    fn placements_in_the_url_and_bodies() {
        let vault = HashMap::from([(
            "K".to_string(),
            VaultValue {
                value: "a b\"c&d".into(),
                hosts: vec!["api.a.com".into()],
            },
        )]);
        let host = "api.a.com";
        let uri: http::Uri = "/v1/x?key=$%7Bvault:K%7D&y=1".parse().unwrap();
        let got = substitute_uri(&uri, host, &vault).unwrap().unwrap();
        assert_eq!(got.to_string(), "/v1/x?key=a%20b%22c%26d&y=1");
        let uri: http::Uri = "/p/%24%7Bvault%3AK%7D".parse().unwrap();
        assert_eq!(
            substitute_uri(&uri, host, &vault).unwrap().unwrap().path(),
            "/p/a%20b%22c%26d"
        );
        let json = br#"{"token":"${vault:K}"}"#;
        let got = substitute_body(json, Some("application/json"), host, &vault)
            .unwrap()
            .unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&got).unwrap();
        assert_eq!(parsed["token"], "a b\"c&d");
        let form = b"k=%24%7Bvault%3AK%7D&z=1";
        let got = substitute_body(
            form,
            Some("application/x-www-form-urlencoded"),
            host,
            &vault,
        );
        assert_eq!(got.unwrap().unwrap(), b"k=a%20b%22c%26d&z=1");
        let text = b"key: ${vault:K}";
        assert_eq!(
            substitute_body(text, Some("text/plain"), host, &vault)
                .unwrap()
                .unwrap(),
            b"key: a b\"c&d"
        );
        assert_eq!(
            substitute_body(text, Some("application/octet-stream"), host, &vault).unwrap(),
            None
        );
        assert!(matches!(
            substitute_body(json, Some("application/json"), "evil.com", &vault),
            Err(VaultError::NotScoped { .. })
        ));
        let uri: http::Uri = "/x?k=$%7Bvault:K%7D".parse().unwrap();
        assert!(substitute_uri(&uri, "evil.com", &vault).is_err());
    }
}
