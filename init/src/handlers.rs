//! The handler-spawn service: pack handlers started by init under a uid of their own.
//!
//! Why init: a handler must not share a uid with pack-exec (it could read pack-exec's
//! operator token, signal or ptrace it) nor with another call's handler, and pack-exec holds
//! no capability to switch uids. init does hold `CAP_SETUID`/`CAP_SETGID`, so pack-exec asks it
//! (protocol: `bottle_spec::spawn`) over a unix socket that only pack-exec's uid may use
//! (`SO_PEERCRED`). Each call gets a free uid from the configured range; the handler's child
//! creates the call's temp dir as that uid, then becomes the handler with `no_new_privs` and
//! the per-call limits. When the handler's leader exits (or pack-exec asks for a kill, or
//! hangs up), init kills every process the uid still has (grandchildren that escaped the
//! process group included: found by owner in `/proc`) and removes the temp dir and whatever the
//! uid left in the shared tmp places; only then is `exited` sent and the uid reused.
//!
//! Exit statuses: the driver is the one owner of `waitpid`; it hands the statuses of pids
//! registered here to [`Registry::claim`] instead of the supervisor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bottle_spec::pack_proxy::{valid_pack_name, Origin};
use bottle_spec::spawn::{
    valid_call_id, Event, Op, Request, MAX_REQUEST_BYTES, SANDBOX_UNAVAILABLE,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

use crate::config::HandlersConfig;
use crate::jail::{Jail, JailState};
use crate::reaper::ExitStatus;
use crate::spawn::{kill_raw, spawn_handler, HandlerSpec, Step};
use bottle_spec::JailMode;

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

    /// Called by the driver for every reaped pid: true when it was a handler's, which the
    /// supervisor must then not see.
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

/// The jail as this kernel and runtime allow it, decided once at start: prepared, then probed
/// end to end by a child that runs every step and execs a path that does not exist (so the
/// answer must be that exec's ENOENT).
pub fn prepare_jail(config: &HandlersConfig) -> (Option<Arc<Jail>>, JailState) {
    if config.jail == JailMode::UnsafeOff {
        tracing::warn!("UNSAFE: the pack handler jail is off (handlers.jail = unsafe-off)");
        return (
            None,
            JailState::Unjailed("handlers.jail is unsafe-off".into()),
        );
    }
    let verdict =
        Jail::prepare(&config.pack_roots).and_then(|jail| probe(&jail, config).map(|()| jail));
    match verdict {
        Ok(jail) => {
            let state = JailState::Ready {
                landlock_abi: jail.landlock_abi(),
            };
            (Some(Arc::new(jail)), state)
        }
        Err(why) if config.jail == JailMode::UnsafeFallback => {
            tracing::warn!("UNSAFE: the pack handler jail is unavailable ({why}); handlers will run unjailed (handlers.jail = unsafe-fallback)");
            (None, JailState::Unjailed(why))
        }
        Err(why) => {
            tracing::error!(
                "the pack handler jail is unavailable, every pack call will be refused: {why}"
            );
            (None, JailState::Unavailable(why))
        }
    }
}

fn probe(jail: &Jail, config: &HandlersConfig) -> Result<(), String> {
    let uid = config.first_uid;
    let dir = config.tmp_dir.join(format!("pack-call-{uid}-jail-probe"));
    let _ = remove_as_owner(&dir);
    let null = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
    };
    let stdio = [null(), null(), null()];
    let [Ok(a), Ok(b), Ok(c)] = stdio else {
        return Err("cannot open /dev/null".into());
    };
    let child = jail
        .for_call(uid, Path::new("/usr"), config.proxy.is_some(), None)
        .map_err(|e| e.to_string())?;
    let argv = ["/nonexistent/sidecar-init-jail-probe".to_string()];
    let result = spawn_handler(HandlerSpec {
        argv: &argv,
        env: &BTreeMap::new(),
        uid,
        dir: &dir,
        limits: config.limits,
        stdio: [a, b, c],
        jail: Some(child),
    });
    let _ = remove_as_owner(&dir);
    match result {
        Err(e) if e.step == Some(Step::Exec) && e.error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        Err(e) => Err(e.to_string()),
        Ok(_) => Err("the probe's nonexistent program ran".into()),
    }
}

