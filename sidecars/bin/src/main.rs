//! `sidecars`: the multi-call binary holding every daemon of the bundle.
//!
//! One binary keeps the image small and lets sidecar-init start each daemon as
//! `sidecars <daemon> [--config PATH]`. This file is wiring only: each daemon crate owns its
//! arguments (`cli::Args`) and its `main`.

mod kill_switch;

use std::process::ExitCode;

use argh::FromArgs;

/// The sidecar bundle's daemons in one binary. See `sidecars <daemon> --help`.
#[derive(FromArgs)]
struct Sidecars {
    #[argh(subcommand)]
    daemon: Daemon,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Daemon {
    PackExec(pack_exec::cli::Args),
    PackExecRelay(pack_exec::relay::Args),
    Supervise(supervise::cli::Args),
    SuperviseCtl(supervise::ctl::Args),
    GitGate(git_gate::cli::Args),
    GitGateHook(git_gate::cli::HookArgs),
    Pipelock(pipelock::cli::Args),
    Egress(egress::cli::Args),
    Dns(dns::cli::Args),
    KillSwitch(kill_switch::Args),
}

fn main() -> ExitCode {
    let args: Sidecars = argh::from_env();
    match args.daemon {
        Daemon::PackExec(args) => pack_exec::cli::main(args),
        Daemon::PackExecRelay(args) => pack_exec::relay::main(args),
        Daemon::Supervise(args) => supervise::cli::main(args),
        Daemon::SuperviseCtl(args) => supervise::ctl::main(args),
        Daemon::GitGate(args) => git_gate::cli::main(args),
        Daemon::GitGateHook(args) => git_gate::cli::hook_main(args),
        Daemon::Pipelock(args) => pipelock::cli::main(args),
        Daemon::Egress(args) => egress::cli::main(args),
        Daemon::Dns(args) => dns::cli::main(args),
        Daemon::KillSwitch(args) => kill_switch::main(args),
    }
}
