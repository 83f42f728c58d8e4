//! Path globs, written once for the two policies that match paths: route rules (URL paths,
//! `bottle_spec::route_rules`) and git-gate's `deny_paths` (repository paths). `*` matches
//! within one segment, `**` across segments; matching is ASCII case-insensitive (a deny must
//! not be side-stepped by case: GitHub treats owner and repository names so, and a
//! case-insensitive checkout would write `.GitHub/Workflows` where `.github/workflows` is).

/// Longest path glob accepted.
const MAX_GLOB: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `*`: any run of bytes without `/`.
    Star,
    /// `**`: any run of bytes.
    Stars,
}

/// A compiled path glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob(Vec<Token>);

impl PathGlob {
    /// Compile `glob`, which must start with `/`; the error says what to fix.
    pub fn parse(glob: &str) -> Result<PathGlob, String> {
        parse_glob(glob).map(PathGlob)
    }

    /// Whether the glob matches all of `path` (ASCII case-insensitive).
    pub fn matches(&self, path: &str) -> bool {
        self.matches_folded(path.to_ascii_lowercase().as_bytes())
    }

    /// [`PathGlob::matches`] for a path already lower-cased.
    pub fn matches_folded(&self, path: &[u8]) -> bool {
        glob_matches(&self.0, path)
    }
}

fn parse_glob(glob: &str) -> Result<Vec<Token>, String> {
    if !glob.starts_with('/') {
        return Err(format!("the path glob {glob:?} must start with `/`"));
    }
    if glob.len() > MAX_GLOB {
        return Err(format!("the path glob is longer than {MAX_GLOB} bytes"));
    }
    let bytes = glob.as_bytes();
    let mut tokens = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'*' if bytes.get(i + 1) == Some(&b'*') => {
                if bytes.get(i + 2) == Some(&b'*') {
                    return Err(format!("{glob:?}: `***` means nothing; use `*` or `**`"));
                }
                tokens.push(Token::Stars);
                i += 2;
            }
            b'*' => {
                tokens.push(Token::Star);
                i += 1;
            }
            b'?' | b'#' => {
                return Err(format!(
                    "{glob:?}: a path glob matches the path only (no `?query` or `#fragment`)"
                ))
            }
            b if b.is_ascii_graphic() => {
                tokens.push(Token::Byte(b.to_ascii_lowercase()));
                i += 1;
            }
            _ => {
                return Err(format!(
                    "{glob:?}: spaces and control characters are not allowed"
                ))
            }
        }
    }
    Ok(tokens)
}

/// Whether `glob` matches all of `path` (both already lower-cased). Dynamic programming over
/// the glob: O(glob × path) time, O(path) memory, no backtracking blow-up.
fn glob_matches(glob: &[Token], path: &[u8]) -> bool {
    let n = path.len();
    let mut row = vec![false; n + 1];
    row[0] = true;
    for token in glob {
        let mut next = vec![false; n + 1];
        match token {
            Token::Byte(b) => {
                for j in 0..n {
                    next[j + 1] = row[j] && path[j] == *b;
                }
            }
            Token::Star => {
                next[0] = row[0];
                for j in 1..=n {
                    next[j] = row[j] || (next[j - 1] && path[j - 1] != b'/');
                }
            }
            Token::Stars => {
                next[0] = row[0];
                for j in 1..=n {
                    next[j] = row[j] || next[j - 1];
                }
            }
        }
        row = next;
    }
    row[n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_case() {
        let g = PathGlob::parse("/.github/workflows/**").unwrap();
        assert!(g.matches("/.github/workflows/ci.yml"));
        assert!(g.matches("/.GitHub/Workflows/x/y.yml"));
        assert!(!g.matches("/github/workflows/ci.yml"));
        let g = PathGlob::parse("/*.yml").unwrap();
        assert!(g.matches("/a.yml") && !g.matches("/a/b.yml"));
        assert!(PathGlob::parse("a").is_err());
    }
}
