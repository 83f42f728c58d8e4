//! Crash-safe file writes: temp file, fsync, rename or link, fsync of the directory.
//!
//! A caller acknowledges a request only after these return, so a `kill -9` (or a power cut on
//! a filesystem that honours fsync) right after the acknowledgement loses nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Write `bytes` to a fresh temp file inside `tmp_dir` and fsync it. The temp dir must be on
/// the same filesystem as the final location so that rename/link are atomic.
fn write_temp(tmp_dir: &Path, bytes: &[u8]) -> io::Result<std::path::PathBuf> {
    let name = format!(".tmp-{}-{}", std::process::id(), random_hex(8));
    let path = tmp_dir.join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    let result = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(err) = result {
        let _ = fs::remove_file(&path);
        return Err(err);
    }
    Ok(path)
}

/// fsync a directory so a rename or link inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Atomically create or replace `dest` with `bytes`: readers see the old or the new content,
/// never a torn file.
pub fn replace(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(tmp_dir, bytes)?;
    if let Err(err) = fs::rename(&tmp, dest) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

/// Atomically create `dest` with `bytes` unless it already exists (then `AlreadyExists`).
/// A hard link never replaces its target, which makes "first decision wins" race-free even
/// between the daemon and `supervise-ctl` in another process.
pub fn create_new(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(tmp_dir, bytes)?;
    let linked = fs::hard_link(&tmp, dest);
    let _ = fs::remove_file(&tmp);
    linked?;
    sync_dir(dest.parent().unwrap_or(Path::new(".")))
}

pub use sidecars_common::random::hex as random_hex;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_new_refuses_to_replace() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.json");
        create_new(dir.path(), &dest, b"first").unwrap();
        let err = create_new(dir.path(), &dest, b"second").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&dest).unwrap(), b"first");
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn replace_overwrites_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.json");
        replace(dir.path(), &dest, b"one").unwrap();
        replace(dir.path(), &dest, b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
