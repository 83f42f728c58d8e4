//! The pack manifest and its validation into a ready-to-run [`Pack`].
//!
//! A pack has exactly one manifest at its root: helmdeck's marketplace `helmdeck-pack.yaml`
//! ([`YAML_MANIFEST`], read with a YAML library as it is published) or `pack.json`
//! ([`MANIFEST`], the same fields written as JSON); both at once is refused, naming them. The
//! field rules are the same for both. Validation happens once,
//! when a pack is installed or loaded at startup; the result — compiled schemas, the resolved
//! program path, the argv and env — is kept in memory so the per-call path never touches the
//! manifest again.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::archive::safe_relative;
use crate::schema::Schema;
use crate::trust;

/// The JSON manifest's file name at the root of a pack.
pub const MANIFEST: &str = bottle_spec::pack_manifest::JSON;
/// The marketplace's manifest file name (helmdeck's), YAML.
pub const YAML_MANIFEST: &str = bottle_spec::pack_manifest::YAML;
/// Every manifest file name a pack may carry.
pub const MANIFESTS: [&str; 2] = bottle_spec::pack_manifest::ALL;

/// True when `dir` holds a manifest file (either kind) at its root.
pub fn has_manifest(dir: &Path) -> bool {
    MANIFESTS.iter().any(|m| dir.join(m).is_file())
}

/// The `PATH` handlers get, and where `requires.binaries` and bare program names are looked up.
/// Fixed, so a pack behaves the same whatever environment pack-exec was started with.
pub const HANDLER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Largest manifest file accepted.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// Default and bounds of `handler.timeout_s`.
const DEFAULT_TIMEOUT_S: u64 = 60;
/// Default `handler.max_output_bytes` (16 MiB, as helmdeck).
const DEFAULT_MAX_OUTPUT: u64 = 16 * 1024 * 1024;
/// Upper bound of `handler.max_output_bytes`: output is buffered, so this bounds memory per call.
const MAX_MAX_OUTPUT: u64 = 256 * 1024 * 1024;
/// Env keys pack-exec sets itself; a pack may not override them.
const RESERVED_ENV: &[&str] = &["HOME", "TMPDIR", "PACK_NAME", "PACK_CALL_ID", "PACK_DIR"];

/// The manifest as written (helmdeck's field names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `<family>.<verb>`, e.g. `cmd.upper`.
    pub name: String,
    /// Free-form version string (`v1`, `1.2.0`, `2026.05`). A YAML number (`version: 2`) is
    /// taken as its text, as helmdeck's Go YAML decoder does for a string field.
    #[serde(deserialize_with = "string_or_number")]
    pub version: String,
    /// Author (informational).
    #[serde(default)]
    pub author: Option<String>,
    /// SPDX license (informational).
    #[serde(default)]
    pub license: Option<String>,
    /// One-paragraph summary.
    #[serde(default)]
    pub description: String,
    /// helmdeck catalog category (informational).
    #[serde(default)]
    pub category: Option<String>,
    /// helmdeck catalog tags (informational).
    #[serde(default)]
    pub tags: Vec<String>,
    /// helmdeck session flag (accepted, ignored: every call gets a fresh temp dir).
    #[serde(default)]
    pub needs_session: Option<bool>,
    /// Schema the call's input must match.
    #[serde(default)]
    pub input_schema: Option<Value>,
    /// Schema the handler's output must match.
    #[serde(default)]
    pub output_schema: Option<Value>,
    /// How to run the pack.
    pub handler: HandlerSpec,
    /// What the pack needs from the environment.
    #[serde(default)]
    pub requires: Requires,
    /// Integrity metadata.
    #[serde(default)]
    pub trust: Option<Trust>,
    /// Worked examples (informational).
    #[serde(default)]
    pub examples: Option<Value>,
}

/// `handler`: a command handler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSpec {
    /// Must be `command`.
    #[serde(rename = "type")]
    pub kind: String,
    /// argv; see docs/packs.md for how argv[0] and pack-file arguments are resolved.
    #[serde(default)]
    pub command: Vec<String>,
    /// Wall-clock limit per call, 1–3600 s (default 60).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    /// Extra environment, `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// stdout cap in bytes (default 16 MiB).
    #[serde(default)]
    pub max_output_bytes: Option<u64>,
    /// helmdeck's per-pack container image (accepted, ignored: handlers run in this sidecar).
    #[serde(default)]
    pub sidecar: Option<Value>,
}

/// `requires`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// Programs that must be on the handler `PATH`; checked at install (`missing_dependency`).
    #[serde(default)]
    pub binaries: Vec<String>,
}

