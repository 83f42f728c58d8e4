//! The command line: argh definitions, and printing each operation's result. Parsing errors
//! and invalid manifests exit 2, runtime failures 1 (see [`crate::api`]).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;
use bytes::Bytes;

use crate::api::{ControlError, UpReport};
use crate::approvals::{self, Answer, Op};
use crate::core::Controller;
use crate::packs::InstallFlags;
use crate::runtime::{LogOptions, Runtime, Stream};
use crate::source::Source;

/// Render, run and inspect bot-bottle bottles (agent + sidecars compose projects).
#[derive(FromArgs, Debug)]
pub struct Cli {
    #[argh(subcommand)]
    /// the operation
    pub command: Command,
}

/// The operations.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    /// `render`
    Render(RenderArgs),
    /// `up`
    Up(UpArgs),
    /// `down`
    Down(DownArgs),
    /// `ps`
    Ps(PsArgs),
    /// `logs`
    Logs(LogsArgs),
    /// `packs`
    Packs(PacksArgs),
    /// `approvals`
    Approvals(ApprovalsArgs),
    /// `serve`
    Serve(ServeArgs),
    /// `kill-switch`
    KillSwitch(KillSwitchArgs),
    /// `reload`
    Reload(ReloadArgs),
}

/// Reload a running bottle without a restart: re-render it from its manifest (MANIFEST, else
/// the one it was started from), rewrite pipelock's and egress's changed configs, and have
/// sidecar-init hand them their credentials again from the mounted files (rotate a credential
/// by rewriting its file in place: `cat new > FILE`) before they re-read configs, routes and
/// vault; a bad file keeps the current state. A manifest that changes anything else
/// (another daemon's config, the containers) is refused, naming it: run `up` for that.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "reload")]
pub struct ReloadArgs {
    /// the bottle's slug
    #[argh(positional)]
    pub slug: String,
    /// the manifest to re-render from (default: the one the bottle was started from)
    #[argh(positional)]
    pub manifest: Option<PathBuf>,
}

/// Engage (`on`) or release (`off`) a bottle's kill switch: pipelock and egress refuse every
/// request (`503 kill switch engaged`) and close open tunnels while it is on; a proxy that
/// restarts meanwhile stays off.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "kill-switch")]
pub struct KillSwitchArgs {
    /// the bottle's slug
    #[argh(positional)]
    pub slug: String,
    /// on or off
    #[argh(positional)]
    pub state: String,
}

/// Serve the HTTP API (docs/api.md): bottles are created, inspected and deleted over HTTP.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "serve")]
pub struct ServeArgs {
    /// address to listen on (default 127.0.0.1:8080; the image uses 0.0.0.0:8080)
    #[argh(option, default = "std::net::SocketAddr::from(([127, 0, 0, 1], 8080))")]
    pub listen: std::net::SocketAddr,
    /// file holding the bearer token (else the CONTROL_PLANE_TOKEN environment variable)
    #[argh(option)]
    pub token_file: Option<PathBuf>,
    /// run without authentication (anyone who reaches the port controls Docker); every
    /// startup log line says so
    #[argh(switch)]
    pub insecure_no_auth: bool,
    /// largest request body accepted, in bytes (default 1048576)
    #[argh(option, default = "crate::server::DEFAULT_MAX_BODY")]
    pub max_body_bytes: usize,
    /// seconds `POST /v1/bottles` waits for the bottle to be healthy (default 120)
    #[argh(option, default = "120")]
    pub timeout: u64,
}

/// List and decide a bottle's supervise approval requests (runs supervise-ctl in its sidecars).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "approvals")]
pub struct ApprovalsArgs {
    #[argh(subcommand)]
    /// the approvals operation
    pub command: ApprovalsCommand,
}

/// Approvals operations.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ApprovalsCommand {
    /// `approvals list`
    List(ApprovalsList),
    /// `approvals show`
    Show(ApprovalsShow),
    /// `approvals approve`
    Approve(ApprovalsDecide),
    /// `approvals deny`
    Deny(ApprovalsDeny),
}

/// List a bottle's approval requests, oldest first.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct ApprovalsList {
    /// the bottle's slug
    #[argh(positional)]
    pub slug: String,
    /// only requests still pending
    #[argh(switch)]
    pub pending: bool,
    /// print JSON
    #[argh(switch)]
    pub json: bool,
}

/// Show one approval request in full.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "show")]
pub struct ApprovalsShow {
    /// the bottle's slug
    #[argh(positional)]
    pub slug: String,
    /// the approval id
    #[argh(positional)]
    pub id: String,
    /// print JSON
    #[argh(switch)]
    pub json: bool,
}

