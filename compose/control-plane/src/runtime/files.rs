//! How a bottle's files — daemon configs, secrets, the CA, the manifest's packs — reach its
//! containers ([`FileDelivery`], `BOT_BOTTLE_FILES`).
//!
//! - **`bind`** (the default on a host): bind mounts of the project directory. The Docker
//!   daemon resolves bind sources on *its* host, so the control plane must see the state
//!   directory at the same path (true on the host; a container needs `-v DIR:DIR`), and file
//!   owners are set with chown (root).
//! - **`volumes`** (the control-plane image's default): the Engine backend packs the files of
//!   each mounted directory into a tar archive — owners and modes written in the archive's
//!   headers, from the project directory's `owners.json` ([`crate::owners`]) — and extracts
//!   it through the Engine API (`PUT /containers/{id}/archive`) into a volume named after the
//!   archive's hash, which the service mounts read-only. Nothing depends on host paths, and
//!   no chown is needed, so the control plane can run as a container with a named volume for
//!   its state and a non-root user.
//!
//! Why content-named volumes: a volume's contents never change once filled, so a running
//! container never sees a half-written file, an unchanged bottle reuses its volumes on the
//! next `up` without a copy, and a changed file makes a new volume (and so a recreated
//! container, as its mounts differ). Filling goes through a created-never-started "loader"
//! container that mounts the volume: Docker creates the volume in the same call that creates
//! the loader, and the loader is removed only once the archive is in, so a volume without
//! its loader is complete, and one with a leftover loader (a control plane killed mid-fill)
//! is emptied and filled again ([`super::engine`]).
//!
//! Grouping: a volume per directory holding bind targets (`/etc/sidecars`,
//! `/run/secrets/bundle`, …), a directory under another one merged into it (the CA
//! certificate at `/etc/sidecars/ca/ca.crt` goes into the `/etc/sidecars` volume), so volumes
//! never nest; a directory bind (the manifest's packs) becomes a subtree.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use bottle_compose::model::Mount;
use sha2::{Digest, Sha256};

use super::RuntimeError;

/// Environment variable choosing the delivery.
pub const FILES_VAR: &str = "BOT_BOTTLE_FILES";

/// Largest archive of one files volume: the bundle's configs, certificates and the manifest's
/// packs are small; anything near this is a mistake worth a clear error.
pub const MAX_ARCHIVE_BYTES: usize = 64 * 1024 * 1024;

/// Prefix of a files volume's name after the project's (`<project>_files-<hash>`).
pub const VOLUME_INFIX: &str = "_files-";

/// How a bottle's files reach its containers (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileDelivery {
    /// Bind mounts of the project directory, owners set with chown.
    #[default]
    Bind,
    /// Read-only volumes filled through the Engine API, owners in the archive.
    Volumes,
}

impl FileDelivery {
    /// The delivery `BOT_BOTTLE_FILES` names: `bind` (or unset/empty) or `volumes`.
    pub fn from_value(value: Option<&str>) -> Result<FileDelivery, RuntimeError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("bind") => Ok(FileDelivery::Bind),
            Some("volumes") => Ok(FileDelivery::Volumes),
            Some(_) => Err(RuntimeError::Setting(format!(
                "{FILES_VAR}={:?}: use `bind` (bind mounts of the state directory, the default) or `volumes` (volumes filled through the Docker Engine API; needs the Engine backend)",
                value.unwrap_or_default()
            ))),
        }
    }

    /// `bind` or `volumes`.
    pub fn name(self) -> &'static str {
        match self {
            FileDelivery::Bind => "bind",
            FileDelivery::Volumes => "volumes",
        }
    }
}

/// Who owns each file inside the bottle, by path relative to the project directory (what
/// [`crate::owners::Owners`] recorded); files not named are `0:0`.
pub type OwnerMap = HashMap<PathBuf, (u32, u32)>;

/// One files volume of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVolume {
    /// The volume's name: `<project>_files-<hash of target and archive>`.
    pub name: String,
    /// Where the service mounts it (read-only).
    pub target: String,
    /// The tar archive to extract into it.
    pub archive: Vec<u8>,
}

/// One entry of a volume's archive.
#[derive(Debug)]
enum Entry {
    Dir {
        mode: u32,
        owner: (u32, u32),
    },
    File {
        data: Vec<u8>,
        mode: u32,
        owner: (u32, u32),
    },
    Symlink {
        target: PathBuf,
    },
}

