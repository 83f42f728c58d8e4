//! The pack store: installed packs on disk under `state_dir`, shipped packs from `packs_dir`,
//! and the in-memory registry the call path reads.
//!
//! On-disk layout (all under `state_dir`):
//!
//! | path | what |
//! | --- | --- |
//! | `packs/<name>@<seq>/` | one installed version; the highest `<seq>` holding a manifest (`helmdeck-pack.yaml` or `pack.json`) wins |
//! | `staging/<id>/` | an install in progress (extracted, validated, then renamed into `packs/`) |
//! | `tmp/<call-id>/` | a call's working directory, removed after the call |
//!
//! An install becomes visible with one `rename` (atomic); replacing or deleting a version
//! first unlinks its manifest (the durable "gone" marker — a restart ignores and removes
//! such directories), and the directory itself is removed once the last in-flight call using
//! it has finished. `staging/` and `tmp/` are emptied at startup.

use std::collections::HashMap;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::archive::{self, ArchiveError, Limits};
use crate::manifest::{has_manifest, LoadError, Pack, Source};

/// Why an install was refused.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The tarball is malformed or holds a refused entry.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The manifest or files are invalid, a dependency is missing, or the trust hash differs.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The pack has no `trust.sha256` and the install did not consent to that.
    #[error("pack {0} is unsigned (no trust.sha256); install it with --allow-unsigned (API: ?allow_unsigned=true) if you trust it")]
    Unsigned(String),
    /// The name is a shipped pack's and the install did not ask to override it.
    #[error("`{0}` is a pack shipped in packs_dir; installing over it needs --replace-shipped (API: ?replace_shipped=true); the installed pack then overrides the shipped one until it is deleted")]
    ShadowsShipped(String),
    /// The manifest's name is not the URL's.
    #[error("the manifest says name `{manifest}` but the URL names `{url}`")]
    NameMismatch {
        /// From the manifest.
        manifest: String,
        /// From the URL.
        url: String,
    },
    /// A filesystem operation failed (a bug or a broken volume).
    #[error("filesystem error: {0}")]
    Io(#[from] io::Error),
    /// The blocking task died.
    #[error("install task failed: {0}")]
    Task(String),
}

/// Why a delete was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// No such pack.
    #[error("no pack named `{0}` is installed")]
    NotFound(String),
    /// The pack is shipped read-only with the image.
    #[error("`{0}` is shipped read-only with the image (packs_dir) and cannot be deleted; installing a pack of the same name overrides it")]
    Shipped(String),
    /// A filesystem operation failed.
    #[error("filesystem error: {0}")]
    Io(#[from] io::Error),
    /// The blocking task died.
    #[error("delete task failed: {0}")]
    Task(String),
}

/// What an install consented to (the operator's flags and the config's `allow_unsigned`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstallPolicy {
    /// Accept a pack without `trust.sha256`.
    pub allow_unsigned: bool,
    /// Accept a name that a shipped pack (from `packs_dir`) has; the install overrides it.
    pub replace_shipped: bool,
}

/// In a staged pack's directory until it is published: a restart discards the directory.
pub const UNVERIFIED_MARKER: &str = ".sidecars-unverified";

/// A pack put in place by [`Store::stage`], not yet visible to calls; the store's writer lock
/// is held until it is published or abandoned.
#[derive(Debug)]
pub struct Staged {
    pack: Arc<Pack>,
    dir: PathBuf,
    unverified: bool,
    _writer: tokio::sync::OwnedMutexGuard<()>,
}

impl Staged {
    /// The staged pack (runnable: its files are in their final place).
    pub fn pack(&self) -> &Arc<Pack> {
        &self.pack
    }
}

