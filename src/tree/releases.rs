//! The releases layout of a volume: one complete tree per deployed commit under
//! `releases/<sha>/`, and a `current` symlink naming the live one.
//!
//! A new release starts as a hard-link copy of the live one (unchanged files share their
//! inode), gets the commit's changes applied (every write is a new file renamed into place, so
//! no shared inode is ever modified), is renamed to `releases/<sha>` only once complete, and
//! goes live when `current` is replaced by a new symlink in one rename. A reader that opened
//! `current` sees one commit's tree for as long as it holds it; going back to a kept release is
//! one rename. Everything is reached from the volume's directory handle without following
//! symlinks (SECURITY.md 20), like [`Volume`].

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use cap_fs_ext::DirExt;
use cap_std::fs::{Dir, DirBuilder, DirBuilderExt};

use crate::git::{Cache, Change, Oid};
use crate::tree::volume::{random, ApplyReport, Volume};

/// The directory holding the releases.
pub const RELEASES: &str = "releases";
/// The symlink naming the live release.
pub const CURRENT: &str = "current";
/// Prefix of a release being built, and of a `current` symlink about to replace the real one.
const BUILDING: &str = ".building-";

/// A volume in the releases layout.
pub struct Releases {
    root: PathBuf,
    volume: Dir,
    releases: Dir,
}

/// What [`Releases::build`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    /// Files hard-linked from the base release.
    pub linked: usize,
    /// The changes applied on top.
    pub applied: ApplyReport,
    /// The release existed already (kept from an earlier deploy): nothing was built.
    pub reused: bool,
}

impl Built {
    /// A release that was kept: nothing built.
    pub fn reused() -> Built {
        Built {
            reused: true,
            ..Built::default()
        }
    }
}

