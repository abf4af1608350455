//! The container engine: what the full path (pull, start new, wait healthy, swap, stop old)
//! needs from Docker, and the HTTP health probe it gates the swap on.
//!
//! The deploy runner calls an [`Engine`] ([`Docker`] today); this module records nothing and
//! decides nothing. Every probe goes to a loopback address only ([`HealthCheck::url`] on any
//! other host is refused before a single packet is sent).

mod docker;
mod engine;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::net::TcpStream;

pub use docker::swarm::{
    check_service_name, pinned, repository_of, Job, JobReport, Progress, RolloutPolicy,
    ServiceInfo, Swarm, TaskView, COMMIT_LABEL, DEPLOY_LABEL,
};
pub use docker::Docker;
pub use engine::Engine;

/// Registry credentials for one pull. `Debug` never shows the password.
#[derive(Clone)]
pub struct Credentials {
    /// Registry user name.
    pub username: String,
    /// Registry password or token; never logged.
    pub password: String,
    /// Registry host (`registry.example.com`, `127.0.0.1:5000`); `None` lets the engine
    /// derive it from the image reference.
    pub server: Option<String>,
}

impl Credentials {
    /// The credentials Docker's own `config.json` (`docker login`) holds for the registry of
    /// `image`; `Ok(None)` when the file or an entry for that registry is missing. Credential
    /// helpers (`credsStore`) are not consulted.
    pub fn from_docker_config(path: &Path, image: &str) -> anyhow::Result<Option<Credentials>> {
        use base64::Engine as _;
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let config: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let registry = registry_of(image);
        let Some(entry) = config
            .get("auths")
            .and_then(|a| a.as_object())
            .and_then(|auths| {
                auths.iter().find(|(key, _)| {
                    let key = key
                        .trim_start_matches("https://")
                        .trim_start_matches("http://");
                    key.split('/').next() == Some(registry)
                })
            })
        else {
            return Ok(None);
        };
        let auth = entry
            .1
            .get("auth")
            .and_then(|a| a.as_str())
            .unwrap_or_default();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .with_context(|| {
                format!(
                    "{}: the auth entry for {registry} is not base64 of user:password",
                    path.display()
                )
            })?;
        let (username, password) = decoded.split_once(':').with_context(|| {
            format!(
                "{}: the auth entry for {registry} has no ':'",
                path.display()
            )
        })?;
        Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
            server: None,
        }))
    }
}

/// The registry host of an image reference (`docker.io` names map to Docker Hub's key).
fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "index.docker.io",
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("server", &self.server)
            .finish()
    }
}

/// What a successful pull left on the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// Local image id (`sha256:…`).
    pub image_id: String,
    /// `repo@sha256:…` from the image's RepoDigests, for this reference's repository. This is
    /// what a deploy records, so a rollback can redeploy exactly it after the tag has moved.
    pub digest: Option<String>,
}

/// A host directory bind-mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute host path (the app's volume).
    pub source: PathBuf,
    /// Path inside the container.
    pub target: String,
    /// Mounted read-only inside the container.
    pub read_only: bool,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// Container name; unique on the engine, so a second deploy racing for it fails loudly.
    pub name: String,
    /// Image reference (`repo:tag` or `repo@sha256:…`).
    pub image: String,
    /// Overrides the image's `CMD` when set.
    pub cmd: Option<Vec<String>>,
    /// Environment variables (`PORT`, …); names must not contain `=`.
    pub env: Vec<(String, String)>,
    /// Bind mounts (the app's volume).
    pub mounts: Vec<Mount>,
    /// How dockhand finds its containers again (app name, deploy id).
    pub labels: BTreeMap<String, String>,
    /// `host` on these machines: no bridge network exists, and apps listen on loopback ports.
    pub network_mode: String,
    /// `no`, `always`, `unless-stopped` or `on-failure`; `None` is the engine's default (`no`).
    pub restart_policy: Option<String>,
}

/// One container as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Full container id.
    pub id: String,
    /// Name without the engine's leading `/`.
    pub name: String,
    /// The reference it was created from (`Config.Image`).
    pub image_ref: String,
    /// The image id it runs (`sha256:…`), whatever the tag points at now.
    pub image_id: String,
    /// `false` while the engine restarts it after a crash (restart policies), not only once
    /// it has exited.
    pub running: bool,
    /// Frozen by `docker pause` (still `running`): a full deploy pauses the old container
    /// while the tree it runs from changes.
    pub paused: bool,
    /// Set once the container is no longer running.
    pub exit_code: Option<i64>,
    /// Docker's own HEALTHCHECK status (`starting`, `healthy`, `unhealthy`), if the image has one.
    pub health: Option<String>,
    /// The container's labels.
    pub labels: BTreeMap<String, String>,
}