/// A service's bind mounts (of `mounts`; `tmpfs` are its tmpfs specs) as files volumes;
/// `dir` is the (absolute) project directory, `resolve` turns a mount source into a path.
/// Mounts that are not binds are left alone.
pub fn file_volumes(
    project: &str,
    mounts: &[Mount],
    tmpfs: &[String],
    dir: &Path,
    owners: &OwnerMap,
    resolve: impl Fn(&str) -> PathBuf,
) -> Result<Vec<FileVolume>, RuntimeError> {
    let binds: Vec<(PathBuf, PathBuf)> = mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Bind { source, target, .. } => Some((resolve(source), PathBuf::from(target))),
            Mount::Volume { .. } => None,
        })
        .collect();
    let roots = roots(binds.iter().map(|(_, t)| t.as_path()));
    // Mount points inside a root (volumes, tmpfs) must exist in the read-only volume.
    let other_targets: Vec<PathBuf> = mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Volume { target, .. } => Some(PathBuf::from(target)),
            Mount::Bind { .. } => None,
        })
        .chain(
            tmpfs
                .iter()
                .map(|t| PathBuf::from(t.split(':').next().unwrap_or_default())),
        )
        .collect();
    let mut volumes = Vec::new();
    for root in roots {
        let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
        for (source, target) in binds.iter().filter(|(_, t)| t.starts_with(&root)) {
            let rel = target
                .strip_prefix(&root)
                .map_err(|_| {
                    RuntimeError::Files(format!(
                        "{} is not under {}",
                        target.display(),
                        root.display()
                    ))
                })?
                .to_path_buf();
            add_source(&mut entries, source, &rel, dir, owners)?;
        }
        for inner in &other_targets {
            if let Ok(rel) = inner.strip_prefix(&root) {
                if !rel.as_os_str().is_empty() {
                    add_parents(&mut entries, &rel.join("x"));
                    entries.entry(rel.to_path_buf()).or_insert(Entry::Dir {
                        mode: 0o755,
                        owner: (0, 0),
                    });
                }
            }
        }
        let archive = archive(&entries).map_err(|e| {
            RuntimeError::Files(format!(
                "cannot archive the files for {}: {e}",
                root.display()
            ))
        })?;
        if archive.len() > MAX_ARCHIVE_BYTES {
            return Err(RuntimeError::Files(format!(
                "the files mounted at {} come to {} bytes, over the {MAX_ARCHIVE_BYTES}-byte limit of a files volume: make the manifest's packs smaller",
                root.display(),
                archive.len()
            )));
        }
        let mut hash = Sha256::new();
        hash.update(root.as_os_str().as_encoded_bytes());
        hash.update([0]);
        hash.update(&archive);
        let digest = hex::encode(hash.finalize());
        volumes.push(FileVolume {
            name: format!("{project}{VOLUME_INFIX}{}", &digest[..16]),
            target: root.display().to_string(),
            archive,
        });
    }
    Ok(volumes)
}

/// The directories that hold the bind targets, none inside another.
fn roots<'a>(targets: impl Iterator<Item = &'a Path>) -> Vec<PathBuf> {
    let mut parents: Vec<PathBuf> = targets
        .filter_map(|t| t.parent().map(Path::to_path_buf))
        .collect();
    parents.sort();
    parents.dedup();
    let mut roots: Vec<PathBuf> = Vec::new();
    for p in parents {
        // Sorted, so an ancestor comes before its descendants.
        if !roots.iter().any(|r| p.starts_with(r)) {
            roots.push(p);
        }
    }
    roots
}

