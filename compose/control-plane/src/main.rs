//! `control-plane`: parse the command line, resolve settings from the environment, run one
//! operation, map the outcome to an exit code (0 ok, 1 runtime, 2 usage or manifest).

use std::process::ExitCode;

use argh::FromArgs;
use bottle_compose::RenderOptions;
use control_plane::api::{EXIT_OK, EXIT_RUNTIME, EXIT_USAGE};
use control_plane::cli::{self, Cli, Command};
use control_plane::core::{Controller, Settings};
use control_plane::runtime::compose_cli::ComposeCli;
use control_plane::state::StateDir;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    // Name the program `control-plane` in usage text, whatever path it was started by.
    let cli = match Cli::from_args(&["control-plane"], strs.get(1..).unwrap_or(&[])) {
        Ok(cli) => cli,
        Err(early) => {
            return if early.status.is_ok() {
                println!("{}", early.output);
                ExitCode::from(EXIT_OK)
            } else {
                eprintln!("{}", early.output);
                ExitCode::from(EXIT_USAGE)
            };
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(err) => {
            // Our errors carry their causes in their messages already; `{:#}` would repeat them.
            eprintln!("control-plane: {err}");
            let code = err
                .downcast_ref::<control_plane::api::ControlError>()
                .map(|e| e.exit_code())
                .unwrap_or(EXIT_RUNTIME);
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    let mut settings = Settings {
        render: RenderOptions {
            prefix: env("BOT_BOTTLE_PREFIX")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| bottle_compose::render::DEFAULT_PREFIX.to_string()),
            sidecar_image: env("BOT_BOTTLE_SIDECAR_IMAGE").filter(|i| !i.is_empty()),
            ..RenderOptions::default()
        },
        ..Settings::default()
    };
    settings.host_guard =
        !env("BOT_BOTTLE_HOST_GUARD").is_some_and(|v| v.eq_ignore_ascii_case("off"));
    if let Some(roots) = env("BOT_BOTTLE_SYSTEM_ROOTS").filter(|r| !r.is_empty()) {
        settings.system_roots = vec![std::path::PathBuf::from(roots)];
    }
    if let Command::Up(up) = &cli.command {
        settings.up_timeout = cli::seconds(up.timeout);
    }
    let state = StateDir::resolve(env)?;
    let runtime = ComposeCli::new(env("BOT_BOTTLE_COMPOSE"));
    let controller = Controller::new(runtime, state, settings);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(cli::run(&controller, cli.command))?;
    Ok(())
}
