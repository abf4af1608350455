//! The config file as serde reads it: strict (`deny_unknown_fields`, so a typo is an error that
//! names the key), no validation, no I/O. Absent keys are `None`; [`super::validate`] puts in the
//! defaults, every one of which is a named constant here so the README's reference can name it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::Strategy;

// `[server]`

/// `server.listen` unless set: loopback, so API tokens and webhook bodies do not cross a
/// network in clear until the operator puts TLS in front and says where to listen.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8700));

/// `server.metrics_listen` unless set: none, `/metrics` is served on `server.listen` beside
/// the API. Set, that address serves `/metrics` alone (a scrape port a firewall can open to
/// the monitoring host without opening the API).
pub const DEFAULT_METRICS_LISTEN: Option<SocketAddr> = None;

/// GitHub's own maximum webhook payload size, our default body cap.
pub const DEFAULT_BODY_LIMIT: u64 = 25 * 1024 * 1024;

/// `tokens.read_only` unless set: a token may write (deploy, roll back, lock) unless it says not.
pub const DEFAULT_READ_ONLY: bool = false;

/// `server.request_timeout` unless set: far longer than a 25 MiB body takes on any real link,
/// short enough that slow or stalled clients cannot hold workers.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `server.queue_limit` unless set: far more pushes than one app gets between two deploys (the
/// newest wins anyway), few enough that a storm of webhooks stays bounded in memory.
pub const DEFAULT_QUEUE_LIMIT: usize = 64;

/// `server.history_retention` unless set: a quarter of deliveries and deploys, enough to answer
/// "what ran last month", small enough that SQLite stays small.
pub const DEFAULT_HISTORY_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// `server.wait_timeout` unless set: long enough for a full deploy (pull, start, health gate)
/// to finish; a caller waiting longer gets 202 and can follow the deploy instead.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);

/// `server.session_ttl` unless set: a dashboard sign-in lasts a working day.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// A hook's time limit when neither the server nor the app sets one.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

// `[[apps]]`

/// `branch` unless set: what GitHub names a new repository's default branch.
pub const DEFAULT_BRANCH: &str = "main";

/// `keep_releases` unless set: the live release, the one a rollback goes to, and a few more.
pub const DEFAULT_KEEP_RELEASES: usize = 5;

/// The file in each deployed tree that says what it is, unless the config says otherwise.
pub const DEFAULT_REVISION_FILE: &str = "REVISION";

/// `fetch_timeout` unless set: a first clone of a large repository over a slow link fits, an
/// origin that never answers does not hold the app's deploys for longer.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// `max_fetch_size` unless set: above any real repository's pack, below what fills a disk.
pub const DEFAULT_MAX_FETCH_SIZE: u64 = 2 * 1024 * 1024 * 1024;

/// `max_tree_size` unless set: far above any real tree, far below a full disk.
pub const DEFAULT_MAX_TREE_SIZE: u64 = 8 * 1024 * 1024 * 1024;

/// `reload_timeout` unless set: app servers reload in seconds; one taking a minute is stuck.
pub const DEFAULT_RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// `lock_on_rollback` unless set: a rollback is a decision the next push must not undo.
pub const DEFAULT_LOCK_ON_ROLLBACK: bool = true;

/// How often an app's origin is polled unless the config says otherwise.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5 * 60);

// `[apps.check]`

/// `check.grace` unless set: probe at once; the check's deadline already covers a slow start.
pub const DEFAULT_CHECK_GRACE: Duration = Duration::ZERO;

/// `check.interval` unless set: often enough that a reloaded app is seen answering (or a broken
/// push reverted) within a second, rare enough not to load it.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// `check.timeout` unless set: a loopback health answer that takes longer is a failure.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `check.deadline` unless set: an in-place reload that does not answer as the new version
/// within half a minute is reverted.
pub const DEFAULT_CHECK_DEADLINE: Duration = Duration::from_secs(30);

