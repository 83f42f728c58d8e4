//! Encoded views of a buffer for the secret scanner: a token format hidden in base64 (standard
//! or URL-safe), hex (plain or with `:`/`-`/space between bytes) or percent-encoding (applied
//! several times), and in nestings of those, to a bounded depth.
//!
//! Why: pipelock and git-gate match token formats on the bytes they see; `?d=QUtJQ…` (base64
//! of an AWS key), a dashed hex dump or a double URL-encoded token would otherwise pass. Each
//! view says where its encoded run lies in the parent buffer, so a finding points there.

use base64::Engine;

/// How many decodings may nest (base64 of hex of a percent-encoded token is 3).
pub const MAX_DEPTH: usize = 3;
/// Shortest base64 run worth decoding: 24 characters are 18 bytes, below every token format
/// the scanner knows that is long enough to matter.
pub const MIN_BASE64_RUN: usize = 24;
/// Shortest hex run worth decoding, in bytes (32 hex digits).
pub const MIN_HEX_BYTES: usize = 16;

/// One decoded run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Where the encoded run starts in the buffer it was found in.
    pub offset: usize,
    /// Its length there.
    pub len: usize,
    /// `base64`, `base64url`, `hex` or `percent`.
    pub encoding: &'static str,
    /// The decoded bytes.
    pub bytes: Vec<u8>,
}

/// The decoded runs of `data`, one level deep (the scanner recurses). `budget` is the most
/// decoded bytes to produce; it is decreased by what is produced.
pub fn views(data: &[u8], budget: &mut usize) -> Vec<View> {
    let mut out = Vec::new();
    let mut push = |view: View, out: &mut Vec<View>| {
        // Token formats are text: decoded bytes that are not (a hash, an image, key material)
        // cannot hold one, and scanning them would only cost.
        if view.bytes.len() <= *budget && text_like(&view.bytes) {
            *budget -= view.bytes.len();
            out.push(view);
        }
    };
    for (start, end) in percent_runs(data) {
        push(
            View {
                offset: start,
                len: end - start,
                encoding: "percent",
                bytes: percent_decode(&data[start..end]),
            },
            &mut out,
        );
    }
    for (start, end) in base64_runs(data, MIN_BASE64_RUN) {
        let padded = (end..data.len().min(end + 2))
            .take_while(|&i| data[i] == b'=')
            .last()
            .map_or(end, |i| i + 1);
        if let Some(view) = base64_view(&data[start..padded], start) {
            push(view, &mut out);
        }
    }
    for (start, end, bytes) in hex_runs(data) {
        push(
            View {
                offset: start,
                len: end - start,
                encoding: "hex",
                bytes,
            },
            &mut out,
        );
    }
    out
}

/// At least three quarters printable ASCII or whitespace.
fn text_like(bytes: &[u8]) -> bool {
    let text = bytes
        .iter()
        .filter(|&&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
        .count();
    text * 4 >= bytes.len() * 3
}

/// Byte classes, looked up rather than computed: the scanner classifies every input byte.
const BASE64: u8 = 1;
const HEX: u8 = 2;
/// Ends a percent-encoded run: whitespace, quotes and angle brackets (a URL, a form value or
/// a query is one run; the text around it is not decoded).
const BREAK: u8 = 4;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'-' | b'_') {
            // `=` only pads the end: inside a run it is an assignment (`d=QUtJ…`).
            t[b] |= BASE64;
        }
        if c.is_ascii_hexdigit() {
            t[b] |= HEX;
        }
        if c.is_ascii_whitespace() || matches!(c, b'"' | b'\'' | b'<' | b'>' | b'`') {
            t[b] |= BREAK;
        }
        b += 1;
    }
    t
};

fn is(b: u8, class: u8) -> bool {
    CLASS[b as usize] & class != 0
}

/// The runs (between whitespace, quotes or angle brackets) holding a `%XX` escape, as
/// `(start, end)`: only those are decoded, not the whole buffer around them.
fn percent_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for at in memchr::memchr_iter(b'%', data) {
        if out.last().is_some_and(|&(_, end)| at < end) {
            continue;
        }
        let escape = data.get(at + 1).is_some_and(|&b| is(b, HEX))
            && data.get(at + 2).is_some_and(|&b| is(b, HEX));
        if !escape {
            continue;
        }
        let start = data[..at]
            .iter()
            .rposition(|&b| is(b, BREAK))
            .map_or(0, |i| i + 1);
        let end = data[at..]
            .iter()
            .position(|&b| is(b, BREAK))
            .map_or(data.len(), |i| at + i);
        out.push((start, end));
    }
    out
}

/// Maximal runs of at least `min` base64 bytes, as `(start, end)`. Probes every `min`-th
/// byte (each such run covers one probe) and measures a run only around a probe inside one.
fn base64_runs(data: &[u8], min: usize) -> Vec<(usize, usize)> {
    probed_runs(data, min, |b| is(b, BASE64))
        .into_iter()
        .filter(|(s, e)| e - s >= min)
        .collect()
}

/// The maximal runs of bytes in `class` that hold one of the probes at every `step`-th
/// byte: every run of at least `step` bytes is among them.
fn probed_runs(data: &[u8], step: usize, class: impl Fn(u8) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let step = step.max(1);
    let (mut probe, mut floor) = (step - 1, 0);
    while probe < data.len() {
        if !class(data[probe]) {
            probe += step;
            continue;
        }
        let mut start = probe;
        while start > floor && class(data[start - 1]) {
            start -= 1;
        }
        let mut end = probe + 1;
        while end < data.len() && class(data[end]) {
            end += 1;
        }
        out.push((start, end));
        floor = end;
        // The next run starts after `end` (not in the class); one of at least `step` bytes
        // covers `end + step`.
        probe = end + step;
    }
    out
}

