//! The secret (DLP) scanner shared by pipelock (HTTP requests) and git-gate (pushed content).
//!
//! Two kinds of secret are found:
//! - **known token formats** ([`RULES`]: AWS keys, GitHub/GitLab/Slack tokens, private-key
//!   blocks, JWTs, cloud API keys, and `key=`/`token=`/`secret=`/`password=` assignments whose
//!   value has high Shannon entropy);
//! - **configured values** (the contents of files that must never leave, see
//!   [`values_from_text`]) in raw, base64 (standard and URL-safe, any alignment), base32,
//!   hex (either case) and URL-encoded form.
//!
//! Speed matters (git-gate scans whole pushes; the goal is ≥ 100 MB/s on one core), so no
//! per-pattern loop runs over clean input: one Aho-Corasick pass over each rule's literal
//! anchors (`AKIA`, `ghp_`, `-----BEGIN`, …) decides which rules can match at all, and only
//! those rules' regexes run. Configured values are one more Aho-Corasick automaton.
//!
//! A [`Finding`] names the rule and the offset, and carries a redacted excerpt only (at most
//! the well-known prefix of the token, e.g. `ghp_…(40 chars)`): findings are logged and shown
//! to people, so they never contain the secret.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::Regex;

/// Knobs of a [`Scanner`]. `Default` gives the built-in rules and no configured values.
#[derive(Debug, Clone)]
pub struct SecretConfig {
    /// Values that must never leave, e.g. from [`values_from_text`]. Values shorter than
    /// `min_value_len` are ignored (too many false positives).
    pub values: Vec<String>,
    /// Minimum length of a configured value that is searched for.
    pub min_value_len: usize,
    /// Minimum Shannon entropy (bits per character) of a `key=`/`token=` value to count as a
    /// secret. Random base64 is ~5–6, hex ~3.7–4, English words and identifiers ~2.5–3.3.
    pub entropy_threshold: f64,
}