/// `trust`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    /// Expected [`trust::pack_hash`] of the pack's files.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Who signed it (informational).
    #[serde(default)]
    pub signed_by: Option<String>,
}

/// Where a pack comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Installed over the API, kept under `state_dir`.
    Installed,
    /// Read from the read-only `packs_dir`.
    Shipped,
}

/// Why a pack was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest or the pack's files are wrong; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// A required program is not on the handler `PATH`.
    #[error("missing on PATH ({HANDLER_PATH}): {}", .0.join(", "))]
    MissingDependency(Vec<String>),
    /// The files do not hash to `trust.sha256`.
    #[error(
        "trust.sha256 mismatch: the manifest says {expected}, the pack's files hash to {actual}"
    )]
    TrustMismatch {
        /// From the manifest.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// Reading the pack failed.
    #[error("cannot read the pack: {0}")]
    Io(#[from] io::Error),
}

/// A validated pack, ready to run. Shared (`Arc`) between the registry and in-flight calls.
#[derive(Debug)]
pub struct Pack {
    /// The pack's name.
    pub name: String,
    /// The pack's version.
    pub version: String,
    /// Installed or shipped.
    pub source: Source,
    /// The directory holding the pack's files (absolute).
    pub dir: PathBuf,
    /// Compiled `input_schema`.
    pub input: Schema,
    /// Compiled `output_schema`.
    pub output: Schema,
    /// Absolute path of the program to execute.
    pub program: PathBuf,
    /// argv[1..], pack-file arguments already made absolute.
    pub args: Vec<OsString>,
    /// The pack's `env`, parsed.
    pub env: Vec<(String, String)>,
    /// `handler.timeout_s`.
    pub timeout: Duration,
    /// `handler.max_output_bytes`.
    pub max_output_bytes: usize,
    /// `{"pack","version",` — the head of every call response, serialised once.
    pub response_head: Vec<u8>,
    /// The summary served by `GET /v1/packs[/{name}]`.
    pub summary: Value,
    /// The manifest's `trust.sha256`, verified against the files; `None` = an unsigned pack
    /// (operator installs of those need consent).
    pub trust_sha256: Option<String>,
    /// The manifest's `examples`, as written: the install-time self-test's cases
    /// ([`crate::examples`]).
    pub examples: Option<Value>,
    /// The manifest file this pack was read from ([`MANIFEST`] or [`YAML_MANIFEST`]): what a
    /// retirement unlinks, and what the trust hash leaves out.
    pub manifest_file: &'static str,
    /// Set when this version was replaced or deleted: its directory goes when the last
    /// in-flight call using it finishes.
    retired: AtomicBool,
}

impl Pack {
    /// Read and validate the pack whose files are at `files`; it will run from `exec_dir`
    /// (the same directory, or where an install is about to rename it).
    pub fn load(files: &Path, exec_dir: &Path, source: Source) -> Result<Pack, LoadError> {
        let (manifest, file) = read_manifest(files)?;
        validate(manifest, file, files, exec_dir, source)
    }

    /// Mark this version as gone; its directory is removed once nobody uses it.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }
}

impl Drop for Pack {
    fn drop(&mut self) {
        if self.retired.load(Ordering::Acquire) && self.source == Source::Installed {
            if let Err(err) = fs::remove_dir_all(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), %err, "cannot remove a retired pack version");
            }
        }
    }
}

/// Which manifest file the pack at `files` has: exactly one of [`MANIFESTS`].
pub fn manifest_file(files: &Path) -> Result<&'static str, LoadError> {
    let mut found = Vec::new();
    for name in MANIFESTS {
        match fs::symlink_metadata(files.join(name)) {
            Ok(meta) if meta.is_file() => found.push(name),
            Ok(_) => {
                return Err(LoadError::Invalid(format!(
                    "`{name}` is not a regular file"
                )))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
    }
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(LoadError::Invalid(format!(
            "no `{YAML_MANIFEST}` or `{MANIFEST}` at the root of the pack"
        ))),
        _ => Err(LoadError::Invalid(format!(
            "both `{YAML_MANIFEST}` and `{MANIFEST}` are at the root of the pack: keep one"
        ))),
    }
}

