//! Who owns each file the control plane writes into a bottle's project directory, and the
//! writing itself (docs/security.md, "How secrets travel" and the rooms table).
//!
//! | file | owner | mode |
//! | --- | --- | --- |
//! | `config/init.json` | `0:0` (sidecar-init) | `0400` |
//! | `config/<daemon>.json` | the daemon's uid:gid ([`bottle_spec::Daemon::uid`]) | `0400` |
//! | `config/dns.json` | [`bottle_spec::DNS_UID`] | `0400` |
//! | `secrets/` | `0:0` | `0700` |
//! | `secrets/ca.key`, `secrets/pack-exec-operator-token` | `0:0` | `0400` |
//! | `ca/ca.crt`, `ca/ca-bundle.crt` | the control plane | `0444` |
//!
//! Why: inside the sidecars container nobody holds `CAP_DAC_OVERRIDE` (init keeps only
//! `CHOWN KILL SETGID SETUID`), so a file is readable exactly by the uid that owns it. A daemon's
//! config owned by that daemon is readable by it alone; a secret owned by root is readable by
//! sidecar-init alone, which hands each daemon its own copy.
//!
//! Files are written through a temp file created `0600` (never readable by another uid while
//! being written), given to their owner, set to their final mode and renamed into place.
//! Giving a file to another uid needs root: [`Owners::required`] (`up`) fails with
//! [`ControlError::NotRoot`] when chown is refused; [`Owners::best_effort`] (`render --out`,
//! which needs no privileges) keeps the files as the caller's and says so in a note.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bottle_spec::Daemon;

use crate::api::ControlError;
use crate::runtime::files::{FileDelivery, OwnerMap};

/// Root: sidecar-init, and every secret it hands out.
pub const ROOT: (u32, u32) = (bottle_spec::INIT_UID, bottle_spec::INIT_UID);

/// Applies owners and modes, strictly (`up`) or as far as permitted (`render --out`), or
/// records them for an archive (`up` with [`FileDelivery::Volumes`]).
#[derive(Debug)]
pub struct Owners {
    required: bool,
    /// Files that kept the caller as owner because chown was refused (best effort only).
    skipped: Vec<PathBuf>,
    /// Recording instead of chowning: each path's owner inside the bottle.
    recorded: Option<BTreeMap<PathBuf, (u32, u32)>>,
}

/// The project directory's record of owners ([`Owners::recording`]): path relative to the
/// project directory → `[uid, gid]`.
pub const OWNERS_FILE: &str = "owners.json";

impl Owners {
    /// Every chown must succeed (`up`): a refused one is [`ControlError::NotRoot`].
    pub fn required() -> Owners {
        Owners {
            required: true,
            skipped: Vec::new(),
            recorded: None,
        }
    }

    /// Chown where permitted (`render --out`); see [`Owners::note`].
    pub fn best_effort() -> Owners {
        Owners {
            required: false,
            skipped: Vec::new(),
            recorded: None,
        }
    }

    /// Chown nothing, record each owner ([`Owners::save`]): the files travel to the bottle
    /// in archives whose headers carry the owner ([`crate::runtime::files`]), so the control
    /// plane needs no root, and its own copies stay its own (modes are still set, so a
    /// secret is `0400` to the control plane's user).
    pub fn recording() -> Owners {
        Owners {
            required: true,
            skipped: Vec::new(),
            recorded: Some(BTreeMap::new()),
        }
    }

    /// The owners for this delivery: chown for bind mounts, a record for volumes.
    pub fn for_delivery(delivery: FileDelivery) -> Owners {
        match delivery {
            FileDelivery::Bind => Owners::required(),
            FileDelivery::Volumes => Owners::recording(),
        }
    }

