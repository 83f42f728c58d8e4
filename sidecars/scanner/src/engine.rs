//! The matching engine: compiles [`crate::rules::RULES`] and the configured values once, then
//! scans buffers — one Aho-Corasick pass over the rules' anchors picks the regexes worth
//! running, one more automaton finds configured values, and encoded runs are decoded
//! ([`crate::encodings`]) and scanned again, nested and within a budget.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::bytes::Regex;

use crate::literals::encodings;
use crate::rules::{benign_key, is_generic, Check, Rule, RULES};

/// Knobs of a [`Scanner`]. `Default` gives the built-in rules and no configured values.
#[derive(Debug, Clone)]
pub struct SecretConfig {
    /// Values that must never leave, e.g. from [`crate::literals::values_from_text`]. Values shorter than
    /// `min_value_len` are ignored (too many false positives).
    pub values: Vec<String>,
    /// Minimum length of a configured value that is searched for.
    pub min_value_len: usize,
    /// Minimum Shannon entropy (bits per character) of a `key=`/`token=` value to count as a
    /// secret. Random base64 is ~5–6, hex ~3.7–4, English words and identifiers ~2.5–3.3.
    pub entropy_threshold: f64,
    /// The operator's allowlist: a finding whose matched text matches one of these byte
    /// regexes is dropped.
    pub allow_regexes: Vec<String>,
    /// The operator's allowlist: a finding whose matched text contains one of these (ASCII
    /// case-insensitive) is dropped.
    pub allow_stopwords: Vec<String>,
}

impl Default for SecretConfig {
    fn default() -> Self {
        SecretConfig {
            values: Vec::new(),
            min_value_len: 8,
            entropy_threshold: 3.5,
            allow_regexes: Vec::new(),
            allow_stopwords: Vec::new(),
        }
    }
}

/// One secret found. Never holds the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule that fired, e.g. `aws-access-key` or `configured-secret-base64`.
    pub rule: &'static str,
    /// Byte offset of the match in the scanned data.
    pub offset: usize,
    /// Length of the match in bytes.
    pub len: usize,
    /// A redacted excerpt safe to log and show, e.g. `AKIA…(20 chars)`.
    pub redacted: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rule {} at offset {}: {}",
            self.rule, self.offset, self.redacted
        )
    }
}

/// Why a scanner could not be built (only if the configured values are absurdly many/long).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the secret scanner: {0}")]
pub struct ScannerError(String);

struct Compiled {
    regex: Regex,
}

/// A compiled scanner: build once (per config), share across threads, scan many buffers.
pub struct Scanner {
    anchors: AhoCorasick,
    anchor_rule: Vec<usize>,
    rules: Vec<Compiled>,
    literals: Option<AhoCorasick>,
    literal_rule: Vec<&'static str>,
    entropy_threshold: f64,
    allow: Option<Allow>,
}

/// Buffers up to this size are matched whole; in larger ones each rule's regex runs only in
/// windows around its anchors, so one `key` in a megabyte does not run the generic rule over
/// all of it.
const WHOLE_BUFFER: usize = 16 << 10;
/// A window reaches at least this far before its anchor and after it (a key, its assignment
/// and a 256-character value; a seed phrase over a few lines), then out to whole lines.
const WINDOW_BEFORE: usize = 512;
const WINDOW_AFTER: usize = 2048;
/// A window made of whole lines is cut to this much around its anchor on very long lines
/// (minified code), far beyond the longest token format.
const WINDOW_LIMIT: usize = 64 << 10;

/// The part of `data` a rule anchored at `start..end` is matched in: whole lines from
/// [`WINDOW_BEFORE`] before the anchor to [`WINDOW_AFTER`] after it, within [`WINDOW_LIMIT`].
fn window(data: &[u8], start: usize, end: usize) -> (usize, usize) {
    let from = start.saturating_sub(WINDOW_BEFORE);
    let to = (end + WINDOW_AFTER).min(data.len());
    let line_start = memchr::memrchr(b'\n', &data[..from]).map_or(0, |i| i + 1);
    let line_end = memchr::memchr(b'\n', &data[to..]).map_or(data.len(), |i| to + i + 1);
    (
        line_start.max(start.saturating_sub(WINDOW_LIMIT)),
        line_end.min(end + WINDOW_LIMIT).min(data.len()),
    )
}

