//! docs/init.md "Logs": prefixing, no interleaving, partial and long lines, raw bytes, JSON.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use support::*;

const T: Duration = Duration::from_secs(30);

#[test]
fn two_daemons_writing_100k_lines_each_come_out_whole_prefixed_and_in_order() {
    let dir = Dir::new();
    // Each daemon writes 100k numbered lines as fast as it can, on stdout; a third writes
    // on stderr, to check the stream is kept.
    let gen = |tag: &str| {
        json!([
            "/bin/sh",
            "-c",
            format!("seq 1 100000 | sed 's/^/{tag}-line-/'")
        ])
    };
    dir.config(json!({"daemons": [
        {"name": "alpha", "argv": gen("alpha"), "restart": "never"},
        {"name": "beta", "argv": gen("beta"), "restart": "never"},
        {"name": "errs", "argv": ["/bin/sh", "-c", "echo to-stderr >&2"], "restart": "never"}
    ]}));
    let f = Init::supervise(Mode::Subreaper, &dir, &[]).finish(T);
    assert_eq!(f.code, Some(0), "all clean -> 0\n{}", f.err);
    let mut next: HashMap<&str, u32> = HashMap::from([("alpha", 1), ("beta", 1)]);
    for line in f.out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = std::str::from_utf8(line).expect("utf8");
        let (name, rest) = line
            .split_once(" | ")
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let n = next
            .get_mut(name)
            .unwrap_or_else(|| panic!("unexpected daemon in {line:?}"));
        assert_eq!(rest, format!("{name}-line-{n}"), "line intact and in order");
        *n += 1;
    }
    assert_eq!(next["alpha"], 100_001, "no alpha line lost");
    assert_eq!(next["beta"], 100_001, "no beta line lost");
    assert!(
        f.err.contains("errs | to-stderr\n"),
        "stderr stays stderr: {}",
        f.err
    );
    assert!(!f.out_text().contains("to-stderr"));
}

#[test]
fn partial_last_line_long_line_and_raw_bytes() {
    let dir = Dir::new();
    dir.config(json!({"daemons": [
        {"name": "partial", "argv": ["/bin/sh", "-c", "printf 'first\\nno newline at the end'"], "restart": "never"},
        {"name": "long", "argv": ["/bin/sh", "-c", "head -c 150000 /dev/zero | tr '\\0' x; echo; echo after"], "restart": "never"},
        {"name": "raw", "argv": ["/bin/sh", "-c", "printf 'bytes \\377\\376 end\\n'"], "restart": "never"}
    ]}));
    let f = Init::supervise(Mode::Subreaper, &dir, &[]).finish(T);
    assert_eq!(f.code, Some(0), "{}", f.err);
    let out = f.out;
    let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    assert!(lines.contains(&&b"partial | first"[..]));
    assert!(
        lines.contains(&&b"partial | no newline at the end"[..]),
        "partial line flushed at exit"
    );
    assert!(
        lines.contains(&&b"raw | bytes \xff\xfe end"[..]),
        "non-UTF-8 passes through"
    );
    let long: Vec<&&[u8]> = lines.iter().filter(|l| l.starts_with(b"long |")).collect();
    assert_eq!(
        long.len(),
        4,
        "150000 bytes = 2 full 64 KiB chunks + rest, then 'after'"
    );
    assert_eq!(long[0].len(), "long |+ ".len() + 65536);
    assert!(long[0].starts_with(b"long |+ xxx"));
    assert!(long[1].starts_with(b"long |+ xxx"));
    assert_eq!(long[2].len(), "long | ".len() + 150000 - 2 * 65536);
    assert_eq!(*long[3], b"long | after");
}

#[test]
fn json_log_format_has_ts_daemon_stream_msg() {
    let dir = Dir::new();
    dir.config(json!({"daemons": [
        {"name": "j", "argv": ["/bin/sh", "-c", "echo 'hello \"world\"'; printf 'bad \\377\\n' >&2"], "restart": "never"}
    ]}));
    let f = Init::supervise(Mode::Subreaper, &dir, &[("SIDECARS_LOG_FORMAT", "json")]).finish(T);
    assert_eq!(f.code, Some(0), "{}", f.err);
    let out: serde_json::Value =
        serde_json::from_slice(f.out.trim_ascii_end()).expect("one JSON line");
    assert_eq!(out["daemon"], "j");
    assert_eq!(out["stream"], "stdout");
    assert_eq!(out["msg"], "hello \"world\"");
    assert!(out["ts"].as_str().is_some_and(|t| t.ends_with('Z')));
    let errs: Vec<serde_json::Value> = f
        .err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(errs
        .iter()
        .any(|e| e["daemon"] == "j" && e["msg"] == "bad \u{fffd}"));
    assert!(
        errs.iter()
            .any(|e| e["daemon"] == "init"
                && e["msg"].as_str().unwrap_or("").starts_with("started j"))
    );
}
