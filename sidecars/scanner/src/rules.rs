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
    /// The last capture group is a payment card number: issuer prefix and length, Luhn
    /// ([`crate::validators::card_number`]).
    Luhn,
    /// The last capture group is an IBAN: registered length, ISO 7064 mod 97 == 1
    /// ([`crate::validators::iban`]).
    Mod97,
    /// The last capture group holds a BIP-39 English seed phrase with a valid checksum
    /// ([`crate::validators::bip39_phrase`]).
    Bip39,
    /// The last capture group (or the match) is base58check with a private-key payload: WIF or
    /// BIP-32 extended private key ([`crate::validators::base58check_key`]).
    Base58,
    /// GitHub's CRC-32 checksum of classic tokens, as a confidence aid only: the match fires
    /// either way and the excerpt says whether the checksum holds
    /// ([`crate::validators::github_checksum`]).
    GithubCrc32,
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
    ($name:literal, [$($a:literal),+], $pat:expr, $show:literal) => {
        Rule { name: $name, anchors: &[$($a),+], pattern: $pat, check: Check::None, show_prefix: $show }
    };
    ($name:literal, [$($a:literal),+], $pat:expr, $show:literal, entropy) => {
        Rule { name: $name, anchors: &[$($a),+], pattern: $pat, check: Check::Entropy, show_prefix: $show }
    };
    ($name:literal, [$($a:literal),+], $pat:expr, $show:literal, check $check:ident) => {
        Rule { name: $name, anchors: &[$($a),+], pattern: $pat, check: Check::$check, show_prefix: $show }
    };
}

/// The assignment between a keyword and its value in keyword-anchored rules: an optional
/// closing quote, `=`, `:`, `:=` or `=>`, an optional opening quote (`KEY=v`, `"key": "v"`,
/// `key: v`, `X-Header: v`).
macro_rules! assign {
    () => {
        r#"["']?\s*(?:[:=]|:=|=>)\s*["']?"#
    };
}

