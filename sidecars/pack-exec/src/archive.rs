//! Safe extraction of a pack tarball (plain tar or tar.gz) into a staging directory.
//!
//! Every entry path is validated here instead of trusting `tar`'s unpack defaults: only
//! relative paths made of normal components are accepted (no absolute paths, no `..`), only
//! regular files and directories are created, hard links are accepted only when they point at a
//! file already extracted from the same archive (the content is copied), and symlinks, devices
//! and FIFOs are refused. Since no symlink is ever created in the staging directory, no later
//! entry can be redirected outside it. Files are created with `O_EXCL | O_NOFOLLOW`.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// Limits on what one archive may expand to (a 1 MiB gzip can hold gigabytes).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of file content.
    pub max_total_bytes: u64,
    /// Number of entries.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: 64 * 1024 * 1024,
            max_entries: 10_000,
        }
    }
}

/// Why an archive was refused. The message names the entry.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The body is not a readable tar (or tar.gz).
    #[error("the body is not a valid tar or tar.gz archive: {0}")]
    Malformed(String),
    /// An entry is not allowed (path escapes, link, device, ...).
    #[error("{0}")]
    Refused(String),
    /// Writing into the staging directory failed.
    #[error("cannot write the pack to the staging directory: {0}")]
    Io(#[from] io::Error),
}

/// Extract `body` (tar, or tar.gz detected by its magic bytes) into the empty directory `dest`.
pub fn extract(body: &[u8], dest: &Path, limits: Limits) -> Result<(), ArchiveError> {
    if body.is_empty() {
        return Err(ArchiveError::Malformed("the body is empty".into()));
    }
    if body.starts_with(&[0x1f, 0x8b]) {
        extract_from(flate2::read::GzDecoder::new(body), dest, limits)
    } else {
        extract_from(body, dest, limits)
    }
}

fn extract_from<R: Read>(reader: R, dest: &Path, limits: Limits) -> Result<(), ArchiveError> {
    let mut archive = tar::Archive::new(reader);
    let mut total: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| ArchiveError::Malformed(e.to_string()))?;
    for (count, entry) in entries.enumerate() {
        if count >= limits.max_entries {
            return Err(ArchiveError::Refused(format!(
                "the archive has more than {} entries",
                limits.max_entries
            )));
        }
        let mut entry = entry.map_err(|e| ArchiveError::Malformed(e.to_string()))?;
        let raw_path = entry
            .path()
            .map_err(|e| ArchiveError::Malformed(e.to_string()))?
            .into_owned();
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            continue;
        }
        let Some(rel) = safe_relative(&raw_path)? else {
            // `./` or an empty name: the archive root itself.
            if kind.is_dir() {
                continue;
            }
            return Err(ArchiveError::Refused(format!(
                "entry `{}` has an empty path",
                raw_path.display()
            )));
        };
        let target = dest.join(&rel);
        match kind {
            EntryType::Directory => make_dirs(dest, &rel)?,
            EntryType::Regular | EntryType::Continuous => {
                if let Some(parent) = rel.parent() {
                    make_dirs(dest, parent)?;
                }
                let exec = entry.header().mode().map(|m| m & 0o111 != 0).unwrap_or(false);
                let remaining = limits.max_total_bytes.saturating_sub(total);
                let mut file = create_file(&target, exec, &rel)?;
                let written = io::copy(&mut (&mut entry).take(remaining + 1), &mut file)
                    .map_err(|e| ArchiveError::Malformed(format!("reading `{}`: {e}", rel.display())))?;
                total += written;
                if total > limits.max_total_bytes {
                    return Err(ArchiveError::Refused(format!(
                        "the archive expands to more than {} bytes",
                        limits.max_total_bytes
                    )));
                }
                file.sync_all()?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| ArchiveError::Malformed(e.to_string()))?
                    .ok_or_else(|| {
                        ArchiveError::Refused(format!("hard link `{}` has no target", rel.display()))
                    })?
                    .into_owned();
                let link_rel = match safe_relative(&link) {
                    Ok(Some(p)) => p,
                    _ => {
                        return Err(ArchiveError::Refused(format!(
                            "hard link `{}` -> `{}` points outside the pack",
                            rel.display(),
                            link.display()
                        )))
                    }
                };
                let source = dest.join(&link_rel);
                let meta = fs::symlink_metadata(&source).map_err(|_| {
                    ArchiveError::Refused(format!(
                        "hard link `{}` -> `{}` does not point at a file earlier in the archive",
                        rel.display(),
                        link.display()
                    ))
                })?;
                if !meta.is_file() {
                    return Err(ArchiveError::Refused(format!(
                        "hard link `{}` -> `{}` does not point at a regular file",
                        rel.display(),
                        link.display()
                    )));
                }
                if let Some(parent) = rel.parent() {
                    make_dirs(dest, parent)?;
                }
                total += meta.len();
                if total > limits.max_total_bytes {
                    return Err(ArchiveError::Refused(format!(
                        "the archive expands to more than {} bytes",
                        limits.max_total_bytes
                    )));
                }
                let exec = meta.permissions().mode() & 0o111 != 0;
                let mut out = create_file(&target, exec, &rel)?;
                let mut input = fs::File::open(&source)?;
                io::copy(&mut input, &mut out)?;
                out.sync_all()?;
            }
            EntryType::Symlink => {
                let link = entry.link_name().ok().flatten().map(|l| l.display().to_string());
                return Err(ArchiveError::Refused(format!(
                    "symlink `{}` -> `{}` refused: packs may hold only regular files and directories",
                    rel.display(),
                    link.unwrap_or_default()
                )));
            }
            other => {
                return Err(ArchiveError::Refused(format!(
                    "entry `{}` has a refused type ({other:?}): packs may hold only regular files and directories",
                    rel.display()
                )))
            }
        }
    }
    Ok(())
}

