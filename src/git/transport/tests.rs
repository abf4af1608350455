//! Fetches over real servers on loopback (scripts/git-servers): nginx + git http-backend with
//! basic auth, the same over HTTPS from a private CA, OpenSSH's sshd, git daemon.

use std::collections::HashMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::git::test_support::{cache_in, Origin, FILE};
use crate::git::{Access, Cache, Credentials, FetchLimits};

/// The servers of scripts/git-servers, serving `origin` as `app.git`; stopped on drop.
pub(crate) struct Servers {
    dir: TempDir,
    env: HashMap<String, String>,
}

impl Servers {
    pub(crate) fn start(origin: &Origin) -> Servers {
        let dir = TempDir::new().unwrap();
        std::fs::create_dir_all(dir.path().join("repos")).unwrap();
        std::os::unix::fs::symlink(origin.path(), dir.path().join("repos/app.git")).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/git-servers");
        let out = Command::new(&script)
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/git-servers start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Servers { dir, env }
    }

    pub(crate) fn get(&self, key: &str) -> String {
        self.env[key].clone()
    }

    pub(crate) fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.get(key))
    }

    pub(crate) fn http(&self) -> String {
        format!("http://127.0.0.1:{}/app.git", self.get("GIT_HTTP_PORT"))
    }

    pub(crate) fn https(&self, host: &str) -> String {
        format!("https://{host}:{}/app.git", self.get("GIT_HTTPS_PORT"))
    }

    pub(crate) fn ssh(&self, origin: &Origin) -> String {
        format!(
            "ssh://127.0.0.1:{}{}",
            self.get("GIT_SSH_PORT"),
            origin.path().display()
        )
    }

    pub(crate) fn git(&self) -> String {
        format!("git://127.0.0.1:{}/app.git", self.get("GIT_DAEMON_PORT"))
    }

    pub(crate) fn token(&self) -> String {
        std::fs::read_to_string(self.path("GIT_TOKEN_FILE"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// The server takes a new token; the old one is refused from now on.
    pub(crate) fn rotate(&self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/git-servers");
        let ok = Command::new(script)
            .arg("rotate")
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// The deploy key and the pinned host key.
    pub(crate) fn ssh_access(&self) -> Access {
        Access {
            credentials: Credentials::SshKey(self.path("GIT_DEPLOY_KEY")),
            known_hosts: Some(self.path("GIT_KNOWN_HOSTS")),
            ca_file: None,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/git-servers");
        let _ = Command::new(script)
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn limits(timeout: Duration) -> FetchLimits {
    FetchLimits {
        timeout,
        max_bytes: 1 << 30,
    }
}

fn main_ref() -> Vec<String> {
    vec!["refs/heads/main".to_string()]
}

fn fetch(cache: &Cache, url: &str, access: &Access) -> anyhow::Result<()> {
    cache.fetch(url, &main_ref(), access, &limits(Duration::from_secs(30)))
}

fn error(cache: &Cache, url: &str, access: &Access) -> String {
    format!("{:#}", fetch(cache, url, access).unwrap_err())
}

fn token_file(dir: &Path, token: &str) -> PathBuf {
    let f = dir.join("token");
    std::fs::write(&f, format!("{token}\n")).unwrap();
    f
}

#[test]
fn http_with_basic_auth_reads_the_token_file_at_every_fetch() {
    let origin = Origin::new();
    let first = origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
    let servers = Servers::start(&origin);
    let tmp = TempDir::new().unwrap();
    let cache = cache_in(tmp.path());
    let file = token_file(tmp.path(), &servers.token());
    let access = Access::from(Credentials::TokenFile(file.clone()));

    fetch(&cache, &servers.http(), &access).unwrap();
    assert_eq!(cache.resolve("refs/heads/main").unwrap(), Some(first));

    // The origin rotates the token: the old one is refused, and the error says which one.
    servers.rotate();
    let second = origin.commit("refs/heads/main", &[("a", FILE, b"2")]);
    let refused = error(&cache, &servers.http(), &access);
    assert!(
        refused.contains("HTTP 401") && refused.contains(&file.display().to_string()),
        "{refused}"
    );
    // The new token is written to the file: the next fetch uses it, no restart.
    std::fs::write(&file, servers.token()).unwrap();
    fetch(&cache, &servers.http(), &access).unwrap();
    assert_eq!(cache.resolve("refs/heads/main").unwrap(), Some(second));

    // No credentials at all: say what to set.
    let none = error(&cache, &servers.http(), &Access::default());
    assert!(
        none.contains("needs credentials") && none.contains("token_file"),
        "{none}"
    );
}

#[test]
fn a_wrong_token_inside_the_repo_url_is_named_and_never_shown() {
    let origin = Origin::new();
    origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
    let servers = Servers::start(&origin);
    let tmp = TempDir::new().unwrap();
    let cache = cache_in(tmp.path());
    let port = servers.get("GIT_HTTP_PORT");
    let wrong = format!("http://x-access-token:not-the-token@127.0.0.1:{port}/app.git");
    let e = error(&cache, &wrong, &Access::default());
    assert!(
        e.contains("credentials in the repo URL") && e.contains("401"),
        "{e}"
    );
    assert!(!e.contains("not-the-token"), "the token leaked: {e}");
    let right = format!(
        "http://x-access-token:{}@127.0.0.1:{port}/app.git",
        servers.token()
    );
    fetch(&cache, &right, &Access::default()).unwrap();
}

#[test]
fn https_from_a_private_ca_needs_ca_file_and_the_certificates_name() {
    let origin = Origin::new();
    let tip = origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
    let servers = Servers::start(&origin);
    let tmp = TempDir::new().unwrap();
    let cache = cache_in(tmp.path());
    let token = Credentials::TokenFile(token_file(tmp.path(), &servers.token()));

    let untrusted = error(
        &cache,
        &servers.https("localhost"),
        &Access::from(token.clone()),
    );
    assert!(
        untrusted.contains("CA this host does not trust") && untrusted.contains("ca_file"),
        "{untrusted}"
    );
    let trusted = Access {
        credentials: token,
        ca_file: Some(servers.path("GIT_CA")),
        known_hosts: None,
    };
    // The certificate is for `localhost`, not for 127.0.0.1.
    let mismatch = error(&cache, &servers.https("127.0.0.1"), &trusted);
    assert!(mismatch.contains("host-name mismatch"), "{mismatch}");
    fetch(&cache, &servers.https("localhost"), &trusted).unwrap();
    assert_eq!(cache.resolve("refs/heads/main").unwrap(), Some(tip));
}

#[test]
fn ssh_pins_the_host_key_and_tells_changed_from_unknown() {
    let origin = Origin::new();
    let first = origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
    let servers = Servers::start(&origin);
    let tmp = TempDir::new().unwrap();
    let cache = cache_in(tmp.path());
    let url = servers.ssh(&origin);
    let access = servers.ssh_access();

    fetch(&cache, &url, &access).unwrap();
    assert_eq!(cache.resolve("refs/heads/main").unwrap(), Some(first));
    // The next fetch rides the control master the first one left.
    let second = origin.commit("refs/heads/main", &[("a", FILE, b"2")]);
    fetch(&cache, &url, &access).unwrap();
    assert_eq!(cache.resolve("refs/heads/main").unwrap(), Some(second));
    let sockets = std::fs::read_dir(cache.repo().path().join("dockhand-ssh"))
        .unwrap()
        .count();
    assert_eq!(sockets, 1, "one control socket for the app");

    let pinned = |line: String| {
        let f = tmp.path().join(format!("known_hosts-{}", line.len()));
        std::fs::write(&f, line).unwrap();
        Access {
            known_hosts: Some(f),
            ..access.clone()
        }
    };
    let port = servers.get("GIT_SSH_PORT");
    let real = std::fs::read_to_string(servers.path("GIT_KNOWN_HOSTS")).unwrap();
    let real_key = real.split_once(' ').unwrap().1.trim().to_string();
    let other = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(tmp.path().join("other"))
        .status()
        .unwrap();
    assert!(other.success());
    let other_key = std::fs::read_to_string(tmp.path().join("other.pub")).unwrap();
    let other_key: Vec<&str> = other_key.split(' ').take(2).collect();

    // Each case in a fresh cache: an open control master would skip the host key check.
    let fresh = || cache_in(TempDir::new().unwrap().keep().as_path());
    let changed = error(
        &fresh(),
        &url,
        &pinned(format!("[127.0.0.1]:{port} {}\n", other_key.join(" "))),
    );
    assert!(
        changed.contains("CHANGED") && changed.contains("man-in-the-middle"),
        "{changed}"
    );
    let unknown = error(&fresh(), &url, &pinned(String::new()));
    assert!(
        unknown.contains("unknown") && !unknown.contains("CHANGED"),
        "{unknown}"
    );
    // OpenSSH: a port-less entry is for port 22 only.
    let portless = error(&fresh(), &url, &pinned(format!("127.0.0.1 {real_key}\n")));
    assert!(portless.contains("unknown"), "{portless}");
}

#[test]
fn git_daemon_origins_are_fetched() {
    let origin = Origin::new();
    let tip = origin.commit("refs/heads/main", &[("a", FILE, b"1")]);
    let servers = Servers::start(&origin);
    let tmp = TempDir::new().unwrap();
    let cache = cache_in(tmp.path());
    fetch(&cache, &servers.git(), &Access::default()).unwrap();
    assert_eq!(cache.resolve("refs/heads/main").unwrap(), Some(tip));
}

/// An origin that accepts connections and never sends a byte.
fn silent_origin() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(2).flatten() {
            let mut c = conn;
            let mut buf = [0u8; 1024];
            let _ = c.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = c.read(&mut buf);
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(5));
    });
    (addr, t)
}

#[test]
fn fetch_timeout_bounds_an_origin_that_accepts_and_never_answers() {
    for scheme in ["http", "git"] {
        let (addr, _t) = silent_origin();
        let tmp = TempDir::new().unwrap();
        let cache = cache_in(tmp.path());
        let start = Instant::now();
        let e = cache
            .fetch(
                &format!("{scheme}://{addr}/app.git"),
                &main_ref(),
                &Access::default(),
                &limits(Duration::from_millis(800)),
            )
            .unwrap_err();
        let took = start.elapsed();
        let e = format!("{e:#}");
        assert!(e.contains("timed out"), "{scheme}: {e}");
        assert!(
            took < Duration::from_secs(4),
            "{scheme}: gave up after {took:?}"
        );
    }
}

#[test]
fn a_deploy_key_with_a_passphrase_is_refused_up_front() {
    let tmp = TempDir::new().unwrap();
    let key = tmp.path().join("key");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let e = format!("{:#}", super::check_ssh_key(&key).unwrap_err());
    assert!(e.contains("passphrase"), "{e}");
    std::fs::write(&key, "not a key").unwrap();
    let e = format!("{:#}", super::check_ssh_key(&key).unwrap_err());
    assert!(e.contains("cannot load it"), "{e}");
}

#[test]
fn a_cache_fed_by_many_fetches_is_compacted_into_one_pack_keeping_every_object() {
    let origin = Origin::new();
    let servers = Servers::start(&origin);
    let tmp = TempDir::new().unwrap();
    let cache = cache_in(tmp.path());
    let mut commits = Vec::new();
    for i in 0..crate::git::MAX_PACKS + 3 {
        commits.push(origin.commit("refs/heads/main", &[("a", FILE, format!("{i}").as_bytes())]));
        fetch(&cache, &servers.git(), &Access::default()).unwrap();
    }
    // A force push leaves the old commits reachable from no ref: they must survive.
    let forced = origin.commit_tree(
        "refs/heads/side",
        origin.tree(&[("b", FILE, b"other")]),
        "unrelated",
    );
    origin
        .repo
        .reference("refs/heads/main", forced, true, "force")
        .unwrap();
    fetch(&cache, &servers.git(), &Access::default()).unwrap();
    let pack_dir = cache.repo().path().join("objects/pack");
    let packs = || {
        super::super::files_with_extension(&pack_dir, "pack")
            .unwrap()
            .len()
    };
    assert!(
        packs() > crate::git::MAX_PACKS,
        "one pack per fetch: {}",
        packs()
    );

    let repacked = cache.compact().unwrap().expect("compaction was due");
    assert!(repacked > 2 * commits.len(), "{repacked}");
    assert_eq!(packs(), 1);
    let reopened = Cache::open_or_init(cache.repo().path()).unwrap();
    for c in &commits {
        assert_eq!(reopened.resolve(&c.to_string()).unwrap(), Some(*c));
    }
    let changes = reopened.changes(Some(commits[0]), Some(forced)).unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(reopened.compact().unwrap(), None, "nothing due right after");
}

/// `len` bytes no compressor shrinks (xorshift from `seed`).
fn incompressible(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn compaction_rewrites_only_the_small_packs_while_the_largest_holds_most_bytes() {
    let origin = Origin::new();
    let servers = Servers::start(&origin);
    let tmp = TempDir::new().unwrap();
    let cache = cache_in(tmp.path());
    // A first fetch of 200 files of incompressible bytes: the base pack.
    let files: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("f{i}"), incompressible(i + 1, 2_000)))
        .collect();
    let mut spec: Vec<(&str, i32, &[u8])> = files
        .iter()
        .map(|(p, c)| (p.as_str(), FILE, c.as_slice()))
        .collect();
    let first = origin.commit("refs/heads/main", &spec);
    fetch(&cache, &servers.git(), &Access::default()).unwrap();
    let pack_dir = cache.repo().path().join("objects/pack");
    let packs = || super::super::files_with_extension(&pack_dir, "pack").unwrap();
    let base = packs();
    assert_eq!(base.len(), 1);
    let mut commits = vec![first];
    let contents: Vec<String> = (0..=crate::git::MAX_PACKS)
        .map(|i| format!("{i}"))
        .collect();
    for c in &contents {
        spec[0].2 = c.as_bytes();
        commits.push(origin.commit("refs/heads/main", &spec));
        fetch(&cache, &servers.git(), &Access::default()).unwrap();
    }
    assert!(packs().len() > crate::git::MAX_PACKS, "{}", packs().len());

    let repacked = cache.compact().unwrap().expect("compaction was due");
    assert!(
        repacked < 4 * contents.len(),
        "only the small packs: {repacked}"
    );
    let after = packs();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(after.contains(&base[0]), "the base pack is kept as it was");
    let reopened = Cache::open_or_init(cache.repo().path()).unwrap();
    for c in &commits {
        assert_eq!(reopened.resolve(&c.to_string()).unwrap(), Some(*c));
    }
    let changes = reopened
        .changes(None, Some(*commits.last().unwrap()))
        .unwrap();
    assert_eq!(changes.len(), 200);
    assert_eq!(reopened.compact().unwrap(), None, "nothing due right after");
}

#[test]
fn the_size_cap_holds_on_the_first_fetch_over_every_transport() {
    let origin = Origin::new();
    // 3 MB on the wire whatever the transport compresses.
    let big = incompressible(0x2545_f491_4f6c_dd1d, 3_000_000);
    origin.commit("refs/heads/main", &[("big.bin", FILE, &big)]);
    let servers = Servers::start(&origin);
    let tmp = TempDir::new().unwrap();
    let token = Access::from(Credentials::TokenFile(token_file(
        tmp.path(),
        &servers.token(),
    )));
    let cases = [
        (
            "path",
            origin.path().display().to_string(),
            Access::default(),
        ),
        ("http", servers.http(), token),
        ("ssh", servers.ssh(&origin), servers.ssh_access()),
        ("git", servers.git(), Access::default()),
    ];
    for (name, url, access) in cases {
        let dir = TempDir::new().unwrap();
        let cache = cache_in(dir.path());
        let capped = FetchLimits {
            timeout: Duration::from_secs(30),
            max_bytes: 1_000_000,
        };
        let e = cache
            .fetch(&url, &main_ref(), &access, &capped)
            .expect_err(name);
        assert!(format!("{e:#}").contains("size cap"), "{name}: {e:#}");
        assert_eq!(cache.resolve("refs/heads/main").unwrap(), None, "{name}");
        // Stopped at the cap, not after taking everything in.
        let kept = du(&cache.repo().path().join("objects"));
        assert!(
            kept < 2_000_000,
            "{name}: {kept} bytes written under a 1 MB cap"
        );
    }
}

/// Bytes of the files under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        total += match meta.is_dir() {
            true => du(&entry.path()),
            false => meta.len(),
        };
    }
    total
}