/// Installed and shipped packs, on disk and in memory.
#[derive(Debug)]
pub struct Store {
    packs: PathBuf,
    staging: PathBuf,
    tmp: PathBuf,
    installed: RwLock<HashMap<String, Arc<Pack>>>,
    shipped: HashMap<String, Arc<Pack>>,
    /// Serialises installs and deletes (calls never wait on it).
    writer: Arc<tokio::sync::Mutex<()>>,
    seq: AtomicU64,
    limits: Limits,
    /// Bumped whenever the visible pack set changes (install, replace, delete): what MCP's
    /// `notifications/tools/list_changed` follows.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Store {
    /// Prepare `state_dir` (create, empty `staging/` and `tmp/`), load the installed packs and
    /// the shipped ones from `packs_dir` (absent = none). Packs that fail validation are logged
    /// and skipped, so one bad pack cannot keep the daemon down.
    pub fn open(state_dir: &Path, packs_dir: &Path) -> io::Result<Store> {
        fs::create_dir_all(state_dir)?;
        let root = fs::canonicalize(state_dir)?;
        let packs = make_dir(&root.join("packs"))?;
        let staging = make_dir(&root.join("staging"))?;
        let tmp = make_dir(&root.join("tmp"))?;
        empty_dir(&staging)?;
        empty_dir(&tmp)?;
        let (installed, max_seq) = load_installed(&packs)?;
        let shipped = load_shipped(packs_dir);
        tracing::info!(
            installed = installed.len(),
            shipped = shipped.len(),
            state_dir = %root.display(),
            "packs loaded"
        );
        Ok(Store {
            packs,
            staging,
            tmp,
            installed: RwLock::new(installed),
            shipped,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            seq: AtomicU64::new(max_seq),
            limits: Limits::default(),
            changes: tokio::sync::watch::channel(0).0,
        })
    }

    /// A receiver that sees every change of the visible pack set.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// The pack a call should run: an installed one overrides a shipped one of the same name.
    pub fn get(&self, name: &str) -> Option<Arc<Pack>> {
        let installed = self.installed.read().unwrap_or_else(|e| e.into_inner());
        installed
            .get(name)
            .or_else(|| self.shipped.get(name))
            .cloned()
    }

    /// Every visible pack, sorted by name.
    pub fn list(&self) -> Vec<Arc<Pack>> {
        let installed = self.installed.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Arc<Pack>> = installed.values().cloned().collect();
        all.extend(
            self.shipped
                .iter()
                .filter(|(name, _)| !installed.contains_key(*name))
                .map(|(_, p)| p.clone()),
        );
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Number of visible packs.
    pub fn count(&self) -> usize {
        let installed = self.installed.read().unwrap_or_else(|e| e.into_inner());
        installed.len()
            + self
                .shipped
                .keys()
                .filter(|n| !installed.contains_key(*n))
                .count()
    }

    /// Whether `name` is a shipped pack (from `packs_dir`), overridden or not.
    pub fn is_shipped(&self, name: &str) -> bool {
        self.shipped.contains_key(name)
    }

    /// Where installed packs live (`state_dir/packs`).
    pub fn packs_root(&self) -> &Path {
        &self.packs
    }

    /// Where calls get their working directories.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Install or replace `name` from a tar(.gz) `body`, within what `policy` consents to.
    /// Returns the new pack and whether it replaced an installed version. A refused install
    /// leaves nothing on disk (its staging directory is removed).
    pub async fn install(
        self: &Arc<Self>,
        name: String,
        body: Bytes,
        policy: InstallPolicy,
    ) -> Result<(Arc<Pack>, bool), InstallError> {
        let staged = self.stage(name, body, policy, false).await?;
        self.publish(staged).await
    }

    /// The first half of an install: extract, validate and put the pack in its final
    /// directory, not yet visible to calls. With `unverified`, the directory carries
    /// [`UNVERIFIED_MARKER`] until [`Store::publish`]: a restart in between discards it, so a
    /// pack whose self-test did not pass never comes back. Holds the writer lock until the
    /// [`Staged`] is published or abandoned.
    pub async fn stage(
        self: &Arc<Self>,
        name: String,
        body: Bytes,
        policy: InstallPolicy,
        unverified: bool,
    ) -> Result<Staged, InstallError> {
        let writer = self.writer.clone().lock_owned().await;
        let store = self.clone();
        let (pack, dir) = tokio::task::spawn_blocking(move || {
            store.stage_blocking(&name, &body, policy, unverified)
        })
        .await
        .map_err(|e| InstallError::Task(e.to_string()))??;
        Ok(Staged {
            pack: Arc::new(pack),
            dir,
            unverified,
            _writer: writer,
        })
    }

    /// Make a staged pack the one calls run (replacing an installed version, which retires).
    pub async fn publish(
        self: &Arc<Self>,
        staged: Staged,
    ) -> Result<(Arc<Pack>, bool), InstallError> {
        if staged.unverified {
            fs::remove_file(staged.dir.join(UNVERIFIED_MARKER))?;
            sync_dir(&staged.dir);
        }
        let pack = staged.pack.clone();
        let old = self
            .installed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pack.name.clone(), pack.clone());
        let replaced = old.is_some();
        if let Some(old) = old {
            retire(&old);
        }
        tracing::info!(pack = %pack.name, version = %pack.version, replaced, "pack installed");
        self.changed();
        Ok((pack, replaced))
    }

