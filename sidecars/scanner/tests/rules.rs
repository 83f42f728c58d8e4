//! Every built-in rule, tested with tokens GENERATED from the provider's documented format (a
//! seeded PRNG picks characters of the right alphabet and length; checksums are computed here,
//! independently of the crate's validators), in realistic contexts, and with near misses
//! (wrong length, prefix case, checksum, alphabet) that must not fire the rule. Plus a benign
//! corpus that must stay silent.

use std::collections::BTreeSet;

use base64::Engine;
use scanner::{rule_names, Scanner, SecretConfig};
use sha2::{Digest, Sha256};

// ---- a small deterministic generator ----

/// splitmix64: tiny, seeded, good enough to pick characters.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// `n` characters of `alphabet`.
    fn s(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n).map(|_| a[self.below(a.len())] as char).collect()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const DIGITS: &str = "0123456789";
const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LETTERS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const AN: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_AN: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWER_AN: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &str = "0123456789abcdef";
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const AZURE: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_~.-";
const BECH32_UPPER: &str = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";

impl Rng {
    fn uuid(&mut self) -> String {
        format!(
            "{}-{}-4{}-a{}-{}",
            self.s(HEX, 8),
            self.s(HEX, 4),
            self.s(HEX, 3),
            self.s(HEX, 3),
            self.s(HEX, 12)
        )
    }
}

// ---- checksums, written from the formats' specifications ----

/// Append the Luhn check digit to `body` (ISO/IEC 7812).
fn with_luhn(body: &str) -> String {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                x / 10 + x % 10
            } else {
                d
            }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

/// An IBAN from country code and BBAN: check digits = 98 - (BBAN ++ CC ++ "00" mod 97).
fn iban(cc: &str, bban: &str) -> String {
    let rearranged = format!("{bban}{cc}00");
    let mut rem: u64 = 0;
    for c in rearranged.chars() {
        let v = c.to_digit(36).unwrap() as u64;
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    format!("{cc}{:02}{bban}", 98 - rem)
}

/// GitHub's token checksum: CRC-32 (zlib) of the 30 random characters, base62, 6 wide.
fn github_token(rng: &mut Rng, prefix: &str) -> String {
    let body = rng.s(AN, 30);
    let mut crc = !0u32;
    for b in body.bytes() {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut n = !crc;
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = alphabet[(n % 62) as usize];
        n /= 62;
    }
    format!("{prefix}{body}{}", std::str::from_utf8(&sum).unwrap())
}

fn base58check(payload: &[u8]) -> String {
    bs58::encode(payload).with_check().into_string()
}

const WORDS: &str = include_str!("../src/bip39_english.txt");

/// A BIP-39 phrase of `n` words: random entropy, then SHA-256 checksum bits, 11 bits a word.
fn bip39(rng: &mut Rng, n: usize) -> Vec<&'static str> {
    let words: Vec<&str> = WORDS.lines().collect();
    let entropy = rng.bytes(n * 4 / 3);
    let hash = Sha256::digest(&entropy);
    let mut bits: Vec<u8> = entropy
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1))
        .collect();
    bits.extend((0..n / 3).map(|i| hash[i / 8] >> (7 - i % 8) & 1));
    bits.chunks(11)
        .map(|c| words[c.iter().fold(0usize, |a, &b| a << 1 | b as usize)])
        .collect()
}

// ---- the cases ----

struct Case {
    rule: &'static str,
    text: String,
    /// A part of the token the redacted excerpt must not show.
    secret: String,
}

fn pos(out: &mut Vec<Case>, rule: &'static str, text: String, secret: &str) {
    out.push(Case {
        rule,
        text,
        secret: secret.to_string(),
    });
}