/// Wrong answers in a row a fast check tolerates, unless the config says otherwise: at the
/// default 250 ms interval a broken push is reverted about 0.75 s after its first 5xx.
pub const DEFAULT_CHECK_FAILURES: u32 = 2;

/// `check.watch` unless set: no watch; probing after going live is the operator's choice.
pub const DEFAULT_CHECK_WATCH: Duration = Duration::ZERO;

// `[apps.proxy]`

/// `proxy.timeout` unless set: an upstream that sends no response head within a minute is
/// answered 504 rather than left to hang the client.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(60);

/// `proxy.drain_timeout` unless set: ordinary requests finish within it; a stuck one does not
/// keep the old container running.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the proxy answers while an app is in maintenance, unless the config says otherwise.
pub const DEFAULT_MAINTENANCE_BODY: &str =
    "This service is down for maintenance and will be back shortly.\n";

/// How long a request may be held during a reload, unless the config says otherwise.
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(10);
/// How many requests may be held at once, unless the config says otherwise.
pub const DEFAULT_HOLD_MAX: usize = 10_000;

// `[apps.container]`

/// `restart` unless set: the container comes back after a crash or a reboot of the host, but
/// stays down when dockhand (or an operator) stopped it.
pub const DEFAULT_RESTART: &str = "unless-stopped";

/// `health_path` unless set: the root page, which every web app serves.
pub const DEFAULT_HEALTH_PATH: &str = "/";

/// `health_grace` unless set: probe at once; `health_deadline` already covers a slow start.
pub const DEFAULT_HEALTH_GRACE: Duration = Duration::ZERO;

/// `health_interval` unless set: a new container is seen healthy within a quarter second of
/// being so, without loading it.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_millis(250);

/// `health_timeout` unless set: a loopback health answer that takes longer is a failure.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// `health_failures` unless set: no limit, only `health_deadline` fails a starting container
/// (one that is still booting refuses connections for a while).
pub const DEFAULT_HEALTH_FAILURES: u32 = u32::MAX;

/// `health_deadline` unless set: a container not healthy within a minute of starting is not
/// switched to.
pub const DEFAULT_HEALTH_DEADLINE: Duration = Duration::from_secs(60);

/// `stop_grace` unless set: Docker's own default for `docker stop`.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// `keep_images` unless set: enough recent images to roll back a few deploys without a pull.
pub const DEFAULT_KEEP_IMAGES: usize = 5;

/// `container.watch` unless set: the old container is retired as soon as the new one is live.
pub const DEFAULT_CONTAINER_WATCH: Duration = Duration::ZERO;

// `[apps.swarm]`

/// `swarm.parallelism` unless set: one task at a time, so the others serve meanwhile.
pub const DEFAULT_SWARM_PARALLELISM: u64 = 1;

/// `swarm.delay` unless set: the next batch starts as soon as the last one was watched.
pub const DEFAULT_SWARM_DELAY: Duration = Duration::ZERO;

/// `swarm.monitor` unless set: each new task is watched this long for a failure before the
/// next batch (a task that crashes within it rolls the whole service back).
pub const DEFAULT_SWARM_MONITOR: Duration = Duration::from_secs(5);

/// `swarm.deadline` unless set: a rollout not converged by then is rolled back and fails.
pub const DEFAULT_SWARM_DEADLINE: Duration = Duration::from_secs(600);

/// Where Docker's `config.json` is looked for when neither `docker_config`, `$DOCKER_CONFIG`
/// nor `$HOME` says: root's, as `docker login` run by root writes it.
pub const DEFAULT_DOCKER_CONFIG_DIR: &str = "/root/.docker";

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

/// The whole file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: RawServer,
    #[serde(default)]
    pub apps: Vec<RawApp>,
    #[serde(default)]
    pub tokens: Vec<RawToken>,
    #[serde(default)]
    pub notify: Vec<RawNotify>,
    pub github: Option<super::github::RawGithub>,
}

/// One `[[notify]]` receiver.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub name: String,
    pub kind: String,
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub on: Option<Vec<String>>,
    pub apps: Option<Vec<String>>,
}

