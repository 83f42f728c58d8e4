//! Finding secrets in the lines a push adds: parse `git diff-tree --stdin -p --cc` output and
//! run the shared scanner ([`scanner::Scanner`]) over every added line.
//!
//! Added lines are batched into one buffer (with a side table of commit/file/line per line)
//! and scanned in large chunks, so the scanner's per-call setup is paid per megabyte, not per
//! line. Binary files (git prints `Binary files ... differ`) have no lines and are skipped.
//! For merges, `--cc` shows only what the merge itself introduced; a line counts as added when
//! it is new relative to every parent (`++`), which catches "evil merge" content while not
//! re-reporting what the merged branches' own commits already carry (those are scanned as
//! commits in their own right when they are new).

use std::io::BufRead;

use scanner::Scanner;

/// Flush the batch to the scanner once it holds this many bytes.
const BATCH_BYTES: usize = 4 << 20;
/// Stop collecting after this many findings (the push is refused anyway).
pub const MAX_LEAKS: usize = 100;

/// A secret found in a pushed commit. Holds only a redacted excerpt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// Full commit id.
    pub commit: String,
    /// File path in the commit.
    pub path: String,
    /// 1-based line number in the commit's version of the file.
    pub line: u32,
    /// The scanner rule that fired.
    pub rule: &'static str,
    /// Redacted excerpt, safe to show (e.g. `AKIA…(20 chars)`).
    pub redacted: String,
}

impl std::fmt::Display for Leak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let commit = &self.commit[..self.commit.len().min(12)];
        if self.line == 0 {
            // A binary file or an archive member: no lines.
            write!(
                f,
                "commit {commit} file {}: {} ({})",
                self.path, self.rule, self.redacted
            )
        } else {
            write!(
                f,
                "commit {commit} file {} line {}: {} ({})",
                self.path, self.line, self.rule, self.redacted
            )
        }
    }
}

/// Totals of a scan, for logs and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Commits seen.
    pub commits: usize,
    /// Added lines scanned.
    pub lines: usize,
    /// Bytes of diff output parsed.
    pub bytes: usize,
}

struct LineRef {
    start: usize,
    commit: u32,
    path: u32,
    line: u32,
}

struct Batch<'s> {
    scanner: &'s Scanner,
    buf: Vec<u8>,
    lines: Vec<LineRef>,
    commits: Vec<String>,
    paths: Vec<String>,
    leaks: Vec<Leak>,
}

impl Batch<'_> {
    fn push(&mut self, content: &[u8], line: u32) {
        self.lines.push(LineRef {
            start: self.buf.len(),
            commit: (self.commits.len() - 1) as u32,
            path: (self.paths.len() - 1) as u32,
            line,
        });
        self.buf.extend_from_slice(content);
        self.buf.push(b'\n');
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        for finding in self.scanner.scan_all(&self.buf) {
            if self.leaks.len() >= MAX_LEAKS {
                break;
            }
            let idx = self
                .lines
                .partition_point(|l| l.start <= finding.offset)
                .saturating_sub(1);
            let Some(l) = self.lines.get(idx) else {
                continue;
            };
            let leak = Leak {
                commit: self.commits[l.commit as usize].clone(),
                path: self.paths[l.path as usize].clone(),
                line: l.line,
                rule: finding.rule,
                redacted: finding.redacted,
            };
            if !self.leaks.contains(&leak) {
                self.leaks.push(leak);
            }
        }
        self.buf.clear();
        self.lines.clear();
        // Keep only the current commit/path so indices stay valid for the next batch.
        let (c, p) = (self.commits.pop(), self.paths.pop());
        self.commits.clear();
        self.paths.clear();
        self.commits.extend(c);
        self.paths.extend(p);
    }
}

#[derive(PartialEq)]
enum State {
    /// Between files (commit line, `diff` line, or nothing yet).
    Top,
    /// In a file's header (`index`, `---`, `+++`, `Binary files`, modes...).
    Header,
    /// In a hunk: content lines until a line that is not content.
    Hunk,
}

fn is_commit_line(line: &[u8]) -> bool {
    (line.len() == 40 || line.len() == 64) && line.iter().all(u8::is_ascii_hexdigit)
}

/// `+c,d` (or `+c`) of a hunk header → (number of parents, first new line number).
fn hunk_header(line: &[u8]) -> Option<(usize, u32)> {
    let ats = line.iter().take_while(|&&b| b == b'@').count();
    if ats < 2 {
        return None;
    }
    let text = std::str::from_utf8(&line[ats..]).ok()?;
    let plus = text.split(' ').find(|t| t.starts_with('+'))?;
    let start = plus[1..].split(',').next()?.parse().ok()?;
    Some((ats - 1, start))
}

/// The path of a `+++ b/<path>` header line (C-quoted paths unquoted).
fn plus_path(rest: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(rest);
    let s = s.trim_end_matches(['\n', '\r']);
    if s == "/dev/null" {
        return None;
    }
    let unquoted = if s.starts_with('"') && s.ends_with('"') && s.len() >= 2 {
        unquote(&s[1..s.len() - 1])
    } else {
        s.to_string()
    };
    Some(unquoted.strip_prefix("b/").unwrap_or(&unquoted).to_string())
}