/// Approve a pending request (the agent's wait_for_approval returns "approved").
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "approve")]
pub struct ApprovalsDecide {
    /// the bottle's slug
    #[argh(positional)]
    pub slug: String,
    /// the approval id
    #[argh(positional)]
    pub id: String,
    /// note for the agent
    #[argh(option)]
    pub note: Option<String>,
    /// print JSON
    #[argh(switch)]
    pub json: bool,
}

/// Deny a pending request (the agent's wait_for_approval returns "denied").
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "deny")]
pub struct ApprovalsDeny {
    /// the bottle's slug
    #[argh(positional)]
    pub slug: String,
    /// the approval id
    #[argh(positional)]
    pub id: String,
    /// note for the agent
    #[argh(option)]
    pub note: Option<String>,
    /// print JSON
    #[argh(switch)]
    pub json: bool,
}

/// Print the compose YAML of a manifest; with --out, also write the project directory.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "render")]
pub struct RenderArgs {
    /// the bottle manifest (TOML or JSON)
    #[argh(positional)]
    pub manifest: PathBuf,
    /// write compose.yaml, config/*.json and packs/ into this directory
    #[argh(option)]
    pub out: Option<PathBuf>,
}

/// Bring a bottle up and wait until it is healthy (no manifest: the embedded example).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "up")]
pub struct UpArgs {
    /// the bottle manifest (default: the embedded examples/bottle.toml)
    #[argh(positional)]
    pub manifest: Option<PathBuf>,
    /// seconds to wait for the bottle to be healthy (default 120)
    #[argh(option, default = "120")]
    pub timeout: u64,
    /// print the result as JSON
    #[argh(switch)]
    pub json: bool,
}

/// Remove a bottle's containers, networks and volumes (idempotent).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "down")]
pub struct DownArgs {
    /// a bottle slug, or its manifest file
    #[argh(positional)]
    pub target: String,
}

/// List the bottles known in the state directory, with their state.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "ps")]
pub struct PsArgs {
    /// print the result as JSON
    #[argh(switch)]
    pub json: bool,
}

/// Show the sidecars container's output, optionally one daemon's lines only.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "logs")]
pub struct LogsArgs {
    /// the bottle's slug
    #[argh(positional)]
    pub slug: String,
    /// only this daemon's lines (pack-exec, pipelock, ..., or init)
    #[argh(option)]
    pub daemon: Option<String>,
    /// keep streaming new lines
    #[argh(switch, short = 'f')]
    pub follow: bool,
    /// only the last N lines
    #[argh(option)]
    pub tail: Option<u64>,
}

/// Install, list, call and remove command packs of a running bottle.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "packs")]
pub struct PacksArgs {
    #[argh(subcommand)]
    /// the packs operation
    pub command: PacksCommand,
}

/// Packs operations.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum PacksCommand {
    /// `packs install`
    Install(PacksInstall),
    /// `packs list`
    List(PacksList),
    /// `packs call`
    Call(PacksCall),
    /// `packs rm`
    Rm(PacksRm),
}

/// Install a pack directory (with its helmdeck-pack.yaml or pack.json) into a bottle's
/// pack-exec (through its operator listener, with the bottle's operator token); with
/// --catalog DIR, the second argument names a pack of that marketplace catalog instead.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "install")]
pub struct PacksInstall {
    /// the bottle's slug
    #[argh(positional)]
    pub slug: String,
    /// the pack directory (or, with --catalog, the pack's name)
    #[argh(positional)]
    pub dir: PathBuf,
    /// a marketplace catalog (directory or tarball holding index.yaml) to take the named pack from
    #[argh(option)]
    pub catalog: Option<PathBuf>,
    /// install the pack even without a valid signature
    #[argh(switch)]
    pub allow_unsigned: bool,
    /// let the pack replace a pack of the same name shipped in the image
    #[argh(switch)]
    pub replace_shipped: bool,
    /// run the pack's examples in the bottle first; a failing one refuses the install
    #[argh(switch)]
    pub self_test: bool,
}

/// Remove an installed pack from a bottle's pack-exec (through its operator listener).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "rm")]
pub struct PacksRm {
    /// the bottle's slug
    #[argh(positional)]
    pub slug: String,
    /// the pack's name, e.g. cmd.upper
    #[argh(positional)]
    pub name: String,
}

/// List the packs of a bottle's pack-exec (JSON).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
pub struct PacksList {
    /// the bottle's slug
    #[argh(positional)]
    pub slug: String,
}

/// Call a pack with a JSON input (default {}; --stdin reads it from stdin); prints its output.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "call")]
pub struct PacksCall {
    /// the bottle's slug
    #[argh(positional)]
    pub slug: String,
    /// the pack's name, e.g. cmd.upper
    #[argh(positional)]
    pub name: String,
    /// the input JSON
    #[argh(positional)]
    pub input: Option<String>,
    /// read the input JSON from stdin
    #[argh(switch)]
    pub stdin: bool,
}

