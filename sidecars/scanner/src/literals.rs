//! Configured values (the contents of files that must never leave): which values a secret
//! file yields, and every encoded form of a value the scanner searches for — raw, base64
//! (standard and URL-safe, any alignment), base32, hex (either case) and URL-encoded.

/// Names of the configured-value rules, by encoding.
pub(crate) const LITERAL_RAW: &str = "configured-secret";
pub(crate) const LITERAL_BASE64: &str = "configured-secret-base64";
pub(crate) const LITERAL_BASE32: &str = "configured-secret-base32";
pub(crate) const LITERAL_HEX: &str = "configured-secret-hex";
pub(crate) const LITERAL_URL: &str = "configured-secret-urlencoded";

/// The values worth protecting in a secret file's text: every trimmed non-comment line, and
/// for `KEY=VALUE` / `KEY: VALUE` lines (env files, YAML) the value too, quotes stripped.
/// Callers drop values shorter than their minimum.
pub fn values_from_text(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(line.to_string());
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some(pos) = line.find(['=', ':']) {
            let value = line[pos + 1..].trim().trim_matches(['"', '\'']);
            if !value.is_empty() {
                out.push(value.to_string());
            }
        }
    }
    out
}

/// Every searched form of a configured value, with the rule name reported for it.
pub(crate) fn encodings(value: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = vec![(LITERAL_RAW, value.to_vec())];
    for shift in 0..3 {
        out.push((LITERAL_BASE64, aligned_fragment(value, shift, 6, B64)));
        out.push((LITERAL_BASE64, aligned_fragment(value, shift, 6, B64URL)));
    }
    for shift in 0..5 {
        out.push((LITERAL_BASE32, aligned_fragment(value, shift, 5, B32)));
    }
    let lower = hex::encode(value).into_bytes();
    out.push((LITERAL_HEX, lower.to_ascii_uppercase()));
    out.push((LITERAL_HEX, lower));
    let url = percent_encode(value);
    if url != value {
        out.push((LITERAL_URL, url));
    }
    out
}

/// The characters of `value`'s encoding (`bits` per character) that depend only on `value`'s
/// bytes when it starts `shift` bytes into the encoded data: the part that appears in *any*
/// encoding of a text containing `value` at that alignment.
fn aligned_fragment(value: &[u8], shift: usize, bits: usize, alphabet: &[u8]) -> Vec<u8> {
    let start_bit = shift * 8;
    let end_bit = start_bit + value.len() * 8;
    let bit = |i: usize| -> u8 {
        if i < start_bit || i >= end_bit {
            0
        } else {
            let j = i - start_bit;
            (value[j / 8] >> (7 - j % 8)) & 1
        }
    };
    let first_char = start_bit.div_ceil(bits);
    let last_char = end_bit / bits; // exclusive
    (first_char..last_char)
        .map(|c| {
            let v = (0..bits).fold(0usize, |acc, k| (acc << 1) | bit(c * bits + k) as usize);
            alphabet[v]
        })
        .collect()
}

/// Percent-encode everything but RFC 3986 unreserved characters (what `encodeURIComponent`
/// and Python's `quote(safe="")` produce).
fn percent_encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_env_file() {
        let v = values_from_text("# comment\nexport TOKEN=\"abc123xyz789\"\n\nplainsecretvalue\n");
        assert_eq!(
            v,
            vec![
                "export TOKEN=\"abc123xyz789\"",
                "abc123xyz789",
                "plainsecretvalue"
            ]
        );
    }
}
