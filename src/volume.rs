//! The host directory a container mounts, updated in place in O(changed files).
//!
//! Every operation goes through a directory handle (cap-std) and opens each parent without
//! following symlinks, so no write can land outside the volume, and nothing is ever written
//! *through* a symlink (SECURITY.md 20).

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use cap_fs_ext::{DirExt, FollowSymlinks, OpenOptionsFollowExt};
use cap_std::ambient_authority;
use cap_std::fs::{
    Dir, DirBuilder, DirBuilderExt, OpenOptions, OpenOptionsExt, Permissions, PermissionsExt,
};

use crate::git::{Change, EntryMode, Oid};

/// What one `apply` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Files and symlinks written (each write counts, even if the path already held the blob).
    pub written: usize,
    /// Files and symlinks actually removed (a delete of a missing path does not count).
    pub deleted: usize,
    /// Bytes of blob content written.
    pub bytes: u64,
}

/// An open volume directory.
pub struct Volume {
    root: PathBuf,
    dir: Dir,
}

/// Prefix of the temp files `apply` writes next to their targets before renaming them in place.
pub const TEMP_PREFIX: &str = ".dockhand-tmp-";

impl Volume {
    /// Open `root`, creating it (not its parents) if missing.
    pub fn open(root: &Path) -> anyhow::Result<Volume> {
        use std::os::unix::fs::DirBuilderExt as _;
        match std::fs::DirBuilder::new().mode(0o755).create(root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating volume {}", root.display())),
        }
        let dir = Dir::open_ambient_dir(root, ambient_authority())
            .with_context(|| format!("opening volume {}", root.display()))?;
        Ok(Volume {
            root: root.to_owned(),
            dir,
        })
    }

    /// A volume on a directory already opened (without following symlinks) by the caller;
    /// `root` is its path, for messages.
    pub fn from_dir(root: PathBuf, dir: Dir) -> Volume {
        Volume { root, dir }
    }

    /// The directory handle.
    pub fn into_dir(self) -> Dir {
        self.dir
    }

    /// The path this volume was opened at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the directory has no entries at all.
    pub fn is_empty(&self) -> anyhow::Result<bool> {
        let mut entries = self
            .dir
            .entries()
            .with_context(|| format!("listing volume {}", self.root.display()))?;
        Ok(entries.next().is_none())
    }

    /// Apply `changes` (blobs read from `repo`): deletes first (then directories left empty),
    /// then writes. Each file is written to a temp file in its target directory and renamed over
    /// the target; exec bits kept; symlinks created as symlinks. Idempotent: a path already in the
    /// target state is fine. A path whose parent is a symlink, or that would escape the volume,
    /// is an error naming the path.
    ///
    /// A delete removes a file or symlink only: a directory at that path is left alone (it is
    /// what the target tree holds there when the delete was a file→directory change, or
    /// something the container made), and a path below a symlink or file is already absent.
    /// A write replaces a file or symlink where a parent directory must be, and a directory
    /// where the file must be, but refuses to go through a symlinked parent.
    pub fn apply(
        &self,
        repo: &git2::Repository,
        changes: &[Change],
    ) -> anyhow::Result<ApplyReport> {
        let mut report = ApplyReport::default();
        for change in changes {
            if let Change::Delete { path } = change {
                if self
                    .delete(path)
                    .with_context(|| format!("deleting {}", path.display()))?
                {
                    report.deleted += 1;
                }
            }
        }
        for change in changes {
            if let Change::Write { path, oid, mode } = change {
                report.bytes += self
                    .write(repo, path, *oid, *mode)
                    .with_context(|| format!("writing {}", path.display()))?;
                report.written += 1;
            }
        }
        Ok(report)
    }

