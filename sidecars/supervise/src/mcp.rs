//! MCP on top of JSON-RPC: version negotiation, sessions, and the method table.
//!
//! Transport concerns (headers, status codes, batches) live in [`crate::agent_http`]; this
//! module answers one classified message at a time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Map, Value};

use sidecars_common::shutdown::Shutdown;

use crate::durable::random_hex;
use crate::jsonrpc::{result_response, Incoming, RpcError, INVALID_PARAMS, METHOD_NOT_FOUND};
use crate::tools::{self, Tools};

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

#[derive(Debug)]
struct Entry {
    version: &'static str,
    last_used: Instant,
}

/// Live sessions: id → negotiated version. In memory on purpose: after a restart clients get
/// 404 and re-initialise (what the spec prescribes); the approvals themselves are on disk.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
    max: usize,
}

/// Why a request's session could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// No `Mcp-Session-Id` header (HTTP 400).
    Missing,
    /// Unknown or ended session (HTTP 404: the client must initialise again).
    Unknown,
}

impl Sessions {
    /// An empty table holding at most `max` sessions.
    pub fn new(max: usize) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max,
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

    /// End session `id`; false if it did not exist.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }
}

/// The result of `initialize` for `params`, and the version it settled on.
pub fn initialize(params: Option<&Map<String, Value>>) -> Result<(Value, &'static str), RpcError> {
    let requested = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            RpcError::new(
                INVALID_PARAMS,
                "initialize needs `protocolVersion` (a string)",
            )
        })?;
    let version = negotiate(requested);
    let result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {
            "name": "sidecars-supervise",
            "title": "Operator approvals",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "instructions": "Before a risky or irreversible action, call request_approval and then wait_for_approval; act only if the status is \"approved\".",
    });
    Ok((result, version))
}

/// Answer one message inside an established session. `None` for notifications and responses.
pub async fn dispatch(msg: Incoming, tools: &Tools, shutdown: &Shutdown) -> Option<Value> {
    match msg {
        Incoming::Notification { method } => {
            tracing::debug!(%method, "notification");
            None
        }
        Incoming::Response => None,
        Incoming::Request { id, method, params } => {
            let result = match method.as_str() {
                "ping" => Ok(json!({})),
                "tools/list" => Ok(tools::list()),
                "tools/call" => tools.call(params, shutdown).await,
                "initialize" => Err(RpcError::new(
                    crate::jsonrpc::INVALID_REQUEST,
                    "initialize must be sent alone, not inside a batch or an existing session's batch",
                )),
                other => Err(RpcError::new(
                    METHOD_NOT_FOUND,
                    format!("method not found: {}", truncate(other, 100)),
                )),
            };
            Some(match result {
                Ok(value) => result_response(id, value),
                Err(err) => err.to_response(id),
            })
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
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
}