/// How to decide that a new container serves.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// `http://127.0.0.1:PORT/path`. Loopback hosts only (`127.0.0.0/8`, `::1`, `localhost`).
    pub url: String,
    /// The status a healthy answer has; `None`: any 2xx.
    pub expect_status: Option<u16>,
    /// The healthy answer's body must contain this text, so a stale process answering on the
    /// port does not pass for the new version.
    pub expect_body_contains: Option<String>,
    /// No probe before this: the app is booting.
    pub grace: Duration,
    /// Pause between the end of one probe and the next.
    pub interval: Duration,
    /// Per probe: connect, send, read the whole answer.
    pub timeout: Duration,
    /// Consecutive failed probes tolerated after `grace`; one more fails the check.
    pub failures: u32,
    /// Consecutive wrong-status answers tolerated (`None`: only `failures` counts); one more
    /// fails the check at once. Unlike `failures` it ignores probes that got no answer or the
    /// right status with another body: a reloading app server or the old version still
    /// answering is not yet a failure, an answer of 500 is.
    pub answer_failures: Option<u32>,
    /// From the call, not from the end of `grace`.
    pub deadline: Duration,
}

/// A passed health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthReport {
    /// Probes sent, the last one healthy.
    pub attempts: u32,
    pub elapsed: Duration,
}

/// Where a health probe goes, parsed from [`HealthCheck::url`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub addr: SocketAddr,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl ProbeTarget {
    /// Parses `http://HOST[:PORT][/path]`, refusing anything but a loopback host, `https`, and
    /// user info.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: axum::http::Uri = url
            .parse()
            .with_context(|| format!("health URL {url:?} is not a valid URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("health URL {url:?} must start with http://");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("health URL {url:?} has no host"))?;
        if authority.as_str().contains('@') {
            bail!("health URL {url:?} must not carry user info");
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let ip = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse::<IpAddr>().ok().filter(IpAddr::is_loopback).with_context(|| {
                format!("health URL {url:?}: host {host:?} is not a loopback address; probes go to loopback only")
            })?
        };
        // `port()` is None both without a port and with one that is not a u16.
        let port = match authority.port() {
            None if authority.as_str() != authority.host() => {
                bail!("health URL {url:?} has a bad port")
            }
            None => 80,
            Some(port) => port
                .as_str()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .with_context(|| format!("health URL {url:?} has a bad port"))?,
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            path,
        })
    }
}

/// The outcome of one probe, as a failed check reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The expected status (2xx unless told) with the expected body text.
    Healthy,
    /// Answered, but not with the expected status.
    Status(u16),
    /// The expected status, but the body lacks the expected text.
    BodyMismatch { status: u16, expected: String },
    /// Connect, send, read or parse failed (refused, timed out, garbage).
    Failed(String),
}

impl fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Healthy => write!(f, "healthy"),
            Self::Status(s) => write!(f, "HTTP {s}"),
            Self::BodyMismatch { status, expected } => {
                write!(
                    f,
                    "HTTP {status} but the body does not contain {expected:?}"
                )
            }
            Self::Failed(why) => write!(f, "{why}"),
        }
    }
}

/// Answers larger than this are cut; a health page is small.
const MAX_PROBE_ANSWER: usize = 64 * 1024;

