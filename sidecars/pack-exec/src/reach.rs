//! Whether handlers started under `run_as` can reach the directories pack-exec puts their
//! files in.
//!
//! Why: when pack-exec itself runs as root (outside sidecar-init), it starts handlers as
//! `run_as`. If `state_dir` sits under a directory that uid cannot search (a `0700` home, a
//! private state root), installs still succeed — pack-exec is root — and every call then fails
//! with `Permission denied`. Checking once at start-up turns "accepted, then broken" into one
//! refusal that names the directory and the fix. The check follows POSIX mode bits (owner,
//! then group, then other; handlers get no supplementary groups); ACLs are not consulted.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::RunAs;

/// A directory on the way to `target` that `run_as` cannot search.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "handlers run as {uid}:{gid} (run_as) but cannot reach {target}: {blocker} is mode {mode:04o} \
     owned by {owner}:{group}. Fix one of: let others search it (chmod o+x {blocker}), put \
     state_dir and packs_dir where uid {uid} can reach them, or run pack-exec under sidecar-init \
     (its spawner runs handlers without this)",
    uid = run_as.uid,
    gid = run_as.gid,
    target = target.display(),
    blocker = blocker.display()
)]
pub struct Unreachable {
    /// The handler identity.
    pub run_as: RunAs,
    /// The directory handlers need.
    pub target: PathBuf,
    /// The first directory on the way that they cannot search.
    pub blocker: PathBuf,
    /// Its permission bits.
    pub mode: u32,
    /// Its owner.
    pub owner: u32,
    /// Its group.
    pub group: u32,
}

/// Check that `run_as` can search every directory from `/` down to `target` (inclusive).
/// `Ok(Err(_))` names the first one it cannot; `Err` is a failure to look (the path is gone).
pub fn check(target: &Path, run_as: RunAs) -> io::Result<Result<(), Unreachable>> {
    if run_as.uid == 0 {
        return Ok(Ok(()));
    }
    let target = fs::canonicalize(target)?;
    for dir in target.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let meta = fs::metadata(dir)?;
        if !can_search(&meta, run_as) {
            return Ok(Err(Unreachable {
                run_as,
                target: target.clone(),
                blocker: dir.to_path_buf(),
                mode: meta.mode() & 0o7777,
                owner: meta.uid(),
                group: meta.gid(),
            }));
        }
    }
    Ok(Ok(()))
}

/// POSIX: the owner class applies if the uid owns it, else the group class, else other.
fn can_search(meta: &fs::Metadata, who: RunAs) -> bool {
    let mode = meta.mode();
    let bit = if meta.uid() == who.uid {
        0o100
    } else if meta.gid() == who.gid {
        0o010
    } else {
        0o001
    };
    mode & bit != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const NOBODY: RunAs = RunAs {
        uid: 65534,
        gid: 65534,
    };

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_private_ancestor_is_named_with_its_mode_and_the_fix() {
        let root = tempfile::tempdir().expect("tempdir");
        let private = root.path().join("private");
        let state = private.join("state/packs");
        fs::create_dir_all(&state).expect("mkdir");
        chmod(root.path(), 0o755);
        chmod(&private, 0o700);
        let err = check(&state, NOBODY).expect("look").expect_err("blocked");
        let private = fs::canonicalize(&private).expect("canon");
        assert_eq!(err.blocker, private);
        assert_eq!(err.mode, 0o700);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("chmod o+x {}", private.display())),
            "{msg}"
        );
        assert!(msg.contains("65534:65534"), "{msg}");
    }

    #[test]
    fn searchable_directories_pass_and_the_owner_class_decides_for_the_owner() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("d");
        fs::create_dir_all(&dir).expect("mkdir");
        chmod(root.path(), 0o755);
        chmod(&dir, 0o711);
        assert_eq!(check(&dir, NOBODY).expect("look"), Ok(()));
        // Others may search, but the owner's own bits say no: POSIX uses the owner class.
        let owner = RunAs {
            uid: fs::metadata(&dir).expect("stat").uid(),
            gid: 4242,
        };
        if owner.uid != 0 {
            chmod(&dir, 0o011);
            assert!(check(&dir, owner).expect("look").is_err());
        }
        // Root handlers are never blocked by mode bits.
        chmod(&dir, 0o000);
        assert_eq!(check(&dir, RunAs { uid: 0, gid: 0 }).expect("look"), Ok(()));
    }
}
