//! A quick release-mode throughput check of the built-in rules:
//! `cargo run --release -p scanner --example throughput -- FILE` scans FILE three times with
//! [`scanner::Scanner::scan_all`] and prints the best MB/s and the number of findings.

use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: throughput FILE");
    let data = std::fs::read(&path).expect("read input");
    let scanner = scanner::Scanner::new(&scanner::SecretConfig::default()).expect("scanner");
    let mut best = f64::MAX;
    let mut findings = 0;
    for _ in 0..3 {
        let t = Instant::now();
        findings = scanner.scan_all(&data).len();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let mb = data.len() as f64 / 1e6;
    println!(
        "{mb:.1} MB, {} rules, {findings} findings, best {:.3} s = {:.1} MB/s",
        scanner::rule_names().count(),
        best,
        mb / best
    );
}
