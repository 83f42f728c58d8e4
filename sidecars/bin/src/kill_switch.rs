//! `sidecars kill-switch on|off`: the operator's switch, run in the sidecars container by the
//! control plane (as root, the only user that may write `/run/sidecars` and signal init).
//! It writes or removes the file both proxies read (`bottle_spec::KILL_SWITCH_FILE`), then
//! sends `bottle_spec::KILL_SWITCH_SIGNAL` to init, which forwards it to pipelock and egress.

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Engage (`on`) or release (`off`) the bottle's kill switch: pipelock and egress refuse
/// everything and close open tunnels while it is on.
#[derive(FromArgs)]
#[argh(subcommand, name = "kill-switch")]
pub struct Args {
    /// on or off
    #[argh(positional)]
    pub state: String,
    /// the switch's file (default /run/sidecars/kill-switch)
    #[argh(option)]
    pub file: Option<PathBuf>,
    /// process to signal (default 1: sidecar-init, which forwards the signal to the proxies)
    #[argh(option, default = "1")]
    pub pid: i32,
}

/// Flip the switch; exit 0 when the file is as asked and the signal was sent, 2 on bad usage,
/// 1 when the file or the signal failed (the message says which).
pub fn main(args: Args) -> ExitCode {
    let file = args
        .file
        .unwrap_or_else(|| PathBuf::from(bottle_spec::KILL_SWITCH_FILE));
    let engage = match args.state.as_str() {
        "on" => true,
        "off" => false,
        other => {
            eprintln!("sidecars kill-switch: expected `on` or `off`, got {other:?}");
            return ExitCode::from(2);
        }
    };
    let written = if engage {
        // Written whole and renamed into place: a reader sees the file or none.
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, b"on\n").and_then(|()| std::fs::rename(&tmp, &file))
    } else {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    };
    if let Err(e) = written {
        eprintln!(
            "sidecars kill-switch: cannot update {}: {e}",
            file.display()
        );
        return ExitCode::from(1);
    }
    let signal: Signal = match bottle_spec::KILL_SWITCH_SIGNAL.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidecars kill-switch: bad signal name: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = kill(Pid::from_raw(args.pid), signal) {
        eprintln!(
            "sidecars kill-switch: {} is {}, but signalling pid {} failed: {e}",
            file.display(),
            if engage { "written" } else { "removed" },
            args.pid
        );
        return ExitCode::from(1);
    }
    println!(
        "kill switch {}",
        if engage { "engaged" } else { "released" }
    );
    ExitCode::SUCCESS
}
