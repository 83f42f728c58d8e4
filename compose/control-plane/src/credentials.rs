//! The operator's credential files, checked at `up` before anything is created or started.
//!
//! Each file named by the manifest's `credentials.NAME.file` is bind-mounted read-only into
//! the sidecars container (`/run/secrets/bottle/NAME`), where sidecar-init — uid 0 *without*
//! `CAP_DAC_OVERRIDE` — copies it into the private credentials directory of each daemon that
//! declares it (docs/security.md, "How secrets travel"). So a file is usable only when it is:
//!
//! - there, and a regular file (symlinks are followed: the target is checked). A missing bind
//!   source would be created by Docker as an empty *directory*;
//! - owned by uid 0 and readable by its owner: init reads it as its owner, nothing else lets it;
//! - not readable, writable or executable by group or others (`mode & 0o077 == 0`): like ssh
//!   refusing a loose key, a secret other host users can read is refused, not used.
//!
//! Every problem of every file is reported at once, each with the command that fixes it.
//! With bind mounts only the metadata is looked at: the control plane never opens, reads or
//! copies a secret. With `BOT_BOTTLE_FILES=volumes` ([`crate::runtime::files`]) it reads the
//! file once per `up` into the archive of the bottle's secrets volume (in memory, never
//! logged; the archive says root owns it inside the bottle), so the file may also be owned by
//! the control plane's own user — the only one besides root able to read a `0400` file.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::api::{ControlError, CredentialProblem};

/// Check every `(name, host path)`; `Err` lists every problem found. `reader` is the uid
/// that reads the files besides root (volumes delivery: the control plane's own), if any.
pub fn check<'a>(
    files: impl IntoIterator<Item = (&'a str, &'a str)>,
    reader: Option<u32>,
) -> Result<(), ControlError> {
    let problems: Vec<CredentialProblem> = files
        .into_iter()
        .flat_map(|(name, path)| {
            problems(path, reader)
                .into_iter()
                .map(move |message| CredentialProblem {
                    name: name.to_string(),
                    path: path.to_string(),
                    message,
                })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ControlError::Credentials(problems))
    }
}

/// What is wrong with one file (empty: nothing).
fn problems(path: &str, reader: Option<u32>) -> Vec<String> {
    let p = Path::new(path);
    // `metadata` follows symlinks: the target is what Docker mounts and init reads.
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![format!(
                "does not exist{}: create it holding the secret, e.g. `printf '%s\\n' \"$SECRET\" | install -m 0400 -o root -g root /dev/stdin {path}`",
                dangling(p)
            )]
        }
        Err(e) => return vec![format!("cannot be inspected: {e}")],
    };
    let target = symlink_note(p);
    if !meta.is_file() {
        return vec![format!(
            "is not a regular file{target}: point it at a file holding the secret"
        )];
    }
    let mut out = Vec::new();
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        out.push(format!(
            "mode {mode:04o}{target} lets group or others at the secret: `chmod 0400 {path}`"
        ));
    }
    if meta.uid() != 0 && Some(meta.uid()) != reader {
        out.push(format!(
            "owned by uid {}{target}, not root: sidecar-init reads it as root without CAP_DAC_OVERRIDE, so only a root-owned file is readable to it: `chown root:root {path}`",
            meta.uid()
        ));
    }
    if mode & 0o400 == 0 {
        out.push(format!(
            "mode {mode:04o}{target} is not readable by its owner: `chmod 0400 {path}`"
        ));
    }
    out
}

/// ` (a symlink to TARGET)` when `p` is a symlink, else empty.
fn symlink_note(p: &Path) -> String {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(p) {
            Ok(t) => format!(" (a symlink to {})", t.display()),
            Err(_) => " (a symlink)".to_string(),
        },
        _ => String::new(),
    }
}

