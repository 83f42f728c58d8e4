//! The git:// listener: read the request line, check the repository, refresh the mirror,
//! then hand the connection to `git upload-pack` or `git receive-pack`.
//!
//! Why not `git daemon`: speaking the front ourselves puts name validation, the on-demand
//! fetch and the per-push hook settings in one place, with one log line per request; the
//! protocol after the first line is git's own, untouched.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use sidecars_common::shutdown::Shutdown;

use crate::hook::{HookSettings, PROGRAM_ENV, SETTINGS_ENV};
use crate::mirror::Mirror;
use crate::pktline::{err_packet, git_protocol, read_request, RequestError, Service};
use crate::{repo_from_path, State};

/// How long a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight git sessions may run after shutdown begins.
const DRAIN: Duration = Duration::from_secs(20);

/// Accept until `shutdown`, then drain.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(state.config.max_connections));
    let mut tasks = JoinSet::new();
    tracing::info!(addr = %listener.local_addr()?, repos = state.mirrors.len(), "listening");
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.wait() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let state = state.clone();
        tasks.spawn(async move {
            let _permit = permit;
            handle(stream, peer, &state).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    if !tasks.is_empty() {
        tracing::info!(in_flight = tasks.len(), "draining git sessions");
        let _ =
            tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
        tasks.abort_all();
    }
    Ok(())
}

async fn refuse(stream: &mut TcpStream, msg: &str) {
    let _ = stream.write_all(&err_packet(msg)).await;
    let _ = stream.shutdown().await;
}

async fn handle(mut stream: TcpStream, peer: std::net::SocketAddr, state: &State) {
    let _ = stream.set_nodelay(true);
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok(r)) => r,
        Ok(Err(RequestError::Closed)) => return, // a TCP health probe
        Ok(Err(err)) => {
            tracing::info!(%peer, %err, "refused");
            refuse(&mut stream, &err.to_string()).await;
            return;
        }
        Err(_) => {
            refuse(&mut stream, "timed out waiting for the request").await;
            return;
        }
    };
    let mirror = match repo_from_path(&request.path) {
        Err(why) => {
            tracing::info!(%peer, path = %request.path.escape_debug(), why, "refused");
            refuse(&mut stream, why).await;
            return;
        }
        Ok(name) => match state.mirrors.iter().find(|m| m.repo.name == name) {
            Some(m) => m,
            None => {
                tracing::info!(%peer, repo = name, "refused: unknown repository");
                refuse(&mut stream, &format!("unknown repository '{name}'")).await;
                return;
            }
        },
    };
    mirror
        .refresh(Duration::from_secs(state.config.min_fetch_interval_s))
        .await;
    let started = std::time::Instant::now();
    match run_service(
        stream,
        mirror,
        request.service,
        git_protocol(&request.extra),
        state,
    )
    .await
    {
        Ok(status) => tracing::info!(
            %peer,
            repo = %mirror.repo.name,
            service = request.service.git_subcommand(),
            ok = status,
            ms = started.elapsed().as_millis() as u64,
            "git session"
        ),
        Err(err) => tracing::warn!(%peer, repo = %mirror.repo.name, %err, "git session failed"),
    }
}

fn hook_env(mirror: &Mirror, state: &State) -> Vec<(OsString, OsString)> {
    let settings = HookSettings {
        repo: mirror.repo.name.clone(),
        upstream: mirror.repo.upstream.clone(),
        credential_file: mirror.credential_file.clone(),
        protect: mirror.repo.protect.clone(),
        secret_files: state
            .mirrors
            .iter()
            .filter_map(|m| m.credential_file.clone())
            .collect(),
        upstream_timeout_s: state.config.upstream_timeout_s,
        deny_paths: mirror.repo.deny_paths(),
        max_push_bytes: state.config.max_push_bytes,
        max_file_bytes: state.config.max_file_bytes,
        dlp_allow: state.config.dlp_allow.clone(),
    };
    vec![
        (
            SETTINGS_ENV.into(),
            serde_json::to_string(&settings).unwrap_or_default().into(),
        ),
        (
            PROGRAM_ENV.into(),
            state.hook_program.clone().into_os_string(),
        ),
    ]
}

/// Run the git service with the connection as its stdin/stdout; true if it exited 0.
async fn run_service(
    stream: TcpStream,
    mirror: &Mirror,
    service: Service,
    protocol: Option<String>,
    state: &State,
) -> std::io::Result<bool> {
    let mut cmd = Command::new("git");
    // Command-line config outranks the mirror's own: the hook is the read-only one.
    let mut hooks = OsString::from("core.hooksPath=");
    hooks.push(&state.config.hooks_dir);
    cmd.arg("-c").arg(hooks);
    cmd.arg(service.git_subcommand());
    if service == Service::UploadPack {
        cmd.args(["--strict", "--timeout=600"]);
    } else {
        cmd.envs(hook_env(mirror, state));
    }
    cmd.arg(&mirror.path);
    if let Some(p) = protocol {
        cmd.env("GIT_PROTOCOL", p);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let (mut rd, mut wr) = stream.into_split();
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let stderr = child.stderr.take();
    let to_child = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut rd, &mut stdin).await;
    });
    let log_stderr = tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        if let Some(e) = stderr {
            let mut lines = tokio::io::BufReader::new(e).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(line = %line, "git stderr");
            }
        }
    });
    let _ = tokio::io::copy(&mut stdout, &mut wr).await;
    let _ = wr.shutdown().await;
    let status = child.wait().await?;
    to_child.abort();
    let _ = log_stderr.await;
    Ok(status.success())
}
