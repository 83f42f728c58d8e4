//! `sidecars supervise-ctl`: the operator's commands, working directly on the queue files.
//!
//! It needs no running daemon (the files are the source of truth); when the daemon runs, its
//! waiters notice a decision made here within [`crate::waiters::POLL_INTERVAL`].
//! Exit codes: 0 done, 1 the operation failed (unknown id, already decided, I/O), 2 usage.

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

use crate::queue::{Queue, QueueError, Verdict};

/// Operate the supervise approval queue: list, show, approve, deny, events.
#[derive(FromArgs)]
#[argh(subcommand, name = "supervise-ctl")]
pub struct Args {
    /// queue directory (default /run/supervise/queue)
    #[argh(option, default = "PathBuf::from(\"/run/supervise/queue\")")]
    pub queue_dir: PathBuf,
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    List(List),
    Show(Show),
    Approve(Approve),
    Deny(Deny),
    Events(Events),
}

/// List approval requests, oldest first.
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct List {
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
    /// only requests still pending
    #[argh(switch)]
    pending: bool,
}

/// Show one request in full.
#[derive(FromArgs)]
#[argh(subcommand, name = "show")]
struct Show {
    /// approval id
    #[argh(positional)]
    id: String,
}

/// Approve a pending request.
#[derive(FromArgs)]
#[argh(subcommand, name = "approve")]
struct Approve {
    /// approval id
    #[argh(positional)]
    id: String,
    /// note for the agent
    #[argh(option)]
    note: Option<String>,
}

/// Deny a pending request.
#[derive(FromArgs)]
#[argh(subcommand, name = "deny")]
struct Deny {
    /// approval id
    #[argh(positional)]
    id: String,
    /// note for the agent
    #[argh(option)]
    note: Option<String>,
}

/// List daemon lifecycle events reported by sidecar-init.
#[derive(FromArgs)]
#[argh(subcommand, name = "events")]
struct Events {
    /// print JSON instead of a table
    #[argh(switch)]
    json: bool,
}

/// Run one operator command; see [`Args`].
pub fn main(args: Args) -> ExitCode {
    match run(args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("supervise-ctl: {err}");
            ExitCode::FAILURE
        }
    }
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// The command's output text, or why it failed.
fn run(args: Args) -> Result<String, QueueError> {
    let queue = Queue::open(&args.queue_dir)?;
    match args.command {
        Command::List(l) => {
            let mut all = queue.list()?;
            if l.pending {
                all.retain(|a| a.status == crate::Status::Pending);
            }
            if l.json {
                return Ok(pretty(&all));
            }
            let mut out = format!(
                "{:<22} {:<9} {:<12} {:<25} SUMMARY\n",
                "ID", "STATUS", "KIND", "CREATED"
            );
            for a in &all {
                out.push_str(&format!(
                    "{:<22} {:<9} {:<12} {:<25} {}\n",
                    a.id,
                    a.status.as_str(),
                    a.kind,
                    a.created_at,
                    a.summary.replace('\n', " ")
                ));
            }
            let events = queue.events()?;
            if let Some(last) = events.last() {
                out.push_str(&format!(
                    "\n{} daemon event(s); latest: {} {} ({}); see `supervise-ctl events`\n",
                    events.len(),
                    last.event.daemon,
                    serde_json::to_value(last.event.event)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    last.received_at
                ));
            }
            Ok(out)
        }
        Command::Show(s) => Ok(pretty(&queue.get(&s.id)?)),
        Command::Approve(a) => decide(&queue, &a.id, Verdict::Approved, a.note),
        Command::Deny(d) => decide(&queue, &d.id, Verdict::Denied, d.note),
        Command::Events(e) => {
            let events = queue.events()?;
            if e.json {
                return Ok(pretty(&events));
            }
            let mut out = format!(
                "{:<25} {:<12} {:<11} {:<6} {:<8} RESTARTS\n",
                "RECEIVED", "DAEMON", "EVENT", "CODE", "SIGNAL"
            );
            for ev in &events {
                let e = &ev.event;
                let kind = serde_json::to_value(e.event)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                out.push_str(&format!(
                    "{:<25} {:<12} {:<11} {:<6} {:<8} {}\n",
                    ev.received_at,
                    e.daemon,
                    kind,
                    opt(e.code.map(|c| c.to_string())),
                    opt(e.signal.as_ref().filter(|s| !s.is_null()).map(|s| match s {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })),
                    opt(e.restarts.map(|r| r.to_string())),
                ));
            }
            Ok(out)
        }
    }
}

fn decide(
    queue: &Queue,
    id: &str,
    verdict: Verdict,
    note: Option<String>,
) -> Result<String, QueueError> {
    let a = queue.decide(id, verdict, note, "supervise-ctl")?;
    Ok(format!("{} {}\n", a.status.as_str(), a.id))
}
