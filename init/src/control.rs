//! The control socket: request/response types shared by the server (inside the running init)
//! and the `health`/`status` client, plus both ends.
//!
//! Why a unix socket and one JSON line each way: the client must work in an image with no
//! shell or curl (`["CMD", "/sidecar-init", "health"]`), and one shared type definition keeps
//! both ends in step. `health` re-runs each running daemon's ready probe at request time, so it
//! reports what is true now, not what was true at start.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::config::DEFAULT_SOCKET_PATH;
use crate::error::Error;
use crate::probe::{Probe, ATTEMPT_TIMEOUT};
use crate::supervisor::State;

/// Environment variable naming the socket (for both init and the client).
pub const SOCKET_ENV: &str = "SIDECAR_INIT_SOCKET";
/// Longest a client waits for an answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum Request {
    /// Every daemon's state.
    Status,
    /// Every daemon's state plus a live ready probe.
    Health,
}

/// One daemon as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// Name.
    pub name: String,
    /// Supervision state.
    pub state: State,
    /// Pid while it runs.
    pub pid: Option<i32>,
    /// Restarts so far.
    pub restarts: u32,
    /// How it last ended on its own (`code 3`, `signal 11 (SIGSEGV)`).
    pub last_exit: Option<String>,
    /// Milliseconds since its current process started.
    pub uptime_ms: Option<u64>,
    /// Whether its ready probe has passed since it (re)started.
    pub ready: bool,
    /// What its ready probe checks.
    pub probe: Option<String>,
    /// Why it failed, when it did.
    pub reason: Option<String>,
}

/// One daemon's health verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthLine {
    /// Name.
    pub name: String,
    /// Running and (if it has a probe) the probe passes now.
    pub ok: bool,
    /// Why, in a few words.
    pub detail: String,
}

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "lowercase")]
pub enum Response {
    /// Answer to [`Request::Status`].
    Status {
        /// One entry per enabled daemon.
        daemons: Vec<DaemonStatus>,
        /// The pack handler jail, when handlers are configured.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jail: Option<HealthLine>,
    },
    /// Answer to [`Request::Health`].
    Health {
        /// Every daemon ok.
        healthy: bool,
        /// One line per enabled daemon.
        daemons: Vec<HealthLine>,
    },
    /// The request could not be served.
    Error {
        /// Why.
        message: String,
    },
}

/// The name of the handler jail's line in `status` and `health`.
pub const JAIL_LINE: &str = "handler-jail";

/// A snapshot request from a connection task to the supervision loop.
pub type Query = oneshot::Sender<Vec<DaemonStatus>>;

/// Picks the socket path: flag, then `SIDECAR_INIT_SOCKET`, then the config's `socket`, then
/// the default.
pub fn socket_path(flag: Option<PathBuf>, env: Option<String>, config: Option<PathBuf>) -> PathBuf {
    flag.or(env.filter(|s| !s.is_empty()).map(PathBuf::from))
        .or(config)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH))
}

/// Binds the control socket, replacing a stale one. Fails with a message that says how to fix a
/// read-only or non-writable directory.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
    let listener = UnixListener::bind(path).map_err(|source| Error::SocketBind {
        path: path.display().to_string(),
        source,
    })?;
    // Owner only: init's uid (root in the bundle, where `docker exec` healthchecks run as root);
    // no daemon or handler may query or flood it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        Error::SocketBind {
            path: path.display().to_string(),
            source,
        }
    })?;
    Ok(listener)
}

/// Serves requests forever. `queries` reaches the supervision loop; `probes` are the enabled
/// daemons' probes by name, for `health`.
pub async fn serve(
    listener: UnixListener,
    queries: mpsc::UnboundedSender<Query>,
    probes: Vec<(String, Option<Probe>)>,
    jail: Option<crate::jail::JailState>,
) {
    let probes = std::sync::Arc::new(probes);
    // The handler jail's line: `health` fails while calls would be refused.
    let jail = jail.map(|state| {
        let (ok, detail) = state.describe();
        HealthLine {
            name: JAIL_LINE.to_string(),
            ok,
            detail,
        }
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let queries = queries.clone();
        let probes = probes.clone();
        let jail = jail.clone();
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(CLIENT_TIMEOUT, answer(stream, queries, &probes, jail)).await;
        });
    }
}

async fn answer(
    stream: UnixStream,
    queries: mpsc::UnboundedSender<Query>,
    probes: &[(String, Option<Probe>)],
    jail: Option<HealthLine>,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    // At most 4 KiB per request, so a bad client cannot grow init's memory.
    let mut r = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(r, 4096));
    r.read_line(&mut line).await?;
    let resp = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
        Ok(req) => {
            let (tx, rx) = oneshot::channel();
            let snapshot = if queries.send(tx).is_ok() {
                rx.await.ok()
            } else {
                None
            };
            match (snapshot, req) {
                (None, _) => Response::Error {
                    message: "init is shutting down".into(),
                },
                (Some(daemons), Request::Status) => Response::Status { daemons, jail },
                (Some(daemons), Request::Health) => {
                    let mut resp = health(daemons, probes).await;
                    if let (Response::Health { healthy, daemons }, Some(line)) = (&mut resp, jail) {
                        *healthy &= line.ok;
                        daemons.push(line);
                    }
                    resp
                }
            }
        }
    };
    let mut out = serde_json::to_vec(&resp).map_err(std::io::Error::other)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    w.shutdown().await
}

