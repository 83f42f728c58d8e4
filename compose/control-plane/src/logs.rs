//! Picking one daemon's lines out of the sidecars container's output. sidecar-init prefixes
//! every line with the daemon's name (`pack-exec | ...`), or, with `SIDECARS_LOG_FORMAT=json`,
//! writes one JSON object per line with a `daemon` field.

/// Whether a line of the sidecars container's output belongs to `daemon`.
pub fn is_from(line: &[u8], daemon: &str) -> bool {
    let name = daemon.as_bytes();
    if let Some(rest) = line.strip_prefix(name) {
        // `name |+ ` marks the non-final pieces of an over-long line (sidecar-init's relay).
        if rest.starts_with(b" | ") || rest == b" |" || rest.starts_with(b" |+ ") {
            return true;
        }
    }
    if line.first() == Some(&b'{') {
        if let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(line) {
            return obj.get("daemon").and_then(|d| d.as_str()) == Some(daemon);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_prefix() {
        assert!(is_from(b"pack-exec | listening", "pack-exec"));
        assert!(is_from(b"pack-exec |", "pack-exec"));
        assert!(!is_from(b"pack-exec-x | no", "pack-exec"));
        assert!(!is_from(b"pipelock | pack-exec | no", "pack-exec"));
        assert!(!is_from(b"pack-exec: no", "pack-exec"));
    }

    #[test]
    fn json_lines() {
        assert!(is_from(
            br#"{"ts":"t","daemon":"egress","stream":"stdout","msg":"x"}"#,
            "egress"
        ));
        assert!(!is_from(
            br#"{"daemon":"pipelock","msg":"egress | x"}"#,
            "egress"
        ));
        assert!(!is_from(b"{not json", "egress"));
    }

    #[test]
    fn non_utf8_lines_are_fine() {
        assert!(is_from(b"init | \xff\xfe", "init"));
    }
}