/// The operator's allowlist, compiled (see [`SecretConfig::allow_regexes`]).
struct Allow {
    regexes: regex::bytes::RegexSet,
    stopwords: Option<AhoCorasick>,
}

impl Allow {
    fn new(config: &SecretConfig) -> Result<Option<Allow>, ScannerError> {
        if config.allow_regexes.is_empty() && config.allow_stopwords.is_empty() {
            return Ok(None);
        }
        let regexes = regex::bytes::RegexSet::new(&config.allow_regexes)
            .map_err(|e| ScannerError(format!("allowlist regex: {e}")))?;
        let words: Vec<&str> = config
            .allow_stopwords
            .iter()
            .map(|w| w.trim())
            .filter(|w| !w.is_empty())
            .collect();
        let stopwords = if words.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .build(&words)
                    .map_err(|e| ScannerError(e.to_string()))?,
            )
        };
        Ok(Some(Allow { regexes, stopwords }))
    }

    /// Whether the operator accepts a finding whose matched text is `text`.
    fn accepts(&self, text: &[u8]) -> bool {
        self.regexes.is_match(text) || self.stopwords.as_ref().is_some_and(|s| s.is_match(text))
    }
}

impl std::fmt::Debug for Scanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanner")
            .field("rules", &self.rules.len())
            .field("configured_patterns", &self.literal_rule.len())
            .finish()
    }
}

