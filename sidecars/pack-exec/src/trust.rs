//! The pack trust hash (helmdeck's `trust.sha256`).
//!
//! `sha256( concat over every file but the manifest, sorted by relpath: relpath \0 sha256hex \n )`
//! where `relpath` uses `/` separators and is sorted bytewise. The manifest is left out because
//! it carries the hash. See docs/packs.md for a shell one-liner that computes the same value.

use std::fs;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Why the hash could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Reading a file failed.
    #[error("cannot read the pack's files: {0}")]
    Io(#[from] io::Error),
    /// The hash covers regular files only.
    #[error("`{0}` is neither a regular file nor a directory; the trust hash cannot cover it")]
    NotAFile(String),
}

/// Compute the trust hash of the pack rooted at `root`, leaving out `root/<manifest>`.
pub fn pack_hash(root: &Path, manifest: &str) -> Result<String, TrustError> {
    let mut files = Vec::new();
    collect(root, String::new(), &mut files)?;
    files.retain(|rel| rel != manifest);
    files.sort_unstable();
    let mut outer = Sha256::new();
    for rel in &files {
        let mut inner = Sha256::new();
        let mut file = fs::File::open(root.join(rel))?;
        io::copy(&mut file, &mut inner)?;
        outer.update(rel.as_bytes());
        outer.update([0u8]);
        outer.update(hex::encode(inner.finalize()).as_bytes());
        outer.update(b"\n");
    }
    Ok(hex::encode(outer.finalize()))
}

fn collect(dir: &Path, prefix: String, out: &mut Vec<String>) -> Result<(), TrustError> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let rel = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(&entry.path(), rel, out)?;
        } else if kind.is_file() {
            out.push(rel);
        } else {
            return Err(TrustError::NotAFile(rel));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_documented_formula() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("pack.json"), "{}").unwrap();
        fs::write(dir.path().join("b.sh"), "echo b").unwrap();
        fs::create_dir(dir.path().join("lib")).unwrap();
        fs::write(dir.path().join("lib/a.txt"), "a").unwrap();
        let h = |s: &[u8]| hex::encode(Sha256::digest(s));
        let expected = h(format!("b.sh\0{}\nlib/a.txt\0{}\n", h(b"echo b"), h(b"a")).as_bytes());
        assert_eq!(pack_hash(dir.path(), "pack.json").unwrap(), expected);
    }
}
