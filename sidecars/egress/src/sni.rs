//! A blind tunnel to a host name carries TLS for that name and nothing else.
//!
//! The allowlist decides which `CONNECT host:port` may open; what travels inside a blind
//! tunnel egress does not read. Without this check the tunnel to an allowlisted CDN name could
//! carry a ClientHello for another tenant of the same CDN (domain fronting), or plain HTTP
//! with any `Host` (which also skips pipelock's plain-HTTP DLP). So before relaying, egress
//! reads the client's first bytes: they must be a TLS ClientHello whose SNI is the CONNECT
//! host (compared case-insensitively, a trailing dot ignored). Tunnels to an IP literal (which
//! the operator allowlisted by address) are not checked: clients send no SNI for them.
//!
//! The ClientHello is parsed by rustls (`rustls::server::Acceptor`), which reads exactly the
//! handshake records and nothing more; the bytes are kept and sent upstream unchanged.

use std::time::Duration;

use rustls::server::Acceptor;
use sidecars_common::proxy::TunnelClient;

/// Most bytes read while waiting for a complete ClientHello (a large one with post-quantum key
/// shares is ~2 KiB; the TLS record limit is 16 KiB plus header).
const MAX_HELLO: usize = 32 * 1024;

/// Why a tunnel was closed before anything was relayed. Carries no value the client sent:
/// a name in an SNI could be anything, secrets included, so it never reaches the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SniRefusal {
    /// The first bytes are not a TLS ClientHello.
    #[error("the tunnel does not start with a TLS ClientHello (blind tunnels to a host name carry TLS for that name only)")]
    NotTls,
    /// A ClientHello without a server name.
    #[error("the ClientHello names no server (SNI missing)")]
    Missing,
    /// A ClientHello for another name.
    #[error("the ClientHello's server name ({len} bytes) is not the CONNECT host")]
    Mismatch {
        /// Length of the name presented (not the name).
        len: usize,
    },
    /// The client closed, or sent nothing in time.
    #[error("no ClientHello within {0:?}")]
    NoHello(Duration),
    /// More than [`MAX_HELLO`] bytes without a complete ClientHello.
    #[error("no complete ClientHello in the first {MAX_HELLO} bytes")]
    TooLarge,
}

/// Whether `host` (a CONNECT target's host) is an IP literal.
pub fn is_ip_literal(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Read the client's ClientHello (kept in `client`'s pending bytes) and check its SNI
/// against `host`, waiting at most `timeout` for it.
pub async fn check(
    client: &mut TunnelClient,
    host: &str,
    timeout: Duration,
) -> Result<(), SniRefusal> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut acceptor = Acceptor::default();
    let mut fed = 0;
    loop {
        if client.pending().len() == fed {
            if fed >= MAX_HELLO {
                return Err(SniRefusal::TooLarge);
            }
            match tokio::time::timeout_at(deadline, client.read_more()).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(SniRefusal::NoHello(timeout)),
            }
        }
        let pending = client.pending();
        // A TLS handshake record starts with 0x16; anything else is refused at once.
        if pending.first() != Some(&0x16) {
            return Err(SniRefusal::NotTls);
        }
        let mut new = &pending[fed..];
        while !new.is_empty() {
            match acceptor.read_tls(&mut new) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return Err(SniRefusal::NotTls),
            }
        }
        fed = pending.len() - new.len();
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                return match accepted.client_hello().server_name() {
                    None => Err(SniRefusal::Missing),
                    Some(name) if same_name(name, host) => Ok(()),
                    Some(name) => Err(SniRefusal::Mismatch { len: name.len() }),
                };
            }
            Ok(None) => {
                if fed < client.pending().len() {
                    // The acceptor's buffer took only part: it needs no more to decide.
                    return Err(SniRefusal::TooLarge);
                }
            }
            Err(_) => return Err(SniRefusal::NotTls),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_without_case_and_trailing_dot() {
        assert!(same_name("Example.COM.", "example.com"));
        assert!(same_name("example.com", "example.com."));
        assert!(!same_name("cdn.example.com", "example.com"));
        assert!(is_ip_literal("127.0.0.1") && is_ip_literal("[::1]") && is_ip_literal("::1"));
        assert!(!is_ip_literal("localhost"));
    }
}
