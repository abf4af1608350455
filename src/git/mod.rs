//! Host-side git: one bare cache repository per app under the state directory.
//!
//! Nothing here ever opens a work tree, reads the deployed volume, or runs a hook: the cache is a
//! bare repository that only dockhand writes, so a container that can write its volume cannot
//! influence host-side git (SECURITY.md 21).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::redact_url;

mod diff;
mod local;
#[cfg(test)]
mod test_support;
mod transport;

pub use diff::{Change, Diff, EntryMode, MAX_PATH_BYTES, MAX_TREE_DEPTH};
pub use git2::Oid;
pub(crate) use transport::check_ssh_key;

use local::{local_origin, open_origin};

/// A fetch asked for a ref the origin does not have (callers tell "unknown" from "broken").
#[derive(Debug, thiserror::Error)]
#[error("origin {origin} has no ref {name}")]
pub struct MissingRef {
    pub origin: String,
    pub name: String,
}

/// Bounds on one fetch, so a huge or hostile origin cannot wedge a deploy (SECURITY.md 24).
#[derive(Debug, Clone)]
pub struct FetchLimits {
    /// Abort the fetch when it has run this long.
    pub timeout: Duration,
    /// Abort the fetch when it has received this many bytes.
    pub max_bytes: u64,
}

/// Credentials for a private origin. Secrets are read from files/env by config, never logged.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Public origin, local path or file:// URL.
    #[default]
    None,
    /// HTTPS with a token (sent as the password, user `x-access-token`), from `token_env`.
    Token(String),
    /// The same, read from this file at every fetch (`token_file`): a rotated token is used by
    /// the next fetch, no restart needed.
    TokenFile(PathBuf),
    /// SSH with a private key file (deploy key).
    SshKey(PathBuf),
}

/// Everything a fetch needs to reach an app's origin besides its URL.
#[derive(Clone, Default)]
pub struct Access {
    pub credentials: Credentials,
    /// PEM certificates trusted for HTTPS in addition to the system roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// The only host keys an SSH origin may present (OpenSSH `known_hosts` format); `None`:
    /// OpenSSH's defaults (`~/.ssh/known_hosts`, `/etc/ssh/ssh_known_hosts`).
    pub known_hosts: Option<PathBuf>,
}

