//! The fast path: write the commit's changes into the volume, then reload the app in place.
//!
//! Blocking functions, run on the blocking pool. The volume only ever receives the paths that
//! differ between the deployed commit and the target (O(changed files)); git metadata stays in
//! the bare cache under the state directory.

use std::path::Path;

use anyhow::{bail, Context};

use crate::config::{Layout, Reload};
use crate::git::{Cache, Change, EntryMode, Oid};
use crate::tree::releases::{Built, Releases};
use crate::tree::volume::{ApplyReport, Volume};

/// What a deployed tree says it is, written to the app's `revision_file` (`REVISION`): the
/// commit on the first line (as Capistrano's), then `ref …` and `deploy …` lines.
#[derive(Debug, Clone)]
pub(crate) struct Revision {
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
fn with_revision(
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
    let foreign = || match layout {
        Layout::InPlace => Ok(!Volume::open(volume)?.is_empty()?),
        Layout::Releases { .. } => Releases::has_foreign_entries(volume),
    };
    if from.is_none() && !adopt && foreign()? {
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

/// What a deploy writes: commit `to`'s tree, reached from `from` (deployed, if anything) by
/// `changes`, with the revision file.
pub(super) struct Write<'a> {
    pub from: Option<Oid>,
    pub to: Oid,
    pub changes: &'a [Change],
    pub revision: Option<&'a Revision>,
}

/// When a deploy's write makes the new commit what the app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Switch {
    /// Now: in place the writes are the switch; with releases, `current` changes at the end.
    Now,
    /// Not yet (releases only): the release is built, `current` unchanged; a later `Now`
    /// finds it kept and only switches.
    Later,
}

/// Put commit `to` live: in place, write `changes` (from `from` to `to`) into the volume; with
/// releases, build `to`'s release (or reuse a kept one) and, by `switch`, point `current` at
/// it. Returns what was done, for the step output.
pub(super) fn sync(
    cache: &Cache,
    volume: &Path,
    layout: Layout,
    write: &Write<'_>,
    switch: Switch,
) -> anyhow::Result<String> {
    let Write {
        from,
        to,
        changes,
        revision,
    } = *write;
    if layout == Layout::InPlace {
        if switch == Switch::Later {
            bail!("in place, nothing can be written ahead of the switch");
        }
        let changes = with_revision(cache, changes, revision, to)?;
        let mut volume = Volume::open(volume)?;
        // A first deploy into an empty volume: no app reads it yet.
        if from.is_none() && volume.is_empty()? {
            volume = volume.unseen();
        }
        return Ok(describe(&volume.apply(cache, &changes)?));
    }
    let releases = Releases::open(volume)?;
    let built = build(&releases, cache, from, to, changes, revision)?;
    if switch == Switch::Later {
        return Ok(match built.reused {
            true => format!("release {to} was kept"),
            false => format!(
                "release {to}: {} files hard-linked, {}",
                built.linked,
                describe(&built.applied)
            ),
        });
    }
    releases.switch(Some(to))?;
    Ok(describe_release(to, &built))
}

/// `to`'s release built from `from`'s with `changes` (or kept), after removing what a crash
/// left half-built.
fn build(
    releases: &Releases,
    cache: &Cache,
    from: Option<Oid>,
    to: Oid,
    changes: &[Change],
    revision: Option<&Revision>,
) -> anyhow::Result<Built> {
    releases.remove_leftovers()?;
    // `changes` lead from `from`'s release; without one (the volume was in place before) they
    // are of no use, and the release is built from the whole tree.
    let changes = match from {
        Some(f) if !releases.has(f) => None,
        _ => Some(changes),
    };
    release(releases, cache, from, to, changes, revision)
}

/// A private copy of commit `to`'s tree in `dir` (emptied first), laid out as the volume is
/// (in releases: `releases/<sha>` and `current`), revision file included: what a full
/// deploy's trial container mounts. Returns what was written.
pub(super) fn stage(
    cache: &Cache,
    dir: &Path,
    layout: Layout,
    to: Oid,
    revision: Option<&Revision>,
) -> anyhow::Result<String> {
    remove_stage(dir)?;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    if layout == Layout::InPlace {
        let changes = with_revision(cache, &cache.changes(None, Some(to))?, revision, to)?;
        return Ok(describe(
            &Volume::open(dir)?.unseen().apply(cache, &changes)?,
        ));
    }
    let releases = Releases::open(dir)?;
    let built = release(&releases, cache, None, to, None, revision)?;
    releases.switch(Some(to))?;
    Ok(describe_release(to, &built))
}

/// Remove a trial's copy of a tree (and whatever a crash left of one).
pub(super) fn remove_stage(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// `to`'s release: a kept one as it is; else built on `base`'s release (kept, or `None`) with
/// `changes` from it, or — `changes` being `None` — from the whole tree, the revision file
/// written with them. The whole-tree diff is only computed when a release is really built.
fn release(
    releases: &Releases,
    cache: &Cache,
    base: Option<Oid>,
    to: Oid,
    changes: Option<&[Change]>,
    revision: Option<&Revision>,
) -> anyhow::Result<Built> {
    if releases.has(to) {
        return Ok(Built::reused());
    }
    match changes {
        Some(changes) => {
            let changes = with_revision(cache, changes, revision, to)?;
            releases.build(cache, base, to, &changes)
        }
        None => {
            let changes = with_revision(cache, &cache.changes(None, Some(to))?, revision, to)?;
            releases.build(cache, None, to, &changes)
        }
    }
}

/// Put the volume back from a partly or fully applied `current` to `back_to` (`None`: empty).
/// In place, only the paths that differ between the two are touched (and temp files a crash
/// left there removed); with releases, `current` is switched back (the release rebuilt first
/// if it is no longer kept).
pub(super) fn restore(
    cache: &Cache,
    volume: &Path,
    layout: Layout,
    current: Oid,
    back_to: Option<Oid>,
    revision: Option<&Revision>,
) -> anyhow::Result<String> {
    if layout == Layout::InPlace {
        let mut changes = cache.changes(Some(current), back_to)?;
        match back_to {
            Some(back_to) => changes = with_revision(cache, &changes, revision, back_to)?,
            // Back to empty: the revision file goes too (a tracked one is among the changes).
            None => changes.extend(revision.map(|r| Change::Delete {
                path: r.file.clone(),
            })),
        }
        let volume = Volume::open(volume)?;
        let trees = [Some(current), back_to]
            .into_iter()
            .flatten()
            .map(|c| cache.repo().find_commit(c).and_then(|c| c.tree()))
            .collect::<Result<Vec<_>, _>>()?;
        let tracked = |p: &Path| trees.iter().any(|t| t.get_path(p).is_ok());
        volume
            .remove_temp_files(&changes, tracked)
            .context("removing leftover temp files")?;
        return Ok(describe(&volume.apply(cache, &changes)?));
    }
    let releases = Releases::open(volume)?;
    releases.remove_leftovers()?;
    let Some(back_to) = back_to else {
        releases.switch(None)?;
        return Ok("current removed (nothing was deployed before)".to_string());
    };
    let built = release(&releases, cache, None, back_to, None, revision)?;
    releases.switch(Some(back_to))?;
    Ok(describe_release(back_to, &built))
}

/// Tell the app its code changed; returns what was done, for the step output. With releases,
/// the reload file is the live release's.
pub(super) fn reload(volume: &Path, layout: Layout, reload: &Reload) -> anyhow::Result<String> {
    match reload {
        Reload::Touch(rel) => {
            let tree = match layout {
                Layout::InPlace => Volume::open(volume)?,
                Layout::Releases { .. } => {
                    let releases = Releases::open(volume)?;
                    let live = releases.live()?.context("no current release to reload")?;
                    releases.release(live)?
                }
            };
            tree.touch(rel)?;
            Ok(format!("touched {}", rel.display()))
        }
        Reload::None => Ok("no reload configured".to_string()),
        // The engine does these: `deploy::reload`.
        Reload::Signal(_) | Reload::Exec(_) | Reload::Restart | Reload::Swap => {
            bail!("{reload} is not a volume reload")
        }
    }
}

/// Remove releases beyond the app's `keep_releases`, never the live one, `previous` (the
/// rollback target) or one in `in_use` (the release an app container was started on: its
/// processes may still run from it, e.g. a uWSGI master whose `chdir` resolved `current`
/// once). Returns what was removed, for the step output.
pub(super) fn prune_releases(
    volume: &Path,
    keep: usize,
    live: Oid,
    previous: Option<Oid>,
    in_use: &[Oid],
) -> anyhow::Result<String> {
    let mut protect: Vec<Oid> = std::iter::once(live)
        .chain(previous)
        .chain(in_use.iter().copied())
        .collect();
    // `prune` keeps `keep` releases counting the protected ones: each once.
    protect.sort_unstable();
    protect.dedup();
    let removed = Releases::open(volume)?.prune(keep, &protect)?;
    Ok(match removed.len() {
        0 => "nothing to remove".to_string(),
        n => format!(
            "removed {n}: {}",
            removed
                .iter()
                .map(|c| c.to_string()[..12].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

fn describe_release(commit: Oid, built: &Built) -> String {
    if built.reused {
        return format!("release {commit} was kept: current switched to it, nothing written");
    }
    format!(
        "release {commit}: {} files hard-linked, {}; current switched to it",
        built.linked,
        describe(&built.applied)
    )
}

/// A one-line account of an apply.
pub(super) fn describe(report: &ApplyReport) -> String {
    format!(
        "wrote {} files ({} bytes), deleted {}",
        report.written, report.bytes, report.deleted
    )
}
