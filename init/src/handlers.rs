//! The handler-spawn service: pack handlers started by init under a uid of their own.
//!
//! Why init: a handler must not share a uid with pack-exec (it could read pack-exec's
//! operator token, signal or ptrace it) nor with another call's handler, and pack-exec holds
//! no capability to switch uids. init does hold `CAP_SETUID`/`CAP_SETGID`, so pack-exec asks it
//! (protocol: `bottle_spec::spawn`) over a unix socket that only pack-exec's uid may use
//! (`SO_PEERCRED`). Each call gets a free uid from the configured range; the handler's child
//! creates the call's temp dir as that uid, then becomes the handler with `no_new_privs` and
//! the per-call limits. When the handler's leader exits (or pack-exec asks for a kill, or
//! hangs up), init runs a cleanup process *as that uid* that kills every process the uid
//! still has (`kill(-1, SIGKILL)`: grandchildren that escaped the process group included) and
//! removes the temp dir; only then is `exited` sent and the uid reused.
//!
//! Exit statuses: the driver is the one owner of `waitpid`; it hands the statuses of pids
//! registered here to [`Registry::claim`] instead of the supervisor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bottle_spec::spawn::{valid_call_id, Event, Op, Request, MAX_REQUEST_BYTES};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

use crate::config::HandlersConfig;
use crate::reaper::ExitStatus;
use crate::spawn::{kill_raw, spawn_handler, HandlerSpec};

/// The hidden subcommand init runs (as a call's uid) to clean up after a call.
pub const CLEANUP_COMMAND: &str = "cleanup-call";

/// Pids whose exit a handler task is waiting for.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    waiting: Arc<Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>>,
}

impl Registry {
    fn watch(&self, pid: i32) -> oneshot::Receiver<ExitStatus> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(pid, tx);
        }
        rx
    }

    /// Called by the driver for every reaped pid: true when it was a handler's (or a cleanup
    /// process's), which the supervisor must then not see.
    pub fn claim(&self, pid: i32, status: ExitStatus) -> bool {
        let tx = self.waiting.lock().ok().and_then(|mut w| w.remove(&pid));
        match tx {
            Some(tx) => {
                let _ = tx.send(status);
                true
            }
            None => false,
        }
    }
}

/// Binds the spawn socket, owned by the client's uid with mode 0600.
pub fn bind(config: &HandlersConfig) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(&config.socket);
    let listener = UnixListener::bind(&config.socket)?;
    std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(0o600))?;
    nix::unistd::chown(
        &config.socket,
        Some(nix::unistd::Uid::from_raw(config.client_uid)),
        Some(nix::unistd::Gid::from_raw(config.client_uid)),
    )?;
    Ok(listener)
}

/// Serves spawn requests until the listener fails.
pub async fn serve(listener: UnixListener, config: HandlersConfig, registry: Registry) {
    let free: Arc<Mutex<BTreeSet<u32>>> =
        Arc::new(Mutex::new((config.first_uid..=config.last_uid).collect()));
    let config = Arc::new(config);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let peer = stream.peer_cred().map(|c| c.uid()).ok();
        if peer != Some(config.client_uid) {
            tracing::warn!(
                "refused a handler-spawn connection from uid {:?} (only {} is served)",
                peer,
                config.client_uid
            );
            continue;
        }
        let (config, registry, free) = (config.clone(), registry.clone(), free.clone());
        tokio::spawn(async move {
            if let Err(e) = call(stream, &config, &registry, &free).await {
                tracing::debug!("handler-spawn connection ended: {e}");
            }
        });
    }
}

/// A uid taken from the free set, given back on drop (after cleanup).
struct Lease {
    uid: u32,
    free: Arc<Mutex<BTreeSet<u32>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut f) = self.free.lock() {
            f.insert(self.uid);
        }
    }
}

async fn send(stream: &mut UnixStream, event: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

fn error(code: &str, message: impl Into<String>) -> Event {
    Event::Error {
        code: code.to_string(),
        message: message.into(),
    }
}

async fn call(
    mut stream: UnixStream,
    config: &HandlersConfig,
    registry: &Registry,
    free: &Arc<Mutex<BTreeSet<u32>>>,
) -> std::io::Result<()> {
    let (request, fds) = match receive(&stream).await {
        Ok(r) => r,
        Err(e) => return send(&mut stream, &error("invalid", e.to_string())).await,
    };
    if let Err(why) = check(&request) {
        return send(&mut stream, &error("invalid", why)).await;
    }
    let Ok(stdio) = <[OwnedFd; 3]>::try_from(fds) else {
        return send(
            &mut stream,
            &error(
                "invalid",
                "expected 3 file descriptors (stdin, stdout, stderr)",
            ),
        )
        .await;
    };
    let uid = free.lock().ok().and_then(|mut f| f.pop_first());
    let Some(uid) = uid else {
        return send(&mut stream, &error("busy", "every handler uid is in use")).await;
    };
    let lease = Lease {
        uid,
        free: free.clone(),
    };
    let dir = config
        .tmp_dir
        .join(format!("pack-call-{uid}-{}", request.call_id));
    let mut env: BTreeMap<String, String> = request.env;
    env.insert("HOME".into(), dir.display().to_string());
    env.insert("TMPDIR".into(), dir.display().to_string());
    let spawned = spawn_handler(HandlerSpec {
        argv: &request.argv,
        env: &env,
        uid,
        dir: &dir,
        limits: config.limits,
        stdio,
    });
    // No await between the spawn and `watch`: on this single-threaded runtime the driver
    // cannot reap the pid before it is registered.
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            // The child may have created the dir before exec failed.
            cleanup(uid, &dir, registry).await;
            drop(lease);
            return send(&mut stream, &error("spawn", e.to_string())).await;
        }
    };
    let exited = registry.watch(pid);
    send(&mut stream, &Event::Started { pid, uid }).await?;

    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut exited = std::pin::pin!(exited);
    let mut killed = false;
    let status = loop {
        tokio::select! {
            status = &mut exited => break status.ok(),
            line = lines.next_line(), if !killed => {
                // A kill request, a hang-up or garbage: the call is over either way.
                let kill = match line {
                    Ok(Some(l)) => serde_json::from_str::<Op>(&l).is_ok_and(|op| op == Op::Kill),
                    _ => true,
                };
                if kill {
                    // The leader is not reaped yet (we are still waiting for it), so its
                    // pgid cannot have been reused.
                    kill_raw(-pid, libc::SIGKILL);
                    killed = true;
                }
            }
        }
    };
    cleanup(uid, &dir, registry).await;
    drop(lease);
    let (code, signal) = match status {
        Some(ExitStatus::Code(c)) => (Some(c), None),
        Some(ExitStatus::Signal(s)) => (None, Some(s)),
        None => (None, Some(libc::SIGKILL)),
    };
    let mut line =
        serde_json::to_vec(&Event::Exited { code, signal }).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}

