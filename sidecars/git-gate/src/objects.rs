//! What a push carries besides the added lines of its commits: commit messages and
//! author/committer identities, annotated tags (tagger and message), and refs that point at a
//! blob or a tree instead of a commit (a secret can ride in any of them). Each is scanned with
//! the same scanner as the diff; findings are reported as [`Leak`]s whose `path` names the
//! place (`(commit message)`, `(author)`, `(tag message)`, or the file of a tree).

use std::process::{Command, Stdio};

use scanner::Scanner;

use crate::scan::{Leak, MAX_LEAKS};

/// How deep archives inside archives are opened.
const MAX_ARCHIVE_DEPTH: usize = 3;

/// Most bytes of blobs read for one push's blob and tree refs; a larger one is refused.
pub const MAX_OBJECT_BYTES: usize = 64 << 20;

/// A failure, as lines for the client.
pub type Refusal = Vec<String>;

/// Run `git ARGS`; its stdout, or the failure as lines for the client.
pub(crate) fn git_bytes(args: &[&str]) -> Result<Vec<u8>, Refusal> {
    let out = Command::new("git")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| vec![format!("cannot run git: {e}")])?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(vec![format!(
            "`git {}` failed: {}",
            args.first().copied().unwrap_or(""),
            String::from_utf8_lossy(&out.stderr).trim()
        )])
    }
}

fn scan_text(scanner: &Scanner, text: &[u8], object: &str, place: &str, leaks: &mut Vec<Leak>) {
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        for f in scanner.scan_all(line) {
            if leaks.len() >= MAX_LEAKS {
                return;
            }
            leaks.push(Leak {
                commit: object.to_string(),
                path: place.to_string(),
                line: (i + 1) as u32,
                rule: f.rule,
                redacted: f.redacted,
            });
        }
    }
}

