//! `control-plane`: parse the command line, resolve settings from the environment, run one
//! operation, map the outcome to an exit code (0 ok, 1 runtime, 2 usage or manifest).

use std::process::ExitCode;

use argh::FromArgs;
use bottle_compose::RenderOptions;
use control_plane::api::{EXIT_OK, EXIT_RUNTIME, EXIT_USAGE};
use std::sync::Arc;

use control_plane::api::ControlError;
use control_plane::cli::{self, Cli, Command, ServeArgs};
use control_plane::core::{Controller, Settings};
use control_plane::server::auth::{Token, TokenError};
use control_plane::server::ServeConfig;
use control_plane::state::StateDir;
use sidecars_common::shutdown::Shutdown;
use tracing::Instrument;

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
    if matches!(cli.command, Command::Serve(_)) {
        // The server logs like the sidecar daemons: info by default, JSON with
        // SIDECARS_LOG_FORMAT=json, filter in SIDECARS_LOG.
        sidecars_common::logging::init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
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
            ..control_plane::core::render_options()
        },
        subnet_pool: control_plane::core::subnet_pool(env("BOT_BOTTLE_SUBNET_POOL").as_deref())?,
        ..Settings::default()
    };
    settings.host_guard =
        control_plane::host_guard::Mode::parse(env("BOT_BOTTLE_HOST_GUARD").as_deref())
            .map_err(ControlError::Usage)?;
    if let Some(roots) = env("BOT_BOTTLE_SYSTEM_ROOTS").filter(|r| !r.is_empty()) {
        settings.system_roots = vec![std::path::PathBuf::from(roots)];
    }
    match &cli.command {
        Command::Up(up) => settings.up_timeout = cli::seconds(up.timeout),
        Command::Serve(serve) => settings.up_timeout = cli::seconds(serve.timeout),
        _ => {}
    }
    let state = StateDir::resolve(env)?;
    if let Command::Serve(args) = cli.command {
        return serve(args, state, settings);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let runtime = select(env).await?;
        let controller = Controller::new(runtime, state, settings);
        cli::run(&controller, cli.command).await?;
        Ok(())
    })
}

/// `control-plane serve`: resolve the token, pick the runtime, serve until SIGTERM/SIGINT.
fn serve(args: ServeArgs, state: StateDir, settings: Settings) -> anyhow::Result<()> {
    let token = Token::load(
        std::env::var("CONTROL_PLANE_TOKEN").ok(),
        args.token_file.as_deref(),
    )
    .map_err(|e| ControlError::Usage(e.to_string()))?;
    if token.is_none() && !args.insecure_no_auth {
        return Err(ControlError::Usage(TokenError::Missing.to_string()).into());
    }
    if token.is_some() && args.insecure_no_auth {
        return Err(ControlError::Usage(
            "--insecure-no-auth with a token configured: drop one of them".into(),
        )
        .into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // With auth off, every line logged while serving carries `auth=DISABLED`.
        let auth = if token.is_some() {
            "bearer token"
        } else {
            "DISABLED (--insecure-no-auth: anyone who reaches this port controls Docker)"
        };
        let span = tracing::info_span!("serve", auth);
        async move {
            if token.is_none() {
                tracing::warn!("authentication is disabled by --insecure-no-auth");
            }
            let env = |k: &str| std::env::var(k).ok();
            let runtime = select(env).await?;
            match runtime.describe().await {
                Ok(d) => tracing::info!(runtime = %d, state_dir = %state.root().display(), "control plane starting"),
                // Cannot reach Docker at all (no socket, no permission): refuse with the fix
                // rather than serve 503s. A runtime lost later still answers 503.
                Err(e) if e.is_unreachable() => return Err(ControlError::from(e).into()),
                Err(e) => tracing::warn!(error = %e, state_dir = %state.root().display(), "control plane starting; the runtime is not usable yet (requests will answer 503)"),
            }
            let ctl = Arc::new(Controller::new(runtime, state, settings));
            let shutdown = Shutdown::from_future(sidecars_common::shutdown::signal());
            let cfg = ServeConfig {
                listen: args.listen,
                token,
                max_body_bytes: args.max_body_bytes,
            };
            control_plane::server::serve(ctl, cfg, shutdown).await?;
            Ok(())
        }
        .instrument(span)
        .await
    })
}

/// The runtime backend (`BOT_BOTTLE_RUNTIME`, see docs/runtime.md).
async fn select(
    env: impl Fn(&str) -> Option<String>,
) -> Result<Box<dyn control_plane::runtime::Runtime>, ControlError> {
    Ok(control_plane::runtime::select::select(env).await?)
}