/// Parse the pack's manifest (YAML or JSON, see [`manifest_file`]); errors name the file and
/// the field (`helmdeck-pack.yaml: at `handler.timeout_s`: invalid type ...`).
pub fn read_manifest(files: &Path) -> Result<(Manifest, &'static str), LoadError> {
    let name = manifest_file(files)?;
    let path = files.join(name);
    if fs::metadata(&path)?.len() > MAX_MANIFEST_BYTES {
        return Err(LoadError::Invalid(format!(
            "`{name}` is larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let text = fs::read(&path)?;
    let at =
        |field: String, why: String| LoadError::Invalid(format!("{name}: at `{field}`: {why}"));
    let manifest = if name == YAML_MANIFEST {
        let de = serde_norway::Deserializer::from_slice(&text);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let field = err.path().to_string();
            at(field, err.into_inner().to_string())
        })?
    } else {
        let de = &mut serde_json::Deserializer::from_slice(&text);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let field = err.path().to_string();
            at(field, err.into_inner().to_string())
        })?
    };
    Ok((manifest, name))
}

/// `version`: a string, or a number taken as its text.
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        U(u64),
        I(i64),
        F(f64),
    }
    Ok(match Text::deserialize(d)? {
        Text::S(s) => s,
        Text::U(n) => n.to_string(),
        Text::I(n) => n.to_string(),
        Text::F(n) => n.to_string(),
    })
}

/// True for `^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$` (the contract's rule: init checks it too).
pub fn valid_name(name: &str) -> bool {
    bottle_spec::pack_proxy::valid_pack_name(name)
}

fn validate(
    m: Manifest,
    manifest_file: &'static str,
    files: &Path,
    exec_dir: &Path,
    source: Source,
) -> Result<Pack, LoadError> {
    let bad = |msg: String| Err(LoadError::Invalid(msg));
    if !valid_name(&m.name) {
        return bad(format!(
            "name: `{}` does not match ^[a-z][a-z0-9_]*\\.[a-z][a-z0-9_]*$",
            m.name
        ));
    }
    if m.version.is_empty() || m.version.len() > 64 || m.version.chars().any(char::is_control) {
        return bad("version: must be 1 to 64 printable characters".into());
    }
    if m.handler.kind != "command" {
        return bad(format!(
            "handler.type: `{}` is not supported; pack-exec runs `command` handlers",
            m.handler.kind
        ));
    }
    let timeout_s = m.handler.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
    if !(1..=3600).contains(&timeout_s) {
        return bad(format!(
            "handler.timeout_s: {timeout_s} is out of range (1 to 3600)"
        ));
    }
    let max_output = m.handler.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT);
    if !(1..=MAX_MAX_OUTPUT).contains(&max_output) {
        return bad(format!(
            "handler.max_output_bytes: {max_output} is out of range (1 to {MAX_MAX_OUTPUT})"
        ));
    }
    let mut env = Vec::with_capacity(m.handler.env.len());
    for (i, item) in m.handler.env.iter().enumerate() {
        let Some((key, value)) = item.split_once('=') else {
            return bad(format!("handler.env[{i}]: `{item}` is not KEY=VALUE"));
        };
        let key_ok = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok || value.contains('\0') {
            return bad(format!(
                "handler.env[{i}]: `{key}` is not a valid variable name"
            ));
        }
        if RESERVED_ENV.contains(&key) {
            return bad(format!(
                "handler.env[{i}]: `{key}` is set by pack-exec and cannot be overridden"
            ));
        }
        env.push((key.to_string(), value.to_string()));
    }
    let input = match &m.input_schema {
        Some(v) => Schema::compile(v, "input_schema").map_err(LoadError::Invalid)?,
        None => Schema::any(),
    };
    let output = match &m.output_schema {
        Some(v) => Schema::compile(v, "output_schema").map_err(LoadError::Invalid)?,
        None => Schema::any(),
    };

    let trust_sha256 = m.trust.as_ref().and_then(|t| t.sha256.clone());
    if let Some(expected) = &trust_sha256 {
        if expected.len() != 64
            || !expected
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return bad("trust.sha256: must be 64 lowercase hex digits".into());
        }
        let actual = trust::pack_hash(files, manifest_file)
            .map_err(|e| LoadError::Invalid(e.to_string()))?;
        if actual != *expected {
            return Err(LoadError::TrustMismatch {
                expected: expected.clone(),
                actual,
            });
        }
    }

    let mut missing = Vec::new();
    for (i, bin) in m.requires.binaries.iter().enumerate() {
        if bin.is_empty() || bin.contains('/') || bin.contains('\0') {
            return bad(format!(
                "requires.binaries[{i}]: `{bin}` must be a program name, not a path"
            ));
        }
        if find_on_path(bin).is_none() {
            missing.push(bin.clone());
        }
    }
    if !missing.is_empty() {
        return Err(LoadError::MissingDependency(missing));
    }

    let (program, args) = resolve_command(&m.handler.command, files, exec_dir)?;

    let mut response_head = b"{\"pack\":".to_vec();
    serde_json::to_writer(&mut response_head, &m.name).map_err(io::Error::other)?;
    response_head.extend_from_slice(b",\"version\":");
    serde_json::to_writer(&mut response_head, &m.version).map_err(io::Error::other)?;
    response_head.extend_from_slice(b",\"output\":");

    let summary = serde_json::json!({
        "name": m.name,
        "version": m.version,
        "description": m.description,
        "author": m.author,
        "source": source,
        "input_schema": m.input_schema.clone().unwrap_or_else(|| serde_json::json!({})),
        "output_schema": m.output_schema.clone().unwrap_or_else(|| serde_json::json!({})),
        "handler": {
            "type": "command",
            "command": m.handler.command,
            "timeout_s": timeout_s,
            "max_output_bytes": max_output,
        },
        "requires": m.requires,
    });

    Ok(Pack {
        name: m.name,
        version: m.version,
        source,
        dir: exec_dir.to_path_buf(),
        input,
        output,
        program,
        args,
        env,
        timeout: Duration::from_secs(timeout_s),
        max_output_bytes: max_output as usize,
        response_head,
        summary,
        trust_sha256,
        examples: m.examples,
        manifest_file,
        retired: AtomicBool::new(false),
    })
}

