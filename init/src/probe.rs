//! Readiness probes (TCP connect, HTTP GET) and the tiny HTTP/1.1 client they share with
//! [`crate::notify`].
//!
//! Why a hand-written client: init makes one short request to 127.0.0.1 at a time and reads
//! only the status line. A full HTTP stack would double the binary and its memory for no gain
//! in a 2 MiB-RSS PID 1.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::config::ReadyProbe;

/// Time one probe attempt may take before it counts as failed.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// A parsed ready probe against 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Ready when a TCP connect succeeds.
    Tcp {
        /// Port on 127.0.0.1.
        port: u16,
    },
    /// Ready when `GET /path` answers 2xx.
    Http {
        /// Port on 127.0.0.1.
        port: u16,
        /// Request path, starting with `/`.
        path: String,
    },
}

impl Probe {
    /// Turns the config form into a probe, or says what is wrong with it.
    pub fn parse(p: &ReadyProbe) -> Result<Probe, String> {
        match p {
            ReadyProbe::Tcp(0) => Err("tcp port must be 1-65535".into()),
            ReadyProbe::Tcp(port) => Ok(Probe::Tcp { port: *port }),
            ReadyProbe::Http(s) => {
                let (port, path) = match s.find('/') {
                    Some(i) => (&s[..i], &s[i..]),
                    None => (s.as_str(), "/"),
                };
                let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                    format!("http probe {s:?} must be \"PORT/PATH\", e.g. \"9100/health\"")
                })?;
                if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return Err(format!(
                        "http probe path {path:?} contains spaces or control characters"
                    ));
                }
                Ok(Probe::Http {
                    port,
                    path: path.to_string(),
                })
            }
        }
    }

    /// One attempt, bounded by `limit`.
    pub async fn check(&self, limit: Duration) -> Result<(), String> {
        match self {
            Probe::Tcp { port } => {
                let addr = SocketAddr::from(([127, 0, 0, 1], *port));
                match timeout(limit, TcpStream::connect(addr)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".into()),
                }
            }
            Probe::Http { port, path } => {
                let addr = SocketAddr::from(([127, 0, 0, 1], *port));
                match http_request(addr, "GET", path, None, limit).await {
                    Ok(code) if (200..300).contains(&code) => Ok(()),
                    Ok(code) => Err(format!("HTTP {code}")),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Probes until it passes (true) or `deadline` passes (false). The interval starts small
    /// so a fast daemon is seen ready quickly, and grows so a slow one is not hammered.
    pub async fn wait_ready(&self, deadline: Instant) -> bool {
        let mut interval = Duration::from_millis(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if self.check(left.min(ATTEMPT_TIMEOUT)).await.is_ok() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(interval.min(left)).await;
            interval = (interval * 2).min(Duration::from_millis(250));
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Tcp { port } => write!(f, "tcp 127.0.0.1:{port}"),
            Probe::Http { port, path } => write!(f, "http://127.0.0.1:{port}{path}"),
        }
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and returns the response status code.
/// The whole exchange is bounded by `limit`.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    limit: Duration,
) -> Result<u16, String> {
    let host = addr.to_string();
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: sidecar-init\r\n");
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        s.write_all(&bytes).await.map_err(|e| e.to_string())?;
        // The status line fits in the first few bytes; read until we have it.
        let mut buf = [0u8; 256];
        let mut n = 0;
        while n < buf.len() {
            let r = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
            if r == 0 {
                break;
            }
            n += r;
            if buf[..n].contains(&b'\n') {
                break;
            }
        }
        parse_status(&buf[..n]).ok_or_else(|| "not an HTTP response".to_string())
    };
    match timeout(limit, exchange).await {
        Ok(r) => r,
        Err(_) => Err("timed out".into()),
    }
}

/// Parses `HTTP/1.x NNN ...` into NNN.
fn parse_status(b: &[u8]) -> Option<u16> {
    let line = b.split(|&c| c == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_forms() {
        assert_eq!(
            Probe::parse(&ReadyProbe::Http("9100/health".into())).unwrap(),
            Probe::Http {
                port: 9100,
                path: "/health".into()
            }
        );
        assert_eq!(
            Probe::parse(&ReadyProbe::Http("80".into()))
                .unwrap()
                .to_string(),
            "http://127.0.0.1:80/"
        );
        assert!(Probe::parse(&ReadyProbe::Http("x/health".into())).is_err());
        assert!(Probe::parse(&ReadyProbe::Http("0/health".into())).is_err());
        assert!(Probe::parse(&ReadyProbe::Tcp(0)).is_err());
        assert_eq!(
            Probe::parse(&ReadyProbe::Tcp(9099)).unwrap().to_string(),
            "tcp 127.0.0.1:9099"
        );
    }

    #[test]
    fn status_line() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status(b"HTTP/1.0 500\r\n"), Some(500));
        assert_eq!(parse_status(b"SSH-2.0\r\n"), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tcp_and_http_probes_against_real_listeners() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let ok = buf[..n].starts_with(b"GET /health ");
                let resp: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
                };
                let _ = s.write_all(resp).await;
            }
        });
        assert!(Probe::Tcp { port }.check(ATTEMPT_TIMEOUT).await.is_ok());
        let good = Probe::Http {
            port,
            path: "/health".into(),
        };
        assert!(good.check(ATTEMPT_TIMEOUT).await.is_ok());
        let bad = Probe::Http {
            port,
            path: "/nope".into(),
        };
        assert_eq!(bad.check(ATTEMPT_TIMEOUT).await, Err("HTTP 404".into()));
        // A closed port fails, and wait_ready gives up at its deadline.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cport = closed.local_addr().unwrap().port();
        drop(closed);
        let t0 = Instant::now();
        assert!(
            !Probe::Tcp { port: cport }
                .wait_ready(t0 + Duration::from_millis(100))
                .await
        );
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}
