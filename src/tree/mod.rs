//! The app's code on the host — the directory its container mounts and its hooks see — in one
//! of the two layouts of `config::Layout`: written in place into the volume ([`volume`]), or
//! one release per commit under `releases/<sha>/` with an atomically switched `current`
//! ([`releases`]).
//!
//! A deploy opens its app's [`Tree`] once and asks it for what it needs: write a commit
//! (`sync`), put the previous one back (`restore`), touch the reload file, prune old releases.
//! The layout is matched here only. Every method that touches the filesystem blocks: callers
//! run it on the blocking pool. `revision.rs`: the `REVISION` file written with each commit.

pub mod node;
pub mod releases;
mod revision;
pub mod volume;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::{AppConfig, Layout, Reload};
use crate::git::{Cache, Change, Oid};
use releases::{Built, Releases};
use revision::with_revision;
pub use revision::Revision;
use volume::{ApplyReport, Volume};

/// What a deploy writes: commit `to`'s tree, reached from `from` (deployed, if anything) by
/// `changes`, with the revision file.
pub struct Write<'a> {
    pub from: Option<Oid>,
    pub to: Oid,
    pub changes: &'a [Change],
    pub revision: Option<&'a Revision>,
}

/// When a deploy's write makes the new commit what the app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Now: in place the writes are the switch; with releases, `current` changes at the end.
    Now,
    /// Not yet (releases only): the release is built, `current` unchanged; a later `Now`
    /// finds it kept and only switches.
    Later,
}

/// An app's opened tree, in its layout.
pub enum Tree {
    /// The volume itself: a commit's changes are written into it.
    InPlace(Volume),
    /// `releases/<sha>/` per commit and `current`; `keep` is the app's `keep_releases`.
    Releases { releases: Releases, keep: usize },
}

impl Tree {
    /// Open the tree at `root` in `layout`, creating the volume (and `releases/`) if missing.
    pub fn open(root: &Path, layout: Layout) -> anyhow::Result<Tree> {
        Ok(match layout {
            Layout::InPlace => Tree::InPlace(Volume::open(root)?),
            Layout::Releases { keep } => Tree::Releases {
                releases: Releases::open(root)?,
                keep,
            },
        })
    }

    /// Whether the volume at `root` holds what dockhand did not put there — in place,
    /// anything; with releases, anything besides `releases/` and `current` — as asked before a
    /// first deploy. Creates the volume if missing, nothing in it.
    pub fn is_foreign(root: &Path, layout: Layout) -> anyhow::Result<bool> {
        match layout {
            Layout::InPlace => Ok(!Volume::open(root)?.is_empty()?),
            Layout::Releases { .. } => Releases::has_foreign_entries(root),
        }
    }

    /// The directory the app runs from, as its hooks see it: the volume, or its `current`.
    pub fn live_dir(app: &AppConfig) -> PathBuf {
        match app.layout {
            Layout::InPlace => app.volume.clone(),
            Layout::Releases { .. } => app.volume.join(releases::CURRENT),
        }
    }

    /// What a container started on `commit` mounts: a swapping app's container its own
    /// release (its tree never changes under it), any other the volume.
    pub fn mount_for(app: &AppConfig, commit: &str) -> PathBuf {
        match (&app.reload, app.layout) {
            (Reload::Swap, Layout::Releases { .. }) => {
                app.volume.join(releases::RELEASES).join(commit)
            }
            _ => app.volume.clone(),
        }
    }

    /// How many releases the app keeps; `None` in place (nothing to prune).
    pub fn keeps_releases(app: &AppConfig) -> Option<usize> {
        match app.layout {
            Layout::InPlace => None,
            Layout::Releases { keep } => Some(keep),
        }
    }

    /// Whether the full path writes the new commit ahead of the switch (`Switch::Later`): with
    /// releases, unless the app swaps (its sync builds the release its new container mounts).
    pub fn builds_ahead(app: &AppConfig) -> bool {
        matches!(app.layout, Layout::Releases { .. }) && app.reload != Reload::Swap
    }

    /// Whether the app runs the same files after a write of `changes`: in place, when nothing
    /// changed; never with releases (a release is new even so, and its app may hold the old
    /// path).
    pub fn runs_unchanged(app: &AppConfig, changes: &[Change]) -> bool {
        changes.is_empty() && app.layout == Layout::InPlace
    }

