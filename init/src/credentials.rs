//! Handing each daemon the credentials it declares, and nothing else (systemd's
//! `LoadCredential=` pattern).
//!
//! Why init does it: the credential files are mounted from the host `root:root 0400`, so only
//! init (uid 0, without `CAP_DAC_OVERRIDE`: it reads them as their owner) can open them. Before
//! any daemon starts, init copies each daemon's declared files into
//! `<root>/<daemon>/<name>` on the `/run/sidecars` tmpfs: the directory `0500` and the files
//! `0400`, both owned by the daemon's uid, the root `0711` (no listing). A daemon then reads
//! `$CREDENTIALS_DIRECTORY/<name>`; no other uid can open another daemon's directory, and no
//! daemon ever holds a path to the originals.
//!
//! Rotation: `<root>/<daemon>` is a root-owned symlink to the current generation
//! `<root>/<daemon>.<n>/`. On SIGHUP init reads the sources again for every daemon with a
//! `reload_signal` ([`refresh`]), writes generation `n + 1` and swaps the link atomically
//! before it signals the daemon, so the daemon's reload reads the new files.
//!
//! A source that is missing, not a regular file, or readable by group or others (as ssh
//! refuses loose key files) stops init before anything starts, naming the file and the fix.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{chown, Gid, Uid};

use crate::validate::Plan;

