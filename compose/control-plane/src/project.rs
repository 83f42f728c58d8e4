//! Writing a rendered bottle into its project directory: the manifest as given, each config
//! file (owned by the daemon that reads it, `0400`: see [`crate::owners`]), the packs
//! (world-readable: pack-exec and the handlers' uids read them), and the `secrets/` directory.
//! Stale `config/` and `packs/` from an earlier render are replaced, not merged; `secrets/`
//! is kept (the CA key and the operator token live across re-ups).

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
    for sub in [
        bottle_compose::configs::CONFIG_DIR,
        bottle_compose::render::PACKS_DIR,
    ] {
        let path = dir.join(sub);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ControlError::io("cannot remove", &path, e)),
        }
    }
    crate::secrets::ensure_dir(dir, owners)?;
    let manifest_name = match Format::detect(None, &loaded.text) {
        Format::Json => "manifest.json",
        Format::Toml => "manifest.toml",
    };
    write_file(&dir.join(manifest_name), loaded.text.as_bytes(), 0o644)?;
    for file in &bundle.files {
        let owner = config_owner(&file.path)?;
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        owners.write(&path, file.contents.as_bytes(), owner, 0o400)?;
    }
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
