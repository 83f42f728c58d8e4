//! DLP over the parts of a request: the target (host, path, query), the headers, and the
//! body — pipelock's on plain HTTP and CONNECT targets, egress's on decrypted HTTPS, with the
//! same rules and the same answers. Each part is scanned as sent and, when it carries
//! percent-escapes or HTTP Basic credentials, decoded too, so `ghp_%41…` or
//! `Basic base64(user:token)` are caught. A hit says which rule fired and where, never the value.

use base64::Engine;
use http::{HeaderMap, Uri};
use scanner::{percent_decode, Scanner};

/// A secret found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The rule that fired.
    pub rule: &'static str,
    /// Where: `host`, `path`, `query`, `header <name>`, `body`.
    pub location: String,
}

impl std::fmt::Display for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "secret detected (rule {}) in {}",
            self.rule, self.location
        )
    }
}

fn scan_part(scanner: &Scanner, data: &[u8], location: impl Fn() -> String) -> Option<Hit> {
    let hit = |rule| {
        Some(Hit {
            rule,
            location: location(),
        })
    };
    if let Some(f) = scanner.scan(data) {
        return hit(f.rule);
    }
    if data.contains(&b'%') {
        if let Some(f) = scanner.scan(&percent_decode(data)) {
            return hit(f.rule);
        }
    }
    None
}

/// Scan the request target and headers.
pub fn scan_head(scanner: &Scanner, uri: &Uri, headers: &HeaderMap) -> Option<Hit> {
    if let Some(authority) = uri.authority() {
        if let Some(hit) = scan_part(scanner, authority.as_str().as_bytes(), || "host".into()) {
            return Some(hit);
        }
        if let Some(rule) = host_labels(scanner, authority.host()) {
            return Some(Hit {
                rule,
                location: "host".into(),
            });
        }
    }
    if let Some(hit) = scan_part(scanner, uri.path().as_bytes(), || "path".into()) {
        return Some(hit);
    }
    if scanner::names::path_carries_data(uri.path().as_bytes()) {
        return Some(Hit {
            rule: scanner::names::PATH_RULE,
            location: "path".into(),
        });
    }
    if let Some(query) = uri.query() {
        if let Some(hit) = scan_part(scanner, query.as_bytes(), || "query".into()) {
            return Some(hit);
        }
    }
    let mut line = Vec::with_capacity(256);
    for (name, value) in headers {
        // `name: value`, so `X-Api-Key: <random>` reads as a key/value assignment.
        line.clear();
        line.extend_from_slice(name.as_str().as_bytes());
        line.extend_from_slice(b": ");
        line.extend_from_slice(value.as_bytes());
        let location = || format!("header {name}");
        if let Some(hit) = scan_part(scanner, &line, location) {
            return Some(hit);
        }
        if let Some(decoded) = basic_credentials(value.as_bytes()) {
            if let Some(hit) = scan_part(scanner, &decoded, location) {
                return Some(hit);
            }
        }
    }
    None
}

/// Most labels whose every run is joined and scanned for a token split across labels.
const MAX_JOINED_LABELS: usize = 12;

/// Data in a host's labels ([`scanner::names::host_carries_data`]), or a token format or
/// configured value split over consecutive labels (`AKIAIOSF.ODNN7EXAMPLE.x.example.com`):
/// the name is refused before any DNS lookup could carry it out.
fn host_labels(scanner: &Scanner, host: &str) -> Option<&'static str> {
    if scanner::names::host_carries_data(host) {
        return Some(scanner::names::HOST_RULE);
    }
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    let free = &labels[..labels.len().saturating_sub(2).min(MAX_JOINED_LABELS)];
    let mut joined = String::with_capacity(host.len());
    for start in 0..free.len() {
        joined.clear();
        for (n, label) in free[start..].iter().enumerate() {
            joined.push_str(label);
            if n > 0 {
                if let Some(f) = scanner.scan_specific(joined.as_bytes()).first() {
                    return Some(f.rule);
                }
            }
        }
    }
    None
}

