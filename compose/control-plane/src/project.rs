//! Writing a rendered bottle into its project directory: the manifest as given, each config
//! file, and the packs. Everything is made readable by the containers' uid 65534. Stale
//! `config/` and `packs/` from an earlier render are replaced, not merged.

use std::path::Path;

use bottle_compose::manifest::Format;
use bottle_compose::Bundle;

use crate::api::ControlError;
use crate::source::{mkdir, write_file, Loaded};

/// Write `bundle` (rendered from `loaded`) into `dir`.
pub fn write_project(bundle: &Bundle, loaded: &Loaded, dir: &Path) -> Result<(), ControlError> {
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
    let manifest_name = match Format::detect(None, &loaded.text) {
        Format::Json => "manifest.json",
        Format::Toml => "manifest.toml",
    };
    write_file(&dir.join(manifest_name), loaded.text.as_bytes(), 0o644)?;
    for file in &bundle.files {
        let path = dir.join(&file.path);
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        write_file(&path, file.contents.as_bytes(), 0o644)?;
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