/// Decode one run. The run is the encoded blob as it stands, so its start is the blob's start
/// and the alignment is right; a token inside the decoded bytes may sit at any offset.
fn base64_view(run: &[u8], offset: usize) -> Option<View> {
    // Base64 of anything is mixed-case: 24 random base64 characters without an upper-case
    // (or without a lower-case) letter come up about once in 250,000. A run without both is
    // a snake_case identifier, a word or a number, not worth decoding.
    let upper = run.iter().any(u8::is_ascii_uppercase);
    let lower = run.iter().any(u8::is_ascii_lowercase);
    if !(upper && lower) {
        return None;
    }
    let body: Vec<u8> = run.iter().copied().filter(|&b| b != b'=').collect();
    // A run of letters and digits only is as likely an identifier; it still decodes, cheaply.
    let url = body.iter().any(|&b| b == b'-' || b == b'_');
    let std = body.iter().any(|&b| b == b'+' || b == b'/');
    if url && std {
        return None;
    }
    let mut body = body;
    if body.len() % 4 == 1 {
        body.pop();
    }
    let engine = if url {
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
    } else {
        &base64::engine::general_purpose::STANDARD_NO_PAD
    };
    let bytes = engine.decode(&body).ok()?;
    Some(View {
        offset,
        len: run.len(),
        encoding: if url { "base64url" } else { "base64" },
        bytes,
    })
}

/// Runs of at least [`MIN_HEX_BYTES`] hex-digit pairs (see [`hex_runs_in`]), looked for only
/// in the stretches of hex digits and delimiters that a probe every `2 × MIN_HEX_BYTES` bytes
/// lands in (a run that long covers one).
fn hex_runs(data: &[u8]) -> Vec<(usize, usize, Vec<u8>)> {
    let class = |b: u8| is(b, HEX) || matches!(b, b':' | b'-' | b' ');
    let mut out = Vec::new();
    for (start, end) in probed_runs(data, 2 * MIN_HEX_BYTES, class) {
        if end - start < 2 * MIN_HEX_BYTES {
            continue;
        }
        for (s, e, bytes) in hex_runs_in(&data[start..end]) {
            out.push((start + s, start + e, bytes));
        }
    }
    out
}

/// Runs of at least [`MIN_HEX_BYTES`] hex-digit pairs, with no delimiter or one consistent
/// delimiter (`:`, `-` or a space) between pairs: `(start, end, decoded)`.
fn hex_runs_in(data: &[u8]) -> Vec<(usize, usize, Vec<u8>)> {
    let hex = |j: usize| data.get(j).is_some_and(|&b| is(b, HEX));
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        // One look per byte: skip to the next run of hex digits, measure it, and decode only
        // a run long enough to matter (most are a word's "de") or a pair that a delimiter
        // follows (`de:ad:be:ef`).
        if !is(data[i], HEX) {
            i += 1;
            continue;
        }
        let start = i;
        let mut run_end = i;
        while run_end < data.len() && is(data[run_end], HEX) {
            run_end += 1;
        }
        let delimiter = data
            .get(start + 2)
            .copied()
            .filter(|b| run_end == start + 2 && matches!(b, b':' | b'-' | b' '));
        if run_end - start < 2 * MIN_HEX_BYTES && delimiter.is_none() {
            i = run_end;
            continue;
        }
        let (mut j, mut pairs) = (start, 0);
        while hex(j) && hex(j + 1) {
            pairs += 1;
            j += 2;
            match delimiter {
                Some(d) if data.get(j) == Some(&d) && hex(j + 1) && hex(j + 2) => j += 1,
                Some(_) => break,
                None => {}
            }
        }
        if pairs >= MIN_HEX_BYTES {
            let step = if delimiter.is_some() { 3 } else { 2 };
            let bytes = (0..pairs)
                .filter_map(|k| {
                    let at = start + k * step;
                    Some(hex_val(data[at])? << 4 | hex_val(data[at + 1])?)
                })
                .collect();
            out.push((start, j, bytes));
        }
        i = j.max(run_end);
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

    #[test]
    fn hex_runs_take_plain_and_delimited_pairs() {
        let key = b"AKIAQWERTYUIOPASDFGH";
        let plain = hex::encode(key);
        let colons = key
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let dashes = key
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join("-");
        for text in [plain, colons, dashes] {
            let input = format!("x={text};");
            let runs = hex_runs(input.as_bytes());
            assert_eq!(runs.len(), 1, "{input}");
            assert_eq!(runs[0].2, key, "{input}");
            assert_eq!(&input[runs[0].0..runs[0].1], text);
        }
        assert!(hex_runs(b"deadbeef").is_empty(), "too short");
    }

    #[test]
    fn the_budget_bounds_what_is_decoded() {
        let blob = base64::engine::general_purpose::STANDARD.encode([b'x'; 300]);
        let mut budget = 100;
        assert!(views(blob.as_bytes(), &mut budget).is_empty());
        let mut budget = 1000;
        assert_eq!(views(blob.as_bytes(), &mut budget).len(), 1);
        assert_eq!(budget, 700);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"a%41%4a%zz%4"), b"aAJ%zz%4");
    }
}
