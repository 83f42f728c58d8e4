//! Benchmark helper for `bench/git-gate.sh`: the pre-receive scanning path (diff parsing +
//! the shared secret scanner) over a diff file, single-threaded, and the bare scanner over
//! the same bytes as the in-run baseline. Prints one JSON object.
//!
//! usage: cargo run --release -p git-gate --example scan_throughput -- DIFF_FILE

use std::time::Instant;

use git_gate::scan::scan_diff;
use scanner::{Scanner, SecretConfig};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: scan_throughput DIFF_FILE");
    let data = std::fs::read(&path).expect("read the diff");
    let scanner = Scanner::new(&SecretConfig::default()).expect("scanner");
    let mb = data.len() as f64 / 1e6;
    // Best of three, to keep page-cache and frequency noise out.
    let mut best_path = f64::MAX;
    let mut best_raw = f64::MAX;
    let mut leaks = 0;
    let mut stats = Default::default();
    for _ in 0..3 {
        let t = Instant::now();
        let (l, s) = scan_diff(&data[..], &scanner).expect("scan");
        best_path = best_path.min(t.elapsed().as_secs_f64());
        leaks = l.len();
        stats = s;
        let t = Instant::now();
        let found = scanner.scan_all(&data).len();
        best_raw = best_raw.min(t.elapsed().as_secs_f64());
        std::hint::black_box(found);
    }
    let stats: git_gate::scan::Stats = stats;
    println!(
        "{{\"mb\":{mb:.1},\"commits\":{},\"added_lines\":{},\"leaks\":{leaks},\"path_s\":{best_path:.3},\"path_mb_s\":{:.1},\"raw_scanner_s\":{best_raw:.3},\"raw_scanner_mb_s\":{:.1}}}",
        stats.commits,
        stats.lines,
        mb / best_path,
        mb / best_raw
    );
}
