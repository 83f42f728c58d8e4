//! Operator notifications: a small JSON event POSTed to `notify_url` on every daemon start,
//! exit, restart and failure.
//!
//! Why fire-and-forget: supervision must never wait on the notification target (it may be one
//! of the supervised daemons, down or restarting). Each event is its own short task with a
//! timeout, and at most [`MAX_IN_FLIGHT`] run at once; beyond that, events are dropped (and
//! counted in init's debug log) rather than queued without bound.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::probe::http_request;

/// Longest a notification may take (connect + send + status line).
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Most notifications in flight at once.
pub const MAX_IN_FLIGHT: usize = 8;

/// A parsed `http://HOST:PORT/PATH` with an IP-literal (or `localhost`) host: init resolves no
/// DNS names, so it needs no resolver thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Request path.
    pub path: String,
}

impl NotifyTarget {
    /// Parses the URL or says what is wrong.
    pub fn parse(url: &str) -> Result<NotifyTarget, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("{url:?} must start with http:// (plain HTTP to a local service)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
            _ => (authority, None),
        };
        let port: u16 = match port {
            Some(p) => p.parse().map_err(|_| format!("bad port in {url:?}"))?,
            None => 80,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse()
                .map_err(|_| format!("host of {url:?} must be an IP address or localhost"))?
        };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!(
                "path of {url:?} contains spaces or control characters"
            ));
        }
        Ok(NotifyTarget {
            addr: SocketAddr::new(ip, port),
            path: path.to_string(),
        })
    }
}

/// What happened to a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The daemon's process was started.
    Started,
    /// It exited on its own.
    Exited,
    /// It will be started again after a backoff.
    Restarting,
    /// It crash-looped, could not start, or was not ready in time: given up on.
    Failed,
}

/// The JSON body of one notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// RFC 3339 UTC timestamp.
    pub ts: String,
    /// Daemon name.
    pub daemon: String,
    /// What happened.
    pub event: EventKind,
    /// Exit code, when it exited with one.
    pub code: Option<i32>,
    /// Signal name, when it was killed by one.
    pub signal: Option<String>,
    /// Restarts so far.
    pub restarts: u32,
}

/// Sends events without ever blocking the caller.
#[derive(Debug, Clone)]
pub struct Notifier {
    target: NotifyTarget,
    in_flight: Arc<AtomicUsize>,
}

impl Notifier {
    /// A notifier for `target`.
    pub fn new(target: NotifyTarget) -> Self {
        Notifier {
            target,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Spawns the POST of `event` and returns at once (must be called inside the runtime).
    pub fn send(&self, event: &Event) {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(
                "notify: too many events in flight, dropped one for {}",
                event.daemon
            );
            return;
        }
        let body = match serde_json::to_vec(event) {
            Ok(b) => b,
            Err(_) => {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        };
        let target = self.target.clone();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            let r = http_request(target.addr, "POST", &target.path, Some(&body), TIMEOUT).await;
            if let Err(e) = r {
                tracing::debug!("notify to {} failed: {e}", target.addr);
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = NotifyTarget::parse("http://127.0.0.1:9100/internal/events").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9100".parse().unwrap());
        assert_eq!(t.path, "/internal/events");
        let t = NotifyTarget::parse("http://localhost").unwrap();
        assert_eq!(t.addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(t.path, "/");
        let t = NotifyTarget::parse("http://[::1]:8080/x").unwrap();
        assert_eq!(t.addr, "[::1]:8080".parse().unwrap());
        assert!(NotifyTarget::parse("https://127.0.0.1/").is_err());
        assert!(NotifyTarget::parse("http://supervise:9100/").is_err());
        assert!(NotifyTarget::parse("http://127.0.0.1:x/").is_err());
    }

    #[test]
    fn event_json_shape() {
        let e = Event {
            ts: "2024-01-01T00:00:00.000Z".into(),
            daemon: "egress".into(),
            event: EventKind::Restarting,
            code: Some(3),
            signal: None,
            restarts: 1,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"ts":"2024-01-01T00:00:00.000Z","daemon":"egress","event":"restarting","code":3,"signal":null,"restarts":1}"#
        );
    }
}