    /// Write the record (when recording) into `dir`'s [`OWNERS_FILE`], paths relative to
    /// `dir`; a stale record is removed otherwise.
    pub fn save(&self, dir: &Path) -> Result<(), ControlError> {
        let path = dir.join(OWNERS_FILE);
        let Some(recorded) = &self.recorded else {
            return match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ControlError::io("cannot remove", &path, e)),
            };
        };
        let relative: BTreeMap<String, (u32, u32)> = recorded
            .iter()
            .filter_map(|(p, o)| Some((p.strip_prefix(dir).ok()?.display().to_string(), *o)))
            .collect();
        let json = serde_json::to_vec_pretty(&relative)
            .map_err(|e| ControlError::io("cannot encode", &path, std::io::Error::other(e)))?;
        crate::source::write_file(&path, &json, 0o644)
    }

    /// What the operator should know after a best-effort run (files not given away).
    pub fn note(&self) -> Option<String> {
        let first = self.skipped.first()?;
        Some(format!(
            "not running as root: {} file(s) of the project directory (e.g. {}) could not be given to their daemon's uid, so the directory does not run as is (run it as root to fix the owners)",
            self.skipped.len(),
            first.display()
        ))
    }

    /// Give `path` to `owner` with `mode`.
    pub fn give(&mut self, path: &Path, owner: (u32, u32), mode: u32) -> Result<(), ControlError> {
        self.give_with(path, owner, mode, |p, (uid, gid)| {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
        })
    }

    /// [`Owners::give`] with the chown call passed in (tests simulate a non-root caller).
    pub fn give_with(
        &mut self,
        path: &Path,
        owner: (u32, u32),
        mode: u32,
        chown: impl FnOnce(&Path, (u32, u32)) -> std::io::Result<()>,
    ) -> Result<(), ControlError> {
        if let Some(recorded) = &mut self.recorded {
            recorded.insert(path.to_path_buf(), owner);
            return std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| ControlError::io("cannot chmod", path, e));
        }
        match chown(path, owner) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                if self.required {
                    return Err(ControlError::NotRoot {
                        path: path.display().to_string(),
                        owner: format!("{}:{}", owner.0, owner.1),
                        message: e.to_string(),
                    });
                }
                self.skipped.push(path.to_path_buf());
            }
            Err(e) => return Err(ControlError::io("cannot chown", path, e)),
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| ControlError::io("cannot chmod", path, e))
    }

    /// Write `contents` to `path` (replacing it), owned by `owner` with `mode`: through a
    /// `0600` temp file beside it, renamed into place once owner and mode are final.
    pub fn write(
        &mut self,
        path: &Path,
        contents: &[u8],
        owner: (u32, u32),
        mode: u32,
    ) -> Result<(), ControlError> {
        let tmp = temp_beside(path);
        create_private(&tmp, contents)?;
        let placed = self.give(&tmp, owner, mode).and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|e| ControlError::io("cannot rename", path, e))
        });
        if let Some(recorded) = &mut self.recorded {
            recorded.remove(&tmp);
            if placed.is_ok() {
                recorded.insert(path.to_path_buf(), owner);
            }
        }
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed
    }

    /// [`Owners::write`], except that an existing regular file is rewritten in place (same
    /// inode): a running container bind-mounts each config file by inode, so only an
    /// in-place rewrite reaches it. Its owner and mode are already final (a config is
    /// written once per `up` by this control plane, never given away in between), and the
    /// daemons read it only at start and on the reload signal sent after the write.
    pub fn overwrite(
        &mut self,
        path: &Path,
        contents: &[u8],
        owner: (u32, u32),
        mode: u32,
    ) -> Result<(), ControlError> {
        let existing = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path);
        let mut f = match existing {
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
            _ => return self.write(path, contents, owner, mode),
        };
        f.write_all(contents)
            .and_then(|_| f.sync_all())
            .map_err(|e| ControlError::io("cannot write", path, e))?;
        self.give(path, owner, mode)
    }

    /// Create `dir` (and parents) and give it to `owner` with `mode`.
    pub fn mkdir(&mut self, dir: &Path, owner: (u32, u32), mode: u32) -> Result<(), ControlError> {
        std::fs::create_dir_all(dir).map_err(|e| ControlError::io("cannot create", dir, e))?;
        self.give(dir, owner, mode)
    }
}

/// Write a file nobody else may change, readable by all (`0444`): the CA certificate and the
/// agent's bundle. Through a temp file, so a re-write replaces a `0444` file whoever runs it.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), ControlError> {
    let tmp = temp_beside(path);
    create_private(&tmp, contents)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| ControlError::io("cannot chmod", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ControlError::io("cannot rename", path, e))
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// A new file, `0600` from its creation, with `contents`, synced.
fn create_private(path: &Path, contents: &[u8]) -> Result<(), ControlError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ControlError::io("cannot remove", path, e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ControlError::io("cannot create", path, e))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .map_err(|e| ControlError::io("cannot write", path, e))
}

/// The record [`Owners::save`] wrote into `dir`, empty when there is none (bind delivery).
pub fn load_record(dir: &Path) -> Result<OwnerMap, ControlError> {
    let path = dir.join(OWNERS_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OwnerMap::new()),
        Err(e) => return Err(ControlError::io("cannot read", &path, e)),
    };
    let relative: BTreeMap<String, (u32, u32)> = serde_json::from_slice(&text)
        .map_err(|e| ControlError::io("cannot parse", &path, std::io::Error::other(e)))?;
    Ok(relative
        .into_iter()
        .map(|(p, o)| (PathBuf::from(p), o))
        .collect())
}

