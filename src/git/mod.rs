//! Host-side git: one bare cache repository per app under the state directory.
//!
//! Nothing here ever opens a work tree, reads the deployed volume, or runs a hook: the cache is a
//! bare repository that only dockhand writes, so a container that can write its volume cannot
//! influence host-side git (SECURITY.md 21).
//!
//! # Layout
//! - this file: [`Cache`] (opened once per app), resolving specs to commits, ancestry, commit
//!   metadata, compaction, and the repository the volume sync reads blobs from.
//! - `fetch.rs`: fetching exact refs from an origin within its limits, and listing its refs.
//! - `local.rs`: the same-host copier behind a fetch from a path or `file://` origin.
//! - `blob.rs`: copying a blob into a writer, streaming the big ones.
//! - `diff.rs`: the changes between two trees, and the path safety every deployed path passes.
//! - `transport.rs` (and `transport/`): dockhand's smart subtransports for `http(s)://`,
//!   `ssh://` and `git://`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

mod blob;
mod diff;
mod fetch;
mod local;
#[cfg(test)]
mod test_support;
mod transport;

pub use blob::STREAM_ABOVE;
pub use diff::{Change, Diff, EntryMode, MAX_PATH_BYTES, MAX_TREE_DEPTH};
pub use fetch::{Access, Credentials, FetchLimits, MissingRef};
pub use git2::Oid;
pub(crate) use transport::check_ssh_key;

/// A commit's metadata that deploy records and the planner use.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub id: Oid,
    pub summary: String,
    pub message: String,
    pub author: String,
}

/// The bare cache repository of one app.
pub struct Cache {
    repo: git2::Repository,
}

impl Cache {
    /// Open the bare cache at `path`, creating it (and parents) if missing.
    pub fn open_or_init(path: &Path) -> anyhow::Result<Cache> {
        configure_libgit2();
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating cache directory {}", path.display()))?;
        let repo = if path.join("HEAD").exists() {
            git2::Repository::open_bare(path)
                .with_context(|| format!("opening cache repository {}", path.display()))?
        } else {
            git2::Repository::init_bare(path)
                .with_context(|| format!("creating cache repository {}", path.display()))?
        };
        if !repo.is_bare() {
            bail!("cache repository {} is not bare", path.display());
        }
        Ok(Cache { repo })
    }

    /// The underlying repository (for reading blobs while syncing a volume).
    pub fn repo(&self) -> &git2::Repository {
        &self.repo
    }

