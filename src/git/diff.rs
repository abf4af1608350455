//! The changes between two trees, and the path safety every deployed path passes.
//!
//! The walk opens only subtrees whose ids differ, so its cost follows the size of the change,
//! not of the trees. It keeps its own stack of directories, never the thread's: a crafted tree
//! is refused past [`MAX_TREE_DEPTH`] levels or [`MAX_PATH_BYTES`] of path, and a path with a
//! `..`, `.git`, empty or absolute component, or an entry name holding a `/`, is an error
//! naming it, never a change. Deletes come before writes, so a file can become a directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Context};

use super::{Cache, Oid};

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

impl Change {
    /// The path written or removed.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Change::Write { path, .. } | Change::Delete { path } => path,
        }
    }
}

/// What turns one tree into another, and what that leaves out.
#[derive(Debug, Default)]
pub struct Diff {
    pub changes: Vec<Change>,
    /// Submodules (gitlinks) the new tree adds or moves to another commit: their content is
    /// not deployed.
    pub submodules: Vec<PathBuf>,
    /// Written files that are Git LFS pointers: deployed as the pointer text, not the content.
    pub lfs_pointers: Vec<PathBuf>,
}

/// Deepest directory nesting a deployed tree may have. git's porcelain refuses trees deeper
/// than 4096 (`core.maxTreeDepth`); real repositories stay far below this, and Linux refuses
/// paths over 4096 bytes anyway.
pub const MAX_TREE_DEPTH: usize = 1024;

/// Longest path in a tree dockhand deploys, in bytes: Linux's `PATH_MAX`. It bounds what each
/// entry costs (every level joins and checks its whole path) whatever a crafted tree names.
pub const MAX_PATH_BYTES: usize = 4096;

impl Cache {
    /// The paths that differ between the trees of two commits (`None` = the empty tree), as the
    /// changes that turn a directory holding `from` into one holding `to`. Deletes come first.
    /// Every path is relative and checked: a `..`, absolute, empty or `.git` component is an error
    /// naming the path. Submodule entries (gitlinks) are skipped.
    ///
    /// Subtrees with the same id on both sides are never opened, so the cost follows the size of
    /// the change, not of the trees. (libgit2's `diff_tree_to_tree` walks both trees in full.)
    pub fn changes(&self, from: Option<Oid>, to: Option<Oid>) -> anyhow::Result<Vec<Change>> {
        Ok(self.diff(from, to)?.changes)
    }

    /// [`Cache::changes`], and what they leave out: the submodules (gitlinks) that `to` adds
    /// or moves, and the written files that are Git LFS pointers (deployed as pointer text).
    pub fn diff(&self, from: Option<Oid>, to: Option<Oid>) -> anyhow::Result<Diff> {
        let old = from.map(|id| self.tree_of(id)).transpose()?;
        let new = to.map(|id| self.tree_of(id)).transpose()?;
        let mut diff = TreeDiff::default();
        diff.trees(&self.repo, old.as_ref(), new.as_ref(), &[])?;
        let mut changes = diff.deletes;
        changes.append(&mut diff.writes);
        // Only a tree whose .gitattributes routes files through LFS can hold pointers; the
        // blobs are read only then, and only the small ones (a pointer is ~130 bytes).
        let uses_lfs = new
            .as_ref()
            .and_then(|t| t.get_name(".gitattributes"))
            .and_then(|e| self.repo.find_blob(e.id()).ok())
            .is_some_and(|b| String::from_utf8_lossy(b.content()).contains("filter=lfs"));
        let mut lfs_pointers = Vec::new();
        if uses_lfs {
            let odb = self.repo.odb()?;
            for c in &changes {
                if let Change::Write { path, oid, .. } = c {
                    let small = odb.read_header(*oid).is_ok_and(|(size, _)| size < 1024);
                    if small
                        && odb
                            .read(*oid)
                            .is_ok_and(|o| o.data().starts_with(LFS_POINTER))
                    {
                        lfs_pointers.push(path.clone());
                    }
                }
            }
        }
        Ok(Diff {
            changes,
            submodules: diff.gitlinks.iter().map(|p| to_path(p)).collect(),
            lfs_pointers,
        })
    }

    /// Bytes of blob content `changes` write (each write counted, shared blobs too): read
    /// from object headers, no content inflated.
    pub fn written_bytes(&self, changes: &[Change]) -> anyhow::Result<u64> {
        let odb = self.repo.odb()?;
        let mut total = 0u64;
        for c in changes {
            if let Change::Write { oid, path, .. } = c {
                let (size, _) = odb
                    .read_header(*oid)
                    .with_context(|| format!("reading the size of {}", path.display()))?;
                total = total.saturating_add(size as u64);
            }
        }
        Ok(total)
    }

