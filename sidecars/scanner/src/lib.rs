//! The secret (DLP) scanner shared by pipelock (HTTP requests) and git-gate (pushed content).
//!
//! Two kinds of secret are found:
//! - **known token formats** ([`rules::RULES`]: cloud, AI, code-hosting/CI and SaaS tokens,
//!   private-key blocks, JWTs, card numbers, IBANs, seed phrases and Bitcoin/Ethereum keys — the
//!   last ones checked by their checksums ([`validators`]) — and `key=`/`token=`/`secret=`/
//!   `password=` assignments whose value has high Shannon entropy);
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
//!
//! | module | job |
//! | --- | --- |
//! | [`rules`] | the built-in token formats, as data |
//! | [`engine`] | compiling the rules and configured values; scanning buffers |
//! | [`literals`] | configured values: which a secret file yields, and their encoded forms |
//! | [`encodings`] | base64 / hex / percent-encoded views of a buffer (nested, bounded) |
//! | [`names`] | data hidden in host labels and URL path segments (no keyword to anchor on) |
//! | [`validators`] | checksums a shape cannot express: Luhn, IBAN mod 97, BIP-39, base58check, GitHub CRC-32 |

#![deny(missing_docs)]

pub mod encodings;
pub mod engine;
pub mod literals;
pub mod names;
pub mod rules;
pub mod validators;

pub use encodings::percent_decode;
pub use engine::{shannon_entropy, Finding, Scanner, ScannerError, SecretConfig};
pub use literals::values_from_text;
pub use rules::{rule_names, Rule, RULES};