    /// Keep object lookups cheap as fetches accumulate: every network fetch leaves one more pack
    /// (and a same-host fetch loose objects), and each pack is one more index to search. Past
    /// [`MAX_PACKS`] packs or about [`MAX_LOOSE`] loose objects, write objects as one pack,
    /// synced to disk, then remove the packs and loose objects it replaces. Geometric, as `git
    /// repack --geometric` is: while the packs besides the largest hold less than half its
    /// bytes, only their objects and the loose ones are rewritten (a few per fetch), and the
    /// largest is kept as it is; otherwise every object the cache holds (reachable or not: a
    /// rolled-back deploy's commit may be reachable from no ref). Returns how many objects were
    /// repacked, `None` when nothing was due.
    pub fn compact(&self) -> anyhow::Result<Option<usize>> {
        let objects = self.repo.path().join("objects");
        let pack_dir = objects.join("pack");
        let mut packs: Vec<(u64, PathBuf)> = files_with_extension(&pack_dir, "pack")?
            .into_iter()
            .map(|p| (std::fs::metadata(&p).map_or(0, |m| m.len()), p))
            .collect();
        // Objects are spread evenly over the 256 fan-out directories (as `git gc --auto` counts).
        let loose_sample = std::fs::read_dir(objects.join("17")).map_or(0, |d| d.count());
        if packs.len() <= MAX_PACKS && loose_sample * 256 <= MAX_LOOSE {
            return Ok(None);
        }
        packs.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
        let rest: u64 = packs.iter().skip(1).map(|(size, _)| size).sum();
        let base = match packs.first() {
            Some((largest, path)) if rest * 2 < *largest => {
                Some((path.clone(), pack_ids(&path.with_extension("idx"))?))
            }
            _ => None,
        };
        let odb = self.repo.odb()?;
        let mut ids = Vec::new();
        odb.foreach(|id| {
            if !base.as_ref().is_some_and(|(_, kept)| kept.contains(id)) {
                ids.push(*id);
            }
            true
        })?;
        if ids.is_empty() {
            return Ok(None);
        }
        let mut builder = self.repo.packbuilder()?;
        builder.set_threads(1);
        for id in &ids {
            builder.insert_object(*id, None)?;
        }
        builder
            .write(&pack_dir, 0o444)
            .context("writing the compacted pack")?;
        let name = builder
            .name()
            .context("the compacted pack has no name")?
            .to_string();
        let kept = pack_dir.join(format!("pack-{name}"));
        for ext in ["pack", "idx"] {
            std::fs::File::open(kept.with_extension(ext))
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing the compacted pack's .{ext}"))?;
        }
        let keep = |p: &Path| {
            p.with_extension("") == kept || base.as_ref().is_some_and(|(b, _)| b.as_path() == p)
        };
        for (_, old) in packs.iter().filter(|(_, p)| !keep(p)) {
            // The index first: a pack without one is invisible, an index without its pack is
            // an error for a reader.
            for ext in ["idx", "rev", "pack"] {
                match std::fs::remove_file(old.with_extension(ext)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", old.display()))
                    }
                    _ => {}
                }
            }
        }
        for id in &ids {
            let hex = id.to_string();
            let loose = objects.join(&hex[..2]).join(&hex[2..]);
            if let Err(e) = std::fs::remove_file(&loose) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(e).with_context(|| format!("removing {}", loose.display()));
                }
            }
        }
        Ok(Some(ids.len()))
    }

    /// Resolve a full SHA, an abbreviated SHA, or a full ref name to a commit, peeling annotated
    /// tags. `Ok(None)` when it names nothing in the cache.
    ///
    /// Anything else (a short branch name, revision syntax like `main~1`) names nothing; a spec
    /// starting with `-` is an error, since it would read as an option wherever it is passed on.
    pub fn resolve(&self, spec: &str) -> anyhow::Result<Option<Oid>> {
        if spec.starts_with('-') {
            bail!("refusing revision {spec:?}: it starts with '-'");
        }
        let object = if spec.starts_with("refs/") {
            if !valid_ref_name(spec) {
                return Ok(None);
            }
            match self.repo.find_reference(spec) {
                Ok(reference) => reference
                    .resolve()
                    .and_then(|r| r.peel(git2::ObjectType::Any))
                    .with_context(|| format!("resolving {spec}"))?,
                Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("looking up {spec}")),
            }
        } else if (4..=40).contains(&spec.len()) && spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            // By prefix only: unlike revparse, this never lets a ref named like hex win.
            match self
                .repo
                .find_object_by_prefix(&spec.to_ascii_lowercase(), None)
            {
                Ok(object) => object,
                Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
                Err(e) if e.code() == git2::ErrorCode::Ambiguous => {
                    bail!("{spec} is ambiguous: give more hex digits")
                }
                Err(e) => return Err(e).with_context(|| format!("looking up {spec}")),
            }
        } else {
            return Ok(None);
        };
        let commit = object
            .peel_to_commit()
            .with_context(|| format!("{spec} does not name a commit"))?;
        Ok(Some(commit.id()))
    }

    /// Whether `ancestor` is reachable from `descendant` (a commit is its own ancestor).
    pub fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> anyhow::Result<bool> {
        if ancestor == descendant {
            return Ok(true);
        }
        self.repo
            .graph_descendant_of(descendant, ancestor)
            .with_context(|| format!("checking whether {ancestor} is an ancestor of {descendant}"))
    }

    /// Metadata of a commit.
    pub fn commit_info(&self, id: Oid) -> anyhow::Result<CommitInfo> {
        let commit = self
            .repo
            .find_commit(id)
            .with_context(|| format!("reading commit {id}"))?;
        let author = commit.author();
        Ok(CommitInfo {
            id,
            summary: commit
                .summary_bytes()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default(),
            message: String::from_utf8_lossy(commit.message_bytes()).into_owned(),
            author: format!(
                "{} <{}>",
                String::from_utf8_lossy(author.name_bytes()),
                String::from_utf8_lossy(author.email_bytes())
            ),
        })
    }
}