/// The answer and log rule for a body that could not be read for scanning: over the bound
/// (413, never forwarded unscanned) or a broken read (400). Pipelock and egress both answer so.
pub fn body_refusal(err: crate::body::ReadBodyError) -> (crate::error::ApiError, &'static str) {
    use crate::error::ApiError;
    use http::StatusCode;
    match err {
        crate::body::ReadBodyError::TooLarge { limit } => (
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("blocked: request body larger than the {limit}-byte scan bound"),
            ),
            "body-bound",
        ),
        crate::body::ReadBodyError::Io(e) => (
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("cannot read the request body: {e}"),
            ),
            "body",
        ),
    }
}

/// Scan a (buffered) request body.
pub fn scan_body(scanner: &Scanner, body: &[u8]) -> Option<Hit> {
    scan_part(scanner, body, || "body".into())
}

/// `Basic <base64(user:password)>` → `user:password`.
fn basic_credentials(value: &[u8]) -> Option<Vec<u8>> {
    let rest = value
        .strip_prefix(b"Basic ")
        .or_else(|| value.strip_prefix(b"basic "))?;
    base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanner::SecretConfig;

    #[test]
    fn locations() {
        let s = Scanner::new(&SecretConfig::default()).unwrap();
        let h = HeaderMap::new();
        let uri: Uri = "http://x.com/a/AKIAIOSFODNN7EXAMPLE".parse().unwrap();
        assert_eq!(
            scan_head(&s, &uri, &h).unwrap().to_string(),
            "secret detected (rule aws-access-key) in path"
        );
        let uri: Uri = "http://x.com/a?k=%41KIAIOSFODNN7EXAMPLE".parse().unwrap();
        assert_eq!(scan_head(&s, &uri, &h).unwrap().location, "query");
        let mut h = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD
            .encode("x-access-token:ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789");
        h.insert("authorization", format!("Basic {basic}").parse().unwrap());
        let uri: Uri = "http://x.com/".parse().unwrap();
        let hit = scan_head(&s, &uri, &h).unwrap();
        assert_eq!(
            (hit.rule, hit.location.as_str()),
            ("github-token", "header authorization")
        );
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "Zx81kQp2Lm7Vn4Rt9Ws3Yb6".parse().unwrap());
        assert_eq!(scan_head(&s, &uri, &h).unwrap().rule, "generic-secret");
    }

    #[test]
    fn data_in_host_labels_and_path_segments_is_refused() {
        let s = Scanner::new(&SecretConfig {
            values: vec!["hunter2hunter2xyz".into()],
            ..SecretConfig::default()
        })
        .unwrap();
        let h = HeaderMap::new();
        for (url, rule, location) in [
            (
                "http://7365637265745f6170695f6b6579.exfil.example.com/",
                "host-encoded-data",
                "host",
            ),
            (
                "http://AKIAIOSF.ODNN7EXAMPLE.x.example.com/",
                "aws-access-key",
                "host",
            ),
            (
                "http://hunter2.hunter2.xyz.a.example.com/",
                "configured-secret",
                "host",
            ),
            (
                "http://api.example.com/api/x7Kp2mQ9vR4sL8nW1bY6cT3fA0jH5dE/status",
                "path-random-segment",
                "path",
            ),
        ] {
            let uri: Uri = url.parse().unwrap();
            let hit = scan_head(&s, &uri, &h).unwrap_or_else(|| panic!("{url}"));
            assert_eq!((hit.rule, hit.location.as_str()), (rule, location), "{url}");
        }
        for url in [
            "http://files.pythonhosted.org/packages/3c/4d/9b2e1a3f5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f/x.whl",
            "http://a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.example.com/",
            "http://api.github.com/repos/acme/app/git/commits/3f786850e387550fdab836ed7e6dc881de23001b",
        ] {
            let uri: Uri = url.parse().unwrap();
            assert_eq!(scan_head(&s, &uri, &h), None, "{url}");
        }
    }
}
