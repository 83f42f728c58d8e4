//! Method and path rules on a credentialed route: which requests egress may add the route's
//! credential to. Written once here because two sides must agree on them: the renderer
//! validates a manifest's `[[routes]] rules` with [`compile`], and egress enforces them with
//! the same [`Rules::check`].
//!
//! A route's rules are an ordered list; the first that matches decides. A route with rules
//! and no match is denied (an allowlist by default); a route without rules allows every
//! request (the behaviour before rules existed). Each rule is written as
//!
//! - `{ allow = "GET,HEAD /repos/acme/app/**" }` or `{ deny = "POST /repos/*/*/pulls/*/merge" }`:
//!   methods (comma-separated, or `*` for any) and a path glob, where `*` matches within one
//!   path segment and `**` across segments;
//! - `"read-only"`: the preset `{ allow = "GET,HEAD,OPTIONS /**" }`.
//!
//! Paths are compared after percent-decoding and ASCII case-folding: upstreams such as
//! GitHub decode `%6derge` to `merge` and treat owner and repository names case-insensitively,
//! so a deny rule must not be side-stepped by either. A path that could be read two ways
//! (an encoded `/` or `\`, a `.` or `..` segment, an empty segment, invalid UTF-8) is denied
//! on a route that has rules.

use serde::{Deserialize, Serialize};

use crate::path_glob::PathGlob;

/// The presets a rule may name, and the rule each stands for.
pub const PRESETS: [(&str, &str); 1] = [("read-only", "GET,HEAD,OPTIONS /**")];

/// One rule as written in a manifest or egress's config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RuleSpec {
    /// A preset's name (`"read-only"`).
    Preset(String),
    /// `{allow = "..."}` or `{deny = "..."}`.
    Table(RuleTable),
}

/// The table form of a rule: exactly one of `allow` or `deny`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTable {
    /// `"METHODS PATH_GLOB"` to allow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<String>,
    /// `"METHODS PATH_GLOB"` to deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<String>,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The request may carry the credential.
    Allow,
    /// The request is refused; the credential is never sent.
    Deny,
}

/// One compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    action: Action,
    /// Upper-case method names; `None` = any method.
    methods: Option<Vec<String>>,
    glob: PathGlob,
    /// As written, for messages.
    text: String,
}

/// A route's compiled rules, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A deny rule matched (its text).
    Denied(String),
    /// No rule matched (the route's rules are an allowlist).
    NoMatch,
    /// The path can be read two ways (what makes it so).
    Ambiguous(&'static str),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Denied(rule) => write!(f, "denied by `{rule}`"),
            Refusal::NoMatch => f.write_str("no rule allows it"),
            Refusal::Ambiguous(why) => write!(f, "ambiguous path ({why})"),
        }
    }
}

fn parse_methods(methods: &str) -> Result<Option<Vec<String>>, String> {
    if methods == "*" {
        return Ok(None);
    }
    let mut out = Vec::new();
    for m in methods.split(',') {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!(
                "{methods:?} is not a method list (e.g. `GET,HEAD`, or `*` for any)"
            ));
        }
        out.push(m.to_ascii_uppercase());
    }
    Ok(Some(out))
}

fn compile_one(action: Action, text: &str) -> Result<Rule, String> {
    let (methods, glob) = text.trim().split_once(char::is_whitespace).ok_or_else(|| {
        format!("{text:?} must be `METHODS PATH_GLOB`, e.g. `GET,HEAD /repos/acme/app/**`")
    })?;
    Ok(Rule {
        action,
        methods: parse_methods(methods)?,
        glob: PathGlob::parse(glob.trim())?,
        text: text.trim().to_string(),
    })
}