/// How much of the packs libgit2 keeps mapped at once, process-wide: by default up to 8 GiB
/// in 1 GiB windows, so reading a 200 MB blob kept the whole pack resident on top of the blob.
const MWINDOW_SIZE: usize = 4 * 1024 * 1024;
const MWINDOW_MAPPED_LIMIT: usize = 32 * 1024 * 1024;

/// libgit2's process-wide settings, set once before any repository is opened:
/// - pack maps bounded (see [`MWINDOW_SIZE`]);
/// - no global, XDG or system git config: a cache and an origin are read with their own
///   config only. dockhand's transports take nothing from git config, and a user's
///   `~/.gitconfig` (an `insteadOf`, a `core.*` setting) must not change what a daemon
///   deploys. It also spares a `stat` of each of those files at every config read (about 150
///   per deploy).
pub(crate) fn configure_libgit2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: libgit2 reads these globals when it maps a pack window or loads a config;
        // this runs once, before this process opens any repository or lists an origin's refs
        // (opening a cache or an origin and `remote_tips` all call it first).
        let set = unsafe {
            git2::opts::set_mwindow_size(MWINDOW_SIZE)
                .and_then(|()| git2::opts::set_mwindow_mapped_limit(MWINDOW_MAPPED_LIMIT))
                .and_then(|()| {
                    [
                        git2::ConfigLevel::System,
                        git2::ConfigLevel::XDG,
                        git2::ConfigLevel::Global,
                        git2::ConfigLevel::ProgramData,
                    ]
                    .into_iter()
                    .try_for_each(|level| git2::opts::set_search_path(level, ""))
                })
        };
        if let Err(e) = set {
            tracing::warn!("configuring libgit2: {e}");
        }
    });
}

/// Packs in a cache beyond which [`Cache::compact`] rewrites them (all but the largest, while
/// it holds most bytes). Each pack is one more index to search on every object lookup: over
/// HTTP, push-to-live went 22 -> 27 ms as a cache went from 1 to 29 packs.
pub const MAX_PACKS: usize = 8;
/// Loose objects (about) beyond which [`Cache::compact`] packs them.
pub const MAX_LOOSE: usize = 4096;

/// The ids of the objects in the pack whose index is `idx`.
fn pack_ids(idx: &Path) -> anyhow::Result<std::collections::HashSet<Oid>> {
    let index = gix_pack::index::File::at(idx, gix_hash::Kind::Sha1)
        .with_context(|| format!("reading pack index {}", idx.display()))?;
    index
        .iter()
        .map(|entry| Oid::from_bytes(entry.oid.as_bytes()).map_err(Into::into))
        .collect()
}

fn files_with_extension(dir: &Path, ext: &str) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == ext) {
            found.push(path);
        }
    }
    Ok(found)
}

/// Whether `name` is a valid ref name by git's rules. `git2::Reference::is_valid_name` panics
/// on a name holding a NUL (it unwraps the C string), which a JSON or TOML string can carry:
/// found by the `refs_paths` fuzz target.
pub fn valid_ref_name(name: &str) -> bool {
    !name.contains('\0') && git2::Reference::is_valid_name(name)
}