/// The entry path as a relative path of normal components, or `None` for the root (`./`).
/// Absolute paths and `..` are refused, whatever they would resolve to.
pub fn safe_relative(path: &Path) -> Result<Option<PathBuf>, ArchiveError> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => {
                if part.to_str().is_none() {
                    return Err(ArchiveError::Refused(format!(
                        "entry `{}` has a name that is not UTF-8",
                        path.display()
                    )));
                }
                out.push(part)
            }
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(ArchiveError::Refused(format!(
                    "entry `{}` contains a `..` component",
                    path.display()
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::Refused(format!(
                    "entry `{}` is an absolute path",
                    path.display()
                )))
            }
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

/// Create `dest/rel` and its parents, each as a real directory (never through a symlink).
fn make_dirs(dest: &Path, rel: &Path) -> Result<(), ArchiveError> {
    let mut at = dest.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(ArchiveError::Refused(format!(
                    "`{}` is both a file and a directory in the archive",
                    rel.display()
                )))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new().mode(0o755).create(&at)?;
                // The umask may have narrowed it; handlers (another uid) must traverse it.
                fs::set_permissions(&at, fs::Permissions::from_mode(0o755))?;
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}

fn create_file(target: &Path, exec: bool, rel: &Path) -> Result<fs::File, ArchiveError> {
    let mode = if exec { 0o755 } else { 0o644 };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(target)
        .map_err(|err| {
            if err.kind() == io::ErrorKind::AlreadyExists {
                ArchiveError::Refused(format!(
                    "entry `{}` appears twice in the archive",
                    rel.display()
                ))
            } else {
                ArchiveError::Io(err)
            }
        })?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            safe_relative(Path::new("./a/b")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(safe_relative(Path::new("./")).unwrap(), None);
        assert!(safe_relative(Path::new("../x")).is_err());
        assert!(safe_relative(Path::new("a/../../x")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
    }
}
