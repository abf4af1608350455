//! Fetching from an origin on this host (a path or `file://` URL): its object files or objects
//! are copied straight into the cache, with no pack built in between.
//!
//! The first fetch copies the origin's object files (packs with their index, loose objects),
//! as `git clone --local` does; later ones copy only the objects the cache lacks, an object the
//! origin holds loose as its file (hard-linked where allowed). Either way a
//! ref is pointed at a tip only once everything it reaches is in the cache, and single objects
//! are written below-first (blobs and subtrees before their tree, the tree before its commit,
//! parents before children), so an object present in the cache always has everything below it,
//! even after a crash mid-copy. Every copy counts against the fetch's size cap and timeout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use super::fetch::Abort;
use super::{files_with_extension, Cache, FetchLimits, MissingRef, Oid, STREAM_ABOVE};

impl Cache {
    /// The first fetch from a repository on this host: copy its object files (packs with their
    /// index, loose objects), bounded by the size cap and the timeout, then point `refs` at the
    /// origin's tips. An origin with alternates (objects kept elsewhere) is copied object by
    /// object instead.
    pub(super) fn clone_local(
        &self,
        origin: &Path,
        refs: &[String],
        limits: &FetchLimits,
        shown: &str,
    ) -> anyhow::Result<()> {
        let src = open_origin(origin, shown)?;
        let from = src.path().join("objects");
        if from.join("info/alternates").exists() {
            return self.fetch_local(origin, refs, limits, shown);
        }
        // The tips first: whatever they reach was written before them.
        let tips = origin_tips(&src, refs, shown)?;
        let files = object_files(&from)?;
        let start = Instant::now();
        let mut bytes = 0u64;
        for file in &files {
            bytes += std::fs::metadata(file)?.len();
            if bytes > limits.max_bytes {
                return Err(Abort::Size.error(start, limits, shown));
            }
        }
        self.copy_object_files(&from, &files, start, limits, shown)?;
        self.repo.odb()?.refresh()?;
        for (r, tip) in &tips {
            let commit = self
                .repo
                .find_object(*tip, None)
                .and_then(|o| o.peel_to_commit());
            if commit.is_err() {
                // The origin was repacked while it was copied: copy object by object.
                return self.fetch_local(origin, refs, limits, shown);
            }
            self.repo.reference(r, *tip, true, "dockhand fetch")?;
        }
        Ok(())
    }

    /// Copy `files`, listed under an origin's objects directory `from`, to the same place in
    /// the cache's, within the timeout of a fetch begun at `start`.
    fn copy_object_files(
        &self,
        from: &Path,
        files: &[PathBuf],
        start: Instant,
        limits: &FetchLimits,
        shown: &str,
    ) -> anyhow::Result<()> {
        let to = self.repo.path().join("objects");
        for file in files {
            if start.elapsed() > limits.timeout {
                return Err(Abort::Timeout.error(start, limits, shown));
            }
            let rel = file.strip_prefix(from).expect("listed under it");
            let dest = to.join(rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            // Through a temp name: a crash never leaves a truncated object under its real name.
            let tmp = dest.with_extension("dockhand-tmp");
            std::fs::copy(file, &tmp)
                .with_context(|| format!("copying {} from {shown}", rel.display()))?;
            std::fs::rename(&tmp, &dest)?;
        }
        Ok(())
    }

    /// Fetch from a repository on this host by copying only the objects the cache lacks.
    ///
    /// libgit2's local transport builds a pack in-process and first marks every object of the
    /// previous tree as uninteresting: O(repository) per fetch. Here new commits are found with a
    /// revwalk that hides what the cache already has, and only trees the cache lacks are
    /// descended into: O(changed). Objects are written children first (blobs and subtrees before
    /// their tree, the tree before its commit, parents before children), so an object present in
    /// the cache always has everything below it, even after a crash mid-copy.
    pub(super) fn fetch_local(
        &self,
        origin: &Path,
        refs: &[String],
        limits: &FetchLimits,
        shown: &str,
    ) -> anyhow::Result<()> {
        let src = open_origin(origin, shown)?;
        let mut copy = Copier {
            src: &src,
            src_odb: src.odb()?,
            dst: self.repo.odb()?,
            from: src.path().join("objects"),
            to: self.repo.path().join("objects"),
            bytes: 0,
            start: Instant::now(),
            limits,
            shown,
        };
        let tips = origin_tips(&src, refs, shown)?;
        let mut walk = src.revwalk()?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
        for (r, tip) in &tips {
            let commit = src
                .find_object(*tip, None)
                .and_then(|o| o.peel_to_commit())
                .with_context(|| format!("{r} at origin {shown} does not point at a commit"))?;
            walk.push(commit.id())?;
        }
        for known in self.repo.references()?.flatten() {
            let commit = known
                .target()
                .and_then(|id| src.find_object(id, None).ok())
                .and_then(|o| o.peel_to_commit().ok());
            if let Some(commit) = commit {
                walk.hide(commit.id())?;
            }
        }
        for id in walk {
            let id = id?;
            if copy.has(id) {
                continue;
            }
            let commit = src.find_commit(id)?;
            copy.tree(commit.tree_id())?;
            copy.object(id)?;
        }
        for (_, tip) in &tips {
            copy.tag_chain(*tip)?;
        }
        for (r, tip) in &tips {
            self.repo.reference(r, *tip, true, "dockhand fetch")?;
        }
        Ok(())
    }
}

/// The local path of an origin given as a plain path or `file://` URL; `None` for anything that
/// needs a network transport (`https://`, `ssh://`, `git@host:path`).
pub(super) fn local_origin(url: &str) -> Option<PathBuf> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(PathBuf::from(path));
    }
    if url.contains("://") {
        return None;
    }
    match url.split_once(':') {
        Some((host, _)) if !host.contains('/') => None, // scp-like `host:path`
        _ => Some(PathBuf::from(url)),
    }
}

