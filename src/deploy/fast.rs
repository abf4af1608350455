//! The fast path: write the commit's changes into the volume, then reload the app in place.
//!
//! Blocking functions, run on the blocking pool. The volume only ever receives the paths that
//! differ between the deployed commit and the target (O(changed files)); git metadata stays in
//! the bare cache under the state directory.

use std::path::Path;

use anyhow::{bail, Context};

use crate::config::Reload;
use crate::git::{Cache, Change, Oid};
use crate::volume::{ApplyReport, Volume};

/// The changes a deploy will write, and a one-line summary of them.
pub(super) struct Plan {
    pub changes: Vec<Change>,
    pub summary: String,
    /// The target commit's message, for the `Deploy-Path` trailer.
    pub message: String,
}

/// Compute what turns `from` into `to` in the volume. On a first deploy (`from` is `None`) the
/// volume must be empty unless the app adopts whatever is there.
pub(super) fn plan(
    cache: &Path,
    volume: &Path,
    from: Option<Oid>,
    to: Oid,
    adopt: bool,
) -> anyhow::Result<Plan> {
    if from.is_none() && !adopt && !Volume::open(volume)?.is_empty()? {
        bail!(
            "volume {} is not empty and dockhand has never deployed into it; empty it, or set adopt = true to take it over",
            volume.display()
        );
    }
    diff(&Cache::open_or_init(cache)?, from, to)
}

/// What turns `from` into `to`, from the cache alone: reads nothing under the volume (dry runs).
pub(super) fn diff(cache: &Cache, from: Option<Oid>, to: Oid) -> anyhow::Result<Plan> {
    let changes = cache.changes(from, Some(to))?;
    let deleted = changes
        .iter()
        .filter(|c| matches!(c, Change::Delete { .. }))
        .count();
    let summary = match from {
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
    let message = cache.commit_info(to)?.message;
    Ok(Plan {
        changes,
        summary,
        message,
    })
}

/// Write `changes` (computed for commit `to`) into the volume.
pub(super) fn sync(cache: &Path, volume: &Path, changes: &[Change]) -> anyhow::Result<ApplyReport> {
    let cache = Cache::open_or_init(cache)?;
    Volume::open(volume)?.apply(cache.repo(), changes)
}

/// Put the volume back from a partly or fully written `current` to `back_to` (`None`: empty),
/// touching only the paths that differ between the two, and remove temp files a crash left there.
pub(super) fn restore(
    cache: &Path,
    volume: &Path,
    current: Oid,
    back_to: Option<Oid>,
) -> anyhow::Result<ApplyReport> {
    let cache = Cache::open_or_init(cache)?;
    let changes = cache.changes(Some(current), back_to)?;
    let volume = Volume::open(volume)?;
    volume
        .remove_temp_files(&changes)
        .context("removing leftover temp files")?;
    volume.apply(cache.repo(), &changes)
}

/// Tell the app its code changed; returns what was done, for the step output.
pub(super) fn reload(volume: &Path, reload: &Reload) -> anyhow::Result<String> {
    match reload {
        Reload::Touch(rel) => {
            Volume::open(volume)?.touch(rel)?;
            Ok(format!("touched {}", rel.display()))
        }
        Reload::None => Ok("no reload configured".to_string()),
    }
}

/// A one-line account of an apply.
pub(super) fn describe(report: &ApplyReport) -> String {
    format!(
        "wrote {} files ({} bytes), deleted {}",
        report.written, report.bytes, report.deleted
    )
}