/// Compile a route's rules; an error names the rule (`rules[i]`) and what to fix.
pub fn compile(specs: &[RuleSpec]) -> Result<Rules, String> {
    let mut rules = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let at = |e: String| format!("rules[{i}]: {e}");
        let rule = match spec {
            RuleSpec::Preset(name) => {
                let (_, text) = PRESETS.iter().find(|(p, _)| p == name).ok_or_else(|| {
                    let known: Vec<&str> = PRESETS.iter().map(|(p, _)| *p).collect();
                    at(format!(
                        "unknown preset {name:?} (presets: {}; or write {{allow = \"METHODS /path/**\"}})",
                        known.join(", ")
                    ))
                })?;
                compile_one(Action::Allow, text).map_err(at)?
            }
            RuleSpec::Table(RuleTable {
                allow: Some(text),
                deny: None,
            }) => compile_one(Action::Allow, text).map_err(at)?,
            RuleSpec::Table(RuleTable {
                allow: None,
                deny: Some(text),
            }) => compile_one(Action::Deny, text).map_err(at)?,
            RuleSpec::Table(_) => {
                return Err(at("give exactly one of `allow` or `deny`".to_string()))
            }
        };
        rules.push(rule);
    }
    Ok(Rules { rules })
}

/// `path` percent-decoded and lower-cased, or why it is ambiguous.
fn canonical_path(path: &str) -> Result<String, &'static str> {
    let raw = path.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            let (Some(h), Some(l)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) else {
                return Err("a `%` not followed by two hex digits");
            };
            let byte = (h * 16 + l) as u8;
            if byte == b'/' || byte == b'\\' {
                return Err("an encoded `/` or `\\`");
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    if out.contains(&b'\\') {
        return Err("a `\\`");
    }
    let decoded = String::from_utf8(out).map_err(|_| "invalid UTF-8 after decoding")?;
    if !decoded.starts_with('/') {
        return Err("not an absolute path");
    }
    if decoded[1..].split('/').any(|s| s == "." || s == "..") {
        return Err("a `.` or `..` segment");
    }
    if decoded.contains("//") {
        return Err("an empty segment");
    }
    Ok(decoded.to_ascii_lowercase())
}

