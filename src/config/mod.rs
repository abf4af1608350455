//! The TOML configuration: parsed strictly, validated once at startup, then immutable.
//!
//! Every error names the field that is wrong (`apps[0] (web).secret_env: …`), so `dockhand check`
//! can point at the line to fix. Secrets are read here and only here; their `Debug` is redacted.
//!
//! # Layout
//! - this module: the validated types the rest of the crate reads ([`Config`], [`AppConfig`],
//!   [`ContainerConfig`], [`Reload`], [`Layout`], …) and their methods.
//! - `raw`: the serde shapes of the file, and every default as a named constant
//!   ([`DEFAULT_QUEUE_LIMIT`], …), re-exported here.
//! - `validate`: raw → validated, section by section; errors name the field.
//! - `resolve`: the only I/O — secrets and credentials read from env vars and files, paths made
//!   absolute and resolved, permissions looked at.
//! - `tokens`: the API tokens (`[[tokens]]`), kept as digests.
//!
//! Secrets and URL redaction are [`crate::redact`]'s, a leaf that every module may use.

mod github;
mod notify;
mod raw;
#[cfg(test)]
mod readme;
mod resolve;
mod tokens;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use crate::git::{Access, FetchLimits};
use crate::github::events::Repository;
use crate::redact::{redact_url, Secret};

pub use github::{AppGithub, GithubAuth, GithubConfig};
pub use notify::{Notifier, NotifyKind, NOTIFY_EVENTS};
pub use raw::{
    DEFAULT_BODY_LIMIT, DEFAULT_BRANCH, DEFAULT_CHECK_DEADLINE, DEFAULT_CHECK_FAILURES,
    DEFAULT_CHECK_GRACE, DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT, DEFAULT_CHECK_WATCH,
    DEFAULT_CONTAINER_WATCH, DEFAULT_DOCKER_CONFIG_DIR, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_FETCH_TIMEOUT, DEFAULT_FULL_PATHS, DEFAULT_HEALTH_DEADLINE, DEFAULT_HEALTH_FAILURES,
    DEFAULT_HEALTH_GRACE, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_PATH, DEFAULT_HEALTH_TIMEOUT,
    DEFAULT_HISTORY_RETENTION, DEFAULT_HOLD_MAX, DEFAULT_HOLD_TIMEOUT, DEFAULT_HOOK_TIMEOUT,
    DEFAULT_KEEP_IMAGES, DEFAULT_KEEP_RELEASES, DEFAULT_LISTEN, DEFAULT_LOCK_ON_ROLLBACK,
    DEFAULT_MAINTENANCE_BODY, DEFAULT_MAX_FETCH_SIZE, DEFAULT_MAX_TREE_SIZE, DEFAULT_POLL,
    DEFAULT_PROXY_TIMEOUT, DEFAULT_QUEUE_LIMIT, DEFAULT_RELOAD_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RESTART, DEFAULT_REVISION_FILE, DEFAULT_STOP_GRACE, DEFAULT_WAIT_TIMEOUT,
};
pub use tokens::{ApiToken, TokenDigest, TokenScope};
pub use validate::MIN_POLL;

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub apps: Vec<AppConfig>,
    /// API bearer tokens (`[[tokens]]`). None configured: the write API is off and reads are open.
    pub tokens: Vec<ApiToken>,
    /// Where deploy events are sent (`[[notify]]`).
    pub notify: Vec<Notifier>,
    /// How GitHub's API is called (`[github]`), for apps with `[apps.github]`.
    pub github: Option<GithubConfig>,
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
    /// A listener of its own for `GET /metrics` (and nothing else); `None`: on `listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// The bearer token a scraper must send for `/metrics`, kept as its digest; `None`: open.
    pub metrics_token: Option<TokenDigest>,
    /// Where people reach dockhand (`https://deploy.example.com`), for links in notifications.
    pub public_url: Option<String>,
    /// How long a dashboard sign-in lasts.
    pub session_ttl: Duration,
    /// Whether the dashboard's session cookie is `Secure` (sent over TLS only); the default is
    /// whether `public_url` is `https://`.
    pub secure_cookies: bool,
}

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
    /// The Swarm service the app is, instead of a container on this host.
    pub swarm: Option<SwarmConfig>,
    /// The built-in reverse proxy in front of the app, if any.
    pub proxy: Option<ProxyConfig>,
    /// Lock the app when a rollback is asked for, so the next push does not undo it.
    pub lock_on_rollback: bool,
    /// The part of the repository the app is made of (a monorepo's service): a push or poll
    /// that changes nothing under it does not deploy; `None`: every change deploys.
    pub paths: Option<AppPaths>,
    /// This app's hook time limit; `None`: `server.hook_timeout`.
    pub hook_timeout: Option<Duration>,
    /// How often the origin's tracked refs are listed, to deploy a push whose webhook never
    /// arrived (GitHub does not redeliver, and sends nothing for more than three tags pushed
    /// at once); zero: never.
    pub poll: Duration,
    /// Deploys recorded as GitHub deployments and commit statuses (`[apps.github]`).
    pub github: Option<AppGithub>,
}

/// `paths`: glob patterns (as [`compile_globs`] reads them) of the files an app is made of.
#[derive(Debug, Clone)]
pub struct AppPaths {
    /// As the config writes them, for reasons and plans.
    pub patterns: Vec<String>,
    pub globs: GlobSet,
}

