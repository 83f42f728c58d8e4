//! Writing a rendered bottle into its project directory: the manifest as given, each config
//! file (owned by the daemon that reads it, `0400`: see [`crate::owners`]), the packs
//! (world-readable: pack-exec and the handlers' uids read them), and the `secrets/` directory.
//! Each config file is rewritten in place (the running sidecars container bind-mounts it by
//! inode, so that is the only way a reload reaches it) and a config no longer rendered is
//! removed; `packs/` from an earlier render is replaced, not merged; `secrets/` is kept (the
//! CA key and the operator token live across re-ups).

use std::path::Path;

use bottle_compose::manifest::Format;
use bottle_compose::model::Mount;
use bottle_compose::Bundle;

use crate::api::ControlError;
use crate::owners::{config_owner, Owners};
use crate::source::{mkdir, write_file, Loaded};

/// Write `bundle` (rendered from `loaded`) into `dir`.
pub fn write_project(
    bundle: &Bundle,
    loaded: &Loaded,
    dir: &Path,
    owners: &mut Owners,
) -> Result<(), ControlError> {
    mkdir(dir)?;
    let packs_dir = dir.join(bottle_compose::render::PACKS_DIR);
    match std::fs::remove_dir_all(&packs_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ControlError::io("cannot remove", &packs_dir, e)),
    }
    crate::secrets::ensure_dir(dir, owners)?;
    write_manifest(loaded, dir)?;
    write_configs(bundle, dir, owners)?;
    if let Some(profile) = &bundle.seccomp_profile {
        write_file(&dir.join(&profile.path), profile.contents.as_bytes(), 0o644)?;
    }
    if let Some(packs) = &bundle.packs {
        mkdir(&dir.join(bottle_compose::render::PACKS_DIR))?;
        for pack in packs {
            loaded
                .source
                .copy_pack(&pack.source, &dir.join(&pack.dest))?;
        }
    }
    Ok(())
}

/// The manifest as given, kept beside the project (`manifest.toml` or `manifest.json`, the
/// other removed): what `reload` re-renders a bottle made through the API from.
pub fn write_manifest(loaded: &Loaded, dir: &Path) -> Result<(), ControlError> {
    let (name, other) = match Format::detect(None, &loaded.text) {
        Format::Json => (MANIFEST_JSON, MANIFEST_TOML),
        Format::Toml => (MANIFEST_TOML, MANIFEST_JSON),
    };
    write_file(&dir.join(name), loaded.text.as_bytes(), 0o644)?;
    remove_if_present(&dir.join(other))
}

/// Names of the kept manifest in a project directory.
pub const MANIFEST_TOML: &str = "manifest.toml";
/// See [`MANIFEST_TOML`].
pub const MANIFEST_JSON: &str = "manifest.json";

/// The manifest [`write_manifest`] kept in `dir`: its text and file name.
pub fn kept_manifest(dir: &Path) -> Result<(String, String), ControlError> {
    for name in [MANIFEST_TOML, MANIFEST_JSON] {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((text, name.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ControlError::io("cannot read", &path, e)),
        }
    }
    Err(ControlError::Usage(format!(
        "{} holds no manifest (the bottle was not started by this control plane): pass the manifest to reload",
        dir.display()
    )))
}

/// Every config file of `bundle` (owned by its reader, `0400`), each rewritten in place when
/// it exists ([`Owners::overwrite`]), and every other file of `config/` removed.
pub fn write_configs(bundle: &Bundle, dir: &Path, owners: &mut Owners) -> Result<(), ControlError> {
    let config_dir = dir.join(bottle_compose::configs::CONFIG_DIR);
    mkdir(&config_dir)?;
    for file in &bundle.files {
        let owner = config_owner(&file.path)?;
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        owners.overwrite(&path, file.contents.as_bytes(), owner, 0o400)?;
    }
    let entries = std::fs::read_dir(&config_dir)
        .map_err(|e| ControlError::io("cannot read", &config_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ControlError::io("cannot read", &config_dir, e))?;
        let path = entry.path();
        let rendered = bundle.files.iter().any(|f| dir.join(&f.path) == path);
        if !rendered && entry.file_type().is_ok_and(|t| t.is_file()) {
            remove_if_present(&path)?;
        }
    }
    Ok(())
}

/// Config files whose rendered contents differ from what `dir` holds (or that it lacks), by
/// whether a running bottle can take them on reload.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigChanges {
    /// Changed configs of daemons that re-read theirs on reload (pipelock, egress).
    pub reloadable: Vec<String>,
    /// Changed configs read only at start (init's, the DNS responder's, the other daemons'),
    /// and configs the bottle did not have.
    pub restart: Vec<String>,
}

impl ConfigChanges {
    /// What `bundle` would change in `dir`'s config files.
    pub fn between(bundle: &Bundle, dir: &Path) -> Result<ConfigChanges, ControlError> {
        let mut changes = ConfigChanges::default();
        for file in &bundle.files {
            let path = dir.join(&file.path);
            // A config new to the bottle belongs to a daemon new to it: only a start runs it.
            let (same, existed) = match std::fs::read(&path) {
                Ok(old) => (old == file.contents.as_bytes(), true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (false, false),
                Err(e) => return Err(ControlError::io("cannot read", &path, e)),
            };
            if !same {
                let list = if file.reloadable && existed {
                    &mut changes.reloadable
                } else {
                    &mut changes.restart
                };
                list.push(file.path.clone());
            }
        }
        Ok(changes)
    }
}

fn remove_if_present(path: &Path) -> Result<(), ControlError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ControlError::io("cannot remove", path, e)),
    }
}

/// Every bind source inside the project directory that the model mounts must exist before
/// the runtime sees the model: Docker creates a missing source as an empty *directory*
/// (owned by root), which would hide the mistake and leave a daemon without its file.
pub fn check_bind_sources(bundle: &Bundle, dir: &Path) -> Result<(), ControlError> {
    for (service, svc) in &bundle.project.services {
        for mount in &svc.volumes {
            let Mount::Bind { source, target, .. } = mount else {
                continue;
            };
            if Path::new(source).is_absolute() {
                // The operator's credential files: checked by `crate::credentials`.
                continue;
            }
            let path = dir.join(source.trim_start_matches("./"));
            if !path.exists() {
                return Err(ControlError::io(
                    "missing from the project directory",
                    &path,
                    std::io::Error::other(format!(
                        "service {service} mounts it at {target}, but the control plane did not write it (the renderer and the control plane disagree about the project layout)"
                    )),
                ));
            }
        }
    }
    Ok(())
}