    /// Drop a staged pack (its self-test failed): its directory goes, the installed version
    /// (if any) stays as it was.
    pub fn abandon(&self, staged: Staged) {
        if let Err(err) = fs::remove_dir_all(&staged.dir) {
            tracing::warn!(dir = %staged.dir.display(), %err, "cannot remove an abandoned pack");
        }
        sync_dir(&self.packs);
    }

    fn stage_blocking(
        &self,
        name: &str,
        body: &[u8],
        policy: InstallPolicy,
        unverified: bool,
    ) -> Result<(Pack, PathBuf), InstallError> {
        if self.is_shipped(name) && !policy.replace_shipped {
            return Err(InstallError::ShadowsShipped(name.to_string()));
        }
        let staging = self.staging.join(format!("{}", self.next_seq()));
        DirBuilder::new().mode(0o755).create(&staging)?;
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o755))?;
        let _cleanup = RemoveOnDrop(staging.clone());
        archive::extract(body, &staging, self.limits)?;
        let root = pack_root(&staging);
        let final_dir = self.packs.join(format!("{name}@{:020}", self.next_seq()));
        let pack = Pack::load(&root, &final_dir, Source::Installed)?;
        if pack.name != name {
            return Err(InstallError::NameMismatch {
                manifest: pack.name.clone(),
                url: name.to_string(),
            });
        }
        if pack.trust_sha256.is_none() && !policy.allow_unsigned {
            return Err(InstallError::Unsigned(name.to_string()));
        }
        if unverified {
            fs::write(root.join(UNVERIFIED_MARKER), b"")?;
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
        fs::rename(&root, &final_dir)?;
        sync_dir(&self.packs);
        Ok((pack, final_dir))
    }

    /// Delete the installed pack `name`.
    pub async fn delete(self: &Arc<Self>, name: String) -> Result<(), DeleteError> {
        let _writer = self.writer.lock().await;
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let removed = store
                .installed
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            match removed {
                Some(pack) => {
                    retire(&pack);
                    tracing::info!(pack = %name, "pack deleted");
                    store.changed();
                    Ok(())
                }
                None if store.shipped.contains_key(&name) => Err(DeleteError::Shipped(name)),
                None => Err(DeleteError::NotFound(name)),
            }
        })
        .await
        .map_err(|e| DeleteError::Task(e.to_string()))?
    }

    /// A sequence number above every one used so far (microseconds since the epoch, bumped
    /// past the last one so a clock step back cannot order a new install below an old one).
    fn next_seq(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut cur = self.seq.load(Ordering::Relaxed);
        loop {
            let next = now.max(cur + 1);
            match self
                .seq
                .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Mark a replaced or deleted version gone on disk (unlink its manifest) and in memory.
fn retire(pack: &Arc<Pack>) {
    if let Err(err) = fs::remove_file(pack.dir.join(pack.manifest_file)) {
        if err.kind() != io::ErrorKind::NotFound {
            tracing::warn!(dir = %pack.dir.display(), %err, "cannot unlink the manifest of a retired pack");
        }
    }
    sync_dir(&pack.dir);
    pack.retire();
}

/// The extracted pack's root: the staging dir, or its single top-level directory when the
/// tarball was made from the pack's parent (`tar -C packs -c cmd.upper`).
fn pack_root(staging: &Path) -> PathBuf {
    if has_manifest(staging) {
        return staging.to_path_buf();
    }
    let entries: Vec<_> = match fs::read_dir(staging) {
        Ok(rd) => rd.filter_map(Result::ok).collect(),
        Err(_) => return staging.to_path_buf(),
    };
    if let [only] = entries.as_slice() {
        let path = only.path();
        if only.file_type().is_ok_and(|t| t.is_dir()) && has_manifest(&path) {
            return path;
        }
    }
    staging.to_path_buf()
}

fn load_installed(packs: &Path) -> io::Result<(HashMap<String, Arc<Pack>>, u64)> {
    // name -> (seq, dir) of the newest live version
    let mut newest: HashMap<String, (u64, PathBuf)> = HashMap::new();
    let mut garbage = Vec::new();
    let mut max_seq = 0;
    for entry in fs::read_dir(packs)? {
        let entry = entry?;
        let path = entry.path();
        let file_name = entry.file_name();
        let parsed = file_name
            .to_str()
            .and_then(|n| n.rsplit_once('@'))
            .and_then(|(name, seq)| Some((name.to_string(), seq.parse::<u64>().ok()?)));
        let Some((name, seq)) = parsed else {
            tracing::warn!(path = %path.display(), "ignoring an unexpected entry in the packs directory");
            continue;
        };
        max_seq = max_seq.max(seq);
        if !has_manifest(&path) || path.join(UNVERIFIED_MARKER).exists() {
            garbage.push(path);
            continue;
        }
        match newest.get(&name) {
            Some((best, _)) if *best > seq => garbage.push(path),
            _ => {
                if let Some((_, older)) = newest.insert(name, (seq, path)) {
                    garbage.push(older);
                }
            }
        }
    }
    for dir in garbage {
        if let Err(err) = fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), %err, "cannot remove an old pack version");
        }
    }
    let mut installed = HashMap::new();
    for (name, (_, dir)) in newest {
        match Pack::load(&dir, &dir, Source::Installed) {
            Ok(pack) if pack.name == name => {
                installed.insert(name, Arc::new(pack));
            }
            Ok(pack) => {
                tracing::error!(dir = %dir.display(), manifest_name = %pack.name, "skipping installed pack: its directory and manifest names differ")
            }
            Err(err) => {
                tracing::error!(dir = %dir.display(), %err, "skipping installed pack that no longer validates")
            }
        }
    }
    Ok((installed, max_seq))
}

