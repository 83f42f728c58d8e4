//! `pack-exec.json`: where pack-exec listens, where packs live, and the per-daemon limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use sidecars_common::config::Validate;
use sidecars_common::daemon::DaemonConfig;

pub use crate::operator::OperatorListen;

/// The daemon's configuration. Every key is optional; unknown keys are an error naming the key.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Agent-facing listener (the API and `/health`).
    pub listen: SocketAddr,
    /// Writable state: installed packs, staging for installs, per-call temp dirs. A volume,
    /// so installs survive a restart.
    pub state_dir: PathBuf,
    /// Read-only packs shipped with the image or a volume (one sub-directory per pack). An
    /// absent directory means "none".
    pub packs_dir: PathBuf,
    /// Largest accepted request body (pack tarballs and call inputs), in bytes.
    pub max_body_bytes: usize,
    /// Most handler processes running at once; further calls get `busy` (429).
    pub concurrency: usize,
    /// The uid:gid handlers run as — applied only when pack-exec itself runs as root, so a
    /// handler never gets root even if the daemon does.
    pub run_as: RunAs,
    /// sidecar-init's handler-spawn socket: when set, every handler is started by init under
    /// a uid of its own (pack-exec then needs no privilege, and `run_as` is unused). Absent:
    /// pack-exec spawns handlers itself (outside the bundle, e.g. in tests).
    pub spawner: Option<PathBuf>,
    /// Operator listener (the agent API plus install, replace and delete): a socket address
    /// or `default-route:PORT` (PORT on the IPv4 address of the default route's interface).
    /// Absent = no operator listener.
    pub operator_listen: Option<OperatorListen>,
    /// File holding the operator listener's bearer token (one trailing newline is dropped; at
    /// least 16 bytes). Required with `operator_listen`.
    pub operator_token_file: Option<PathBuf>,
    /// Accept operator installs of packs without `trust.sha256` even without
    /// `?allow_unsigned=true`.
    pub allow_unsigned: bool,
    /// Most MCP sessions kept at `/mcp` at once; the least recently used goes first.
    pub max_mcp_sessions: usize,
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            state_dir: PathBuf::from("/var/lib/sidecars/packs"),
            packs_dir: PathBuf::from("/usr/share/sidecars/packs"),
            max_body_bytes: 1024 * 1024,
            concurrency: 4 * cores,
            run_as: RunAs {
                uid: 65534,
                gid: 65534,
            },
            spawner: None,
            operator_listen: None,
            operator_token_file: None,
            allow_unsigned: false,
            max_mcp_sessions: 1024,
        }
    }
}

/// A `uid:gid` pair, written as that string in the config.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct RunAs {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric group id.
    pub gid: u32,
}

impl TryFrom<String> for RunAs {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let bad = || format!("`{text}` is not `uid:gid` with numeric ids (e.g. `65534:65534`)");
        let (uid, gid) = text.split_once(':').ok_or_else(bad)?;
        Ok(RunAs {
            uid: uid.parse().map_err(|_| bad())?,
            gid: gid.parse().map_err(|_| bad())?,
        })
    }
}

impl Validate for Config {
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1024..=256 * 1024 * 1024).contains(&self.max_body_bytes) {
            p.push(format!(
                "max_body_bytes: {} is out of range (1024 to 268435456)",
                self.max_body_bytes
            ));
        }
        if !(1..=4096).contains(&self.concurrency) {
            p.push(format!(
                "concurrency: {} is out of range (1 to 4096)",
                self.concurrency
            ));
        }
        if !(1..=65536).contains(&self.max_mcp_sessions) {
            p.push(format!(
                "max_mcp_sessions: {} is out of range (1 to 65536)",
                self.max_mcp_sessions
            ));
        }
        if self.state_dir.as_os_str().is_empty() {
            p.push("state_dir: must not be empty".to_string());
        }
        // The operator listener is resolved and its token read now, at startup: a missing
        // default route or a bad token file is a config error (exit 2), not a late surprise.
        if let Some(op) = &self.operator_listen {
            if op.port() != 0 && op.port() == self.listen.port() {
                p.push(format!(
                    "operator_listen: `{op}` uses listen's port {}; the operator listener needs its own",
                    self.listen.port()
                ));
            }
        }
        if let Err(problems) = self.operator() {
            p.extend(problems);
        }
        p
    }
}

