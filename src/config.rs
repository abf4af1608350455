//! The TOML configuration: parsed strictly, validated once at startup, then immutable.
//!
//! Every error names the field that is wrong (`apps[0] (web).secret_env: …`), so `dockhand check`
//! can point at the line to fix. Secrets are read here and only here; their `Debug` is redacted.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use bytesize::ByteSize;
use serde::Deserialize;

use crate::git::{Access, Credentials, FetchLimits};
use crate::github::events::Repository;
use crate::redact::{redact_url, Secret};

/// GitHub's own maximum webhook payload size, our default body cap.
pub const DEFAULT_BODY_LIMIT: u64 = 25 * 1024 * 1024;

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub apps: Vec<AppConfig>,
    /// API bearer tokens (`[[tokens]]`). None configured: the write API is off and reads are open.
    pub tokens: Vec<ApiToken>,
}

/// One `[[tokens]]` entry: who may call the API for which apps. `Debug` never shows the token.
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// Recorded as the `actor` of every deploy the token causes.
    pub name: String,
    /// SHA-256 of the token: every comparison is over 32 bytes, so neither a byte nor the
    /// token's length leaks through timing.
    pub digest: TokenDigest,
    pub scope: TokenScope,
}

/// The SHA-256 of an API token. `Debug` redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// The digest of a presented or configured token.
    pub fn of(token: &[u8]) -> TokenDigest {
        use sha2::Digest as _;
        TokenDigest(sha2::Sha256::digest(token).into())
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

/// The apps a token may act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// `apps = ["*"]`.
    All,
    Apps(Vec<String>),
}

impl ApiToken {
    /// Whether this token may act on app `name`.
    pub fn may(&self, app: &str) -> bool {
        match &self.scope {
            TokenScope::All => true,
            TokenScope::Apps(apps) => apps.iter().any(|a| a == app),
        }
    }
}

/// The `[server]` section.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Holds `dockhand.db` and `repos/<app>.git`; never inside any volume.
    pub state_dir: PathBuf,
    /// Bodies larger than this get 413 while streaming, before any HMAC work.
    pub body_limit: u64,
    /// Whole-request deadline (headers and body): slow clients get 408, never a stuck worker.
    pub request_timeout: Duration,
    /// Deploys waiting per app before webhooks get 503 (a storm of pushes stays bounded).
    pub queue_limit: usize,
    /// Finished deploys and deliveries older than this are pruned hourly (the newest
    /// [`KEEP_DEPLOYS_PER_APP`] deploys of each app and the deployed one are always kept).
    pub history_retention: Duration,
    /// Longest an API call with `?wait=true` holds its answer before it answers 202 anyway.
    pub wait_timeout: Duration,
    /// The operator's deploy hooks (`<stage>` and `<app>/<stage>`), if any; never inside a
    /// volume, so nothing a repository contains can become a hook.
    pub hooks_dir: Option<PathBuf>,
    /// How long one hook may run before its process group is killed, unless the app says.
    pub hook_timeout: Duration,
}

/// A hook's time limit when neither the server nor the app sets one.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Deploys of each app kept whatever their age, so recent history and rollback targets survive.
pub const KEEP_DEPLOYS_PER_APP: u32 = 100;

/// One deployable app.
#[derive(Clone)]
pub struct AppConfig {
    pub name: String,
    /// Origin URL or local path that dockhand fetches from.
    pub repo: String,
    /// GitHub `owner/name` to match payloads against; derived from `repo` when not given.
    pub repository: Option<String>,
    pub branch: String,
    /// Tag pattern (`v*`) whose pushes deploy too.
    pub tags: Option<TagPattern>,
    /// The webhook secret; `None` only for an app that polls (it takes no webhooks: every
    /// delivery for it is refused, never accepted unsigned).
    pub secret: Option<Secret>,
    /// Whether the secret was written inline in the config file (`check` warns).
    pub inline_secret: bool,
    /// The host directory the container mounts; dockhand writes the tree here.
    pub volume: PathBuf,
    pub layout: Layout,
    pub reload: Reload,
    /// Where in each deployed tree dockhand writes `REVISION` (the commit, ref and deploy id),
    /// relative to the tree; `None` (`revision_file = ""`): nowhere.
    pub revision_file: Option<PathBuf>,
    /// The container a signal/exec/restart reload acts on, for an app without
    /// `[apps.container]` (one dockhand does not run itself); `None`: the live container.
    pub reload_container: Option<String>,
    /// Health check after a fast deploy; on failure the previous commit is put back.
    pub check: Option<FastCheck>,
    /// A fast deploy whose post-deploy hook fails is reverted like a failed check.
    pub revert_on_hook_failure: bool,
    /// Take over a non-empty volume on the first deploy instead of refusing.
    pub adopt: bool,
    pub fetch_limits: FetchLimits,
    /// How long a reload may take (a restart: plus its stop grace) before the deploy fails.
    pub reload_timeout: Duration,
    /// The most bytes of file content one deploy may write (`max_tree_size`): a commit whose
    /// paths share one blob fetches little and could write without bound.
    pub max_tree_size: u64,
    /// Credentials, `ca_file` and `known_hosts`: how fetches reach the origin.
    pub access: Access,
    /// The app's container, for the full path; `None`: fast path only.
    pub container: Option<ContainerConfig>,
    /// The built-in reverse proxy in front of the app, if any.
    pub proxy: Option<ProxyConfig>,
    /// Lock the app when a rollback is asked for, so the next push does not undo it.
    pub lock_on_rollback: bool,
    /// This app's hook time limit; `None`: `server.hook_timeout`.
    pub hook_timeout: Option<Duration>,
    /// How often the origin's tracked refs are listed, to deploy a push whose webhook never
    /// arrived (GitHub does not redeliver, and sends nothing for more than three tags pushed
    /// at once); zero: never.
    pub poll: Duration,
}

/// How often an app's origin is polled unless the config says otherwise.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5 * 60);
/// The shortest poll interval accepted (other than zero, which turns polling off).
pub const MIN_POLL: Duration = Duration::from_secs(1);

/// `[apps.proxy]`: a stable address dockhand serves and forwards to whichever container is live.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where the proxy listens (the app's public address).
    pub listen: SocketAddr,
    /// A fixed upstream, for an app dockhand does not run in a container; `None`: the live
    /// container's loopback port.
    pub upstream: Option<SocketAddr>,
    /// How long an upstream may take to send its response head; then 504.
    pub timeout: Duration,
    /// How long a full deploy waits for requests still open on the old container before it
    /// stops it anyway.
    pub drain_timeout: Duration,
    /// Start in maintenance mode (every request answered 503 with `maintenance_body`).
    pub maintenance: bool,
    pub maintenance_body: String,
    /// During a fast deploy's reload, new requests wait (at most this long each) until the app
    /// passes its check again, instead of meeting a reloading app server. Zero: never hold.
    pub hold_timeout: Duration,
    /// At most this many requests wait at once during a hold; more are answered 503.
    pub hold_max: usize,
}

/// The file in each deployed tree that says what it is, unless the config says otherwise.
pub const DEFAULT_REVISION_FILE: &str = "REVISION";

/// How long a request may be held during a reload, unless the config says otherwise.
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(10);
/// How many requests may be held at once, unless the config says otherwise.
pub const DEFAULT_HOLD_MAX: usize = 10_000;

/// What the proxy answers while an app is in maintenance, unless the config says otherwise.
pub const DEFAULT_MAINTENANCE_BODY: &str =
    "This service is down for maintenance and will be back shortly.\n";

impl fmt::Debug for ContainerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerConfig")
            .field("image", &self.image)
            .field("mount", &self.mount)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("cmd", &self.cmd)
            .field("strategy", &self.strategy)
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

/// How a full deploy replaces the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Start the new container beside the old one, switch when healthy (needs a fresh port).
    StartFirst,
    /// Stop the old one first (a fixed port); if the new one fails, start the old one again.
    StopFirst,
}

/// `[apps.container]`: how the full path runs the app. `Debug` shows env names, never values.
#[derive(Clone)]
pub struct ContainerConfig {
    /// Image reference; `{sha}`, `{short_sha}`, `{ref}`, `{branch}`, `{tag}` replaced per deploy.
    pub image: String,
    /// Where the volume is mounted inside the container.
    pub mount: String,
    /// Environment (plain values, and values read from dockhand's own env vars or files at
    /// startup); `PORT` is set by dockhand.
    pub env: Vec<(String, String)>,
    /// Command overriding the image's.
    pub cmd: Option<Vec<String>>,
    /// Mounts besides the code volume.
    pub mounts: Vec<crate::runtime::Mount>,
    /// Docker restart policy of the containers (default `unless-stopped`).
    pub restart: String,
    /// Registry credentials for pulls; `None`: those in `docker_config`, else anonymous.
    pub registry_auth: Option<crate::runtime::Credentials>,
    /// Docker's `config.json` (`docker login`), read at each pull so rotated logins apply.
    pub docker_config: PathBuf,
    /// Health gate, probed at `http://127.0.0.1:PORT{health_path}`.
    pub health_path: String,
    /// Text the health answer must contain; `{sha}`/`{short_sha}` replaced.
    pub expect_body_contains: Option<String>,
    pub health_grace: Duration,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub health_failures: u32,
    pub health_deadline: Duration,
    /// How long the old container gets to stop before it is killed.
    pub stop_grace: Duration,
    /// A fixed port (`PORT`); `None`: a fresh loopback port per container.
    pub port: Option<u16>,
    /// Images of this many recent full deploys are kept; older ones are removed after success.
    pub keep_images: usize,
    pub strategy: Strategy,
    /// After a full deploy or a swap went live, keep probing the new container's health URL
    /// (and counting the proxy's 5xx from it) this long, the old container kept paused (or
    /// stopped) to switch back to; zero: retire it at once.
    pub watch: Duration,
    /// Changed paths that force the full path.
    pub full_paths: globset::GlobSet,
}

