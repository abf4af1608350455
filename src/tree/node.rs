//! One node's side of a fast deploy across a swarm (`dockhand node …`, run by the Swarm jobs
//! `deploy::swarm` starts with the node's code directory mounted): `build` fetches the commit
//! into the directory's own cache and builds its release beside the live one; `switch` points
//! `current` at it. Each prints one line, which the job's task reports; a failure exits 1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::releases::Releases;
use crate::git::{Access, Cache, Credentials, FetchLimits, Oid};

/// The node's cache, inside the code directory (beside `releases/` and `current`).
pub const CACHE_DIR: &str = ".dockhand-cache";

/// A node's fetch: bounded like an app's default.
const LIMITS: FetchLimits = FetchLimits {
    timeout: Duration::from_secs(300),
    max_bytes: 2 * 1024 * 1024 * 1024,
};

fn commit_of(commit: &str) -> anyhow::Result<Oid> {
    if commit.len() != 40 {
        bail!("--commit {commit:?} must be a full 40-digit commit id");
    }
    commit
        .parse::<Oid>()
        .with_context(|| format!("--commit {commit:?} is not a commit id"))
}

/// Build `commit`'s release in `dir` (a hard-link copy of the live release plus the changes),
/// fetching `git_ref` from `repo` first when the cache lacks the commit.
pub fn build(
    dir: &Path,
    repo: &str,
    git_ref: &str,
    commit: &str,
    token_file: Option<PathBuf>,
) -> anyhow::Result<String> {
    let target = commit_of(commit)?;
    let releases = Releases::open(dir)?;
    if releases.has(target) {
        return Ok(format!("release {target} is built already"));
    }
    let cache = Cache::open_or_init(&dir.join(CACHE_DIR))?;
    let mut fetched = "";
    if !has_commit(&cache, target) {
        let access = Access {
            credentials: token_file.map_or(Credentials::None, Credentials::TokenFile),
            ..Access::default()
        };
        cache.fetch(repo, &[git_ref.to_string()], &access, &LIMITS)?;
        if !has_commit(&cache, target) {
            bail!("{git_ref} of the origin does not contain {target} (force-pushed away?)");
        }
        fetched = "fetched, ";
    }
    let base = releases.live()?.filter(|b| releases.has(*b));
    let changes = cache.changes(base, Some(target))?;
    let built = releases.build(&cache, base, target, &changes)?;
    Ok(format!(
        "release {target} built ({fetched}{} files hard-linked from {}, {} changes applied)",
        built.linked,
        base.map_or("nothing".to_string(), |b| b.to_string()),
        changes.len()
    ))
}

fn has_commit(cache: &Cache, id: Oid) -> bool {
    cache.repo().find_commit(id).is_ok()
}

/// Point `current` at `commit`'s release (which must be built) and touch `touch` in it.
pub fn switch(dir: &Path, commit: &str, touch: Option<&Path>) -> anyhow::Result<String> {
    let target = commit_of(commit)?;
    let releases = Releases::open(dir)?;
    let before = releases.live()?;
    releases.switch(Some(target))?;
    if let Some(rel) = touch {
        releases.release(target)?.touch(rel)?;
    }
    let before = before.map_or("nothing".to_string(), |b| b.to_string());
    Ok(format!("current: {before} -> {target}"))
}