/// One `[[tokens]]` entry.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub name: String,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub apps: Vec<String>,
    #[serde(default = "default_read_only")]
    pub read_only: bool,
}

fn default_read_only() -> bool {
    DEFAULT_READ_ONLY
}

/// `[server]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub body_limit: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    pub queue_limit: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub history_retention: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub wait_timeout: Option<Duration>,
    pub hooks_dir: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub hook_timeout: Option<Duration>,
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_token_env: Option<String>,
    pub metrics_token_file: Option<PathBuf>,
    pub public_url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub session_ttl: Option<Duration>,
    pub secure_cookies: Option<bool>,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
}

/// One `[[apps]]` entry (its sub-tables below).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApp {
    pub name: String,
    pub repo: String,
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub tags: Option<String>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub volume: PathBuf,
    pub layout: Option<String>,
    pub keep_releases: Option<usize>,
    pub touch: Option<PathBuf>,
    pub revision_file: Option<PathBuf>,
    pub signal: Option<String>,
    pub exec: Option<Vec<String>>,
    #[serde(default)]
    pub restart: bool,
    #[serde(default)]
    pub swap: bool,
    pub reload_container: Option<String>,
    pub check: Option<RawCheck>,
    #[serde(default)]
    pub revert_on_hook_failure: bool,
    #[serde(default)]
    pub adopt: bool,
    #[serde(default, with = "humantime_serde")]
    pub fetch_timeout: Option<Duration>,
    pub max_fetch_size: Option<ByteSize>,
    pub max_tree_size: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    pub reload_timeout: Option<Duration>,
    pub token_env: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ssh_key: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub container: Option<RawContainer>,
    pub swarm: Option<RawSwarm>,
    pub proxy: Option<RawProxy>,
    pub lock_on_rollback: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub hook_timeout: Option<Duration>,
    pub poll: Option<RawPoll>,
    pub paths: Option<Vec<String>>,
    pub github: Option<super::github::RawAppGithub>,
}

/// `poll = "5m"`, or `poll = 0` (off) written as a bare number.
pub(super) enum RawPoll {
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

/// `[apps.check]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    pub url: String,
    pub status: Option<u16>,
    pub expect_body_contains: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
    pub failures: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub watch: Option<Duration>,
}

/// `[apps.proxy]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub listen: SocketAddr,
    pub upstream: Option<SocketAddr>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub drain_timeout: Option<Duration>,
    #[serde(default)]
    pub maintenance: bool,
    pub maintenance_body: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub hold_timeout: Option<Duration>,
    pub hold_max: Option<usize>,
}

/// `[apps.swarm]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSwarm {
    pub service: String,
    pub manager: Option<String>,
    pub image: String,
    pub parallelism: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    pub delay: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub monitor: Option<Duration>,
    pub order: Option<Strategy>,
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
    pub code_dir: Option<String>,
    pub agent_image: Option<String>,
    pub port: Option<u16>,
    pub full_paths: Option<Vec<String>>,
    #[serde(default)]
    pub full_paths_extra: Vec<String>,
}

/// One entry of `[apps.container] mounts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMount {
    pub source: PathBuf,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