/// A compiled tag glob, keeping its source text for messages.
#[derive(Debug, Clone)]
pub struct TagPattern {
    pub pattern: String,
    matcher: globset::GlobMatcher,
}

impl TagPattern {
    /// Whether a tag name (without `refs/tags/`) matches.
    pub fn matches(&self, tag: &str) -> bool {
        self.matcher.is_match(tag)
    }
}

/// How the running app learns that its code changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Touch this file (relative to the deployed tree), e.g. uWSGI's `touch-reload`.
    Touch(PathBuf),
    /// Send this signal (`SIGHUP`, …) to the app's container, e.g. gunicorn's graceful reload.
    Signal(String),
    /// Run this command (argv) inside the app's container; a non-zero exit fails the reload.
    Exec(Vec<String>),
    /// Restart the app's container.
    Restart,
    /// Start a second container from the image the live one runs (no pull) on the new
    /// release, health-gate it, switch the proxy, drain and stop the old one. Each container
    /// mounts its own `releases/<sha>`: its tree never changes under it.
    Swap,
    /// Nothing: the app watches its files itself.
    None,
}

impl fmt::Display for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reload::Touch(p) => write!(f, "touch {}", p.display()),
            Reload::Signal(s) => write!(f, "signal {s}"),
            Reload::Exec(argv) => write!(f, "exec {argv:?}"),
            Reload::Restart => f.write_str("restart the container"),
            Reload::Swap => f.write_str("swap in a new container on the same image"),
            Reload::None => f.write_str("none"),
        }
    }
}

impl Reload {
    /// Whether this reload acts on a container (rather than on the volume).
    pub fn needs_container(&self) -> bool {
        matches!(self, Reload::Signal(_) | Reload::Exec(_) | Reload::Restart)
    }
}

/// Signals a reload may send, by their names without `SIG`.
const SIGNALS: [&str; 9] = [
    "HUP", "USR1", "USR2", "INT", "QUIT", "TERM", "WINCH", "TTIN", "TTOU",
];

/// `[apps.check]`: the health check after a fast deploy's reload; a failure reverts the deploy.
#[derive(Debug, Clone)]
pub struct FastCheck {
    /// Loopback only: `http://127.0.0.1:PORT/path`.
    pub url: String,
    pub status: Option<u16>,
    /// `{sha}`/`{short_sha}` replaced: a version endpoint proves the new code answers.
    pub expect_body_contains: Option<String>,
    pub grace: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    pub deadline: Duration,
    /// Wrong-status answers tolerated in a row before the check fails (and the deploy is
    /// reverted) without waiting for the deadline. Refused connections, timeouts and the old
    /// version still answering (body without the new `{sha}`) only count against `deadline`.
    pub failures: u32,
    /// After the check passed, keep probing this long (zero: not at all); more than `failures`
    /// failed probes in a row revert the deploy. A newer queued deploy ends the watch early.
    pub watch: Duration,
}

/// Wrong answers in a row a fast check tolerates, unless the config says otherwise: at the
/// default 250 ms interval a broken push is reverted about 0.75 s after its first 5xx.
pub const DEFAULT_CHECK_FAILURES: u32 = 2;

/// How the deployed tree is kept in the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The volume is the tree, updated in place (only changed paths are written).
    InPlace,
    /// `releases/<sha>/` per deployed commit plus a `current` symlink switched in one rename;
    /// the app runs from `current`. The `keep` most recently live releases are kept.
    Releases { keep: usize },
}

impl fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppConfig")
            .field("name", &self.name)
            .field("repo", &redact_url(&self.repo))
            .field("repository", &self.repository)
            .field("branch", &self.branch)
            .field("tags", &self.tags.as_ref().map(|t| &t.pattern))
            .field("secret", &self.secret)
            .field("volume", &self.volume)
            .field("layout", &self.layout)
            .field("reload", &self.reload)
            .field("adopt", &self.adopt)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl AppConfig {
    /// Full ref name of the tracked branch.
    pub fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    /// Whether a payload's repository is this app's.
    ///
    /// With `repository = "owner/name"` only `full_name` counts; otherwise `repo` is compared with
    /// the payload's URLs and `full_name` after normalising scheme, user, `.git` and case.
    pub fn matches_repository(&self, repo: &Repository) -> bool {
        if let Some(full_name) = &self.repository {
            return full_name.eq_ignore_ascii_case(&repo.full_name);
        }
        let ours = normalize_repo_url(&self.repo);
        let urls = [
            &repo.clone_url,
            &repo.ssh_url,
            &repo.html_url,
            &repo.git_url,
        ];
        if urls
            .into_iter()
            .flatten()
            .any(|u| normalize_repo_url(u) == ours)
        {
            return true;
        }
        let full_name = repo.full_name.to_ascii_lowercase();
        !full_name.is_empty() && ours.ends_with(&format!("/{full_name}"))
    }

    /// What the app is matched against, for messages.
    pub fn repository_label(&self) -> String {
        self.repository
            .clone()
            .unwrap_or_else(|| redact_url(&self.repo))
    }

    /// What this app tracks, for messages: `branch main, tags v*`.
    pub fn tracking_label(&self) -> String {
        match &self.tags {
            Some(t) => format!("branch {}, tags {}", self.branch, t.pattern),
            None => format!("branch {}", self.branch),
        }
    }
}

/// Lower-cased host/path form of a repository URL, so `https://github.com/a/b.git`,
/// `git@github.com:a/b` and `ssh://git@github.com/a/b/` compare equal.
fn normalize_repo_url(url: &str) -> String {
    let mut s = url.trim().to_ascii_lowercase();
    for scheme in ["https://", "http://", "ssh://", "git://", "file://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            s = rest.to_string();
            break;
        }
    }
    if let Some((user, rest)) = s.split_once('@') {
        if !user.contains('/') {
            s = rest.to_string();
        }
    }
    // scp-like `host:owner/name`
    if let Some((host, path)) = s.split_once(':') {
        if !host.contains('/') && !path.starts_with("//") {
            s = format!("{host}/{}", path.trim_start_matches('/'));
        }
    }
    let s = s.trim_end_matches('/');
    s.strip_suffix(".git").unwrap_or(s).to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    #[serde(default)]
    apps: Vec<RawApp>,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    apps: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    state_dir: PathBuf,
    body_limit: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    queue_limit: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    history_retention: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    wait_timeout: Option<Duration>,
    hooks_dir: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    hook_timeout: Option<Duration>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8700))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: String,
    repo: String,
    repository: Option<String>,
    branch: Option<String>,
    tags: Option<String>,
    secret: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    volume: PathBuf,
    layout: Option<String>,
    keep_releases: Option<usize>,
    touch: Option<PathBuf>,
    revision_file: Option<PathBuf>,
    signal: Option<String>,
    exec: Option<Vec<String>>,
    #[serde(default)]
    restart: bool,
    #[serde(default)]
    swap: bool,
    reload_container: Option<String>,
    check: Option<RawCheck>,
    #[serde(default)]
    revert_on_hook_failure: bool,
    #[serde(default)]
    adopt: bool,
    #[serde(default, with = "humantime_serde")]
    fetch_timeout: Option<Duration>,
    max_fetch_size: Option<ByteSize>,
    max_tree_size: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    reload_timeout: Option<Duration>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    ssh_key: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    container: Option<RawContainer>,
    proxy: Option<RawProxy>,
    lock_on_rollback: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    hook_timeout: Option<Duration>,
    poll: Option<RawPoll>,
}

/// `poll = "5m"`, or `poll = 0` (off) written as a bare number.
enum RawPoll {
    Text(String),
    Number(i64),
}