fn check(r: &Request) -> Result<(), String> {
    if !valid_call_id(&r.call_id) {
        return Err("call_id must be 1-64 of A-Z a-z 0-9 -".into());
    }
    match r.argv.first() {
        Some(p) if Path::new(p).is_absolute() => {}
        _ => return Err("argv[0] must be an absolute path".into()),
    }
    if r.argv.iter().any(|a| a.contains('\0')) {
        return Err("argv contains a NUL byte".into());
    }
    if r.env
        .iter()
        .any(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
    {
        return Err("env has an empty name, '=' in a name or a NUL byte".into());
    }
    Ok(())
}

/// Reads the request frame and the descriptors attached to it.
async fn receive(stream: &UnixStream) -> std::io::Result<(Request, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = Vec::new();
    let mut fds = Vec::new();
    let want = loop {
        stream.readable().await?;
        let got = stream.try_io(Interest::READABLE, || {
            crate::spawn::recv_with_fds(stream.as_raw_fd(), &mut buf)
        });
        let (n, received) = match got {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        fds.extend(received);
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the request",
            ));
        }
        have.extend_from_slice(&buf[..n]);
        if have.len() >= 4 {
            let len = u32::from_be_bytes([have[0], have[1], have[2], have[3]]);
            if len > MAX_REQUEST_BYTES {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("request of {len} bytes is over {MAX_REQUEST_BYTES}"),
                ));
            }
            if have.len() >= 4 + len as usize {
                break len as usize;
            }
        }
    };
    let request: Request = serde_json::from_slice(&have[4..4 + want])
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok((request, fds))
}

/// Shared writable places a handler could fill outside its temp dir; the cleanup removes
/// everything its uid left at their top level (the handler's own files only: the sticky bit
/// and the uid keep it from touching anyone else's).
pub const SWEPT: [&str; 1] = ["/dev/shm"];

/// Runs `sidecar-init cleanup-call DIR SWEEP...` as `uid` and waits for it. Failing to start it is
/// logged: the uid then still goes back to the pool, but only once no process of it is left
/// would be better — so it is retried once.
async fn cleanup(uid: u32, dir: &Path, registry: &Registry) {
    for _ in 0..2 {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let mut argv = vec![
            exe.display().to_string(),
            CLEANUP_COMMAND.to_string(),
            dir.display().to_string(),
        ];
        if let Some(parent) = dir.parent() {
            argv.push(parent.display().to_string());
        }
        argv.extend(SWEPT.iter().map(|s| s.to_string()));
        let env = BTreeMap::new();
        let spec = crate::spawn::SpawnSpec {
            argv: &argv,
            env: Some(&env),
            user: Some(crate::validate::User { uid, gid: uid }),
            new_session: true,
            capture: false,
            harden: true,
        };
        match crate::spawn::spawn(&spec) {
            Ok(child) => {
                let done = registry.watch(child.pid);
                match done.await {
                    Ok(ExitStatus::Code(0)) => return,
                    Ok(status) => {
                        tracing::warn!("cleanup of handler uid {uid} ended with {status}")
                    }
                    Err(_) => return,
                }
            }
            Err(e) => tracing::warn!("cannot start the cleanup of handler uid {uid}: {e}"),
        }
    }
}

/// The cleanup process (runs as a call's uid): kill every other process of this uid, remove
/// the call's temp dir, then whatever this uid left at the top of each `sweep` dir. Exit 0
/// when the temp dir is gone.
pub fn cleanup_main(dir: &Path, sweep: &[PathBuf]) -> i32 {
    // kill(-1) reaches every process this uid may signal — exactly the call's own — except
    // ourselves; a fork racing it fails (pending SIGKILL). Twice for good measure.
    for _ in 0..2 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-1),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let me = nix::unistd::getuid().as_raw();
    for place in sweep {
        let Ok(entries) = std::fs::read_dir(place) else {
            continue;
        };
        for e in entries.flatten() {
            use std::os::unix::fs::MetadataExt;
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.uid() != me {
                continue;
            }
            let _ = if meta.is_dir() {
                std::fs::remove_dir_all(e.path())
            } else {
                std::fs::remove_file(e.path())
            };
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            eprintln!("cleanup-call: cannot remove {}: {e}", dir.display());
            1
        }
    }
}