/// The commit `id` peels to (a commit, or tags ending at one); `None` for blobs and trees.
pub fn peel_commit(id: &str) -> Option<String> {
    git_bytes(&["rev-parse", "--verify", "-q", &format!("{id}^{{commit}}")])
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The type of object `id` (`commit`, `tag`, `tree`, `blob`).
pub fn object_type(id: &str) -> Result<String, Refusal> {
    Ok(
        String::from_utf8_lossy(&git_bytes(&["cat-file", "-t", id])?)
            .trim()
            .to_string(),
    )
}

/// Scan the messages and identities of the new commits reachable from `tips` (commit-ish).
pub fn scan_commit_metadata(tips: &[&str], scanner: &Scanner) -> Result<Vec<Leak>, Refusal> {
    if tips.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["log", "--format=%H%x1f%an <%ae>%x1f%cn <%ce>%x1f%B%x1e"];
    args.extend_from_slice(tips);
    args.extend(["--not", "--all"]);
    let out = git_bytes(&args)?;
    let mut leaks = Vec::new();
    for record in out.split(|b| *b == 0x1e) {
        let record = record.strip_prefix(b"\n").unwrap_or(record);
        let mut fields = record.splitn(4, |b| *b == 0x1f);
        let (Some(id), Some(author), Some(committer), Some(message)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let id = String::from_utf8_lossy(id).to_string();
        scan_text(scanner, author, &id, "(author)", &mut leaks);
        scan_text(scanner, committer, &id, "(committer)", &mut leaks);
        scan_text(scanner, message, &id, "(commit message)", &mut leaks);
    }
    Ok(leaks)
}

/// Scan a pushed ref's target when it is not a commit: an annotated tag's own text (tagger
/// and message) and what it finally points at, a blob, or every blob of a tree. Commits are
/// the commit scan's ([`peel_commit`] finds them).
pub fn scan_ref_target(
    id: &str,
    scanner: &Scanner,
    budget: &mut usize,
    leaks: &mut Vec<Leak>,
) -> Result<(), Refusal> {
    let mut id = id.to_string();
    // Tags can point at tags: follow them, scanning each (bounded).
    for _ in 0..16 {
        match object_type(&id)?.as_str() {
            "commit" => return Ok(()),
            "tag" => {
                let text = git_bytes(&["cat-file", "tag", &id])?;
                scan_text(scanner, &text, &id, "(tag message)", leaks);
                let target = String::from_utf8_lossy(&text)
                    .lines()
                    .find_map(|l| l.strip_prefix("object ").map(str::to_string))
                    .ok_or_else(|| vec![format!("tag {id} names no object")])?;
                id = target;
            }
            "blob" => {
                return scan_blob(&id, &id, "(blob)", scanner, budget, leaks);
            }
            "tree" => {
                let listing = git_bytes(&["ls-tree", "-r", "-z", &id])?;
                for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
                    // `<mode> <type> <id>\t<path>`
                    let entry = String::from_utf8_lossy(entry);
                    let Some((meta, path)) = entry.split_once('\t') else {
                        continue;
                    };
                    let mut parts = meta.split(' ');
                    if let (Some(_), Some("blob"), Some(blob)) =
                        (parts.next(), parts.next(), parts.next())
                    {
                        scan_blob(blob, &id, path, scanner, budget, leaks)?;
                    }
                }
                return Ok(());
            }
            other => return Err(vec![format!("object {id} has an unknown type {other:?}")]),
        }
    }
    Err(vec![format!("a chain of more than 16 tags at {id}")])
}

fn scan_blob(
    blob: &str,
    object: &str,
    place: &str,
    scanner: &Scanner,
    budget: &mut usize,
    leaks: &mut Vec<Leak>,
) -> Result<(), Refusal> {
    let bytes = git_bytes(&["cat-file", "blob", blob])?;
    if bytes.len() > *budget {
        return Err(vec![format!(
            "the blobs this push points refs at are larger than {MAX_OBJECT_BYTES} bytes: push commits instead"
        )]);
    }
    *budget -= bytes.len();
    scan_text(scanner, &bytes, object, place, leaks);
    Ok(())
}

/// Refuse a push whose new objects (everything reachable from `tips` that the mirror does not
/// have) add up to more than `max_push` bytes, or that brings a file over `max_file` bytes,
/// naming the limit and the file. 0 disables a limit.
pub fn check_sizes(tips: &[&str], max_push: u64, max_file: u64) -> Result<(), Refusal> {
    if max_push == 0 && max_file == 0 {
        return Ok(());
    }
    let fail = |what: &str, e: std::io::Error| vec![format!("cannot {what}: {e}")];
    let mut list = Command::new("git")
        .args(["rev-list", "--objects"])
        .args(tips)
        .args(["--not", "--all"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail("list the pushed objects", e))?;
    let objects = list
        .stdout
        .take()
        .ok_or_else(|| vec!["rev-list has no stdout".to_string()])?;
    let sizes = Command::new("git")
        .args([
            "cat-file",
            "--batch-check=%(objecttype) %(objectsize:disk) %(objectsize) %(rest)",
        ])
        .stdin(Stdio::from(objects))
        .stderr(Stdio::null())
        .output()
        .map_err(|e| fail("size the pushed objects", e))?;
    let _ = list.wait();
    let mut total: u64 = 0;
    let mut refusals = Vec::new();
    for line in String::from_utf8_lossy(&sizes.stdout).lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(kind), Some(disk), Some(size)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = parts.next().unwrap_or("");
        let (disk, size): (u64, u64) = (disk.parse().unwrap_or(0), size.parse().unwrap_or(0));
        total = total.saturating_add(disk);
        if kind == "blob" && max_file > 0 && size > max_file && refusals.len() < 20 {
            refusals.push(format!(
                "file {path} is {size} bytes, over this repository's max_file_bytes ({max_file})"
            ));
        }
    }
    if max_push > 0 && total > max_push {
        refusals.push(format!(
            "the push brings {total} bytes of objects, over max_push_bytes ({max_push}): push in smaller parts"
        ));
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(refusals)
    }
}

/// Scan the binary files the new commits add or change (the diff scan skips them): each as
/// bytes for token formats and configured values, and gzip, tar and zip archives (nested, to
/// [`MAX_ARCHIVE_DEPTH`]) member by member. Bounded by `budget` bytes of blobs and of
/// decompressed data; more is refused naming the limit.
pub fn scan_binaries(
    commits: &[&str],
    scanner: &Scanner,
    budget: &mut usize,
    leaks: &mut Vec<Leak>,
) -> Result<(), Refusal> {
    if commits.is_empty() {
        return Ok(());
    }
    let mut args = vec![
        "-c",
        "core.quotePath=false",
        "log",
        "--format=%x01%H",
        "--numstat",
        "--cc",
        "--no-renames",
        "-z",
    ];
    args.extend_from_slice(commits);
    args.extend(["--not", "--all"]);
    let out = git_bytes(&args)?;
    let mut commit = String::new();
    let mut seen = std::collections::HashSet::new();
    for field in out.split(|b| *b == 0) {
        let field = String::from_utf8_lossy(field);
        let mut rest = field.as_ref();
        if let Some(at) = rest.find('\u{1}') {
            let after = &rest[at + 1..];
            let (id, tail) = after.split_at(after.find('\n').unwrap_or(after.len()));
            commit = id.to_string();
            rest = tail.trim_start_matches('\n');
        }
        // `-\t-\tpath`: git's verdict "binary".
        let Some(path) = rest.trim_start_matches('\n').strip_prefix("-\t-\t") else {
            continue;
        };
        let Ok(blob) = git_bytes(&["rev-parse", "--verify", "-q", &format!("{commit}:{path}")])
        else {
            continue; // deleted in this commit: nothing to scan
        };
        let blob = String::from_utf8_lossy(&blob).trim().to_string();
        if !seen.insert(blob.clone()) {
            continue;
        }
        let bytes = git_bytes(&["cat-file", "blob", &blob])?;
        take(budget, bytes.len())?;
        scan_bytes(scanner, &bytes, &commit, path, 0, budget, leaks)?;
        if leaks.len() >= MAX_LEAKS {
            break;
        }
    }
    Ok(())
}

fn take(budget: &mut usize, n: usize) -> Result<(), Refusal> {
    if n > *budget {
        return Err(vec![format!(
            "the push's binary files and archives hold more than {MAX_OBJECT_BYTES} bytes to scan: push smaller changes"
        )]);
    }
    *budget -= n;
    Ok(())
}

/// Scan `bytes` (the file `place` of `commit`): an archive member by member, anything else as
/// bytes.
fn scan_bytes(
    scanner: &Scanner,
    bytes: &[u8],
    commit: &str,
    place: &str,
    depth: usize,
    budget: &mut usize,
    leaks: &mut Vec<Leak>,
) -> Result<(), Refusal> {
    use std::io::Read;
    if depth < MAX_ARCHIVE_DEPTH && bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        let limit = (*budget as u64).saturating_add(1);
        let read = flate2::read::MultiGzDecoder::new(bytes)
            .take(limit)
            .read_to_end(&mut out);
        if read.is_ok() {
            take(budget, out.len())?;
            return scan_bytes(
                scanner,
                &out,
                commit,
                &format!("{place}!gunzip"),
                depth + 1,
                budget,
                leaks,
            );
        }
    }
    if depth < MAX_ARCHIVE_DEPTH && bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        let mut archive = tar::Archive::new(bytes);
        if let Ok(entries) = archive.entries() {
            for entry in entries.flatten() {
                let mut entry = entry;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                let name = entry
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                let size = entry.header().size().unwrap_or(0) as usize;
                take(budget, size)?;
                let mut member = Vec::with_capacity(size.min(1 << 20));
                if entry.read_to_end(&mut member).is_ok() {
                    scan_bytes(
                        scanner,
                        &member,
                        commit,
                        &format!("{place}!{name}"),
                        depth + 1,
                        budget,
                        leaks,
                    )?;
                }
            }
            return Ok(());
        }
    }
    if depth < MAX_ARCHIVE_DEPTH && bytes.starts_with(b"PK\x03\x04") {
        if let Ok(zip) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) {
            return scan_zip(scanner, zip, commit, place, depth, budget, leaks);
        }
    }
    // A text member of an archive is read like a pushed text file (every rule); other bytes
    // get the token formats and configured values only.
    let findings = if depth > 0 && std::str::from_utf8(bytes).is_ok() {
        scanner.scan_all(bytes)
    } else {
        scanner.scan_specific(bytes)
    };
    for f in findings {
        if leaks.len() >= MAX_LEAKS {
            break;
        }
        leaks.push(Leak {
            commit: commit.to_string(),
            path: place.to_string(),
            line: 0,
            rule: f.rule,
            redacted: f.redacted,
        });
    }
    Ok(())
}

