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
        if view.bytes.len() <= *budget {
            *budget -= view.bytes.len();
            out.push(view);
        }
    };
    if has_percent_escape(data) {
        let bytes = percent_decode(data);
        push(
            View {
                offset: 0,
                len: data.len(),
                encoding: "percent",
                bytes,
            },
            &mut out,
        );
    }
    for (start, end) in runs(data, is_base64_byte, MIN_BASE64_RUN) {
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

fn has_percent_escape(data: &[u8]) -> bool {
    data.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

fn is_base64_byte(b: u8) -> bool {
    // `=` only pads the end: inside a run it is an assignment (`d=QUtJ…`), which ends a run.
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// Maximal runs of at least `min` bytes satisfying `pred`, as `(start, end)`.
fn runs(data: &[u8], pred: fn(u8) -> bool, min: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if !pred(data[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < data.len() && pred(data[i]) {
            i += 1;
        }
        if i - start >= min {
            out.push((start, i));
        }
    }
    out
}

/// Decode one run. The run is the encoded blob as it stands, so its start is the blob's start
/// and the alignment is right; a token inside the decoded bytes may sit at any offset.
fn base64_view(run: &[u8], offset: usize) -> Option<View> {
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

/// Runs of at least [`MIN_HEX_BYTES`] hex-digit pairs, with no delimiter or one consistent
/// delimiter (`:`, `-` or a space) between pairs: `(start, end, decoded)`.
fn hex_runs(data: &[u8]) -> Vec<(usize, usize, Vec<u8>)> {
    let hex = |j: usize| data.get(j).is_some_and(u8::is_ascii_hexdigit);
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < data.len() {
        if !hex(i) || !hex(i + 1) || (i > 0 && hex(i - 1)) {
            i += 1;
            continue;
        }
        let start = i;
        let delimiter = data
            .get(i + 2)
            .copied()
            .filter(|b| matches!(b, b':' | b'-' | b' '));
        // Measure first; decode only runs long enough to matter (most are a word's "de").
        let (mut j, mut pairs) = (i, 0);
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
        i = j.max(i + 1);
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
        let blob = base64::engine::general_purpose::STANDARD.encode([7u8; 300]);
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
