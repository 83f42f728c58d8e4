//! Ref-update policy: which deletions and rewrites a push may do.
//!
//! Pure functions over one update at a time, so the rules are unit-tested without git; the
//! hook supplies the facts (default branch, whether the update is a fast-forward).

/// The all-zero object id git uses for "no object" (ref created or deleted).
pub fn is_zero(oid: &str) -> bool {
    !oid.is_empty() && oid.bytes().all(|b| b == b'0')
}

/// One line of pre-receive input: `<old> <new> <ref>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// Object id before (zeros for a new ref).
    pub old: String,
    /// Object id after (zeros for a deletion).
    pub new: String,
    /// Full ref name, e.g. `refs/heads/main`.
    pub name: String,
}

impl RefUpdate {
    /// Parse `<old> <new> <ref>`.
    pub fn parse(line: &str) -> Option<RefUpdate> {
        let mut it = line.split_whitespace();
        let (old, new, name) = (it.next()?, it.next()?, it.next()?);
        let hex =
            |s: &str| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex(old) && hex(new) && it.next().is_none()).then(|| RefUpdate {
            old: old.into(),
            new: new.into(),
            name: name.into(),
        })
    }

    /// True when the ref is being deleted.
    pub fn is_delete(&self) -> bool {
        is_zero(&self.new)
    }

    /// True when the ref is being created.
    pub fn is_create(&self) -> bool {
        is_zero(&self.old)
    }

    /// The branch name for `refs/heads/<b>`, else `None`.
    pub fn branch(&self) -> Option<&str> {
        self.name.strip_prefix("refs/heads/")
    }
}

/// What the policy needs to know about the repository.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The default branch (the mirror's HEAD), e.g. `main`.
    pub default_branch: Option<String>,
    /// Branches that may be neither deleted nor rewritten.
    pub protect: Vec<String>,
}

impl Policy {
    fn protected(&self, branch: &str) -> bool {
        self.protect.iter().any(|p| p == branch)
    }

    /// Why `update` is refused, or `None` if it is allowed. `fast_forward` says whether `new`
    /// descends from `old` (only consulted for updates of existing refs).
    pub fn check(&self, update: &RefUpdate, fast_forward: bool) -> Option<String> {
        if !update.name.starts_with("refs/heads/") && !update.name.starts_with("refs/tags/") {
            return Some(format!(
                "{}: only branches (refs/heads/*) and tags (refs/tags/*) may be pushed",
                update.name
            ));
        }
        let branch = update.branch()?;
        let is_default = self.default_branch.as_deref() == Some(branch);
        if update.is_delete() {
            if is_default {
                return Some(format!(
                    "{}: deleting the default branch is not allowed",
                    update.name
                ));
            }
            if self.protected(branch) {
                return Some(format!(
                    "{}: deleting a protected branch is not allowed",
                    update.name
                ));
            }
            return None;
        }
        if !update.is_create() && !fast_forward && self.protected(branch) {
            return Some(format!(
                "{}: non-fast-forward update (force push) of a protected branch is not allowed",
                update.name
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn upd(old: &str, new: &str, name: &str) -> RefUpdate {
        RefUpdate::parse(&format!("{old} {new} {name}")).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            default_branch: Some("main".into()),
            protect: vec!["release".into()],
        }
    }

    #[test]
    fn deletion_of_default_and_protected_branches_is_refused() {
        let p = policy();
        assert!(p
            .check(&upd(A, Z, "refs/heads/main"), true)
            .unwrap()
            .contains("default branch"));
        assert!(p
            .check(&upd(A, Z, "refs/heads/release"), true)
            .unwrap()
            .contains("protected"));
        assert_eq!(p.check(&upd(A, Z, "refs/heads/feature"), true), None);
        assert_eq!(p.check(&upd(A, Z, "refs/tags/v1"), true), None);
    }

    #[test]
    fn force_push_is_refused_only_on_protected_branches() {
        let p = policy();
        assert!(p
            .check(&upd(A, B, "refs/heads/release"), false)
            .unwrap()
            .contains("non-fast-forward"));
        assert_eq!(p.check(&upd(A, B, "refs/heads/release"), true), None);
        assert_eq!(p.check(&upd(A, B, "refs/heads/feature"), false), None);
        assert_eq!(p.check(&upd(Z, B, "refs/heads/release"), false), None);
    }

    #[test]
    fn odd_refs_are_refused() {
        assert!(policy().check(&upd(Z, B, "refs/notes/x"), true).is_some());
        assert!(RefUpdate::parse("x y z").is_none());
    }
}