    fn tree_of(&self, id: Oid) -> anyhow::Result<git2::Tree<'_>> {
        self.repo
            .find_object(id, None)
            .and_then(|o| o.peel_to_tree())
            .with_context(|| format!("reading the tree of {id}"))
    }
}

const MODE_TREE: i32 = 0o040000;
const MODE_EXECUTABLE: i32 = 0o100755;
const MODE_SYMLINK: i32 = 0o120000;
const MODE_GITLINK: i32 = 0o160000;

/// One side of a tree entry: what `changes` needs of it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Entry {
    oid: Oid,
    mode: i32,
}

impl Entry {
    fn is_tree(self) -> bool {
        self.mode == MODE_TREE
    }

    fn is_blob(self) -> bool {
        self.mode != MODE_TREE && self.mode != MODE_GITLINK
    }
}

/// Collects the changes of a recursive tree comparison.
#[derive(Default)]
struct TreeDiff {
    deletes: Vec<Change>,
    writes: Vec<Change>,
    /// Submodule entries the new tree adds or moves: never deployed.
    gitlinks: Vec<Vec<u8>>,
}

/// How every Git LFS pointer file starts (the LFS spec, v1).
const LFS_POINTER: &[u8] = b"version https://git-lfs.github.com/spec/v1\n";

/// One directory's differing entries, next first: `(path, old, new)`.
type Level = Vec<(Vec<u8>, Option<Entry>, Option<Entry>)>;

