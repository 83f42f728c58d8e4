//! `sidecar-init`: command-line wiring. See the library's crate docs and `docs/init.md`.
#![deny(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use argh::FromArgs;
use sidecar_init::config::{self, DEFAULT_CONFIG_PATH};
use sidecar_init::control::{self, Request, Response, SOCKET_ENV};
use sidecar_init::error::Error;
use sidecar_init::log::{Format, InitLayer};
use sidecar_init::output::Output;
use sidecar_init::validate::{self, SELECT_ENV};
use sidecar_init::{driver, reaper, single};
use tracing_subscriber::layer::SubscriberExt;

/// Environment variable naming the config file.
const CONFIG_ENV: &str = "SIDECAR_INIT_CONFIG";

#[derive(FromArgs)]
/// PID 1 supervisor of the sidecar bundle. Without a subcommand it supervises the daemons of
/// the config file. `sidecar-init -- CMD ARGS...` runs one command with tini semantics.
struct Cli {
    /// config file (default /etc/sidecars/init.json, or $SIDECAR_INIT_CONFIG)
    #[argh(option)]
    config: Option<PathBuf>,
    /// control socket (default /run/sidecar-init.sock, or $SIDECAR_INIT_SOCKET, or the config's "socket")
    #[argh(option)]
    socket: Option<PathBuf>,
    #[argh(subcommand)]
    cmd: Option<Sub>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Sub {
    CheckConfig(CheckConfig),
    Health(Health),
    Status(Status),
    Reload(Reload),
}

#[derive(FromArgs)]
/// Ask the running init to reload: every daemon with a reload_signal gets its credentials
/// handed out again (rotated files reach it), then that signal. Sends SIGHUP to init.
#[argh(subcommand, name = "reload")]
struct Reload {
    /// pid of the running init (default 1: init is PID 1 of the container)
    #[argh(option, default = "1")]
    pid: i32,
}

#[derive(FromArgs)]
/// Validate the config (and $SIDECARS_DAEMONS); print every problem with its JSON path.
#[argh(subcommand, name = "check-config")]
struct CheckConfig {
    /// config file
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs)]
/// Exit 0 iff every enabled daemon is running and its ready probe passes (one line per daemon).
#[argh(subcommand, name = "health")]
struct Health {
    /// control socket of the running init
    #[argh(option)]
    socket: Option<PathBuf>,
    /// config file (only its "socket" key is used)
    #[argh(option)]
    config: Option<PathBuf>,
}

#[derive(FromArgs)]
/// Show each daemon's state, pid, restarts, last exit and uptime.
#[argh(subcommand, name = "status")]
struct Status {
    /// print JSON
    #[argh(switch)]
    json: bool,
    /// control socket of the running init
    #[argh(option)]
    socket: Option<PathBuf>,
    /// config file (only its "socket" key is used)
    #[argh(option)]
    config: Option<PathBuf>,
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "--") {
        std::process::exit(single::run(&args[2..]));
    }
    let code = match parse_cli(&args) {
        Ok(cli) => match run(cli) {
            Ok(code) => code,
            Err(e) => {
                for line in e.to_string().lines() {
                    eprintln!("init | {line}");
                }
                e.exit_code()
            }
        },
        Err(code) => code,
    };
    std::process::exit(code);
}

fn parse_cli(args: &[OsString]) -> Result<Cli, i32> {
    let strs: Option<Vec<&str>> = args.iter().map(|a| a.to_str()).collect();
    let Some(strs) = strs else {
        eprintln!("init | arguments must be UTF-8");
        return Err(2);
    };
    let name = strs.first().copied().unwrap_or("sidecar-init");
    let name = Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("sidecar-init");
    Cli::from_args(&[name], strs.get(1..).unwrap_or(&[])).map_err(|early| {
        if early.status.is_ok() {
            print!("{}", early.output);
            0
        } else {
            eprintln!("{}", early.output);
            2
        }
    })
}

fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| {
        std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

fn run(cli: Cli) -> Result<i32, Error> {
    match cli.cmd {
        None => supervise(config_path(cli.config), cli.socket),
        Some(Sub::CheckConfig(c)) => check_config(&config_path(c.config.or(cli.config))),
        Some(Sub::Health(h)) => {
            let socket = client_socket(h.socket.or(cli.socket), h.config.or(cli.config));
            health(&socket)
        }
        Some(Sub::Status(s)) => {
            let socket = client_socket(s.socket.or(cli.socket), s.config.or(cli.config));
            status(&socket, s.json)
        }
        Some(Sub::Reload(r)) => reload(r.pid),
    }
}

/// `sidecar-init reload`: SIGHUP to the running init.
fn reload(pid: i32) -> Result<i32, Error> {
    use nix::sys::signal::{kill, Signal};
    match kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP) {
        Ok(()) => {
            println!("reload requested (SIGHUP to init, pid {pid})");
            Ok(0)
        }
        Err(e) => {
            eprintln!("sidecar-init reload: cannot signal pid {pid}: {e} (run it in the sidecars container, as root)");
            Ok(1)
        }
    }
}