impl Rules {
    /// No rules: every request is allowed.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Decide on a request with `method` and `path` (the path only, as sent: no query).
    pub fn check(&self, method: &str, path: &str) -> Result<(), Refusal> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let path = canonical_path(path).map_err(Refusal::Ambiguous)?;
        let method = method.to_ascii_uppercase();
        for rule in &self.rules {
            let method_ok = rule.methods.as_ref().is_none_or(|ms| ms.contains(&method));
            if method_ok && rule.glob.matches_folded(path.as_bytes()) {
                return match rule.action {
                    Action::Allow => Ok(()),
                    Action::Deny => Err(Refusal::Denied(rule.text.clone())),
                };
            }
        }
        Err(Refusal::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(specs: &[&str]) -> Rules {
        let specs: Vec<RuleSpec> = specs
            .iter()
            .map(|s| match s.split_once(' ') {
                Some(("allow", rest)) => RuleSpec::Table(RuleTable {
                    allow: Some(rest.into()),
                    deny: None,
                }),
                Some(("deny", rest)) => RuleSpec::Table(RuleTable {
                    allow: None,
                    deny: Some(rest.into()),
                }),
                _ => RuleSpec::Preset(s.to_string()),
            })
            .collect();
        compile(&specs).unwrap()
    }

    #[test]
    fn first_match_decides_and_no_match_is_denied() {
        let r = rules(&[
            "deny POST /repos/*/*/pulls/*/merge",
            "allow GET,POST /repos/acme/app/**",
            "read-only",
        ]);
        assert_eq!(r.check("GET", "/repos/acme/app/issues"), Ok(()));
        assert_eq!(r.check("POST", "/repos/acme/app/issues"), Ok(()));
        assert_eq!(
            r.check("POST", "/repos/acme/app/pulls/1/merge"),
            Err(Refusal::Denied("POST /repos/*/*/pulls/*/merge".into()))
        );
        assert_eq!(r.check("GET", "/user"), Ok(()), "read-only");
        assert_eq!(r.check("DELETE", "/repos/acme/app"), Err(Refusal::NoMatch));
        assert_eq!(r.check("DELETE", "/user"), Err(Refusal::NoMatch));
        assert_eq!(Rules::default().check("DELETE", "/x"), Ok(()));
    }

    #[test]
    fn star_stays_in_a_segment_and_double_star_crosses() {
        let r = rules(&["allow * /a/*/c", "deny * /**"]);
        assert_eq!(r.check("GET", "/a/b/c"), Ok(()));
        assert!(r.check("GET", "/a/b/x/c").is_err());
        assert!(r.check("GET", "/a//c").is_err());
        let r = rules(&["allow * /a/**"]);
        assert_eq!(r.check("GET", "/a/b/x/c"), Ok(()));
        assert_eq!(r.check("GET", "/a/"), Ok(()));
        assert!(r.check("GET", "/ab").is_err());
    }

    #[test]
    fn encodings_case_and_dot_segments_do_not_side_step_a_deny() {
        let r = rules(&["deny POST /repos/*/*/pulls/*/merge", "allow * /**"]);
        for sneaky in [
            "/repos/acme/app/pulls/1/%6derge",
            "/repos/ACME/App/pulls/1/MERGE",
            "/repos/acme/app/pulls/1/merg%65",
        ] {
            assert!(
                matches!(r.check("post", sneaky), Err(Refusal::Denied(_))),
                "{sneaky}"
            );
        }
        for ambiguous in [
            "/repos/acme/app/pulls/1/x/../merge",
            "/repos/acme/app/pulls/1%2fmerge",
            "/repos/acme/app/./pulls/1/merge",
            "/repos//acme",
            "/a%ZZ",
            "/a%ff",
            "/a\\b",
        ] {
            assert!(
                matches!(r.check("GET", ambiguous), Err(Refusal::Ambiguous(_))),
                "{ambiguous}"
            );
        }
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule_and_the_fix() {
        let bad = |spec: RuleSpec| compile(&[spec]).unwrap_err();
        assert!(bad(RuleSpec::Preset("write-all".into())).contains("unknown preset"));
        let table = |allow: Option<&str>, deny: Option<&str>| {
            RuleSpec::Table(RuleTable {
                allow: allow.map(Into::into),
                deny: deny.map(Into::into),
            })
        };
        assert!(bad(table(Some("GET /a"), Some("GET /b"))).contains("exactly one"));
        assert!(bad(table(None, None)).contains("exactly one"));
        assert!(bad(table(Some("/a"), None)).contains("METHODS PATH_GLOB"));
        assert!(bad(table(Some("GET a/b"), None)).contains("must start with `/`"));
        assert!(bad(table(Some("G-T /a"), None)).contains("not a method list"));
        assert!(bad(table(Some("GET /a?x=1"), None)).contains("no `?query`"));
        assert!(bad(table(Some("GET /a/***"), None)).contains("`***`"));
        assert!(
            compile(&[table(Some("GET /a"), None), RuleSpec::Preset("x".into())])
                .unwrap_err()
                .starts_with("rules[1]: ")
        );
    }

    #[test]
    fn rules_read_from_json_as_written() {
        let specs: Vec<RuleSpec> =
            serde_json::from_str(r#"["read-only", {"deny": "* /admin/**"}]"#).unwrap();
        let r = compile(&specs).unwrap();
        assert_eq!(r.check("HEAD", "/x"), Ok(()));
        assert!(serde_json::from_str::<Vec<RuleSpec>>(r#"[{"allow": "GET /", "x": 1}]"#).is_err());
    }

    #[test]
    fn long_paths_and_many_stars_stay_cheap() {
        let glob = format!("/{}", "**a".repeat(100));
        let r = rules(&[&format!("allow * {glob}")]);
        let path = format!("/{}", "a".repeat(8000));
        assert_eq!(r.check("GET", &path), Ok(()));
        let path = format!("/{}b", "a".repeat(8000));
        assert_eq!(r.check("GET", &path), Err(Refusal::NoMatch));
    }
}
