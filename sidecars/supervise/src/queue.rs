//! The durable approval queue: one JSON file per request, one per decision, one per event.
//!
//! Shared by the daemon, `sidecars supervise-ctl` and the control plane's `approvals`
//! commands, so all three read and write the same layout through the same code:
//!
//! ```text
//! <queue_dir>/requests/<id>.json   {"id","kind","summary","details","created_at"}
//! <queue_dir>/decisions/<id>.json  {"id","status":"approved|denied","note","decided_at","decided_by"}
//! <queue_dir>/events/<id>.json     {"id","received_at","ts","daemon","event","code","signal","restarts"}
//! <queue_dir>/tmp/                 temp files of in-progress writes (same filesystem)
//! ```
//!
//! Requests and decisions are separate files so that nothing is ever rewritten in place: a
//! request is created once, a decision is linked into place once (the first decision wins,
//! even between processes), and a reader never sees a half-written file. Every write is
//! fsynced, renamed/linked and its directory fsynced before the call returns (see
//! [`crate::durable`]). Ids start with the creation time in milliseconds, so sorting by id is
//! sorting by age. All calls are blocking file I/O; async callers use `spawn_blocking`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::durable;

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nobody has decided yet.
    Pending,
    /// The operator said yes.
    Approved,
    /// The operator said no.
    Denied,
}

impl Status {
    /// The lowercase name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
        }
    }
}

/// An operator's verdict: the two ways out of `pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Approve the request.
    Approved,
    /// Deny the request.
    Denied,
}

impl From<Verdict> for Status {
    fn from(v: Verdict) -> Status {
        match v {
            Verdict::Approved => Status::Approved,
            Verdict::Denied => Status::Denied,
        }
    }
}

/// What an agent asks for; the queue adds the id and timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    /// Short category chosen by the agent, e.g. `deploy` or `spend`.
    pub kind: String,
    /// One-line description for the operator's list.
    pub summary: String,
    /// Anything else the operator should see (free-form JSON).
    pub details: Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct RequestRecord {
    id: String,
    kind: String,
    summary: String,
    #[serde(default)]
    details: Value,
    created_at: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct DecisionRecord {
    id: String,
    status: Verdict,
    #[serde(default)]
    note: Option<String>,
    decided_at: String,
    decided_by: String,
}

/// An approval request as everyone sees it: the request plus its decision, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// Unique, time-ordered id.
    pub id: String,
    /// Pending, approved or denied.
    pub status: Status,
    /// The agent's category.
    pub kind: String,
    /// The agent's one-line summary.
    pub summary: String,
    /// The agent's details.
    pub details: Value,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The operator's note, once decided (may be absent then too).
    pub note: Option<String>,
    /// RFC 3339 decision time.
    pub decided_at: Option<String>,
    /// Who decided (`supervise-ctl`, `operator-api`, ...).
    pub decided_by: Option<String>,
}

/// What happened to a daemon, as sidecar-init reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The daemon (re)started.
    Started,
    /// The daemon exited.
    Exited,
    /// sidecar-init is about to restart it after a backoff.
    Restarting,
    /// It crash-looped and was given up on (health is red).
    Failed,
}

/// A daemon lifecycle event posted by sidecar-init. Unknown extra fields are ignored so a
/// newer init does not break an older supervise.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened, as the sender wrote it.
    #[serde(default)]
    pub ts: Option<String>,
    /// Which daemon.
    pub daemon: String,
    /// What happened.
    pub event: EventKind,
    /// Exit code, for `exited`.
    #[serde(default)]
    pub code: Option<i64>,
    /// Terminating signal (number or name), for `exited`.
    #[serde(default)]
    pub signal: Option<Value>,
    /// Restarts so far.
    #[serde(default)]
    pub restarts: Option<u64>,
}

/// An event as stored: the posted event plus our id and receive time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Unique, time-ordered id.
    pub id: String,
    /// RFC 3339 time supervise stored it.
    pub received_at: String,
    /// The event itself.
    #[serde(flatten)]
    pub event: Event,
}

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A file or directory could not be read or written.
    #[error("queue I/O on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file in the queue is not the JSON we wrote.
    #[error("queue file {path} is corrupt: {message}")]
    Corrupt {
        /// The bad file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The id is not of the shape we issue (and is never used to build a path).
    #[error("invalid approval id {0:?}")]
    InvalidId(String),
    /// No request has this id.
    #[error("no approval request with id {0}")]
    NotFound(String),
    /// Somebody decided first; carries the request as it now stands.
    #[error("approval {} was already {}", .0.id, .0.status.as_str())]
    AlreadyDecided(Box<Approval>),
}