    /// Remove `.dockhand-tmp-*` files a crashed `apply` left, looking only in the directories the
    /// given changes touch. Returns how many were removed.
    pub fn remove_temp_files(
        &self,
        dirs_of: &[Change],
        tracked: impl Fn(&Path) -> bool,
    ) -> anyhow::Result<usize> {
        let parents: BTreeSet<&Path> = dirs_of
            .iter()
            .filter_map(|c| match c {
                Change::Write { path, .. } | Change::Delete { path } => path.parent(),
            })
            .collect();
        let mut removed = 0;
        for parent in parents {
            let components = split_dir(parent)?;
            let Some(stack) = self.walk(&components, parent, Walk::Existing)? else {
                continue;
            };
            let dir = stack.last().unwrap_or(&self.dir);
            let entries = dir
                .entries()
                .with_context(|| format!("listing {}", parent.display()))?;
            for entry in entries {
                let entry = entry.with_context(|| format!("listing {}", parent.display()))?;
                let name = entry.file_name();
                // Only the names `apply` makes, and never a file a commit tracks.
                if !is_temp_name(name.as_bytes()) || tracked(&parent.join(&name)) {
                    continue;
                }
                if entry.file_type().is_ok_and(|t| !t.is_dir()) {
                    match dir.remove_file(&name) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            let path = parent.join(&name);
                            return Err(e).with_context(|| format!("removing {}", path.display()));
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Set the mtime of `rel` to now, creating an empty file if missing. Refuses (error) when `rel`
    /// or any parent is a symlink.
    pub fn touch(&self, rel: &Path) -> anyhow::Result<()> {
        let (parents, name) = split(rel)?;
        let stack = self.walk(&parents, rel, Walk::Touch)?;
        let dir = stack.as_ref().and_then(|s| s.last()).unwrap_or(&self.dir);
        // Only a regular file is touched: opening a FIFO the app (or its container) put there
        // would block forever, a device could do anything. O_NONBLOCK keeps even a FIFO swapped
        // in after the look from blocking the open; the opened file is checked again.
        match dir.symlink_metadata(name) {
            Ok(meta) if meta.file_type().is_symlink() => {
                bail!("refusing to touch symlink {}", rel.display())
            }
            Ok(meta) if !meta.is_file() => bail!(
                "refusing to touch {}: it is not a regular file (a FIFO, socket, device or directory)",
                rel.display()
            ),
            _ => {}
        }
        let mut options = OpenOptions::new();
        options
            .write(true)
            .create(true)
            .mode(0o644)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .follow(FollowSymlinks::No);
        let file = match dir.open_with(name, &options) {
            Ok(file) => file,
            Err(_) if is_symlink(dir, name) => {
                bail!("refusing to touch symlink {}", rel.display())
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", rel.display())),
        };
        let file = file.into_std();
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            bail!(
                "refusing to touch {}: it is not a regular file",
                rel.display()
            );
        }
        let now = touch_time(
            SystemTime::now(),
            file.metadata().and_then(|m| m.modified()).ok(),
        );
        file.set_times(
            std::fs::FileTimes::new()
                .set_accessed(now)
                .set_modified(now),
        )
        .with_context(|| format!("setting the mtime of {}", rel.display()))
    }

    /// Remove the file or symlink at `path`; then its parent directories while they are empty.
    /// Returns whether something was removed.
    fn delete(&self, path: &Path) -> anyhow::Result<bool> {
        let (parents, name) = split(path)?;
        let Some(stack) = self.walk(&parents, path, Walk::Existing)? else {
            return Ok(false);
        };
        let dir = stack.last().unwrap_or(&self.dir);
        match dir.symlink_metadata(name) {
            Ok(meta) if meta.is_dir() => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match dir.remove_file(name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        // stack[i] is the directory holding parents[i]; never the root itself.
        for i in (0..parents.len()).rev() {
            let holder = if i == 0 { &self.dir } else { &stack[i - 1] };
            match holder.remove_dir(parents[i]) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => break,
                Err(e) => {
                    let dir_path: PathBuf = parents[..=i].iter().collect();
                    return Err(e).with_context(|| {
                        format!("removing empty directory {}", dir_path.display())
                    });
                }
            }
        }
        Ok(true)
    }

    /// Write blob `oid` at `path` as `mode`, atomically replacing what is there. Returns the
    /// number of bytes written.
    fn write(
        &self,
        repo: &git2::Repository,
        path: &Path,
        oid: Oid,
        mode: EntryMode,
    ) -> anyhow::Result<u64> {
        let (parents, name) = split(path)?;
        let stack = self.walk(&parents, path, Walk::Write)?.unwrap_or_default();
        let dir = stack.last().unwrap_or(&self.dir);
        let blob = repo
            .find_blob(oid)
            .with_context(|| format!("reading blob {oid}"))?;
        let content = blob.content();

        if dir.symlink_metadata(name).is_ok_and(|m| m.is_dir()) {
            dir.remove_dir_all(name)
                .context("removing the directory in the way")?;
        }
        let temp = match mode {
            EntryMode::File => write_temp_file(dir, content, 0o644)?,
            EntryMode::Executable => write_temp_file(dir, content, 0o755)?,
            EntryMode::Symlink => {
                // The target is taken literally; it may point anywhere, as nothing is ever
                // written through a symlink.
                let target = OsStr::from_bytes(content);
                create_temp(|temp| dir.symlink_contents(target, temp))
                    .context("creating the symlink")?
            }
        };
        if let Err(e) = dir.rename(&temp, dir, name) {
            let _ = dir.remove_file(&temp);
            return Err(e).context("renaming the temp file into place");
        }
        Ok(content.len() as u64)
    }

    /// Open each directory of `components` in turn, never following a symlink. Returns the opened
    /// directories (`stack[i]` is `components[..=i]`), or `None` (with `Walk::Existing`) when one
    /// is missing or not a directory.
    fn walk(
        &self,
        components: &[&OsStr],
        rel: &Path,
        how: Walk,
    ) -> anyhow::Result<Option<Vec<Dir>>> {
        let mut stack: Vec<Dir> = Vec::with_capacity(components.len());
        for (i, &component) in components.iter().enumerate() {
            let here = || components[..=i].iter().collect::<PathBuf>();
            let cur = stack.last().unwrap_or(&self.dir);
            match cur.symlink_metadata(component) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.is_symlink() => {
                    if how == Walk::Existing {
                        return Ok(None);
                    }
                    bail!(
                        "refusing to write through symlink {} (to reach {})",
                        here().display(),
                        rel.display()
                    );
                }
                Ok(_) => match how {
                    Walk::Existing => return Ok(None),
                    Walk::Touch => bail!(
                        "{} is not a directory (to reach {})",
                        here().display(),
                        rel.display()
                    ),
                    Walk::Write => {
                        // Not in the target tree, which has a directory here.
                        cur.remove_file(component).with_context(|| {
                            format!("removing file {} in the way", here().display())
                        })?;
                        create_dir(cur, component)
                            .with_context(|| format!("creating {}", here().display()))?;
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if how == Walk::Existing {
                        return Ok(None);
                    }
                    create_dir(cur, component)
                        .with_context(|| format!("creating {}", here().display()))?;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("inspecting {}", here().display()))
                }
            }
            // The check above is advisory; this open is what guarantees no symlink is followed,
            // even if the container swaps one in meanwhile.
            let next = match cur.open_dir_nofollow(component) {
                Ok(next) => next,
                Err(e) => {
                    let symlink = is_symlink(cur, component);
                    let gone = symlink
                        || matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                        );
                    if how == Walk::Existing && gone {
                        return Ok(None);
                    }
                    if symlink {
                        bail!(
                            "refusing to write through symlink {} (to reach {})",
                            here().display(),
                            rel.display()
                        );
                    }
                    return Err(e)
                        .with_context(|| format!("opening directory {}", here().display()));
                }
            };
            stack.push(next);
        }
        Ok(Some(stack))
    }
}

/// How `Volume::walk` treats what it finds on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Only open what exists; anything else means the path is absent.
    Existing,
    /// Create missing directories and replace files in the way.
    Write,
    /// Create missing directories; anything else in the way is an error.
    Touch,
}

/// The parent components and the file name of a relative change path.
fn split(path: &Path) -> anyhow::Result<(Vec<&OsStr>, &OsStr)> {
    let mut components = split_dir(path)?;
    match components.pop() {
        Some(name) => Ok((components, name)),
        None => bail!("refusing empty path"),
    }
}

/// The components of a relative path, refusing any that is not a plain name.
fn split_dir(path: &Path) -> anyhow::Result<Vec<&OsStr>> {
    path.components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => bail!(
                "refusing path {} that could leave the volume",
                path.display()
            ),
        })
        .collect()
}

