//! The state directory: one project directory per bottle.
//!
//! ```text
//! $BOT_BOTTLE_STATE_DIR  (default $XDG_STATE_HOME/bot-bottle, else ~/.local/state/bot-bottle)
//! └── bottles/<slug>/
//!     ├── bottle.json        what the control plane knows: slug, project, containers, source
//!     ├── manifest.toml|json the manifest as given
//!     ├── compose.yaml, .env written at `up` (every runtime backend)
//!     ├── config/*.json      init.json and each daemon's config (mounted read-only), each
//!     │                      owned by the uid that reads it, 0400
//!     ├── packs/<name>/      the manifest's packs (mounted read-only as pack-exec's packs_dir)
//!     ├── ca/                the bottle CA's certificate and the agent's bundle (egress), 0444
//!     └── secrets/           root:root 0700: ca.key, pack-exec-operator-token (0400)
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::ControlError;

/// Name of the record file in a project directory.
pub const RECORD_FILE: &str = "bottle.json";

/// What the control plane remembers about a bottle it brought up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BottleRecord {
    /// The slug.
    pub slug: String,
    /// Compose project name (the prefix may change later; this is what was used).
    pub project: String,
    /// Where the manifest came from (a path, or `embedded example`).
    pub source: String,
    /// Enabled daemons, in order.
    pub daemons: Vec<String>,
    /// The agent network's subnet chosen at the first `up` (kept by every re-`up`, so the
    /// sidecars' fixed address does not move). `None` in records of older control planes and
    /// of bottles found only by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "subnet_text")]
    pub subnet: Option<bottle_spec::Subnet>,
}

/// A subnet as its text (`10.213.4.32/28`) in `bottle.json`.
mod subnet_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        subnet: &Option<bottle_spec::Subnet>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match subnet {
            Some(subnet) => s.collect_str(subnet),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<bottle_spec::Subnet>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| bottle_spec::Subnet::parse(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// The state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// A state dir at `root`.
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// Resolve from the environment (`var` looks a variable up, so tests need not touch the
    /// process environment): `BOT_BOTTLE_STATE_DIR`, else `$XDG_STATE_HOME/bot-bottle`, else
    /// `$HOME/.local/state/bot-bottle`.
    pub fn resolve(var: impl Fn(&str) -> Option<String>) -> Result<StateDir, ControlError> {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        if let Some(dir) = set("BOT_BOTTLE_STATE_DIR") {
            return Ok(StateDir::new(dir));
        }
        if let Some(xdg) = set("XDG_STATE_HOME") {
            return Ok(StateDir::new(Path::new(&xdg).join("bot-bottle")));
        }
        match set("HOME") {
            Some(home) => Ok(StateDir::new(
                Path::new(&home).join(".local/state/bot-bottle"),
            )),
            None => Err(ControlError::Usage(
                "cannot find a state directory: set BOT_BOTTLE_STATE_DIR (or HOME)".to_string(),
            )),
        }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Project directory of a bottle.
    pub fn bottle_dir(&self, slug: &str) -> PathBuf {
        self.root.join("bottles").join(slug)
    }

    /// The record of a bottle, if it is known.
    pub fn record(&self, slug: &str) -> Result<Option<BottleRecord>, ControlError> {
        let path = self.bottle_dir(slug).join(RECORD_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ControlError::io("cannot read", &path, std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ControlError::io("cannot read", &path, e)),
        }
    }

    /// Write a bottle's record.
    pub fn save(&self, record: &BottleRecord) -> Result<(), ControlError> {
        let path = self.bottle_dir(&record.slug).join(RECORD_FILE);
        let mut text = serde_json::to_string_pretty(record).unwrap_or_default();
        text.push('\n');
        std::fs::write(&path, text).map_err(|e| ControlError::io("cannot write", &path, e))
    }

    /// Every known bottle's record, sorted by slug.
    pub fn list(&self) -> Result<Vec<BottleRecord>, ControlError> {
        let dir = self.root.join("bottles");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ControlError::io("cannot list", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if let Some(slug) = entry.file_name().to_str() {
                if let Some(record) = self.record(slug)? {
                    out.push(record);
                }
            }
        }
        out.sort_by(|a, b| a.slug.cmp(&b.slug));
        Ok(out)
    }

    /// Remove a bottle's project directory; false when there was none.
    pub fn remove(&self, slug: &str) -> Result<bool, ControlError> {
        let dir = self.bottle_dir(slug);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ControlError::io("cannot remove", &dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn resolution_order() {
        let all = [
            ("BOT_BOTTLE_STATE_DIR", "/s"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            StateDir::resolve(env(&all)).unwrap().root(),
            Path::new("/s")
        );
        assert_eq!(
            StateDir::resolve(env(&all[1..])).unwrap().root(),
            Path::new("/x/bot-bottle")
        );
        assert_eq!(
            StateDir::resolve(env(&all[2..])).unwrap().root(),
            Path::new("/h/.local/state/bot-bottle")
        );
        assert!(StateDir::resolve(env(&[])).is_err());
        assert_eq!(
            StateDir::resolve(env(&[("BOT_BOTTLE_STATE_DIR", ""), ("HOME", "/h")]))
                .unwrap()
                .root(),
            Path::new("/h/.local/state/bot-bottle")
        );
    }

    #[test]
    fn records_round_trip_and_list() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StateDir::new(tmp.path());
        assert!(s.list().unwrap().is_empty());
        assert!(s.record("a").unwrap().is_none());
        std::fs::create_dir_all(s.bottle_dir("a")).unwrap();
        let r = BottleRecord {
            slug: "a".into(),
            project: "bot-bottle-a".into(),
            source: "x".into(),
            daemons: vec!["pack-exec".into()],
            subnet: Some(bottle_spec::Subnet::parse("10.213.0.32/28").unwrap()),
        };
        s.save(&r).unwrap();
        let text = std::fs::read_to_string(s.bottle_dir("a").join(RECORD_FILE)).unwrap();
        assert!(text.contains("\"subnet\": \"10.213.0.32/28\""), "{text}");
        assert_eq!(s.list().unwrap(), vec![r.clone()]);
        // A record of an older control plane (no subnet) still reads.
        std::fs::write(
            s.bottle_dir("a").join(RECORD_FILE),
            r#"{"slug":"a","project":"bot-bottle-a","source":"x","daemons":[]}"#,
        )
        .unwrap();
        assert_eq!(s.record("a").unwrap().unwrap().subnet, None);
        assert!(s.remove("a").unwrap());
        assert!(!s.remove("a").unwrap());
    }
}