impl From<Credentials> for Access {
    fn from(credentials: Credentials) -> Access {
        Access {
            credentials,
            ..Access::default()
        }
    }
}

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
        bound_pack_maps();
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

    /// Fetch each full ref name in `refs` (e.g. `refs/heads/main`, `refs/tags/v1`) from `url` into
    /// the same name (forced), no tags auto-followed, no submodules. Errors name the URL (without
    /// credentials), say whether the timeout or size cap was hit, and what to fix.
    ///
    /// Network origins go through dockhand's own transports ([`transport`]), which bound the
    /// whole fetch by `limits.timeout`, also when the origin accepts and then sends nothing.
    pub fn fetch(
        &self,
        url: &str,
        refs: &[String],
        access: &Access,
        limits: &FetchLimits,
    ) -> anyhow::Result<()> {
        let shown = redact_url(url);
        if url.is_empty() || url.starts_with('-') {
            bail!("refusing to fetch from origin {shown:?}");
        }
        if refs.is_empty() {
            bail!("nothing to fetch from {shown}: no refs given");
        }
        for r in refs {
            if !is_fetchable_ref(r) {
                bail!("refusing to fetch {r:?} from {shown}: not a full ref name");
            }
        }
        // A local origin: the first fetch copies its object files (as `git clone --local`
        // does; libgit2's local transport rebuilt a pack, ~33 s for 20,000 files), later ones
        // only the objects the cache lacks.
        let has_refs = self.repo.references()?.flatten().next().is_some();
        if let Some(origin) = local_origin(url) {
            return match has_refs {
                true => self.fetch_local(&origin, refs, limits, &shown),
                false => self.clone_local(&origin, refs, limits, &shown),
            };
        }
        let refspecs: Vec<String> = refs.iter().map(|r| format!("+{r}:{r}")).collect();

        let start = Instant::now();
        let reach = transport::Reach::new(
            access.clone(),
            limits.timeout,
            self.repo.path().join("dockhand-ssh"),
        );
        let aborted: Cell<Option<Abort>> = Cell::new(None);
        let over_limit = |received: u64| -> bool {
            if start.elapsed() > limits.timeout {
                aborted.set(Some(Abort::Timeout));
            } else if received > limits.max_bytes {
                aborted.set(Some(Abort::Size));
            }
            aborted.get().is_some()
        };
        // Every ref a refspec matched, changed or not (with `report_unchanged`).
        let updated: RefCell<BTreeSet<String>> = RefCell::new(BTreeSet::new());

        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.transfer_progress(|p| !over_limit(p.received_bytes() as u64));
        callbacks.sideband_progress(|_| !over_limit(0));
        callbacks.update_tips(|name, _, _| {
            updated.borrow_mut().insert(name.to_owned());
            true
        });
        let mut options = git2::FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .download_tags(git2::AutotagOption::None)
            .update_fetchhead(false)
            .report_unchanged(true);

        let mut remote = self
            .repo
            .remote_anonymous(url)
            .with_context(|| format!("setting up fetch from {shown}"))?;
        let fetched =
            transport::with_reach(&reach, || remote.fetch(&refspecs, Some(&mut options), None));
        if reach.timed_out() {
            aborted.set(Some(Abort::Timeout));
        }
        match aborted.get() {
            Some(Abort::Timeout) => bail!(
                "fetch timed out after {:.1}s from {shown}: fetch_timeout is {}s",
                start.elapsed().as_secs_f64(),
                limits.timeout.as_secs_f64()
            ),
            Some(Abort::Size) => bail!(
                "fetch exceeded the {}-byte size cap from {shown}",
                limits.max_bytes
            ),
            None => {}
        }
        if let Err(e) = fetched {
            // The transport's own account says what to fix; libgit2's wraps or replaces it.
            // libgit2 may echo the URL it was given; never let userinfo reach a log line.
            let message = reach
                .failure()
                .unwrap_or_else(|| e.message().to_string())
                .replace(url, &shown);
            bail!("fetching {} from {shown}: {message}", refs.join(", "));
        }
        // A refspec whose source the origin does not advertise matches nothing, and libgit2
        // reports success; a deploy of a ref that vanished must fail instead.
        let updated = updated.borrow();
        for r in refs {
            if !updated.contains(r) {
                return Err(MissingRef {
                    origin: shown,
                    name: r.clone(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Keep object lookups cheap as fetches accumulate: every network fetch leaves one more pack
    /// (and a same-host fetch loose objects), and each pack is one more index to search. Past
    /// [`MAX_PACKS`] packs or about [`MAX_LOOSE`] loose objects, write every object the cache
    /// holds (reachable or not: a rolled-back deploy's commit may be reachable from no ref) as
    /// one pack, synced to disk, then remove the old packs and loose objects. Returns how many
    /// objects were repacked, `None` when nothing was due.
    pub fn compact(&self) -> anyhow::Result<Option<usize>> {
        let objects = self.repo.path().join("objects");
        let pack_dir = objects.join("pack");
        let packs = files_with_extension(&pack_dir, "pack")?;
        // Objects are spread evenly over the 256 fan-out directories (as `git gc --auto` counts).
        let loose_sample = std::fs::read_dir(objects.join("17")).map_or(0, |d| d.count());
        if packs.len() <= MAX_PACKS && loose_sample * 256 <= MAX_LOOSE {
            return Ok(None);
        }
        let odb = self.repo.odb()?;
        let mut ids = Vec::new();
        odb.foreach(|id| {
            ids.push(*id);
            true
        })?;
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
        for old in packs.iter().filter(|p| p.with_extension("") != kept) {
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

    /// What the origin's refs point at, from one ref listing and no fetch: each full ref name
    /// in `refs` the origin has, and every ref below a name ending in `/` (`refs/tags/`). A
    /// ref the origin lacks is absent from the answer. An annotated tag maps to the commit it
    /// peels to when the origin says so (a local origin always; a network one through the
    /// `^{}` entries it advertises), else to the tag object.
    ///
    /// A local origin (a path or `file://` URL) is read directly; any other is listed through
    /// dockhand's transports with the same access as [`Cache::fetch`], bounded by
    /// `limits.timeout`; an SSH listing shares the fetches' control master in `control_dir`
    /// (the cache's `dockhand-ssh`). Nothing is written to any cache.
    pub fn remote_tips(
        url: &str,
        refs: &[String],
        access: &Access,
        limits: &FetchLimits,
        control_dir: &Path,
    ) -> anyhow::Result<BTreeMap<String, Oid>> {
        let shown = redact_url(url);
        if url.is_empty() || url.starts_with('-') {
            bail!("refusing to list refs of origin {shown:?}");
        }
        for r in refs {
            let name = r.strip_suffix('/').unwrap_or(r);
            if !r.starts_with("refs/") || !valid_ref_name(name) {
                bail!("refusing to list {r:?} at {shown}: not a full ref name or prefix");
            }
        }
        let wanted = |name: &str| {
            refs.iter().any(|r| match r.ends_with('/') {
                true => name.starts_with(r.as_str()),
                false => name == r,
            })
        };
        let mut tips = BTreeMap::new();
        if let Some(origin) = local_origin(url) {
            let src = open_origin(&origin, &shown)?;
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
            return Ok(tips);
        }

        let start = Instant::now();
        let reach = transport::Reach::new(access.clone(), limits.timeout, control_dir.into());
        let mut remote = git2::Remote::create_detached(url)
            .with_context(|| format!("setting up a ref listing of {shown}"))?;
        let failed = |e: git2::Error| {
            if reach.timed_out() {
                return anyhow::anyhow!(
                    "listing refs of {shown} timed out after {:.1}s: fetch_timeout is {}s",
                    start.elapsed().as_secs_f64(),
                    limits.timeout.as_secs_f64()
                );
            }
            // The transport's own account first; libgit2 may echo the URL it was given, and
            // userinfo never reaches a log line.
            let message = reach
                .failure()
                .unwrap_or_else(|| e.message().to_string())
                .replace(url, &shown);
            anyhow::anyhow!("listing refs of {shown}: {message}")
        };
        let heads = transport::with_reach(&reach, || -> Result<Vec<(String, Oid)>, git2::Error> {
            let connection = remote.connect_auth(git2::Direction::Fetch, None, None)?;
            let heads = connection.list()?;
            Ok(heads
                .iter()
                .map(|h| (h.name().to_owned(), h.oid()))
                .collect())
        })
        .map_err(&failed)?;
        let mut peeled = Vec::new();
        for (name, oid) in heads {
            let (name, head_oid) = (name.as_str(), oid);
            match name.strip_suffix("^{}") {
                Some(tag) if wanted(tag) => peeled.push((tag.to_owned(), head_oid)),
                Some(_) => {}
                None if wanted(name) => {
                    tips.insert(name.to_owned(), head_oid);
                }
                None => {}
            }
        }
        for (tag, commit) in peeled {
            if let Some(tip) = tips.get_mut(&tag) {
                *tip = commit;
            }
        }
        Ok(tips)
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
const MWINDOW_SIZE: usize = 32 * 1024 * 1024;
const MWINDOW_MAPPED_LIMIT: usize = 128 * 1024 * 1024;

fn bound_pack_maps() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: libgit2 reads these globals when it maps a pack window; this runs once, in
        // the first Cache::open_or_init, before this process maps any pack.
        let set = unsafe {
            git2::opts::set_mwindow_size(MWINDOW_SIZE)
                .and_then(|()| git2::opts::set_mwindow_mapped_limit(MWINDOW_MAPPED_LIMIT))
        };
        if let Err(e) = set {
            tracing::warn!("bounding libgit2's pack maps: {e}");
        }
    });
}

/// Packs in a cache beyond which [`Cache::compact`] rewrites them as one.
pub const MAX_PACKS: usize = 32;
/// Loose objects (about) beyond which [`Cache::compact`] packs them.
pub const MAX_LOOSE: usize = 4096;

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

/// Which limit stopped a fetch.
#[derive(Debug, Clone, Copy)]
enum Abort {
    Timeout,
    Size,
}

/// A full ref name a fetch may ask for: `refs/…`, valid by git's rules.
fn is_fetchable_ref(name: &str) -> bool {
    name.starts_with("refs/") && valid_ref_name(name)
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
        super::is_fetchable_ref(name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;
    use std::time::Duration;

    use tempfile::TempDir;

    use super::test_support::{cache_in, limits, listed, tagged_origin};
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

    /// `git daemon` serving `origin`'s directory on a loopback port, killed on drop.
    struct Daemon(std::process::Child, u16);

    impl Daemon {
        fn serve(origin: &Origin) -> Daemon {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            // The daemon binary itself: `git daemon` may run it as a child that a kill of the
            // wrapper would leave behind.
            let exec_path = std::process::Command::new("git")
                .arg("--exec-path")
                .output()
                .unwrap();
            let exec_path = String::from_utf8(exec_path.stdout).unwrap();
            let child = std::process::Command::new(Path::new(exec_path.trim()).join("git-daemon"))
                .arg("--export-all")
                .arg("--reuseaddr")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .arg(format!("--base-path={}", origin.dir.path().display()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect(
                    "git daemon (Debian's git package) is needed for the network transport tests",
                );
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "git daemon did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            Daemon(child, port)
        }

        fn url(&self) -> String {
            format!("git://127.0.0.1:{}/origin.git", self.1)
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn fetch_over_the_network_transport_gets_the_ref_and_enforces_the_size_cap() {
        let origin = Origin::new();
        let big: Vec<u8> = (0..200_000u32)
            .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
            .collect();
        let tip = origin.commit("refs/heads/main", &[("big.bin", FILE, &big)]);
        let daemon = Daemon::serve(&origin);
        let refs = ["refs/heads/main".to_owned()];

        let state = TempDir::new().unwrap();
        let cache = cache_in(state.path());
        cache
            .fetch(&daemon.url(), &refs, &Access::default(), &limits())
            .unwrap();
        assert_eq!(cache.resolve("refs/heads/main").unwrap(), Some(tip));

        let missing = cache.fetch(
            &daemon.url(),
            &["refs/heads/nope".to_owned()],
            &Access::default(),
            &limits(),
        );
        assert!(format!("{:#}", missing.unwrap_err()).contains("refs/heads/nope"));

        let state = TempDir::new().unwrap();
        let cache = cache_in(state.path());
        let tiny = FetchLimits {
            timeout: Duration::from_secs(60),
            max_bytes: 1000,
        };
        let err = cache
            .fetch(&daemon.url(), &refs, &Access::default(), &tiny)
            .unwrap_err();
        assert!(format!("{err:#}").contains("size cap"), "{err:#}");
    }

    #[test]
    fn remote_tips_over_the_network_list_refs_without_fetching_and_fail_when_it_is_gone() {
        let (origin, want) = tagged_origin();
        let daemon = Daemon::serve(&origin);
        let url = daemon.url();

        let tips = Cache::remote_tips(
            &url,
            &listed(),
            &Access::default(),
            &limits(),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(tips, want);

        drop(daemon);
        let err = Cache::remote_tips(
            &url,
            &listed(),
            &Access::default(),
            &limits(),
            Path::new("/nonexistent"),
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("listing refs of git://127.0.0.1:"), "{err}");
    }

    #[test]
    fn fetch_does_not_follow_tags_it_was_not_asked_for() {
        let origin = Origin::new();
        let tip = origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
        origin.tag("v1", tip);

        let (_state, cache) = fetched(&origin, "refs/heads/main");

        assert_eq!(cache.resolve("refs/tags/v1").unwrap(), None);
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
    fn fetch_of_a_ref_the_origin_lacks_fails_naming_it() {
        let origin = Origin::new();
        origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
        let state = TempDir::new().unwrap();
        let cache = cache_in(state.path());

        let refs = ["refs/heads/gone".to_owned()];
        let err = cache
            .fetch(&origin.url(), &refs, &Access::default(), &limits())
            .unwrap_err();

        assert!(format!("{err:#}").contains("refs/heads/gone"), "{err:#}");
    }

    #[test]
    fn fetch_from_an_origin_without_any_ref_fails_naming_the_ref() {
        let origin = Origin::new();
        let state = TempDir::new().unwrap();
        let cache = cache_in(state.path());

        let refs = ["refs/heads/main".to_owned()];
        let err = cache
            .fetch(&origin.url(), &refs, &Access::default(), &limits())
            .unwrap_err();

        assert!(
            format!("{err:#}").contains("no ref refs/heads/main"),
            "{err:#}"
        );
    }

    #[test]
    fn fetch_refuses_option_like_urls_and_short_ref_names() {
        let origin = Origin::new();
        origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
        let state = TempDir::new().unwrap();
        let cache = cache_in(state.path());
        let main = ["refs/heads/main".to_owned()];

        assert!(cache
            .fetch("--upload-pack=x", &main, &Access::default(), &limits())
            .is_err());
        for bad in [
            "main",
            "-refs/heads/main",
            "refs/heads/a:refs/heads/b",
            "+refs/heads/main",
        ] {
            let refs = [bad.to_owned()];
            assert!(
                cache
                    .fetch(&origin.url(), &refs, &Access::default(), &limits())
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn fetch_over_the_size_cap_fails_and_says_so() {
        let origin = Origin::new();
        let big: Vec<u8> = (0..200_000u32)
            .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
            .collect();
        origin.commit("refs/heads/main", &[("big.bin", FILE, &big)]);
        let state = TempDir::new().unwrap();
        let cache = cache_in(state.path());
        let tiny = FetchLimits {
            timeout: Duration::from_secs(60),
            max_bytes: 1000,
        };

        let refs = ["refs/heads/main".to_owned()];
        let err = cache
            .fetch(&origin.url(), &refs, &Access::default(), &tiny)
            .unwrap_err();

        let message = format!("{err:#}");
        assert!(
            message.contains("fetch exceeded the 1000-byte size cap"),
            "{message}"
        );
        assert!(message.contains(&origin.url()), "{message}");
        assert_eq!(cache.resolve("refs/heads/main").unwrap(), None);
    }

    #[test]
    fn fetch_past_its_deadline_fails_and_says_so() {
        let origin = Origin::new();
        origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
        let state = TempDir::new().unwrap();
        let cache = cache_in(state.path());
        let expired = FetchLimits {
            timeout: Duration::ZERO,
            max_bytes: u64::MAX,
        };

        let refs = ["refs/heads/main".to_owned()];
        let err = cache
            .fetch(&origin.url(), &refs, &Access::default(), &expired)
            .unwrap_err();

        assert!(
            format!("{err:#}").contains("fetch timed out after 0.0s")
                && format!("{err:#}").contains("fetch_timeout is 0s"),
            "{err:#}"
        );
    }

    #[test]
    fn fetch_errors_never_show_credentials_in_the_url() {
        let state = TempDir::new().unwrap();
        let cache = cache_in(state.path());
        let url = "https://x-access-token:s3cret@127.0.0.1:1/o/r.git";

        let refs = ["refs/heads/main".to_owned()];
        let err = cache
            .fetch(url, &refs, &Access::default(), &limits())
            .unwrap_err();

        let message = format!("{err:#}");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("https://127.0.0.1:1/o/r.git"), "{message}");
    }

    #[test]
    fn userinfo_is_stripped_from_urls_and_nothing_else() {
        assert_eq!(
            redact_url("https://u:p@github.com/o/r.git"),
            "https://github.com/o/r.git"
        );
        assert_eq!(redact_url("ssh://git@host:22/o/r"), "ssh://host:22/o/r");
        assert_eq!(
            redact_url("https://github.com/o/r@v1"),
            "https://github.com/o/r@v1"
        );
        assert_eq!(
            redact_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(redact_url("/srv/repo.git"), "/srv/repo.git");
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
