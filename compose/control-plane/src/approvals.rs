//! `approvals`: the operator's side of a bottle's supervise queue.
//!
//! The queue lives on the bottle's named volume (`supervise-queue`, mounted at
//! `/run/supervise/queue` in the sidecars container). The control plane does not open the
//! volume from the host: it runs the image's own `sidecars supervise-ctl` inside the sidecars
//! container through [`Runtime::exec`](crate::runtime::Runtime::exec), as supervise's own uid
//! ([`bottle_spec::Daemon::Supervise`]`.user()`): the queue is supervise's, mode `0700`, and
//! nobody in the container holds `CAP_DAC_OVERRIDE`. Why not from the host:
//!
//! - it works for every backend (compose CLI, Engine API, a remote Docker host, Kubernetes),
//!   where the volume's host path is unknown or not on this machine;
//! - files are created by supervise's uid, like the daemon's own files (a root control plane
//!   writing into the volume would leave root-owned files the daemon cannot manage);
//! - the queue code that runs is the one in the bottle's image, so a control plane of another
//!   version cannot disagree with the daemon about the on-disk layout.
//!
//! The answers are parsed into the supervise crate's own types ([`supervise::Approval`]).

use serde::Serialize;
use supervise::queue::{valid_id, Approval};

use crate::api::ControlError;
use crate::runtime::{ExecOutput, RuntimeError};

/// The multi-call binary in the sidecars image.
pub const SIDECARS_BINARY: &str = "/usr/local/bin/sidecars";

/// One approvals operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Every request, oldest first (optionally only pending ones).
    List {
        /// Only pending requests.
        pending: bool,
    },
    /// One request in full.
    Show {
        /// Its id.
        id: String,
    },
    /// Approve or deny a pending request.
    Decide {
        /// Its id.
        id: String,
        /// true: approve; false: deny.
        approve: bool,
        /// Note for the agent.
        note: Option<String>,
    },
}

impl Op {
    /// The id, checked before anything runs (ids are `<13 digits>-<12 hex>`).
    pub fn check(&self) -> Result<(), ControlError> {
        match self {
            Op::Show { id } | Op::Decide { id, .. } if !valid_id(id) => Err(ControlError::Usage(
                format!("{id:?} is not an approval id (like 1763890000000-0123456789ab)"),
            )),
            _ => Ok(()),
        }
    }

    /// The `supervise-ctl` command line run in the sidecars container.
    pub fn argv(&self) -> Vec<String> {
        let mut argv: Vec<String> = [
            SIDECARS_BINARY,
            "supervise-ctl",
            "--queue-dir",
            bottle_compose::configs::supervise::QUEUE_DIR,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match self {
            Op::List { pending } => {
                argv.extend(["list".to_string(), "--json".to_string()]);
                if *pending {
                    argv.push("--pending".to_string());
                }
            }
            Op::Show { id } => argv.extend(["show".to_string(), id.clone()]),
            Op::Decide { id, approve, note } => {
                let verb = if *approve { "approve" } else { "deny" };
                argv.extend([verb.to_string(), id.clone()]);
                if let Some(note) = note {
                    argv.extend(["--note".to_string(), note.clone()]);
                }
            }
        }
        argv
    }
}

/// What an approvals command prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// `list`.
    List(Vec<Approval>),
    /// `show`, `approve`, `deny`: the request as it now stands.
    One(Approval),
}