/// The variable naming a daemon's credentials directory.
pub const CREDENTIALS_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Why a credential could not be handed out.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The source could not be inspected or read.
    #[error("credential {name:?} of {daemon}: cannot read {source_path}: {error} (is the file mounted, and owned by root on the host? `chown root:root FILE; chmod 0400 FILE`)")]
    Unreadable {
        /// The daemon.
        daemon: String,
        /// The credential's file name.
        name: String,
        /// Its source path.
        source_path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The source is readable by group or others, or is not a regular file.
    #[error("credential {name:?} of {daemon}: {source_path} {why}")]
    Unsafe {
        /// The daemon.
        daemon: String,
        /// The credential's file name.
        name: String,
        /// Its source path.
        source_path: String,
        /// What is wrong and how to fix it.
        why: String,
    },
    /// The private directory could not be made.
    #[error("cannot prepare {path} for {daemon}: {error} (init needs CAP_CHOWN and a writable tmpfs there)")]
    Prepare {
        /// The daemon.
        daemon: String,
        /// The path.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
}

/// Copies every enabled daemon's credentials into its private directory and adds
/// `CREDENTIALS_DIRECTORY` to its environment. Returns the directories made.
pub fn hand_out(plan: &mut Plan) -> Result<Vec<PathBuf>, CredentialError> {
    let root = plan.credentials_root.clone();
    let mut made = Vec::new();
    for d in plan
        .daemons
        .iter_mut()
        .filter(|d| !d.credentials.is_empty())
    {
        // Validation guarantees a non-root user for daemons with credentials.
        let Some(user) = d.user else { continue };
        // Read (and check) every source first: a bad one leaves nothing half-written.
        let mut contents = Vec::with_capacity(d.credentials.len());
        for (name, source) in &d.credentials {
            contents.push((name.clone(), read_source(&d.name, name, source)?));
        }
        let prepare = |path: &Path, error: std::io::Error| CredentialError::Prepare {
            daemon: d.name.clone(),
            path: path.display().to_string(),
            error,
        };
        ensure_root(&root).map_err(|e| prepare(&root, e))?;
        let dir = root.join(&d.name);
        clear_all(&root, &d.name).map_err(|e| prepare(&dir, e))?;
        let generation = write_generation(&root, &d.name, user.uid, user.gid, contents, 1)
            .map_err(|(path, e)| prepare(&path, e))?;
        point_at(&root, &d.name, &generation).map_err(|e| prepare(&dir, e))?;
        d.env
            .insert(CREDENTIALS_ENV.to_string(), dir.display().to_string());
        made.push(dir);
    }
    Ok(made)
}

/// Writes one generation of a daemon's credentials, `<root>/<daemon>.<gen>/`: the directory
/// `0500` and the files `0400`, all the daemon's. On failure, the path that failed.
fn write_generation(
    root: &Path,
    daemon: &str,
    uid: u32,
    gid: u32,
    contents: Vec<(String, Vec<u8>)>,
    gen: u64,
) -> Result<PathBuf, (PathBuf, std::io::Error)> {
    let dir = root.join(format!("{daemon}.{gen}"));
    let at = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| (path, e)
    };
    clear(&dir).map_err(at(&dir))?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(at(&dir))?;
    let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    for (name, bytes) in contents {
        let path = dir.join(&name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .map_err(at(&path))?;
        f.write_all(&bytes).map_err(at(&path))?;
        drop(f);
        chown(&path, uid, gid).map_err(|e| (path.clone(), e.into()))?;
    }
    // Mode first: once the directory is the daemon's, root (no CAP_FOWNER) cannot chmod it.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).map_err(at(&dir))?;
    chown(&dir, uid, gid).map_err(|e| (dir.clone(), e.into()))?;
    Ok(dir)
}

/// Points `<root>/<daemon>` (what `CREDENTIALS_DIRECTORY` names) at `generation`, atomically:
/// a new symlink renamed over the old one, so a daemon reading a file sees one generation or
/// the other, never a half-written one. The link is root's, in root's `0711` directory: no
/// daemon can repoint it.
fn point_at(root: &Path, daemon: &str, generation: &Path) -> std::io::Result<()> {
    let target = generation
        .file_name()
        .ok_or_else(|| std::io::Error::other("generation without a name"))?;
    let tmp = root.join(format!(".{daemon}.link"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, root.join(daemon))
}

/// Removes `<root>/<daemon>` (a link, or a directory of an older layout) and every
/// generation directory of the daemon except `keep`.
fn clear_generations(root: &Path, daemon: &str, keep: Option<&Path>) -> std::io::Result<()> {
    let prefix = format!("{daemon}.");
    for entry in fs::read_dir(root)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let generation = name
            .strip_prefix(&prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if generation && keep != Some(entry.path().as_path()) {
            clear(&entry.path())?;
        }
    }
    Ok(())
}

/// Everything of `daemon` under `root`, before a first hand-out.
fn clear_all(root: &Path, daemon: &str) -> std::io::Result<()> {
    let link = root.join(daemon);
    match fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => fs::remove_file(&link)?,
        Ok(_) => clear(&link)?,
        Err(_) => {}
    }
    clear_generations(root, daemon, None)
}

/// Hands every daemon that has credentials and a `reload_signal` a new generation of them
/// (init does this on SIGHUP, before it forwards the reload signal): the sources are read
/// again and `CREDENTIALS_DIRECTORY` is repointed, so a rotated credential reaches the daemon
/// without a restart. A source that cannot be read or is unsafe keeps the daemon's current
/// generation, with a warning naming the file and the fix. Returns the daemons refreshed.
pub fn refresh(plan: &Plan, gen: u64) -> Vec<String> {
    let root = &plan.credentials_root;
    let mut refreshed = Vec::new();
    for d in plan
        .daemons
        .iter()
        .filter(|d| !d.credentials.is_empty() && d.reload_signal.is_some())
    {
        let Some(user) = d.user else { continue };
        let contents: Result<Vec<_>, _> = d
            .credentials
            .iter()
            .map(|(name, source)| Ok((name.clone(), read_source(&d.name, name, source)?)))
            .collect();
        let written = contents
            .map_err(|e: CredentialError| e.to_string())
            .and_then(|contents| {
                write_generation(root, &d.name, user.uid, user.gid, contents, gen)
                    .map_err(|(path, e)| format!("cannot write {}: {e}", path.display()))
            })
            .and_then(|generation| {
                point_at(root, &d.name, &generation)
                    .map_err(|e| format!("cannot repoint {}: {e}", root.join(&d.name).display()))?;
                Ok(generation)
            });
        match written {
            Ok(generation) => {
                if let Err(e) = clear_generations(root, &d.name, Some(&generation)) {
                    tracing::warn!("credentials of {}: an old generation remains: {e}", d.name);
                }
                tracing::info!("credentials of {} read again (generation {gen})", d.name);
                refreshed.push(d.name.clone());
            }
            Err(why) => {
                tracing::warn!("credentials of {} kept as they were: {why}", d.name);
                let _ = clear(&root.join(format!("{}.{gen}", d.name)));
            }
        }
    }
    refreshed
}

fn read_source(daemon: &str, name: &str, source: &Path) -> Result<Vec<u8>, CredentialError> {
    let unreadable = |error| CredentialError::Unreadable {
        daemon: daemon.to_string(),
        name: name.to_string(),
        source_path: source.display().to_string(),
        error,
    };
    let unsafe_ = |why: String| CredentialError::Unsafe {
        daemon: daemon.to_string(),
        name: name.to_string(),
        source_path: source.display().to_string(),
        why,
    };
    let meta = fs::metadata(source).map_err(unreadable)?;
    if !meta.is_file() {
        return Err(unsafe_("is not a regular file".to_string()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(unsafe_(format!(
            "is readable by group or others (mode {mode:04o}); on the host: `chmod 0400 FILE` (and `chown root:root FILE`)"
        )));
    }
    fs::read(source).map_err(unreadable)
}

/// The root directory, `0711`: every daemon can enter its own directory, none can list.
fn ensure_root(root: &Path) -> std::io::Result<()> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)
    {
        Ok(()) => fs::set_permissions(root, fs::Permissions::from_mode(0o711)),
        Err(e) => Err(e),
    }
}

/// Removes a directory left by an earlier run (a restarted container keeps its tmpfs only if
/// the runtime does): give it back to root first, since it is the daemon's and `0500`.
fn clear(dir: &Path) -> std::io::Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    chown(dir, Some(Uid::from_raw(0)), Some(Gid::from_raw(0)))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    fs::remove_dir_all(dir)
}
