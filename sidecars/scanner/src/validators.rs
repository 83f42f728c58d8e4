//! Validators: the checks a token's shape cannot express, run on a rule's match after its regex
//! ([`crate::rules::Check`]). Pure functions over the matched bytes.
//!
//! Why: card numbers, IBANs, seed phrases and Bitcoin keys have no distinctive prefix; their
//! shapes (a run of digits, two letters and digits, a dozen English words, a base58 string)
//! occur in innocent text all the time. Their formats carry a checksum, though, and checking it
//! turns "looks like" into "is": a random digit run passes Luhn one time in ten, and a random
//! base58 string passes base58check one time in four billion.

use sha2::{Digest, Sha256};

use crate::rules::Check;

/// Whether `value` (the rule's last capture group, or its whole match) passes `check`. Checks
/// that are not validators ([`Check::None`], [`Check::Entropy`]) and the confidence-only
/// [`Check::GithubCrc32`] pass everything here.
pub(crate) fn validate(check: Check, value: &[u8]) -> bool {
    match check {
        Check::Luhn => card_number(value),
        Check::Mod97 => iban(value),
        Check::Bip39 => bip39_phrase(value),
        Check::Base58 => base58check_key(value),
        Check::None | Check::Entropy | Check::GithubCrc32 => true,
    }
}

