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
        clear(&dir).map_err(|e| prepare(&dir, e))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| prepare(&dir, e))?;
        let (uid, gid) = (Some(Uid::from_raw(user.uid)), Some(Gid::from_raw(user.gid)));
        for (name, bytes) in contents {
            let path = dir.join(&name);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o400)
                .open(&path)
                .map_err(|e| prepare(&path, e))?;
            f.write_all(&bytes).map_err(|e| prepare(&path, e))?;
            drop(f);
            chown(&path, uid, gid).map_err(|e| prepare(&path, e.into()))?;
        }
        // Mode first: once the directory is the daemon's, root (no CAP_FOWNER) cannot chmod it.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o500))
            .map_err(|e| prepare(&dir, e))?;
        chown(&dir, uid, gid).map_err(|e| prepare(&dir, e.into()))?;
        d.env
            .insert(CREDENTIALS_ENV.to_string(), dir.display().to_string());
        made.push(dir);
    }
    Ok(made)
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
