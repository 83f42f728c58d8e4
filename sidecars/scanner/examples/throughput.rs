//! Driver of `bench/scanner.sh`: scans FILE three times on one thread, as the proxies scan
//! request bodies — in pieces of at most 1 MiB (`max_body_scan_bytes`' default), cut at line
//! ends — with [`scanner::Scanner::scan_all`] (default config: every built-in rule, no
//! configured values), and prints one JSON object with the size, the best MB/s and the
//! findings. `--rules` prints
//! the number of built-in rules. Kept to the scanner's oldest API so the benchmark can build
//! it against an earlier commit as its baseline.
//!
//! usage: cargo run --release -p scanner --example throughput -- FILE | --rules

use std::time::Instant;

fn main() {
    let arg = std::env::args()
        .nth(1)
        .expect("usage: throughput FILE | --rules");
    if arg == "--rules" {
        println!("{}", scanner::rule_names().count());
        return;
    }
    let data = std::fs::read(&arg).expect("read the input file");
    let scanner = scanner::Scanner::new(&scanner::SecretConfig::default()).expect("scanner");
    let mut best = f64::MAX;
    let mut findings = 0;
    for _ in 0..3 {
        let t = Instant::now();
        findings = pieces(&data).map(|p| scanner.scan_all(p).len()).sum();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mb = data.len() as f64 / 1e6;
    println!(
        "{{\"mb\": {mb:.1}, \"seconds\": {best:.4}, \"mb_s\": {:.1}, \"findings\": {findings}}}",
        mb / best
    );
}

/// `data` cut into pieces of at most 1 MiB, each ending at a line end where there is one.
fn pieces(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    const PIECE: usize = 1 << 20;
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(PIECE);
        if end < rest.len() {
            if let Some(nl) = rest[..end].iter().rposition(|&b| b == b'\n') {
                end = nl + 1;
            }
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}
