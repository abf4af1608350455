//! Host-side git: one bare cache repository per app under the state directory.
//!
//! Nothing here ever opens a work tree, reads the deployed volume, or runs a hook: the cache is a
//! bare repository that only dockhand writes, so a container that can write its volume cannot
//! influence host-side git (SECURITY.md 21).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use git2::Oid;

/// Bounds on one fetch, so a huge or hostile origin cannot wedge a deploy (SECURITY.md 24).
#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// Abort the fetch when it has run this long.
    pub timeout: Duration,
    /// Abort the fetch when it has received this many bytes.
    pub max_bytes: u64,
}

/// Credentials for a private origin. Secrets are read from files/env by config, never logged.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Public origin, local path or file:// URL.
    #[default]
    None,
    /// HTTPS with a token (sent as the password, user `x-access-token`).
    Token(String),
    /// SSH with a private key file (deploy key).
    SshKey(PathBuf),
}

/// How a path is materialised in the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    File,
    Executable,
    Symlink,
}

/// One path that differs between two trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write the blob `oid` at `path` (create or replace).
    Write {
        path: PathBuf,
        oid: Oid,
        mode: EntryMode,
    },
    /// Remove `path` (missing is fine: applying a change twice is harmless).
    Delete { path: PathBuf },
}

/// A commit's metadata that deploy records and the planner use.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub id: Oid,
    pub summary: String,
    pub message: String,
    pub author: String,
}

/// The bare cache repository of one app.
pub struct Cache {
    repo: git2::Repository,
}

impl Cache {
    /// Open the bare cache at `path`, creating it (and parents) if missing.
    pub fn open_or_init(path: &Path) -> anyhow::Result<Cache> {
        todo!("{path:?}")
    }

    /// The underlying repository (for reading blobs while syncing a volume).
    pub fn repo(&self) -> &git2::Repository {
        &self.repo
    }

    /// Fetch each full ref name in `refs` (e.g. `refs/heads/main`, `refs/tags/v1`) from `url` into
    /// the same name (forced), no tags auto-followed, no submodules. Errors name the URL (without
    /// credentials) and say whether the timeout or size cap was hit.
    pub fn fetch(
        &self,
        url: &str,
        refs: &[String],
        creds: &Credentials,
        limits: &FetchLimits,
    ) -> anyhow::Result<()> {
        todo!(
            "{url} {refs:?} {limits:?} {}",
            matches!(creds, Credentials::None)
        )
    }

    /// Resolve a full SHA, an abbreviated SHA, or a full ref name to a commit, peeling annotated
    /// tags. `Ok(None)` when it names nothing in the cache.
    pub fn resolve(&self, spec: &str) -> anyhow::Result<Option<Oid>> {
        todo!("{spec}")
    }

    /// Whether `ancestor` is reachable from `descendant` (a commit is its own ancestor).
    pub fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> anyhow::Result<bool> {
        todo!("{ancestor} {descendant}")
    }

    /// The paths that differ between the trees of two commits (`None` = the empty tree), as the
    /// changes that turn a directory holding `from` into one holding `to`. Deletes come first.
    /// Every path is relative and checked: a `..`, absolute, empty or `.git` component is an error
    /// naming the path. Submodule entries (gitlinks) are skipped.
    pub fn changes(&self, from: Option<Oid>, to: Option<Oid>) -> anyhow::Result<Vec<Change>> {
        todo!("{from:?} {to:?}")
    }

    /// Metadata of a commit.
    pub fn commit_info(&self, id: Oid) -> anyhow::Result<CommitInfo> {
        todo!("{id}")
    }
}
