//! MCP sessions: version negotiation, the session table, and the fan-out of server
//! notifications to the sessions' open SSE streams.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use crate::random::hex as random_hex;

/// Protocol revisions we speak, newest first. The first is what we offer when the client asks
/// for one we don't know.
pub const SUPPORTED_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];

/// The header carrying the session id (case-insensitive on the wire).
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The header carrying the negotiated version on requests after initialize (2025-06-18+).
pub const VERSION_HEADER: &str = "mcp-protocol-version";

/// Answer with the client's version if we support it, else our latest.
pub fn negotiate(requested: &str) -> &'static str {
    SUPPORTED_VERSIONS
        .iter()
        .find(|v| **v == requested)
        .copied()
        .unwrap_or(SUPPORTED_VERSIONS[0])
}

/// JSON-RPC batches exist only in 2025-03-26; later revisions removed them.
pub fn batches_allowed(version: &str) -> bool {
    version == "2025-03-26"
}

/// `outputSchema` and `structuredContent` exist from 2025-06-18 on.
pub fn has_structured_output(version: &str) -> bool {
    version != "2025-03-26"
}

#[derive(Debug)]
struct Entry {
    version: &'static str,
    last_used: Instant,
    /// Bumped when a newer GET stream takes over; dropped (ending the stream) with the session.
    stream: watch::Sender<u64>,
}

/// Live sessions: id → negotiated version. In memory on purpose: after a restart clients get
/// 404 and re-initialise (what the spec prescribes).
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
    max: usize,
    notifications: broadcast::Sender<Value>,
}

/// Why a request's session could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// No `Mcp-Session-Id` header (HTTP 400).
    Missing,
    /// Unknown or ended session (HTTP 404: the client must initialise again).
    Unknown,
}

/// What a GET stream of one session listens to: the server's notifications, and the
/// session's own end (deleted, evicted, or replaced by a newer stream).
#[derive(Debug)]
pub struct StreamHandle {
    /// Every notification the server sends to all sessions.
    pub notifications: broadcast::Receiver<Value>,
    /// Fires (changes or closes) when this stream must end.
    pub ended: watch::Receiver<u64>,
}

impl Sessions {
    /// An empty table holding at most `max` sessions.
    pub fn new(max: usize) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max,
            notifications: broadcast::channel(16).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock can't leave the map inconsistent (single inserts and
        // removes), so recover from poisoning instead of failing every later request.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a session; evicts the least recently used one when full.
    pub fn create(&self, version: &'static str) -> String {
        let id = random_hex(16);
        let mut map = self.lock();
        if map.len() >= self.max {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Entry {
                version,
                last_used: Instant::now(),
                stream: watch::channel(0).0,
            },
        );
        id
    }

    /// The negotiated version of session `id` (and mark it used).
    pub fn get(&self, id: Option<&str>) -> Result<&'static str, SessionError> {
        let id = id.ok_or(SessionError::Missing)?;
        let mut map = self.lock();
        let entry = map.get_mut(id).ok_or(SessionError::Unknown)?;
        entry.last_used = Instant::now();
        Ok(entry.version)
    }

    /// End session `id` (and its stream); false if it did not exist.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Open session `id`'s notification stream. A session has at most one: a newer GET ends
    /// the older stream, so no notification is delivered twice to one session.
    pub fn open_stream(&self, id: Option<&str>) -> Result<StreamHandle, SessionError> {
        let id = id.ok_or(SessionError::Missing)?;
        let mut map = self.lock();
        let entry = map.get_mut(id).ok_or(SessionError::Unknown)?;
        entry.last_used = Instant::now();
        entry.stream.send_modify(|generation| *generation += 1);
        let mut ended = entry.stream.subscribe();
        ended.mark_unchanged();
        Ok(StreamHandle {
            notifications: self.notifications.subscribe(),
            ended,
        })
    }

    /// Send the notification `method` (no params) to every open stream.
    pub fn notify_all(&self, method: &str) {
        let message = json!({"jsonrpc": "2.0", "method": method});
        // No receiver = no open stream: nothing to deliver, not an error.
        let _ = self.notifications.send(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_echoes_supported_and_offers_latest_otherwise() {
        assert_eq!(negotiate("2025-03-26"), "2025-03-26");
        assert_eq!(negotiate("2025-06-18"), "2025-06-18");
        assert_eq!(negotiate("2024-11-05"), SUPPORTED_VERSIONS[0]);
        assert_eq!(negotiate("2099-01-01"), SUPPORTED_VERSIONS[0]);
    }

    #[test]
    fn sessions_evict_least_recently_used() {
        let s = Sessions::new(2);
        let a = s.create("2025-03-26");
        let b = s.create("2025-03-26");
        assert!(s.get(Some(&a)).is_ok());
        let _c = s.create("2025-03-26");
        assert_eq!(s.get(Some(&b)), Err(SessionError::Unknown));
        assert!(s.get(Some(&a)).is_ok());
        assert_eq!(s.get(None), Err(SessionError::Missing));
        assert!(s.remove(&a));
        assert!(!s.remove(&a));
    }

    #[tokio::test]
    async fn a_newer_stream_or_the_end_of_the_session_ends_a_stream() {
        let s = Sessions::new(4);
        let id = s.create("2025-06-18");
        let mut first = s.open_stream(Some(&id)).unwrap();
        let mut second = s.open_stream(Some(&id)).unwrap();
        assert!(first.ended.has_changed().unwrap_or(true), "replaced");
        assert!(!second.ended.has_changed().unwrap());
        s.notify_all("notifications/tools/list_changed");
        let got = second.notifications.recv().await.unwrap();
        assert_eq!(got["method"], "notifications/tools/list_changed");
        assert!(s.remove(&id));
        assert!(
            second.ended.changed().await.is_err(),
            "closed with the session"
        );
        assert!(first.notifications.recv().await.is_ok());
        assert_eq!(
            s.open_stream(Some("nope")).err(),
            Some(SessionError::Unknown)
        );
    }
}