impl Config {
    /// The operator listener, checked and resolved (`default-route:` looked up, token read);
    /// `Ok(None)` when `operator_listen` is absent.
    pub fn operator(&self) -> Result<Option<crate::operator::OperatorSettings>, Vec<String>> {
        crate::operator::settings(
            self.operator_listen.as_ref(),
            self.operator_token_file.as_deref(),
        )
    }
}

impl DaemonConfig for Config {
    fn listen(&self) -> SocketAddr {
        self.listen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidecars_common::config::parse;

    #[test]
    fn defaults_from_empty() {
        let c: Config = parse("{}", "t").unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(
            c.run_as,
            RunAs {
                uid: 65534,
                gid: 65534
            }
        );
        assert!(c.concurrency >= 4);
    }

    #[test]
    fn unknown_key_is_named() {
        let msg = parse::<Config>(r#"{"concurency": 3}"#, "pack-exec.json")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("concurency"), "{msg}");
    }

    #[test]
    fn run_as_parses_and_rejects() {
        let c: Config = parse(r#"{"run_as":"1000:100"}"#, "t").unwrap();
        assert_eq!(
            c.run_as,
            RunAs {
                uid: 1000,
                gid: 100
            }
        );
        let msg = parse::<Config>(r#"{"run_as":"nobody"}"#, "t")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("run_as") && msg.contains("uid:gid"), "{msg}");
    }

    #[test]
    fn ranges_are_checked() {
        let msg = parse::<Config>(r#"{"concurrency":0,"max_body_bytes":1}"#, "t")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("concurrency") && msg.contains("max_body_bytes"),
            "{msg}"
        );
    }

    fn token_file(data: &[u8]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator-token");
        std::fs::write(&path, data).unwrap();
        let path = path.display().to_string();
        (dir, path)
    }

    #[test]
    fn operator_keys_parse() {
        let (_dir, path) = token_file(b"0123456789abcdef0123\n");
        let c: Config = parse(
            &format!(
                r#"{{"operator_listen":"127.0.0.1:9001","operator_token_file":"{path}","allow_unsigned":true}}"#
            ),
            "t",
        )
        .unwrap();
        assert_eq!(
            c.operator_listen,
            Some(OperatorListen::Addr("127.0.0.1:9001".parse().unwrap()))
        );
        assert!(c.allow_unsigned);
        let op = c.operator().unwrap().unwrap();
        assert_eq!(op.addr, "127.0.0.1:9001".parse().unwrap());
        assert!(op.token.matches(b"0123456789abcdef0123"));
        let d: Config = parse("{}", "t").unwrap();
        assert!(d.operator().unwrap().is_none() && !d.allow_unsigned);
    }

    #[test]
    fn operator_listen_needs_a_good_token_file() {
        let msg = parse::<Config>(r#"{"operator_listen":"127.0.0.1:9001"}"#, "t")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("operator_token_file: required"), "{msg}");
        let msg = parse::<Config>(
            r#"{"operator_listen":"127.0.0.1:9001","operator_token_file":"/nonexistent/token"}"#,
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("operator_token_file: cannot read"), "{msg}");
        let (_dir, path) = token_file(b"short-secret\n");
        let msg = parse::<Config>(
            &format!(r#"{{"operator_listen":"127.0.0.1:9001","operator_token_file":"{path}"}}"#),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("operator_token_file:") && msg.contains("at least 16"),
            "{msg}"
        );
        assert!(!msg.contains("short-secret"), "the token leaked: {msg}");
        let msg = parse::<Config>(r#"{"operator_listen":"default-route:nope"}"#, "t")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("operator_listen"), "{msg}");
        let (_dir, path) = token_file(b"0123456789abcdef0123");
        let msg = parse::<Config>(
            &format!(r#"{{"listen":"0.0.0.0:9000","operator_listen":"default-route:9000","operator_token_file":"{path}"}}"#),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("operator_listen") && msg.contains("port 9000"),
            "{msg}"
        );
    }
}