async fn health(daemons: Vec<DaemonStatus>, probes: &[(String, Option<Probe>)]) -> Response {
    let mut checks = Vec::new();
    for d in &daemons {
        let probe = probes
            .iter()
            .find(|(n, _)| *n == d.name)
            .and_then(|(_, p)| p.clone());
        let running = d.state == State::Running;
        checks.push(tokio::spawn(async move {
            match (running, probe) {
                (false, _) => None,
                (true, None) => Some(Ok(())),
                (true, Some(p)) => Some(
                    p.check(ATTEMPT_TIMEOUT)
                        .await
                        .map_err(|e| format!("{p}: {e}")),
                ),
            }
        }));
    }
    let mut lines = Vec::new();
    for (d, check) in daemons.into_iter().zip(checks) {
        let result = check.await.ok().flatten();
        let (ok, detail) = match result {
            None => {
                let mut why = d.state.as_str().to_string();
                if let Some(r) = &d.reason {
                    why = format!("{why}: {r}");
                } else if let Some(e) = &d.last_exit {
                    why = format!("{why} (last exit {e})");
                }
                (false, why)
            }
            Some(Ok(())) => {
                let probe = d
                    .probe
                    .as_deref()
                    .map(|p| format!(", {p} ok"))
                    .unwrap_or_default();
                (true, format!("running, pid {}{probe}", d.pid.unwrap_or(0)))
            }
            Some(Err(e)) => (false, format!("running but not ready ({e})")),
        };
        lines.push(HealthLine {
            name: d.name,
            ok,
            detail,
        });
    }
    Response::Health {
        healthy: lines.iter().all(|l| l.ok),
        daemons: lines,
    }
}

/// Client side: sends `req` to the init listening at `path` and returns its answer.
pub fn request(path: &Path, req: Request) -> Result<Response, Error> {
    let err = |source: std::io::Error| Error::Control {
        path: path.display().to_string(),
        source,
    };
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(err)?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(err)?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(err)?;
    let mut line = serde_json::to_vec(&req).map_err(|e| err(std::io::Error::other(e)))?;
    line.push(b'\n');
    s.write_all(&line).map_err(err)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(err)?;
    serde_json::from_str(&answer).map_err(|e| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad answer: {e}"),
        ))
    })
}

/// Formats milliseconds as `1h02m`, `3m04s`, `5.2s`.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}.{}s", s, (ms % 1000) / 100)
    }
}

/// Renders `status` as an aligned table.
pub fn status_table(daemons: &[DaemonStatus]) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "PID".into(),
        "RESTARTS".into(),
        "LAST EXIT".into(),
        "UPTIME".into(),
    ]];
    for d in daemons {
        let state = match (&d.reason, d.state, d.ready, &d.probe) {
            (Some(r), _, _, _) => format!("{} ({r})", d.state.as_str()),
            (None, State::Running, false, Some(_)) => "running (not ready)".into(),
            _ => d.state.as_str().to_string(),
        };
        rows.push([
            d.name.clone(),
            state,
            d.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            d.restarts.to_string(),
            d.last_exit.clone().unwrap_or_else(|| "-".into()),
            d.uptime_ms
                .map(human_duration)
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c == 5 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_precedence() {
        let p = |f: Option<&str>, e: Option<&str>, c: Option<&str>| {
            socket_path(
                f.map(PathBuf::from),
                e.map(String::from),
                c.map(PathBuf::from),
            )
        };
        assert_eq!(p(Some("/f"), Some("/e"), Some("/c")), PathBuf::from("/f"));
        assert_eq!(p(None, Some("/e"), Some("/c")), PathBuf::from("/e"));
        assert_eq!(p(None, Some(""), Some("/c")), PathBuf::from("/c"));
        assert_eq!(p(None, None, None), PathBuf::from(DEFAULT_SOCKET_PATH));
    }

    #[test]
    fn wire_format_round_trips() {
        assert_eq!(
            serde_json::to_string(&Request::Health).unwrap(),
            r#"{"request":"health"}"#
        );
        let r = Response::Health {
            healthy: false,
            daemons: vec![HealthLine {
                name: "a".into(),
                ok: false,
                detail: "failed".into(),
            }],
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), r);
    }

    #[test]
    fn table_and_durations() {
        assert_eq!(human_duration(5_250), "5.2s");
        assert_eq!(human_duration(184_000), "3m04s");
        assert_eq!(human_duration(3_720_000), "1h02m");
        let t = status_table(&[DaemonStatus {
            name: "egress".into(),
            state: State::Running,
            pid: Some(7),
            restarts: 1,
            last_exit: Some("code 1".into()),
            uptime_ms: Some(1000),
            ready: false,
            probe: Some("tcp 127.0.0.1:1".into()),
            reason: None,
        }]);
        assert!(t.starts_with("NAME    STATE"), "{t}");
        assert!(
            t.contains("egress  running (not ready)  7    1         code 1     1.0s"),
            "{t}"
        );
    }
}