fn positives() -> Vec<Case> {
    let mut r = Rng(0x0005_eed0_f5ec_2e75);
    let mut v = Vec::new();
    let o = &mut v;

    // cloud
    for p in ["AKIA", "ASIA"] {
        let t = format!("{p}{}", r.s(UPPER_AN, 16));
        pos(
            o,
            "aws-access-key",
            format!("aws_access_key_id = {t}\n"),
            &t[4..],
        );
    }
    let t = r.s(B64, 40);
    pos(
        o,
        "aws-secret-key",
        format!("aws_secret_access_key = {t}\n"),
        &t,
    );
    let t = format!("IQoJb3JpZ2luX2Vj{}", r.s(B64, 300));
    pos(
        o,
        "aws-session-token",
        format!("export AWS_SESSION_TOKEN=\"{t}\"\n"),
        &t,
    );
    pos(
        o,
        "aws-session-token",
        format!("X-Amz-Security-Token: {t}\r\n"),
        &t,
    );
    let t = format!("AIza{}", r.s(B64URL, 35));
    pos(
        o,
        "google-api-key",
        format!("{{\"apiKey\": \"{t}\"}}"),
        &t[4..],
    );
    let t = format!("ya29.a0{}", r.s(B64URL, 150));
    pos(
        o,
        "google-oauth-token",
        format!("Authorization: Bearer {t}\r\n"),
        &t[5..],
    );
    let t = format!("GOCSPX-{}", r.s(B64URL, 28));
    pos(
        o,
        "google-oauth-secret",
        format!("client_secret: {t}\n"),
        &t[7..],
    );
    let t = r.s(AN, 12);
    pos(
        o,
        "gcp-service-account",
        format!("{{\n  \"type\": \"service_account\",\n  \"project_id\": \"p-{t}\"\n}}"),
        "private_key\"",
    );
    let t = format!("{}{}Q~{}", r.s(AN, 3), r.s(DIGITS, 1), r.s(AZURE, 34));
    pos(
        o,
        "azure-ad-client-secret",
        format!("{{\"clientSecret\": \"{t}\"}}"),
        &t,
    );
    pos(
        o,
        "azure-ad-client-secret",
        format!("AZURE_CLIENT_SECRET={t}\n"),
        &t,
    );
    let sig = r.s(B64, 43).replace('+', "%2B").replace('/', "%2F");
    pos(
        o,
        "azure-sas-token",
        format!("GET https://acct.blob.core.windows.net/c/b.txt?sv=2022-11-02&ss=b&srt=sco&sp=rl&se=2030-01-01T00:00:00Z&spr=https&sig={sig}%3D HTTP/1.1"),
        &sig,
    );
    pos(
        o,
        "azure-sas-token",
        format!(
            "url = \"https://a.queue.core.windows.net/q?sig={sig}%3D&sv=2021-06-08&se=2030-01-01\""
        ),
        &sig,
    );
    let t = format!("LTAI{}", r.s(AN, 20));
    pos(
        o,
        "alibaba-access-key",
        format!("access_key_id: {t}\n"),
        &t[4..],
    );
    let t = r.s(B64URL, 44);
    pos(
        o,
        "ibm-cloud-api-key",
        format!("IBM_CLOUD_API_KEY={t}\n"),
        &t,
    );
    pos(
        o,
        "ibm-cloud-api-key",
        format!("ibmcloud_api_key = \"{t}\"\n"),
        &t,
    );
    let t = format!("HRKU-AA{}", r.s(B64URL, 58));
    pos(
        o,
        "heroku-api-key",
        format!("HEROKU_API_KEY={t}\n"),
        &t[5..],
    );
    let u = r.uuid();
    pos(o, "heroku-api-key", format!("HEROKU_API_KEY={u}\n"), &u);
    let t = format!("fo1_{}", r.s(B64URL, 43));
    pos(o, "fly-token", format!("FLY_API_TOKEN={t}\n"), &t[4..]);
    let t = format!("FlyV1 fm2_{},fm2_{}", r.s(B64, 120), r.s(B64, 60));
    pos(o, "fly-token", format!("Authorization: {t}\r\n"), &t[10..]);
    let t = r.s(AN, 24);
    pos(o, "vercel-token", format!("VERCEL_TOKEN={t}\n"), &t);
    let t = format!("nfp_{}", r.s(AN, 36));
    pos(
        o,
        "netlify-token",
        format!("NETLIFY_AUTH_TOKEN={t}\n"),
        &t[4..],
    );
    let t = r.s(B64URL, 43);
    pos(o, "netlify-token", format!("netlify_token: \"{t}\"\n"), &t);
    let t = format!("v1.0-{}-{}", r.s(HEX, 24), r.s(HEX, 146));
    pos(
        o,
        "cloudflare-origin-ca-key",
        format!("origin_ca_key = \"{t}\""),
        &t[5..],
    );
    let t = r.s(B64URL, 40);
    pos(
        o,
        "cloudflare-api-token",
        format!("CLOUDFLARE_API_TOKEN={t}\n"),
        &t,
    );
    let t = r.s(HEX, 37);
    pos(o, "cloudflare-api-token", format!("CF_API_KEY: {t}\n"), &t);
    let t = format!("sbp_{}", r.s(HEX, 40));
    pos(
        o,
        "supabase-token",
        format!("SUPABASE_ACCESS_TOKEN={t}\n"),
        &t[4..],
    );
    let t = format!("sb_secret_{}", r.s(B64URL, 31));
    pos(
        o,
        "supabase-token",
        format!("{{\"key\": \"{t}\"}}"),
        &t[10..],
    );
    let t = format!("dop_v1_{}", r.s(HEX, 64));
    pos(
        o,
        "digitalocean-token",
        format!("DIGITALOCEAN_TOKEN={t}\n"),
        &t[7..],
    );
    let t = format!("doo_v1_{}", r.s(HEX, 64));
    pos(o, "digitalocean-token", format!("token: {t}\n"), &t[7..]);
    let t = format!("dor_v1_{}", r.s(HEX, 64));
    pos(o, "digitalocean-token", format!("refresh={t}\n"), &t[7..]);
    let t = format!("AccountKey={}==", r.s(B64, 86));
    pos(
        o,
        "azure-storage-key",
        format!("DefaultEndpointsProtocol=https;AccountName=a;{t};EndpointSuffix=core.windows.net"),
        &t[11..],
    );
    let t = format!("dapi{}", r.s(HEX, 32));
    pos(
        o,
        "databricks-token",
        format!("DATABRICKS_TOKEN={t}\n"),
        &t[4..],
    );

    // AI
    for p in ["sk-proj-", "sk-svcacct-", "sk-admin-"] {
        let t = format!("{p}{}T3BlbkFJ{}", r.s(AN, 74), r.s(AN, 74));
        pos(
            o,
            "openai-key",
            format!("OPENAI_API_KEY={t}\n"),
            &t[p.len()..],
        );
    }
    let t = format!("sk-proj-{}", r.s(B64URL, 156));
    pos(o, "openai-key", format!("\"openai\": \"{t}\""), &t[8..]);
    let t = format!("sk-{}T3BlbkFJ{}", r.s(AN, 20), r.s(AN, 20));
    pos(
        o,
        "openai-key",
        format!("Authorization: Bearer {t}\r\n"),
        &t[3..],
    );
    for p in ["sk-ant-api03-", "sk-ant-admin01-"] {
        let t = format!("{p}{}AA", r.s(B64URL, 93));
        pos(
            o,
            "anthropic-key",
            format!("x-api-key: {t}\r\n"),
            &t[p.len()..],
        );
    }
    let t = format!("gsk_{}", r.s(AN, 52));
    pos(o, "groq-key", format!("GROQ_API_KEY={t}\n"), &t[4..]);
    let t = format!("xai-{}", r.s(AN, 80));
    pos(o, "xai-key", format!("XAI_API_KEY=\"{t}\"\n"), &t[4..]);
    let t = format!("r8_{}", r.s(AN, 37));
    pos(
        o,
        "replicate-token",
        format!("REPLICATE_API_TOKEN={t}\n"),
        &t[3..],
    );
    let t = format!("tgp_v1_{}", r.s(B64URL, 43));
    pos(
        o,
        "together-key",
        format!("client = Together(api_key=\"{t}\")"),
        &t[7..],
    );
    let t = r.s(HEX, 64);
    pos(o, "together-key", format!("TOGETHER_API_KEY={t}\n"), &t);
    let t = r.s(AN, 40);
    pos(o, "cohere-key", format!("COHERE_API_KEY={t}\n"), &t);
    pos(o, "cohere-key", format!("CO_API_KEY: \"{t}\"\n"), &t);
    let t = r.s(AN, 32);
    pos(o, "mistral-key", format!("MISTRAL_API_KEY={t}\n"), &t);
    for p in ["hf_", "api_org_"] {
        let t = format!("{p}{}", r.s(LETTERS, 34));
        pos(
            o,
            "huggingface-token",
            format!("HF_TOKEN={t}\n"),
            &t[p.len()..],
        );
    }
    let t = format!("pplx-{}", r.s(AN, 48));
    pos(o, "perplexity-key", format!("PPLX_API_KEY={t}\n"), &t[5..]);
    let t = format!("pcsk_{}_{}", r.s(AN, 5), r.s(AN, 62));
    pos(
        o,
        "pinecone-key",
        format!("PINECONE_API_KEY={t}\n"),
        &t[5..],
    );
    let u = r.uuid();
    pos(o, "pinecone-key", format!("pinecone_api_key: \"{u}\""), &u);

    // code and CI
    for p in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        let t = github_token(&mut r, p);
        pos(o, "github-token", format!("GITHUB_TOKEN={t}\n"), &t[4..]);
    }
    let t = format!("github_pat_11{}_{}", r.s(AN, 20), r.s(AN, 59));
    pos(
        o,
        "github-fine-grained-token",
        format!("token: {t}\n"),
        &t[11..],
    );
    for p in [
        "glpat-", "gloas-", "gldt-", "glrt-", "glcbt-", "glptt-", "glft-", "glimt-", "glagent-",
        "glsoat-",
    ] {
        let t = format!("{p}{}", r.s(B64URL, 20));
        pos(
            o,
            "gitlab-token",
            format!("PRIVATE-TOKEN: {t}\r\n"),
            &t[p.len()..],
        );
    }
    let t = format!("GR1348941{}", r.s(B64URL, 20));
    pos(
        o,
        "gitlab-token",
        format!("--registration-token {t}\n"),
        &t[9..],
    );
    let t = format!("ATBB{}", r.s(AN, 32));
    pos(
        o,
        "bitbucket-token",
        format!("BITBUCKET_APP_PASSWORD={t}\n"),
        &t[4..],
    );
    let t = r.s(AN, 24);
    pos(
        o,
        "bitbucket-token",
        format!("bitbucket_client_secret: {t}\n"),
        &t,
    );
    let t = format!("npm_{}", r.s(AN, 36));
    pos(
        o,
        "npm-token",
        format!("//registry.npmjs.org/:_authToken={t}\n"),
        &t[4..],
    );
    let t = format!("pypi-AgEIcHlwaS5vcmc{}", r.s(B64URL, 60));
    pos(o, "pypi-token", format!("password = {t}\n"), &t[8..]);
    let t = format!("rubygems_{}", r.s(HEX, 48));
    pos(
        o,
        "rubygems-token",
        format!("GEM_HOST_API_KEY: {t}\n"),
        &t[9..],
    );
    let t = format!("oy2{}", r.s(LOWER_AN, 43));
    pos(
        o,
        "nuget-key",
        format!("dotnet nuget push -k {t}\n"),
        &t[3..],
    );
    let t = format!("dckr_pat_{}", r.s(B64URL, 27));
    pos(
        o,
        "docker-hub-token",
        format!("echo {t} | docker login\n"),
        &t[9..],
    );
    let t = format!("AKCp{}", r.s(AN, 69));
    pos(
        o,
        "jfrog-token",
        format!("X-JFrog-Art-Api: {t}\r\n"),
        &t[4..],
    );
    let t = format!("cmVmdGtu{}", r.s(AN, 56));
    pos(
        o,
        "jfrog-token",
        format!("Authorization: Bearer {t}\r\n"),
        &t[8..],
    );
    let t = format!("{}.atlasv1.{}", r.s(AN, 14), r.s(B64URL, 67));
    pos(
        o,
        "terraform-cloud-token",
        format!("credentials \"app.terraform.io\" {{ token = \"{t}\" }}"),
        &t[..14],
    );
    for (p, n) in [("hvs.", 90), ("hvb.", 138), ("hvr.", 24)] {
        let t = format!("{p}{}", r.s(B64URL, n));
        pos(o, "hashicorp-token", format!("VAULT_TOKEN={t}\n"), &t[4..]);
    }
    for p in [
        "dp.pt.",
        "dp.st.dev.",
        "dp.sa.",
        "dp.ct.",
        "dp.scim.",
        "dp.audit.",
    ] {
        let t = format!("{p}{}", r.s(AN, 43));
        pos(
            o,
            "doppler-token",
            format!("DOPPLER_TOKEN={t}\n"),
            &t[p.len()..],
        );
    }
    let t = format!("pul-{}", r.s(HEX, 40));
    pos(
        o,
        "pulumi-token",
        format!("PULUMI_ACCESS_TOKEN={t}\n"),
        &t[4..],
    );

    // comms and SaaS
    for t in [
        format!(
            "xoxb-{}-{}-{}",
            r.s(DIGITS, 12),
            r.s(DIGITS, 13),
            r.s(AN, 24)
        ),
        format!(
            "xoxp-{}-{}-{}-{}",
            r.s(DIGITS, 12),
            r.s(DIGITS, 12),
            r.s(DIGITS, 13),
            r.s(HEX, 32)
        ),
        format!("xoxa-2-{}", r.s(AN, 40)),
        format!("xoxr-{}", r.s(AN, 40)),
        format!("xoxe.xoxp-1-{}", r.s(AN, 60)),
        format!("xoxe-1-{}", r.s(AN, 60)),
        format!(
            "xapp-1-A{}-{}-{}",
            r.s(UPPER_AN, 10),
            r.s(DIGITS, 13),
            r.s(HEX, 64)
        ),
    ] {
        pos(
            o,
            "slack-token",
            format!("SLACK_TOKEN={t}\n"),
            &t[t.len() - 10..],
        );
    }
    let t = format!(
        "https://hooks.slack.com/services/T{}/B{}/{}",
        r.s(UPPER_AN, 8),
        r.s(UPPER_AN, 8),
        r.s(AN, 24)
    );
    pos(
        o,
        "slack-webhook",
        format!("webhook_url: {t}\n"),
        &t[t.len() - 24..],
    );
    let t = format!(
        "https://discord.com/api/webhooks/{}/{}",
        r.s(DIGITS, 18),
        r.s(B64URL, 68)
    );
    pos(
        o,
        "discord-webhook",
        format!("{{\"url\": \"{t}\"}}"),
        &t[t.len() - 20..],
    );
    let t = format!(
        "{}{}.{}.{}",
        r.s("MNO", 1),
        r.s(B64URL, 25),
        r.s(B64URL, 6),
        r.s(B64URL, 38)
    );
    pos(
        o,
        "discord-bot-token",
        format!("DISCORD_BOT_TOKEN={t}\n"),
        &t,
    );
    pos(
        o,
        "discord-bot-token",
        format!("Authorization: Bot {t}\r\n"),
        &t,
    );
    let t = format!("{}:AA{}", r.s(DIGITS, 10), r.s(AN, 33));
    pos(
        o,
        "telegram-bot-token",
        format!("TELEGRAM_BOT_TOKEN={t}\n"),
        &t[12..],
    );
    let t = format!("SK{}", r.s(HEX, 32));
    pos(o, "twilio-key", format!("TWILIO_API_KEY={t}\n"), &t[2..]);
    let t = r.s(HEX, 32);
    pos(
        o,
        "twilio-auth-token",
        format!("TWILIO_AUTH_TOKEN={t}\n"),
        &t,
    );
    let t = format!("SG.{}.{}", r.s(AN, 22), r.s(AN, 43));
    pos(
        o,
        "sendgrid-key",
        format!("SENDGRID_API_KEY={t}\n"),
        &t[3..],
    );
    let t = format!("key-{}", r.s(HEX, 32));
    pos(o, "mailgun-key", format!("api: {t}\n"), &t[4..]);
    let t = format!("{}-{}-{}", r.s(HEX, 32), r.s(HEX, 8), r.s(HEX, 8));
    pos(o, "mailgun-key", format!("MAILGUN_API_KEY={t}\n"), &t);
    let t = format!("{}-us{}", r.s(HEX, 32), r.s(DIGITS, 2));
    pos(o, "mailchimp-key", format!("MAILCHIMP_KEY={t}\n"), &t[..32]);
    let u = r.uuid();
    pos(
        o,
        "postmark-token",
        format!("X-Postmark-Server-Token: {u}\r\n"),
        &u,
    );
    pos(o, "postmark-token", format!("POSTMARK_API_TOKEN={u}\n"), &u);
    for p in ["sk_live_", "sk_test_", "rk_live_", "rk_test_"] {
        let t = format!("{p}{}", r.s(AN, 99));
        pos(
            o,
            "stripe-key",
            format!("Stripe.api_key = '{t}'\n"),
            &t[8..],
        );
    }
    let t = format!("whsec_{}", r.s(AN, 32));
    pos(
        o,
        "stripe-webhook-secret",
        format!("STRIPE_WEBHOOK_SECRET={t}\n"),
        &t[6..],
    );
    for t in [
        format!("sq0atp-{}", r.s(AN, 22)),
        format!("sq0csp-{}", r.s(AN, 43)),
        format!("EAAA{}", r.s(AN, 60)),
    ] {
        pos(
            o,
            "square-token",
            format!("SQUARE_ACCESS_TOKEN={t}\n"),
            &t[7..],
        );
    }
    for p in ["shpat_", "shpca_", "shppa_", "shpss_"] {
        let t = format!("{p}{}", r.s(HEX, 32));
        pos(
            o,
            "shopify-token",
            format!("X-Shopify-Access-Token: {t}\r\n"),
            &t[6..],
        );
    }
    let t = format!(
        "access_token$production${}${}",
        r.s(LOWER_AN, 16),
        r.s(HEX, 32)
    );
    pos(
        o,
        "braintree-token",
        format!("BRAINTREE_TOKEN={t}\n"),
        &t[24..],
    );
    let t = format!(
        "ATATT3xFfGF0{}={}",
        r.s(B64URL, 170),
        r.s("0123456789ABCDEF", 8)
    );
    pos(
        o,
        "atlassian-token",
        format!("JIRA_API_TOKEN={t}\n"),
        &t[12..],
    );
    let t = format!("lin_api_{}", r.s(AN, 40));
    pos(o, "linear-key", format!("LINEAR_API_KEY={t}\n"), &t[8..]);
    let t = format!("ntn_{}", r.s(AN, 46));
    pos(o, "notion-token", format!("NOTION_TOKEN={t}\n"), &t[4..]);
    let t = format!("secret_{}", r.s(AN, 43));
    pos(
        o,
        "notion-token",
        format!("Authorization: Bearer {t}\r\n"),
        &t[7..],
    );
    let t = format!("sntrys_eyJ{}_{}", r.s(B64, 90), r.s(B64, 43));
    pos(
        o,
        "sentry-token",
        format!("SENTRY_AUTH_TOKEN={t}\n"),
        &t[10..],
    );
    let t = format!("sntryu_{}", r.s(HEX, 64));
    pos(o, "sentry-token", format!("auth.token={t}\n"), &t[7..]);
    let t = r.s(HEX, 32);
    pos(o, "datadog-key", format!("DD_API_KEY={t}\n"), &t);
    pos(o, "datadog-key", format!("DD-API-KEY: {t}\r\n"), &t);
    let t = r.s(HEX, 40);
    pos(o, "datadog-key", format!("datadog_app_key = \"{t}\"\n"), &t);
    for t in [
        format!("NRAK-{}", r.s(UPPER_AN, 27)),
        format!("NRII-{}", r.s(B64URL, 32)),
        format!("NRJS-{}", r.s(HEX, 19)),
    ] {
        pos(o, "newrelic-key", format!("NEW_RELIC_KEY={t}\n"), &t[5..]);
    }
    let t = format!(
        "glc_{}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{{\"o\":\"{}\",\"n\":\"stack-{}\",\"k\":\"{}\",\"m\":{{\"r\":\"us\"}}}}",
            r.s(DIGITS, 6),
            r.s(DIGITS, 6),
            r.s(AN, 24)
        ))
    );
    pos(
        o,
        "grafana-token",
        format!("GRAFANA_CLOUD_TOKEN={t}\n"),
        &t[20..],
    );
    let t = format!("glsa_{}_{}", r.s(AN, 32), r.s(HEX, 8));
    pos(
        o,
        "grafana-token",
        format!("Authorization: Bearer {t}\r\n"),
        &t[5..],
    );
    let t = format!("{}+{}", r.s(AN, 10), r.s(B64URL, 9));
    pos(o, "pagerduty-key", format!("PAGERDUTY_API_KEY={t}\n"), &t);
    let t = r.s(HEX, 32);
    pos(
        o,
        "pagerduty-key",
        format!("pagerduty_integration_key: {t}\n"),
        &t,
    );
    let t = format!("00{}", r.s(B64URL, 40));
    pos(o, "okta-token", format!("OKTA_API_TOKEN={t}\n"), &t[2..]);
    pos(
        o,
        "okta-token",
        format!("Authorization: SSWS {t}\r\n"),
        &t[2..],
    );
    let t = r.s(B64URL, 64);
    pos(
        o,
        "auth0-client-secret",
        format!("AUTH0_CLIENT_SECRET={t}\n"),
        &t,
    );

    // keys
    for kind in ["RSA ", "EC ", "DSA ", "OPENSSH ", "ENCRYPTED ", ""] {
        let body = r.s(B64, 64);
        pos(
            o,
            "private-key",
            format!("-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----\n"),
            &body,
        );
    }
    let body = r.s(B64, 64);
    pos(
        o,
        "private-key",
        format!("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{body}\n"),
        &body,
    );
    let body = r.s(B64, 64);
    pos(
        o,
        "putty-private-key",
        format!("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nPrivate-Lines: 1\n{body}\n"),
        &body,
    );
    let t = format!("AGE-SECRET-KEY-1{}", r.s(BECH32_UPPER, 58));
    pos(
        o,
        "age-secret-key",
        format!("# created: 2024-01-01\n# public key: age1...\n{t}\n"),
        &t[16..],
    );
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{{\"sub\":\"{}\",\"iat\":1700000000}}",
        r.s(AN, 12)
    ));
    let t = format!("{header}.{claims}.{}", r.s(B64URL, 43));
    pos(o, "jwt", format!("Authorization: Bearer {t}\r\n"), &t[3..]);

    // generic shapes
    let t = r.s(AN, 24);
    pos(o, "generic-secret", format!("api_key = \"{t}\"\n"), &t);
    let t = r.s(AN, 16);
    pos(
        o,
        "url-credentials",
        format!("DATABASE_URL=postgres://app:{t}@db.internal:5432/app\n"),
        &t,
    );
    let t = r.s(AN, 14);
    pos(
        o,
        "command-line-credential",
        format!("curl -u admin:{t} https://example.com\n"),
        &t,
    );
    let t = r.s(AN, 32);
    pos(
        o,
        "bearer-token",
        format!("Authorization: Bearer {t}\r\n"),
        &t,
    );

    // finance and crypto
    for body in [
        format!("4{}", r.s(DIGITS, 14)),
        format!("5{}{}", r.s("12345", 1), r.s(DIGITS, 13)),
        format!("6011{}", r.s(DIGITS, 11)),
    ] {
        let n = with_luhn(&body);
        pos(
            o,
            "credit-card-number",
            format!("{{\"card_number\": \"{n}\", \"exp\": \"12/29\"}}"),
            &n[6..],
        );
        let spaced = format!("{} {} {} {}", &n[..4], &n[4..8], &n[8..12], &n[12..]);
        pos(
            o,
            "credit-card-number",
            format!("Card: {spaced}\n"),
            &n[12..],
        );
    }
    let n = with_luhn(&format!("37{}", r.s(DIGITS, 12)));
    pos(
        o,
        "credit-card-number",
        format!("cardNumber={}-{}-{}\n", &n[..4], &n[4..10], &n[10..]),
        &n[10..],
    );
    let i = iban("DE", &r.s(DIGITS, 18));
    pos(o, "iban", format!("IBAN: {i}\n"), &i[4..]);
    let g = iban("GB", &format!("{}{}", r.s(UPPER, 4), r.s(DIGITS, 14)));
    let spaced: Vec<String> = g
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    pos(
        o,
        "iban",
        format!("{{\"iban\": \"{}\"}}", spaced.join(" ")),
        &g[8..],
    );
    let f = iban(
        "FR",
        &format!("{}{}{}", r.s(DIGITS, 10), r.s(UPPER_AN, 11), r.s(DIGITS, 2)),
    );
    pos(
        o,
        "iban",
        format!("Bank account (IBAN) {f} BIC BNPAFRPP\n"),
        &f[4..],
    );
    for n in [12, 24] {
        let words = bip39(&mut r, n).join(" ");
        pos(
            o,
            "bip39-seed-phrase",
            format!("MNEMONIC=\"{words}\"\n"),
            &words,
        );
        pos(
            o,
            "bip39-seed-phrase",
            format!("my wallet seed phrase is {words}\n"),
            &words,
        );
    }
    let mut payload = vec![0x80];
    payload.extend(r.bytes(32));
    payload.push(0x01);
    let t = base58check(&payload);
    pos(o, "bitcoin-wif-key", format!("WIF: {t}\n"), &t[1..]);
    pos(
        o,
        "bitcoin-wif-key",
        format!("bitcoin-cli importprivkey {t}\n"),
        &t[1..],
    );
    let t = base58check(&payload[..33]);
    pos(
        o,
        "bitcoin-wif-key",
        format!("private_key = \"{t}\"\n"),
        &t[1..],
    );
    let mut xprv = vec![0x04, 0x88, 0xad, 0xe4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    xprv.extend(r.bytes(32));
    xprv.push(0);
    xprv.extend(r.bytes(32));
    let t = base58check(&xprv);
    assert!(t.starts_with("xprv"), "{t}");
    pos(o, "bitcoin-xprv", format!("{{\"xprv\": \"{t}\"}}"), &t[4..]);
    let t = r.s(HEX, 64);
    pos(
        o,
        "ethereum-private-key",
        format!("PRIVATE_KEY=0x{t}\n"),
        &t,
    );
    pos(
        o,
        "ethereum-private-key",
        format!("eth_private_key: \"{t}\"\n"),
        &t,
    );
    pos(
        o,
        "ethereum-private-key",
        format!("const privateKey = '{t}';\n"),
        &t,
    );
    v
}