/// Interpret `supervise-ctl`'s result: its own failures (exit 1, `supervise-ctl: ...` on
/// stderr: unknown id, already decided) become [`ControlError::Approval`]; anything else
/// non-zero is the runtime's (container not running, binary missing).
pub fn check_exit(argv: &[String], out: &ExecOutput) -> Result<(), ControlError> {
    if out.code == 0 {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if let Some(message) = stderr.strip_prefix("supervise-ctl: ") {
        return Err(ControlError::Approval(message.to_string()));
    }
    Err(RuntimeError::Failed {
        command: argv.join(" "),
        status: format!("exit code {}", out.code),
        stderr,
    }
    .into())
}

/// Parse `supervise-ctl`'s JSON output (`list --json`: an array; `show`: one object).
pub fn parse<T: serde::de::DeserializeOwned>(
    argv: &[String],
    stdout: &[u8],
) -> Result<T, ControlError> {
    serde_json::from_slice(stdout).map_err(|e| {
        RuntimeError::Output {
            command: argv.join(" "),
            message: e.to_string(),
        }
        .into()
    })
}

/// The table `approvals list` prints.
pub fn list_text(all: &[Approval]) -> String {
    if all.is_empty() {
        return "no approval requests\n".to_string();
    }
    let mut out = format!(
        "{:<26} {:<9} {:<12} {:<25} SUMMARY\n",
        "ID", "STATUS", "KIND", "CREATED"
    );
    for a in all {
        out.push_str(&format!(
            "{:<26} {:<9} {:<12} {:<25} {}\n",
            a.id,
            a.status.as_str(),
            a.kind,
            a.created_at,
            a.summary.replace('\n', " ")
        ));
    }
    out
}

/// The text `approvals show|approve|deny` prints.
pub fn one_text(a: &Approval) -> String {
    let mut out = format!(
        "id:       {}\nstatus:   {}\nkind:     {}\nsummary:  {}\ncreated:  {}\n",
        a.id,
        a.status.as_str(),
        a.kind,
        a.summary,
        a.created_at
    );
    if let Some(at) = &a.decided_at {
        out.push_str(&format!(
            "decided:  {at} by {}\n",
            a.decided_by.as_deref().unwrap_or("?")
        ));
    }
    if let Some(note) = &a.note {
        out.push_str(&format!("note:     {note}\n"));
    }
    if !a.details.is_null() {
        let details = serde_json::to_string_pretty(&a.details).unwrap_or_default();
        out.push_str(&format!(
            "details:  {}\n",
            details.replace('\n', "\n          ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use argh::FromArgs;

    const ID: &str = "1763890000000-0123456789ab";

    /// Every argv we build is accepted by supervise-ctl's own argument parser.
    #[test]
    fn argv_is_accepted_by_supervise_ctl() {
        for op in [
            Op::List { pending: false },
            Op::List { pending: true },
            Op::Show { id: ID.into() },
            Op::Decide {
                id: ID.into(),
                approve: true,
                note: Some("go ahead; --not-a-flag".into()),
            },
            Op::Decide {
                id: ID.into(),
                approve: false,
                note: None,
            },
        ] {
            op.check().unwrap();
            let argv = op.argv();
            assert_eq!(argv[0], SIDECARS_BINARY);
            let rest: Vec<&str> = argv[2..].iter().map(String::as_str).collect();
            let parsed = supervise::ctl::Args::from_args(&["supervise-ctl"], &rest);
            assert!(parsed.is_ok(), "{argv:?}");
            assert_eq!(
                parsed.ok().map(|a| a.queue_dir),
                Some("/run/supervise/queue".into())
            );
        }
    }

    #[test]
    fn bad_ids_are_refused_before_anything_runs() {
        for id in ["", "../x", "-1", "1763890000000-0123456789AB"] {
            let err = Op::Show { id: id.into() }.check().unwrap_err();
            assert_eq!(err.exit_code(), 2, "{id}");
        }
        assert!(Op::List { pending: false }.check().is_ok());
    }

    #[test]
    fn failures_are_told_apart() {
        let argv = Op::Show { id: ID.into() }.argv();
        let ctl = ExecOutput {
            code: 1,
            stdout: vec![],
            stderr: b"supervise-ctl: approval 1763890000000-0123456789ab was already approved\n"
                .to_vec(),
        };
        match check_exit(&argv, &ctl) {
            Err(ControlError::Approval(m)) => assert!(m.contains("already approved"), "{m}"),
            other => panic!("{other:?}"),
        }
        let docker = ExecOutput {
            code: 1,
            stdout: vec![],
            stderr: b"Error response from daemon: Container abc is not running\n".to_vec(),
        };
        match check_exit(&argv, &docker) {
            Err(ControlError::Runtime(RuntimeError::Failed { stderr, .. })) => {
                assert!(stderr.contains("not running"))
            }
            other => panic!("{other:?}"),
        }
    }

    /// The JSON supervise writes (the real queue, in a temp dir) parses back into `Approval`.
    #[test]
    fn queue_output_parses_and_prints() {
        let dir = tempfile::tempdir().unwrap();
        let q = supervise::Queue::open(dir.path()).unwrap();
        let a = q
            .submit(supervise::queue::NewApproval {
                kind: "deploy".into(),
                summary: "ship v2\nnow".into(),
                details: serde_json::json!({"env": "prod"}),
            })
            .unwrap();
        q.decide(
            &a.id,
            supervise::Verdict::Denied,
            Some("not today".into()),
            "test",
        )
        .unwrap();
        let listed = serde_json::to_vec_pretty(&q.list().unwrap()).unwrap();
        let argv = Op::List { pending: false }.argv();
        let all: Vec<Approval> = parse(&argv, &listed).unwrap();
        assert_eq!(all.len(), 1);
        let table = list_text(&all);
        assert!(table.contains(&a.id) && table.contains("denied") && table.contains("ship v2 now"));
        let one = one_text(&all[0]);
        assert!(one.contains("note:     not today"), "{one}");
        assert!(one.contains("\"env\": \"prod\""), "{one}");
        assert!(parse::<Approval>(&argv, b"not json").is_err());
        assert_eq!(list_text(&[]), "no approval requests\n");
    }
}