/// The members of a zip archive, each scanned like a file. A member that cannot be read —
/// encrypted, or compressed with a method this build does not decode — cannot be scanned, so
/// the push is refused naming it: an unreadable archive would be a way out.
fn scan_zip(
    scanner: &Scanner,
    mut zip: zip::ZipArchive<std::io::Cursor<&[u8]>>,
    commit: &str,
    place: &str,
    depth: usize,
    budget: &mut usize,
    leaks: &mut Vec<Leak>,
) -> Result<(), Refusal> {
    use std::io::Read;
    for i in 0..zip.len() {
        let unreadable = |name: &str, why: &dyn std::fmt::Display| {
            vec![format!(
                "file {place}!{name} of commit {commit} cannot be scanned ({why}): encrypted or unusually compressed archives are refused; push the files themselves"
            )]
        };
        let listed = zip
            .name_for_index(i)
            .and_then(Result::ok)
            .map_or_else(|| "?".to_string(), |n| n.to_string());
        let mut member = match zip.by_index(i) {
            Ok(m) => m,
            Err(e) => return Err(unreadable(&listed, &e)),
        };
        if !member.is_file() {
            continue;
        }
        let name = member
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into());
        // The declared size may lie: read at most what the budget allows, plus one byte.
        let limit = (*budget as u64).saturating_add(1);
        let mut bytes = Vec::new();
        if let Err(e) = (&mut member).take(limit).read_to_end(&mut bytes) {
            return Err(unreadable(&name, &e));
        }
        drop(member);
        take(budget, bytes.len())?;
        scan_bytes(
            scanner,
            &bytes,
            commit,
            &format!("{place}!{name}"),
            depth + 1,
            budget,
            leaks,
        )?;
        if leaks.len() >= MAX_LEAKS {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use scanner::SecretConfig;

    #[test]
    fn a_token_in_a_message_line_is_a_leak_with_its_line() {
        let scanner = Scanner::new(&SecretConfig::default()).unwrap();
        let mut leaks = Vec::new();
        scan_text(
            &scanner,
            b"deploy\n\nkey AKIAZ7QJ4EXAMPLE7KQ2\n",
            "c0ffee",
            "(commit message)",
            &mut leaks,
        );
        assert_eq!(leaks.len(), 1, "{leaks:?}");
        assert_eq!((leaks[0].line, leaks[0].rule), (3, "aws-access-key"));
    }
}