/// The owner of a config file the renderer produced (`config/<stem>.json`): init's is root's,
/// the DNS responder's is [`bottle_spec::DNS_UID`]'s, every other is its daemon's. A file of
/// no known owner is an error (a renderer and control plane that disagree), never a guess.
pub fn config_owner(path: &str) -> Result<(u32, u32), ControlError> {
    let stem = path
        .strip_prefix(bottle_compose::configs::CONFIG_DIR)
        .and_then(|p| p.strip_prefix('/'))
        .and_then(|p| p.strip_suffix(".json"))
        .unwrap_or("");
    let uid = match stem {
        "init" => bottle_spec::INIT_UID,
        s if s == bottle_spec::DNS_NAME => bottle_spec::DNS_UID,
        s => match Daemon::from_name(s) {
            Some(d) => d.uid(),
            None => {
                return Err(ControlError::io(
                    "no daemon owns the config file",
                    Path::new(path),
                    std::io::Error::other(
                        "the renderer and the control plane disagree about the config files",
                    ),
                ))
            }
        },
    };
    Ok((uid, uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn owner_mode(p: &Path) -> (u32, u32, u32) {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777)
    }

    #[test]
    fn config_files_belong_to_their_daemon() {
        assert_eq!(config_owner("config/init.json").unwrap(), (0, 0));
        assert_eq!(
            config_owner("config/pack-exec.json").unwrap(),
            (Daemon::PackExec.uid(), Daemon::PackExec.uid())
        );
        assert_eq!(
            config_owner("config/dns.json").unwrap(),
            (bottle_spec::DNS_UID, bottle_spec::DNS_UID)
        );
        for d in Daemon::ALL {
            assert_eq!(
                config_owner(&format!("config/{}.json", d.name())).unwrap(),
                (d.uid(), d.uid())
            );
        }
        assert!(config_owner("config/mystery.json").is_err());
        assert!(config_owner("elsewhere/egress.json").is_err());
    }

    #[test]
    fn written_files_get_owner_and_mode_and_replace_what_was_there() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pack-exec.json");
        let mut owners = Owners::required();
        owners
            .write(&path, b"{}", (10005, 10005), 0o400)
            .expect("the tests run as root");
        assert_eq!(owner_mode(&path), (10005, 10005, 0o400));
        owners.write(&path, b"{\"a\":1}", ROOT, 0o400).unwrap();
        assert_eq!(owner_mode(&path), (0, 0, 0o400));
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}");
        assert!(!tmp.path().join(".pack-exec.json.tmp").exists());
        let public = tmp.path().join("ca.crt");
        write_public(&public, b"one").unwrap();
        write_public(&public, b"two").unwrap();
        assert_eq!(owner_mode(&public).2, 0o444);
        assert_eq!(std::fs::read(&public).unwrap(), b"two");
        let dir = tmp.path().join("secrets");
        owners.mkdir(&dir, ROOT, 0o700).unwrap();
        assert_eq!(owner_mode(&dir), (0, 0, 0o700));
        assert_eq!(owners.note(), None);
    }

    #[test]
    fn a_refused_chown_fails_up_and_is_a_note_for_render() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("egress.json");
        std::fs::write(&path, "{}").unwrap();
        let refuse = |_: &Path, _: (u32, u32)| {
            Err(std::io::Error::from_raw_os_error(1 /* EPERM */))
        };
        let err = Owners::required()
            .give_with(&path, (10001, 10001), 0o400, refuse)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("must run as root to give each daemon's files to its uid"),
            "{text}"
        );
        assert!(
            text.contains("10001:10001") && text.contains("egress.json"),
            "{text}"
        );
        assert!(matches!(err, ControlError::NotRoot { .. }));
        let mut lenient = Owners::best_effort();
        lenient
            .give_with(&path, (10001, 10001), 0o400, refuse)
            .unwrap();
        assert_eq!(owner_mode(&path).2, 0o400, "the mode is applied anyway");
        assert!(lenient.note().unwrap().contains("not running as root"));
    }

    #[test]
    fn recording_chowns_nothing_and_the_record_survives_a_reload() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let mut owners = Owners::recording();
        owners.mkdir(&dir.join("secrets"), ROOT, 0o700).unwrap();
        std::fs::create_dir_all(dir.join("config")).unwrap();
        owners
            .write(
                &dir.join("config/egress.json"),
                b"{}",
                (10001, 10001),
                0o400,
            )
            .unwrap();
        let refuse =
            |_: &Path, _: (u32, u32)| -> std::io::Result<()> { panic!("recording must not chown") };
        std::fs::write(dir.join("token"), "t").unwrap();
        owners
            .give_with(&dir.join("token"), (7, 8), 0o400, refuse)
            .unwrap();
        owners.save(dir).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let (uid, _, mode) = owner_mode(&dir.join("config/egress.json"));
        assert_eq!(
            (uid, mode),
            (me, 0o400),
            "kept as the caller's, mode applied"
        );
        let record = load_record(dir).unwrap();
        assert_eq!(record[Path::new("config/egress.json")], (10001, 10001));
        assert_eq!(record[Path::new("token")], (7, 8));
        assert_eq!(record[Path::new("secrets")], ROOT);
        assert!(
            !record.keys().any(|p| p.to_string_lossy().contains(".tmp")),
            "temp files are not recorded: {record:?}"
        );
        // Bind delivery removes a stale record.
        Owners::required().save(dir).unwrap();
        assert!(load_record(dir).unwrap().is_empty());
    }
}