/// Texts that look like the rule's format but are not: each must not fire `rule`.
fn near_misses() -> Vec<(&'static str, String)> {
    let mut r = Rng(0x0dd_ba11);
    let mut v: Vec<(&'static str, String)> = Vec::new();
    let mut m = |rule: &'static str, text: String| v.push((rule, text));
    m("aws-access-key", format!("id = akia{}", r.s(UPPER_AN, 16)));
    m("aws-access-key", format!("id = AKIA{}", r.s(UPPER_AN, 15)));
    m("aws-access-key", format!("id = AKIA{}x", r.s(UPPER_AN, 16)));
    m(
        "aws-secret-key",
        format!("aws_secret_access_key = {}", r.s(AN, 39)),
    );
    m(
        "aws-session-token",
        format!("AWS_SESSION_TOKEN={}", r.s(B64, 50)),
    );
    m("google-api-key", format!("key=AIza{}", r.s(AN, 20)));
    m("google-api-key", format!("key=aiza{}", r.s(AN, 35)));
    m("google-oauth-token", format!("t=YA29.{}", r.s(AN, 60)));
    m("google-oauth-token", format!("t=ya29.{}", r.s(AN, 10)));
    m(
        "azure-ad-client-secret",
        format!("s={}{}Q~{} ", r.s(AN, 3), r.s(DIGITS, 1), r.s(AN, 33)),
    );
    m(
        "azure-ad-client-secret",
        format!("s={}xQ~{} ", r.s(AN, 3), r.s(AN, 34)),
    );
    m(
        "azure-ad-client-secret",
        format!("s={}{}q~{} ", r.s(AN, 3), r.s(DIGITS, 1), r.s(AN, 34)),
    );
    m(
        "azure-sas-token",
        "https://a.blob.core.windows.net/c?sv=2022-11-02&sp=r&se=2030".to_string(),
    );
    m(
        "azure-sas-token",
        format!(
            "https://a.blob.core.windows.net/c?sv=2022-11-02&sig={}",
            r.s(AN, 10)
        ),
    );
    m("alibaba-access-key", format!("id=LTAI{}", r.s(AN, 8)));
    m("alibaba-access-key", format!("id=ltai{}", r.s(AN, 20)));
    m(
        "ibm-cloud-api-key",
        format!("IBM_CLOUD_API_KEY={}", r.s(AN, 43)),
    );
    m(
        "heroku-api-key",
        format!("HEROKU_API_KEY=HRKU-{}", r.s(AN, 10)),
    );
    m("heroku-api-key", format!("heroku_api_key={}", r.s(HEX, 32)));
    m("fly-token", format!("t=fo1_{}", r.s(AN, 10)));
    m("vercel-token", format!("VERCEL_TOKEN={}", r.s(AN, 23)));
    m(
        "vercel-token",
        "VERCEL_TOKEN=xxxxxxxxxxxxxxxxxxxxxxxx".to_string(),
    );
    m("netlify-token", format!("t=nfp_{}", r.s(AN, 12)));
    m(
        "cloudflare-origin-ca-key",
        format!("v1.0-{}-{}", r.s(HEX, 24), r.s(HEX, 140)),
    );
    m(
        "cloudflare-origin-ca-key",
        "version v1.0-beta released".to_string(),
    );
    m(
        "cloudflare-api-token",
        format!("CLOUDFLARE_API_TOKEN={}", r.s(AN, 39)),
    );
    m("supabase-token", format!("t=sbp_{}", r.s(HEX, 39)));
    m("groq-key", format!("k=gsk_{}", r.s(AN, 51)));
    m("groq-key", format!("k=GSK_{}", r.s(AN, 52)));
    m("xai-key", format!("k=xai-{}", r.s(AN, 79)));
    m("replicate-token", format!("k=r8_{}", r.s(AN, 36)));
    m("replicate-token", format!("k=R8_{}", r.s(AN, 37)));
    m("together-key", format!("k=tgp_v1_{}", r.s(AN, 10)));
    m("together-key", format!("TOGETHER_API_KEY={}", r.s(HEX, 63)));
    m("cohere-key", format!("COHERE_API_KEY={}", r.s(AN, 39)));
    m("mistral-key", format!("MISTRAL_API_KEY={}", r.s(AN, 31)));
    m("perplexity-key", format!("k=pplx-{}", r.s(AN, 47)));
    m("pinecone-key", format!("k=pcsk_{}", r.s(AN, 20)));
    m("openai-key", format!("k=sk-{}", r.s(AN, 48)));
    m("openai-key", format!("k=sk-proj-{}", r.s(AN, 20)));
    m("anthropic-key", format!("k=sk-ant-api03-{}", r.s(AN, 40)));
    m(
        "huggingface-token",
        format!("t=hf_{}1{}", r.s(LETTERS, 16), r.s(LETTERS, 17)),
    );
    m("github-token", format!("t=GHP_{}", r.s(AN, 36)));
    m("github-token", format!("t=ghp_{}", r.s(AN, 35)));
    m(
        "github-token",
        format!("t=ghp_{}-{}", r.s(AN, 10), r.s(AN, 26)),
    );
    m(
        "github-fine-grained-token",
        format!("t=github_pat_{}_{}", r.s(AN, 22), r.s(AN, 58)),
    );
    m("gitlab-token", format!("t=glpat-{} ", r.s(AN, 19)));
    m("gitlab-token", format!("t=GLPAT-{}", r.s(AN, 20)));
    m("bitbucket-token", format!("t=ATBB{}", r.s(AN, 31)));
    m("npm-token", format!("t=npm_{}", r.s(AN, 35)));
    m(
        "nuget-key",
        format!("k=oy2{}A{}", r.s(LOWER_AN, 21), r.s(LOWER_AN, 21)),
    );
    m("jfrog-token", format!("k=AKCp{}", r.s(AN, 60)));
    m("hashicorp-token", format!("t=hvs.{}", r.s(AN, 10)));
    m("hashicorp-token", format!("t=hvx.{}", r.s(AN, 90)));
    m(
        "terraform-cloud-token",
        format!("t={}.atlasv2.{}", r.s(AN, 14), r.s(AN, 67)),
    );
    m("doppler-token", format!("t=dp.pt.{}", r.s(AN, 10)));
    m("doppler-token", format!("t=dp.xx.{}", r.s(AN, 43)));
    m("pulumi-token", format!("t=pul-{}", r.s(HEX, 39)));
    m("slack-token", format!("t=xoxz-{}", r.s(AN, 30)));
    m(
        "slack-webhook",
        "https://hooks.slack.com/services/short".to_string(),
    );
    m(
        "discord-bot-token",
        format!(
            "DISCORD_TOKEN=A{}.{}.{}",
            r.s(AN, 25),
            r.s(AN, 6),
            r.s(AN, 38)
        ),
    );
    m(
        "discord-webhook",
        "https://discord.com/api/webhooks/123/abc".to_string(),
    );
    m("twilio-key", format!("sid = SK{}", r.s(HEX, 32)));
    m("twilio-key", format!("TWILIO_API_KEY=SK{}", r.s(HEX, 31)));
    m(
        "twilio-auth-token",
        format!("TWILIO_AUTH_TOKEN={}", r.s(HEX, 31)),
    );
    m(
        "sendgrid-key",
        format!("k=SG.{}.{}", r.s(AN, 22), r.s(AN, 40)),
    );
    m("mailgun-key", format!("k=key-{}", r.s(HEX, 31)));
    m("mailgun-key", format!("k=KEY-{}", r.s(HEX, 32)));
    m("mailchimp-key", format!("k={}-us", r.s(HEX, 32)));
    m(
        "postmark-token",
        format!("POSTMARK_API_TOKEN={}", &r.uuid()[..30]),
    );
    m("stripe-key", format!("k=sk_LIVE_{}", r.s(AN, 24)));
    m("stripe-key", format!("k=pk_live_{}", r.s(AN, 24)));
    m("stripe-webhook-secret", format!("s=whsec_{}", r.s(AN, 20)));
    m("square-token", format!("t=sq0atp-{}", r.s(AN, 10)));
    m("shopify-token", format!("t=shpat_{}g", r.s(HEX, 31)));
    m(
        "braintree-token",
        format!(
            "t=access_token$staging${}${}",
            r.s(LOWER_AN, 16),
            r.s(HEX, 32)
        ),
    );
    m("atlassian-token", format!("t=ATATT3{}", r.s(AN, 50)));
    m("linear-key", format!("k=lin_api_{}", r.s(AN, 39)));
    m("notion-token", format!("t=secret_{}", r.s(AN, 42)));
    m("sentry-token", format!("t=sntryu_{}", r.s(HEX, 63)));
    m("datadog-key", format!("DD_API_KEY={}", r.s(HEX, 31)));
    m("datadog-key", format!("DD_API_KEY={}g", r.s(HEX, 31)));
    m("newrelic-key", format!("k=NRAK-{}", r.s(UPPER_AN, 26)));
    m("grafana-token", format!("t=glsa_{}", r.s(AN, 32)));
    m(
        "pagerduty-key",
        format!("PAGERDUTY_API_KEY={}", r.s(AN, 19)),
    );
    m("okta-token", format!("OKTA_API_TOKEN=01{}", r.s(AN, 40)));
    m(
        "auth0-client-secret",
        format!("AUTH0_CLIENT_SECRET={}", r.s(AN, 63)),
    );
    m(
        "private-key",
        "-----BEGIN PUBLIC KEY-----\nMIIB".to_string(),
    );
    m(
        "private-key",
        "-----BEGIN CERTIFICATE-----\nMIIB".to_string(),
    );
    m("putty-private-key", "PuTTY-User-Key-File-9: x".to_string());
    m(
        "age-secret-key",
        format!("AGE-SECRET-KEY-1{}", r.s(BECH32_UPPER, 57)),
    );
    m(
        "age-secret-key",
        format!("age-secret-key-1{}", r.s(BECH32_UPPER, 58).to_lowercase()),
    );
    m(
        "age-secret-key",
        format!(
            "AGE-SECRET-KEY-1{}B{}",
            r.s(BECH32_UPPER, 30),
            r.s(BECH32_UPPER, 27)
        ),
    );
    m("jwt", "eyJabc.eyJdef.x".to_string());
    m(
        "generic-secret",
        "api_key = \"aaaaaaaaaaaaaaaaaaaaaaaa\"".to_string(),
    );
    m("url-credentials", "https://user@example.com/".to_string());
    m(
        "command-line-credential",
        "curl -u \"$U:$P\" https://x".to_string(),
    );
    m(
        "bearer-token",
        "Authorization: Bearer ${vault:x}".to_string(),
    );
    // card numbers: a wrong Luhn digit, no issuer, too short, no label
    let good = with_luhn(&format!("4{}", r.s(DIGITS, 14)));
    let last = good.as_bytes()[15] - b'0';
    let bad = format!("{}{}", &good[..15], (last + 1) % 10);
    m("credit-card-number", format!("card_number: {bad}"));
    m(
        "credit-card-number",
        format!(
            "card_number: {}",
            with_luhn(&format!("1{}", r.s(DIGITS, 14)))
        ),
    );
    m(
        "credit-card-number",
        format!(
            "card_number: {}",
            with_luhn(&format!("4{}", r.s(DIGITS, 10)))
        ),
    );
    m("credit-card-number", format!("order {good} shipped"));
    // IBANs: wrong check digits, wrong length for the country, lower case
    let i = iban("DE", &r.s(DIGITS, 18));
    let wrong = format!(
        "DE{:02}{}",
        (i[2..4].parse::<u32>().unwrap() + 1) % 100,
        &i[4..]
    );
    m("iban", format!("IBAN: {wrong}"));
    m("iban", format!("IBAN: {}", iban("DE", &r.s(DIGITS, 17))));
    m("iban", format!("iban: {}", i.to_lowercase()));
    // seed phrases: a wrong checksum word, a word outside the list, 11 words
    let words = bip39(&mut r, 12);
    let list: Vec<&str> = WORDS.lines().collect();
    let li = list.iter().position(|w| *w == words[11]).unwrap();
    let mut bad = words.clone();
    bad[11] = list[if li % 16 == 15 { li - 1 } else { li + 1 }];
    m("bip39-seed-phrase", format!("mnemonic: {}", bad.join(" ")));
    let mut bad = words.clone();
    bad[5] = "bitcoin";
    m("bip39-seed-phrase", format!("mnemonic: {}", bad.join(" ")));
    m(
        "bip39-seed-phrase",
        format!("mnemonic: {}", words[..11].join(" ")),
    );
    // base58check: one character changed, an address (not a key)
    let mut payload = vec![0x80];
    payload.extend(r.bytes(32));
    let wif = base58check(&payload);
    let c = if wif.ends_with('2') { '3' } else { '2' };
    m(
        "bitcoin-wif-key",
        format!("WIF: {}{c}", &wif[..wif.len() - 1]),
    );
    let mut addr = vec![0x00];
    addr.extend(r.bytes(20));
    m(
        "bitcoin-wif-key",
        format!("bitcoin address for the wif test: {}", base58check(&addr)),
    );
    let mut xprv = vec![0x04, 0x88, 0xad, 0xe4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    xprv.extend(r.bytes(32));
    xprv.push(0);
    xprv.extend(r.bytes(32));
    let x = base58check(&xprv);
    let c = if x.ends_with('2') { '3' } else { '2' };
    m("bitcoin-xprv", format!("xprv: {}{c}", &x[..x.len() - 1]));
    m(
        "ethereum-private-key",
        format!("PRIVATE_KEY=0x{}", r.s(HEX, 63)),
    );
    m(
        "ethereum-private-key",
        format!("commit_hash = {}", r.s(HEX, 64)),
    );
    v
}

fn scanner() -> Scanner {
    Scanner::new(&SecretConfig::default()).unwrap()
}

#[test]
fn generated_tokens_fire_their_rule() {
    let s = scanner();
    let mut failures = Vec::new();
    for case in positives() {
        let all = s.scan_all(case.text.as_bytes());
        let Some(f) = all.iter().find(|f| f.rule == case.rule) else {
            failures.push(format!(
                "{}: not found in {:?} (found {:?})",
                case.rule,
                case.text,
                all.iter().map(|f| f.rule).collect::<Vec<_>>()
            ));
            continue;
        };
        // The most specific rule is the one reported first.
        let first = s.scan(case.text.as_bytes()).unwrap();
        if first.rule != case.rule {
            failures.push(format!(
                "{}: first finding is {} in {:?}",
                case.rule, first.rule, case.text
            ));
        }
        let probe = &case.secret[..case.secret.len().min(6)];
        if f.redacted.contains(probe) {
            failures.push(format!(
                "{}: excerpt {} shows the secret",
                case.rule, f.redacted
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_rule_has_a_generated_positive() {
    let covered: BTreeSet<&str> = positives().iter().map(|c| c.rule).collect();
    let missing: Vec<&str> = rule_names().filter(|n| !covered.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "rules without a generated positive: {missing:?}"
    );
    let known: BTreeSet<&str> = rule_names().collect();
    for (rule, _) in near_misses() {
        assert!(known.contains(rule), "near miss for an unknown rule {rule}");
    }
}

#[test]
fn near_misses_do_not_fire_their_rule() {
    let s = scanner();
    let mut failures = Vec::new();
    for (rule, text) in near_misses() {
        let fired: Vec<&str> = s.scan_all(text.as_bytes()).iter().map(|f| f.rule).collect();
        if fired.contains(&rule) {
            failures.push(format!("{rule} fired on {text:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn github_checksum_is_reported_as_confidence() {
    let s = scanner();
    let mut r = Rng(42);
    let good = github_token(&mut r, "ghp_");
    let f = s.scan(format!("t={good}").as_bytes()).unwrap();
    assert_eq!(f.rule, "github-token");
    assert!(f.redacted.ends_with("checksum valid"), "{f}");
    // A wrong checksum still fires (the workspace's tests rely on such tokens).
    let bad = format!(
        "{}{}",
        &good[..34],
        if &good[34..] == "000000" {
            "000001"
        } else {
            "000000"
        }
    );
    let f = s.scan(format!("t={bad}").as_bytes()).unwrap();
    assert_eq!(f.rule, "github-token");
    assert!(f.redacted.ends_with("checksum mismatch"), "{f}");
    let f = s
        .scan(b"t=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789")
        .unwrap();
    assert_eq!(f.rule, "github-token");
}

#[test]
fn validated_findings_point_at_the_value() {
    let s = scanner();
    let text = "payment card: 4111 1111 1111 1111 exp 12/29";
    let f = s.scan(text.as_bytes()).unwrap();
    assert_eq!(f.rule, "credit-card-number");
    assert_eq!(&text[f.offset..f.offset + f.len], "4111 1111 1111 1111");
    assert_eq!(f.redacted, "…(19 chars)");
}

/// Realistic text that carries no secret: lock files, hashes, ids, encoded data, numbers.
#[test]
fn benign_corpus_passes() {
    let s = scanner();
    let mut r = Rng(7);
    let png = base64::engine::general_purpose::STANDARD.encode({
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend(r.bytes(600));
        b
    });
    let texts = vec![
        // Cargo.lock, package-lock.json, go.sum, yarn.lock
        "[[package]]\nname = \"aho-corasick\"\nversion = \"1.1.3\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"8e60d3430d3a69478ad0993f19238d2df97c507009a52b3c10addcd7f6bcb916\"\ndependencies = [\n \"memchr\",\n]\n".to_string(),
        "\"node_modules/lodash\": {\n  \"version\": \"4.17.21\",\n  \"resolved\": \"https://registry.npmjs.org/lodash/-/lodash-4.17.21.tgz\",\n  \"integrity\": \"sha512-v2kDEe57lecTulaDIuNTPy3Ry4gLGJ6Z1O3vE1krgXZNrsQ+LFTGHVxVjcXPs17LhbZVGedAJv8XZ1tvj5FvSg==\"\n}".to_string(),
        "github.com/stretchr/testify v1.8.4 h1:CcVxjf3Q8PM0mHUKJCdn+eZZtm5yQwehR5yeSVQQcUk=\ngithub.com/stretchr/testify v1.8.4/go.mod h1:sz/lmYIOXD/1dqDmKjjqLyZ2RngseejIcXlSw2iwfAo=\n".to_string(),
        "lodash@^4.17.21:\n  version \"4.17.21\"\n  resolved \"https://registry.yarnpkg.com/lodash/-/lodash-4.17.21.tgz#679591c564c3bffaae8454cf0b3df370c3d6911c\"\n".to_string(),
        // SRI hashes, docker digests, git SHAs, UUIDs
        "<script src=\"https://cdn.example.com/app.js\" integrity=\"sha384-oqVuAfXRKap7fdgcCY5uykM6+R9GqQ8K/uxy9rx7HNQlGYl1kPzQho1wx4JwY8wC\" crossorigin=\"anonymous\"></script>".to_string(),
        "FROM rust:1.85@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_string(),
        "commit 3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c\nMerge: 1a2b3c4 5d6e7f8\nAuthor: Ada <ada@example.com>".to_string(),
        format!("request_id={} trace_id={}", r.uuid(), r.uuid()),
        format!("{{\"id\": \"{}\", \"parent\": \"{}\"}}", r.uuid(), r.s(HEX, 40)),
        // base64 image data, minified JS
        format!("<img src=\"data:image/png;base64,{png}\">"),
        "!function(e,t){\"object\"==typeof exports?module.exports=t():e.lib=t()}(this,function(){var e={key:function(t){return t.split(\"\").reverse().join(\"\")},tokenize:function(t){return t.match(/\\w+/g)}};return e});".to_string(),
        // long numbers that are not card numbers, order ids, phone numbers, timestamps
        "order 1234567890123456 shipped; card on file ending 4242".to_string(),
        "card_id: 1000000000000000000, cardinality: 9999999999999999".to_string(),
        "Order #20240115-7781234 placed; tracking 9400111899223856981234".to_string(),
        "Call +1 (415) 555-0132 or +44 20 7946 0958; fax 0049 30 1234567890".to_string(),
        "ts=1700000000123456 nanos=1700000000123456789 card_count=4111".to_string(),
        // IBAN-like words and seed-ish prose
        "iban field is optional; see ISO 13616 section DE89 for the format".to_string(),
        "the random seed for this test run is fixed so that every failure can be reproduced later on".to_string(),
        "mnemonic: abandon ability able about above absent absorb abstract absurd abuse access accident".to_string(),
        // private-key words that are not keys
        "let private_key_path = config.private_key_path.clone(); // eth_private_key loaded from vault".to_string(),
        "method = \"eth_getBalance\", params = [\"0x0000000000000000000000000000000000000000000000000000000000000000\"]".to_string(),
        // versions, URLs with signatures that are not SAS tokens
        "released v1.0-rc1 and v1.0-2024-01-01; see https://example.com/?sv=2022-11-02 for the service version".to_string(),
        "Q~ is not a token, nor 8Q~short".to_string(),
    ];
    let mut failures = Vec::new();
    for text in &texts {
        let found = s.scan_all(text.as_bytes());
        if !found.is_empty() {
            failures.push(format!("{found:?} in {text:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- the encoding matrix ----

/// Shape rules (`key = value`, `Bearer …`, `user:pass@`, `curl -u`) are not looked for in
/// decoded bytes (decoded binary is no place for them); every token format is.
const SHAPES: [&str; 4] = [
    "generic-secret",
    "bearer-token",
    "url-credentials",
    "command-line-credential",
];

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn hex_with(data: &[u8], delimiter: &str, upper: bool) -> String {
    data.iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect::<Vec<_>>()
        .join(delimiter)
}

/// Every byte as `%XX` (what a client that escapes everything sends).
fn percent_all(data: &[u8]) -> String {
    data.iter().map(|b| format!("%{b:02X}")).collect()
}

/// Each encoding the scanner must see through, by name, applied to `text`.
fn encodings_of(text: &str) -> Vec<(String, String)> {
    let t = text.as_bytes();
    let mut out = vec![
        ("base64".to_string(), b64(t)),
        // The token at every alignment inside the encoded blob.
        (
            "base64, 1-byte prefix".into(),
            b64(format!(" {text}").as_bytes()),
        ),
        (
            "base64, 2-byte prefix".into(),
            b64(format!("; {text}").as_bytes()),
        ),
        ("base64url".into(), b64url(format!("?{text}").as_bytes())),
        ("hex".into(), hex_with(t, "", false)),
        ("HEX".into(), hex_with(t, "", true)),
        ("hex with :".into(), hex_with(t, ":", false)),
        ("hex with -".into(), hex_with(t, "-", true)),
        ("hex with spaces".into(), hex_with(t, " ", false)),
        ("percent".into(), percent_all(t)),
        (
            "percent twice".into(),
            percent_all(percent_all(t).as_bytes()),
        ),
        (
            "percent three times".into(),
            percent_all(percent_all(percent_all(t).as_bytes()).as_bytes()),
        ),
        (
            "base64 of hex".into(),
            b64(hex_with(t, "", false).as_bytes()),
        ),
        (
            "hex of base64".into(),
            hex_with(b64(t).as_bytes(), "", false),
        ),
        ("percent of base64".into(), percent_all(b64(t).as_bytes())),
        ("base64 of percent".into(), b64(percent_all(t).as_bytes())),
        ("base64 of base64".into(), b64(b64(t).as_bytes())),
    ];
    // In context: a JSON value and a query parameter.
    let e = b64(t);
    out.push(("base64 in JSON".into(), format!("{{\"data\": \"{e}\"}}")));
    out.push(("base64 in a query".into(), format!("/upload?d={e}&x=1")));
    out
}

#[test]
fn every_token_format_is_found_in_every_encoding() {
    let s = scanner();
    let mut failures = Vec::new();
    let mut checked = BTreeSet::new();
    for case in positives() {
        if SHAPES.contains(&case.rule) || case.text.len() > 4096 {
            continue;
        }
        checked.insert(case.rule);
        for (encoding, text) in encodings_of(&case.text) {
            let all = s.scan_all(text.as_bytes());
            match all.iter().find(|f| f.rule == case.rule) {
                None => failures.push(format!(
                    "{} in {encoding}: not found (found {:?})",
                    case.rule,
                    all.iter().map(|f| f.rule).collect::<Vec<_>>()
                )),
                Some(f)
                    if f.redacted
                        .contains(&case.secret[..case.secret.len().min(6)]) =>
                {
                    failures.push(format!(
                        "{} in {encoding}: excerpt {} shows it",
                        case.rule, f.redacted
                    ))
                }
                Some(_) => {}
            }
        }
    }
    // Every token format took part.
    let formats: BTreeSet<&str> = rule_names().filter(|r| !SHAPES.contains(r)).collect();
    let missing: Vec<_> = formats.difference(&checked).collect();
    assert!(
        missing.is_empty(),
        "rules without a positive in the matrix: {missing:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