impl Default for SecretConfig {
    fn default() -> Self {
        SecretConfig {
            values: Vec::new(),
            min_value_len: 8,
            entropy_threshold: 3.5,
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

/// What extra check a rule's match must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// The regex alone decides.
    None,
    /// Capture group 1 must have Shannon entropy ≥ the threshold and mix letters and digits.
    Entropy,
}

/// A built-in rule: its name, literal anchors (case-insensitive; one must occur for the regex
/// to be tried), the regex, the extra check and how many leading characters are safe to show.
#[derive(Debug)]
pub struct Rule {
    /// Stable name, used in denial messages and logs.
    pub name: &'static str,
    anchors: &'static [&'static str],
    pattern: &'static str,
    check: Check,
    show_prefix: usize,
}

macro_rules! rule {
    ($name:literal, [$($a:literal),+], $pat:literal, $show:literal) => {
        Rule { name: $name, anchors: &[$($a),+], pattern: $pat, check: Check::None, show_prefix: $show }
    };
    ($name:literal, [$($a:literal),+], $pat:literal, $show:literal, entropy) => {
        Rule { name: $name, anchors: &[$($a),+], pattern: $pat, check: Check::Entropy, show_prefix: $show }
    };
}

/// The built-in token formats. Regexes are byte regexes with Unicode off (ASCII classes).
pub static RULES: &[Rule] = &[
    rule!(
        "aws-access-key",
        ["AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA"],
        r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
        4
    ),
    rule!(
        "aws-secret-key",
        ["aws"],
        r#"(?i)aws_?(?:secret_?access_?key|secret_?key|secret)["']?\s*[:=]\s*["']?[A-Za-z0-9/+]{40}\b"#,
        0
    ),
    rule!(
        "github-token",
        ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
        4
    ),
    rule!(
        "github-fine-grained-token",
        ["github_pat_"],
        r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b",
        11
    ),
    rule!(
        "gitlab-token",
        ["glpat-", "gldt-", "glptt-", "glrt-", "gloas-", "glcbt-"],
        r"\b(?:glpat|gldt|glptt|glrt|gloas|glcbt)-[A-Za-z0-9_\-]{20,64}",
        6
    ),
    rule!(
        "slack-token",
        ["xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-", "xoxe"],
        r"\bxox(?:[abprs]|e(?:\.xox[bp])?)-[A-Za-z0-9\-]{10,250}",
        5
    ),
    rule!(
        "slack-webhook",
        ["hooks.slack.com"],
        r"hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/]{20,}",
        15
    ),
    rule!(
        "private-key",
        ["PRIVATE KEY"],
        r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----",
        10
    ),
    rule!(
        "jwt",
        ["eyJ"],
        r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{16,}",
        3
    ),
    rule!(
        "stripe-key",
        ["sk_live_", "rk_live_", "sk_test_", "rk_test_"],
        r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{20,247}\b",
        8
    ),
    rule!("google-api-key", ["AIza"], r"\bAIza[0-9A-Za-z_\-]{35}", 4),
    rule!(
        "google-oauth-secret",
        ["GOCSPX-"],
        r"\bGOCSPX-[A-Za-z0-9_\-]{28}",
        7
    ),
    rule!(
        "gcp-service-account",
        ["service_account"],
        r#""type"\s*:\s*"service_account""#,
        0
    ),
    rule!(
        "openai-key",
        ["sk-"],
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}T3BlbkFJ[A-Za-z0-9_\-]{20,}",
        3
    ),
    rule!(
        "anthropic-key",
        ["sk-ant-"],
        r"\bsk-ant-(?:api|admin|oat)\d{2}-[A-Za-z0-9_\-]{80,120}",
        7
    ),
    rule!("huggingface-token", ["hf_"], r"\bhf_[A-Za-z]{34,40}\b", 3),
    rule!("npm-token", ["npm_"], r"\bnpm_[A-Za-z0-9]{36}\b", 4),
    rule!(
        "pypi-token",
        ["pypi-AgE"],
        r"\bpypi-AgE[A-Za-z0-9_\-]{50,}",
        5
    ),
    rule!(
        "rubygems-token",
        ["rubygems_"],
        r"\brubygems_[a-f0-9]{48}\b",
        9
    ),
    rule!(
        "docker-hub-token",
        ["dckr_pat_"],
        r"\bdckr_pat_[A-Za-z0-9_\-]{27}",
        9
    ),
    rule!(
        "sendgrid-key",
        ["SG."],
        r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b",
        3
    ),
    rule!("twilio-key", ["SK"], r"\bSK[0-9a-f]{32}\b", 2),
    rule!("mailgun-key", ["key-"], r"\bkey-[0-9a-f]{32}\b", 4),
    rule!(
        "mailchimp-key",
        ["-us"],
        r"\b[0-9a-f]{32}-us[0-9]{1,2}\b",
        0
    ),
    rule!(
        "digitalocean-token",
        ["dop_v1_", "doo_v1_", "dor_v1_"],
        r"\bdo[opr]_v1_[a-f0-9]{64}\b",
        7
    ),
    rule!(
        "shopify-token",
        ["shpat_", "shpca_", "shppa_", "shpss_"],
        r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b",
        6
    ),
    rule!(
        "square-token",
        ["sq0atp-", "sq0csp-", "EAAA"],
        r"\b(?:sq0(?:atp|csp)-[0-9A-Za-z_\-]{22,43}|EAAA[A-Za-z0-9_\-]{60})\b",
        6
    ),
    rule!(
        "azure-storage-key",
        ["AccountKey="],
        r"AccountKey=[A-Za-z0-9+/]{86}==",
        11
    ),
    rule!(
        "databricks-token",
        ["dapi"],
        r"\bdapi[a-f0-9]{32}(?:-\d)?\b",
        4
    ),
    rule!(
        "hashicorp-token",
        ["hvs.", "hvb.", ".atlasv1."],
        r"\b(?:hv[sb]\.[A-Za-z0-9_\-]{24,}|[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_\-]{60,})",
        4
    ),
    rule!(
        "linear-key",
        ["lin_api_"],
        r"\blin_api_[A-Za-z0-9]{40}\b",
        8
    ),
    rule!(
        "telegram-bot-token",
        [":AA"],
        r"\b[0-9]{8,10}:AA[0-9A-Za-z_\-]{33}\b",
        0
    ),
    rule!(
        "discord-webhook",
        ["discord.com/api/webhooks", "discordapp.com/api/webhooks"],
        r"discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_\-]{60,}",
        0
    ),
    rule!(
        "url-credentials",
        ["://"],
        r"\b[a-z][a-z0-9+.\-]{1,20}://[^/\s:@]{1,64}:[^/\s:@]{6,128}@[A-Za-z0-9.\-]",
        0,
        entropy
    ),
    // An identifier ending in a credential word, an assignment, a value. The word starts the
    // identifier, follows a `_`/`-`/`.` part (`DB_PASSWORD`, `app.secret`), or starts a camelCase
    // hump (`dbPassword`, `myServiceToken`); the assignment is `=`, `:`, `:=`, `=>`, a closing
    // `>` (`<apiToken>…`) or a `,` between quoted arguments (`setProperty("X_TOKEN", "…")`).
    rule!(
        "generic-secret",
        [
            "key",
            "token",
            "secret",
            "passw",
            "pwd",
            "credential",
            "auth"
        ],
        r#"(?:^|[^A-Za-z0-9_])((?:[A-Za-z0-9]+[_.\-])*(?:[A-Za-z0-9]*[a-z0-9](?:A(?i:pi[_\-]?key|ccess[_\-]?key|ccess[_\-]?token|uth[_\-]?token|uth)|S(?i:ecret[_\-]?key|ecret)|P(?i:rivate[_\-]?key|assword|asswd|wd)|R(?i:efresh[_\-]?token)|B(?i:earer[_\-]?token)|C(?i:lient[_\-]?secret|redentials?)|T(?i:oken))|(?i:api[_\-]?key|apikey|access[_\-]?key|secret[_\-]?key|private[_\-]?key|access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|bearer[_\-]?token|client[_\-]?secret|token|secret|password|passwd|pwd|credentials?|auth)))["']?\s*(?:[:=]|:=|=>|>|,\s*["'])\s*["']?([^\s"'&,;<>\\]{16,256})"#,
        0,
        entropy
    ),
    // A password on a command line: `curl -u user:pass`, `--user user:pass`. A credential even
    // when it is not random (like a URL's password); shell variables are not values.
    rule!(
        "command-line-credential",
        ["-u ", "-u'", "-u\"", "--user"],
        r#"(?:^|\s)(?:-u|--user)(?:\s+|=)["']?[^\s:'"$]{1,64}:([^\s'"$]{6,128})"#,
        0,
        entropy
    ),
    rule!(
        "bearer-token",
        ["bearer "],
        r"(?i)\bbearer\s+([A-Za-z0-9+/_.~\-]{24,512}=*)",
        0,
        entropy
    ),
];