/// Add `source` (a file, or a directory tree) at `rel`, with its parents.
fn add_source(
    entries: &mut BTreeMap<PathBuf, Entry>,
    source: &Path,
    rel: &Path,
    dir: &Path,
    owners: &OwnerMap,
) -> Result<(), RuntimeError> {
    let io =
        |e: std::io::Error| RuntimeError::Files(format!("cannot read {}: {e}", source.display()));
    add_parents(entries, rel);
    // Followed, as Docker follows a bind source that is a symlink (a credential file may be).
    let meta = std::fs::metadata(source).map_err(io)?;
    let owner = |path: &Path| {
        path.strip_prefix(dir)
            .ok()
            .and_then(|r| owners.get(r))
            .copied()
            .unwrap_or((0, 0))
    };
    if meta.is_dir() {
        entries.insert(
            rel.to_path_buf(),
            Entry::Dir {
                mode: meta.permissions().mode() & 0o7777,
                owner: owner(source),
            },
        );
        let mut children: Vec<_> = std::fs::read_dir(source)
            .map_err(io)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let path = child.path();
            let child_rel = rel.join(child.file_name());
            let meta = std::fs::symlink_metadata(&path).map_err(io)?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).map_err(io)?;
                entries.insert(child_rel, Entry::Symlink { target });
            } else {
                add_source(entries, &path, &child_rel, dir, owners)?;
            }
        }
    } else if meta.is_file() {
        let data = std::fs::read(source).map_err(io)?;
        entries.insert(
            rel.to_path_buf(),
            Entry::File {
                data,
                mode: meta.mode() & 0o7777,
                owner: owner(source),
            },
        );
    } else {
        return Err(RuntimeError::Files(format!(
            "{} is neither a file nor a directory: it cannot go into a files volume",
            source.display()
        )));
    }
    Ok(())
}

/// The directories above `rel` (not `rel` itself), `0755 0:0` unless already there.
fn add_parents(entries: &mut BTreeMap<PathBuf, Entry>, rel: &Path) {
    let mut path = PathBuf::new();
    let components: Vec<Component> = rel.components().collect();
    for c in components.iter().take(components.len().saturating_sub(1)) {
        path.push(c);
        entries.entry(path.clone()).or_insert(Entry::Dir {
            mode: 0o755,
            owner: (0, 0),
        });
    }
}