impl Scanner {
    /// Compile the built-in rules and the configured values' encodings.
    pub fn new(config: &SecretConfig) -> Result<Scanner, ScannerError> {
        let mut anchor_pats = Vec::new();
        let mut anchor_rule = Vec::new();
        let mut rules = Vec::with_capacity(RULES.len());
        for (i, rule) in RULES.iter().enumerate() {
            for a in rule.anchors {
                anchor_pats.push(*a);
                anchor_rule.push(i);
            }
            let regex = Regex::new(&format!("(?-u){}", rule.pattern))
                .map_err(|e| ScannerError(format!("rule {}: {e}", rule.name)))?;
            rules.push(Compiled { regex });
        }
        // Always a DFA: the builder's default picks one only up to 100 patterns and falls back
        // to an NFA ~3.5× slower per byte; the rules have more anchors than that, and the DFA
        // costs well under 1 MB.
        let anchors = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .kind(Some(AhoCorasickKind::DFA))
            .match_kind(MatchKind::Standard)
            .build(&anchor_pats)
            .map_err(|e| ScannerError(e.to_string()))?;

        let mut pats: Vec<Vec<u8>> = Vec::new();
        let mut literal_rule = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for value in &config.values {
            let value = value.trim();
            if value.len() < config.min_value_len {
                continue;
            }
            for (rule, pat) in encodings(value.as_bytes()) {
                // Fragments of encodings shorter than this would match innocent text.
                if pat.len() >= config.min_value_len.max(6) && seen.insert(pat.clone()) {
                    pats.push(pat);
                    literal_rule.push(rule);
                }
            }
        }
        let literals = if pats.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&pats)
                    .map_err(|e| ScannerError(e.to_string()))?,
            )
        };
        Ok(Scanner {
            anchors,
            anchor_rule,
            rules,
            literals,
            literal_rule,
            entropy_threshold: config.entropy_threshold,
            allow: Allow::new(config)?,
        })
    }

    /// The first secret in `data` (lowest offset), if any.
    pub fn scan(&self, data: &[u8]) -> Option<Finding> {
        self.find(data, true).into_iter().next()
    }

    /// Every secret in `data`, ordered by offset.
    pub fn scan_all(&self, data: &[u8]) -> Vec<Finding> {
        self.find(data, false)
    }

    /// The token formats and configured values in `data`, without the generic `key = value`
    /// shapes: for binary data (a pushed binary file), where those shapes would fire on noise.
    pub fn scan_specific(&self, data: &[u8]) -> Vec<Finding> {
        let mut out = self.find_raw(data, false, true);
        self.drop_allowed(data, &mut out);
        out.sort_by_key(|f| f.offset);
        out
    }

    /// Drops the findings the operator's allowlist accepts (judged on the matched text; for a
    /// finding inside an encoding, the encoded run).
    fn drop_allowed(&self, data: &[u8], findings: &mut Vec<Finding>) {
        if let Some(allow) = &self.allow {
            findings.retain(|f| {
                let text = data.get(f.offset..f.offset + f.len).unwrap_or_default();
                !allow.accepts(text)
            });
        }
    }

    /// The names of the rules that fire on one line of text (git-gate reports file, line and
    /// rule). Empty for a clean line.
    pub fn scan_line(&self, line: &[u8]) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.find(line, false).iter().map(|f| f.rule).collect();
        names.dedup();
        names
    }

    fn find(&self, data: &[u8], first_only: bool) -> Vec<Finding> {
        // With an allowlist, the first finding may be an allowed one: look at all of them.
        let want_first = first_only;
        let first_only = first_only && self.allow.is_none();
        let mut out = self.find_raw(data, first_only, false);
        if !first_only || out.is_empty() {
            // Token formats inside base64, hex and percent-encoding (nested), within a budget
            // of decoded bytes proportional to the input.
            let mut budget = data.len().saturating_mul(4).saturating_add(64 << 10);
            out.extend(self.find_encoded(data, 1, &mut budget, first_only));
        }
        self.drop_allowed(data, &mut out);
        if want_first {
            out.sort_by_key(|f| (is_generic(f.rule), f.offset));
            out.truncate(1);
        } else {
            out.sort_by_key(|f| f.offset);
        }
        out
    }

    /// Findings of the token formats (not the generic shapes: decoded binary is no place for
    /// `key = value`) and configured values in the encoded runs of `data`, reported at the run.
    fn find_encoded(
        &self,
        data: &[u8],
        depth: usize,
        budget: &mut usize,
        first_only: bool,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        for view in crate::encodings::views(data, budget) {
            let mut inner = self.find_raw(&view.bytes, first_only, true);
            if depth < crate::encodings::MAX_DEPTH && (inner.is_empty() || !first_only) {
                inner.extend(self.find_encoded(&view.bytes, depth + 1, budget, first_only));
            }
            for f in inner {
                out.push(Finding {
                    rule: f.rule,
                    offset: view.offset,
                    len: view.len,
                    redacted: format!("{}, {}-encoded", f.redacted, view.encoding),
                });
                if first_only {
                    return out;
                }
            }
        }
        out
    }

    fn find_raw(&self, data: &[u8], first_only: bool, specific_only: bool) -> Vec<Finding> {
        let mut out = Vec::new();
        // Per candidate rule, the windows around its anchors (merged as they come: the
        // overlapping search reports matches in order of their ends).
        let mut windows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); RULES.len()];
        let whole = data.len() <= WHOLE_BUFFER;
        for m in self.anchors.find_overlapping_iter(data) {
            let rule = self.anchor_rule[m.pattern().as_usize()];
            let list = &mut windows[rule];
            if whole {
                if list.is_empty() {
                    list.push((0, data.len()));
                }
                continue;
            }
            if list.last().is_some_and(|&(_, end)| m.start() < end) {
                continue;
            }
            let (start, end) = window(data, m.start(), m.end());
            match list.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => list.push((start, end)),
            }
        }
        for (i, rule) in RULES.iter().enumerate() {
            if windows[i].is_empty() || (specific_only && is_generic(rule.name)) {
                continue;
            }
            let regex = &self.rules[i].regex;
            for &(base, end) in &windows[i] {
                let found = out.len();
                self.match_rule(rule, regex, &data[base..end], base, first_only, &mut out);
                if first_only && out.len() > found {
                    break;
                }
            }
        }
        if let Some(literals) = &self.literals {
            for m in literals.find_iter(data) {
                let rule = self.literal_rule[m.pattern().as_usize()];
                out.push(Finding {
                    rule,
                    offset: m.start(),
                    len: m.len(),
                    redacted: format!("(configured value, {} chars)", m.len()),
                });
                if first_only {
                    break;
                }
            }
        }
        out
    }

    /// The findings of `rule` in `slice`, which starts at `base` of the scanned buffer.
    fn match_rule(
        &self,
        rule: &'static Rule,
        regex: &Regex,
        slice: &[u8],
        base: usize,
        first_only: bool,
        out: &mut Vec<Finding>,
    ) {
        match rule.check {
            Check::None => {
                for m in regex.find_iter(slice) {
                    out.push(self.finding(rule, base + m.start(), m.as_bytes()));
                    if first_only {
                        break;
                    }
                }
            }
            Check::Entropy => {
                for caps in regex.captures_iter(slice) {
                    let whole = caps.get(0).map(|m| (base + m.start(), m.as_bytes()));
                    if caps.len() > 2 && caps.get(1).is_some_and(|k| benign_key(k.as_bytes())) {
                        continue;
                    }
                    let value = caps.get(caps.len() - 1).or_else(|| caps.get(0));
                    let (Some((start, bytes)), Some(value)) = (whole, value) else {
                        continue;
                    };
                    let v = value.as_bytes();
                    // A password in a URL is a credential even when it is not random.
                    let (v, threshold) = match rule.name {
                        "url-credentials" => (password_of_url(v), self.entropy_threshold.min(3.0)),
                        "command-line-credential" => (v, self.entropy_threshold.min(2.5)),
                        _ => (v, self.entropy_threshold),
                    };
                    if looks_random(v, threshold) {
                        out.push(self.finding(rule, start, bytes));
                        if first_only {
                            break;
                        }
                    }
                }
            }
            // The shape fires; the excerpt says whether GitHub's checksum holds.
            Check::GithubCrc32 => {
                for m in regex.find_iter(slice) {
                    let mut f = self.finding(rule, base + m.start(), m.as_bytes());
                    match crate::validators::github_checksum(m.as_bytes()) {
                        Some(true) => f.redacted.push_str(", checksum valid"),
                        Some(false) => f.redacted.push_str(", checksum mismatch"),
                        None => {}
                    }
                    out.push(f);
                    if first_only {
                        break;
                    }
                }
            }
            // The validated value (the last group, else the match) is the finding: the
            // keyword that anchored it is context, not secret.
            Check::Luhn | Check::Mod97 | Check::Bip39 | Check::Base58 => {
                for caps in regex.captures_iter(slice) {
                    let Some(value) = caps.get(caps.len() - 1).or_else(|| caps.get(0)) else {
                        continue;
                    };
                    if crate::validators::validate(rule.check, value.as_bytes()) {
                        out.push(self.finding(rule, base + value.start(), value.as_bytes()));
                        if first_only {
                            break;
                        }
                    }
                }
            }
        }
    }

    fn finding(&self, rule: &'static Rule, offset: usize, bytes: &[u8]) -> Finding {
        let shown = rule.show_prefix.min(bytes.len() / 4);
        let prefix = String::from_utf8_lossy(&bytes[..shown]);
        Finding {
            rule: rule.name,
            offset,
            len: bytes.len(),
            redacted: format!("{prefix}…({} chars)", bytes.len()),
        }
    }
}

