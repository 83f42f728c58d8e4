//! Where a manifest (and its packs) come from: a file on disk, or the example bottle embedded
//! in the binary (`examples/bottle.toml` and the repository's `packs/`), so `control-plane up`
//! works from any directory.

use std::path::{Component, Path, PathBuf};

use bottle_compose::Manifest;

use crate::api::ControlError;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_packs.rs"));
}

/// The example bottle's manifest, as shipped in `examples/bottle.toml`.
pub const EXAMPLE_MANIFEST: &str = include_str!("../../../examples/bottle.toml");

/// A manifest's origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A manifest file; pack paths are relative to its directory.
    File(PathBuf),
    /// The embedded example (`examples/bottle.toml`); pack paths resolve into the embedded
    /// copy of the repository's `packs/`.
    Example,
    /// A manifest sent over the HTTP API. There is no directory to resolve pack paths against,
    /// so they resolve like the example's: into the embedded `packs/` (`../packs/cmd.upper`
    /// or `packs/cmd.upper`).
    Inline {
        /// The manifest text.
        text: String,
        /// `Some("request.json")`/`Some("request.toml")` from the request's content type;
        /// `None` sniffs (a leading `{` is JSON).
        name: Option<String>,
    },
}

/// A parsed manifest with its origin.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated manifest.
    pub manifest: Manifest,
    /// Its text, kept in the project dir for reference.
    pub text: String,
    /// Where it came from.
    pub source: Source,
}

impl Source {
    /// How `ps`/records describe the source.
    pub fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Example => "embedded example (examples/bottle.toml)".to_string(),
            Source::Inline { .. } => "HTTP API request".to_string(),
        }
    }

    /// Read and validate the manifest.
    pub fn load(self) -> Result<Loaded, ControlError> {
        let (text, name) = match &self {
            Source::File(path) => (
                std::fs::read_to_string(path).map_err(|e| {
                    ControlError::Usage(format!("cannot read manifest {}: {e}", path.display()))
                })?,
                path.file_name().and_then(|n| n.to_str()).map(String::from),
            ),
            Source::Example => (
                EXAMPLE_MANIFEST.to_string(),
                Some("examples/bottle.toml".to_string()),
            ),
            Source::Inline { text, name } => (text.clone(), name.clone()),
        };
        let manifest = Manifest::parse(&text, name.as_deref())?;
        Ok(Loaded {
            manifest,
            text,
            source: self,
        })
    }

    /// Copy the pack directory `pack` (as written in the manifest) to `dest`.
    pub fn copy_pack(&self, pack: &str, dest: &Path) -> Result<(), ControlError> {
        match self {
            Source::File(manifest) => {
                let base = manifest.parent().unwrap_or(Path::new("."));
                let src = base.join(pack);
                if !src.is_dir() {
                    return Err(ControlError::Usage(format!(
                        "pack {pack:?}: {} is not a directory",
                        src.display()
                    )));
                }
                copy_dir(&src, dest)
            }
            Source::Example | Source::Inline { .. } => {
                let rel = normalize(&Path::new("examples").join(pack));
                // `packs/x` from an API manifest means the same as the example's `../packs/x`.
                let rel = if rel.starts_with("examples/packs") {
                    rel.strip_prefix("examples")
                        .map(Path::to_path_buf)
                        .unwrap_or(rel)
                } else {
                    rel
                };
                let prefix = rel
                    .strip_prefix("packs")
                    .ok()
                    .map(|p| p.to_string_lossy().to_string())
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| {
                        ControlError::Usage(format!(
                            "pack {pack:?} is not under the repository's packs/"
                        ))
                    })?;
                let mut found = false;
                for (path, contents, mode) in embedded::PACK_FILES {
                    let Some(inner) = path.strip_prefix(&format!("{prefix}/")) else {
                        continue;
                    };
                    found = true;
                    let target = dest.join(inner);
                    if let Some(parent) = target.parent() {
                        mkdir(parent)?;
                    }
                    write_file(&target, contents, *mode)?;
                }
                if found {
                    Ok(())
                } else {
                    Err(ControlError::Usage(format!(
                        "pack {pack:?} is not embedded in this binary (the repository's packs/ had no {prefix}/ when it was built)"
                    )))
                }
            }
        }
    }
}

/// Lexical normalization (`examples/../packs/x` → `packs/x`): no filesystem access, so it
/// works for paths that do not exist (yet) or exist only on the Docker host.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Create a directory (and parents) readable by the containers' non-root user.
pub fn mkdir(dir: &Path) -> Result<(), ControlError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| ControlError::io("cannot create", dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| ControlError::io("cannot chmod", dir, e))
}

/// Write a world-readable file (group/other get read, and execute where the owner has it,
/// whatever the umask): the packs, which pack-exec's and the handlers' uids read, and the
/// files no container reads (the manifest copy, `compose.yaml`). Daemon configs and secrets
/// go through [`crate::owners`] instead.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), ControlError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).map_err(|e| ControlError::io("cannot write", path, e))?;
    let mode = if mode & 0o100 != 0 { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ControlError::io("cannot chmod", path, e))
}

/// Copy a directory tree (regular files and directories; symlinks are refused).
pub fn copy_dir(src: &Path, dest: &Path) -> Result<(), ControlError> {
    use std::os::unix::fs::PermissionsExt;
    mkdir(dest)?;
    let entries = std::fs::read_dir(src).map_err(|e| ControlError::io("cannot read", src, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ControlError::io("cannot read", src, e))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| ControlError::io("cannot stat", &path, e))?;
        let target = dest.join(entry.file_name());
        if meta.is_dir() {
            copy_dir(&path, &target)?;
        } else if meta.is_file() {
            let bytes =
                std::fs::read(&path).map_err(|e| ControlError::io("cannot read", &path, e))?;
            write_file(&target, &bytes, meta.permissions().mode())?;
        } else {
            return Err(ControlError::Usage(format!(
                "{}: only regular files and directories can be in a pack",
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_manifest_is_valid() {
        let loaded = Source::Example.load().unwrap();
        assert_eq!(loaded.manifest.slug, "example");
        assert_eq!(loaded.manifest.packs.len(), 3);
    }

    #[test]
    fn embedded_packs_are_copied_with_exec_bits() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let m = Source::Example.load().unwrap().manifest;
        for pack in &m.packs {
            let name = pack.rsplit('/').next().unwrap();
            Source::Example
                .copy_pack(pack, &tmp.path().join(name))
                .unwrap();
            assert!(
                tmp.path().join(name).join("helmdeck-pack.yaml").is_file(),
                "{pack}"
            );
        }
        let handler = tmp.path().join("cmd.upper/upper");
        let mode = std::fs::metadata(handler).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn normalize_resolves_parents() {
        assert_eq!(
            normalize(Path::new("examples/../packs/./x")),
            PathBuf::from("packs/x")
        );
    }

    #[test]
    fn missing_embedded_pack_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Source::Example
            .copy_pack("../packs/nope", tmp.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not embedded"), "{err}");
        let err = Source::Example
            .copy_pack("../elsewhere/x", tmp.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not under the repository's packs/"), "{err}");
    }
}