/// The entries as a tar archive, in path order, with fixed times (so equal contents give
/// equal archives, and equal volume names).
fn archive(entries: &BTreeMap<PathBuf, Entry>) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut root = tar::Header::new_gnu();
    root.set_entry_type(tar::EntryType::Directory);
    root.set_mode(0o755);
    root.set_uid(0);
    root.set_gid(0);
    root.set_mtime(0);
    root.set_size(0);
    builder.append_data(&mut root, "./", std::io::empty())?;
    for (path, entry) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        match entry {
            Entry::Dir { mode, owner } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_uid(owner.0.into());
                header.set_gid(owner.1.into());
                header.set_size(0);
                builder.append_data(&mut header, path, std::io::empty())?;
            }
            Entry::File { data, mode, owner } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_uid(owner.0.into());
                header.set_gid(owner.1.into());
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, &data[..])?;
            }
            Entry::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_uid(0);
                header.set_gid(0);
                header.set_size(0);
                builder.append_link(&mut header, path, target)?;
            }
        }
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn of(
        mounts: &[Mount],
        dir: &Path,
        owners: &OwnerMap,
    ) -> Result<Vec<FileVolume>, RuntimeError> {
        file_volumes(
            "p",
            mounts,
            &["/tmp:size=1m".to_string()],
            dir,
            owners,
            |src| dir.join(src),
        )
    }

    fn bind(source: &str, target: &str) -> Mount {
        Mount::Bind {
            source: source.into(),
            target: target.into(),
            read_only: true,
        }
    }

    /// (path, uid, gid, mode, contents) of every entry of an archive.
    fn listing(archive: &[u8]) -> Vec<(String, u64, u64, u32, String)> {
        let mut a = tar::Archive::new(archive);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut text = String::new();
                e.read_to_string(&mut text).unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mode().unwrap(),
                    text,
                )
            })
            .collect()
    }

    fn project_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("config")).unwrap();
        std::fs::create_dir_all(p.join("ca")).unwrap();
        std::fs::create_dir_all(p.join("secrets")).unwrap();
        std::fs::create_dir_all(p.join("packs/cmd.x")).unwrap();
        std::fs::write(p.join("config/pipelock.json"), "{}").unwrap();
        std::fs::set_permissions(
            p.join("config/pipelock.json"),
            std::fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        std::fs::write(p.join("ca/ca.crt"), "CERT").unwrap();
        std::fs::write(p.join("secrets/ca.key"), "KEY").unwrap();
        std::fs::set_permissions(
            p.join("secrets/ca.key"),
            std::fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        std::fs::write(p.join("packs/cmd.x/pack.json"), "{}").unwrap();
        std::os::unix::fs::symlink("pack.json", p.join("packs/cmd.x/link")).unwrap();
        dir
    }

    fn volumes_of(dir: &Path, owners: &OwnerMap) -> Vec<FileVolume> {
        let mounts = [
            bind("./config/pipelock.json", "/etc/sidecars/pipelock.json"),
            bind("./ca/ca.crt", "/etc/sidecars/ca/ca.crt"),
            bind("./packs", "/etc/sidecars/packs"),
            bind("./secrets/ca.key", "/run/secrets/bundle/ca.key"),
            Mount::Volume {
                source: "state".into(),
                target: "/etc/sidecars/packs/state".into(),
                read_only: false,
            },
        ];
        of(&mounts, dir, owners).unwrap()
    }

    #[test]
    fn one_volume_per_directory_with_nested_ones_merged_and_owners_from_the_record() {
        let dir = project_dir();
        let owners = OwnerMap::from([(PathBuf::from("config/pipelock.json"), (10002, 10002))]);
        let volumes = volumes_of(dir.path(), &owners);
        let targets: Vec<&str> = volumes.iter().map(|v| v.target.as_str()).collect();
        assert_eq!(targets, ["/etc/sidecars", "/run/secrets/bundle"]);
        let etc = listing(&volumes[0].archive);
        let find = |name: &str| {
            etc.iter()
                .find(|e| e.0 == name)
                .unwrap_or_else(|| panic!("{name} in {etc:?}"))
                .clone()
        };
        assert_eq!(
            find("pipelock.json"),
            ("pipelock.json".into(), 10002, 10002, 0o400, "{}".into())
        );
        assert_eq!(find("ca/ca.crt").1, 0, "not recorded: root");
        assert_eq!(find("ca/ca.crt").4, "CERT");
        assert_eq!(find("packs/cmd.x/pack.json").4, "{}");
        // The volume mounted inside gets its mount point.
        assert_eq!(find("packs/state").3, 0o755);
        let mut a = tar::Archive::new(&volumes[0].archive[..]);
        let link = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().ends_with("link"))
            .unwrap();
        assert_eq!(
            link.link_name().unwrap().unwrap().display().to_string(),
            "pack.json"
        );
        let secrets = listing(&volumes[1].archive);
        assert!(secrets
            .iter()
            .any(|e| e.0 == "ca.key" && e.1 == 0 && e.3 == 0o400 && e.4 == "KEY"));
    }

    #[test]
    fn the_name_follows_the_contents_and_nothing_else() {
        let dir = project_dir();
        let a = volumes_of(dir.path(), &OwnerMap::new());
        let b = volumes_of(dir.path(), &OwnerMap::new());
        assert_eq!(a, b, "same files, same archives and names");
        assert!(a[0].name.starts_with("p_files-"));
        std::fs::write(dir.path().join("ca/ca.crt"), "OTHER").unwrap();
        let c = volumes_of(dir.path(), &OwnerMap::new());
        assert_ne!(a[0].name, c[0].name, "a changed file is a new volume");
        assert_eq!(a[1].name, c[1].name, "the other volume is untouched");
        let owned = volumes_of(
            dir.path(),
            &OwnerMap::from([(PathBuf::from("secrets/ca.key"), (5, 5))]),
        );
        assert_ne!(
            a[1].name, owned[1].name,
            "an owner change is a new volume too"
        );
    }

    #[test]
    fn a_missing_source_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let err = of(
            &[bind("./nope.json", "/etc/sidecars/nope.json")],
            dir.path(),
            &OwnerMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("nope.json"), "{err}");
    }

    #[test]
    fn the_setting_takes_two_values() {
        assert_eq!(FileDelivery::from_value(None).unwrap(), FileDelivery::Bind);
        assert_eq!(
            FileDelivery::from_value(Some(" Volumes ")).unwrap(),
            FileDelivery::Volumes
        );
        assert_eq!(
            FileDelivery::from_value(Some("bind")).unwrap(),
            FileDelivery::Bind
        );
        let err = FileDelivery::from_value(Some("nfs"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("BOT_BOTTLE_FILES") && err.contains("volumes"),
            "{err}"
        );
    }
}
