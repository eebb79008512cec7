//! `owner/name[@revision]`: which repository, at which branch, tag or commit.

use std::fmt;

use super::{HubError, DEFAULT_REVISION};

/// What a repository id looks like, for error messages.
const EXPECTED: &str = "expected owner/name or owner/name@revision, names of letters, digits, '-', '_' and '.'";
/// The hub's limit on a repository name.
const MAX_NAME_LEN: usize = 96;

/// A model repository on the hub, with the revision asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    /// `owner/name`.
    id: String,
    revision: Option<String>,
}

impl RepoId {
    /// Parses `owner/name` or `owner/name@revision` (a branch, a tag, a commit, or `refs/pr/N`).
    pub fn parse(s: &str) -> Result<RepoId, HubError> {
        let bad = || HubError::BadRepoId { found: s.to_owned(), expected: EXPECTED };
        let (id, revision) = match s.split_once('@') {
            Some((id, rev)) => (id, Some(rev)),
            None => (s, None),
        };
        let (owner, name) = id.split_once('/').ok_or_else(bad)?;
        if !is_name(owner) || !is_name(name) {
            return Err(bad());
        }
        if let Some(rev) = revision {
            let parts_ok = rev.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
            let chars_ok = rev.chars().all(|c| c.is_ascii_graphic() && !matches!(c, '\\' | '?' | '#' | '%' | '@'));
            if !parts_ok || !chars_ok {
                return Err(bad());
            }
        }
        Ok(RepoId { id: id.to_owned(), revision: revision.map(str::to_owned) })
    }

    /// `owner/name`.
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// The revision asked for, `main` when none was.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or(DEFAULT_REVISION)
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)?;
        if let Some(rev) = &self.revision {
            write!(f, "@{rev}")?;
        }
        Ok(())
    }
}

/// The hub's rule for owner and repository names: letters, digits, `-`, `_`, `.`, not starting
/// or ending with `-` or `.`, no `--` or `..`.
fn is_name(s: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    s.len() <= MAX_NAME_LEN
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edge_ok(s.chars().next())
        && edge_ok(s.chars().last())
        && !s.contains("--")
        && !s.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_revisions() {
        let r = RepoId::parse("TinyLlama/TinyLlama-1.1B-Chat-v1.0").unwrap();
        assert_eq!((r.id().as_str(), r.revision()), ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", "main"));
        let r = RepoId::parse("Qwen/Qwen2-0.5B@refs/pr/3").unwrap();
        assert_eq!((r.id().as_str(), r.revision()), ("Qwen/Qwen2-0.5B", "refs/pr/3"));
        assert_eq!(r.to_string(), "Qwen/Qwen2-0.5B@refs/pr/3");
    }

    #[test]
    fn refuses_paths_and_malformed_ids() {
        for s in [
            "model",
            "./a/b",
            "../a",
            "a/b/c",
            "/abs/path",
            "a/",
            "/b",
            "a/b@",
            "a/b@x/../y",
            "-a/b",
            "a/b.",
            "a--x/b",
            "a b/c",
        ] {
            assert!(matches!(RepoId::parse(s), Err(HubError::BadRepoId { .. })), "{s}");
        }
    }
}