fn load_plan(path: &Path) -> Result<(config::Config, validate::Plan), Error> {
    let source_name = path.display().to_string();
    let cfg = config::load_file(path).map_err(|problems| Error::Config {
        source_name: source_name.clone(),
        problems,
    })?;
    let selection = std::env::var(SELECT_ENV).ok();
    let plan = validate::plan(&cfg, selection.as_deref()).map_err(|problems| Error::Config {
        source_name,
        problems,
    })?;
    Ok((cfg, plan))
}

fn check_config(path: &Path) -> Result<i32, Error> {
    let (_, plan) = load_plan(path)?;
    let deps: Vec<Vec<usize>> = plan.daemons.iter().map(|d| d.deps.clone()).collect();
    let order = sidecar_init::graph::levels(&deps)
        .unwrap_or_default()
        .iter()
        .map(|level| {
            level
                .iter()
                .map(|&i| plan.daemons[i].name.as_str())
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect::<Vec<_>>()
        .join(" -> ");
    println!(
        "{}: ok, {} daemon(s) enabled; start order: {order}",
        path.display(),
        plan.daemons.len()
    );
    Ok(0)
}

fn supervise(path: PathBuf, socket_flag: Option<PathBuf>) -> Result<i32, Error> {
    let io = |context: &str| {
        let context = context.to_string();
        move |source| Error::Io { context, source }
    };
    let (cfg, mut plan) = load_plan(&path)?;
    sidecar_init::hardening::no_core_dumps();
    sidecar_init::credentials::hand_out(&mut plan)?;
    let socket = control::socket_path(
        socket_flag,
        std::env::var(SOCKET_ENV).ok(),
        cfg.socket.clone(),
    );
    let format = Format::from_env();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(io("cannot start the runtime"))?;
    runtime.block_on(async {
        let output = Output::start().map_err(io("cannot start output writers"))?;
        let subscriber = tracing_subscriber::registry().with(InitLayer::new(
            output.stderr.clone(),
            format,
            tracing::Level::INFO,
        ));
        let _ = tracing::subscriber::set_global_default(subscriber);
        reaper::become_reaper(|m| tracing::warn!("{m}"));
        let listener = match control::bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                output.flush().await;
                return Err(e);
            }
        };
        tracing::info!(
            "supervising {} daemon(s) from {} (control socket {})",
            plan.daemons.len(),
            path.display(),
            socket.display()
        );
        driver::run(plan, listener, socket.clone(), output.clone(), format)
            .await
            .map_err(io("cannot install signal handlers"))
    })
}

fn client_socket(flag: Option<PathBuf>, config_flag: Option<PathBuf>) -> PathBuf {
    // The config is read only for its "socket" key, and only if it can be read.
    let from_config = || {
        let path = config_path(config_flag);
        config::load_file(&path).ok().and_then(|c| c.socket)
    };
    let env = std::env::var(SOCKET_ENV).ok().filter(|s| !s.is_empty());
    match (flag, env) {
        (Some(f), _) => f,
        (None, Some(e)) => PathBuf::from(e),
        (None, None) => control::socket_path(None, None, from_config()),
    }
}

fn health(socket: &Path) -> Result<i32, Error> {
    match control::request(socket, Request::Health)? {
        Response::Health { healthy, daemons } => {
            for d in &daemons {
                println!(
                    "{}: {} ({})",
                    d.name,
                    if d.ok { "ok" } else { "FAIL" },
                    d.detail
                );
            }
            Ok(if healthy { 0 } else { 1 })
        }
        Response::Error { message } => {
            eprintln!("init | {message}");
            Ok(1)
        }
        Response::Status { .. } => Ok(1),
    }
}

fn status(socket: &Path, json: bool) -> Result<i32, Error> {
    match control::request(socket, Request::Status)? {
        Response::Status { daemons, jail } => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&daemons).unwrap_or_default()
                );
            } else {
                print!("{}", control::status_table(&daemons));
                if let Some(j) = jail {
                    println!("{}: {}", j.name, j.detail);
                }
            }
            Ok(0)
        }
        Response::Error { message } => {
            eprintln!("init | {message}");
            Ok(1)
        }
        Response::Health { .. } => Ok(1),
    }
}