impl TreeDiff {
    /// Compare two trees, opening only subtrees whose ids differ. Depth first in name order,
    /// with an explicit stack of directories: a crafted tree nesting thousands of directories
    /// costs heap, not the thread's stack (and is refused past [`MAX_TREE_DEPTH`]).
    fn trees(
        &mut self,
        repo: &git2::Repository,
        old: Option<&git2::Tree<'_>>,
        new: Option<&git2::Tree<'_>>,
        prefix: &[u8],
    ) -> anyhow::Result<()> {
        let mut stack = vec![level(old, new, prefix)?];
        while let Some(frame) = stack.last_mut() {
            let Some((path, o, n)) = frame.pop() else {
                stack.pop();
                continue;
            };
            check_path(&path)?;
            match (o, n) {
                (Some(o), Some(n)) if o.is_tree() && n.is_tree() => {
                    let (ot, nt) = (
                        find_tree(repo, o.oid, &path)?,
                        find_tree(repo, n.oid, &path)?,
                    );
                    stack.push(level(Some(&ot), Some(&nt), &path)?);
                }
                // A blob replaced by a blob (content, exec bit, file/symlink): one write
                // renames over it.
                (Some(o), Some(n)) if o.is_blob() && n.is_blob() => self.added(n, &path),
                _ => {
                    if let Some(o) = o {
                        match o.mode {
                            MODE_TREE => {
                                let tree = find_tree(repo, o.oid, &path)?;
                                stack.push(level(Some(&tree), None, &path)?);
                            }
                            MODE_GITLINK => {}
                            _ => self.deletes.push(Change::Delete {
                                path: to_path(&path),
                            }),
                        }
                    }
                    if let Some(n) = n {
                        match n.mode {
                            MODE_TREE => {
                                let tree = find_tree(repo, n.oid, &path)?;
                                stack.push(level(None, Some(&tree), &path)?);
                            }
                            MODE_GITLINK => self.gitlinks.push(path),
                            _ => self.added(n, &path),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A blob (file, executable or symlink) to write at `path`.
    fn added(&mut self, e: Entry, path: &[u8]) {
        let mode = match e.mode {
            MODE_EXECUTABLE => EntryMode::Executable,
            MODE_SYMLINK => EntryMode::Symlink,
            _ => EntryMode::File,
        };
        self.writes.push(Change::Write {
            path: to_path(path),
            oid: e.oid,
            mode,
        });
    }
}

/// The entries that differ between `old` and `new` at `prefix`, in name order (next last).
fn level(
    old: Option<&git2::Tree<'_>>,
    new: Option<&git2::Tree<'_>>,
    prefix: &[u8],
) -> anyhow::Result<Level> {
    let depth = prefix.iter().filter(|&&b| b == b'/').count() + 1;
    if !prefix.is_empty() && depth > MAX_TREE_DEPTH {
        bail!(
            "the tree nests more than {MAX_TREE_DEPTH} directories (at {:?}…); refusing it (git itself refuses such trees)",
            String::from_utf8_lossy(&prefix[..prefix.len().min(64)])
        );
    }
    let old = entries(old, prefix)?;
    let new = entries(new, prefix)?;
    let names: BTreeSet<&Vec<u8>> = old.keys().chain(new.keys()).collect();
    let mut level = Level::new();
    for name in names {
        let (o, n) = (old.get(name).copied(), new.get(name).copied());
        if o == n {
            continue;
        }
        let slash = usize::from(!prefix.is_empty());
        if prefix.len() + slash + name.len() > MAX_PATH_BYTES {
            bail!(
                "a tree path at {:?}… is longer than {MAX_PATH_BYTES} bytes; refusing it (Linux's PATH_MAX)",
                String::from_utf8_lossy(&prefix[..prefix.len().min(64)])
            );
        }
        level.push((join(prefix, name), o, n));
    }
    level.reverse();
    Ok(level)
}

/// The entries of a tree by name. A crafted tree may repeat a name, or put a `/` in one (libgit2
/// reads both); either is refused, since two entries would then name one path and which one
/// wins would be undefined (`a/b` as a name beside a subtree `a` holding `b`).
fn entries(
    tree: Option<&git2::Tree<'_>>,
    prefix: &[u8],
) -> anyhow::Result<BTreeMap<Vec<u8>, Entry>> {
    let mut map = BTreeMap::new();
    for entry in tree.into_iter().flat_map(|t| t.iter()) {
        let name = entry.name_bytes().to_vec();
        if name.contains(&b'/') {
            let path = join(prefix, &name);
            bail!(
                "tree entry {:?} has a '/' in its name",
                String::from_utf8_lossy(&path)
            );
        }
        let e = Entry {
            oid: entry.id(),
            mode: entry.filemode(),
        };
        if map.insert(name, e).is_some() {
            let path = join(prefix, entry.name_bytes());
            bail!(
                "tree entry {} appears twice",
                String::from_utf8_lossy(&path)
            );
        }
    }
    Ok(map)
}

fn find_tree<'r>(
    repo: &'r git2::Repository,
    oid: Oid,
    path: &[u8],
) -> anyhow::Result<git2::Tree<'r>> {
    repo.find_tree(oid)
        .with_context(|| format!("reading tree {oid} at {}", String::from_utf8_lossy(path)))
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    if prefix.is_empty() {
        return name.to_vec();
    }
    let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
    path.extend_from_slice(prefix);
    path.push(b'/');
    path.extend_from_slice(name);
    path
}

fn to_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
}

/// Refuse a path that could leave the volume or plant git metadata in it.
pub(super) fn check_path(path: &[u8]) -> anyhow::Result<()> {
    let bad = path.is_empty()
        || path.contains(&0)
        || path.split(|&b| b == b'/').any(|c| {
            // `.git` also with the trailing dots and spaces some filesystems drop.
            let end = c
                .iter()
                .rposition(|&b| b != b'.' && b != b' ')
                .map_or(0, |i| i + 1);
            let trimmed = &c[..end];
            c.is_empty() || c == b"." || c == b".." || trimmed.eq_ignore_ascii_case(b".git")
        });
    if bad {
        bail!(
            "refusing unsafe path {:?} in the tree",
            String::from_utf8_lossy(path)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use git2::Oid;

    use super::*;
    use crate::git::test_support::{fetched, nested_dirs, raw_tree, Origin, EXEC, FILE, LINK};

    fn path(p: &str) -> PathBuf {
        PathBuf::from(p)
    }

    fn write(p: &str, oid: Oid, mode: EntryMode) -> Change {
        Change::Write {
            path: path(p),
            oid,
            mode,
        }
    }

    fn delete(p: &str) -> Change {
        Change::Delete { path: path(p) }
    }

    fn blob(origin: &Origin, content: &[u8]) -> Oid {
        origin.repo.blob(content).unwrap()
    }

    #[test]
    fn a_tree_nesting_thousands_of_directories_is_refused_not_a_stack_overflow() {
        let origin = Origin::new();
        let repo = &origin.repo;
        let tree = nested_dirs(repo, 5000);
        let tip = origin.commit_tree("refs/heads/main", tree, "deep");
        let (_state, cache) = fetched(&origin, "refs/heads/main");
        // Run where a deploy runs: a thread with the default 2 MiB stack.
        let err = std::thread::spawn(move || cache.changes(None, Some(tip)).map(|c| c.len()))
            .join()
            .expect("the diff must not overflow its stack");
        let err = format!("{:#}", err.unwrap_err());
        assert!(err.contains("more than 1024 directories"), "{err}");
    }

    #[test]
    fn a_tree_path_longer_than_path_max_is_refused_and_one_at_the_limit_deploys() {
        // Seen profiling fuzz/fuzz_targets/tree_diff.rs: every level joins and checks its whole
        // path, so long names nested deep cost depth² × name bytes, and a wide directory at the
        // bottom one path each (1,000 levels of 64 KiB names: gigabytes per entry).
        let origin = Origin::new();
        let repo = &origin.repo;
        let file = blob(&origin, b"x");
        let nested = |levels: usize, name_len: usize| {
            let mut b = repo.treebuilder(None).unwrap();
            b.insert("f", file, 0o100644).unwrap();
            let mut tree = b.write().unwrap();
            for i in 0..levels {
                let name = format!("{i:0>name_len$}");
                let mut b = repo.treebuilder(None).unwrap();
                b.insert(name, tree, 0o040000).unwrap();
                tree = b.write().unwrap();
            }
            tree
        };
        // 16 directories of 253 bytes, a slash each, and `f`: 4,065 bytes.
        let fits = origin.commit_tree("refs/heads/main", nested(16, 253), "at the limit");
        // One more: 4,319 bytes.
        let long = origin.commit_tree("refs/heads/main", nested(17, 253), "past it");
        let (_state, cache) = fetched(&origin, "refs/heads/main");

        let changes = cache.changes(None, Some(fits)).unwrap();
        assert!(
            matches!(&changes[..], [Change::Write { path, .. }] if path.as_os_str().len() == 4065)
        );
        let err = format!("{:#}", cache.changes(Some(fits), Some(long)).unwrap_err());
        assert!(err.contains("longer than 4096 bytes"), "{err}");
    }

    #[test]
    fn changes_from_nothing_export_every_file_with_its_mode() {
        let origin = Origin::new();
        let tip = origin.commit(
            "refs/heads/main",
            &[
                ("index.html", FILE, b"hi"),
                ("bin/run", EXEC, b"#!/bin/sh\n"),
                ("docs/latest", LINK, b"../index.html"),
            ],
        );
        let (_state, cache) = fetched(&origin, "refs/heads/main");

        let changes = cache.changes(None, Some(tip)).unwrap();

        assert_eq!(
            changes,
            vec![
                write(
                    "bin/run",
                    blob(&origin, b"#!/bin/sh\n"),
                    EntryMode::Executable
                ),
                write(
                    "docs/latest",
                    blob(&origin, b"../index.html"),
                    EntryMode::Symlink
                ),
                write("index.html", blob(&origin, b"hi"), EntryMode::File),
            ]
        );
    }

    #[test]
    fn identical_commits_have_no_changes() {
        let origin = Origin::new();
        let first = origin.commit("refs/heads/main", &[("a/b/c", FILE, b"1")]);
        let second = origin.commit("refs/heads/main", &[("a/b/c", FILE, b"1")]);
        let (_state, cache) = fetched(&origin, "refs/heads/main");

        assert_ne!(first, second);
        assert_eq!(cache.changes(Some(first), Some(second)).unwrap(), vec![]);
        assert_eq!(cache.changes(None, None).unwrap(), vec![]);
    }

    #[test]
    fn changes_list_adds_edits_deletes_and_renames_with_deletes_first() {
        let origin = Origin::new();
        let from = origin.commit(
            "refs/heads/main",
            &[
                ("keep", FILE, b"same"),
                ("edit", FILE, b"old"),
                ("gone", FILE, b"x"),
                ("old/name", FILE, b"moved"),
            ],
        );
        let to = origin.commit(
            "refs/heads/main",
            &[
                ("keep", FILE, b"same"),
                ("edit", FILE, b"new"),
                ("added", FILE, b"+"),
                ("new/name", FILE, b"moved"),
            ],
        );
        let (_state, cache) = fetched(&origin, "refs/heads/main");

        let changes = cache.changes(Some(from), Some(to)).unwrap();

        assert_eq!(
            changes,
            vec![
                delete("gone"),
                delete("old/name"),
                write("added", blob(&origin, b"+"), EntryMode::File),
                write("edit", blob(&origin, b"new"), EntryMode::File),
                write("new/name", blob(&origin, b"moved"), EntryMode::File),
            ]
        );
    }

    #[test]
    fn exec_bit_flip_and_file_to_symlink_are_writes() {
        let origin = Origin::new();
        let from = origin.commit(
            "refs/heads/main",
            &[("run", FILE, b"x"), ("link", FILE, b"target")],
        );
        let to = origin.commit(
            "refs/heads/main",
            &[("run", EXEC, b"x"), ("link", LINK, b"target")],
        );
        let (_state, cache) = fetched(&origin, "refs/heads/main");

        let changes = cache.changes(Some(from), Some(to)).unwrap();

        assert_eq!(
            changes,
            vec![
                write("link", blob(&origin, b"target"), EntryMode::Symlink),
                write("run", blob(&origin, b"x"), EntryMode::Executable),
            ]
        );
    }

    #[test]
    fn file_becoming_a_directory_and_back_deletes_before_writing() {
        let origin = Origin::new();
        let file = origin.commit("refs/heads/main", &[("conf", FILE, b"x")]);
        let dir = origin.commit(
            "refs/heads/main",
            &[("conf/a", FILE, b"a"), ("conf/b/c", FILE, b"c")],
        );
        let (_state, cache) = fetched(&origin, "refs/heads/main");

        assert_eq!(
            cache.changes(Some(file), Some(dir)).unwrap(),
            vec![
                delete("conf"),
                write("conf/a", blob(&origin, b"a"), EntryMode::File),
                write("conf/b/c", blob(&origin, b"c"), EntryMode::File),
            ]
        );
        assert_eq!(
            cache.changes(Some(dir), Some(file)).unwrap(),
            vec![
                delete("conf/a"),
                delete("conf/b/c"),
                write("conf", blob(&origin, b"x"), EntryMode::File)
            ]
        );
    }

    #[test]
    fn submodule_entries_are_skipped() {
        let origin = Origin::new();
        let file = blob(&origin, b"x");
        let elsewhere = Oid::from_str("1234567890123456789012345678901234567890").unwrap();
        let tree = raw_tree(
            &origin.repo,
            &[("100644", b"a", file), ("160000", b"vendor", elsewhere)],
        );
        let tip = origin.commit_tree("refs/heads/main", tree, "with a submodule");
        let (_state, cache) = fetched(&origin, "refs/heads/main");

        assert_eq!(
            cache.changes(None, Some(tip)).unwrap(),
            vec![write("a", file, EntryMode::File)]
        );
    }

    #[test]
    fn a_tree_entry_whose_name_holds_a_slash_is_refused_not_deployed_as_a_path() {
        // Found by fuzz/fuzz_targets/tree_diff.rs: `a/b` as one entry's name and as a file in
        // the subtree `a` are one path; the diff wrote whichever entry it met.
        let origin = Origin::new();
        let (x, y) = (blob(&origin, b"x"), blob(&origin, b"y"));
        let sub = raw_tree(&origin.repo, &[("100644", b"b", x)]);
        let before = raw_tree(&origin.repo, &[("40000", b"a", sub)]);
        let after = raw_tree(&origin.repo, &[("40000", b"a", sub), ("100644", b"a/b", y)]);
        let from = origin.commit_tree("refs/heads/main", before, "a/b as a path");
        let to = origin.commit_tree("refs/heads/main", after, "and as a name");
        let (_state, cache) = fetched(&origin, "refs/heads/main");

        for (from, to) in [
            (Some(from), Some(to)),
            (None, Some(to)),
            (Some(to), Some(from)),
        ] {
            let err = cache.changes(from, to).unwrap_err();
            assert!(format!("{err:#}").contains("\"a/b\""), "{err:#}");
        }
    }

    #[test]
    fn crafted_trees_with_dot_dot_or_dot_git_entries_are_refused_naming_the_path() {
        let origin = Origin::new();
        let file = blob(&origin, b"#!/bin/sh\nrm -rf /\n");
        let cases: [(&[u8], &str); 5] = [
            (b"..", "sub/../hook"),
            (b".git", "sub/.git/hook"),
            (b".GIT", "sub/.GIT/hook"),
            (b".git. ", "sub/.git. /hook"),
            (b".", "sub/./hook"),
        ];
        for (name, shown) in cases {
            let inner = raw_tree(&origin.repo, &[("100755", b"hook", file)]);
            let middle = raw_tree(&origin.repo, &[("40000", name, inner)]);
            let outer = raw_tree(&origin.repo, &[("40000", b"sub", middle)]);
            let tip = origin.commit_tree("refs/heads/main", outer, "crafted");
            let (_state, cache) = fetched(&origin, "refs/heads/main");

            let err = cache.changes(None, Some(tip)).unwrap_err();

            let shown = shown.rsplit_once('/').unwrap().0;
            assert!(format!("{err:#}").contains(shown), "{shown}: {err:#}");
        }
    }
}