/// ` (a dangling symlink to TARGET)` for a symlink whose target is missing.
fn dangling(p: &Path) -> String {
    match std::fs::read_link(p) {
        Ok(t) => format!(" (a dangling symlink to {})", t.display()),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A file with `mode`, owned by `uid` (the tests run as root, so chown works).
    fn file(dir: &Path, name: &str, mode: u32, uid: u32) -> String {
        let path = dir.join(name);
        std::fs::write(&path, "s3cret\n").unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.display().to_string()
    }

    fn messages(err: ControlError) -> Vec<CredentialProblem> {
        match err {
            ControlError::Credentials(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_root_owned_0400_file_and_a_symlink_to_one_pass() {
        let tmp = tempfile::tempdir().unwrap();
        let good = file(tmp.path(), "good", 0o400, 0);
        let also = file(tmp.path(), "also", 0o600, 0);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let link = link.display().to_string();
        check(
            [
                ("A", good.as_str()),
                ("B", also.as_str()),
                ("C", link.as_str()),
            ],
            None,
        )
        .unwrap();
    }

    #[test]
    fn with_volumes_the_control_planes_own_user_may_own_the_file_too() {
        let tmp = tempfile::tempdir().unwrap();
        let mine = file(tmp.path(), "mine", 0o400, 65532);
        assert_eq!(
            messages(check([("M", mine.as_str())], None).unwrap_err()).len(),
            1
        );
        check([("M", mine.as_str())], Some(65532)).unwrap();
        let other = file(tmp.path(), "other", 0o400, 65534);
        assert_eq!(
            messages(check([("O", other.as_str())], Some(65532)).unwrap_err()).len(),
            1
        );
    }

    #[test]
    fn every_problem_of_every_file_is_named_with_its_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let loose = file(tmp.path(), "loose", 0o644, 0);
        let nobody = file(tmp.path(), "nobody", 0o400, 65534);
        let both = file(tmp.path(), "both", 0o640, 65534);
        let unreadable = file(tmp.path(), "unreadable", 0o000, 0);
        let dir = tmp.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        let dir = dir.display().to_string();
        let missing = tmp.path().join("missing").display().to_string();
        let link = tmp.path().join("link-to-loose");
        std::os::unix::fs::symlink(&loose, &link).unwrap();
        let link = link.display().to_string();
        let problems = messages(
            check(
                [
                    ("LOOSE", loose.as_str()),
                    ("NOBODY", nobody.as_str()),
                    ("BOTH", both.as_str()),
                    ("UNREADABLE", unreadable.as_str()),
                    ("DIR", dir.as_str()),
                    ("MISSING", missing.as_str()),
                    ("LINK", link.as_str()),
                ],
                None,
            )
            .unwrap_err(),
        );
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        let find = |name: &str| -> Vec<&String> {
            text.iter()
                .filter(|t| t.starts_with(&format!("credentials.{name}.file: ")))
                .collect()
        };
        let one = |name: &str, needles: &[&str]| {
            let found = find(name);
            assert_eq!(found.len(), 1, "{name}: {text:#?}");
            for n in needles {
                assert!(found[0].contains(n), "{n:?} not in {}", found[0]);
            }
        };
        one("LOOSE", &["mode 0644", &format!("`chmod 0400 {loose}`")]);
        one(
            "NOBODY",
            &["uid 65534", &format!("`chown root:root {nobody}`")],
        );
        assert_eq!(find("BOTH").len(), 2, "mode and owner: {text:#?}");
        one("UNREADABLE", &["not readable by its owner", "chmod 0400"]);
        one("DIR", &["not a regular file"]);
        one("MISSING", &["does not exist", &missing]);
        one(
            "LINK",
            &[
                &format!("a symlink to {loose}"),
                &format!("chmod 0400 {link}"),
            ],
        );
        let err = ControlError::Credentials(problems);
        assert_eq!(err.exit_code(), 2);
        assert_eq!(err.http_status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(err.to_string().lines().count(), 8, "{err}");
    }

    #[test]
    fn a_dangling_symlink_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("gone"), &link).unwrap();
        let link = link.display().to_string();
        let p = messages(check([("X", link.as_str())], None).unwrap_err());
        assert!(p[0].message.contains("dangling symlink"), "{}", p[0]);
    }
}