fn create_dir(dir: &Dir, name: &OsStr) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.mode(0o755);
    match dir.create_dir_with(name, &builder) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Write `content` to a new temp file in `dir` with permissions `mode` (not masked by umask).
fn write_temp_file(dir: &Dir, content: &[u8], mode: u32) -> anyhow::Result<OsString> {
    let mut file = None;
    let name = create_temp(|temp| {
        let mut options = OpenOptions::new();
        options
            .write(true)
            .create_new(true)
            .mode(0o600)
            .follow(FollowSymlinks::No);
        file = Some(dir.open_with(temp, &options)?);
        Ok(())
    })
    .context("creating a temp file")?;
    let Some(mut file) = file else {
        bail!("temp file was not created");
    };
    let written = file
        .write_all(content)
        .and_then(|()| file.set_permissions(Permissions::from_mode(mode)));
    if let Err(e) = written {
        drop(file);
        let _ = dir.remove_file(&name);
        return Err(e).context("writing the temp file");
    }
    Ok(name)
}

/// Whether `name` is one `apply` gives its temp files: the prefix and 16 lower-case hex digits.
fn is_temp_name(name: &[u8]) -> bool {
    name.strip_prefix(TEMP_PREFIX.as_bytes())
        .is_some_and(|rest| {
            rest.len() == 16
                && rest
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        })
}