/// The Luhn (mod 10) check digit test, over ASCII digits. Why: every payment card number ends
/// in a Luhn check digit (ISO/IEC 7812), so nine in ten random digit runs are rejected.
pub fn luhn(digits: &[u8]) -> bool {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// A payment card number: 13–19 digits (spaces or dashes between groups are dropped), an
/// issuer prefix with a length that issuer uses (Visa, Mastercard, Amex, Discover, JCB, Diners,
/// UnionPay, Maestro), not one repeated digit, and a valid Luhn check digit. Why the issuer
/// table: Luhn alone passes one in ten order numbers and timestamps; the table removes most of
/// those (nothing starts with 0, 1, 7, 8 or 9).
pub fn card_number(m: &[u8]) -> bool {
    let digits: Vec<u8> = m
        .iter()
        .copied()
        .filter(|b| !matches!(b, b' ' | b'-'))
        .collect();
    let n = digits.len();
    if !(13..=19).contains(&n) || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    if digits.iter().all(|&d| d == digits[0]) {
        return false;
    }
    let prefix = |k: usize| -> u32 {
        digits[..k]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    let issuer = match p1 {
        // Visa
        4 => matches!(n, 13 | 16 | 19),
        // Mastercard 2-series
        2 => (2221..=2720).contains(&p4) && n == 16,
        // Mastercard 51–55 (16 digits); Maestro 50, 56–59 (any length here)
        5 => ((51..=55).contains(&p2) && n == 16) || p2 == 50 || p2 >= 56,
        // Amex 34/37 (15), JCB 3528–3589 (16–19), Diners 300–305/36/38/39 (14–19)
        3 => {
            (matches!(p2, 34 | 37) && n == 15)
                || ((3528..=3589).contains(&p4) && n >= 16)
                || (((300..=305).contains(&p3) || matches!(p2, 36 | 38 | 39)) && n >= 14)
        }
        // Discover 6011/644–649/65, UnionPay 62, Maestro 6x: 16–19 digits
        6 => n >= 16,
        _ => false,
    };
    issuer && luhn(&digits)
}

/// IBAN lengths of the common countries (ISO 13616 registry), by country code.
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AT", 20),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"CH", 21),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"EE", 20),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
];

/// The ISO 7064 mod-97 test of an IBAN (ISO 13616): spaces dropped, the country's registered
/// length taken (a regex may run on into the next word), letters as 10–35, the first four
/// characters moved to the end, the number mod 97 must be 1. Why: the two check digits make
/// a typo or a random `XX00…` string fail 96 times in 97, and the length table rejects the rest
/// of the shapes that happen to start with two letters and two digits.
pub fn iban(m: &[u8]) -> bool {
    let chars: Vec<u8> = m.iter().copied().filter(|&b| b != b' ').collect();
    if chars.len() < 4 {
        return false;
    }
    let Some(&(_, len)) = IBAN_LENGTHS.iter().find(|(cc, _)| chars[..2] == cc[..]) else {
        return false;
    };
    if chars.len() < len {
        return false;
    }
    let iban = &chars[..len];
    if !iban[2..4].iter().all(u8::is_ascii_digit)
        || !iban[4..]
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        return false;
    }
    let mut rem: u32 = 0;
    for &b in iban[4..].iter().chain(&iban[..4]) {
        let v = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b - b'A') + 10
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// The BIP-39 English wordlist (2048 words, one a line).
const BIP39_ENGLISH: &str = include_str!("bip39_english.txt");

fn bip39_index(word: &[u8]) -> Option<u16> {
    use std::sync::OnceLock;
    static WORDS: OnceLock<Vec<&'static [u8]>> = OnceLock::new();
    let words = WORDS.get_or_init(|| BIP39_ENGLISH.lines().map(str::as_bytes).collect());
    // The list is sorted, so a binary search finds a word.
    words.binary_search(&word).ok().map(|i| i as u16)
}

/// Whether `words` (12, 15, 18, 21 or 24 BIP-39 English words) carry a valid checksum: the
/// words are 11-bit indexes; of their `11·n` bits the first `32·n/3` are the entropy and the
/// last `n/3` must equal the first bits of SHA-256 of that entropy.
pub fn bip39_checksum(words: &[&[u8]]) -> bool {
    let n = words.len();
    if !matches!(n, 12 | 15 | 18 | 21 | 24) {
        return false;
    }
    let mut bits: Vec<bool> = Vec::with_capacity(n * 11);
    for w in words {
        let Some(i) = bip39_index(w) else {
            return false;
        };
        bits.extend((0..11).rev().map(|b| i >> b & 1 == 1));
    }
    let cs = n / 3;
    let ent_bits = n * 11 - cs;
    let entropy: Vec<u8> = bits[..ent_bits]
        .chunks(8)
        .map(|c| c.iter().fold(0u8, |acc, &b| acc << 1 | u8::from(b)))
        .collect();
    let hash = Sha256::digest(&entropy);
    (0..cs).all(|i| bits[ent_bits + i] == (hash[i / 8] >> (7 - i % 8) & 1 == 1))
}

/// A BIP-39 seed phrase somewhere in a run of words: some 12/15/18/21/24 consecutive words that
/// are all in the English wordlist and carry a valid checksum ([`bip39_checksum`]). The run may
/// hold words before or after the phrase (the regex takes a run of lowercase words near a
/// keyword). Why: a dozen common English words are everywhere; the 4–8 checksum bits and the
/// wordlist together make prose fail (every word must be one of the 2048, and then 15 of 16
/// or more of the random phrases fail the checksum).
pub fn bip39_phrase(m: &[u8]) -> bool {
    let words: Vec<&[u8]> = m
        .split(|b| b.is_ascii_whitespace() || *b == b',')
        .filter(|w| !w.is_empty())
        .collect();
    let known: Vec<bool> = words.iter().map(|w| bip39_index(w).is_some()).collect();
    for len in [24, 21, 18, 15, 12] {
        for start in 0..words.len().saturating_sub(len - 1) {
            if known[start..start + len].iter().all(|&k| k)
                && bip39_checksum(&words[start..start + len])
            {
                return true;
            }
        }
    }
    false
}

/// A base58check string (Bitcoin's alphabet; the last 4 decoded bytes are the first 4 of the
/// double SHA-256 of the rest) whose payload is a private key: WIF (version 0x80 mainnet or
/// 0xef testnet, 32 key bytes, optionally 0x01 for a compressed public key) or a BIP-32
/// extended private key (78 bytes: `xprv`/`tprv`/`yprv`/`zprv`/… version, and a 0x00 byte
/// before the 32 key bytes). Why: the 32-bit checksum rejects all but one in four billion of
/// the random base58 strings of the right length, and the payload check tells private keys
/// from addresses and public keys.
pub fn base58check_key(m: &[u8]) -> bool {
    let Ok(payload) = bs58::decode(m).with_check(None).into_vec() else {
        return false;
    };
    match payload.len() {
        33 => matches!(payload[0], 0x80 | 0xef),
        34 => matches!(payload[0], 0x80 | 0xef) && payload[33] == 0x01,
        78 => {
            const PRIVATE_VERSIONS: &[[u8; 4]] = &[
                [0x04, 0x88, 0xad, 0xe4], // xprv
                [0x04, 0x35, 0x83, 0x94], // tprv
                [0x04, 0x9d, 0x78, 0x78], // yprv
                [0x04, 0xb2, 0x43, 0x0c], // zprv
                [0x04, 0x4a, 0x4e, 0x28], // uprv
                [0x04, 0x5f, 0x18, 0xbc], // vprv
            ];
            PRIVATE_VERSIONS.iter().any(|v| payload[..4] == v[..]) && payload[45] == 0
        }
        _ => false,
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                crc >> 1 ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Base62 alphabet of GitHub's token checksums: digits, then upper case, then lower case.
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` in base 62, left-padded with `0` to 6 characters (a CRC-32 is at most 6 base62 digits).
pub fn base62_6(mut n: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// The checksum of a classic GitHub token (`ghp_`/`gho_`/`ghu_`/`ghs_`/`ghr_` + 36 base62
/// characters): the last 6 characters are the CRC-32 of the 30 before them, in base62. `None`
/// when `token` is not of that 40-character shape (older or longer tokens carry no checksum).
/// Why only a confidence aid and never a rejection: see the `github-token` rule — the
/// workspace's tests (and GitHub's own documentation examples) use shape-valid tokens whose
/// checksum is wrong, and a leaked token whose checksum we mis-model must still be stopped.
pub fn github_checksum(token: &[u8]) -> Option<bool> {
    if token.len() != 40 || !token[4..].iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    Some(base62_6(crc32(&token[4..34])) == token[34..40])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_and_card_numbers() {
        // Test card numbers published by the card networks for integration testing.
        for good in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "6011111111111117",
            "3530111333300000",
            "36227206271667",
            "4222222222222",
        ] {
            assert!(card_number(good.as_bytes()), "{good}");
        }
        for bad in [
            "4111111111111112",     // Luhn
            "1234567812345670",     // Luhn-valid, no issuer starts with 1
            "0000000000000000",     // one repeated digit
            "411111111111",         // 12 digits
            "41111111111111111111", // 20 digits
            "37828224631000",       // Amex is 15 digits
            "9999999999999995",     // no issuer
        ] {
            assert!(!card_number(bad.as_bytes()), "{bad}");
        }
        assert!(luhn(b"79927398713"));
        assert!(!luhn(b"79927398710"));
        assert!(!luhn(b""));
        assert!(!luhn(b"12a4"));
    }

    #[test]
    fn iban_mod97() {
        // The example IBANs of the ISO 13616 registry.
        for good in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB29NWBK60161331926819",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "BE68539007547034",
            "NO9386011117947",
            "CH9300762011623852957",
            // The registry length cuts what a regex ran on into.
            "DE89 3704 0044 0532 0130 00 ABCD",
        ] {
            assert!(iban(good.as_bytes()), "{good}");
        }
        for bad in [
            "DE88370400440532013000", // check digits
            "DE8937040044053201300",  // too short for DE
            "XX89370400440532013000", // unknown country
            "de89370400440532013000", // lower case
            "GB29NWBK6016133192681!",
        ] {
            assert!(!iban(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn bip39_wordlist_and_checksums() {
        assert_eq!(BIP39_ENGLISH.lines().count(), 2048);
        assert_eq!(bip39_index(b"abandon"), Some(0));
        assert_eq!(bip39_index(b"zoo"), Some(2047));
        assert_eq!(bip39_index(b"bitcoin"), None);
        // BIP-39 test vectors (entropy 00…, 7f…, 80…, ff…; no passphrase involved).
        let vectors = [
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
            "legal winner thank year wave sausage worth useful legal winner thank yellow",
            "letter advice cage absurd amount doctor acoustic avoid letter advice cage above",
            "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong",
            "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art",
            "legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth useful legal will",
        ];
        for v in vectors {
            let words: Vec<&[u8]> = v.split(' ').map(str::as_bytes).collect();
            assert!(bip39_checksum(&words), "{v}");
            assert!(
                bip39_phrase(format!("my words are {v} ok").as_bytes()),
                "{v}"
            );
        }
        // A wrong last word, a word outside the list, a wrong count.
        assert!(!bip39_phrase(b"abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon"));
        assert!(!bip39_phrase(b"abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon bitcoin"));
        assert!(!bip39_phrase(b"abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"));
    }

    #[test]
    fn base58check_keys() {
        // Private keys of the well-known test vectors: BIP-32 test vector 1's master xprv and
        // the WIF of private key 1 (uncompressed and compressed).
        for good in [
            "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHi",
            "5HpHagT65TZzG1PH3CSu63k8DbpvD8s5ip4nEB3kEsreAnchuDf",
            "KwDiBf89QgGbjEhKnhXJuH7LrciVrZi3qYjgd9M7rFU73Nd2Mcv1",
        ] {
            assert!(base58check_key(good.as_bytes()), "{good}");
        }
        for bad in [
            // One character changed: the checksum fails.
            "xprv9s21ZrQH143K3QTDL4LXw2F7HEK3wJUD2nW2nRk4stbPy6cq3jPPqjiChkVvvNKmPGJxWUtg6LnF5kejMRNNU3TGtRBeJgk33yuGBxrMPHj",
            "5HpHagT65TZzG1PH3CSu63k8DbpvD8s5ip4nEB3kEsreAnchuDg",
            // The matching xpub: valid base58check, but a public key.
            "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8",
            // A Bitcoin address: valid base58check, version 0x00.
            "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
            "not base58 0OIl",
        ] {
            assert!(!base58check_key(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn github_crc32_checksum() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(&base62_6(0), b"000000");
        assert_eq!(&base62_6(61), b"00000z");
        assert_eq!(&base62_6(u32::MAX), b"4gfFC3");
        let body = "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123";
        let sum = String::from_utf8(base62_6(crc32(body.as_bytes())).to_vec()).unwrap();
        let token = format!("ghp_{body}{sum}");
        assert_eq!(github_checksum(token.as_bytes()), Some(true));
        assert_eq!(
            github_checksum(b"ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
            Some(false)
        );
        assert_eq!(github_checksum(b"ghp_short"), None);
    }

    #[test]
    fn validate_dispatches() {
        assert!(validate(Check::Luhn, b"4111111111111111"));
        assert!(!validate(Check::Luhn, b"4111111111111112"));
        assert!(validate(Check::Mod97, b"GB29NWBK60161331926819"));
        assert!(validate(Check::None, b"anything"));
    }
}