impl<'de> Deserialize<'de> for RawPoll {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawPoll, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawPoll;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"5m\", or 0 to turn polling off")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPoll, E> {
                Ok(RawPoll::Text(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawPoll, E> {
                Ok(RawPoll::Number(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    url: String,
    status: Option<u16>,
    expect_body_contains: Option<String>,
    #[serde(default, with = "humantime_serde")]
    grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    deadline: Option<Duration>,
    failures: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    watch: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    listen: SocketAddr,
    upstream: Option<SocketAddr>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    drain_timeout: Option<Duration>,
    #[serde(default)]
    maintenance: bool,
    maintenance_body: Option<String>,
    #[serde(default, with = "humantime_serde")]
    hold_timeout: Option<Duration>,
    hold_max: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    source: PathBuf,
    target: String,
    #[serde(default)]
    read_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainer {
    image: String,
    mount: String,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
    /// Container variable → name of an environment variable of dockhand's.
    #[serde(default)]
    env_from_env: std::collections::BTreeMap<String, String>,
    /// Container variable → file whose contents are the value.
    #[serde(default)]
    env_from_file: std::collections::BTreeMap<String, PathBuf>,
    cmd: Option<Vec<String>>,
    #[serde(default)]
    mounts: Vec<RawMount>,
    restart: Option<String>,
    registry_username: Option<String>,
    registry_password_env: Option<String>,
    registry_password_file: Option<PathBuf>,
    docker_config: Option<PathBuf>,
    health_path: Option<String>,
    expect_body_contains: Option<String>,
    #[serde(default, with = "humantime_serde")]
    health_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    health_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    health_timeout: Option<Duration>,
    health_failures: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    health_deadline: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    stop_grace: Option<Duration>,
    port: Option<u16>,
    strategy: Option<Strategy>,
    #[serde(default, with = "humantime_serde")]
    watch: Option<Duration>,
    keep_images: Option<usize>,
    full_paths: Option<Vec<String>>,
    #[serde(default)]
    full_paths_extra: Vec<String>,
}

impl Config {
    /// Read, parse and validate the config file. Relative paths are resolved against the file's
    /// directory. Returns the config and the warnings `check` should print.
    pub fn load(path: &Path) -> anyhow::Result<(Config, Vec<String>)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::parse(&text, base).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Parse and validate config text; `base` resolves relative paths.
    pub fn parse(text: &str, base: &Path) -> anyhow::Result<(Config, Vec<String>)> {
        let raw: RawConfig = toml::from_str(text)?;
        let mut warnings = Vec::new();
        let server = ServerConfig {
            listen: raw.server.listen,
            state_dir: absolute(base, &raw.server.state_dir),
            body_limit: raw
                .server
                .body_limit
                .map_or(DEFAULT_BODY_LIMIT, |b| b.as_u64()),
            request_timeout: raw
                .server
                .request_timeout
                .unwrap_or(Duration::from_secs(30)),
            queue_limit: raw.server.queue_limit.unwrap_or(64),
            history_retention: raw
                .server
                .history_retention
                .unwrap_or(Duration::from_secs(90 * 24 * 3600)),
            wait_timeout: raw.server.wait_timeout.unwrap_or(Duration::from_secs(300)),
            hooks_dir: raw.server.hooks_dir.map(|d| absolute(base, &d)),
            hook_timeout: raw.server.hook_timeout.unwrap_or(DEFAULT_HOOK_TIMEOUT),
        };
        if server.body_limit == 0 {
            bail!("server.body_limit: must be greater than zero");
        }
        if server.queue_limit == 0 {
            bail!("server.queue_limit: must be greater than zero");
        }
        if server.hook_timeout.is_zero() {
            bail!("server.hook_timeout: must be greater than zero");
        }
        if let Some(dir) = &server.hooks_dir {
            if !dir.is_dir() {
                bail!(
                    "server.hooks_dir: {} does not exist or is not a directory",
                    dir.display()
                );
            }
        }
        if raw.apps.is_empty() {
            warnings.push("no [[apps]] configured: every webhook will be refused".to_string());
        }
        if !server.listen.ip().is_loopback() {
            warnings.push(format!(
                "server.listen {} is reachable beyond this host: API tokens and webhook bodies \
                 cross the network in clear unless TLS is in front (a reverse proxy terminating HTTPS)",
                server.listen
            ));
        }
        let mut secret_files: Vec<(String, PathBuf)> = Vec::new();
        for app in &raw.apps {
            let name = &app.name;
            for (field, file) in [
                ("secret_file", &app.secret_file),
                ("token_file", &app.token_file),
                ("ssh_key", &app.ssh_key),
            ] {
                if let Some(f) = file {
                    secret_files.push((format!("app {name}: {field}"), absolute(base, f)));
                }
            }
            if let Some(c) = &app.container {
                if let Some(f) = &c.registry_password_file {
                    secret_files.push((
                        format!("app {name}: registry_password_file"),
                        absolute(base, f),
                    ));
                }
                for (var, f) in &c.env_from_file {
                    secret_files.push((
                        format!("app {name}: env_from_file.{var}"),
                        absolute(base, f),
                    ));
                }
            }
        }
        for t in &raw.tokens {
            if let Some(f) = &t.token_file {
                secret_files.push((format!("token {}: token_file", t.name), absolute(base, f)));
            }
        }
        warnings.extend(permission_warnings(
            &secret_files,
            server.hooks_dir.as_deref(),
        ));
        let mut names = HashSet::new();
        let mut apps = Vec::with_capacity(raw.apps.len());
        for (i, app) in raw.apps.into_iter().enumerate() {
            let label = format!("apps[{i}] ({})", app.name);
            if !names.insert(app.name.clone()) {
                bail!("{label}.name: duplicate app name {:?}", app.name);
            }
            let app = validate_app(app, base, &mut warnings).with_context(|| label.clone())?;
            // Compared as the filesystem resolves them: `..` and symlinks cannot hide an
            // overlap.
            let volume = resolved(&app.volume);
            if overlap(&volume, &resolved(&server.state_dir)) {
                bail!("{label}.volume: must not overlap server.state_dir (git metadata never lives in a volume)");
            }
            if let Some(dir) = &server.hooks_dir {
                if overlap(&volume, &resolved(dir)) {
                    bail!("{label}.volume: must not overlap server.hooks_dir (a repository's files are never hooks)");
                }
            }
            if let Some(other) = apps
                .iter()
                .find(|a: &&AppConfig| overlap(&volume, &resolved(&a.volume)))
            {
                bail!(
                    "{label}.volume: {} overlaps app {}'s volume {} (each app owns its volume alone)",
                    app.volume.display(),
                    other.name,
                    other.volume.display()
                );
            }
            if let Some(proxy) = &app.proxy {
                let taken = proxy.listen.port() != 0
                    && (proxy.listen == server.listen
                        || apps.iter().any(|a: &AppConfig| {
                            a.proxy.as_ref().is_some_and(|p| p.listen == proxy.listen)
                        }));
                if taken {
                    bail!(
                        "{label}.proxy.listen: {} is already used by the server or another app",
                        proxy.listen
                    );
                }
            }
            apps.push(app);
        }
        let tokens = validate_tokens(raw.tokens, &names, base, &mut warnings)?;
        Ok((
            Config {
                server,
                apps,
                tokens,
            },
            warnings,
        ))
    }

    /// The app called `name`.
    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The SQLite file.
    pub fn database_path(&self) -> PathBuf {
        self.server.state_dir.join("dockhand.db")
    }

    /// The bare cache repository of an app.
    pub fn cache_path(&self, app: &str) -> PathBuf {
        self.server
            .state_dir
            .join("repos")
            .join(format!("{app}.git"))
    }

    /// Where a full deploy's trial container gets its copy of the new tree (state dir: never
    /// a volume, so no container running the app sees it).
    pub fn trial_path(&self, app: &str) -> PathBuf {
        self.server.state_dir.join("trial").join(app)
    }
}

fn validate_app(raw: RawApp, base: &Path, warnings: &mut Vec<String>) -> anyhow::Result<AppConfig> {
    let access = validate_access(&raw, base, warnings)?;
    if !valid_name(&raw.name) {
        bail!(
            "name: {:?} must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit",
            raw.name
        );
    }
    if raw.repo.trim().is_empty() || raw.repo.starts_with('-') {
        bail!("repo: must be a URL or path (and not start with '-')");
    }
    let branch = raw.branch.unwrap_or_else(|| "main".to_string());
    if branch.starts_with('-') || !crate::git::valid_ref_name(&format!("refs/heads/{branch}")) {
        bail!("branch: {branch:?} is not a valid branch name");
    }
    let tags = match raw.tags {
        Some(pattern) => {
            let glob = globset::GlobBuilder::new(&pattern)
                .literal_separator(true)
                .build()
                .with_context(|| format!("tags: bad glob {pattern:?}"))?;
            Some(TagPattern {
                pattern,
                matcher: glob.compile_matcher(),
            })
        }
        None => None,
    };
    let poll = poll_interval(raw.poll)?;
    let no_secret = raw.secret.is_none() && raw.secret_env.is_none() && raw.secret_file.is_none();
    let (secret, inline_secret) = match no_secret {
        true if poll.is_zero() => bail!(
            "secret: missing; set secret_env or secret_file (an app without a webhook secret must poll, and poll is \"0s\")"
        ),
        true => {
            warnings.push(format!(
                "app {}: no webhook secret: it takes no webhooks and deploys by polling (every {})",
                raw.name,
                humantime_serde::re::humantime::format_duration(poll)
            ));
            (None, false)
        }
        false => {
            let (secret, inline) = read_secret(
                &raw.secret,
                &raw.secret_env,
                &raw.secret_file,
                base,
                "secret",
            )?;
            (Some(secret), inline)
        }
    };
    if inline_secret {
        warnings.push(format!(
            "app {}: the webhook secret is written inline in the config file; prefer secret_env or secret_file",
            raw.name
        ));
    }
    let volume = absolute(base, &raw.volume);
    match volume.parent() {
        Some(parent) if parent.is_dir() => {}
        _ => bail!(
            "volume: parent directory of {} does not exist or is not readable",
            volume.display()
        ),
    }
    if volume.exists() && !volume.is_dir() {
        bail!("volume: {} exists and is not a directory", volume.display());
    }
    let layout = match (raw.layout.as_deref(), raw.keep_releases) {
        (None | Some("in-place"), None) => Layout::InPlace,
        (None | Some("in-place"), Some(_)) => {
            bail!("keep_releases: only meaningful with layout = \"releases\"")
        }
        (Some("releases"), keep) => {
            let keep = keep.unwrap_or(5);
            if keep < 2 {
                bail!(
                    "keep_releases: must be at least 2 (the live release and one to roll back to)"
                );
            }
            Layout::Releases { keep }
        }
        (Some(other), _) => bail!("layout: {other:?} is not one of in-place, releases"),
    };
    let revision_file = match raw.revision_file {
        None => Some(PathBuf::from(DEFAULT_REVISION_FILE)),
        Some(p) if p.as_os_str().is_empty() => None,
        Some(p) => {
            check_relative(&p).context("revision_file")?;
            Some(p)
        }
    };
    if raw.swap {
        if raw.touch.is_some() || raw.signal.is_some() || raw.exec.is_some() || raw.restart {
            bail!("touch, signal, exec, restart and swap: set at most one (how the app reloads)");
        }
        let Some(container) = &raw.container else {
            bail!("swap: needs [apps.container] (the container it replaces)");
        };
        if !matches!(layout, Layout::Releases { .. }) {
            bail!(
                "swap: needs layout = \"releases\" (each container mounts its own releases/<sha>)"
            );
        }
        if container.port.is_some() {
            bail!("swap: the new container starts beside the old one on a fresh port; remove container.port");
        }
        if raw.proxy.is_none() {
            bail!(
                "swap: needs [apps.proxy] (clients must not follow the container's changing port)"
            );
        }
        if let Some(check) = &raw.check {
            bail!(
                "check: with swap the new container is gated by [apps.container] health_path and expect_body_contains \
                 before it gets a request; remove [apps.check] (url {})",
                check.url
            );
        }
    }
    let reload = match (raw.touch, raw.signal, raw.exec, raw.restart) {
        _ if raw.swap => Reload::Swap,
        (Some(rel), None, None, false) => {
            check_relative(&rel).context("touch")?;
            Reload::Touch(rel)
        }
        (None, Some(signal), None, false) => {
            let name = signal.trim_start_matches("SIG").to_ascii_uppercase();
            if !SIGNALS.contains(&name.as_str()) {
                bail!("signal: {signal:?} is not one of {}", SIGNALS.join(", "));
            }
            Reload::Signal(format!("SIG{name}"))
        }
        (None, None, Some(argv), false) => {
            if argv.first().is_none_or(|a| a.is_empty()) {
                bail!("exec: must be a non-empty command, e.g. [\"pm2\", \"reload\", \"all\"]");
            }
            Reload::Exec(argv)
        }
        (None, None, None, true) => Reload::Restart,
        (None, None, None, false) => Reload::None,
        _ => bail!("touch, signal, exec and restart: set at most one (how the app reloads)"),
    };
    if reload.needs_container() && raw.container.is_none() && raw.reload_container.is_none() {
        bail!(
            "reload_container: a signal, exec or restart reload needs a container: add [apps.container], \
             or name the running container with reload_container"
        );
    }
    if raw.reload_container.is_some() && raw.container.is_some() {
        bail!("reload_container: the app has [apps.container]; its live container is reloaded");
    }
    let check = raw.check.map(validate_check).transpose().context("check")?;
    let fetch_limits = FetchLimits {
        timeout: raw.fetch_timeout.unwrap_or(Duration::from_secs(300)),
        max_bytes: raw
            .max_fetch_size
            .map_or(2 * 1024 * 1024 * 1024, |b| b.as_u64()),
    };
    let max_tree_size = raw
        .max_tree_size
        .map_or(DEFAULT_MAX_TREE_SIZE, |b| b.as_u64());
    if max_tree_size == 0 {
        bail!("max_tree_size: must be more than 0 bytes");
    }
    let reload_timeout = raw.reload_timeout.unwrap_or(Duration::from_secs(60));
    if reload_timeout.is_zero() {
        bail!("reload_timeout: must be more than 0s");
    }
    let container = raw
        .container
        .map(|c| validate_container(c, base))
        .transpose()
        .context("container")?;
    let proxy = raw
        .proxy
        .map(|p| validate_proxy(p, container.is_some()))
        .transpose()
        .context("proxy")?;
    if raw.hook_timeout.is_some_and(|t| t.is_zero()) {
        bail!("hook_timeout: must be greater than zero");
    }
    Ok(AppConfig {
        poll,
        container,
        proxy,
        hook_timeout: raw.hook_timeout,
        name: raw.name,
        repo: raw.repo,
        repository: raw.repository,
        branch,
        tags,
        secret,
        inline_secret,
        volume,
        layout,
        reload,
        revision_file,
        reload_container: raw.reload_container,
        check,
        revert_on_hook_failure: raw.revert_on_hook_failure,
        adopt: raw.adopt,
        fetch_limits,
        access,
        max_tree_size,
        reload_timeout,
        lock_on_rollback: raw.lock_on_rollback.unwrap_or(true),
    })
}

/// `poll`: a duration of at least [`MIN_POLL`], or zero (off); [`DEFAULT_POLL`] when absent.
fn poll_interval(raw: Option<RawPoll>) -> anyhow::Result<Duration> {
    let poll = match raw {
        None => return Ok(DEFAULT_POLL),
        Some(RawPoll::Number(0)) => return Ok(Duration::ZERO),
        Some(RawPoll::Number(n)) => {
            bail!("poll: {n} has no unit; write a duration such as \"5m\" or \"30s\" (0 turns polling off)")
        }
        Some(RawPoll::Text(text)) => humantime_serde::re::humantime::parse_duration(&text)
            .with_context(|| {
                format!("poll: {text:?} is not a duration such as \"5m\" or \"30s\" (\"0s\" turns polling off)")
            })?,
    };
    if !poll.is_zero() && poll < MIN_POLL {
        bail!(
            "poll: {poll:?} is too often; at least {MIN_POLL:?} (each poll lists the origin's refs), or \"0s\" to turn polling off"
        );
    }
    Ok(poll)
}

fn validate_check(raw: RawCheck) -> anyhow::Result<FastCheck> {
    crate::runtime::ProbeTarget::parse(&raw.url).context("url")?;
    if raw.status.is_some_and(|s| !(100..600).contains(&s)) {
        bail!("status: must be an HTTP status (100-599)");
    }
    Ok(FastCheck {
        url: raw.url,
        status: raw.status,
        expect_body_contains: raw.expect_body_contains,
        grace: raw.grace.unwrap_or(Duration::ZERO),
        interval: raw.interval.unwrap_or(Duration::from_millis(250)),
        timeout: raw.timeout.unwrap_or(Duration::from_secs(2)),
        deadline: raw.deadline.unwrap_or(Duration::from_secs(30)),
        failures: raw.failures.unwrap_or(DEFAULT_CHECK_FAILURES),
        watch: raw.watch.unwrap_or(Duration::ZERO),
    })
}

fn validate_proxy(raw: RawProxy, has_container: bool) -> anyhow::Result<ProxyConfig> {
    match (raw.upstream, has_container) {
        (Some(_), true) => bail!(
            "upstream: the app has a container, whose live port is the upstream; remove upstream"
        ),
        (None, false) => bail!(
            "upstream: required for an app without [apps.container] (the address its process listens on)"
        ),
        _ => {}
    }
    let timeout = raw.timeout.unwrap_or(Duration::from_secs(60));
    if timeout.is_zero() {
        bail!("timeout: must be greater than zero");
    }
    Ok(ProxyConfig {
        listen: raw.listen,
        upstream: raw.upstream,
        timeout,
        drain_timeout: raw.drain_timeout.unwrap_or(Duration::from_secs(30)),
        maintenance: raw.maintenance,
        maintenance_body: raw
            .maintenance_body
            .unwrap_or_else(|| DEFAULT_MAINTENANCE_BODY.to_string()),
        hold_timeout: raw.hold_timeout.unwrap_or(DEFAULT_HOLD_TIMEOUT),
        hold_max: match raw.hold_max {
            Some(0) => {
                bail!("hold_max: must be at least 1 (hold_timeout = \"0s\" turns holding off)")
            }
            Some(n) => n,
            None => DEFAULT_HOLD_MAX,
        },
    })
}

/// Tokens shorter than this get a `check` warning.
const SHORT_TOKEN: usize = 16;

fn validate_tokens(
    raw: Vec<RawToken>,
    app_names: &HashSet<String>,
    base: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<ApiToken>> {
    let mut tokens: Vec<ApiToken> = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let label = format!("tokens[{i}] ({})", t.name);
        if !valid_name(&t.name) {
            bail!(
                "{label}.name: {:?} must be 1-64 of [A-Za-z0-9._-], starting with a letter or digit",
                t.name
            );
        }
        if tokens.iter().any(|other| other.name == t.name) {
            bail!("{label}.name: duplicate token name {:?}", t.name);
        }
        let (secret, _) = read_secret(&None, &t.token_env, &t.token_file, base, "token")
            .with_context(|| label.clone())?;
        let value = secret.expose();
        if value.iter().any(|b| !b.is_ascii_graphic()) {
            bail!("{label}: the token must be printable ASCII without spaces (it is sent in a header)");
        }
        if value.len() < SHORT_TOKEN {
            warnings.push(format!(
                "{label}: the token is shorter than {SHORT_TOKEN} characters; use e.g. `openssl rand -hex 32`"
            ));
        }
        let digest = TokenDigest::of(value);
        if let Some(other) = tokens.iter().find(|o| o.digest == digest) {
            bail!(
                "{label}: the same token as {:?}; each token must be distinct so the actor is known",
                other.name
            );
        }
        let scope = if t.apps.iter().any(|a| a == "*") {
            if t.apps.len() > 1 {
                bail!("{label}.apps: \"*\" stands alone (it already means every app)");
            }
            TokenScope::All
        } else {
            if t.apps.is_empty() {
                bail!("{label}.apps: empty; name apps, or [\"*\"] for every app");
            }
            if let Some(unknown) = t.apps.iter().find(|a| !app_names.contains(*a)) {
                bail!("{label}.apps: unknown app {unknown:?}");
            }
            TokenScope::Apps(t.apps)
        };
        tokens.push(ApiToken {
            name: t.name,
            digest,
            scope,
        });
    }
    Ok(tokens)
}

/// An app or token name: usable in URLs and messages as is.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate_container(raw: RawContainer, base: &Path) -> anyhow::Result<ContainerConfig> {
    if raw.image.trim().is_empty() || raw.image.starts_with('-') {
        bail!("image: must be an image reference");
    }
    if !raw.mount.starts_with('/') {
        bail!(
            "mount: {:?} must be an absolute path inside the container",
            raw.mount
        );
    }
    let mut env: Vec<(String, String)> = raw.env.into_iter().collect();
    for (name, var) in raw.env_from_env {
        let value = std::env::var(&var).with_context(|| {
            format!("env_from_env.{name}: environment variable {var} is not set")
        })?;
        env.push((name, value));
    }
    for (name, file) in raw.env_from_file {
        let file = absolute(base, &file);
        let value = std::fs::read_to_string(&file)
            .with_context(|| format!("env_from_file.{name}: cannot read {}", file.display()))?;
        env.push((name, value.trim_end_matches(['\n', '\r']).to_string()));
    }
    if let Some((name, _)) = env
        .iter()
        .find(|(k, _)| k == "PORT" || k.is_empty() || k.contains('='))
    {
        bail!(
            "env: {name:?} cannot be set (PORT is dockhand's; names must be non-empty without '=')"
        );
    }
    if raw.cmd.as_ref().is_some_and(|c| c.is_empty()) {
        bail!("cmd: must not be empty (leave it out to use the image's)");
    }
    let mut mounts = Vec::with_capacity(raw.mounts.len());
    for m in raw.mounts {
        if !m.target.starts_with('/') || m.target == raw.mount {
            bail!(
                "mounts: target {:?} must be absolute and differ from mount",
                m.target
            );
        }
        mounts.push(crate::runtime::Mount {
            source: absolute(base, &m.source),
            target: m.target,
            read_only: m.read_only,
        });
    }
    let registry_auth = match raw.registry_username {
        None if raw.registry_password_env.is_some() || raw.registry_password_file.is_some() => {
            bail!("registry_username: missing, but a registry password is set")
        }
        None => None,
        Some(username) => {
            let (password, _) = read_secret(
                &None,
                &raw.registry_password_env,
                &raw.registry_password_file,
                base,
                "registry_password",
            )?;
            let password = String::from_utf8(password.into_bytes())
                .map_err(|_| anyhow::anyhow!("registry_password: must be UTF-8"))?;
            Some(crate::runtime::Credentials {
                username,
                password,
                server: None,
            })
        }
    };
    let restart = raw.restart.unwrap_or_else(|| "unless-stopped".to_string());
    if !matches!(
        restart.as_str(),
        "no" | "always" | "unless-stopped" | "on-failure"
    ) {
        bail!("restart: {restart:?} is not one of no, always, unless-stopped, on-failure");
    }
    let health_path = raw.health_path.unwrap_or_else(|| "/".to_string());
    if !health_path.starts_with('/') {
        bail!("health_path: {health_path:?} must start with /");
    }
    let strategy = match (raw.strategy, raw.port) {
        (Some(Strategy::StartFirst), Some(port)) => bail!(
            "strategy: start-first runs two containers at once, which cannot share the fixed port {port}; \
             remove port (a fresh loopback port per container) or use stop-first"
        ),
        (Some(s), _) => s,
        (None, Some(_)) => Strategy::StopFirst,
        (None, None) => Strategy::StartFirst,
    };
    if raw.port == Some(0) {
        bail!("port: must not be 0");
    }
    let mut full_paths: Vec<String> = match raw.full_paths {
        Some(list) => list,
        None => DEFAULT_FULL_PATHS.iter().map(|s| s.to_string()).collect(),
    };
    full_paths.extend(raw.full_paths_extra);
    let full_paths = compile_globs(&full_paths).context("full_paths")?;
    Ok(ContainerConfig {
        image: raw.image,
        mount: raw.mount,
        env,
        cmd: raw.cmd,
        mounts,
        restart,
        registry_auth,
        docker_config: match raw.docker_config {
            Some(path) => absolute(base, &path),
            None => std::env::var_os("DOCKER_CONFIG")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
                .unwrap_or_else(|| PathBuf::from("/root/.docker"))
                .join("config.json"),
        },
        health_path,
        expect_body_contains: raw.expect_body_contains,
        health_grace: raw.health_grace.unwrap_or(Duration::ZERO),
        health_interval: raw.health_interval.unwrap_or(Duration::from_millis(250)),
        health_timeout: raw.health_timeout.unwrap_or(Duration::from_secs(2)),
        health_failures: raw.health_failures.unwrap_or(u32::MAX),
        health_deadline: raw.health_deadline.unwrap_or(Duration::from_secs(60)),
        stop_grace: raw.stop_grace.unwrap_or(Duration::from_secs(10)),
        port: raw.port,
        keep_images: raw.keep_images.unwrap_or(5).max(1),
        strategy,
        watch: raw.watch.unwrap_or(Duration::ZERO),
        full_paths,
    })
}

/// Paths whose change means the image must be rebuilt: image definitions and dependency
/// manifests/lockfiles of the common ecosystems. An app may replace or extend this list.
pub const DEFAULT_FULL_PATHS: &[&str] = &[
    "Containerfile",
    "Dockerfile*",
    ".dockerignore",
    "compose*.y*ml",
    "requirements*.txt",
    "Pipfile.lock",
    "poetry.lock",
    "uv.lock",
    "package.json",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "Gemfile",
    "Gemfile.lock",
    "go.sum",
    "Cargo.lock",
    "composer.lock",
];

/// Compile glob patterns (matched against whole relative paths; a pattern without `/` also
/// matches the file name in any directory, as `.gitignore` users expect): how `full_paths`
/// matches, for the config and the planner alike.
pub fn compile_globs(patterns: &[impl AsRef<str>]) -> Result<globset::GlobSet, globset::Error> {
    let glob = |p: &str| globset::GlobBuilder::new(p).literal_separator(true).build();
    let mut set = globset::GlobSetBuilder::new();
    for p in patterns {
        let p = p.as_ref();
        set.add(glob(p)?);
        if !p.contains('/') {
            set.add(glob(&format!("**/{p}"))?);
        }
    }
    set.build()
}

/// `{short_sha}`'s length: git's default abbreviation, and what CI tags images with
/// (`git rev-parse --short`, docker/metadata-action's `type=sha`).
pub const SHORT_SHA: usize = 7;

/// Replace `{sha}`, `{short_sha}`, `{ref}` (short ref name), `{branch}` and `{tag}` (the ref's
/// name when it is a branch or a tag, else empty) in a template.
pub fn render(template: &str, sha: &str, git_ref: &str) -> String {
    let branch = git_ref.strip_prefix("refs/heads/").unwrap_or_default();
    let tag = git_ref.strip_prefix("refs/tags/").unwrap_or_default();
    let short_ref = if branch.is_empty() && tag.is_empty() {
        git_ref
    } else {
        &git_ref[git_ref.len() - branch.len() - tag.len()..]
    };
    template
        .replace("{sha}", sha)
        .replace("{short_sha}", sha.get(..SHORT_SHA).unwrap_or(sha))
        .replace("{ref}", short_ref)
        .replace("{branch}", branch)
        .replace("{tag}", tag)
}

/// Exactly one of inline / env / file; never empty. Returns the secret and whether it was inline.
/// How the app's fetches reach its origin. The token file is only checked here: it is read
/// again at every fetch, so a rotated token needs no restart.
/// What `check` says about files others could read or write: a secret readable by every user,
/// a hooks directory or hook that someone other than its owner may change (it runs as dockhand).
fn permission_warnings(secrets: &[(String, PathBuf)], hooks_dir: Option<&Path>) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).ok().map(|m| m.permissions().mode());
    let mut warnings = Vec::new();
    for (what, file) in secrets {
        if mode(file).is_some_and(|m| m & 0o004 != 0) {
            warnings.push(format!(
                "{what} {} is readable by every user on this host: chmod o-r (600 or 640)",
                file.display()
            ));
        }
    }
    let Some(dir) = hooks_dir else {
        return warnings;
    };
    // hooks_dir/<stage> and hooks_dir/<app>/<stage>, and the directories between.
    fn walk(d: &Path, depth: usize, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            found.push(p.clone());
            if depth > 0 && p.is_dir() {
                walk(&p, depth - 1, found);
            }
        }
    }
    let mut check = vec![dir.to_path_buf()];
    walk(dir, 1, &mut check);
    for p in check {
        if mode(&p).is_some_and(|m| m & 0o022 != 0) {
            warnings.push(format!(
                "{} (under hooks_dir) is writable by group or others: whoever can write it runs code \
                 as dockhand; chmod go-w",
                p.display()
            ));
        }
    }
    warnings
}

/// `max_tree_size` unless set: far above any real tree, far below a full disk.
const DEFAULT_MAX_TREE_SIZE: u64 = 8 * 1024 * 1024 * 1024;

fn validate_access(
    raw: &RawApp,
    base: &Path,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Access> {
    let credentials = match (&raw.token_env, &raw.token_file, &raw.ssh_key) {
        (None, None, None) => Credentials::None,
        (None, None, Some(key)) => {
            let key = absolute(base, key);
            std::fs::metadata(&key)
                .with_context(|| format!("ssh_key: cannot read {}", key.display()))?;
            crate::git::check_ssh_key(&key)?;
            Credentials::SshKey(key)
        }
        (Some(_), None, None) => {
            let (token, _) = read_secret(&None, &raw.token_env, &None, base, "token")?;
            let token = String::from_utf8(token.into_bytes())
                .map_err(|_| anyhow::anyhow!("token: must be UTF-8"))?;
            Credentials::Token(token.trim().to_string())
        }
        (None, Some(file), None) => {
            // Read now so `check` and startup report a missing or empty file.
            let (token, _) = read_secret(&None, &None, &raw.token_file, base, "token")?;
            String::from_utf8(token.into_bytes())
                .map_err(|_| anyhow::anyhow!("token_file: must be UTF-8"))?;
            Credentials::TokenFile(absolute(base, file))
        }
        _ => bail!("token_env, token_file and ssh_key: set at most one"),
    };
    let scheme = raw
        .repo
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    let has_token = !matches!(credentials, Credentials::None | Credentials::SshKey(_));
    if scheme.as_deref() == Some("http") && (has_token || raw.repo.contains('@')) {
        warnings.push(format!(
            "repo {}: credentials over plain http:// can be read by anyone on the path; use https://",
            redact_url(&raw.repo)
        ));
    }
    let ca_file = raw.ca_file.as_ref().map(|f| absolute(base, f));
    if let Some(f) = &ca_file {
        let pem =
            std::fs::read(f).with_context(|| format!("ca_file: cannot read {}", f.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("ca_file {}: not PEM certificates: {e}", f.display()))?;
        if certs.is_empty() {
            bail!("ca_file {}: holds no PEM certificate", f.display());
        }
    }
    let known_hosts = raw.known_hosts.as_ref().map(|f| absolute(base, f));
    if let Some(f) = &known_hosts {
        std::fs::metadata(f)
            .with_context(|| format!("known_hosts: cannot read {}", f.display()))?;
    }
    Ok(Access {
        credentials,
        ca_file,
        known_hosts,
    })
}

fn read_secret(
    inline: &Option<String>,
    env: &Option<String>,
    file: &Option<PathBuf>,
    base: &Path,
    what: &str,
) -> anyhow::Result<(Secret, bool)> {
    let (value, field) = match (inline, env, file) {
        (Some(s), None, None) => (s.clone().into_bytes(), what.to_string()),
        (None, Some(var), None) => {
            let v = std::env::var(var)
                .with_context(|| format!("{what}_env: environment variable {var} is not set"))?;
            (v.into_bytes(), format!("{what}_env"))
        }
        (None, None, Some(path)) => {
            let path = absolute(base, path);
            let mut v = std::fs::read(&path)
                .with_context(|| format!("{what}_file: cannot read {}", path.display()))?;
            while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                v.pop();
            }
            (v, format!("{what}_file"))
        }
        (None, None, None) => bail!("{what}: missing; set {what}_env or {what}_file"),
        _ => bail!("{what}, {what}_env and {what}_file: set exactly one"),
    };
    if value.iter().all(|b| b.is_ascii_whitespace()) {
        bail!("{field}: the {what} is empty (an empty secret would let anyone deploy)");
    }
    Ok((Secret::new(value), inline.is_some()))
}

fn check_relative(path: &Path) -> anyhow::Result<()> {
    let ok = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        bail!(
            "{} must be a relative path inside the deployed tree (no '..', no leading '/')",
            path.display()
        );
    }
    Ok(())
}

/// `path` as the filesystem resolves it: `.` and `..` folded, and the longest existing
/// prefix's symlinks resolved (what does not exist yet is kept as written).
fn resolved(path: &Path) -> PathBuf {
    let mut folded = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                folded.pop();
            }
            std::path::Component::CurDir => {}
            other => folded.push(other),
        }
    }
    let mut existing = folded.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return folded,
        }
    }
}

