//! A helmdeck marketplace catalog: `index.yaml` (`catalog_version: v1`, `packs[]` of `name`,
//! `version`, `path`, …) at the root of a directory — or of a tarball of one — with each pack
//! under its `path` (`packs/<name>/`). `control-plane packs install SLUG --catalog DIR NAME`
//! installs one named pack from it, as published.
//!
//! The index is the catalog's claim; the pack's own manifest is what runs. So the entry's
//! `version` and the manifest's name and version must agree, and `path` must stay inside the
//! catalog (relative, no `..`): a catalog cannot make the CLI archive a directory outside it.

use std::path::{Component, Path, PathBuf};

use bottle_spec::pack_manifest::{CATALOG_INDEX, CATALOG_VERSION};
use serde::Deserialize;

use crate::api::ControlError;

/// The index, as far as the bundle reads it (other fields are the catalog's own).
#[derive(Debug, Deserialize)]
struct Index {
    catalog_version: serde_json::Value,
    #[serde(default)]
    packs: Vec<Entry>,
}

/// One pack of the index.
#[derive(Debug, Deserialize)]
struct Entry {
    name: String,
    #[serde(default)]
    version: Option<serde_json::Value>,
    path: String,
}

/// A catalog opened for reading: its root directory (a tarball is unpacked into a private
/// temp dir, removed when this is dropped).
#[derive(Debug)]
pub struct Catalog {
    root: PathBuf,
    _unpacked: Option<tempfile::TempDir>,
}

impl Catalog {
    /// Open the catalog at `path`: a directory holding `index.yaml`, or a tar / tar.gz of one
    /// (the index at the archive's root or in its single top-level directory).
    pub fn open(path: &Path) -> Result<Catalog, ControlError> {
        if path.is_dir() {
            return Ok(Catalog {
                root: path.to_path_buf(),
                _unpacked: None,
            });
        }
        if !path.is_file() {
            return Err(ControlError::Usage(format!(
                "catalog {}: no such directory or tarball",
                path.display()
            )));
        }
        let dir = tempfile::tempdir().map_err(|e| ControlError::io("cannot create", path, e))?;
        unpack(path, dir.path())?;
        let root = if dir.path().join(CATALOG_INDEX).is_file() {
            dir.path().to_path_buf()
        } else {
            single_subdir(dir.path()).unwrap_or_else(|| dir.path().to_path_buf())
        };
        Ok(Catalog {
            root,
            _unpacked: Some(dir),
        })
    }

    /// The directory of the pack `name`, checked against its manifest.
    pub fn pack_dir(&self, name: &str) -> Result<PathBuf, ControlError> {
        let index_path = self.root.join(CATALOG_INDEX);
        let text = std::fs::read(&index_path).map_err(|e| {
            ControlError::Usage(format!(
                "catalog {}: cannot read {CATALOG_INDEX}: {e}",
                self.root.display()
            ))
        })?;
        let index: Index = serde_norway::from_slice(&text).map_err(|e| {
            ControlError::Usage(format!(
                "{}: not a catalog index: {e}",
                index_path.display()
            ))
        })?;
        if text_of(&index.catalog_version) != CATALOG_VERSION {
            return Err(ControlError::Usage(format!(
                "{}: catalog_version {} is not supported (this bundle reads {CATALOG_VERSION})",
                index_path.display(),
                text_of(&index.catalog_version)
            )));
        }
        let Some(entry) = index.packs.iter().find(|e| e.name == name) else {
            let mut names: Vec<&str> = index.packs.iter().map(|e| e.name.as_str()).collect();
            names.sort_unstable();
            names.truncate(30);
            return Err(ControlError::Usage(format!(
                "the catalog has no pack {name:?} (it has: {})",
                names.join(", ")
            )));
        };
        let rel = inside(&entry.path).ok_or_else(|| {
            ControlError::Usage(format!(
                "{}: pack {name}: path {:?} leaves the catalog (it must be relative, without `..`)",
                index_path.display(),
                entry.path
            ))
        })?;
        let dir = self.root.join(rel);
        if !dir.is_dir() {
            return Err(ControlError::Usage(format!(
                "{}: pack {name}: {} is not a directory",
                index_path.display(),
                dir.display()
            )));
        }
        let (manifest_name, manifest_version) = crate::packs::pack_identity(&dir)?;
        if manifest_name != entry.name {
            return Err(ControlError::Usage(format!(
                "{}: the catalog lists {:?} at {}, but its manifest names {manifest_name:?}",
                index_path.display(),
                entry.name,
                entry.path
            )));
        }
        if let Some(listed) = entry.version.as_ref().map(text_of) {
            if listed != manifest_version {
                return Err(ControlError::Usage(format!(
                    "{}: the catalog lists {name} version {listed}, but its manifest says {manifest_version}",
                    index_path.display()
                )));
            }
        }
        Ok(dir)
    }
}

