//! Data hidden in host names and URL path segments, which carry no keyword for the rules to
//! anchor on.
//!
//! - **Host labels**: `7365637265745f6170695f6b6579.exfil.example.com` (hex), base32 or
//!   base36 chunks, or a long chain of short random labels. Why it matters before anything
//!   else: pipelock resolves names itself, so under a wildcard allowlist entry (`*.pypi.org`)
//!   the very lookup of such a name sends the data to that zone's name servers. The check is
//!   pure and runs before the allowlist and any DNS lookup.
//! - **Path segments**: `/api/x7Kp2mQ9vR4sL8nW1bY6cT3fA0jH5dE/status`, a mixed-case random run
//!   with no keyword around it.
//!
//! What stays clean, by construction: hex runs in paths (git SHAs, content hashes in registry
//! paths, `sha256:` digests), UUIDs, single-case base32 (Nix store hashes), version strings,
//! and short IDs in names (CloudFront's 14 characters, preview-deployment hashes of 9).
//! A host is judged by its labels below the last two, joined: data split over many labels
//! adds up, while a legitimate name's labels are words, regions and small numbers.

use crate::engine::shannon_entropy;

/// The rule named for a host whose labels carry encoded data.
pub const HOST_RULE: &str = "host-encoded-data";
/// The rule named for a random path segment.
pub const PATH_RULE: &str = "path-random-segment";

/// A run of this many hex digits in a host is data (10 bytes); with [`MIN_HEX_DIGITS`] digits.
const HOST_HEX_RUN: usize = 20;
/// Digits a hex run must hold: hex-looking words (`facade`, `deadbeef`) are letters only.
const MIN_HEX_DIGITS: usize = 4;
/// Letters and digits (after joining the labels) from which a random-looking host is data.
const HOST_RANDOM_RUN: usize = 16;
/// Characters of a path run from which it is judged (an 18-byte value in base64).
const PATH_RANDOM_RUN: usize = 24;

/// Whether `host` carries encoded data in its labels. IP literals never do.
pub fn host_carries_data(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    let labels: Vec<&str> = host.split('.').collect();
    // The registrable part (`example.com`) is one registration, not a channel; the labels
    // below it are free for whoever runs the zone.
    let free = &labels[..labels.len().saturating_sub(2)];
    // A single label under a bare TLD (`<data>.com`) is judged as well.
    let judged: Vec<&str> = if free.is_empty() && labels.len() == 2 {
        labels[..1].to_vec()
    } else {
        free.to_vec()
    };
    let original: Vec<u8> = judged
        .iter()
        .flat_map(|l| l.bytes())
        .filter(u8::is_ascii_alphanumeric)
        .collect();
    let joined = original.to_ascii_lowercase();
    longest_hex_run(&joined) >= HOST_HEX_RUN
        || random_alnum(&joined, HOST_RANDOM_RUN)
        || (original.len() >= HOST_RANDOM_RUN && base64_like(&original, false, 3.5))
}

/// Whether a URL `path` (as sent, percent-escapes allowed) holds a random segment.
pub fn path_carries_data(path: &[u8]) -> bool {
    let decoded;
    let path = if path.contains(&b'%') {
        decoded = crate::encodings::percent_decode(path);
        &decoded[..]
    } else {
        path
    };
    path.split(|&b| !(b.is_ascii_alphanumeric() || b"-_+".contains(&b)))
        .filter(|run| run.len() >= PATH_RANDOM_RUN)
        .any(|run| base64_like(run, true, 4.0))
}

/// The longest run of hex digits in `s` holding at least [`MIN_HEX_DIGITS`] digits.
fn longest_hex_run(s: &[u8]) -> usize {
    s.split(|b| !b.is_ascii_hexdigit())
        .filter(|run| run.iter().filter(|b| b.is_ascii_digit()).count() >= MIN_HEX_DIGITS)
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0)
}

/// Lower-case letters and digits mixed the way an encoder mixes them (base32, base36): many
/// switches between letters and digits, and enough of each. Words with a version number or a
/// region (`useast1`, `api2`) switch once or twice.
fn random_alnum(s: &[u8], min_len: usize) -> bool {
    if s.len() < min_len {
        return false;
    }
    let digits = s.iter().filter(|b| b.is_ascii_digit()).count();
    let letters = s.len() - digits;
    let switches = s
        .windows(2)
        .filter(|w| w[0].is_ascii_digit() != w[1].is_ascii_digit())
        .count();
    digits >= 4 && letters >= 4 && switches * 5 >= s.len() && shannon_entropy(s) >= 3.5
}