/// `[apps.container]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContainer {
    pub image: String,
    pub mount: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Container variable → name of an environment variable of dockhand's.
    #[serde(default)]
    pub env_from_env: BTreeMap<String, String>,
    /// Container variable → file whose contents are the value.
    #[serde(default)]
    pub env_from_file: BTreeMap<String, PathBuf>,
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub mounts: Vec<RawMount>,
    pub restart: Option<String>,
    pub registry_username: Option<String>,
    pub registry_password_env: Option<String>,
    pub registry_password_file: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    pub health_path: Option<String>,
    pub expect_body_contains: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub health_grace: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub health_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub health_timeout: Option<Duration>,
    pub health_failures: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    pub health_deadline: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub stop_grace: Option<Duration>,
    pub port: Option<u16>,
    pub strategy: Option<Strategy>,
    #[serde(default, with = "humantime_serde")]
    pub watch: Option<Duration>,
    pub keep_images: Option<usize>,
    pub full_paths: Option<Vec<String>>,
    #[serde(default)]
    pub full_paths_extra: Vec<String>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::testing::{parse, APP};

    /// The constants were inline literals once; README documents these values.
    #[test]
    fn defaults_are_the_values_they_have_always_had() {
        assert_eq!(DEFAULT_LISTEN, SocketAddr::from(([127, 0, 0, 1], 8700)));
        assert_eq!(DEFAULT_BODY_LIMIT, 25 * 1024 * 1024);
        assert_eq!(DEFAULT_REQUEST_TIMEOUT, Duration::from_secs(30));
        assert_eq!(DEFAULT_QUEUE_LIMIT, 64);
        assert_eq!(
            DEFAULT_HISTORY_RETENTION,
            Duration::from_secs(90 * 24 * 3600)
        );
        assert_eq!(DEFAULT_WAIT_TIMEOUT, Duration::from_secs(300));
        assert_eq!(DEFAULT_HOOK_TIMEOUT, Duration::from_secs(60));
        assert_eq!(DEFAULT_BRANCH, "main");
        assert_eq!(DEFAULT_KEEP_RELEASES, 5);
        assert_eq!(DEFAULT_FETCH_TIMEOUT, Duration::from_secs(300));
        assert_eq!(DEFAULT_MAX_FETCH_SIZE, 2 * 1024 * 1024 * 1024);
        assert_eq!(DEFAULT_MAX_TREE_SIZE, 8 * 1024 * 1024 * 1024);
        assert_eq!(DEFAULT_RELOAD_TIMEOUT, Duration::from_secs(60));
        const { assert!(DEFAULT_LOCK_ON_ROLLBACK) };
        assert_eq!(
            (
                DEFAULT_CHECK_GRACE,
                DEFAULT_CHECK_INTERVAL,
                DEFAULT_CHECK_TIMEOUT
            ),
            (
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_secs(2)
            )
        );
        assert_eq!(DEFAULT_CHECK_DEADLINE, Duration::from_secs(30));
        assert_eq!(DEFAULT_CHECK_WATCH, Duration::ZERO);
        assert_eq!(DEFAULT_PROXY_TIMEOUT, Duration::from_secs(60));
        assert_eq!(DEFAULT_DRAIN_TIMEOUT, Duration::from_secs(30));
        assert_eq!(DEFAULT_RESTART, "unless-stopped");
        assert_eq!(DEFAULT_HEALTH_PATH, "/");
        assert_eq!(
            (
                DEFAULT_HEALTH_GRACE,
                DEFAULT_HEALTH_INTERVAL,
                DEFAULT_HEALTH_TIMEOUT
            ),
            (
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_secs(2)
            )
        );
        assert_eq!(DEFAULT_HEALTH_FAILURES, u32::MAX);
        assert_eq!(DEFAULT_HEALTH_DEADLINE, Duration::from_secs(60));
        assert_eq!(DEFAULT_STOP_GRACE, Duration::from_secs(10));
        assert_eq!(DEFAULT_KEEP_IMAGES, 5);
        assert_eq!(DEFAULT_CONTAINER_WATCH, Duration::ZERO);
        assert_eq!(DEFAULT_SWARM_PARALLELISM, 1);
        assert_eq!(DEFAULT_SWARM_DELAY, Duration::ZERO);
        assert_eq!(DEFAULT_SWARM_MONITOR, Duration::from_secs(5));
        assert_eq!(DEFAULT_SWARM_DEADLINE, Duration::from_secs(600));
        assert_eq!(DEFAULT_DOCKER_CONFIG_DIR, "/root/.docker");
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse(&format!("{APP}colour = \"blue\"\n")).unwrap_err();
        assert!(format!("{err:#}").contains("colour"), "{err:#}");
    }
}