/// Whether one of two resolved paths is inside the other (or they are the same).
fn overlap(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn absolute(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(full_name: &str, clone_url: &str) -> Repository {
        Repository {
            full_name: full_name.into(),
            clone_url: Some(clone_url.into()),
            ..Default::default()
        }
    }

    fn parse(apps: &str) -> anyhow::Result<(Config, Vec<String>)> {
        let dir = std::env::temp_dir();
        let text = format!("[server]\nstate_dir = \"/var/lib/dockhand-test\"\n{apps}");
        Config::parse(&text, &dir)
    }

    const APP: &str = "[[apps]]\nname = \"web\"\nrepo = \"https://github.com/Acme/Web.git\"\nsecret = \"s3cret\"\nvolume = \"/tmp/dockhand-web\"\n";

    #[test]
    fn volumes_may_not_overlap_each_other_the_state_dir_or_hooks_even_through_dotdot_or_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("state")).unwrap();
        std::fs::create_dir_all(root.join("srv/web/hooks")).unwrap();
        std::os::unix::fs::symlink(root.join("state"), root.join("looks-elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.join("srv/web/hooks"), root.join("hooks")).unwrap();
        let app = |name: &str, volume: &str| {
            format!(
                "[[apps]]\nname = \"{name}\"\nrepo = \"https://github.com/Acme/Web.git\"\n\
                 secret = \"s3cret\"\nvolume = \"{volume}\"\n"
            )
        };
        let config = |server_extra: &str, apps: &str| {
            let text = format!(
                "[server]\nstate_dir = \"{}\"\n{server_extra}{apps}",
                root.join("state").display()
            );
            Config::parse(&text, root)
                .map(|_| ())
                .map_err(|e| format!("{e:#}"))
        };
        let web = root.join("srv/web");
        let web = web.display();

        assert!(config("", &app("web", &web.to_string())).is_ok());
        let err = config(
            "",
            &format!(
                "{}{}",
                app("web", &web.to_string()),
                app("api", &web.to_string())
            ),
        )
        .unwrap_err();
        assert!(err.contains("overlaps app web's volume"), "{err}");
        let nested = format!("{web}/static");
        let err = config(
            "",
            &format!("{}{}", app("web", &web.to_string()), app("api", &nested)),
        )
        .unwrap_err();
        assert!(err.contains("overlaps app web's volume"), "{err}");
        let dotdot = format!("{web}/../../state/inside");
        let err = config("", &app("web", &dotdot)).unwrap_err();
        assert!(err.contains("must not overlap server.state_dir"), "{err}");
        let through_link = format!("{}/looks-elsewhere/apps", root.display());
        let err = config("", &app("web", &through_link)).unwrap_err();
        assert!(err.contains("must not overlap server.state_dir"), "{err}");
        // hooks_dir is a symlink into the volume: the repository's hooks/ would run as dockhand.
        let hooks = format!("hooks_dir = \"{}/hooks\"\n", root.display());
        let err = config(&hooks, &app("web", &web.to_string())).unwrap_err();
        assert!(err.contains("must not overlap server.hooks_dir"), "{err}");
    }

    #[test]
    fn check_warns_about_readable_secrets_writable_hooks_and_an_api_beyond_loopback() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret-value").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let hooks = dir.path().join("hooks");
        std::fs::create_dir_all(hooks.join("web")).unwrap();
        let hook = hooks.join("web/post-deploy");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o777)).unwrap();
        let text = |listen: &str| {
            format!(
                "[server]\nlisten = \"{listen}\"\nstate_dir = \"{}/state\"\nhooks_dir = \"{}\"\n\
                 [[apps]]\nname = \"web\"\nrepo = \"https://github.com/Acme/Web.git\"\n\
                 secret_file = \"{}\"\nvolume = \"{}/volume\"\n",
                dir.path().display(),
                hooks.display(),
                secret.display(),
                dir.path().display()
            )
        };
        let (_, warnings) = Config::parse(&text("0.0.0.0:9000"), dir.path()).unwrap();
        let all = warnings.join("\n");
        assert!(
            all.contains("secret_file") && all.contains("readable by every user"),
            "{all}"
        );
        assert!(
            all.contains("post-deploy") && all.contains("writable by group or others"),
            "{all}"
        );
        assert!(
            all.contains("0.0.0.0:9000 is reachable beyond this host"),
            "{all}"
        );

        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (_, warnings) = Config::parse(&text("127.0.0.1:9000"), dir.path()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    /// Found by the `refs_paths` fuzz target: a NUL in the branch (TOML allows `\u0000`)
    /// panicked inside git2 instead of failing the config check.
    #[test]
    fn a_branch_holding_a_nul_is_a_config_error() {
        let err = parse(&format!("{APP}branch = \"ma\\u0000in\"\n")).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("branch"), "{err}");
    }

    #[test]
    fn minimal_app_gets_defaults_and_warns_about_inline_secret() {
        let (config, warnings) = parse(APP).unwrap();
        let app = &config.apps[0];
        assert_eq!(app.branch, "main");
        assert_eq!(app.reload, Reload::None);
        assert_eq!(config.server.body_limit, DEFAULT_BODY_LIMIT);
        assert!(
            warnings.iter().any(|w| w.contains("inline")),
            "{warnings:?}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&format!("{APP}colour = \"blue\"\n")).unwrap_err();
        assert!(format!("{err:#}").contains("colour"), "{err:#}");
    }

    #[test]
    fn empty_secret_is_refused() {
        let err = parse(&APP.replace("s3cret", " ")).unwrap_err();
        assert!(format!("{err:#}").contains("empty"), "{err:#}");
    }

    #[test]
    fn missing_secret_env_names_the_variable() {
        let text = APP.replace(
            "secret = \"s3cret\"",
            "secret_env = \"DOCKHAND_TEST_SURELY_UNSET\"",
        );
        let err = parse(&text).unwrap_err();
        assert!(
            format!("{err:#}").contains("DOCKHAND_TEST_SURELY_UNSET"),
            "{err:#}"
        );
    }

    #[test]
    fn bad_tag_glob_and_escaping_touch_are_refused() {
        assert!(
            format!("{:#}", parse(&format!("{APP}tags = \"v[\"\n")).unwrap_err()).contains("tags")
        );
        assert!(format!(
            "{:#}",
            parse(&format!("{APP}touch = \"../x\"\n")).unwrap_err()
        )
        .contains("touch"));
    }

    #[test]
    fn option_like_branch_is_refused() {
        assert!(format!(
            "{:#}",
            parse(&format!("{APP}branch = \"-x\"\n")).unwrap_err()
        )
        .contains("branch"));
    }

    #[test]
    fn repository_matches_any_url_form() {
        let (config, _) = parse(APP).unwrap();
        let app = &config.apps[0];
        assert!(app.matches_repository(&repo("Acme/Web", "https://github.com/Acme/Web.git")));
        assert!(app.matches_repository(&Repository {
            full_name: "x/y".into(),
            ssh_url: Some("git@github.com:acme/web.git".into()),
            ..Default::default()
        }));
        assert!(!app.matches_repository(&repo("acme/other", "https://github.com/acme/other.git")));
    }

    #[test]
    fn explicit_repository_is_the_only_match() {
        let (config, _) = parse(&format!("{APP}repository = \"acme/web\"\n")).unwrap();
        let app = &config.apps[0];
        assert!(app.matches_repository(&repo("ACME/web", "file:///elsewhere")));
        assert!(!app.matches_repository(&repo("acme/webx", "https://github.com/Acme/Web.git")));
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let (config, _) = parse(APP).unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn image_templates_get_commit_and_ref_placeholders() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            render("r/web:{short_sha}", sha, "refs/heads/main"),
            "r/web:0123456"
        );
        assert_eq!(render("r/web:{tag}", sha, "refs/tags/v1.2"), "r/web:v1.2");
        assert_eq!(
            render("r/{branch}:{sha}", sha, "refs/heads/main"),
            format!("r/main:{sha}")
        );
        assert_eq!(render("r/web:{ref}", sha, "refs/tags/v1.2"), "r/web:v1.2");
        assert_eq!(render("r/web:{tag}", sha, "refs/heads/main"), "r/web:");
    }

    fn with_tokens(tokens: &str) -> anyhow::Result<(Config, Vec<String>)> {
        std::env::set_var("DOCKHAND_TEST_TOKEN_A", "token-a-0123456789abcdef");
        std::env::set_var("DOCKHAND_TEST_TOKEN_B", "token-b-0123456789abcdef");
        std::env::set_var("DOCKHAND_TEST_TOKEN_EMPTY", " ");
        parse(&format!("{APP}{tokens}"))
    }

    const TOKEN_A: &str =
        "[[tokens]]\nname = \"ci\"\ntoken_env = \"DOCKHAND_TEST_TOKEN_A\"\napps = [\"*\"]\n";

    #[test]
    fn tokens_are_read_scoped_and_never_shown_in_debug() {
        let (config, warnings) = with_tokens(&format!(
            "{TOKEN_A}[[tokens]]\nname = \"ops\"\ntoken_env = \"DOCKHAND_TEST_TOKEN_B\"\napps = [\"web\"]\n"
        ))
        .unwrap();
        assert_eq!(config.tokens.len(), 2);
        assert_eq!(config.tokens[0].scope, TokenScope::All);
        assert!(config.tokens[1].may("web") && !config.tokens[1].may("other"));
        assert!(config.apps[0].lock_on_rollback);
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("token-a") && !debug.contains("token-b"),
            "{debug}"
        );
        assert!(
            !warnings.iter().any(|w| w.contains("tokens")),
            "{warnings:?}"
        );
    }

    #[test]
    fn bad_tokens_are_refused_naming_the_field() {
        let cases = [
            (
                TOKEN_A.replace("[\"*\"]", "[\"nope\"]"),
                "tokens[0] (ci).apps: unknown app \"nope\"",
            ),
            (
                TOKEN_A.replace("[\"*\"]", "[]"),
                "tokens[0] (ci).apps: empty",
            ),
            (
                TOKEN_A.replace("DOCKHAND_TEST_TOKEN_A", "DOCKHAND_TEST_TOKEN_EMPTY"),
                "token_env: the token is empty",
            ),
            (
                TOKEN_A.replace("DOCKHAND_TEST_TOKEN_A", "DOCKHAND_TEST_SURELY_UNSET"),
                "token_env: environment variable DOCKHAND_TEST_SURELY_UNSET is not set",
            ),
            (
                format!("{TOKEN_A}{TOKEN_A}"),
                "tokens[1] (ci).name: duplicate",
            ),
            (
                format!("{TOKEN_A}{}", TOKEN_A.replace("\"ci\"", "\"other\"")),
                "the same token as \"ci\"",
            ),
            (TOKEN_A.replace("\"ci\"", "\"-x\""), "tokens[0] (-x).name"),
        ];
        for (tokens, expected) in cases {
            let err = format!("{:#}", with_tokens(&tokens).unwrap_err());
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }

    #[test]
    fn a_proxy_needs_exactly_one_upstream_source_and_its_own_listen_address() {
        let fixed = "[apps.proxy]\nlisten = \"127.0.0.1:8080\"\nupstream = \"127.0.0.1:9000\"\n";
        let (config, _) = parse(&format!("{APP}{fixed}")).unwrap();
        let proxy = config.apps[0].proxy.as_ref().unwrap();
        assert_eq!(proxy.drain_timeout, Duration::from_secs(30));
        assert_eq!(proxy.timeout, Duration::from_secs(60));
        assert!(!proxy.maintenance);
        assert_eq!(proxy.maintenance_body, DEFAULT_MAINTENANCE_BODY);

        let bare = "[apps.proxy]\nlisten = \"127.0.0.1:8080\"\n";
        let err = format!("{:#}", parse(&format!("{APP}{bare}")).unwrap_err());
        assert!(err.contains("proxy: upstream: required"), "{err}");

        let container = "[apps.container]\nimage = \"app:1\"\nmount = \"/code\"\n";
        let err = format!(
            "{:#}",
            parse(&format!("{APP}{container}{fixed}")).unwrap_err()
        );
        assert!(
            err.contains("proxy: upstream: the app has a container"),
            "{err}"
        );
        assert!(parse(&format!("{APP}{container}{bare}")).is_ok());

        let second = APP
            .replace("\"web\"", "\"api\"")
            .replace("dockhand-web", "dockhand-api");
        let err = format!(
            "{:#}",
            parse(&format!("{APP}{fixed}{second}{fixed}")).unwrap_err()
        );
        assert!(
            err.contains("apps[1] (api).proxy.listen: 127.0.0.1:8080 is already used"),
            "{err}"
        );
        let on_server =
            "[apps.proxy]\nlisten = \"127.0.0.1:8700\"\nupstream = \"127.0.0.1:9000\"\n";
        let err = format!("{:#}", parse(&format!("{APP}{on_server}")).unwrap_err());
        assert!(err.contains("already used by the server"), "{err}");
    }

    #[test]
    fn hooks_dir_must_exist_and_hook_timeouts_default_to_sixty_seconds() {
        let (config, _) = parse(APP).unwrap();
        assert_eq!(config.server.hooks_dir, None);
        assert_eq!(config.server.hook_timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(config.apps[0].hook_timeout, None);

        let hooks = tempfile::tempdir().unwrap();
        let server = format!(
            "[server]\nstate_dir = \"/var/lib/dockhand-test\"\nhooks_dir = \"{}\"\nhook_timeout = \"2m\"\n",
            hooks.path().display()
        );
        let text = format!("{server}{APP}hook_timeout = \"5s\"\n");
        let (config, _) = Config::parse(&text, Path::new("/")).unwrap();
        assert_eq!(config.server.hooks_dir.as_deref(), Some(hooks.path()));
        assert_eq!(config.server.hook_timeout, Duration::from_secs(120));
        assert_eq!(config.apps[0].hook_timeout, Some(Duration::from_secs(5)));

        let missing = server.replace(hooks.path().to_str().unwrap(), "/nonexistent/hooks");
        let err = format!("{:#}", Config::parse(&missing, Path::new("/")).unwrap_err());
        assert!(
            err.contains("server.hooks_dir: /nonexistent/hooks does not exist"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            parse(&format!("{APP}hook_timeout = \"0s\"\n")).unwrap_err()
        );
        assert!(
            err.contains("hook_timeout: must be greater than zero"),
            "{err}"
        );
    }

    #[test]
    fn the_releases_layout_keeps_five_by_default_and_at_least_two() {
        assert_eq!(parse(APP).unwrap().0.apps[0].layout, Layout::InPlace);
        let (config, _) = parse(&format!("{APP}layout = \"releases\"\n")).unwrap();
        assert_eq!(config.apps[0].layout, Layout::Releases { keep: 5 });
        for (extra, field) in [
            ("keep_releases = 3\n", "keep_releases: only meaningful"),
            (
                "layout = \"releases\"\nkeep_releases = 1\n",
                "keep_releases: must be at least 2",
            ),
            (
                "layout = \"symlinks\"\n",
                "layout: \"symlinks\" is not one of",
            ),
        ] {
            let err = format!("{:#}", parse(&format!("{APP}{extra}")).unwrap_err());
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn reload_adapters_are_one_of_touch_signal_exec_restart_and_the_container_ones_need_a_container(
    ) {
        let container = "[apps.container]\nimage = \"app:1\"\nmount = \"/code\"\n";
        let reload = |extra: &str| {
            parse(&format!("{APP}{extra}{container}")).map(|(c, _)| c.apps[0].reload.clone())
        };
        assert_eq!(
            reload("signal = \"hup\"\n").unwrap(),
            Reload::Signal("SIGHUP".into())
        );
        assert_eq!(
            reload("signal = \"SIGUSR2\"\n").unwrap(),
            Reload::Signal("SIGUSR2".into())
        );
        assert_eq!(
            reload("exec = [\"pm2\", \"reload\", \"all\"]\n").unwrap(),
            Reload::Exec(vec!["pm2".into(), "reload".into(), "all".into()])
        );
        assert_eq!(reload("restart = true\n").unwrap(), Reload::Restart);
        for (extra, field) in [
            ("signal = \"KILL\"\n", "signal: \"KILL\" is not one of"),
            ("exec = []\n", "exec: must be a non-empty command"),
            ("touch = \"a\"\nsignal = \"HUP\"\n", "set at most one"),
        ] {
            let err = format!("{:#}", reload(extra).unwrap_err());
            assert!(err.contains(field), "{err}");
        }
        // Without [apps.container], a container reload needs reload_container.
        let err = format!(
            "{:#}",
            parse(&format!("{APP}signal = \"HUP\"\n")).unwrap_err()
        );
        assert!(
            err.contains("reload_container: a signal, exec or restart reload needs a container"),
            "{err}"
        );
        let (config, _) = parse(&format!(
            "{APP}signal = \"HUP\"\nreload_container = \"web-1\"\n"
        ))
        .unwrap();
        assert_eq!(config.apps[0].reload_container.as_deref(), Some("web-1"));
    }

    #[test]
    fn swap_needs_a_container_releases_a_proxy_and_no_fixed_port_or_check() {
        let container = "[apps.container]\nimage = \"web:1\"\nmount = \"/app\"\n";
        let proxy = "[apps.proxy]\nlisten = \"127.0.0.1:8080\"\n";
        let releases = "layout = \"releases\"\nswap = true\n";
        let (config, _) = parse(&format!("{APP}{releases}{container}{proxy}")).unwrap();
        assert_eq!(config.apps[0].reload, Reload::Swap);
        for (text, want) in [
            (format!("{APP}swap = true\n{container}{proxy}"), "needs layout = \"releases\""),
            (format!("{APP}{releases}{proxy}"), "swap: needs [apps.container]"),
            (format!("{APP}{releases}{container}"), "swap: needs [apps.proxy]"),
            (
                format!("{APP}{releases}touch = \"uwsgi.ini\"\n{container}{proxy}"),
                "set at most one",
            ),
            (
                format!("{APP}{releases}{container}port = 8000\n{proxy}"),
                "remove container.port",
            ),
            (
                format!("{APP}{releases}{container}{proxy}[apps.check]\nurl = \"http://127.0.0.1:8000/\"\n"),
                "remove [apps.check]",
            ),
        ] {
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(want), "{text}\n→ {err}");
        }
    }

    #[test]
    fn hold_and_fail_fast_defaults_and_limits() {
        let proxy = "[apps.container]\nimage = \"web:1\"\nmount = \"/app\"\n[apps.proxy]\nlisten = \"127.0.0.1:8080\"\n";
        let (config, _) = parse(&format!("{APP}{proxy}")).unwrap();
        let p = config.apps[0].proxy.as_ref().unwrap();
        assert_eq!(
            (p.hold_timeout, p.hold_max),
            (DEFAULT_HOLD_TIMEOUT, DEFAULT_HOLD_MAX)
        );
        assert_eq!(
            config.apps[0].revision_file.as_deref(),
            Some(Path::new("REVISION"))
        );
        let err = format!(
            "{:#}",
            parse(&format!("{APP}{proxy}hold_max = 0\n")).unwrap_err()
        );
        assert!(err.contains("hold_max: must be at least 1"), "{err}");
        let check = "[apps.check]\nurl = \"http://127.0.0.1:8080/version\"\n";
        let (config, _) = parse(&format!("{APP}{check}")).unwrap();
        assert_eq!(
            config.apps[0].check.as_ref().unwrap().failures,
            DEFAULT_CHECK_FAILURES
        );
        let (config, _) = parse(&format!("{APP}revision_file = \"\"\n")).unwrap();
        assert_eq!(config.apps[0].revision_file, None);
        let err = format!(
            "{:#}",
            parse(&format!("{APP}revision_file = \"../x\"\n")).unwrap_err()
        );
        assert!(err.contains("revision_file"), "{err}");
    }

    #[test]
    fn poll_defaults_to_five_minutes_and_zero_turns_it_off() {
        let poll = |extra: &str| {
            parse(&format!("{APP}{extra}"))
                .map(|(c, _)| c.apps[0].poll)
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(poll(""), Ok(DEFAULT_POLL));
        assert_eq!(DEFAULT_POLL, Duration::from_secs(300));
        assert_eq!(poll("poll = \"5m\"\n"), Ok(Duration::from_secs(300)));
        assert_eq!(poll("poll = \"1s\"\n"), Ok(Duration::from_secs(1)));
        assert_eq!(poll("poll = \"1h 30m\"\n"), Ok(Duration::from_secs(5400)));
        assert_eq!(poll("poll = \"0s\"\n"), Ok(Duration::ZERO));
        assert_eq!(poll("poll = 0\n"), Ok(Duration::ZERO));
    }

    #[test]
    fn only_an_app_that_polls_may_go_without_a_webhook_secret() {
        let bare = APP.replace("secret = \"s3cret\"\n", "");
        let (config, warnings) = parse(&bare).unwrap();
        assert!(config.apps[0].secret.is_none());
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("no webhook secret") && w.contains("polling (every 5m)")),
            "{warnings:?}"
        );
        let err = format!(
            "{:#}",
            parse(&format!("{bare}poll = \"0s\"\n")).unwrap_err()
        );
        assert!(
            err.contains("apps[0] (web): secret: missing") && err.contains("must poll"),
            "{err}"
        );
        let (config, _) = parse(&format!("{APP}poll = \"0s\"\n")).unwrap();
        assert!(config.apps[0].secret.is_some());
    }

    #[test]
    fn bad_poll_intervals_are_refused_naming_the_field() {
        for (extra, want) in [
            (
                "poll = \"500ms\"\n",
                "poll: 500ms is too often; at least 1s",
            ),
            ("poll = \"1ns\"\n", "poll: 1ns is too often"),
            ("poll = 30\n", "poll: 30 has no unit"),
            ("poll = -1\n", "poll: -1 has no unit"),
            ("poll = \"soon\"\n", "poll: \"soon\" is not a duration"),
            ("poll = \"5\"\n", "poll: \"5\" is not a duration"),
            (
                "poll = true\n",
                "a duration such as \"5m\", or 0 to turn polling off",
            ),
        ] {
            let err = format!("{:#}", parse(&format!("{APP}{extra}")).unwrap_err());
            assert!(err.contains(want), "{extra:?}: {want:?} not in {err}");
        }
    }

    #[test]
    fn the_fast_path_check_probes_loopback_only() {
        let ok = "[apps.check]\nurl = \"http://127.0.0.1:8080/version\"\nexpect_body_contains = \"{sha}\"\n";
        let (config, _) = parse(&format!("{APP}{ok}")).unwrap();
        let check = config.apps[0].check.as_ref().unwrap();
        assert_eq!(check.deadline, Duration::from_secs(30));
        let far = "[apps.check]\nurl = \"http://example.com/version\"\n";
        let err = format!("{:#}", parse(&format!("{APP}{far}")).unwrap_err());
        assert!(err.contains("check: url"), "{err}");
    }
}