/// Upper case, lower case (and, with `digits`, digits) mixed the way base64/base62 mixes
/// them: about 60% of neighbours differ in class, where camelCase or `MyCompanyServer`
/// switches at word starts only (one in six or so). Hex (either case), UUIDs and single-case
/// base32 lack a class. Names are judged without `digits` (base64 of a short password may hold
/// none; a lookup carries the bytes as sent, case and all), path runs with them.
fn base64_like(run: &[u8], digits: bool, min_entropy: f64) -> bool {
    let class = |b: &u8| match b {
        b'a'..=b'z' => 0,
        b'A'..=b'Z' => 1,
        b'0'..=b'9' => 2,
        _ => 3,
    };
    let mut seen = [0usize; 4];
    for b in run {
        seen[class(b)] += 1;
    }
    if seen[0] == 0 || seen[1] == 0 || (digits && seen[2] == 0) {
        return false;
    }
    let switches = run
        .windows(2)
        .filter(|w| class(&w[0]) != class(&w[1]))
        .count();
    switches * 100 >= run.len() * 40 && shannon_entropy(run) >= min_entropy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_labels_are_data() {
        for host in [
            "7365637265745f6170695f6b6579.exfil.example.com",
            "7365637265745F6170695F6B6579.exfil.example.com.",
            "7365.6372.6574.5f61.7069.exfil.example.com",
            "onswg4tforpwc4djl5vwk6i.files.pypi.org",
            "a8f3k.q9z2m.x7b4n.p1c6v.exfil.example.com",
            "a8f3k.q9z2m.x7b4n.p1c6v.exfil.test",
            "k5qw4zlmn5xw2z3fnfzgk4tpmrzxi3lj.example.com",
            "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi.ipfs.dweb.link",
            "616b69616b6579313233343536.com",
            // base64 of an AWS key id, and of a password, as labels
            "QUtJQUlPU0ZPRE5ON0VYQU1QTEU.exfil.example.com",
            "aHVudGVyMmh1bnRlcjI.exfil.example.com",
        ] {
            assert!(host_carries_data(host), "{host}");
        }
    }

    #[test]
    fn everyday_names_are_not_data() {
        for host in [
            "example.com",
            "api.github.com",
            "objects.githubusercontent.com",
            "registry-1.docker.io",
            "production.cloudflare.docker.com",
            "d36jcksde1wxzq.cloudfront.net",
            "myapp-3kx9zq2ab-team.vercel.app",
            "ec2-54-123-45-67.compute-1.amazonaws.com",
            "my-service.us-east-1.prod.internal.example.com",
            "abcdef1234.execute-api.eu-west-2.amazonaws.com",
            "files.pythonhosted.org",
            "index.crates.io",
            "static.crates.io",
            "storage.googleapis.com",
            "s3.dualstack.us-west-2.amazonaws.com",
            "deadbeefcafefacadedecade.example.com",
            "MyCompanyInternalServer01.corp.example.com",
            "GitHub.com",
            "Objects.GitHubUserContent.com",
            "10.0.0.1",
            "[2001:db8::1]",
            "localhost",
        ] {
            assert!(!host_carries_data(host), "{host}");
        }
    }

    #[test]
    fn random_path_segments_are_data() {
        for path in [
            &b"/api/x7Kp2mQ9vR4sL8nW1bY6cT3fA0jH5dE/status"[..],
            b"/upload/Zm9vYmFyX3NlY3JldF9hcGlfa2V5XzEyMzQ1Njc4OQ",
            b"/a/x7Kp2mQ9vR4sL8nW1bY6cT3fA0jH5dE.png",
            b"/a/x7Kp2mQ9vR4sL8nW%31bY6cT3fA0jH5dE",
        ] {
            assert!(path_carries_data(path), "{}", String::from_utf8_lossy(path));
        }
    }

    #[test]
    fn everyday_paths_are_not_data() {
        for path in [
            &b"/"[..],
            b"/repos/acme/app/commits/3f786850e387550fdab836ed7e6dc881de23001b",
            b"/v2/library/alpine/blobs/sha256:4abcf20661432fb2d719aaf90656f55c287f8ca915dc1c92ec14ff61e67fbaf8",
            b"/packages/3c/4d/9b2e1a3f5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f/pkg-1.0-py3-none-any.whl",
            b"/api/v1/items/123e4567-e89b-12d3-a456-426614174000",
            b"/nix/store/0c0y1sp8hf8jz3rjd4xfmx2v7wkbvqsz-hello-2.12.1",
            b"/api/v1/crates/serde/1.0.197/download",
            b"/getUserProfileSettingsForAccountV2/items",
            b"/github.com/!burnt!sushi/toml/@v/v1.3.2.zip",
            b"/v1/chat/completions",
            b"/assets/index-BvKk3Yq2.js",
        ] {
            assert!(!path_carries_data(path), "{}", String::from_utf8_lossy(path));
        }
    }
}