/// Serves spawn requests until the listener fails.
pub async fn serve(
    listener: UnixListener,
    config: HandlersConfig,
    registry: Registry,
    jail: Option<Arc<Jail>>,
    state: JailState,
) {
    let free: Arc<Mutex<BTreeSet<u32>>> =
        Arc::new(Mutex::new((config.first_uid..=config.last_uid).collect()));
    let config = Arc::new(config);
    let jail = Arc::new((jail, state));
    let slots: Slots = Arc::default();
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
        let jail = jail.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            if let Err(e) = call(stream, &config, &registry, &free, &jail, &slots).await {
                tracing::debug!("handler-spawn connection ended: {e}");
            }
        });
    }
}

/// Each handler uid's namespaces, made by its first jailed call (see
/// [`crate::jail::SlotNamespaces`]).
type Slots = Arc<Mutex<HashMap<u32, Arc<crate::jail::SlotNamespaces>>>>;

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
    jail: &(Option<Arc<Jail>>, JailState),
    slots: &Slots,
) -> std::io::Result<()> {
    let (request, fds) = match receive(&stream).await {
        Ok(r) => r,
        Err(e) => return send(&mut stream, &error("invalid", e.to_string())).await,
    };
    if let Err(why) = check(&request) {
        return send(&mut stream, &error("invalid", why)).await;
    }
    let jailed = match jail {
        (Some(j), _) => {
            if let Err(why) = j.check_pack_dir(&request.pack_dir) {
                return send(&mut stream, &error("invalid", why)).await;
            }
            Some(j.clone())
        }
        (None, JailState::Unjailed(why)) => {
            tracing::warn!(pack = %request.pack, call = %request.call_id, "UNSAFE: running the handler unjailed: {why}");
            None
        }
        (None, state) => {
            let (_, why) = state.describe();
            return send(
                &mut stream,
                &error(
                    SANDBOX_UNAVAILABLE,
                    format!("the pack handler jail is {why}"),
                ),
            )
            .await;
        }
    };
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
    env.extend(config.env.clone());
    if config.proxy.is_some() {
        env.extend(bottle_spec::pack_proxy::handler_env());
    }
    env.insert("HOME".into(), dir.display().to_string());
    env.insert("TMPDIR".into(), dir.display().to_string());
    let child_jail = match &jailed {
        Some(j) => match j.for_call(
            uid,
            &request.pack_dir,
            config.proxy.is_some(),
            slots.lock().ok().and_then(|s| s.get(&uid).cloned()),
        ) {
            Ok(c) => Some(c),
            Err(e) => {
                drop(lease);
                return send(&mut stream, &error("spawn", e.to_string())).await;
            }
        },
        None => None,
    };
    let spawned = spawn_handler(HandlerSpec {
        argv: &request.argv,
        env: &env,
        uid,
        dir: &dir,
        limits: config.limits,
        stdio,
        jail: child_jail,
    });
    // No await between the spawn and `watch`: on this single-threaded runtime the driver
    // cannot reap the pid before it is registered.
    let started = match spawned {
        Ok(s) => s,
        Err(e) => {
            // The child may have created the dir before exec failed.
            cleanup(uid, &dir).await;
            drop(lease);
            let code = match e.step {
                Some(step) if step.is_jail() => SANDBOX_UNAVAILABLE,
                _ => "spawn",
            };
            return send(&mut stream, &error(code, e.to_string())).await;
        }
    };
    let pid = started.pid;
    if let (Some(ns), Ok(mut s)) = (started.namespaces, slots.lock()) {
        s.insert(uid, Arc::new(ns));
    }
    // Relay the handler's proxy connections (the listener is in its jail) for as long as the
    // call lasts.
    let relay = match (started.proxy_listener, config.proxy) {
        (Some(l), Some(pipelock)) => {
            let origin = Origin {
                pack: request.pack.clone(),
                call_id: request.call_id.clone(),
            };
            match crate::pack_proxy::start(l, pipelock, origin) {
                Ok(task) => Some(task),
                Err(e) => {
                    tracing::warn!("cannot relay the proxy of call {}: {e}", request.call_id);
                    None
                }
            }
        }
        _ => None,
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
    if let Some(relay) = relay {
        relay.abort();
    }
    cleanup(uid, &dir).await;
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
    if !valid_pack_name(&r.pack) {
        return Err(
            "pack must be <namespace>.<name> of a-z 0-9 _ (each part starting with a letter)"
                .into(),
        );
    }
    if !r.pack_dir.is_absolute() {
        return Err("pack_dir must be an absolute path".into());
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
/// everything the call's uid left at their top level (its own files only: they are found by
/// owner).
pub const SWEPT: [&str; 1] = ["/dev/shm"];

/// After a call: kill every process of its uid, then remove its temp dir and what the uid left
/// in the shared places — all from init itself (`CAP_KILL`, `CAP_CHOWN`), on a blocking thread
/// so a handler that left a million files cannot stall supervision.
async fn cleanup(uid: u32, dir: &Path) {
    let dir = dir.to_path_buf();
    let job = tokio::task::spawn_blocking(move || {
        // By uid, not by process group: the leader is reaped by now, so its pgid could name
        // someone else's group; the uid is the call's alone.
        let left = kill_uid(uid);
        if left > 0 {
            tracing::warn!("handler uid {uid}: {left} process(es) survived the cleanup");
        }
        let mut places: Vec<PathBuf> = SWEPT.iter().map(PathBuf::from).collect();
        if let Some(parent) = dir.parent() {
            places.push(parent.to_path_buf());
        }
        for place in places {
            sweep(&place, uid);
        }
        if let Err(e) = remove_as_owner(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", dir.display());
            }
        }
    });
    if job.await.is_err() {
        tracing::warn!("the cleanup of handler uid {uid} panicked");
    }
}

/// SIGKILLs every process whose `/proc/<pid>` belongs to `uid` until none is left (a process
/// forking while we scan shows up in the next round; with SIGKILL pending it cannot fork
/// again). Returns how many were still there after the last round.
fn kill_uid(uid: u32) -> usize {
    use std::os::unix::fs::MetadataExt;
    let scan = || -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let meta = e.metadata().ok()?;
                (meta.uid() == uid).then_some(pid)
            })
            .collect()
    };
    for _ in 0..64 {
        let pids = scan();
        if pids.is_empty() {
            return 0;
        }
        for pid in &pids {
            kill_raw(*pid, libc::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    scan().len()
}

/// Removes what `uid` owns at the top of `place`.
fn sweep(place: &Path, uid: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(place) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.symlink_metadata().is_ok_and(|m| m.uid() == uid) {
            let _ = remove_as_owner(&path);
        }
    }
}

/// Removes `path` (a file, a symlink, or a tree a handler made, modes as it chose): each
/// directory is given to root (`CAP_CHOWN`) and opened up before it is read, since root here
/// has no `CAP_DAC_OVERRIDE`. Symlinks are removed, never followed. Only called once no
/// process of the owner is left, so nothing changes the tree meanwhile.
fn remove_as_owner(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = path.symlink_metadata()?;
    if !meta.is_dir() {
        return std::fs::remove_file(path);
    }
    nix::unistd::fchownat(
        None,
        path,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(0)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    for e in std::fs::read_dir(path)?.flatten() {
        remove_as_owner(&e.path())?;
    }
    std::fs::remove_dir(path)
}
