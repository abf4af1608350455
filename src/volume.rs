//! The host directory a container mounts, updated in place in O(changed files).
//!
//! Every operation goes through a directory handle (cap-std) and opens each parent without
//! following symlinks, so no write can land outside the volume, and nothing is ever written
//! *through* a symlink (SECURITY.md 20).

use std::path::{Path, PathBuf};

use crate::git::Change;

/// What one `apply` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub written: usize,
    pub deleted: usize,
    pub bytes: u64,
}

/// An open volume directory.
pub struct Volume {
    root: PathBuf,
    dir: cap_std::fs::Dir,
}

impl Volume {
    /// Open `root`, creating it (not its parents) if missing.
    pub fn open(root: &Path) -> anyhow::Result<Volume> {
        todo!("{root:?}")
    }

    /// The path this volume was opened at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the directory has no entries at all.
    pub fn is_empty(&self) -> anyhow::Result<bool> {
        let _ = &self.dir;
        todo!()
    }

    /// Apply `changes` (blobs read from `repo`): deletes first (then directories left empty),
    /// then writes. Each file is written to a temp file in its target directory and renamed over
    /// the target; exec bits kept; symlinks created as symlinks. Idempotent: a path already in the
    /// target state is fine. A path whose parent is a symlink, or that would escape the volume,
    /// is an error naming the path.
    pub fn apply(
        &self,
        repo: &git2::Repository,
        changes: &[Change],
    ) -> anyhow::Result<ApplyReport> {
        todo!("{} {}", repo.path().display(), changes.len())
    }

    /// Set the mtime of `rel` to now, creating an empty file if missing. Refuses (error) when `rel`
    /// or any parent is a symlink.
    pub fn touch(&self, rel: &Path) -> anyhow::Result<()> {
        todo!("{rel:?}")
    }

    /// Remove `.dockhand-tmp-*` files a crash left in the directories `changes` touch.
    pub fn remove_temp_files(&self, changes: &[Change]) -> anyhow::Result<usize> {
        todo!("{}", changes.len())
    }
}