/// One `GET` over a fresh connection, bounded by `timeout` as a whole.
pub async fn probe(
    target: &ProbeTarget,
    expect_status: Option<u16>,
    expect_body_contains: Option<&str>,
    timeout: Duration,
) -> ProbeOutcome {
    match tokio::time::timeout(timeout, get(target)).await {
        Err(_) => ProbeOutcome::Failed(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => ProbeOutcome::Failed(format!("{e:#}")),
        Ok(Ok((status, body))) => {
            let expected = match expect_status {
                Some(want) => status == want,
                None => (200..300).contains(&status),
            };
            if !expected {
                return ProbeOutcome::Status(status);
            }
            match expect_body_contains {
                Some(expected) if !String::from_utf8_lossy(&body).contains(expected) => {
                    ProbeOutcome::BodyMismatch {
                        status,
                        expected: expected.to_string(),
                    }
                }
                _ => ProbeOutcome::Healthy,
            }
        }
    }
}

/// [`wait_healthy`] ran out of time without a failure that ended it early (as opposed to too
/// many failed probes or a dead container): the caller may act and wait again.
#[derive(Debug)]
pub struct NotHealthyInTime(String);

impl fmt::Display for NotHealthyInTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotHealthyInTime {}

/// How often `alive` is asked during the grace period.
const ALIVE_POLL: Duration = Duration::from_millis(200);

/// Probe `check.url` until it is healthy: nothing before `grace`, then every `interval`, failing
/// after more than `failures` failed probes in a row or at `deadline`. `alive` is asked before
/// each probe (and during the grace) and fails the wait at once when what is probed has died;
/// `what` names it in errors.
pub async fn wait_healthy<A, F>(
    check: &HealthCheck,
    what: &str,
    mut alive: A,
) -> anyhow::Result<HealthReport>
where
    A: FnMut() -> F,
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let target = ProbeTarget::parse(&check.url)?;
    let started = tokio::time::Instant::now();
    let deadline = started + check.deadline;
    let probes_from = started + check.grace;
    wait_out_grace(&mut alive, probes_from.min(deadline)).await?;
    let mut attempts = 0u32;
    let mut failed_in_a_row = 0u32;
    let mut wrong_in_a_row = 0u32;
    let mut last: Option<ProbeOutcome> = None;
    loop {
        alive().await?;
        if tokio::time::Instant::now() >= deadline {
            return Err(not_in_time(check, what, attempts, last));
        }
        attempts += 1;
        let per_probe = check
            .timeout
            .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let outcome = probe(
            &target,
            check.expect_status,
            check.expect_body_contains.as_deref(),
            per_probe,
        )
        .await;
        tracing::debug!(attempts, %outcome, "health probe");
        if outcome == ProbeOutcome::Healthy {
            return Ok(HealthReport {
                attempts,
                elapsed: started.elapsed(),
            });
        }
        failed_in_a_row += 1;
        if matches!(outcome, ProbeOutcome::Status(_)) {
            wrong_in_a_row += 1;
        } else {
            wrong_in_a_row = 0;
        }
        if let Some(tolerated) = check.answer_failures.filter(|t| wrong_in_a_row > *t) {
            anyhow::bail!(
                "{what} answered {wrong_in_a_row} health probes in a row with the wrong status (tolerating {tolerated}) at {}; last probe: {outcome}",
                check.url
            );
        }
        if failed_in_a_row > check.failures {
            // What was probed may have died under the probe: that is the better reason.
            alive().await?;
            anyhow::bail!(
                "{what} failed {failed_in_a_row} health probes in a row (tolerating {}) at {}; last probe: {outcome}",
                check.failures,
                check.url
            );
        }
        last = Some(outcome);
        let next = tokio::time::Instant::now() + check.interval;
        tokio::time::sleep_until(next.min(deadline)).await;
    }
}

/// Wait until `until`, asking `alive` every [`ALIVE_POLL`] meanwhile (and once at least, when
/// `until` has not passed yet).
async fn wait_out_grace<A, F>(alive: &mut A, until: tokio::time::Instant) -> anyhow::Result<()>
where
    A: FnMut() -> F,
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    while tokio::time::Instant::now() < until {
        alive().await?;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(left.min(ALIVE_POLL)).await;
    }
    Ok(())
}

/// The error of a wait that reached its deadline: how many probes went out, and how the last
/// one ended.
fn not_in_time(
    check: &HealthCheck,
    what: &str,
    attempts: u32,
    last: Option<ProbeOutcome>,
) -> anyhow::Error {
    NotHealthyInTime(format!(
        "{what} was not healthy within {:?} ({attempts} probes of {}); last probe: {}",
        check.deadline,
        check.url,
        last.map_or_else(
            || "none sent (grace outlasted the deadline)".to_string(),
            |o| o.to_string()
        )
    ))
    .into()
}

/// One HTTP/1.1 GET over a fresh connection (hyper's client): status and body, the body cut
/// off past [`MAX_PROBE_ANSWER`].
async fn get(target: &ProbeTarget) -> anyhow::Result<(u16, Vec<u8>)> {
    use http_body_util::{BodyExt, Empty, Limited};

    let stream = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("starting HTTP on the probe connection")?;
    let connection = tokio::spawn(connection);
    let request = axum::http::Request::get(target.path.as_str())
        .header(axum::http::header::HOST, target.addr.to_string())
        .header(axum::http::header::USER_AGENT, "dockhand-health")
        .body(Empty::<axum::body::Bytes>::new())
        .context("building the probe request")?;
    let response = sender
        .send_request(request)
        .await
        .context("sending the probe request")?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_PROBE_ANSWER)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the probe answer: {e}"))?
        .to_bytes()
        .to_vec();
    connection.abort();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls_parse_with_port_and_path() {
        let t = ProbeTarget::parse("http://127.0.0.1:8080/health?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/health?x=1");
        let t = ProbeTarget::parse("http://localhost").unwrap();
        assert_eq!(t.addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(t.path, "/");
        let t = ProbeTarget::parse("http://[::1]:9000/").unwrap();
        assert_eq!(t.addr, "[::1]:9000".parse().unwrap());
    }

    #[test]
    fn non_loopback_or_odd_urls_are_refused() {
        for url in [
            "http://10.0.0.5:80/",
            "http://192.168.1.1/",
            "http://example.com/",
            "http://0.0.0.0:80/",
            "https://127.0.0.1/",
            "http://user:pw@127.0.0.1/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:99999/",
            "http://127.0.0.1/a b",
            "ftp://127.0.0.1/",
        ] {
            assert!(ProbeTarget::parse(url).is_err(), "{url} was accepted");
        }
        let err = ProbeTarget::parse("http://10.0.0.5/")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a loopback"), "{err}");
    }
}