/// The names of every built-in rule (for docs and tests).
pub fn rule_names() -> impl Iterator<Item = &'static str> {
    RULES.iter().map(|r| r.name)
}

/// Names of the configured-value rules, by encoding.
const LITERAL_RAW: &str = "configured-secret";
const LITERAL_BASE64: &str = "configured-secret-base64";
const LITERAL_BASE32: &str = "configured-secret-base32";
const LITERAL_HEX: &str = "configured-secret-hex";
const LITERAL_URL: &str = "configured-secret-urlencoded";

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
        let anchors = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
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
        out.sort_by_key(|f| f.offset);
        out
    }

    /// The names of the rules that fire on one line of text (git-gate reports file, line and
    /// rule). Empty for a clean line.
    pub fn scan_line(&self, line: &[u8]) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.find(line, false).iter().map(|f| f.rule).collect();
        names.dedup();
        names
    }

    fn find(&self, data: &[u8], first_only: bool) -> Vec<Finding> {
        let mut out = self.find_raw(data, first_only, false);
        if !first_only || out.is_empty() {
            // Token formats inside base64, hex and percent-encoding (nested), within a budget
            // of decoded bytes proportional to the input.
            let mut budget = data.len().saturating_mul(4).saturating_add(64 << 10);
            out.extend(self.find_encoded(data, 1, &mut budget, first_only));
        }
        if first_only {
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
        let mut candidates = vec![false; RULES.len()];
        let mut any = false;
        for m in self.anchors.find_overlapping_iter(data) {
            let rule = self.anchor_rule[m.pattern().as_usize()];
            if !candidates[rule] {
                candidates[rule] = true;
                any = true;
            }
        }
        if any {
            for (i, rule) in RULES.iter().enumerate() {
                if !candidates[i] || (specific_only && is_generic(rule.name)) {
                    continue;
                }
                let regex = &self.rules[i].regex;
                match rule.check {
                    Check::None => {
                        for m in regex.find_iter(data) {
                            out.push(self.finding(rule, m.start(), m.as_bytes()));
                            if first_only {
                                break;
                            }
                        }
                    }
                    Check::Entropy => {
                        for caps in regex.captures_iter(data) {
                            let whole = caps.get(0).map(|m| (m.start(), m.as_bytes()));
                            if caps.len() > 2
                                && caps.get(1).is_some_and(|k| benign_key(k.as_bytes()))
                            {
                                continue;
                            }
                            let value = caps.get(caps.len() - 1).or_else(|| caps.get(0));
                            let (Some((start, bytes)), Some(value)) = (whole, value) else {
                                continue;
                            };
                            let v = value.as_bytes();
                            // A password in a URL is a credential even when it is not random.
                            let (v, threshold) = match rule.name {
                                "url-credentials" => {
                                    (password_of_url(v), self.entropy_threshold.min(3.0))
                                }
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

/// Key names that end like a credential but hold opaque non-secret state (pagination cursors,
/// CSRF tokens, sync tokens).
fn benign_key(key: &[u8]) -> bool {
    const PREFIXES: &[&[u8]] = &[
        b"page",
        b"next",
        b"prev",
        b"continuation",
        b"pagination",
        b"cursor",
        b"csrf",
        b"xsrf",
        b"sync",
        b"resume",
        b"upload",
        b"idempotency",
        b"public",
        b"cache",
    ];
    let key = key.to_ascii_lowercase();
    PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Rules that match shapes rather than formats: reported only when no specific rule fired, so
/// the message names the most specific rule.
fn is_generic(rule: &str) -> bool {
    matches!(
        rule,
        "generic-secret" | "bearer-token" | "url-credentials" | "command-line-credential"
    )
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

/// The values worth protecting in a secret file's text: every trimmed non-comment line, and
/// for `KEY=VALUE` / `KEY: VALUE` lines (env files, YAML) the value too, quotes stripped.
/// Callers drop values shorter than their minimum.
pub fn values_from_text(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(line.to_string());
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some(pos) = line.find(['=', ':']) {
            let value = line[pos + 1..].trim().trim_matches(['"', '\'']);
            if !value.is_empty() {
                out.push(value.to_string());
            }
        }
    }
    out
}

/// Every searched form of a configured value, with the rule name reported for it.
fn encodings(value: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = vec![(LITERAL_RAW, value.to_vec())];
    for shift in 0..3 {
        out.push((LITERAL_BASE64, aligned_fragment(value, shift, 6, B64)));
        out.push((LITERAL_BASE64, aligned_fragment(value, shift, 6, B64URL)));
    }
    for shift in 0..5 {
        out.push((LITERAL_BASE32, aligned_fragment(value, shift, 5, B32)));
    }
    let lower = hex::encode(value).into_bytes();
    out.push((LITERAL_HEX, lower.to_ascii_uppercase()));
    out.push((LITERAL_HEX, lower));
    let url = percent_encode(value);
    if url != value {
        out.push((LITERAL_URL, url));
    }
    out
}

/// The characters of `value`'s encoding (`bits` per character) that depend only on `value`'s
/// bytes when it starts `shift` bytes into the encoded data: the part that appears in *any*
/// encoding of a text containing `value` at that alignment.
fn aligned_fragment(value: &[u8], shift: usize, bits: usize, alphabet: &[u8]) -> Vec<u8> {
    let start_bit = shift * 8;
    let end_bit = start_bit + value.len() * 8;
    let bit = |i: usize| -> u8 {
        if i < start_bit || i >= end_bit {
            0
        } else {
            let j = i - start_bit;
            (value[j / 8] >> (7 - j % 8)) & 1
        }
    };
    let first_char = start_bit.div_ceil(bits);
    let last_char = end_bit / bits; // exclusive
    (first_char..last_char)
        .map(|c| {
            let v = (0..bits).fold(0usize, |acc, k| (acc << 1) | bit(c * bits + k) as usize);
            alphabet[v]
        })
        .collect()
}

/// Percent-encode everything but RFC 3986 unreserved characters (what `encodeURIComponent`
/// and Python's `quote(safe="")` produce).
fn percent_encode(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// Percent-decode `data` (`+` is left alone); used to scan URLs in the form servers read them.
pub fn percent_decode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'%' && i + 2 < data.len() {
            if let (Some(h), Some(l)) = (hex_val(data[i + 1]), hex_val(data[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

/// One hex digit's value (either case).
pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
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
    fn values_from_env_file() {
        let v = values_from_text("# comment\nexport TOKEN=\"abc123xyz789\"\n\nplainsecretvalue\n");
        assert_eq!(
            v,
            vec![
                "export TOKEN=\"abc123xyz789\"",
                "abc123xyz789",
                "plainsecretvalue"
            ]
        );
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
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%41%4a%zz%4"), b"aAJ%zz%4");
    }
}
