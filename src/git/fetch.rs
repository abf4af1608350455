//! Fetching from an origin: exact refs (`+ref:ref`, no tags followed), bounded by the app's
//! limits, through dockhand's transports for a network origin or the same-host copier
//! ([`super::local`]) for a path; and listing an origin's refs without a fetch.
//!
//! Invariants: only full ref names are asked for and never a URL that reads as an option; the
//! whole fetch is bounded by `fetch_timeout` and its size cap, and says which one stopped it; a
//! ref the origin does not have is a [`MissingRef`], not a quiet success; a URL's userinfo never
//! reaches an error (every URL shown passes through `redact_url`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::local::{local_origin, local_tips};
use super::{transport, valid_ref_name, Cache, Oid};
use crate::redact::redact_url;

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
    /// The token `[github]` gave for this repository just before the fetch (`fetch_token`:
    /// a GitHub App's installation token); never in the config itself.
    GithubToken(String),
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

impl Cache {
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
        check_fetch(url, refs, &shown)?;
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
        self.fetch_remote(url, refs, access, limits, &shown)
    }

    /// [`Cache::fetch`] from a network origin, through dockhand's transports.
    fn fetch_remote(
        &self,
        url: &str,
        refs: &[String],
        access: &Access,
        limits: &FetchLimits,
        shown: &str,
    ) -> anyhow::Result<()> {
        let refspecs: Vec<String> = refs.iter().map(|r| format!("+{r}:{r}")).collect();
        let meter = Meter::new(limits);
        let reach = transport::Reach::new(
            access.clone(),
            limits.timeout,
            self.repo.path().join("dockhand-ssh"),
        );
        let mut options = meter.options();
        let mut remote = self
            .repo
            .remote_anonymous(url)
            .with_context(|| format!("setting up fetch from {shown}"))?;
        let fetched =
            transport::with_reach(&reach, || remote.fetch(&refspecs, Some(&mut options), None));
        if reach.timed_out() {
            meter.aborted.set(Some(Abort::Timeout));
        }
        if let Some(abort) = meter.aborted.get() {
            return Err(abort.error(meter.start, limits, shown));
        }
        if let Err(e) = fetched {
            let message = failure(&reach, &e, url, shown);
            bail!("fetching {} from {shown}: {message}", refs.join(", "));
        }
        // A refspec whose source the origin does not advertise matches nothing, and libgit2
        // reports success; a deploy of a ref that vanished must fail instead.
        let updated = meter.updated.borrow();
        match refs.iter().find(|r| !updated.contains(*r)) {
            Some(r) => Err(MissingRef {
                origin: shown.to_string(),
                name: r.clone(),
            }
            .into()),
            None => Ok(()),
        }
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
        super::configure_libgit2();
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
        if let Some(origin) = local_origin(url) {
            return local_tips(&origin, wanted, &shown);
        }
        let heads = list_heads(url, access, limits, control_dir, &shown)?;
        Ok(advertised_tips(heads, wanted))
    }
}

/// Refuse a fetch from a URL that would read as an option, of no refs, or of anything but full
/// ref names.
fn check_fetch(url: &str, refs: &[String], shown: &str) -> anyhow::Result<()> {
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
    Ok(())
}

/// What a network fetch's callbacks record: whether a limit stopped it, and every ref a refspec
/// matched, changed or not (with `report_unchanged`).
struct Meter<'l> {
    start: Instant,
    limits: &'l FetchLimits,
    aborted: Cell<Option<Abort>>,
    updated: RefCell<BTreeSet<String>>,
}

impl<'l> Meter<'l> {
    /// A meter for a fetch starting now.
    fn new(limits: &'l FetchLimits) -> Meter<'l> {
        Meter {
            start: Instant::now(),
            limits,
            aborted: Cell::new(None),
            updated: RefCell::new(BTreeSet::new()),
        }
    }

    /// Whether the fetch, having received `received` bytes, has run out of time or gone over
    /// the size cap; the first limit hit is recorded.
    fn over_limit(&self, received: u64) -> bool {
        if self.start.elapsed() > self.limits.timeout {
            self.aborted.set(Some(Abort::Timeout));
        } else if received > self.limits.max_bytes {
            self.aborted.set(Some(Abort::Size));
        }
        self.aborted.get().is_some()
    }

    /// Options for the fetch: its progress and ref updates reported here, no tags followed, no
    /// `FETCH_HEAD` written.
    fn options(&self) -> git2::FetchOptions<'_> {
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.transfer_progress(|p| !self.over_limit(p.received_bytes() as u64));
        callbacks.sideband_progress(|_| !self.over_limit(0));
        callbacks.update_tips(|name, _, _| {
            self.updated.borrow_mut().insert(name.to_owned());
            true
        });
        let mut options = git2::FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .download_tags(git2::AutotagOption::None)
            .update_fetchhead(false)
            .report_unchanged(true);
        options
    }
}