/// `user:password@` → `password` (the part whose randomness decides).
fn password_of_url(m: &[u8]) -> &[u8] {
    let Some(scheme_end) = m.windows(3).position(|w| w == b"://") else {
        return m;
    };
    let rest = &m[scheme_end + 3..];
    let at = rest.iter().rposition(|&b| b == b'@').unwrap_or(rest.len());
    let userinfo = &rest[..at];
    match userinfo.iter().position(|&b| b == b':') {
        Some(colon) => &userinfo[colon + 1..],
        None => userinfo,
    }
}

/// Shannon entropy of `data` in bits per byte.
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// A value that looks like a generated secret: entropy over the threshold, and both letters and
/// digits (so long words, paths and snake_case identifiers don't count).
fn looks_random(v: &[u8], threshold: f64) -> bool {
    if v.starts_with(b"${") {
        // A `${vault:NAME}` placeholder: egress substitutes it, it is not itself a secret.
        return false;
    }
    let letters = v.iter().any(|b| b.is_ascii_alphabetic());
    let digits = v.iter().any(|b| b.is_ascii_digit());
    letters && digits && shannon_entropy(v) >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn scanner(values: &[&str]) -> Scanner {
        Scanner::new(&SecretConfig {
            values: values.iter().map(|s| s.to_string()).collect(),
            ..SecretConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn known_formats_fire_with_their_rule() {
        let s = scanner(&[]);
        let cases = [
            ("aws-access-key", "id=AKIAIOSFODNN7EXAMPLE&x=1"),
            ("aws-access-key", "ASIAY34FZKBOKMUTVV7A"),
            ("github-token", "token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
            ("github-token", "ghs_16C7e42F292c6912E7710c838347Ae178B4a"),
            ("github-fine-grained-token", "github_pat_11ABCDEFG0123456789abc_0123456789abcdefghijABCDEFGHIJ0123456789abcdefghijABCDEFGHI"),
            ("gitlab-token", "glpat-xxxxxxxxxxxxxxxxxxxx"),
            ("slack-token", "xoxb-1234567890-abcdefghij"),
            ("private-key", "-----BEGIN RSA PRIVATE KEY-----\nMIIE"),
            ("private-key", "-----BEGIN OPENSSH PRIVATE KEY-----"),
            ("private-key", "-----BEGIN PRIVATE KEY-----"),
            ("jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
            ("generic-secret", "api_key=Zx81kQp2Lm7Vn4Rt9Ws3Yb6"),
            ("generic-secret", r#"{"password": "hQ7$kL9mN2pR5tV8"}"#),
            ("generic-secret", "SECRET: 9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
            ("stripe-key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
            ("google-api-key", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
            ("url-credentials", "https://admin:s3cR3tP4ssw0rd9@db.example.com/"),
            ("bearer-token", "Authorization: Bearer a8F3kL0pQ9zX2cV7bN4mW1eR6tY5uI"),
        ];
        for (rule, text) in cases {
            let f = s
                .scan(text.as_bytes())
                .unwrap_or_else(|| panic!("{rule}: {text}"));
            assert_eq!(f.rule, rule, "{text}");
            assert!(
                !f.redacted.contains(&text[f.offset..f.offset + f.len]),
                "{f}"
            );
        }
    }

    /// The assignment forms the generic rule must see, beyond `snake_case = value`.
    #[test]
    fn credentials_in_camel_case_xml_property_and_command_line_forms_are_found() {
        let s = scanner(&[]);
        let v = "Zx81kQp2Lm7Vn4Rt9Ws3Yb6";
        for (rule, text) in [
            ("generic-secret", format!("dbPassword = \"{v}\"")),
            ("generic-secret", format!("myServiceToken: \"{v}\"")),
            ("generic-secret", format!("\"fooToken\" => \"{v}\"")),
            ("generic-secret", format!("<apiToken>{v}</apiToken>")),
            (
                "generic-secret",
                format!("props.setProperty(\"X_TOKEN\", \"{v}\");"),
            ),
            ("generic-secret", format!("app.secret={v}")),
            ("generic-secret", format!("const clientSecret = '{v}';")),
            ("generic-secret", format!("DbPassword={v}")),
            ("generic-secret", format!("ApiToken: {v}")),
            ("generic-secret", format!("stripeApiKey: {v}")),
            (
                "command-line-credential",
                "curl -u user:P@ssw0rd1 https://example.com".to_string(),
            ),
            (
                "command-line-credential",
                "curl --user admin:hunter2hunter2 https://x".to_string(),
            ),
        ] {
            let f = s
                .scan(text.as_bytes())
                .unwrap_or_else(|| panic!("not found: {text}"));
            assert_eq!(f.rule, rule, "{text}");
        }
    }

    #[test]
    fn near_misses_of_the_assignment_forms_pass() {
        let s = scanner(&[]);
        for text in [
            "const maxTokens = 4096;",
            "<tokenCount>12</tokenCount>",
            "passwordPolicy: \"require-a-long-passphrase\"",
            "let tokenizer = new WordPieceTokenizerFromVocab();",
            "monkeyKeyboard = \"qwertyuiopasdfghjklzxcvbnm\"",
            "keyName: my_long_identifier_name_here",
            "nextPageToken: CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA0a2E4NXN0EAE",
            "curl -u \"$USER:$PASSWORD\" https://example.com",
            "curl -u user https://example.com",
            "tar -u archive.tar",
            "setProperty(\"timeout\", \"30000000000000000\")",
            "authorName = \"Ada Lovelace Byron King\"",
        ] {
            assert_eq!(s.scan(text.as_bytes()), None, "{text}");
        }
    }

    /// Token formats hidden in encodings: base64 at every alignment (standard and URL-safe),
    /// hex plain and delimited, percent-encoding up to three times, and nestings.
    #[test]
    fn token_formats_are_found_inside_encodings_and_their_nestings() {
        use base64::Engine;
        let s = scanner(&[]);
        let b64 = base64::engine::general_purpose::STANDARD;
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let aws = "AKIAQWERTYUIOPASDFGH";
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        let pct = |t: &str| t.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        let mut cases: Vec<(&str, String)> = Vec::new();
        // Prefixes of 0-3 bytes: the token at every alignment of the base64 groups.
        for prefix in ["", " ", "k=", "id:"] {
            cases.push((
                "aws-access-key",
                format!("?d={}", b64.encode(format!("{prefix}{aws}"))),
            ));
            cases.push((
                "aws-access-key",
                format!("d={}&", b64url.encode(format!("{prefix}?{aws}>"))),
            ));
        }
        cases.extend([
            ("jwt", format!("blob: {}", b64.encode(jwt))),
            ("aws-access-key", format!("dump {}", hex::encode(aws))),
            (
                "aws-access-key",
                aws.bytes()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            (
                "aws-access-key",
                aws.bytes()
                    .map(|b| format!("{b:02X}"))
                    .collect::<Vec<_>>()
                    .join("-"),
            ),
            (
                "aws-access-key",
                aws.bytes()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            ("aws-access-key", format!("q={}", pct(aws))),
            ("aws-access-key", format!("q={}", pct(&pct(aws)))),
            ("aws-access-key", format!("q={}", pct(&pct(&pct(aws))))),
            ("aws-access-key", b64.encode(hex::encode(aws))),
            ("aws-access-key", format!("q={}", pct(&b64.encode(aws)))),
            (
                "github-token",
                b64.encode("token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
            ),
        ]);
        for (rule, text) in &cases {
            let f = s
                .scan(text.as_bytes())
                .unwrap_or_else(|| panic!("{rule} not found in {text}"));
            assert_eq!(&f.rule, rule, "{text}");
            assert!(f.redacted.contains("-encoded"), "{f}");
            assert!(!f.redacted.contains(aws), "{f}");
        }
    }

    #[test]
    fn encoded_benign_data_passes() {
        use base64::Engine;
        let s = scanner(&[]);
        let b64 = base64::engine::general_purpose::STANDARD;
        let noise: Vec<u8> = (0u32..3000)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for text in [
            b64.encode("the quick brown fox jumps over the lazy dog, twice over"),
            b64.encode(&noise),
            hex::encode(&noise[..64]),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_string(),
            "commit 3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c".to_string(),
            "%E4%BD%A0%E5%A5%BD%20world%21".to_string(),
            b64.encode("password = correcthorsebatterystaple-and-more"),
        ] {
            assert_eq!(s.scan(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn benign_text_passes() {
        let s = scanner(&[]);
        for text in [
            "GET /repos/rust-lang/rust/commits/3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c HTTP/1.1",
            "id=550e8400-e29b-41d4-a716-446655440000",
            "password=correct horse",
            "token=abc",
            "page_token=CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA0a2E4NXN0EAE",
            "the monkey keyboard is a secret weapon",
            "Authorization: Bearer ${vault:github}",
            "https://user@example.com/path",
            "key_name=my_long_identifier_name_here",
        ] {
            assert_eq!(s.scan(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn configured_values_are_found_in_every_encoding() {
        let secret = "correct-horse-battery-staple-42";
        let s = scanner(&[secret]);
        let b64 = base64::engine::general_purpose::STANDARD;
        let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for prefix in ["", "x", "xy"] {
            let text = format!("{prefix}{secret}!");
            assert!(
                s.scan(b64.encode(&text).as_bytes()).is_some(),
                "b64 {prefix}"
            );
            assert!(
                s.scan(b64url.encode(&text).as_bytes()).is_some(),
                "b64url {prefix}"
            );
        }
        let f = s
            .scan(format!("q={}", hex::encode(secret)).as_bytes())
            .unwrap();
        assert_eq!(f.rule, "configured-secret-hex");
        let f = s.scan(hex::encode_upper(secret).as_bytes()).unwrap();
        assert_eq!(f.rule, "configured-secret-hex");
        let f = s.scan(format!("a {secret} b").as_bytes()).unwrap();
        assert_eq!(f.rule, "configured-secret");
        assert_eq!(f.offset, 2);
        assert!(!f.redacted.contains("horse"));
        let s = scanner(&["p@ss word/with+chars"]);
        let f = s.scan(b"?q=p%40ss%20word%2Fwith%2Bchars").unwrap();
        assert_eq!(f.rule, "configured-secret-urlencoded");
        assert!(scanner(&["short"]).scan(b"short").is_none());
    }

    #[test]
    fn scan_line_and_all() {
        let s = scanner(&[]);
        assert_eq!(
            s.scan_line(b"aws = AKIAIOSFODNN7EXAMPLE ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
            vec!["aws-access-key", "github-token"]
        );
        assert!(s
            .scan_line(b"fn main() { println!(\"hello\"); }")
            .is_empty());
        assert_eq!(
            s.scan_all(b"AKIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPLF")
                .len(),
            2
        );
    }

    #[test]
    fn the_operators_allowlist_drops_only_what_it_names() {
        let fixture = "AKIAZ7QJ4FIXTURE7KQ2";
        let real = "AKIAZ7QJ4REALKEY7KQ3";
        let allowing = |regexes: &[&str], stopwords: &[&str]| {
            Scanner::new(&SecretConfig {
                allow_regexes: regexes.iter().map(|s| s.to_string()).collect(),
                allow_stopwords: stopwords.iter().map(|s| s.to_string()).collect(),
                ..SecretConfig::default()
            })
            .unwrap()
        };
        for s in [allowing(&["FIXTURE"], &[]), allowing(&[], &["fixture"])] {
            assert_eq!(s.scan(fixture.as_bytes()), None);
            assert!(s.scan_specific(fixture.as_bytes()).is_empty());
            // The allowed finding comes first; the real one after it is still found.
            let both = format!("a={fixture} b={real}");
            let f = s.scan(both.as_bytes()).unwrap();
            assert_eq!(
                (f.rule, f.offset),
                ("aws-access-key", both.find(real).unwrap())
            );
            assert_eq!(s.scan_all(both.as_bytes()).len(), 1);
        }
        // No allowlist: both fire.
        assert_eq!(
            scanner(&[])
                .scan_all(format!("{fixture} {real}").as_bytes())
                .len(),
            2
        );
        assert!(Scanner::new(&SecretConfig {
            allow_regexes: vec!["(".into()],
            ..SecretConfig::default()
        })
        .is_err());
    }
}