impl AppPaths {
    /// How many of `changed` fall under the patterns.
    pub fn matching<'p>(&self, changed: impl IntoIterator<Item = &'p Path>) -> usize {
        changed
            .into_iter()
            .filter(|p| self.globs.is_match(p))
            .count()
    }
}

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

/// `[apps.swarm]`: the app is a Docker Swarm service; every deploy rolls it out to an image
/// pinned by digest, by the manager's own rolling update.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// The service, which exists on the manager (`check` looks).
    pub service: String,
    /// The manager's engine (`unix://…`); `None`: `DOCKER_HOST`, else the local socket.
    pub manager: Option<String>,
    /// Image template, as `[apps.container] image`; resolved to a digest per deploy.
    pub image: String,
    pub policy: crate::runtime::RolloutPolicy,
    /// A rollout not converged by then is rolled back and the deploy fails.
    pub deadline: Duration,
    /// The fast path across nodes: the directory (the same path on every node) the service's
    /// tasks mount, laid out as `releases/<sha>` + `current`; `None`: every deploy is full.
    pub code_dir: Option<String>,
    /// dockhand's own image, which the jobs that build and switch releases on the nodes run.
    pub agent_image: Option<String>,
    /// Changed paths that force the full path (as `[apps.container] full_paths`).
    pub full_paths: globset::GlobSet,
    /// The port each (host-network) task answers on at its node's address: with
    /// `[apps.proxy]`, requests go to every running task in turn.
    pub port: Option<u16>,
}

impl SwarmConfig {
    /// The manager's socket as dockhand connects to it.
    pub fn manager_host(&self) -> String {
        self.manager.clone().unwrap_or_else(|| {
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
        })
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

    /// Whether `other` tracks the same repository: the same `repository`, or origins that name
    /// the same repository once scheme, user, `.git` and case are set aside.
    pub fn same_repository(&self, other: &AppConfig) -> bool {
        match (&self.repository, &other.repository) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => normalize_repo_url(&self.repo) == normalize_repo_url(&other.repo),
        }
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
    /// The GitHub `owner/name` this app's deliveries carry: `repository`, else the last two
    /// parts of its origin URL (none for a local path).
    pub fn full_name(&self) -> Option<String> {
        self.repository
            .clone()
            .or_else(|| github::from_url(&self.repo))
    }

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
        let raw: raw::RawConfig = toml::from_str(text)?;
        let metrics_token = tokens::metrics_token(&raw.server, base)?;
        let mut server = validate::server(raw.server, base)?;
        server.metrics_token = metrics_token;
        let mut warnings = validate::server_warnings(&server, &raw.apps, &raw.tokens, base);
        let apps = validate::apps(raw.apps, &server, base, &mut warnings)?;
        let names = apps.iter().map(|a| a.name.clone()).collect();
        let tokens = tokens::validate_tokens(raw.tokens, &names, base, &mut warnings)?;
        let notify = notify::notifiers(raw.notify, &names, base, &mut warnings)?;
        if !notify.is_empty() && server.public_url.is_none() {
            warnings.push(
                "server.public_url: not set, so notifications carry no link to the deploy".into(),
            );
        }
        let github = raw.github.map(|g| github::github(g, base)).transpose()?;
        if let Some(app) = apps.iter().find(|a| a.github.is_some()) {
            if github.is_none() {
                bail!(
                    "apps {:?}: [apps.github] needs a [github] section with its credentials (token_env, token_file, or app_id + private_key_file)",
                    app.name
                );
            }
            if server.public_url.is_none() {
                warnings.push(
                    "server.public_url: not set, so GitHub deployments carry no link to the deploy's page".into(),
                );
            }
        }
        Ok((
            Config {
                server,
                apps,
                tokens,
                notify,
                github,
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

/// Compile glob patterns (matched against whole relative paths; a pattern without `/` also
/// matches the file name in any directory, as `.gitignore` users expect): how `full_paths`
/// matches, for the config and the planner alike.
pub fn compile_globs(patterns: &[impl AsRef<str>]) -> Result<GlobSet, globset::Error> {
    let glob = |p: &str| GlobBuilder::new(p).literal_separator(true).build();
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let p = p.as_ref();
        set.add(glob(p)?);
        if !p.contains('/') {
            set.add(glob(&format!("**/{p}"))?);
        }
    }
    set.build()
}

/// What the config tests of every submodule share: a minimal valid app and a parser around it.
#[cfg(test)]
mod testing {
    use super::Config;

    /// One app with every required key, and an inline secret.
    pub(super) const APP: &str = "[[apps]]\nname = \"web\"\nrepo = \"https://github.com/Acme/Web.git\"\nsecret = \"s3cret\"\nvolume = \"/tmp/dockhand-web\"\n";

    /// `apps` (and whatever else) parsed under a minimal `[server]`.
    pub(super) fn parse(apps: &str) -> anyhow::Result<(Config, Vec<String>)> {
        let dir = std::env::temp_dir();
        let text = format!("[server]\nstate_dir = \"/var/lib/dockhand-test\"\n{apps}");
        Config::parse(&text, &dir)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{parse, APP};
    use super::*;

    fn repo(full_name: &str, clone_url: &str) -> Repository {
        Repository {
            full_name: full_name.into(),
            clone_url: Some(clone_url.into()),
            ..Default::default()
        }
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
}