/// Run `create` with fresh `.dockhand-tmp-<random>` names until one does not exist yet.
fn create_temp(mut create: impl FnMut(&OsStr) -> io::Result<()>) -> io::Result<OsString> {
    loop {
        let name = OsString::from(format!("{TEMP_PREFIX}{:016x}", random()));
        match create(&name) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            result => return result.map(|()| name),
        }
    }
}

/// A random number from the standard library's per-process randomly seeded hasher.
/// A random number for temp names.
pub(crate) fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Whether `name` in `dir` is a symlink (to explain an open that refused to follow one).
fn is_symlink(dir: &Dir, name: &OsStr) -> bool {
    dir.symlink_metadata(name).is_ok_and(|m| m.is_symlink())
}

/// The mtime a touch sets: now, unless that is in the same whole second as the file's mtime
/// already (two deploys within a second). Watchers that compare whole seconds (uWSGI's
/// `touch-reload` keeps `st_mtime`) would miss it; one second past the old mtime they see.
fn touch_time(now: SystemTime, old: Option<SystemTime>) -> SystemTime {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    match old {
        Some(old) if secs(now) <= secs(old) => {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs(old) + 1)
        }
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime};

    use tempfile::TempDir;

    use super::*;
    use crate::git::tests::{fetched, Origin, EXEC, FILE, LINK};
    use crate::git::Cache;

    #[test]
    fn two_touches_within_a_second_differ_in_whole_seconds() {
        // uWSGI's touch-reload compares st_mtime in seconds: a second touch within the same
        // second as the file's write must still move it.
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("uwsgi.ini"), "[uwsgi]\n").unwrap();
        let volume = Volume::open(dir.path()).unwrap();
        let secs = || {
            fs::metadata(dir.path().join("uwsgi.ini"))
                .unwrap()
                .modified()
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let mut seen = vec![secs()];
        for _ in 0..3 {
            volume.touch(Path::new("uwsgi.ini")).unwrap();
            seen.push(secs());
        }
        assert!(seen.windows(2).all(|w| w[1] > w[0]), "{seen:?}");
        // An mtime already in a later second is never moved back.
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        assert_eq!(
            touch_time(SystemTime::now(), Some(later)),
            later + Duration::from_secs(1)
        );
        let now = SystemTime::now();
        assert_eq!(touch_time(now, Some(now - Duration::from_secs(5))), now);
    }

    /// What one path holds, as these tests compare a directory with a commit.
    #[derive(Debug, PartialEq, Eq)]
    enum Node {
        Dir,
        File(Vec<u8>),
        Executable(Vec<u8>),
        Symlink(PathBuf),
    }

    /// Every path under `root`, never following a symlink. A file must be exactly 0644 or 0755.
    fn on_disk(root: &Path) -> BTreeMap<PathBuf, Node> {
        fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
            for entry in fs::read_dir(root.join(rel)).unwrap() {
                let rel = rel.join(entry.unwrap().file_name());
                let full = root.join(&rel);
                let meta = fs::symlink_metadata(&full).unwrap();
                let node = if meta.is_symlink() {
                    Node::Symlink(fs::read_link(&full).unwrap())
                } else if meta.is_dir() {
                    walk(root, &rel, out);
                    Node::Dir
                } else {
                    match meta.permissions().mode() & 0o7777 {
                        0o644 => Node::File(fs::read(&full).unwrap()),
                        0o755 => Node::Executable(fs::read(&full).unwrap()),
                        other => panic!("{} has mode {other:o}", rel.display()),
                    }
                };
                out.insert(rel, node);
            }
        }
        let mut out = BTreeMap::new();
        walk(root, Path::new(""), &mut out);
        out
    }

    /// Every path of a commit's tree.
    fn in_git(repo: &git2::Repository, commit: Oid) -> BTreeMap<PathBuf, Node> {
        let tree = repo.find_commit(commit).unwrap().tree().unwrap();
        let mut out = BTreeMap::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |prefix, entry| {
            let path = Path::new(prefix).join(entry.name().unwrap());
            let content = || repo.find_blob(entry.id()).unwrap().content().to_vec();
            let node = match entry.filemode() {
                0o040000 => Node::Dir,
                EXEC => Node::Executable(content()),
                LINK => Node::Symlink(PathBuf::from(OsStr::from_bytes(&content()))),
                _ => Node::File(content()),
            };
            out.insert(path, node);
            git2::TreeWalkResult::Ok
        })
        .unwrap();
        out
    }

    /// A fetched origin and an empty volume.
    struct Fixture {
        origin: Origin,
        _state: TempDir,
        cache: Cache,
        root: TempDir,
        volume: Volume,
    }

    impl Fixture {
        /// `commits` are committed on main in order; returns their ids.
        fn new(commits: &[&[(&str, i32, &[u8])]]) -> (Fixture, Vec<Oid>) {
            let origin = Origin::new();
            let ids = commits
                .iter()
                .map(|files| origin.commit("refs/heads/main", files))
                .collect();
            let (state, cache) = fetched(&origin, "refs/heads/main");
            let root = TempDir::new().unwrap();
            let volume = Volume::open(&root.path().join("vol")).unwrap();
            (
                Fixture {
                    origin,
                    _state: state,
                    cache,
                    root,
                    volume,
                },
                ids,
            )
        }

        fn go(&self, from: Option<Oid>, to: Oid) -> anyhow::Result<ApplyReport> {
            let changes = self.cache.changes(from, Some(to)).unwrap();
            self.volume.apply(self.cache.repo(), &changes)
        }

        fn vol(&self) -> PathBuf {
            self.root.path().join("vol")
        }

        fn assert_holds(&self, commit: Oid) {
            assert_eq!(on_disk(&self.vol()), in_git(&self.origin.repo, commit));
        }
    }

    const SITE: &[(&str, i32, &[u8])] = &[
        ("index.html", FILE, b"<h1>hi</h1>"),
        ("bin/run", EXEC, b"#!/bin/sh\necho run\n"),
        ("assets/css/site.css", FILE, b"body{}"),
        ("latest", LINK, b"index.html"),
        ("conf", FILE, b"a file for now"),
        ("docs/a/b/c.md", FILE, b"deep"),
        ("tool", LINK, b"bin/run"),
    ];

    const SITE_V2: &[(&str, i32, &[u8])] = &[
        ("index.html", FILE, b"<h1>hello</h1>"),
        ("bin/run", FILE, b"#!/bin/sh\necho run\n"),
        ("assets/css/site.css", FILE, b"body{}"),
        ("latest", FILE, b"no longer a link"),
        ("conf/app.toml", FILE, b"now a directory"),
        ("docs", FILE, b"now a file"),
        ("tool", LINK, b"/usr/bin/env"),
        ("new/dir/file", EXEC, b"added"),
    ];

    #[test]
    fn opening_creates_the_root_but_not_its_parents() {
        let tmp = TempDir::new().unwrap();

        let volume = Volume::open(&tmp.path().join("vol")).unwrap();

        assert!(volume.is_empty().unwrap());
        assert_eq!(volume.root(), tmp.path().join("vol"));
        assert!(Volume::open(&tmp.path().join("missing/vol")).is_err());
    }

    #[test]
    fn applying_from_nothing_materialises_the_commit_exactly() {
        let (f, ids) = Fixture::new(&[SITE]);

        let report = f.go(None, ids[0]).unwrap();

        f.assert_holds(ids[0]);
        assert!(!f.volume.is_empty().unwrap());
        let bytes: usize = SITE.iter().map(|(_, _, c)| c.len()).sum();
        assert_eq!(
            report,
            ApplyReport {
                written: SITE.len(),
                deleted: 0,
                bytes: bytes as u64
            }
        );
    }

    #[test]
    fn moving_to_the_next_commit_matches_it_exactly_and_prunes_empty_directories() {
        let (f, ids) = Fixture::new(&[SITE, SITE_V2]);
        f.go(None, ids[0]).unwrap();

        f.go(Some(ids[0]), ids[1]).unwrap();

        f.assert_holds(ids[1]);
        assert!(!f.vol().join("docs/a").exists());
    }

    #[test]
    fn applying_the_same_changes_twice_gives_the_same_tree() {
        let (f, ids) = Fixture::new(&[SITE, SITE_V2]);
        f.go(None, ids[0]).unwrap();

        f.go(Some(ids[0]), ids[1]).unwrap();
        f.go(Some(ids[0]), ids[1]).unwrap();

        f.assert_holds(ids[1]);
    }

    #[test]
    fn reverse_changes_restore_the_previous_commit_exactly() {
        let (f, ids) = Fixture::new(&[SITE, SITE_V2]);
        f.go(None, ids[0]).unwrap();
        f.go(Some(ids[0]), ids[1]).unwrap();

        f.go(Some(ids[1]), ids[0]).unwrap();

        f.assert_holds(ids[0]);
    }

    #[test]
    fn reverse_changes_repair_a_half_applied_update() {
        let (f, ids) = Fixture::new(&[SITE, SITE_V2]);
        f.go(None, ids[0]).unwrap();
        // Only the deletes and the first few writes landed before a failure.
        let changes = f.cache.changes(Some(ids[0]), Some(ids[1])).unwrap();
        let first_write = changes
            .iter()
            .position(|c| matches!(c, Change::Write { .. }))
            .unwrap();
        f.volume
            .apply(f.cache.repo(), &changes[..first_write + 2])
            .unwrap();

        f.go(Some(ids[1]), ids[0]).unwrap();

        f.assert_holds(ids[0]);
    }

    #[test]
    fn replacing_a_committed_symlink_never_writes_through_it() {
        let outside = TempDir::new().unwrap();
        fs::write(outside.path().join("passwd"), "root:x:0:0").unwrap();
        let target = outside.path().join("passwd").display().to_string();
        let (f, ids) = Fixture::new(&[
            &[("data", LINK, target.as_bytes())],
            &[("data", FILE, b"mine")],
        ]);
        f.go(None, ids[0]).unwrap();
        f.assert_holds(ids[0]);

        f.go(Some(ids[0]), ids[1]).unwrap();

        f.assert_holds(ids[1]);
        assert_eq!(
            fs::read_to_string(outside.path().join("passwd")).unwrap(),
            "root:x:0:0"
        );
    }

    #[test]
    fn directory_replacing_a_committed_symlink_is_a_real_directory_and_nothing_lands_outside() {
        let outside = TempDir::new().unwrap();
        let target = outside.path().display().to_string();
        let (f, ids) = Fixture::new(&[
            &[("evil", LINK, target.as_bytes())],
            &[("evil/x.txt", FILE, b"x")],
        ]);
        f.go(None, ids[0]).unwrap();

        f.go(Some(ids[0]), ids[1]).unwrap();

        f.assert_holds(ids[1]);
        assert!(fs::symlink_metadata(f.vol().join("evil")).unwrap().is_dir());
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn writing_below_a_directory_the_container_swapped_for_a_symlink_is_refused() {
        let outside = TempDir::new().unwrap();
        let (f, ids) = Fixture::new(&[
            &[("app/index.html", FILE, b"1")],
            &[("app/index.html", FILE, b"1"), ("app/x", FILE, b"x")],
        ]);
        f.go(None, ids[0]).unwrap();
        fs::remove_dir_all(f.vol().join("app")).unwrap();
        symlink(outside.path(), f.vol().join("app")).unwrap();

        let err = f.go(Some(ids[0]), ids[1]).unwrap_err();

        let message = format!("{err:#}");
        assert!(
            message.contains("refusing to write through symlink app"),
            "{message}"
        );
        assert!(message.contains("app/x"), "{message}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn deleting_below_a_symlinked_directory_leaves_its_target_alone() {
        let outside = TempDir::new().unwrap();
        fs::write(outside.path().join("index.html"), "theirs").unwrap();
        let (f, ids) = Fixture::new(&[
            &[("app/index.html", FILE, b"1"), ("keep", FILE, b"k")],
            &[("keep", FILE, b"k")],
        ]);
        f.go(None, ids[0]).unwrap();
        fs::remove_dir_all(f.vol().join("app")).unwrap();
        symlink(outside.path(), f.vol().join("app")).unwrap();

        f.go(Some(ids[0]), ids[1]).unwrap();

        assert_eq!(
            fs::read_to_string(outside.path().join("index.html")).unwrap(),
            "theirs"
        );
    }

    #[test]
    fn files_and_directories_the_container_left_in_the_way_are_replaced() {
        let (f, ids) = Fixture::new(&[&[("conf/app.toml", FILE, b"c"), ("site", FILE, b"s")]]);
        fs::write(f.vol().join("conf"), "junk").unwrap();
        fs::create_dir_all(f.vol().join("site/cache")).unwrap();
        fs::write(f.vol().join("site/cache/x"), "junk").unwrap();

        f.go(None, ids[0]).unwrap();

        f.assert_holds(ids[0]);
    }

    #[test]
    fn paths_that_would_leave_the_volume_are_refused() {
        let (f, _) = Fixture::new(&[&[("a", FILE, b"a")]]);
        let blob = f.origin.repo.blob(b"a").unwrap();

        for bad in ["../escaped", "/tmp/escaped", "a/../../escaped", "", "."] {
            let write = [Change::Write {
                path: PathBuf::from(bad),
                oid: blob,
                mode: EntryMode::File,
            }];
            let delete = [Change::Delete {
                path: PathBuf::from(bad),
            }];
            assert!(f.volume.apply(f.cache.repo(), &write).is_err(), "{bad:?}");
            assert!(f.volume.apply(f.cache.repo(), &delete).is_err(), "{bad:?}");
        }
        assert!(!f.root.path().join("escaped").exists());
    }

    /// A volume at `<tmp>/vol`.
    fn volume() -> (TempDir, Volume) {
        let tmp = TempDir::new().unwrap();
        let volume = Volume::open(&tmp.path().join("vol")).unwrap();
        (tmp, volume)
    }

    #[test]
    fn touch_creates_a_missing_file_and_bumps_an_existing_one() {
        let (tmp, volume) = volume();
        let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);

        volume.touch(Path::new("conf/reload")).unwrap();
        let created = tmp.path().join("vol").join("conf/reload");
        assert_eq!(fs::read(&created).unwrap(), b"");
        fs::File::options()
            .write(true)
            .open(&created)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        volume.touch(Path::new("conf/reload")).unwrap();

        assert!(fs::metadata(&created).unwrap().modified().unwrap() > long_ago);
    }

    #[test]
    fn touch_refuses_a_fifo_at_once_instead_of_blocking_on_it() {
        let (tmp, volume) = volume();
        let fifo = tmp.path().join("vol").join("uwsgi.ini");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());

        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(format!(
                "{:#}",
                volume.touch(Path::new("uwsgi.ini")).unwrap_err()
            ));
        });
        let err = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("touch blocked on the FIFO");
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn touch_refuses_a_symlink_and_leaves_its_target_alone() {
        let (tmp, volume) = volume();
        let outside = TempDir::new().unwrap();
        let target = outside.path().join("victim");
        fs::write(&target, "x").unwrap();
        let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        fs::File::options()
            .write(true)
            .open(&target)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        symlink(&target, tmp.path().join("vol").join("reload")).unwrap();
        symlink(outside.path(), tmp.path().join("vol").join("conf")).unwrap();

        let err = volume.touch(Path::new("reload")).unwrap_err();
        let parent_err = volume.touch(Path::new("conf/reload")).unwrap_err();

        assert!(
            format!("{err:#}").contains("refusing to touch symlink reload"),
            "{err:#}"
        );
        assert!(
            format!("{parent_err:#}").contains("refusing to write through symlink conf"),
            "{parent_err:#}"
        );
        assert_eq!(fs::metadata(&target).unwrap().modified().unwrap(), long_ago);
        assert!(!outside.path().join("reload").exists());
    }

    #[test]
    fn leftover_temp_files_are_removed_only_where_the_changes_touch() {
        let (f, ids) = Fixture::new(&[&[("a/x", FILE, b"x"), ("b/y", FILE, b"y")]]);
        f.go(None, ids[0]).unwrap();
        fs::write(f.vol().join("a/.dockhand-tmp-0123456789abcdef"), "partial").unwrap();
        fs::write(f.vol().join("b/.dockhand-tmp-0123456789abcdef"), "partial").unwrap();
        let touching_a = [Change::Delete {
            path: PathBuf::from("a/x"),
        }];

        let removed = f.volume.remove_temp_files(&touching_a, |_| false).unwrap();

        assert_eq!(removed, 1);
        assert!(!f.vol().join("a/.dockhand-tmp-0123456789abcdef").exists());
        assert!(f.vol().join("b/.dockhand-tmp-0123456789abcdef").exists());
    }

    #[test]
    fn a_tracked_file_named_like_a_temp_file_is_never_removed_as_a_leftover() {
        let (f, ids) = Fixture::new(&[&[
            ("a/x", FILE, b"x"),
            ("a/.dockhand-tmp-notes", FILE, b"mine"),
            ("a/.dockhand-tmp-00000000deadbeef", FILE, b"mine too"),
        ]]);
        f.go(None, ids[0]).unwrap();
        fs::write(f.vol().join("a/.dockhand-tmp-0123456789abcdef"), "partial").unwrap();
        let touching_a = [Change::Delete {
            path: PathBuf::from("a/x"),
        }];
        let tracked = |p: &Path| p == Path::new("a/.dockhand-tmp-00000000deadbeef");

        let removed = f.volume.remove_temp_files(&touching_a, tracked).unwrap();

        assert_eq!(removed, 1);
        assert!(!f.vol().join("a/.dockhand-tmp-0123456789abcdef").exists());
        assert!(f.vol().join("a/.dockhand-tmp-notes").exists());
        assert!(f.vol().join("a/.dockhand-tmp-00000000deadbeef").exists());
    }
}
