//! The built-in rules, as data: each token format's name, its literal anchors for the
//! prefilter, its regex, the extra check its match must pass and how much of it is safe to show.
//! The engine ([`crate::engine`]) compiles them; nothing here runs.

/// What extra check a rule's match must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
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
    pub(crate) anchors: &'static [&'static str],
    pub(crate) pattern: &'static str,
    pub(crate) check: Check,
    pub(crate) show_prefix: usize,
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

/// Key names that end like a credential but hold opaque non-secret state (pagination cursors,
/// CSRF tokens, sync tokens).
pub(crate) fn benign_key(key: &[u8]) -> bool {
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
pub(crate) fn is_generic(rule: &str) -> bool {
    matches!(
        rule,
        "generic-secret" | "bearer-token" | "url-credentials" | "command-line-credential"
    )
}