    /// Put commit `write.to` live: in place, write its changes into the volume; with releases,
    /// build its release (or reuse a kept one) and, by `switch`, point `current` at it.
    /// Returns what was done, for the step output.
    pub fn sync(&self, cache: &Cache, write: &Write<'_>, switch: Switch) -> anyhow::Result<String> {
        let Write {
            from,
            to,
            changes,
            revision,
        } = *write;
        let releases = match self {
            Tree::InPlace(volume) => {
                if switch == Switch::Later {
                    bail!("in place, nothing can be written ahead of the switch");
                }
                let changes = with_revision(cache, changes, revision, to)?;
                // A first deploy into an empty volume: no app reads it yet.
                let report = match from.is_none() && volume.is_empty()? {
                    true => volume.try_clone()?.unseen().apply(cache, &changes)?,
                    false => volume.apply(cache, &changes)?,
                };
                return Ok(describe(&report));
            }
            Tree::Releases { releases, .. } => releases,
        };
        let built = build(releases, cache, from, to, changes, revision)?;
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

    /// A private copy of commit `to`'s tree in `dir` (emptied first), laid out as `layout`
    /// says (in releases: `releases/<sha>` and `current`), revision file included: what a full
    /// deploy's trial container mounts. Returns what was written.
    pub fn stage(
        cache: &Cache,
        dir: &Path,
        layout: Layout,
        to: Oid,
        revision: Option<&Revision>,
    ) -> anyhow::Result<String> {
        Tree::remove_stage(dir)?;
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
    pub fn remove_stage(dir: &Path) -> anyhow::Result<()> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }

    /// Put the tree back from a partly or fully applied `current` to `back_to` (`None`:
    /// empty). In place, only the paths that differ between the two are touched (and temp
    /// files a crash left there removed); with releases, `current` is switched back (the
    /// release rebuilt first if it is no longer kept).
    pub fn restore(
        &self,
        cache: &Cache,
        current: Oid,
        back_to: Option<Oid>,
        revision: Option<&Revision>,
    ) -> anyhow::Result<String> {
        let releases = match self {
            Tree::InPlace(volume) => {
                return restore_in_place(volume, cache, current, back_to, revision)
            }
            Tree::Releases { releases, .. } => releases,
        };
        releases.remove_leftovers()?;
        let Some(back_to) = back_to else {
            releases.switch(None)?;
            return Ok("current removed (nothing was deployed before)".to_string());
        };
        let built = release(releases, cache, None, back_to, None, revision)?;
        releases.switch(Some(back_to))?;
        Ok(describe_release(back_to, &built))
    }

    /// Touch `rel` (a `touch` reload) in the live tree: the volume, or the live release.
    pub fn touch(&self, rel: &Path) -> anyhow::Result<()> {
        match self {
            Tree::InPlace(volume) => volume.touch(rel),
            Tree::Releases { releases, .. } => {
                let live = releases.live()?.context("no current release to reload")?;
                releases.release(live)?.touch(rel)
            }
        }
    }

    /// Remove releases beyond the app's `keep_releases`, never the live one, `previous` (the
    /// rollback target) or one in `in_use` (the release an app container was started on: its
    /// processes may still run from it, e.g. a uWSGI master whose `chdir` resolved `current`
    /// once). Returns what was removed, for the step output; in place there is nothing to.
    pub fn prune(
        &self,
        live: Oid,
        previous: Option<Oid>,
        in_use: &[Oid],
    ) -> anyhow::Result<String> {
        let Tree::Releases { releases, keep } = self else {
            return Ok("nothing to remove: the tree is written in place".to_string());
        };
        let mut protect: Vec<Oid> = std::iter::once(live)
            .chain(previous)
            .chain(in_use.iter().copied())
            .collect();
        // `prune` keeps `keep` releases counting the protected ones: each once.
        protect.sort_unstable();
        protect.dedup();
        let removed = releases.prune(*keep, &protect)?;
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
}

/// In place: the paths that differ between `current` and `back_to` written back (the revision
/// file with them), after removing the temp files a crash left among them.
fn restore_in_place(
    volume: &Volume,
    cache: &Cache,
    current: Oid,
    back_to: Option<Oid>,
    revision: Option<&Revision>,
) -> anyhow::Result<String> {
    let mut changes = cache.changes(Some(current), back_to)?;
    match back_to {
        Some(back_to) => changes = with_revision(cache, &changes, revision, back_to)?,
        // Back to empty: the revision file goes too (a tracked one is among the changes).
        None => changes.extend(revision.map(|r| Change::Delete {
            path: r.file.clone(),
        })),
    }
    let trees = [Some(current), back_to]
        .into_iter()
        .flatten()
        .map(|c| cache.repo().find_commit(c).and_then(|c| c.tree()))
        .collect::<Result<Vec<_>, _>>()?;
    let tracked = |p: &Path| trees.iter().any(|t| t.get_path(p).is_ok());
    volume
        .remove_temp_files(&changes, tracked)
        .context("removing leftover temp files")?;
    Ok(describe(&volume.apply(cache, &changes)?))
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
fn describe(report: &ApplyReport) -> String {
    format!(
        "wrote {} files ({} bytes), deleted {}",
        report.written, report.bytes, report.deleted
    )
}