/// A YAML scalar as text (`v1`, or `1` for a number).
fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `path` when it is relative and has no `..` (`./` parts dropped).
fn inside(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn single_subdir(dir: &Path) -> Option<PathBuf> {
    let entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    match entries.as_slice() {
        [only] if only.file_type().is_ok_and(|t| t.is_dir()) => Some(only.path()),
        _ => None,
    }
}

/// Unpack a tar or tar.gz (by its magic) into `dest`; entries that would land outside `dest`
/// are refused by the tar crate's `unpack_in`.
fn unpack(archive: &Path, dest: &Path) -> Result<(), ControlError> {
    use std::io::Read;
    let bytes = std::fs::read(archive).map_err(|e| ControlError::io("cannot read", archive, e))?;
    let mut data = Vec::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut data)
            .map_err(|e| {
                ControlError::Usage(format!("{}: not a tar.gz: {e}", archive.display()))
            })?;
    } else {
        data = bytes;
    }
    let mut tar = tar::Archive::new(&data[..]);
    let entries = tar
        .entries()
        .map_err(|e| ControlError::Usage(format!("{}: not a tar: {e}", archive.display())))?;
    for entry in entries {
        let mut entry = entry
            .map_err(|e| ControlError::Usage(format!("{}: not a tar: {e}", archive.display())))?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            // Links could point out of the unpacked tree; a catalog needs none.
            continue;
        }
        let placed = entry.unpack_in(dest).map_err(|e| {
            ControlError::Usage(format!("{}: cannot unpack: {e}", archive.display()))
        })?;
        if !placed {
            return Err(ControlError::Usage(format!(
                "{}: an entry leaves the archive's root",
                archive.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog in the marketplace's layout.
    fn catalog(dir: &Path, index: &str) {
        std::fs::write(dir.join(CATALOG_INDEX), index).unwrap();
        let pack = dir.join("packs/upper");
        std::fs::create_dir_all(&pack).unwrap();
        std::fs::write(
            pack.join("helmdeck-pack.yaml"),
            "name: cmd.upper\nversion: v1\nhandler: {type: command, command: [./upper]}\n",
        )
        .unwrap();
        std::fs::write(pack.join("upper"), "#!/bin/sh\n").unwrap();
    }

    const INDEX: &str = "catalog_version: v1\npacks:\n  - name: cmd.upper\n    version: v1\n    path: packs/upper\n    description: x\n";

    #[test]
    fn a_named_pack_is_found_and_checked_against_its_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        catalog(tmp.path(), INDEX);
        let c = Catalog::open(tmp.path()).unwrap();
        assert_eq!(
            c.pack_dir("cmd.upper").unwrap(),
            tmp.path().join("packs/upper")
        );
        let err = c.pack_dir("cmd.nope").unwrap_err().to_string();
        assert!(
            err.contains("cmd.nope") && err.contains("cmd.upper"),
            "{err}"
        );
    }

    #[test]
    fn a_disagreeing_or_escaping_index_is_refused() {
        for (index, needle) in [
            (
                INDEX.replace("version: v1\n    path", "version: v2\n    path"),
                "version v2",
            ),
            (
                INDEX.replace("path: packs/upper", "path: ../packs/upper"),
                "leaves the catalog",
            ),
            (
                INDEX.replace("path: packs/upper", "path: /etc"),
                "leaves the catalog",
            ),
            (
                INDEX.replace("catalog_version: v1", "catalog_version: v9"),
                "v9 is not supported",
            ),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            catalog(tmp.path(), &index);
            let err = Catalog::open(tmp.path())
                .unwrap()
                .pack_dir("cmd.upper")
                .map(|p| p.display().to_string())
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        // The index names a directory whose manifest names another pack.
        let tmp = tempfile::tempdir().unwrap();
        catalog(
            tmp.path(),
            &INDEX.replace("name: cmd.upper", "name: cmd.other"),
        );
        let err = Catalog::open(tmp.path())
            .unwrap()
            .pack_dir("cmd.other")
            .unwrap_err();
        assert!(
            err.to_string().contains("its manifest names \"cmd.upper\""),
            "{err}"
        );
    }

    #[test]
    fn a_tarball_of_the_catalog_works_with_or_without_a_top_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("marketplace");
        std::fs::create_dir(&root).unwrap();
        catalog(&root, INDEX);
        for (strip, file) in [(false, "top.tgz"), (true, "flat.tar")] {
            let out = tmp.path().join(file);
            let mut b = tar::Builder::new(Vec::new());
            if strip {
                b.append_dir_all(".", &root).unwrap();
            } else {
                b.append_dir_all("marketplace", &root).unwrap();
            }
            let tar = b.into_inner().unwrap();
            let bytes = if file.ends_with(".tgz") {
                use std::io::Write;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&tar).unwrap();
                gz.finish().unwrap()
            } else {
                tar
            };
            std::fs::write(&out, bytes).unwrap();
            let c = Catalog::open(&out).unwrap();
            let dir = c.pack_dir("cmd.upper").unwrap();
            assert!(dir.join("helmdeck-pack.yaml").is_file(), "{file}");
        }
        assert!(Catalog::open(&tmp.path().join("missing")).is_err());
    }
}
