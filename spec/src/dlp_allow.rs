//! The operator's DLP allowlist, one schema for pipelock, egress, git-gate and the manifest.
//!
//! Why only the operator writes it: anything the agent can write — a `.gitleaks.toml` or
//! `.gitleaksignore` in the pushed repository, an inline `gitleaks:allow` comment, a request
//! header — would let the very party the scanner guards against switch it off. So the
//! allowlist lives in the daemons' read-only configs, rendered from the bottle manifest, and
//! no pushed file or request byte is ever read as one.

use serde::{Deserialize, Serialize};

/// Shortest stopword: a shorter one would excuse nearly every finding.
pub const MIN_STOPWORD_LEN: usize = 4;

/// Findings the operator accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlpAllow {
    /// A finding whose matched text matches one of these (byte regexes, `regex` crate syntax)
    /// is dropped — e.g. a test fixture's key `AKIA[0-9A-Z]{12}FIXTURE`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regexes: Vec<String>,
    /// A finding whose matched text contains one of these (ASCII case-insensitive) is
    /// dropped — e.g. `EXAMPLE`, `dummy`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stopwords: Vec<String>,
    /// git-gate only: files (repository-relative globs, `*` within a segment, `**` across)
    /// whose findings are dropped — e.g. `tests/fixtures/**`. `deny_paths` still applies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

impl DlpAllow {
    /// Nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.regexes.is_empty() && self.stopwords.is_empty() && self.paths.is_empty()
    }

    /// What is wrong with each entry, as `(field, what to fix)`; `field` is `regexes[i]`,
    /// `stopwords[i]` or `paths[i]`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, r) in self.regexes.iter().enumerate() {
            match regex::bytes::Regex::new(r) {
                Err(e) => out.push((format!("regexes[{i}]"), format!("not a regex: {e}"))),
                Ok(re) if re.is_match(b"") => out.push((
                    format!("regexes[{i}]"),
                    format!("{r:?} matches the empty string, so it would allow every finding: anchor it on the text to allow"),
                )),
                Ok(_) => {}
            }
        }
        for (i, w) in self.stopwords.iter().enumerate() {
            if w.trim().len() < MIN_STOPWORD_LEN {
                out.push((
                    format!("stopwords[{i}]"),
                    format!("{w:?} is shorter than {MIN_STOPWORD_LEN} characters: it would excuse nearly every finding"),
                ));
            }
        }
        for (i, p) in self.paths.iter().enumerate() {
            if let Err(e) = crate::repo_path_glob(p) {
                out.push((format!("paths[{i}]"), e));
            }
        }
        out
    }

    /// What the proxies take of it: everything but git-gate's file `paths`.
    pub fn proxies(&self) -> DlpAllow {
        DlpAllow {
            paths: Vec::new(),
            ..self.clone()
        }
    }

    /// [`DlpAllow::problems`] as a daemon config reports them (`dlp_allow.regexes[0]: …`).
    pub fn problem_lines(&self) -> Vec<String> {
        self.problems()
            .into_iter()
            .map(|(field, why)| format!("dlp_allow.{field}: {why}"))
            .collect()
    }

    /// Whether a finding in the file `path` (repository-relative; an archive member's
    /// `outer.tgz!...` counts as `outer.tgz`) is allowed by `paths`.
    pub fn path_allowed(&self, path: &str) -> bool {
        let file = path.split('!').next().unwrap_or(path);
        self.paths
            .iter()
            .any(|p| crate::repo_path_glob(p).is_ok_and(|g| g.matches(&format!("/{file}"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_entry_and_the_fix() {
        let allow = DlpAllow {
            regexes: vec!["AKIA[0-9A-Z]{12}FIXTURE".into(), "(".into(), ".*".into()],
            stopwords: vec!["EXAMPLE".into(), "ex".into()],
            paths: vec!["tests/fixtures/**".into(), "/abs".into()],
        };
        let fields: Vec<String> = allow.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            ["regexes[1]", "regexes[2]", "stopwords[1]", "paths[1]"]
        );
        assert!(DlpAllow::default().problems().is_empty());
        assert!(DlpAllow::default().is_empty());
    }

    #[test]
    fn paths_match_files_and_archive_members_by_their_file() {
        let allow = DlpAllow {
            paths: vec!["tests/fixtures/**".into(), "*.snap".into()],
            ..DlpAllow::default()
        };
        assert!(allow.path_allowed("tests/fixtures/aws.env"));
        assert!(allow.path_allowed("tests/fixtures/keys.tgz!gunzip!a/b.pem"));
        assert!(allow.path_allowed("x.snap"));
        assert!(!allow.path_allowed("src/tests/fixtures/aws.env"));
        assert!(!allow.path_allowed("src/config.rs"));
        assert!(!allow.path_allowed("(commit message)"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_json::from_str::<DlpAllow>(r#"{"regex": ["x"]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `regex`"), "{e}");
    }
}
