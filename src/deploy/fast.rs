//! The fast path's plan: the changes that turn the deployed commit into the target, which the
//! tree (`crate::tree::Tree::sync`) then writes before the app is reloaded in place.
//!
//! Blocking functions, run on the blocking pool. The volume only ever receives the paths that
//! differ between the deployed commit and the target (O(changed files)); git metadata stays in
//! the bare cache under the state directory.

use std::path::Path;

use anyhow::bail;

use crate::config::Layout;
use crate::git::{Cache, Change, Oid};
use crate::tree::Tree;

/// The changes a deploy will write, and a one-line summary of them.
pub(super) struct Plan {
    pub changes: Vec<Change>,
    /// Bytes of file content the changes write.
    pub bytes: u64,
    pub summary: String,
    /// The target commit's message, for the `Deploy-Path` trailer.
    pub message: String,
}

/// Compute what turns `from` into `to` in the volume. On a first deploy (`from` is `None`) the
/// volume must be empty unless the app adopts whatever is there.
pub(super) fn plan(
    cache: &Cache,
    volume: &Path,
    layout: Layout,
    from: Option<Oid>,
    to: Oid,
    adopt: bool,
    max_tree_size: u64,
) -> anyhow::Result<Plan> {
    if from.is_none() && !adopt && Tree::is_foreign(volume, layout)? {
        bail!(
            "volume {} is not empty and dockhand has never deployed into it; empty it, or set adopt = true to take it over",
            volume.display()
        );
    }
    let plan = diff(cache, from, to)?;
    if plan.bytes > max_tree_size {
        bail!(
            "this deploy would write {} of file content, over max_tree_size ({}); nothing was written",
            bytesize::ByteSize::b(plan.bytes),
            bytesize::ByteSize::b(max_tree_size)
        );
    }
    Ok(plan)
}

/// What turns `from` into `to`, from the cache alone: reads nothing under the volume (dry runs).
pub(super) fn diff(cache: &Cache, from: Option<Oid>, to: Oid) -> anyhow::Result<Plan> {
    let crate::git::Diff {
        changes,
        submodules,
        lfs_pointers,
    } = cache.diff(from, Some(to))?;
    let deleted = changes
        .iter()
        .filter(|c| matches!(c, Change::Delete { .. }))
        .count();
    let mut summary = match from {
        None => format!(
            "first deploy: export {} paths of {to}",
            changes.len() - deleted
        ),
        Some(from) => format!(
            "{} paths change from {from} to {to} ({} written, {deleted} deleted)",
            changes.len(),
            changes.len() - deleted
        ),
    };
    if let (true, Some(from)) = (changes.is_empty(), from) {
        summary = format!("nothing in the deployed tree changes from {from} to {to}");
    }
    if !submodules.is_empty() {
        summary.push_str(&format!(
            "; {} not deployed: dockhand deploys no submodule content",
            listed("submodule", &submodules)
        ));
    }
    if !lfs_pointers.is_empty() {
        summary.push_str(&format!(
            "; {} deployed as pointer text: dockhand does not fetch Git LFS content",
            listed("Git LFS file", &lfs_pointers)
        ));
    }
    let message = cache.commit_info(to)?.message;
    let bytes = cache.written_bytes(&changes)?;
    Ok(Plan {
        changes,
        bytes,
        summary,
        message,
    })
}

/// `3 submodules (a, b, c)`, naming at most five.
fn listed(what: &str, paths: &[std::path::PathBuf]) -> String {
    let mut names: Vec<String> = paths
        .iter()
        .take(5)
        .map(|p| p.display().to_string())
        .collect();
    if paths.len() > 5 {
        names.push(format!("and {} more", paths.len() - 5));
    }
    let plural = if paths.len() == 1 { "" } else { "s" };
    format!("{} {what}{plural} ({})", paths.len(), names.join(", "))
}
