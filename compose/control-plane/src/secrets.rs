//! The secrets the control plane generates for a bottle, kept in its project directory under
//! `secrets/` (`root:root`, dir `0700`, files `0400`) and mounted by the renderer under
//! [`bottle_spec::BUNDLE_SECRETS_MOUNT`], where sidecar-init alone can read them:
//!
//! - `secrets/ca.key`: the bottle CA's private key (egress), see [`crate::ca`];
//! - `secrets/pack-exec-operator-token`: pack-exec's operator token, 32 random bytes as 64
//!   lowercase hex digits (no newline). Generated at the first `up` and kept across re-ups
//!   (the running pack-exec holds it); `down` deletes it with the project directory. The
//!   control plane sends it as `Authorization: Bearer` to pack-exec's operator listener
//!   (install, delete) and never logs it.
//! - `secrets/credentials/NAME`: the value of each `credentials.NAME.generate` credential,
//!   32 random bytes as 64 lowercase hex digits. Generated at the first `up`, kept across
//!   re-ups, deleted by `down`; sidecar-init hands it to the daemons that use it, like a file
//!   the operator provides.

use std::path::{Path, PathBuf};

use crate::api::ControlError;
use crate::owners::{Owners, ROOT};

/// Directory of generated secrets, relative to the project directory.
pub const SECRETS_DIR: &str = "secrets";
/// The bottle CA's key, relative to the project directory.
pub const CA_KEY_FILE: &str = "secrets/ca.key";
/// pack-exec's operator token, relative to the project directory.
pub const OPERATOR_TOKEN_FILE: &str = "secrets/pack-exec-operator-token";
/// Random bytes in an operator token.
pub const OPERATOR_TOKEN_BYTES: usize = 32;

/// Create `secrets/` as `root:root 0700`.
pub fn ensure_dir(dir: &Path, owners: &mut Owners) -> Result<PathBuf, ControlError> {
    let secrets = dir.join(SECRETS_DIR);
    owners.mkdir(&secrets, ROOT, 0o700)?;
    Ok(secrets)
}

/// Make sure the bottle has its operator token: kept when a valid one is there, generated
/// otherwise; `root:root 0400` either way. Returns whether it was generated.
pub fn ensure_operator_token(dir: &Path, owners: &mut Owners) -> Result<bool, ControlError> {
    ensure_dir(dir, owners)?;
    let path = dir.join(OPERATOR_TOKEN_FILE);
    let existing = std::fs::read_to_string(&path).ok();
    if existing.as_deref().is_some_and(valid) {
        owners.give(&path, ROOT, 0o400)?;
        return Ok(false);
    }
    let token = hex::encode(random(OPERATOR_TOKEN_BYTES)?);
    owners.write(&path, token.as_bytes(), ROOT, 0o400)?;
    Ok(true)
}

/// Make sure every generated credential has its value: kept when valid, generated otherwise;
/// `root:root 0400` either way (the directory `0700`). Returns the names generated now.
pub fn ensure_generated_credentials<'a>(
    dir: &Path,
    names: impl IntoIterator<Item = &'a str>,
    owners: &mut Owners,
) -> Result<Vec<String>, ControlError> {
    let mut generated = Vec::new();
    for name in names {
        ensure_dir(dir, owners)?;
        let creds = dir.join(bottle_compose::render::GENERATED_CREDENTIALS_DIR);
        owners.mkdir(&creds, ROOT, 0o700)?;
        let path = creds.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|t| valid(&t)) {
            owners.give(&path, ROOT, 0o400)?;
            continue;
        }
        let value = hex::encode(random(OPERATOR_TOKEN_BYTES)?);
        owners.write(&path, value.as_bytes(), ROOT, 0o400)?;
        generated.push(name.to_string());
    }
    Ok(generated)
}

/// The bottle's operator token, read from its project directory.
pub fn operator_token(dir: &Path) -> Result<OperatorToken, ControlError> {
    let path = dir.join(OPERATOR_TOKEN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        ControlError::io(
            "cannot read pack-exec's operator token (is the bottle's project directory there? `control-plane up` writes it)",
            &path,
            e,
        )
    })?;
    if !valid(&text) {
        return Err(ControlError::io(
            "not an operator token",
            &path,
            std::io::Error::other("expected 64 hex digits; run `control-plane up` again"),
        ));
    }
    Ok(OperatorToken(text.trim().to_string()))
}

fn valid(text: &str) -> bool {
    let t = text.trim();
    t.len() == OPERATOR_TOKEN_BYTES * 2 && t.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `n` bytes from the kernel's CSPRNG.
fn random(n: usize) -> Result<Vec<u8>, ControlError> {
    use std::io::Read;
    let path = Path::new("/dev/urandom");
    let mut buf = vec![0u8; n];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| ControlError::io("cannot read", path, e))?;
    Ok(buf)
}

/// pack-exec's operator token. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorToken(String);

impl OperatorToken {
    /// The value, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn generated_once_root_only_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let mut owners = Owners::required();
        assert!(ensure_operator_token(tmp.path(), &mut owners).unwrap());
        let path = tmp.path().join(OPERATOR_TOKEN_FILE);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, 0, 0o400)
        );
        let dir = std::fs::metadata(tmp.path().join(SECRETS_DIR)).unwrap();
        assert_eq!((dir.uid(), dir.mode() & 0o7777), (0, 0o700));
        let first = std::fs::read_to_string(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        let token = operator_token(tmp.path()).unwrap();
        assert_eq!(token.expose(), first);
        assert!(!format!("{token:?}").contains(&first));
        // Kept across re-ups, modes repaired.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(!ensure_operator_token(tmp.path(), &mut owners).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o400);
        // A damaged one is replaced.
        std::fs::write(&path, "short").unwrap();
        assert!(ensure_operator_token(tmp.path(), &mut owners).unwrap());
        assert_ne!(std::fs::read_to_string(&path).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        ensure_operator_token(other.path(), &mut owners).unwrap();
        assert_ne!(
            operator_token(other.path()).unwrap(),
            operator_token(tmp.path()).unwrap(),
            "one token per bottle"
        );
    }

    #[test]
    fn generated_credentials_are_root_only_one_per_name_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let mut owners = Owners::required();
        let made =
            ensure_generated_credentials(tmp.path(), ["DEMO", "OTHER"], &mut owners).unwrap();
        assert_eq!(made, ["DEMO", "OTHER"]);
        let dir = tmp
            .path()
            .join(bottle_compose::render::GENERATED_CREDENTIALS_DIR);
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o700));
        let demo = std::fs::read_to_string(dir.join("DEMO")).unwrap();
        let other = std::fs::read_to_string(dir.join("OTHER")).unwrap();
        assert!(valid(&demo) && valid(&other) && demo != other);
        let meta = std::fs::metadata(dir.join("DEMO")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (0, 0, 0o400)
        );
        // Kept across re-ups.
        assert!(
            ensure_generated_credentials(tmp.path(), ["DEMO"], &mut owners)
                .unwrap()
                .is_empty()
        );
        assert_eq!(std::fs::read_to_string(dir.join("DEMO")).unwrap(), demo);
    }

    #[test]
    fn a_missing_token_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let err = operator_token(tmp.path()).unwrap_err().to_string();
        assert!(err.contains(OPERATOR_TOKEN_FILE), "{err}");
    }
}
