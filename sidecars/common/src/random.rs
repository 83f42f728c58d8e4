//! Unpredictable identifiers (MCP session ids, temp-file names) from the OS's CSPRNG.

/// `n` random bytes as lowercase hex, from the OS's CSPRNG. Falls back to a per-process
/// counter mixed with the clock only if the OS refuses (it never does on Linux).
pub fn hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    if getrandom::fill(&mut buf).is_err() {
        let fallback = crate::http::new_request_id();
        return fallback.chars().cycle().take(n * 2).collect();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn has_the_requested_length_and_differs() {
        let a = super::hex(8);
        assert_eq!(a.len(), 16);
        assert_ne!(a, super::hex(8));
    }
}