/// Which limit stopped a fetch.
#[derive(Debug, Clone, Copy)]
pub(super) enum Abort {
    Timeout,
    Size,
}

impl Abort {
    /// The error for a fetch from `shown`, begun at `start`, that this limit stopped.
    pub(super) fn error(self, start: Instant, limits: &FetchLimits, shown: &str) -> anyhow::Error {
        match self {
            Abort::Timeout => anyhow::anyhow!(
                "fetch timed out after {:.1}s from {shown}: fetch_timeout is {}s",
                start.elapsed().as_secs_f64(),
                limits.timeout.as_secs_f64()
            ),
            Abort::Size => anyhow::anyhow!(
                "fetch exceeded the {}-byte size cap from {shown}",
                limits.max_bytes
            ),
        }
    }
}

/// Why a transport call failed. The transport's own account first: it says what to fix, and
/// libgit2's wraps or replaces it. libgit2 may echo the URL it was given; `url` is shown as
/// `shown`, so userinfo never reaches a log line.
fn failure(reach: &transport::Reach, e: &git2::Error, url: &str, shown: &str) -> String {
    reach
        .failure()
        .unwrap_or_else(|| e.message().to_string())
        .replace(url, shown)
}

/// The refs a network origin advertises (with the `^{}` entries of annotated tags), listed
/// through dockhand's transports within `limits.timeout`.
fn list_heads(
    url: &str,
    access: &Access,
    limits: &FetchLimits,
    control_dir: &Path,
    shown: &str,
) -> anyhow::Result<Vec<(String, Oid)>> {
    let start = Instant::now();
    let reach = transport::Reach::new(access.clone(), limits.timeout, control_dir.into());
    let mut remote = git2::Remote::create_detached(url)
        .with_context(|| format!("setting up a ref listing of {shown}"))?;
    transport::with_reach(&reach, || -> Result<Vec<(String, Oid)>, git2::Error> {
        let connection = remote.connect_auth(git2::Direction::Fetch, None, None)?;
        let heads = connection.list()?;
        Ok(heads
            .iter()
            .map(|h| (h.name().to_owned(), h.oid()))
            .collect())
    })
    .map_err(|e| {
        if reach.timed_out() {
            return anyhow::anyhow!(
                "listing refs of {shown} timed out after {:.1}s: fetch_timeout is {}s",
                start.elapsed().as_secs_f64(),
                limits.timeout.as_secs_f64()
            );
        }
        let message = failure(&reach, &e, url, shown);
        anyhow::anyhow!("listing refs of {shown}: {message}")
    })
}

/// The tips of the advertised `heads` that `wanted` picks, each annotated tag mapped to the
/// commit of its `^{}` entry when there is one.
fn advertised_tips(
    heads: Vec<(String, Oid)>,
    wanted: impl Fn(&str) -> bool,
) -> BTreeMap<String, Oid> {
    let mut tips = BTreeMap::new();
    let mut peeled = Vec::new();
    for (name, oid) in heads {
        match name.strip_suffix("^{}") {
            Some(tag) if wanted(tag) => peeled.push((tag.to_owned(), oid)),
            Some(_) => {}
            None if wanted(&name) => {
                tips.insert(name, oid);
            }
            None => {}
        }
    }
    for (tag, commit) in peeled {
        if let Some(tip) = tips.get_mut(&tag) {
            *tip = commit;
        }
    }
    tips
}

/// A full ref name a fetch may ask for: `refs/…`, valid by git's rules.
pub(super) fn is_fetchable_ref(name: &str) -> bool {
    name.starts_with("refs/") && valid_ref_name(name)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use tempfile::TempDir;

    use super::*;
    use crate::git::test_support::{
        cache_in, fetched, limits, listed, tagged_origin, Origin, FILE,
    };

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
}