/// Resolve argv: argv[0] with a `/` is a pack-relative path; a bare argv[0] is a pack file of
/// that name if one exists at the pack root, else a program on [`HANDLER_PATH`]. Later
/// arguments that name a regular file of the pack (relative, no `..`) become absolute paths,
/// since the handler's working directory is its temp dir, not the pack.
fn resolve_command(
    argv: &[String],
    files: &Path,
    exec_dir: &Path,
) -> Result<(PathBuf, Vec<OsString>), LoadError> {
    let Some(first) = argv.first() else {
        return Err(LoadError::Invalid(
            "handler.command: must not be empty".into(),
        ));
    };
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(LoadError::Invalid(
            "handler.command: arguments must not contain NUL".into(),
        ));
    }
    if first.is_empty() {
        return Err(LoadError::Invalid(
            "handler.command[0]: must not be empty".into(),
        ));
    }
    let program = if first.contains('/') || files.join(first).is_file() {
        let rel = match safe_relative(Path::new(first)) {
            Ok(Some(rel)) => rel,
            _ => {
                return Err(LoadError::Invalid(format!(
                    "handler.command[0]: `{first}` must be a path inside the pack (relative, no `..`) or a program name on PATH"
                )))
            }
        };
        pack_file(files, &rel)
            .map_err(|why| LoadError::Invalid(format!("handler.command[0]: `{first}` {why}")))?;
        let meta = fs::metadata(files.join(&rel))?;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(LoadError::Invalid(format!(
                "handler.command[0]: `{first}` is not executable (set its x bit in the tar, or run it with an interpreter: [\"bash\", \"{first}\"])"
            )));
        }
        exec_dir.join(rel)
    } else {
        find_on_path(first).ok_or_else(|| LoadError::MissingDependency(vec![first.clone()]))?
    };
    let args = argv[1..]
        .iter()
        .map(|arg| match safe_relative(Path::new(arg)) {
            Ok(Some(rel)) if !arg.starts_with('-') && pack_file(files, &rel).is_ok() => {
                exec_dir.join(rel).into_os_string()
            }
            _ => OsString::from(arg),
        })
        .collect();
    Ok((program, args))
}

/// Check that `files/rel` is a regular file that stays inside `files` (symlinks in shipped
/// packs must resolve inside the pack).
fn pack_file(files: &Path, rel: &Path) -> Result<(), &'static str> {
    let path = files.join(rel);
    let root = fs::canonicalize(files).map_err(|_| "cannot be resolved")?;
    let real = fs::canonicalize(&path).map_err(|_| "does not exist in the pack")?;
    if !real.starts_with(&root) {
        return Err("resolves outside the pack");
    }
    if !fs::metadata(&real).map(|m| m.is_file()).unwrap_or(false) {
        return Err("is not a regular file");
    }
    Ok(())
}

/// The first executable regular file named `name` on [`HANDLER_PATH`].
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    HANDLER_PATH
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("cmd.upper"));
        assert!(valid_name("a1_.b_2"));
        assert!(!valid_name("cmd"));
        assert!(!valid_name("Cmd.upper"));
        assert!(!valid_name("cmd.upper.x"));
        assert!(!valid_name("cmd._x"));
        assert!(!valid_name("1cmd.x"));
        assert!(!valid_name("../x.y"));
    }

    #[test]
    fn path_lookup() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("definitely-not-a-program-xyz").is_none());
    }
}
