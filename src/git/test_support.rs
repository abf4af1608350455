//! What the git tests share (and src/volume.rs's, through `crate::git::tests`): origin
//! repositories on disk that tests commit into, trees written byte by byte where libgit2 would
//! refuse them, and caches fetched from such origins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{ObjectType, Oid, Repository, Signature};
use tempfile::TempDir;

use super::{Access, Cache, FetchLimits};

pub(crate) const FILE: i32 = 0o100644;
pub(crate) const EXEC: i32 = 0o100755;
pub(crate) const LINK: i32 = 0o120000;

/// An origin repository on disk that tests commit into.
pub(crate) struct Origin {
    pub(crate) dir: TempDir,
    pub(crate) repo: Repository,
}

impl Origin {
    pub(crate) fn new() -> Origin {
        let dir = TempDir::new().unwrap();
        let repo = Repository::init_bare(dir.path().join("origin.git")).unwrap();
        Origin { dir, repo }
    }

    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join("origin.git")
    }

    pub(crate) fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Put every object in one pack, as a server's `git gc` does (`git repack -a -d`).
    pub(crate) fn repack(&self) {
        let status = std::process::Command::new("git")
            .args(["repack", "-a", "-d", "-q"])
            .current_dir(self.path())
            .status()
            .unwrap();
        assert!(status.success(), "git repack failed in the origin");
    }

    /// Commit exactly `files` (path, mode, content; a symlink's content is its target) on
    /// `refname`, on top of its current tip.
    pub(crate) fn commit(&self, refname: &str, files: &[(&str, i32, &[u8])]) -> Oid {
        let tree = self.tree(files);
        self.commit_tree(refname, tree, "a commit\n\nwith a body\n")
    }

    pub(crate) fn commit_tree(&self, refname: &str, tree: Oid, message: &str) -> Oid {
        let sig = Signature::now("Ada Lovelace", "ada@example.com").unwrap();
        let tree = self.repo.find_tree(tree).unwrap();
        let parent = self.repo.refname_to_id(refname).ok();
        let parent = parent.map(|id| self.repo.find_commit(id).unwrap());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(Some(refname), &sig, &sig, message, &tree, &parents)
            .unwrap()
    }

    pub(crate) fn tree(&self, files: &[(&str, i32, &[u8])]) -> Oid {
        let entries: Vec<Spec<'_>> = files
            .iter()
            .map(|&(p, m, c)| (p.split('/').collect(), m, c))
            .collect();
        build_tree(&self.repo, &entries)
    }

    /// An annotated tag `refs/tags/<name>` pointing at `target`.
    pub(crate) fn tag(&self, name: &str, target: Oid) -> Oid {
        let sig = Signature::now("Ada Lovelace", "ada@example.com").unwrap();
        let object = self.repo.find_object(target, None).unwrap();
        self.repo.tag(name, &object, &sig, "release", true).unwrap()
    }
}

/// Path components, mode and content of one file to commit.
type Spec<'a> = (Vec<&'a str>, i32, &'a [u8]);

fn build_tree(repo: &Repository, entries: &[Spec<'_>]) -> Oid {
    let mut children: BTreeMap<&str, Vec<Spec<'_>>> = BTreeMap::new();
    let mut builder = repo.treebuilder(None).unwrap();
    for (components, mode, content) in entries {
        if let [name] = components.as_slice() {
            let blob = repo.blob(content).unwrap();
            builder.insert(name, blob, *mode).unwrap();
        } else {
            children.entry(components[0]).or_default().push((
                components[1..].to_vec(),
                *mode,
                content,
            ));
        }
    }
    for (name, entries) in children {
        let subtree = build_tree(repo, &entries);
        builder.insert(name, subtree, 0o040000).unwrap();
    }
    builder.write().unwrap()
}

/// A tree object written byte by byte, so it can hold names libgit2 would refuse.
pub(crate) fn raw_tree(repo: &Repository, entries: &[(&str, &[u8], Oid)]) -> Oid {
    let mut bytes = Vec::new();
    for (mode, name, oid) in entries {
        bytes.extend_from_slice(mode.as_bytes());
        bytes.push(b' ');
        bytes.extend_from_slice(name);
        bytes.push(0);
        bytes.extend_from_slice(oid.as_bytes());
    }
    repo.odb().unwrap().write(ObjectType::Tree, &bytes).unwrap()
}

pub(crate) fn limits() -> FetchLimits {
    FetchLimits {
        timeout: Duration::from_secs(60),
        max_bytes: 100 << 20,
    }
}

pub(crate) fn cache_in(dir: &Path) -> Cache {
    Cache::open_or_init(&dir.join("state/apps/web.git")).unwrap()
}

/// A cache holding `refname` of `origin`, fetched.
pub(crate) fn fetched(origin: &Origin, refname: &str) -> (TempDir, Cache) {
    let state = TempDir::new().unwrap();
    let cache = cache_in(state.path());
    cache
        .fetch(
            &origin.url(),
            &[refname.to_owned()],
            &Access::default(),
            &limits(),
        )
        .unwrap();
    (state, cache)
}

/// An origin with `main`, `other`, a lightweight tag `v1` and an annotated tag `v2`; the
/// refs `remote_tips` should report for `refs/heads/main` and `refs/tags/`.
pub(crate) fn tagged_origin() -> (Origin, BTreeMap<String, Oid>) {
    let origin = Origin::new();
    let first = origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
    let tip = origin.commit("refs/heads/main", &[("a", FILE, b"2")]);
    origin.commit("refs/heads/other", &[("b", FILE, b"3")]);
    origin
        .repo
        .reference("refs/tags/v1", first, false, "")
        .unwrap();
    origin.tag("v2", tip);
    let want = BTreeMap::from([
        ("refs/heads/main".to_owned(), tip),
        ("refs/tags/v1".to_owned(), first),
        ("refs/tags/v2".to_owned(), tip),
    ]);
    (origin, want)
}

pub(crate) fn listed() -> Vec<String> {
    vec!["refs/heads/main".to_owned(), "refs/tags/".to_owned()]
}

/// A tree of `levels` directories `d/d/…/d` around one file `f`.
pub(crate) fn nested_dirs(repo: &Repository, levels: usize) -> Oid {
    let blob = repo.blob(b"deep\n").unwrap();
    let mut b = repo.treebuilder(None).unwrap();
    b.insert("f", blob, 0o100644).unwrap();
    let mut tree = b.write().unwrap();
    for _ in 0..levels {
        let mut b = repo.treebuilder(None).unwrap();
        b.insert("d", tree, 0o040000).unwrap();
        tree = b.write().unwrap();
    }
    tree
}
