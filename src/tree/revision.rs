//! The revision file (`REVISION`): what a deployed tree says it is, written as one more change
//! with the commit's, its blob stored in the cache.

use anyhow::Context;

use crate::git::{Cache, Change, EntryMode, Oid};

/// What a deployed tree says it is, written to the app's `revision_file` (`REVISION`): the
/// commit on the first line (as Capistrano's), then `ref …` and `deploy …` lines.
#[derive(Debug, Clone)]
pub struct Revision {
    pub file: std::path::PathBuf,
    pub git_ref: String,
    pub deploy_id: i64,
}

impl Revision {
    /// The write that puts `commit`'s revision file in the tree, as one more change; `None`
    /// when the commit tracks a file at that path itself (the repository's file wins).
    fn change(&self, cache: &Cache, commit: Oid) -> anyhow::Result<Option<Change>> {
        let tree = cache.repo().find_commit(commit)?.tree()?;
        if tree.get_path(&self.file).is_ok() {
            return Ok(None);
        }
        let text = format!(
            "{commit}\nref {}\ndeploy {}\n",
            self.git_ref, self.deploy_id
        );
        let oid = cache
            .repo()
            .blob(text.as_bytes())
            .context("storing the revision file")?;
        Ok(Some(Change::Write {
            path: self.file.clone(),
            oid,
            mode: EntryMode::File,
        }))
    }
}

/// `changes` plus the revision file's write for `commit`, if any.
pub(super) fn with_revision(
    cache: &Cache,
    changes: &[Change],
    revision: Option<&Revision>,
    commit: Oid,
) -> anyhow::Result<Vec<Change>> {
    let mut all = changes.to_vec();
    if let Some(change) = revision
        .map(|r| r.change(cache, commit))
        .transpose()?
        .flatten()
    {
        all.push(change);
    }
    Ok(all)
}