/// A handle on a queue directory. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct Queue {
    dir: PathBuf,
}

const REQUESTS: &str = "requests";
const DECISIONS: &str = "decisions";
const EVENTS: &str = "events";
const TMP: &str = "tmp";

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// True for ids of the shape [`Queue`] issues: they are safe to use as file names.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
        && !id.starts_with('-')
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

fn new_id() -> String {
    // Ids sort oldest first, so within one process the millisecond part never repeats or goes
    // back: two requests in the same millisecond (or a clock step back) still list in order.
    static LAST_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let ms = LAST_MS
        .fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |last| Some(now.max(last + 1)),
        )
        .map_or(now, |last| now.max(last + 1));
    format!("{ms:013}-{}", durable::random_hex(6))
}

impl Queue {
    /// Open (creating if needed) the queue at `dir`, and sweep temp files that a crash left
    /// behind (they were never acknowledged).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Queue, QueueError> {
        let dir = dir.into();
        for sub in [REQUESTS, DECISIONS, EVENTS, TMP] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        let tmp = dir.join(TMP);
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let stale = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 60);
                if stale {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(Queue { dir })
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, sub: &str, id: &str) -> PathBuf {
        self.dir.join(sub).join(format!("{id}.json"))
    }

    /// Store a new request durably and return it (status `pending`).
    pub fn submit(&self, new: NewApproval) -> Result<Approval, QueueError> {
        let record = RequestRecord {
            id: new_id(),
            kind: new.kind,
            summary: new.summary,
            details: new.details,
            created_at: now_rfc3339(),
        };
        let bytes = to_json(&record);
        let dest = self.path(REQUESTS, &record.id);
        durable::create_new(&self.dir.join(TMP), &dest, &bytes).map_err(io_err(&dest))?;
        Ok(merge(record, None))
    }

    /// One request with its decision.
    pub fn get(&self, id: &str) -> Result<Approval, QueueError> {
        if !valid_id(id) {
            return Err(QueueError::InvalidId(id.to_string()));
        }
        let path = self.path(REQUESTS, id);
        let record: RequestRecord = match read_json(&path)? {
            Some(r) => r,
            None => return Err(QueueError::NotFound(id.to_string())),
        };
        let decision = read_json(&self.path(DECISIONS, id))?;
        Ok(merge(record, decision))
    }

    /// Whether a decision file exists for `id` (a cheap check for waiters).
    pub fn is_decided(&self, id: &str) -> bool {
        valid_id(id) && self.path(DECISIONS, id).exists()
    }

    /// Every request, oldest first. A corrupt file is skipped with a warning rather than
    /// hiding every other request from the operator.
    pub fn list(&self) -> Result<Vec<Approval>, QueueError> {
        let mut out = Vec::new();
        for id in self.ids(REQUESTS)? {
            match self.get(&id) {
                Ok(a) => out.push(a),
                Err(QueueError::NotFound(_)) => {}
                Err(err) => tracing::warn!(%err, "skipping an unreadable approval"),
            }
        }
        Ok(out)
    }

    /// Decide a pending request. Fails with [`QueueError::AlreadyDecided`] if a decision
    /// exists (whoever wrote it, in whatever process).
    pub fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        note: Option<String>,
        decided_by: &str,
    ) -> Result<Approval, QueueError> {
        let current = self.get(id)?;
        if current.status != Status::Pending {
            return Err(QueueError::AlreadyDecided(Box::new(current)));
        }
        let record = DecisionRecord {
            id: id.to_string(),
            status: verdict,
            note,
            decided_at: now_rfc3339(),
            decided_by: decided_by.to_string(),
        };
        let dest = self.path(DECISIONS, id);
        match durable::create_new(&self.dir.join(TMP), &dest, &to_json(&record)) {
            Ok(()) => self.get(id),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                Err(QueueError::AlreadyDecided(Box::new(self.get(id)?)))
            }
            Err(err) => Err(io_err(&dest)(err)),
        }
    }

    /// Store a daemon event durably.
    pub fn record_event(&self, event: Event) -> Result<StoredEvent, QueueError> {
        let stored = StoredEvent {
            id: new_id(),
            received_at: now_rfc3339(),
            event,
        };
        let dest = self.path(EVENTS, &stored.id);
        durable::create_new(&self.dir.join(TMP), &dest, &to_json(&stored))
            .map_err(io_err(&dest))?;
        Ok(stored)
    }

    /// Every stored event, oldest first.
    pub fn events(&self) -> Result<Vec<StoredEvent>, QueueError> {
        let mut out = Vec::new();
        for id in self.ids(EVENTS)? {
            match read_json::<StoredEvent>(&self.path(EVENTS, &id)) {
                Ok(Some(e)) => out.push(e),
                Ok(None) => {}
                Err(err) => tracing::warn!(%err, "skipping an unreadable event"),
            }
        }
        Ok(out)
    }

    fn ids(&self, sub: &str) -> Result<Vec<String>, QueueError> {
        let dir = self.dir.join(sub);
        let mut ids: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_suffix(".json")?;
                valid_id(id).then(|| id.to_string())
            })
            .collect();
        ids.sort();
        Ok(ids)
    }
}