/// Copies objects from a local origin into the cache, counting bytes against the fetch limits.
struct Copier<'a> {
    src: &'a git2::Repository,
    src_odb: git2::Odb<'a>,
    dst: git2::Odb<'a>,
    /// The origin's and the cache's objects directories.
    from: PathBuf,
    to: PathBuf,
    bytes: u64,
    start: Instant,
    limits: &'a FetchLimits,
    shown: &'a str,
}

impl Copier<'_> {
    /// Whether the cache has `id`, without re-reading its pack directory on a miss (libgit2's
    /// default: a directory listing and a stat per pack for every object the cache lacks,
    /// which is most objects a fetch copies). The cache was opened for this fetch and only
    /// this copier adds to it, so its pack list is current; a stale "no" would only copy an
    /// object twice.
    fn has(&self, id: Oid) -> bool {
        self.dst.exists_ext(id, git2::OdbLookupFlags::NO_REFRESH)
    }

    /// Copy a tree the cache lacks, everything below it first. A tree the cache has is
    /// complete (see `fetch_local`), so it is not descended into. Walked with a stack on the
    /// heap, not by recursion: a crafted commit can nest trees deeper than any thread's stack.
    fn tree(&mut self, root: Oid) -> anyhow::Result<()> {
        if self.has(root) {
            return Ok(());
        }
        // Each tree being copied, with the index of its next entry.
        let mut open = vec![(self.src.find_tree(root)?, 0)];
        while let Some((tree, next)) = open.last_mut() {
            let Some((kind, id)) = tree.get(*next).map(|e| (e.kind(), e.id())) else {
                let id = tree.id();
                open.pop();
                self.object(id)?;
                continue;
            };
            *next += 1;
            match kind {
                Some(git2::ObjectType::Tree) if !self.has(id) => {
                    open.push((self.src.find_tree(id)?, 0));
                }
                Some(git2::ObjectType::Blob) => self.object(id)?,
                _ => {} // a tree the cache has; gitlinks name commits of other repositories
            }
        }
        Ok(())
    }

    /// Copy an annotated tag and the tags it points at, innermost first; their commits are
    /// already copied. A loop, not recursion: a chain of tags can be arbitrarily long.
    fn tag_chain(&mut self, id: Oid) -> anyhow::Result<()> {
        let mut chain = Vec::new();
        let mut next = id;
        while !self.has(next) {
            let object = self.src.find_object(next, None)?;
            let Some(tag) = object.as_tag() else { break };
            chain.push(next);
            next = tag.target_id();
        }
        for tag in chain.into_iter().rev() {
            self.object(tag)?;
        }
        Ok(())
    }

    /// Copy one object if the cache lacks it.
    fn object(&mut self, id: Oid) -> anyhow::Result<()> {
        if self.has(id) {
            return Ok(());
        }
        if self.start.elapsed() > self.limits.timeout {
            bail!(
                "fetch timed out after {}s from {}",
                self.limits.timeout.as_secs_f64(),
                self.shown
            );
        }
        if self.copy_loose_file(id)? {
            return Ok(());
        }
        let (size, kind) = self.src_odb.read_header(id)?;
        self.bytes += size as u64;
        if self.bytes > self.limits.max_bytes {
            return Err(Abort::Size.error(self.start, self.limits, self.shown));
        }
        let written = if kind == git2::ObjectType::Blob && size > STREAM_ABOVE {
            // Through a buffer, not whole: a 200 MB file must not be 200 MB of memory.
            let mut writer = self.dst.writer(size, kind)?;
            super::blob::copy_blob_of_size(self.src, id, size, &mut writer)?;
            writer.finalize()?
        } else {
            let object = self.src_odb.read(id)?;
            self.dst.write(object.kind(), object.data())?
        };
        if written != id {
            bail!(
                "object {id} from {} hashes to {written}: the origin is corrupt",
                self.shown
            );
        }
        Ok(())
    }

    /// Copy `id` as the file it is in the origin when the origin holds it loose (what a `git
    /// push` of a few objects leaves): hard-linked, or copied through a temp name where a link
    /// is not allowed (another file system, another owner). Nothing is inflated, hashed or
    /// deflated again; its stored size counts against the cap, as a pack's bytes do over a
    /// network. A loose file holding other bytes than its name says is refused when read
    /// (libgit2 checks every object's hash). `false`: not a loose file at the origin.
    fn copy_loose_file(&mut self, id: Oid) -> anyhow::Result<bool> {
        let hex = id.to_string();
        let rel = Path::new(&hex[..2]).join(&hex[2..]);
        let src = self.from.join(&rel);
        let size = match std::fs::symlink_metadata(&src) {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => return Ok(false),
        };
        self.bytes += size;
        if self.bytes > self.limits.max_bytes {
            return Err(Abort::Size.error(self.start, self.limits, self.shown));
        }
        let dest = self.to.join(&rel);
        let linked = match std::fs::hard_link(&src, &dest) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(self.to.join(&hex[..2]))?;
                std::fs::hard_link(&src, &dest)
            }
            other => other,
        };
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(true),
            // Gone since the stat (the origin was repacked): copy it as an object.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(_) => {
                let tmp = dest.with_extension("dockhand-tmp");
                match std::fs::copy(&src, &tmp) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    copied => copied
                        .with_context(|| format!("copying object {id} from {}", self.shown))?,
                };
                std::fs::rename(&tmp, &dest)?;
                Ok(true)
            }
        }
    }
}