/// The built-in token formats. Regexes are byte regexes with Unicode off (ASCII classes).
///
/// Keyword-anchored rules (a provider's variable or header name, then the value's exact shape)
/// check the value's entropy only when it is drawn from a large alphabet: a random 32-hex value
/// is under the 3.5-bit threshold one time in five (a UUID nearly always is), so hex and UUID
/// values are decided by their shape and the keyword. They are not generic ([`is_generic`]):
/// the keyword names the provider and the value has the provider's format.
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
        r#"(?i)aws_?(?:secret_?access_?key|secret_?key|secret)["']?\s*[:=]\s*["']?[A-Za-z0-9/+]{40}(?:[^A-Za-z0-9/+=]|$)"#,
        0
    ),
    // Classic tokens: a prefix and 36 base62 characters, the last 6 of which are GitHub's
    // base62 CRC-32 of the 30 before them. The checksum is a confidence aid, not a filter: the
    // workspace's tests (pipelock, common's dlp, e2e) and GitHub's documentation use tokens of
    // the right shape whose checksum is wrong (`ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789`),
    // and `gh?_` + 36 base62 is specific enough that a miss would cost more than a false
    // alarm. So one `github-token` rule fires on the shape and its excerpt says
    // `checksum valid` or `checksum mismatch` (tokens of another length carry no checksum).
    rule!(
        "github-token",
        ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
        4,
        check GithubCrc32
    ),
    rule!(
        "github-fine-grained-token",
        ["github_pat_"],
        r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b",
        11
    ),
    // Personal/project/group access, OAuth app secret, deploy, runner authentication, CI/CD
    // job, pipeline trigger, feed, incoming mail, agent and SCIM OAuth tokens, and the legacy
    // runner registration token (`GR1348941` + 20).
    rule!(
        "gitlab-token",
        [
            "glpat-",
            "gldt-",
            "glptt-",
            "glrt-",
            "gloas-",
            "glcbt-",
            "glft-",
            "glimt-",
            "glagent-",
            "glsoat-",
            "GR1348941"
        ],
        r"\b(?:(?:glpat|gldt|glptt|glrt|gloas|glcbt|glft|glimt|glagent|glsoat)-[A-Za-z0-9_\-]{20,64}|GR1348941[A-Za-z0-9_\-]{20})",
        4
    ),
    rule!(
        "slack-token",
        ["xox", "xapp-"],
        r"\b(?:xox(?:[abprs]|e(?:\.xox[bp])?)-[A-Za-z0-9\-]{10,250}|xapp-[0-9]-[A-Z0-9]{8,12}-[0-9]{10,16}-[a-f0-9]{64})",
        5
    ),
    rule!(
        "slack-webhook",
        ["hooks.slack.com"],
        r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{20,}",
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
        ["k_live_", "k_test_"],
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
    // Project, service-account and admin keys by their prefix; any `sk-` key by the
    // `T3BlbkFJ` marker (base64 of `OpenAI`) in its middle. The anchors are the marker and the
    // long prefixes, not `sk-` (which `task-`, `disk-`, `ask-` contain).
    rule!(
        "openai-key",
        ["T3BlbkFJ", "sk-proj-", "sk-svcacct-", "sk-admin-"],
        r"\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,}|[A-Za-z0-9_\-]{20,}T3BlbkFJ[A-Za-z0-9_\-]{20,})",
        3
    ),
    rule!(
        "anthropic-key",
        ["sk-ant-"],
        r"\bsk-ant-(?:api|admin|oat)\d{2}-[A-Za-z0-9_\-]{80,120}",
        7
    ),
    // User tokens (`hf_`) and legacy organization tokens (`api_org_`): 34 letters.
    rule!(
        "huggingface-token",
        ["hf_", "api_org_"],
        r"\b(?:hf_|api_org_)[A-Za-z]{34,40}\b",
        3
    ),
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
    // API key SIDs (`SK` + 32 hex) next to a Twilio keyword. Anchored on the keyword: a
    // 2-letter `SK` anchor (case-insensitive) would run this rule on nearly every input.
    rule!(
        "twilio-key",
        ["twilio"],
        concat!(
            r"(?:twilio|TWILIO|Twilio)[A-Za-z0-9_\-]*",
            assign!(),
            r"(SK[0-9a-f]{32})\b"
        ),
        0
    ),
    // An auth token (32 hex) under a Twilio keyword (`TWILIO_AUTH_TOKEN=`, `twilioAuthToken:`);
    // the account SID (`AC` + 32 hex) is an identifier and not matched by itself, and a
    // SID:token pair in a URL is `url-credentials`' job. Keywords are written in their usual casings (lower, UPPER,
    // Capitalized) rather than `(?i:…)`: a few literals the regex engine searches fast, where a
    // case-insensitive word is dozens.
    rule!(
        "twilio-auth-token",
        ["twilio"],
        concat!(
            r"(?:twilio|TWILIO|Twilio)[A-Za-z0-9_\-]*(?:auth|AUTH|Auth)[_\-]?(?:token|TOKEN|Token)",
            assign!(),
            r"([0-9a-f]{32})\b"
        ),
        0
    ),
    // Legacy `key-` + 32 hex, and the newer `<32 hex>-<8 hex>-<8 hex>` under a Mailgun keyword.
    rule!(
        "mailgun-key",
        ["key-", "mailgun"],
        concat!(
            r"\bkey-[0-9a-f]{32}\b|(?:mailgun|MAILGUN|Mailgun)[A-Za-z0-9_\-]*(?:key|KEY|Key)",
            assign!(),
            r"[0-9a-f]{32}-[0-9a-f]{8}-[0-9a-f]{8}\b"
        ),
        4
    ),
    rule!(
        "mailchimp-key",
        ["-us"],
        r"\b[0-9a-f]{32}-us[0-9]{1,2}\b",
        0
    ),
    rule!(
        "digitalocean-token",
        ["_v1_"],
        r"\bdo[opr]_v1_[a-f0-9]{64}\b",
        7
    ),
    rule!(
        "shopify-token",
        ["shp"],
        r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b",
        6
    ),
    rule!(
        "square-token",
        ["sq0", "EAAA"],
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
    // Vault service, batch and recovery tokens.
    rule!(
        "hashicorp-token",
        ["hvs.", "hvb.", "hvr."],
        r"\bhv[sbr]\.[A-Za-z0-9_\-]{24,}",
        4
    ),
    // Terraform Cloud / Enterprise API tokens: 14 random characters, `.atlasv1.`, 60+ more.
    // Nothing is shown: the token starts with its random part.
    rule!(
        "terraform-cloud-token",
        [".atlasv1."],
        r"\b[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_\-]{60,}",
        0
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
        ["/api/webhooks/"],
        r"discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_\-]{60,}",
        0
    ),
    // ---- cloud ----
    // STS session tokens have no fixed prefix (they are base64 of a binary blob): anchored on
    // the variable and header names that carry them.
    rule!(
        "aws-session-token",
        ["aws", "x-amz-security-token"],
        concat!(
            r"(?:(?:aws|AWS|Aws)[_\-]?(?i:session[_\-]?token)|(?i:x-amz-security-token))",
            assign!(),
            r"([A-Za-z0-9/+]{100,4096}={0,2})"
        ),
        0,
        entropy
    ),
    rule!(
        "google-oauth-token",
        ["ya29."],
        r"\bya29\.[A-Za-z0-9_\-]{30,}",
        5
    ),
    // Entra ID (Azure AD) application client secrets: 3 characters, a digit, `Q~`, 34 more
    // (40 in all, alphabet letters, digits, `_~.-`). Bounded on the right by a character
    // outside that alphabet; not on the left, since a left boundary (`(?:^|[^…])`) stops the
    // regex engine from searching for the inner `Q~` first and costs 15× the time. Nothing is
    // shown (the secret starts with its random part).
    rule!(
        "azure-ad-client-secret",
        ["Q~"],
        r"([A-Za-z0-9_~.\-]{3}[0-9]Q~[A-Za-z0-9_~.\-]{34})(?:[^A-Za-z0-9_~.\-]|$)",
        0,
        entropy
    ),
    // A shared access signature: a URL query with the service version `sv=YYYY-MM-DD` and the
    // signature `sig=` (base64 HMAC-SHA256, maybe percent-encoded), in either order.
    rule!(
        "azure-sas-token",
        ["sv=20"],
        r#"\bsv=20[0-9]{2}-[0-9]{2}-[0-9]{2}&(?:[A-Za-z0-9_\-]{1,16}=[^&\s"'<>]{0,128}&){0,16}sig=(?:[A-Za-z0-9+/]|%2[BbFf]){30,}(?:=|%3[Dd]){0,2}|[?&]sig=(?:[A-Za-z0-9+/]|%2[BbFf]){30,}(?:=|%3[Dd]){0,2}&(?:[A-Za-z0-9_\-]{1,16}=[^&\s"'<>]{0,128}&){0,16}sv=20[0-9]{2}-[0-9]{2}-[0-9]{2}"#,
        0
    ),
    rule!(
        "alibaba-access-key",
        ["LTAI"],
        r"\bLTAI[A-Za-z0-9]{12,20}\b",
        4
    ),
    // IBM Cloud API keys (44 characters, no prefix) under the names IBM's tools read.
    rule!(
        "ibm-cloud-api-key",
        ["ibm", "ic_api_key"],
        concat!(
            r"(?i:ibm[_\-]?(?:cloud[_\-]?)?api[_\-]?key|\bic_api_key)",
            assign!(),
            r"([A-Za-z0-9_\-]{44})(?:[^A-Za-z0-9_\-]|$)"
        ),
        0,
        entropy
    ),
    // Oracle Cloud: no rule. OCIDs (`ocid1.…`) identify resources and are not secrets; the API
    // signing key is a PEM block (`private-key`); auth tokens and customer secret keys have no
    // documented shape beyond "random", which `generic-secret` covers under a credential name.
    //
    // Heroku: the `HRKU-` platform API keys, and legacy UUID keys under a Heroku keyword.
    rule!(
        "heroku-api-key",
        ["HRKU-", "heroku"],
        concat!(
            r"\bHRKU-[A-Za-z0-9_\-]{40,80}|(?i:heroku[A-Za-z0-9_\-]*(?:api[_\-]?key|token))",
            assign!(),
            r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b"
        ),
        5
    ),
    // Fly.io org tokens (`fo1_`) and macaroon tokens as `fly auth token` prints them.
    rule!(
        "fly-token",
        ["fo1_", "FlyV1 fm"],
        r"\b(?:fo1_[A-Za-z0-9_\-]{40,64}|FlyV1 fm[12][a-z]?_[A-Za-z0-9+/=_\-,]{40,})",
        4
    ),
    // Vercel access tokens (24 alphanumerics, no prefix) under a Vercel keyword.
    rule!(
        "vercel-token",
        ["vercel"],
        concat!(
            r"(?i:vercel[A-Za-z0-9_\-]*(?:token|key))",
            assign!(),
            r"([A-Za-z0-9]{24})\b"
        ),
        0,
        entropy
    ),
    // Netlify personal access tokens (`nfp_`), and legacy ones under a Netlify keyword.
    rule!(
        "netlify-token",
        ["nfp_", "netlify"],
        concat!(
            r"\bnfp_[A-Za-z0-9]{36,40}\b|(?i:netlify[A-Za-z0-9_\-]*(?:token|key))",
            assign!(),
            r"([A-Za-z0-9_\-]{40,46})(?:[^A-Za-z0-9_\-]|$)"
        ),
        4,
        entropy
    ),
    // Origin CA keys: `v1.0-`, 24 hex, `-`, 146 hex.
    rule!(
        "cloudflare-origin-ca-key",
        ["v1.0-"],
        r"\bv1\.0-[0-9a-f]{24}-[0-9a-f]{146}\b",
        5
    ),
    // API tokens (40 characters) and the global API key (37 hex) have no prefix: anchored on
    // Cloudflare's names for them (`CLOUDFLARE_API_TOKEN`, `CF_API_KEY`, …).
    rule!(
        "cloudflare-api-token",
        ["cloudflare", "cf_api_"],
        concat!(
            r"(?i:cloudflare[A-Za-z0-9_\-]*(?:token|key)|cf_api_(?:token|key))",
            assign!(),
            r"([A-Za-z0-9_\-]{40}|[0-9a-f]{37})(?:[^A-Za-z0-9_\-]|$)"
        ),
        0
    ),
    // Supabase management access tokens (`sbp_` + 40 hex) and secret API keys (`sb_secret_`).
    rule!(
        "supabase-token",
        ["sbp_", "sb_secret_"],
        r"\b(?:sbp_[a-f0-9]{40}\b|sb_secret_[A-Za-z0-9_\-]{20,64})",
        4
    ),
    // ---- AI ----
    rule!("groq-key", ["gsk_"], r"\bgsk_[A-Za-z0-9]{52}\b", 4),
    rule!("xai-key", ["xai-"], r"\bxai-[A-Za-z0-9]{80}\b", 4),
    rule!("replicate-token", ["r8_"], r"\br8_[A-Za-z0-9]{37}\b", 3),
    // Together AI: `tgp_v1_` keys, and legacy 64-hex keys under a Together keyword.
    rule!(
        "together-key",
        ["tgp_v1_", "together_a", "together-a"],
        concat!(
            r"\btgp_v1_[A-Za-z0-9_\-]{43}|(?i:together[_\-]a(?:i[_\-])?(?:pi[_\-]?key|token))",
            assign!(),
            r"([0-9a-f]{64})\b"
        ),
        4,
        entropy
    ),
    // Cohere keys (40 alphanumerics, no prefix) under `COHERE_API_KEY` / `CO_API_KEY`.
    rule!(
        "cohere-key",
        ["cohere", "co_api_key"],
        concat!(
            r"(?i:cohere[A-Za-z0-9_\-]*(?:api[_\-]?key|token)|\bco_api_key)",
            assign!(),
            r"([A-Za-z0-9]{40})\b"
        ),
        0,
        entropy
    ),
    // Mistral keys (32 alphanumerics, no prefix) under a Mistral keyword.
    rule!(
        "mistral-key",
        ["mistral"],
        concat!(
            r"(?i:mistral[A-Za-z0-9_\-]*(?:api[_\-]?key|token))",
            assign!(),
            r"([A-Za-z0-9]{32})\b"
        ),
        0,
        entropy
    ),
    rule!("perplexity-key", ["pplx-"], r"\bpplx-[A-Za-z0-9]{48}\b", 5),
    // Pinecone: `pcsk_<id>_<secret>` keys, and legacy UUID keys under a Pinecone keyword.
    rule!(
        "pinecone-key",
        ["pcsk_", "pinecone"],
        concat!(
            r"\bpcsk_[A-Za-z0-9]{4,8}_[A-Za-z0-9]{50,80}\b|(?i:pinecone[A-Za-z0-9_\-]*(?:api[_\-]?key|token))",
            assign!(),
            r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b"
        ),
        5
    ),
    // ---- code and CI ----
    // Bitbucket app passwords / API tokens (`ATBB` + 32), and secrets under a Bitbucket keyword.
    rule!(
        "bitbucket-token",
        ["ATBB", "bitbucket"],
        concat!(
            r"\bATBB[A-Za-z0-9]{32}\b|(?i:bitbucket[A-Za-z0-9_\-]*(?:app[_\-]?password|secret|token))",
            assign!(),
            r"([A-Za-z0-9]{20,64})\b"
        ),
        4,
        entropy
    ),
    rule!("nuget-key", ["oy2"], r"\boy2[a-z0-9]{43}\b", 3),
    // JFrog API keys (`AKCp` + 69) and reference tokens (`cmVmdGtu`, base64 of `reftkn`, + 56).
    rule!(
        "jfrog-token",
        ["AKCp", "cmVmdGtu"],
        r"\b(?:AKCp[A-Za-z0-9]{69}|cmVmdGtu[A-Za-z0-9]{56})\b",
        4
    ),
    // Doppler personal, service, service-account, CLI, SCIM and audit tokens; service tokens
    // carry a config slug before the secret (`dp.st.dev.…`).
    rule!(
        "doppler-token",
        ["dp."],
        r"\bdp\.(?:pt|st|sa|ct|scim|audit)\.(?:[a-z0-9_\-]{1,30}\.)?[A-Za-z0-9]{40,44}\b",
        3
    ),
    rule!("pulumi-token", ["pul-"], r"\bpul-[a-f0-9]{40}\b", 4),
    // ---- comms and SaaS ----
    // Bot tokens: base64 of the bot's numeric id (so it starts with M, N or O), `.`, a 6-char
    // timestamp, `.`, a 27–38 char HMAC. No literal prefix: anchored on a Discord keyword or
    // the `Authorization: Bot` header.
    rule!(
        "discord-bot-token",
        ["discord", "authorization: bot"],
        concat!(
            r"(?:(?:discord|DISCORD|Discord)[A-Za-z0-9_\-]*(?:token|TOKEN|Token)",
            assign!(),
            r"|(?:authorization|Authorization|AUTHORIZATION):\s*(?:Bot|bot|BOT)\s+)([MNO][A-Za-z0-9_\-]{23,27}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,38})"
        ),
        0,
        entropy
    ),
    // Server and account tokens are UUIDs: anchored on the Postmark keyword or header.
    rule!(
        "postmark-token",
        ["postmark"],
        concat!(
            r"(?i:postmark[A-Za-z0-9_\-]*(?:token|key))",
            assign!(),
            r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b"
        ),
        0
    ),
    rule!(
        "stripe-webhook-secret",
        ["whsec_"],
        r"\bwhsec_[A-Za-z0-9+/]{32,88}={0,2}",
        6
    ),
    // Braintree (PayPal) gateway access tokens.
    rule!(
        "braintree-token",
        ["access_token$"],
        r"\baccess_token\$(?:production|sandbox)\$[a-z0-9]{16}\$[a-f0-9]{32}\b",
        13
    ),
    // Atlassian (Jira, Confluence) API tokens: `ATATT3` and ~180 base64url characters ending
    // in `=` and an 8-hex CRC.
    rule!(
        "atlassian-token",
        ["ATATT3"],
        r"\bATATT3[A-Za-z0-9_\-=]{150,250}",
        6
    ),
    // Notion integration tokens: `ntn_` (current) and `secret_` + 43 alphanumerics (legacy).
    rule!(
        "notion-token",
        ["ntn_", "secret_"],
        r"\b(?:ntn_[A-Za-z0-9]{46}|secret_[A-Za-z0-9]{43})\b",
        4
    ),
    // Sentry organization tokens (`sntrys_` + base64 JSON + `_` + secret) and user tokens.
    rule!(
        "sentry-token",
        ["sntry"],
        r"\b(?:sntrys_eyJ[A-Za-z0-9+/=]{40,}_[A-Za-z0-9+/]{43}|sntryu_[a-f0-9]{64}\b)",
        7
    ),
    // API keys (32 hex) and application keys (40 hex) have no prefix: anchored on Datadog's
    // names for them (`DD_API_KEY`, `DD-APPLICATION-KEY` header, `datadog_api_key`).
    rule!(
        "datadog-key",
        ["datadog", "dd_ap", "dd-ap"],
        concat!(
            r"(?i:datadog[A-Za-z0-9_\-]*(?:api|app|application)[_\-]?key|dd[_\-](?:api|app|application)[_\-]key)",
            assign!(),
            r"([0-9a-f]{40}|[0-9a-f]{32})\b"
        ),
        0
    ),
    // New Relic user API keys, insert (ingest) keys and browser keys.
    rule!(
        "newrelic-key",
        ["NRAK-", "NRII-", "NRJS-"],
        r"\b(?:NRAK-[A-Z0-9]{27}\b|NRII-[A-Za-z0-9_\-]{32}|NRJS-[a-f0-9]{19}\b)",
        5
    ),
    // Grafana Cloud access policy tokens (`glc_` + base64 JSON) and service account tokens.
    rule!(
        "grafana-token",
        ["glc_", "glsa_"],
        r"\b(?:glc_[A-Za-z0-9+/]{32,400}={0,2}|glsa_[A-Za-z0-9]{32}_[a-f0-9]{8}\b)",
        4
    ),
    // REST API keys (20 characters) and integration keys (32 hex) under a PagerDuty keyword.
    rule!(
        "pagerduty-key",
        ["pagerduty"],
        concat!(
            r"(?i:pagerduty[A-Za-z0-9_\-]*(?:key|token))",
            assign!(),
            r"([A-Za-z0-9_+\-]{20}|[0-9a-f]{32})(?:[^A-Za-z0-9_+\-]|$)"
        ),
        0
    ),
    // Okta API tokens: `00` + 40, under an Okta keyword or the `SSWS` authorization scheme.
    rule!(
        "okta-token",
        ["okta", "ssws"],
        concat!(
            r"(?:(?i:okta[A-Za-z0-9_\-]*(?:token|key))",
            assign!(),
            r"|(?i:\bssws)\s+)(00[A-Za-z0-9_\-]{40})(?:[^A-Za-z0-9_\-]|$)"
        ),
        0,
        entropy
    ),
    // Auth0 application client secrets (64 characters) under an Auth0 keyword.
    rule!(
        "auth0-client-secret",
        ["auth0"],
        concat!(
            r"(?i:auth0[A-Za-z0-9_\-]*client[_\-]?secret)",
            assign!(),
            r"([A-Za-z0-9_\-]{64})(?:[^A-Za-z0-9_\-]|$)"
        ),
        0,
        entropy
    ),
    // ---- keys ----
    rule!(
        "putty-private-key",
        ["PuTTY-User-Key-File-"],
        r"PuTTY-User-Key-File-[23]: [a-z0-9\-]+",
        20
    ),
    // age X25519 identities: `AGE-SECRET-KEY-1` + 58 upper-case bech32 characters.
    rule!(
        "age-secret-key",
        ["AGE-SECRET-KEY-1"],
        r"\bAGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}\b",
        16
    ),
    // ---- finance and crypto ----
    // Card numbers and IBANs have no literal prefix, and a digit-run regex over every input
    // would cost the prefilter its point. They are anchored on the words that label them
    // (`card` — also in `cardNumber`, `credit_card`, `card_no` — and `cc_num`; `iban`), and the
    // number must follow within a few dozen characters (same line or the next, as in
    // pretty-printed JSON). Not `pan`: `span`, `company`, `expand` would make it run on all
    // text. The validator (issuer table + Luhn; registered length + mod 97) then decides, and
    // the finding is the number itself.
    rule!(
        "credit-card-number",
        ["card", "cc_num"],
        r"(?:card|CARD|Card|cc_num|CC_NUM)(?s:.){0,48}?\b([0-9]{13,19}|[0-9]{4}(?:[ \-][0-9]{4}){2}[ \-][0-9]{1,7}|[0-9]{4}(?:[ \-][0-9]{4}){3}[ \-][0-9]{3}|[0-9]{4}[ \-][0-9]{6}[ \-][0-9]{4,5})\b",
        0,
        check Luhn
    ),
    rule!(
        "iban",
        ["iban"],
        r"(?i:iban)(?s:.){0,32}?\b([A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?)\b",
        0,
        check Mod97
    ),
    // A run of 12–30 lowercase words near a seed-phrase word; the validator looks in the run
    // for 12/15/18/21/24 wordlist words with a valid BIP-39 checksum.
    rule!(
        "bip39-seed-phrase",
        ["mnemonic", "seed", "phrase"],
        r"(?:mnemonic|MNEMONIC|Mnemonic|seed|SEED|Seed|phrase|PHRASE|Phrase)(?s:.){0,40}?\b((?:[a-z]{3,8}[ \t\r\n,]+){11,29}[a-z]{3,8})\b",
        0,
        check Bip39
    ),
    // WIF private keys (51–52 base58 characters starting 5/K/L, or 9/c on testnet) near a
    // key word; base58check with a private-key payload decides.
    rule!(
        "bitcoin-wif-key",
        ["wif", "priv"],
        r"(?:wif|WIF|(?:priv|PRIV|Priv)(?i:ate)?[_ \-]?(?i:key))(?s:.){0,40}?\b([5KLc9][1-9A-HJ-NP-Za-km-z]{50,51})\b",
        0,
        check Base58
    ),
    // BIP-32 extended private keys (xprv and its SLIP-132 / testnet siblings).
    rule!(
        "bitcoin-xprv",
        ["prv"],
        r"\b[xtyzuv]prv[1-9A-HJ-NP-Za-km-z]{105,108}\b",
        4,
        check Base58
    ),
    // A raw 256-bit private key (64 hex, optionally 0x) under an Ethereum / private-key name.
    rule!(
        "ethereum-private-key",
        ["priv", "eth_", "eth-"],
        concat!(
            r"(?:(?:priv|PRIV|Priv)(?i:ate)?[_\-]?(?i:key)|(?:eth|ETH|Eth)[_\-](?i:key|secret|wallet[_\-]?key))",
            assign!(),
            r"(?:0x)?([0-9a-fA-F]{64})\b"
        ),
        0,
        entropy
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