fn merge(r: RequestRecord, d: Option<DecisionRecord>) -> Approval {
    let (status, note, decided_at, decided_by) = match d {
        Some(d) => (
            Status::from(d.status),
            d.note,
            Some(d.decided_at),
            Some(d.decided_by),
        ),
        None => (Status::Pending, None, None, None),
    };
    Approval {
        id: r.id,
        status,
        kind: r.kind,
        summary: r.summary,
        details: r.details,
        created_at: r.created_at,
        note,
        decided_at,
        decided_by,
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records are plain data (strings, numbers, JSON values): serialising cannot fail.
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, QueueError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(QueueError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|err| QueueError::Corrupt {
            path: path.to_path_buf(),
            message: err.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new(kind: &str) -> NewApproval {
        NewApproval {
            kind: kind.into(),
            summary: "deploy v2".into(),
            details: json!({"env": "prod"}),
        }
    }

    #[test]
    fn requests_in_the_same_millisecond_list_in_submission_order() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        let submitted: Vec<_> = (0..50)
            .map(|_| q.submit(new("deploy")).unwrap().id)
            .collect();
        let listed: Vec<_> = q.list().unwrap().into_iter().map(|x| x.id).collect();
        assert_eq!(listed, submitted);
    }

    #[test]
    fn submit_get_list_decide() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        let a = q.submit(new("deploy")).unwrap();
        let b = q.submit(new("spend")).unwrap();
        assert_eq!(a.status, Status::Pending);
        let ids: Vec<_> = q.list().unwrap().into_iter().map(|x| x.id).collect();
        assert_eq!(ids, vec![a.id.clone(), b.id.clone()]);
        let d = q
            .decide(&a.id, Verdict::Approved, Some("ok".into()), "test")
            .unwrap();
        assert_eq!(d.status, Status::Approved);
        assert_eq!(d.note.as_deref(), Some("ok"));
        // A second queue handle (another process) sees the same state.
        let q2 = Queue::open(dir.path()).unwrap();
        assert_eq!(q2.get(&a.id).unwrap().status, Status::Approved);
        assert!(q2.is_decided(&a.id));
        assert!(!q2.is_decided(&b.id));
    }

    #[test]
    fn first_decision_wins() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        let a = q.submit(new("deploy")).unwrap();
        q.decide(&a.id, Verdict::Denied, None, "x").unwrap();
        match q.decide(&a.id, Verdict::Approved, None, "y") {
            Err(QueueError::AlreadyDecided(cur)) => assert_eq!(cur.status, Status::Denied),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ids_that_could_escape_the_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        for bad in ["../x", "/etc/passwd", "", "a/b", "ZZ", "-1"] {
            assert!(matches!(q.get(bad), Err(QueueError::InvalidId(_))), "{bad}");
        }
        assert!(matches!(
            q.get("0000000000000-abcdef"),
            Err(QueueError::NotFound(_))
        ));
    }

    #[test]
    fn events_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        let ev: Event = serde_json::from_value(json!({
            "ts": "2025-01-01T00:00:00Z", "daemon": "pipelock", "event": "exited",
            "code": 1, "signal": null, "restarts": 2, "future_field": true
        }))
        .unwrap();
        q.record_event(ev.clone()).unwrap();
        let all = q.events().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].event, ev);
    }
}