/// The validators, for the fuzz targets in `fuzz/`: not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Whether a tree path would be written (no `..`, `.git`, empty or absolute component).
    pub fn path_is_safe(path: &[u8]) -> bool {
        super::diff::check_path(path).is_ok()
    }

    /// Whether [`super::Cache::fetch`] would ask an origin for this ref.
    pub fn ref_is_fetchable(name: &str) -> bool {
        super::fetch::is_fetchable_ref(name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use tempfile::TempDir;

    use super::test_support::{cache_in, limits};
    use super::*;
    // Named by src/volume.rs's tests as `crate::git::tests::…`.
    pub(crate) use super::test_support::{fetched, Origin, EXEC, FILE, LINK};

    #[test]
    fn cache_is_created_bare_with_its_parents_and_reopened() {
        let state = TempDir::new().unwrap();
        let at = state.path().join("a/b/web.git");

        let created = Cache::open_or_init(&at).unwrap();
        let reopened = Cache::open_or_init(&at).unwrap();

        assert!(created.repo().is_bare());
        assert!(reopened.repo().is_bare());
        assert!(created.repo().workdir().is_none());
    }

    #[test]
    fn annotated_tag_resolves_to_the_commit_not_the_tag_object() {
        let origin = Origin::new();
        let tip = origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
        let tag = origin.tag("v1", tip);
        let tag_of_tag = origin.tag("v1-signed", tag);

        let state = TempDir::new().unwrap();
        let cache = cache_in(state.path());
        let refs = ["refs/tags/v1".to_owned(), "refs/tags/v1-signed".to_owned()];
        cache
            .fetch(&origin.url(), &refs, &Access::default(), &limits())
            .unwrap();

        assert_ne!(tag, tip);
        assert_ne!(tag_of_tag, tag);
        assert_eq!(cache.resolve("refs/tags/v1").unwrap(), Some(tip));
        assert_eq!(cache.resolve("refs/tags/v1-signed").unwrap(), Some(tip));
        assert_eq!(cache.resolve(&tag.to_string()).unwrap(), Some(tip));
    }

    #[test]
    fn full_and_abbreviated_shas_resolve_to_the_commit() {
        let origin = Origin::new();
        let tip = origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
        let (_state, cache) = fetched(&origin, "refs/heads/main");
        let full = tip.to_string();

        assert_eq!(cache.resolve(&full).unwrap(), Some(tip));
        assert_eq!(cache.resolve(&full[..7]).unwrap(), Some(tip));
        assert_eq!(cache.resolve(&full[..4]).unwrap(), Some(tip));
        assert_eq!(cache.resolve(&full.to_uppercase()).unwrap(), Some(tip));
    }

    #[test]
    fn unknown_specs_resolve_to_none() {
        let origin = Origin::new();
        origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
        let (_state, cache) = fetched(&origin, "refs/heads/main");

        for spec in [
            "refs/heads/nope",
            &"0".repeat(40),
            "abc",
            "main",
            "HEAD~1",
            "refs/heads/main~1",
            "",
        ] {
            assert_eq!(cache.resolve(spec).unwrap(), None, "{spec:?}");
        }
    }

    #[test]
    fn spec_starting_with_a_dash_is_an_error() {
        let state = TempDir::new().unwrap();
        let cache = cache_in(state.path());

        let err = cache.resolve("-x").unwrap_err();

        assert!(format!("{err:#}").contains("-x"), "{err:#}");
    }

    #[test]
    fn a_commit_is_its_own_ancestor_and_history_is_ordered() {
        let origin = Origin::new();
        let first = origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
        let second = origin.commit("refs/heads/main", &[("a", FILE, b"2")]);
        let (_state, cache) = fetched(&origin, "refs/heads/main");

        assert!(cache.is_ancestor(first, first).unwrap());
        assert!(cache.is_ancestor(first, second).unwrap());
        assert!(!cache.is_ancestor(second, first).unwrap());
    }

    #[test]
    fn commit_info_has_summary_message_and_author() {
        let origin = Origin::new();
        let tip = origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
        let (_state, cache) = fetched(&origin, "refs/heads/main");

        let info = cache.commit_info(tip).unwrap();

        assert_eq!(info.id, tip);
        assert_eq!(info.summary, "a commit");
        assert_eq!(info.message, "a commit\n\nwith a body\n");
        assert_eq!(info.author, "Ada Lovelace <ada@example.com>");
    }
}
