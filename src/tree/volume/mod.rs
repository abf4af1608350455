//! The host directory a container mounts, updated in place in O(changed files).
//!
//! Every operation goes through a directory handle (cap-std) and opens each parent without
//! following symlinks, so no write can land outside the volume, and nothing is ever written
//! *through* a symlink (SECURITY.md 20).
//!
//! Layout: this file holds `Volume` and `apply` (deletes, then writes); `walk` opens each parent
//! directory without following a symlink (the one way in to any path); `temp` names, writes and
//! cleans up the temp files a write renames into place; `touch` bumps an mtime for a reload.

mod temp;
mod touch;
mod walk;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::git::{Cache, Change, EntryMode, Oid};
pub(crate) use temp::random;
pub use temp::TEMP_PREFIX;
use temp::{create_temp, write_new_file, write_temp_file};
use walk::{split, Opened, Walk};

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
    /// Nothing reads the tree yet: a file not there yet is created under its own name.
    unseen: bool,
}

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
            unseen: false,
        })
    }

    /// A volume on a directory already opened (without following symlinks) by the caller;
    /// `root` is its path, for messages.
    pub fn from_dir(root: PathBuf, dir: Dir) -> Volume {
        Volume {
            root,
            dir,
            unseen: false,
        }
    }

    /// This volume as one nothing reads yet (a first deploy's empty volume, a release being
    /// built, a trial's stage): `apply` creates a file that is not there yet under its own
    /// name, without a temp name and a rename (a third of a 20,000-file first deploy's
    /// metadata writes). A file already there is still replaced through a temp name. After a
    /// crash a half-written file is under its own name; putting the previous tree back (the
    /// empty one) removes it as it removes every path of the commit.
    pub fn unseen(self) -> Volume {
        Volume {
            unseen: true,
            ..self
        }
    }

    /// Another handle on the same directory (an `unseen` view of a volume kept open).
    pub fn try_clone(&self) -> anyhow::Result<Volume> {
        let dir = self
            .dir
            .try_clone()
            .with_context(|| format!("reopening volume {}", self.root.display()))?;
        Ok(Volume {
            root: self.root.clone(),
            dir,
            unseen: self.unseen,
        })
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
    pub fn apply(&self, cache: &Cache, changes: &[Change]) -> anyhow::Result<ApplyReport> {
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
        let mut opened = Opened::default();
        for change in changes {
            if let Change::Write { path, oid, mode } = change {
                report.bytes += self
                    .write(cache, &mut opened, path, *oid, *mode)
                    .with_context(|| format!("writing {}", path.display()))?;
                report.written += 1;
            }
        }
        Ok(report)
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
    /// number of bytes written. A big file is streamed from the cache, never held whole.
    fn write(
        &self,
        cache: &Cache,
        opened: &mut Opened,
        path: &Path,
        oid: Oid,
        mode: EntryMode,
    ) -> anyhow::Result<u64> {
        let (parents, name) = split(path)?;
        let reused = opened.take_prefix(&parents);
        let stack = self
            .walk_on(reused, &parents, path, Walk::Write)?
            .unwrap_or_default();
        let written = self.write_in(cache, stack.last().unwrap_or(&self.dir), name, oid, mode)?;
        opened.keep(&parents, stack);
        Ok(written)
    }

    /// [`Volume::write`] once the parent directory is open.
    fn write_in(
        &self,
        cache: &Cache,
        dir: &Dir,
        name: &OsStr,
        oid: Oid,
        mode: EntryMode,
    ) -> anyhow::Result<u64> {
        let perms = if mode == EntryMode::Executable {
            0o755
        } else {
            0o644
        };
        if self.unseen && mode != EntryMode::Symlink {
            if let Some(n) = write_new_file(dir, name, perms, |file| cache.copy_blob(oid, file))? {
                return Ok(n);
            }
        }
        if dir.symlink_metadata(name).is_ok_and(|m| m.is_dir()) {
            dir.remove_dir_all(name)
                .context("removing the directory in the way")?;
        }
        let (temp, written) = match mode {
            EntryMode::File | EntryMode::Executable => {
                write_temp_file(dir, perms, |file| cache.copy_blob(oid, file))?
            }
            EntryMode::Symlink => {
                let blob = cache
                    .repo()
                    .find_blob(oid)
                    .with_context(|| format!("reading blob {oid}"))?;
                // The target is taken literally; it may point anywhere, as nothing is ever
                // written through a symlink.
                let target = OsStr::from_bytes(blob.content());
                let temp = create_temp(|temp| dir.symlink_contents(target, temp))
                    .context("creating the symlink")?;
                (temp, blob.content().len() as u64)
            }
        };
        if let Err(e) = dir.rename(&temp, dir, name) {
            let _ = dir.remove_file(&temp);
            return Err(e).context("renaming the temp file into place");
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::{Path, PathBuf};

    use tempfile::TempDir;

    use super::*;
    use crate::git::tests::{fetched, Origin, EXEC, FILE, LINK};
    use crate::git::Cache;

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
    pub(super) struct Fixture {
        origin: Origin,
        _state: TempDir,
        cache: Cache,
        root: TempDir,
        pub(super) volume: Volume,
    }

    impl Fixture {
        /// `commits` are committed on main in order; returns their ids.
        pub(super) fn new(commits: &[&[(&str, i32, &[u8])]]) -> (Fixture, Vec<Oid>) {
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

        pub(super) fn go(&self, from: Option<Oid>, to: Oid) -> anyhow::Result<ApplyReport> {
            let changes = self.cache.changes(from, Some(to)).unwrap();
            self.volume.apply(&self.cache, &changes)
        }

        pub(super) fn vol(&self) -> PathBuf {
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
    fn an_unseen_volume_creates_new_files_in_place_and_never_writes_through_a_hard_link() {
        let (f, ids) = Fixture::new(&[SITE, SITE_V2]);
        let vol = f.root.path().join("vol");
        // A release being built: hard links to the previous release's files.
        let outside = f.root.path().join("previous-index.html");
        fs::write(&outside, b"<h1>previous</h1>").unwrap();
        fs::hard_link(&outside, vol.join("index.html")).unwrap();
        let changes = f.cache.changes(None, Some(ids[0])).unwrap();
        let unseen = Volume::open(&vol).unwrap().unseen();

        unseen.apply(&f.cache, &changes).unwrap();

        f.assert_holds(ids[0]);
        assert_eq!(fs::read(&outside).unwrap(), b"<h1>previous</h1>");
        let mode = fs::metadata(vol.join("bin/run"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let mode = fs::metadata(vol.join("conf")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        unseen.apply(&f.cache, &changes).unwrap();
        f.assert_holds(ids[0]);
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
            .apply(&f.cache, &changes[..first_write + 2])
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
            assert!(f.volume.apply(&f.cache, &write).is_err(), "{bad:?}");
            assert!(f.volume.apply(&f.cache, &delete).is_err(), "{bad:?}");
        }
        assert!(!f.root.path().join("escaped").exists());
    }
}