/// A manifest named on the command line, by its absolute path: the bottle's record keeps it,
/// and `reload` reads it again from wherever it runs.
fn file_source(path: PathBuf) -> Source {
    Source::File(std::path::absolute(&path).unwrap_or(path))
}

/// Run one command; output goes to stdout, notes to stderr.
pub async fn run<R: Runtime>(ctl: &Controller<R>, command: Command) -> Result<(), ControlError> {
    let mut out = std::io::stdout().lock();
    match command {
        Command::Serve(_) => {
            return Err(ControlError::Usage(
                "`serve` runs a server; start it through the control-plane binary".into(),
            ))
        }
        Command::Render(args) => {
            let rendered = ctl.render(Source::File(args.manifest))?;
            if let Some(dir) = &args.out {
                for note in ctl.write(&rendered, dir)? {
                    eprintln!("note: {note}");
                }
            }
            print(&mut out, rendered.yaml.as_bytes());
        }
        Command::Up(args) => {
            let example = args.manifest.is_none();
            let source = args.manifest.map(file_source).unwrap_or(Source::Example);
            let report = ctl.up(source).await?;
            for note in &report.notes {
                eprintln!("note: {note}");
            }
            if args.json {
                print_json(&mut out, &report);
            } else {
                let mut text = up_text(&report);
                if example {
                    text.push_str(&crate::try_it::text(
                        &crate::try_it::Names::of(&report),
                        &crate::try_it::invocation(),
                    ));
                }
                print(&mut out, text.as_bytes());
            }
        }
        Command::Down(args) => {
            let (slug, report) = ctl.down(&args.target).await?;
            if report.nothing() {
                eprintln!("note: bottle {slug} is not up and not known; nothing to do");
            } else {
                print(
                    &mut out,
                    format!(
                        "bottle {slug} is down (removed {} containers, {} networks, {} volumes{})\n",
                        report.containers,
                        report.networks,
                        report.volumes,
                        if report.state_removed { ", and its project directory" } else { "" }
                    )
                    .as_bytes(),
                );
            }
        }
        Command::Ps(args) => {
            let bottles = ctl.ps().await?;
            if args.json {
                print_json(&mut out, &bottles);
            } else {
                let mut text = format!("{:<24} {:<10} {}\n", "SLUG", "STATE", "SERVICES");
                for b in &bottles {
                    let services: Vec<String> = b
                        .services
                        .iter()
                        .map(|s| match &s.health {
                            Some(h) => format!("{}={} ({h})", s.service, s.state),
                            None => format!("{}={}", s.service, s.state),
                        })
                        .collect();
                    text.push_str(&format!(
                        "{:<24} {:<10} {}\n",
                        b.slug,
                        b.state.as_str(),
                        services.join(" ")
                    ));
                }
                print(&mut out, text.as_bytes());
            }
        }
        Command::Logs(args) => {
            drop(out);
            let options = LogOptions {
                follow: args.follow,
                tail: args.tail,
            };
            let mut lines = ctl.logs(&args.slug, args.daemon, options).await?;
            while let Some(line) = lines.recv().await {
                let mut bytes = line.line;
                bytes.push(b'\n');
                let ok = match line.stream {
                    Stream::Stdout => std::io::stdout().write_all(&bytes).is_ok(),
                    Stream::Stderr => std::io::stderr().write_all(&bytes).is_ok(),
                };
                if !ok {
                    break;
                }
            }
        }
        Command::Packs(PacksArgs { command }) => match command {
            PacksCommand::List(a) => print_answer(&mut out, &ctl.packs_list(&a.slug).await?),
            PacksCommand::Install(a) => {
                let flags = InstallFlags {
                    allow_unsigned: a.allow_unsigned,
                    replace_shipped: a.replace_shipped,
                    self_test: a.self_test,
                };
                let opened;
                let dir = match &a.catalog {
                    Some(catalog) => {
                        opened = crate::catalog::Catalog::open(catalog)?;
                        opened.pack_dir(&a.dir.to_string_lossy())?
                    }
                    None => a.dir.clone(),
                };
                let (name, answer) = ctl.packs_install(&a.slug, &dir, flags).await?;
                let verb = if answer.status == 201 {
                    "installed"
                } else {
                    "replaced"
                };
                eprintln!("{verb} {name} in bottle {}", a.slug);
                print_answer(&mut out, &answer.body);
            }
            PacksCommand::Rm(a) => {
                let answer = ctl.packs_delete(&a.slug, &a.name).await?;
                eprintln!("removed {} from bottle {}", a.name, a.slug);
                if !answer.body.is_empty() {
                    print_answer(&mut out, &answer.body);
                }
            }
            PacksCommand::Call(a) => {
                let input = call_input(a.input, a.stdin)?;
                print_answer(&mut out, &ctl.packs_call(&a.slug, &a.name, input).await?);
            }
        },
        Command::Reload(a) => {
            let report = ctl.reload(&a.slug, a.manifest.map(file_source)).await?;
            let configs = if report.changed.is_empty() {
                "no config changed".to_string()
            } else {
                format!("rewrote {}", report.changed.join(", "))
            };
            eprintln!(
                "bottle {}: reload requested ({configs}; credentials handed out again, pipelock and egress re-read theirs; `docker logs` says what each did)",
                report.slug
            );
        }
        Command::KillSwitch(a) => {
            let engage = match a.state.as_str() {
                "on" => true,
                "off" => false,
                other => {
                    return Err(ControlError::Usage(format!(
                        "kill-switch takes `on` or `off`, not {other:?}"
                    )))
                }
            };
            ctl.kill_switch(&a.slug, engage).await?;
            let now = if engage {
                "engaged: pipelock and egress refuse everything"
            } else {
                "released: the bottle's policy applies again"
            };
            eprintln!("kill switch of bottle {} {now}", a.slug);
        }
        Command::Approvals(ApprovalsArgs { command }) => {
            let (slug, op, json) = match command {
                ApprovalsCommand::List(a) => (a.slug, Op::List { pending: a.pending }, a.json),
                ApprovalsCommand::Show(a) => (a.slug, Op::Show { id: a.id }, a.json),
                ApprovalsCommand::Approve(a) => (
                    a.slug,
                    Op::Decide {
                        id: a.id,
                        approve: true,
                        note: a.note,
                    },
                    a.json,
                ),
                ApprovalsCommand::Deny(a) => (
                    a.slug,
                    Op::Decide {
                        id: a.id,
                        approve: false,
                        note: a.note,
                    },
                    a.json,
                ),
            };
            let answer = ctl.approvals(&slug, op).await?;
            if json {
                print_json(&mut out, &answer);
            } else {
                let text = match &answer {
                    Answer::List(all) => approvals::list_text(all),
                    Answer::One(a) => approvals::one_text(a),
                };
                print(&mut out, text.as_bytes());
            }
        }
    }
    Ok(())
}