fn load_shipped(packs_dir: &Path) -> HashMap<String, Arc<Pack>> {
    let mut shipped = HashMap::new();
    let dir = match fs::canonicalize(packs_dir) {
        Ok(d) => d,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return shipped,
        Err(err) => {
            tracing::error!(packs_dir = %packs_dir.display(), %err, "cannot read the shipped packs");
            return shipped;
        }
    };
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(err) => {
            tracing::error!(packs_dir = %dir.display(), %err, "cannot read the shipped packs");
            return shipped;
        }
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let dir_name = entry.file_name().to_string_lossy().into_owned();
        match Pack::load(&path, &path, Source::Shipped) {
            Ok(pack) if pack.name == dir_name => {
                shipped.insert(dir_name, Arc::new(pack));
            }
            Ok(pack) => {
                tracing::error!(dir = %path.display(), manifest_name = %pack.name, "skipping shipped pack: its directory must be named after the pack")
            }
            Err(err) => {
                tracing::error!(dir = %path.display(), %err, "skipping invalid shipped pack")
            }
        }
    }
    shipped
}

/// Create `dir` (0755: handlers running as another uid must traverse it) if missing.
fn make_dir(dir: &Path) -> io::Result<PathBuf> {
    match DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?,
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    Ok(dir.to_path_buf())
}

fn empty_dir(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let result = if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        if let Err(err) = result {
            tracing::warn!(path = %path.display(), %err, "cannot remove a leftover");
        }
    }
    Ok(())
}

/// fsync a directory so a rename/unlink in it survives a crash; best effort.
fn sync_dir(dir: &Path) {
    if let Err(err) = fs::File::open(dir).and_then(|f| f.sync_all()) {
        tracing::warn!(dir = %dir.display(), %err, "cannot fsync directory");
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(err) = fs::remove_dir_all(&self.0) {
                tracing::warn!(dir = %self.0.display(), %err, "cannot remove the staging directory");
            }
        }
    }
}