impl Releases {
    /// Open the volume at `root` (created if missing) and its `releases` directory.
    pub fn open(root: &Path) -> anyhow::Result<Releases> {
        let volume = Volume::open(root)?.into_dir();
        let mut builder = DirBuilder::new();
        builder.mode(0o755);
        match volume.create_dir_with(RELEASES, &builder) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating {RELEASES}/ in {}", root.display()))
            }
        }
        let releases = volume.open_dir_nofollow(RELEASES).with_context(|| {
            format!("opening {RELEASES}/ in {} (not a symlink)", root.display())
        })?;
        Ok(Releases {
            root: root.to_owned(),
            volume,
            releases,
        })
    }

    /// Whether the volume holds anything besides the layout's own `releases/` and `current`.
    pub fn has_foreign_entries(root: &Path) -> anyhow::Result<bool> {
        let volume = Volume::open(root)?.into_dir();
        for entry in volume.entries()? {
            let name = entry?.file_name();
            if name != RELEASES && name != CURRENT {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The commit `current` names, if it names a release.
    pub fn live(&self) -> anyhow::Result<Option<Oid>> {
        let target = match self.volume.read_link_contents(CURRENT) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("reading the current symlink"),
        };
        let name = target
            .strip_prefix(RELEASES)
            .ok()
            .and_then(|p| p.to_str())
            .with_context(|| format!("current points outside {RELEASES}/: {}", target.display()))?;
        Ok(Some(Oid::from_str(name).with_context(|| {
            format!("current points at {}, not a release", target.display())
        })?))
    }

    /// Whether a complete release of `commit` is kept.
    pub fn has(&self, commit: Oid) -> bool {
        self.releases
            .symlink_metadata(commit.to_string())
            .is_ok_and(|m| m.is_dir())
    }

    /// The release directory of `commit`, as a volume to write or touch in (opened without
    /// following symlinks).
    pub fn release(&self, commit: Oid) -> anyhow::Result<Volume> {
        let name = commit.to_string();
        let dir = self
            .releases
            .open_dir_nofollow(&name)
            .with_context(|| format!("opening release {name}"))?;
        Ok(Volume::from_dir(self.root.join(RELEASES).join(name), dir))
    }

    /// Make the release of `target`: a hard-link copy of `base`'s release (or nothing) with
    /// `changes` (from `base` to `target`) applied, renamed into place once complete. A release
    /// that already exists is reused as it is.
    pub fn build(
        &self,
        cache: &Cache,
        base: Option<Oid>,
        target: Oid,
        changes: &[Change],
    ) -> anyhow::Result<Built> {
        let name = target.to_string();
        if self.has(target) {
            return Ok(Built::reused());
        }
        let building = OsString::from(format!("{BUILDING}{name}-{:016x}", random()));
        let mut builder = DirBuilder::new();
        builder.mode(0o755);
        self.releases
            .create_dir_with(&building, &builder)
            .context("creating the release directory")?;
        let made = (|| {
            let dir = self.releases.open_dir_nofollow(&building)?;
            let linked = match base.filter(|b| self.has(*b)) {
                Some(base) => {
                    let from = self.releases.open_dir_nofollow(base.to_string())?;
                    link_tree(&from, &dir)
                        .with_context(|| format!("hard-linking release {base}"))?
                }
                None if base.is_some() => {
                    bail!("the base release {} is not kept", base.unwrap_or(target))
                }
                None => 0,
            };
            // Not a release until renamed: nothing reads it yet.
            let volume = Volume::from_dir(self.root.join(RELEASES).join(&building), dir).unseen();
            let applied = volume.apply(cache, changes)?;
            self.releases
                .rename(&building, &self.releases, &name)
                .context("renaming the finished release into place")?;
            Ok(Built {
                linked,
                applied,
                reused: false,
            })
        })();
        if made.is_err() {
            let _ = self.releases.remove_dir_all(&building);
        }
        made
    }

    /// Point `current` at `commit`'s release (`None`: remove it), in one rename. The release's
    /// mtime is set to now: pruning keeps the most recently live releases.
    pub fn switch(&self, commit: Option<Oid>) -> anyhow::Result<()> {
        let Some(commit) = commit else {
            return match self.volume.remove_file(CURRENT) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(e).context("removing the current symlink")
                }
                _ => Ok(()),
            };
        };
        if !self.has(commit) {
            bail!("no release of {commit} to switch to");
        }
        let target = Path::new(RELEASES).join(commit.to_string());
        let temp = OsString::from(format!("{BUILDING}{CURRENT}-{:016x}", random()));
        self.volume
            .symlink_contents(&target, &temp)
            .context("creating the new current symlink")?;
        if let Err(e) = self.volume.rename(&temp, &self.volume, CURRENT) {
            let _ = self.volume.remove_file(&temp);
            return Err(e).context("replacing the current symlink");
        }
        let now = SystemTime::now();
        if let Ok(dir) = self.releases.open_dir_nofollow(commit.to_string()) {
            let times = std::fs::FileTimes::new()
                .set_modified(now)
                .set_accessed(now);
            let _ = dir.into_std_file().set_times(times);
        }
        Ok(())
    }

    /// Remove releases beyond the `keep` most recently live ones, never one in `protect`
    /// (the live release and the rollback target). Returns the removed commits.
    pub fn prune(&self, keep: usize, protect: &[Oid]) -> anyhow::Result<Vec<Oid>> {
        let mut kept: Vec<(SystemTime, Oid)> = Vec::new();
        for entry in self.releases.entries()? {
            let entry = entry?;
            let Some(commit) = entry
                .file_name()
                .to_str()
                .and_then(|n| Oid::from_str(n).ok())
            else {
                continue;
            };
            if entry.file_type()?.is_dir() {
                let mtime = entry.metadata()?.modified()?.into_std();
                kept.push((mtime, commit));
            }
        }
        kept.sort_by(|a, b| b.cmp(a));
        let mut removed = Vec::new();
        let mut room = keep.saturating_sub(protect.len());
        for (_, commit) in kept {
            if protect.contains(&commit) {
                continue;
            }
            if room > 0 {
                room -= 1;
                continue;
            }
            self.releases
                .remove_dir_all(commit.to_string())
                .with_context(|| format!("removing release {commit}"))?;
            removed.push(commit);
        }
        Ok(removed)
    }

    /// Remove half-built releases and half-made `current` symlinks a crash left behind.
    pub fn remove_leftovers(&self) -> anyhow::Result<usize> {
        let mut removed = 0;
        for (dir, is_releases) in [(&self.releases, true), (&self.volume, false)] {
            for entry in dir.entries()? {
                let entry = entry?;
                let name = entry.file_name();
                if !name.as_encoded_bytes().starts_with(BUILDING.as_bytes()) {
                    continue;
                }
                if is_releases && entry.file_type()?.is_dir() {
                    dir.remove_dir_all(&name)?;
                } else {
                    dir.remove_file(&name)?;
                }
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Hard-link every file and symlink of `from` into the empty directory `to`, recreating the
/// directories. Nothing is followed. Returns how many entries were linked.
fn link_tree(from: &Dir, to: &Dir) -> anyhow::Result<usize> {
    let mut linked = 0;
    let mut builder = DirBuilder::new();
    builder.mode(0o755);
    for entry in from.entries()? {
        let entry = entry?;
        let name = entry.file_name();
        if entry.file_type()?.is_dir() {
            to.create_dir_with(&name, &builder)?;
            let (a, b) = (from.open_dir_nofollow(&name)?, to.open_dir_nofollow(&name)?);
            linked += link_tree(&a, &b).with_context(|| display(&name))?;
        } else {
            from.hard_link(&name, to, &name)
                .with_context(|| format!("linking {}", display(&name)))?;
            linked += 1;
        }
    }
    Ok(linked)
}

fn display(name: &OsStr) -> String {
    name.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u8) -> Oid {
        Oid::from_str(&format!("{n:02x}").repeat(20)).unwrap()
    }

    /// A volume with empty releases of `commits`, built (hence dated) in order.
    fn with_releases(commits: &[Oid]) -> (tempfile::TempDir, Releases) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open_or_init(&dir.path().join("repo.git")).unwrap();
        let releases = Releases::open(&dir.path().join("volume")).unwrap();
        for (i, c) in commits.iter().enumerate() {
            releases.build(&cache, None, *c, &[]).unwrap();
            let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
            std::fs::File::open(dir.path().join("volume/releases").join(c.to_string()))
                .unwrap()
                .set_times(std::fs::FileTimes::new().set_modified(time))
                .unwrap();
        }
        (dir, releases)
    }

    #[test]
    fn switch_points_current_at_a_release_and_refuses_a_missing_one() {
        let (_dir, releases) = with_releases(&[oid(1), oid(2)]);
        assert_eq!(releases.live().unwrap(), None);
        releases.switch(Some(oid(2))).unwrap();
        assert_eq!(releases.live().unwrap(), Some(oid(2)));
        let err = releases.switch(Some(oid(3))).unwrap_err();
        assert!(err.to_string().contains("no release"), "{err}");
        assert_eq!(releases.live().unwrap(), Some(oid(2)));
        releases.switch(None).unwrap();
        assert_eq!(releases.live().unwrap(), None);
    }

    #[test]
    fn prune_keeps_the_most_recent_and_never_a_protected_release() {
        let all: Vec<Oid> = (1..=6).map(oid).collect();
        let (dir, releases) = with_releases(&all);
        // oid(1) is the oldest but protected (say, the rollback target).
        let removed = releases.prune(3, &[oid(6), oid(1)]).unwrap();
        let mut removed: Vec<u8> = removed.iter().map(|c| c.as_bytes()[0]).collect();
        removed.sort_unstable();
        assert_eq!(removed, [2, 3, 4]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path().join("volume/releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let want: Vec<String> = [1, 5, 6].iter().map(|n| oid(*n).to_string()).collect();
        assert_eq!(left, want);
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_and_never_count_as_releases() {
        let (dir, releases) = with_releases(&[oid(1)]);
        let root = dir.path().join("volume");
        std::fs::create_dir_all(root.join("releases/.building-abc-1/sub")).unwrap();
        std::os::unix::fs::symlink("releases/x", root.join(".building-current-2")).unwrap();
        assert!(!releases.has(Oid::from_str(&"ab".repeat(20)).unwrap()));
        assert_eq!(releases.remove_leftovers().unwrap(), 2);
        assert!(releases.has(oid(1)));
        assert!(!Releases::has_foreign_entries(&root).unwrap());
    }

    #[test]
    fn a_releases_directory_replaced_by_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("volume");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink("/etc", root.join(RELEASES)).unwrap();
        let err = format!("{:#}", Releases::open(&root).err().unwrap());
        assert!(err.contains("not a symlink"), "{err}");
    }
}