/// Undo git's C-style path quoting (`\t`, `\"`, `\\`, octal bytes).
fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let c = b[i + 1];
            if (b'0'..=b'3').contains(&c) && i + 3 < b.len() {
                let oct = &s[i + 1..i + 4];
                if let Ok(v) = u8::from_str_radix(oct, 8) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
            out.push(match c {
                b'n' => b'\n',
                b't' => b'\t',
                b'r' => b'\r',
                b'a' => 7,
                b'b' => 8,
                b'f' => 12,
                b'v' => 11,
                other => other,
            });
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Scan `diff-tree --stdin -p --cc` output from `input` for secrets in added lines.
pub fn scan_diff<R: BufRead>(
    mut input: R,
    scanner: &Scanner,
) -> std::io::Result<(Vec<Leak>, Stats)> {
    let mut batch = Batch {
        scanner,
        buf: Vec::with_capacity(BATCH_BYTES + 64 * 1024),
        lines: Vec::new(),
        commits: Vec::new(),
        paths: Vec::new(),
        leaks: Vec::new(),
    };
    let mut stats = Stats::default();
    let mut state = State::Top;
    let mut parents = 1usize;
    let mut new_line = 0u32;
    let mut have_path = false;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        stats.bytes += n;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if state == State::Hunk {
            match line.first() {
                Some(b' ' | b'+' | b'-') => {
                    let prefix = &line[..parents.min(line.len())];
                    if !prefix.contains(&b'-') {
                        if have_path
                            && !batch.commits.is_empty()
                            && prefix.iter().all(|&b| b == b'+')
                        {
                            batch.push(&line[prefix.len()..], new_line);
                            stats.lines += 1;
                            if batch.buf.len() >= BATCH_BYTES {
                                batch.flush();
                            }
                        }
                        new_line = new_line.saturating_add(1);
                    }
                    continue;
                }
                Some(b'\\') => continue,
                _ => state = State::Top,
            }
        }
        if line.starts_with(b"@@") {
            if let Some((p, start)) = hunk_header(&line) {
                parents = p;
                new_line = start;
                state = State::Hunk;
                continue;
            }
        }
        if line.starts_with(b"diff ") {
            state = State::Header;
            have_path = false;
            continue;
        }
        if state == State::Header {
            if let Some(rest) = line.strip_prefix(b"+++ ") {
                if let Some(path) = plus_path(rest) {
                    batch.paths.push(path);
                    have_path = true;
                }
            }
            continue;
        }
        if is_commit_line(&line) {
            batch
                .commits
                .push(String::from_utf8_lossy(&line).into_owned());
            stats.commits += 1;
            continue;
        }
    }
    batch.flush();
    Ok((batch.leaks, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanner::SecretConfig;

    const AWS: &str = "AKIAIOSFODNN7EXAMPLQ";

    fn scanner() -> Scanner {
        Scanner::new(&SecretConfig::default()).unwrap()
    }

    #[test]
    fn finds_added_lines_with_file_and_line() {
        let diff = format!(
            "1111111111111111111111111111111111111111\n\
             diff --git a/src/main.rs b/src/main.rs\n\
             index 1..2 100644\n\
             --- a/src/main.rs\n\
             +++ b/src/main.rs\n\
             @@ -10,3 +10,4 @@ fn main() {{\n \
             let a = 1;\n\
             -let old = \"{AWS}\";\n\
             +let b = 2;\n\
             +let key = \"{AWS}\";\n \
             }}\n\
             2222222222222222222222222222222222222222\n\
             diff --git a/\"we\\303\\251ird name\" b/\"we\\303\\251ird name\"\n\
             --- /dev/null\n\
             +++ \"b/we\\303\\251ird name\"\n\
             @@ -0,0 +1 @@\n\
             +{AWS}\n"
        );
        let (leaks, stats) = scan_diff(diff.as_bytes(), &scanner()).unwrap();
        assert_eq!(stats.commits, 2);
        assert_eq!(leaks.len(), 2, "{leaks:?}");
        assert_eq!(leaks[0].commit, "1".repeat(40));
        assert_eq!(leaks[0].path, "src/main.rs");
        assert_eq!(leaks[0].line, 12);
        assert_eq!(leaks[0].rule, "aws-access-key");
        assert!(!leaks[0].redacted.contains(AWS));
        assert_eq!(leaks[1].path, "weéird name");
        assert_eq!(leaks[1].line, 1);
    }

    #[test]
    fn removed_and_context_lines_and_binaries_are_not_reported() {
        let diff = format!(
            "1111111111111111111111111111111111111111\n\
             diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1,2 +1,1 @@\n {AWS}\n-{AWS}\n\
             diff --git a/img.png b/img.png\nBinary files a/img.png and b/img.png differ\n"
        );
        let (leaks, _) = scan_diff(diff.as_bytes(), &scanner()).unwrap();
        assert!(leaks.is_empty(), "{leaks:?}");
    }

    #[test]
    fn combined_diff_reports_only_lines_new_to_every_parent() {
        let diff = format!(
            "3333333333333333333333333333333333333333\n\
             diff --cc f\nindex a,b..c\n--- a/f\n+++ b/f\n@@@ -1,2 -1,2 +1,4 @@@\n \
             +z\n  a\n+ {AWS}\n++evil {AWS}\n"
        );
        let (leaks, _) = scan_diff(diff.as_bytes(), &scanner()).unwrap();
        assert_eq!(leaks.len(), 1, "{leaks:?}");
        assert_eq!(leaks[0].line, 4);
    }

    #[test]
    fn an_added_line_that_looks_like_a_header_is_content() {
        let diff = format!(
            "1111111111111111111111111111111111111111\n\
             diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -0,0 +1,2 @@\n+++ b/{AWS}\n+diff {AWS}\n"
        );
        let (leaks, _) = scan_diff(diff.as_bytes(), &scanner()).unwrap();
        assert_eq!(leaks.len(), 2, "{leaks:?}");
        assert_eq!((leaks[0].line, leaks[1].line), (1, 2));
        assert_eq!(leaks[0].path, "a");
    }
}