fn call_input(arg: Option<String>, stdin: bool) -> Result<Bytes, ControlError> {
    let text = match (arg, stdin) {
        (Some(_), true) => {
            return Err(ControlError::Usage(
                "give the input either as an argument or with --stdin, not both".to_string(),
            ))
        }
        (None, false) => "{}".to_string(),
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| {
                ControlError::Usage(format!("cannot read the input from stdin: {e}"))
            })?;
            s
        }
        (Some(s), false) => s,
    };
    serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| ControlError::Usage(format!("the input is not JSON: {e}")))?;
    Ok(Bytes::from(text))
}

/// The human text of `up`.
pub fn up_text(r: &UpReport) -> String {
    let b = &r.bottle;
    let mut t = format!(
        "bottle {} is {} (project {}, dir {})\n",
        b.slug,
        b.state.as_str(),
        b.project,
        r.dir
    );
    for s in &b.services {
        let health = s
            .health
            .as_deref()
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        t.push_str(&format!(
            "  {:<13} {:<36} {}{health}\n",
            s.service, s.container, s.state
        ));
    }
    if !r.endpoints.is_empty() {
        t.push_str("published on the host:\n");
        for e in &r.endpoints {
            t.push_str(&format!(
                "  {:<10} {:>5} -> {}\n",
                e.daemon, e.container_port, e.host
            ));
        }
    }
    if !r.agent_env.is_empty() {
        t.push_str("agent environment:\n");
        for (k, v) in &r.agent_env {
            t.push_str(&format!("  {k}={v}\n"));
        }
    }
    t
}

fn print(out: &mut impl Write, bytes: &[u8]) {
    // A closed stdout (e.g. piped into `head`) is not an error worth reporting.
    let _ = out.write_all(bytes).and_then(|_| out.flush());
}

fn print_json(out: &mut impl Write, value: &impl serde::Serialize) {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    print(out, text.as_bytes());
}

fn print_answer(out: &mut impl Write, body: &[u8]) {
    print(out, body);
    if !body.ends_with(b"\n") {
        print(out, b"\n");
    }
}

/// `--timeout` seconds as a duration, at least one second.
pub fn seconds(s: u64) -> Duration {
    Duration::from_secs(s.max(1))
}