/// The object files under a repository's objects directory `from`: packs whose index is there
/// (a pack being written has none yet), each followed by its index, then loose objects.
fn object_files(from: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for pack in files_with_extension(&from.join("pack"), "pack")? {
        if pack.with_extension("idx").exists() {
            files.push(pack.clone());
            files.push(pack.with_extension("idx"));
        }
    }
    for dir in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let dir = dir?.path();
        let fanout = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()));
        if fanout {
            for object in std::fs::read_dir(&dir)? {
                files.push(object?.path());
            }
        }
    }
    Ok(files)
}

/// What the refs of a same-host origin that `wanted` picks point at, read from its ref store:
/// an annotated tag maps to the commit it peels to; a dangling symbolic ref names nothing.
pub(super) fn local_tips(
    origin: &Path,
    wanted: impl Fn(&str) -> bool,
    shown: &str,
) -> anyhow::Result<BTreeMap<String, Oid>> {
    let mut tips = BTreeMap::new();
    let src = open_origin(origin, shown)?;
    for reference in src
        .references()
        .with_context(|| format!("listing refs of {shown}"))?
    {
        let reference = reference.with_context(|| format!("listing refs of {shown}"))?;
        let Some(name) = reference.name().filter(|n| wanted(n)) else {
            continue;
        };
        let Some(target) = reference.resolve().ok().and_then(|r| r.target()) else {
            continue; // a dangling symbolic ref names nothing
        };
        let commit = src
            .find_object(target, None)
            .and_then(|o| o.peel_to_commit())
            .map_or(target, |c| c.id());
        tips.insert(name.to_owned(), commit);
    }
    Ok(tips)
}

/// The repository at a same-host origin's path, never searching upwards.
pub(super) fn open_origin(origin: &Path, shown: &str) -> anyhow::Result<git2::Repository> {
    super::configure_libgit2();
    git2::Repository::open_ext(
        origin,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .with_context(|| format!("opening origin {shown}"))
}

/// What each of `refs` points at in a same-host origin; a ref it lacks is a [`MissingRef`].
fn origin_tips<'r>(
    src: &git2::Repository,
    refs: &'r [String],
    shown: &str,
) -> anyhow::Result<Vec<(&'r String, Oid)>> {
    refs.iter()
        .map(|r| {
            src.find_reference(r)
                .and_then(|reference| reference.resolve())
                .ok()
                .and_then(|reference| reference.target())
                .map(|target| (r, target))
                .ok_or_else(|| {
                    MissingRef {
                        origin: shown.to_string(),
                        name: r.clone(),
                    }
                    .into()
                })
        })
        .collect()
}

#[cfg(test)]
mod tests;
