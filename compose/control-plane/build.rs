//! Embeds the repository's `packs/` directory into the binary, so `control-plane up` (no
//! manifest: the example bottle) works from anywhere. Generates `embedded_packs.rs`: a list of
//! `(path under packs/, contents, unix mode)`.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn main() {
    // Read at run time, not with `env!`: a build-script binary cargo reuses from another
    // checkout sharing the target dir would otherwise embed that checkout's packs.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let root = Path::new(&manifest_dir).join("../..");
    let packs = root.join("packs");
    println!("cargo:rerun-if-changed={}", packs.display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("examples/bottle.toml").display()
    );
    let mut files = Vec::new();
    if packs.is_dir() {
        walk(&packs, &mut files);
    }
    files.sort();
    let mut out = String::from("/// Files of the repository's `packs/`: (path under packs/, contents, mode).\npub static PACK_FILES: &[(&str, &[u8], u32)] = &[\n");
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let rel = path
            .strip_prefix(&packs)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o644);
        let abs = path.canonicalize().unwrap_or_else(|_| path.clone());
        let _ = writeln!(
            out,
            "    ({rel:?}, include_bytes!({:?}), 0o{mode:o}),",
            abs.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()))
        .join("embedded_packs.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        panic!("cannot write {}: {e}", dest.display());
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            walk(&path, out);
        } else if path.is_file() {
            out.push(path);
        }
    }
}
