//! [`Docker`]: the engine over its local unix socket (bollard).
//!
//! Every engine answer is `Option`-typed by bollard; nothing here unwraps one. Missing
//! containers are not errors where the caller wants them gone (`stop`, `remove`) or asks
//! whether they exist (`inspect`).
//!
//! Layout: this file holds the connection and one method per engine call; `convert` turns
//! dockhand's container types into bollard's and back; `refs` checks image and container
//! references before they go into a URL path; `retry` repeats an idempotent call after a lost
//! connection.

mod convert;
mod refs;
mod retry;
pub(super) mod swarm;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RestartContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::{ClientVersion, API_DEFAULT_VERSION};
use futures_util::{StreamExt, TryStreamExt};
use tracing::{debug, instrument};

use super::{ContainerInfo, ContainerSpec, Credentials, Engine, HealthCheck, HealthReport, Pulled};
use convert::{container_info, create_body};
use refs::{check_container_ref, check_image_ref, pull_parts, repo_digest};
use retry::{retrying, status, transient, RETRY_DELAYS};

/// Where the engine is when `DOCKER_HOST` is unset.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// The oldest engine API dockhand speaks (Docker 20.10). Newer engines are spoken to at
/// `min(engine, bollard's)`; see [`Docker::connect`].
const MIN_API: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};
/// bollard's per-request timeout, in seconds. Bounds every call, including a pull's stream.
const REQUEST_TIMEOUT_SECS: u64 = 600;
/// How often `wait_docker_health` looks at the container (the HTTP check's grace period
/// has its own pace, `runtime::wait_healthy`).
const STATE_POLL: Duration = Duration::from_millis(250);

/// A connected, pinged Docker engine. Cheap to clone.
#[derive(Clone)]
pub struct Docker {
    client: bollard::Docker,
    /// `unix://…` as looked up, for error messages.
    host: String,
}

impl std::fmt::Debug for Docker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docker").field("host", &self.host).finish()
    }
}

impl Docker {
    /// Connects to the local engine (`DOCKER_HOST` if it names a `unix://` socket, else
    /// `/var/run/docker.sock`), agrees on an API version, and pings it.
    ///
    /// bollard's own negotiation starts from its newest API, which a 20.10 engine refuses
    /// outright ("client version … is too new"); so this asks the engine's version at 1.41
    /// and moves up to `min(engine, bollard)` when the engine is newer.
    #[instrument(skip_all)]
    pub async fn connect() -> anyhow::Result<Self> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_HOST.to_string());
        Self::connect_to(&host).await
    }

    /// [`Docker::connect`] to an explicit `unix://PATH` (tests use a fake engine this way).
    #[instrument(skip_all, fields(host = %host))]
    pub async fn connect_to(host: &str) -> anyhow::Result<Self> {
        let host = host.to_string();
        let Some(path) = host.strip_prefix("unix://") else {
            bail!("Docker engine unreachable: DOCKER_HOST={host:?} is not a unix:// socket, the only kind dockhand uses");
        };
        if !Path::new(path).exists() {
            bail!("Docker engine unreachable: no socket at {path} (from {host}; DOCKER_HOST=unix://PATH looks elsewhere)");
        }
        let unreachable = || format!("Docker engine unreachable at {host}");
        let base = bollard::Docker::connect_with_unix(&host, REQUEST_TIMEOUT_SECS, &MIN_API)
            .with_context(unreachable)?;
        let version = base.version().await.with_context(unreachable)?;
        let engine_api = version.api_version.as_deref().and_then(parse_api_version);
        let client = match engine_api {
            Some(engine) if engine > MIN_API => {
                let chosen = if engine < *API_DEFAULT_VERSION {
                    engine
                } else {
                    *API_DEFAULT_VERSION
                };
                bollard::Docker::connect_with_unix(&host, REQUEST_TIMEOUT_SECS, &chosen)
                    .with_context(unreachable)?
            }
            _ => base,
        };
        client.ping().await.with_context(unreachable)?;
        debug!(host, api = ?version.api_version, engine = ?version.version, "connected to Docker");
        Ok(Self { client, host })
    }

    /// Where this client talks to (`unix://…`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The container's info if it runs; an error naming its exit code if not.
    async fn ensure_running(&self, id: &str) -> anyhow::Result<ContainerInfo> {
        let info = self
            .inspect(id)
            .await?
            .with_context(|| format!("container {id} no longer exists"))?;
        if !info.running {
            match info.exit_code {
                Some(code) => bail!("container {id} is not running: it exited with code {code}"),
                None => bail!("container {id} is not running"),
            }
        }
        Ok(info)
    }
}

#[async_trait]
impl Engine for Docker {
    /// Pulls `image` (`repo:tag`, `repo@sha256:…`; no tag means `latest`, never all tags).
    ///
    /// The engine answers 200 and then streams progress; an item carrying an error (a missing
    /// tag, an unreachable registry, a failed layer) fails the pull (SECURITY.md 35).
    #[instrument(skip_all, fields(image = %image))]
    async fn pull(&self, image: &str, auth: Option<&Credentials>) -> anyhow::Result<Pulled> {
        check_image_ref(image)?;
        let (from_image, tag) = pull_parts(image);
        let mut options = CreateImageOptionsBuilder::new().from_image(from_image);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        let credentials = auth.map(|c| DockerCredentials {
            username: Some(c.username.clone()),
            password: Some(c.password.clone()),
            serveraddress: c.server.clone(),
            ..Default::default()
        });
        let mut stream = self
            .client
            .create_image(Some(options.build()), None, credentials);
        while let Some(item) = stream.next().await {
            let info = item.with_context(|| format!("pulling {image}"))?;
            if let Some(detail) = info.error_detail {
                bail!(
                    "pulling {image}: the engine reported an error: {}",
                    detail.message.as_deref().unwrap_or("(no message)")
                );
            }
            debug!(status = ?info.status, id = ?info.id, "pull progress");
        }
        let inspected = self
            .client
            .inspect_image(image)
            .await
            .with_context(|| format!("inspecting {image} after pulling it"))?;
        let image_id = inspected
            .id
            .with_context(|| format!("the engine gave no id for the pulled image {image}"))?;
        let digest = repo_digest(image, inspected.repo_digests.as_deref().unwrap_or_default());
        Ok(Pulled { image_id, digest })
    }

    /// `repo@sha256:…` of a local image for its reference's repository; `None` if the image is
    /// not there or was never pushed/pulled through that repository.
    #[instrument(skip_all, fields(image = %image))]
    async fn image_digest(&self, image: &str) -> anyhow::Result<Option<String>> {
        check_image_ref(image)?;
        match self.client.inspect_image(image).await {
            Ok(inspected) => Ok(repo_digest(
                image,
                inspected.repo_digests.as_deref().unwrap_or_default(),
            )),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting image {image}")),
        }
    }

    /// Whether the engine has `image` (a tag or `repo@sha256:…`) locally.
    async fn has_image(&self, image: &str) -> anyhow::Result<bool> {
        check_image_ref(image)?;
        match self.client.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("inspecting image {image}")),
        }
    }

    /// Removes a local image (not forced). `false` when it is missing or still in use.
    #[instrument(skip_all, fields(image = %image))]
    async fn remove_image(&self, image: &str) -> anyhow::Result<bool> {
        check_image_ref(image)?;
        let options = RemoveImageOptionsBuilder::new().force(false).build();
        match self.client.remove_image(image, Some(options), None).await {
            Ok(_) => Ok(true),
            Err(e) if matches!(status(&e), Some(404 | 409)) => {
                debug!(error = %e, "image not removed");
                Ok(false)
            }
            Err(e) => Err(e).with_context(|| format!("removing image {image}")),
        }
    }

    /// Creates (does not start) a container; returns its id. A name already in use is an
    /// error saying so.
    #[instrument(skip_all, fields(name = %spec.name, image = %spec.image))]
    async fn create(&self, spec: &ContainerSpec) -> anyhow::Result<String> {
        let name = &spec.name;
        check_image_ref(&spec.image)?;
        check_container_ref(name)?;
        let body = create_body(spec)?;
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let mut created = self
            .client
            .create_container(Some(options.clone()), body.clone())
            .await;
        if let Err(e) = &created {
            if transient(e) {
                // The answer was lost, not necessarily the request: look the name up first.
                tracing::warn!(error = %e, "create {name}: lost the engine connection; checking by name");
                tokio::time::sleep(RETRY_DELAYS[0]).await;
                if let Some(existing) = self.inspect(name).await? {
                    return Ok(existing.id);
                }
                created = retrying("create", || {
                    self.client
                        .create_container(Some(options.clone()), body.clone())
                })
                .await;
            }
        }
        match created {
            Ok(created) => {
                for warning in &created.warnings {
                    tracing::warn!(%warning, "engine warning creating container {name}");
                }
                Ok(created.id)
            }
            Err(e) if status(&e) == Some(409) => Err(anyhow::Error::new(e).context(format!(
                "creating container {name}: the name is already in use (conflict)"
            ))),
            Err(e) => Err(e).with_context(|| format!("creating container {name}")),
        }
    }

    /// Starts a created container. Starting a running one is not an error.
    #[instrument(skip_all, fields(id = %id))]
    async fn start(&self, id: &str) -> anyhow::Result<()> {
        check_container_ref(id)?;
        match retrying("start", || self.client.start_container(id, None)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(304) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("starting container {id}")),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. A missing or already stopped container is `Ok`.
    #[instrument(skip_all, fields(id = %id))]
    async fn stop(&self, id: &str, grace: Duration) -> anyhow::Result<()> {
        check_container_ref(id)?;
        let secs = grace_secs(grace);
        let options = StopContainerOptionsBuilder::new().t(secs).build();
        match retrying("stop", || {
            self.client.stop_container(id, Some(options.clone()))
        })
        .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(status(&e), Some(304 | 404)) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("stopping container {id}")),
        }
    }

    /// Freeze every process of the container (cgroup freezer): it runs nothing, reads
    /// nothing, until [`Docker::unpause`]; a paused container can still be stopped.
    #[instrument(skip_all, fields(id = %id))]
    async fn pause(&self, id: &str) -> anyhow::Result<()> {
        check_container_ref(id)?;
        retrying("pause", || self.client.pause_container(id))
            .await
            .with_context(|| format!("pausing container {id}"))
    }

    /// Thaw a paused container. One that is not paused is not an error.
    #[instrument(skip_all, fields(id = %id))]
    async fn unpause(&self, id: &str) -> anyhow::Result<()> {
        check_container_ref(id)?;
        match retrying("unpause", || self.client.unpause_container(id)).await {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(409) && e.to_string().contains("not paused") => Ok(()),
            Err(e) => Err(e).with_context(|| format!("unpausing container {id}")),
        }
    }

    /// Send `signal` (e.g. `SIGHUP`) to the container's main process.
    async fn kill(&self, id: &str, signal: &str) -> anyhow::Result<()> {
        check_container_ref(id)?;
        let options = KillContainerOptionsBuilder::new().signal(signal).build();
        retrying("kill", || {
            self.client.kill_container(id, Some(options.clone()))
        })
        .await
        .with_context(|| format!("sending {signal} to container {id}"))
    }

    /// Restart the container: stop (SIGTERM, then SIGKILL after `grace`) and start it again.
    async fn restart(&self, id: &str, grace: Duration) -> anyhow::Result<()> {
        check_container_ref(id)?;
        let secs = grace_secs(grace);
        let options = RestartContainerOptionsBuilder::new().t(secs).build();
        retrying("restart", || {
            self.client.restart_container(id, Some(options.clone()))
        })
        .await
        .with_context(|| format!("restarting container {id}"))
    }

    /// Run `cmd` (argv, no shell) inside the running container and wait for it; returns its
    /// exit code and its stdout and stderr interleaved (the last 16 KiB).
    async fn exec(&self, id: &str, cmd: &[String]) -> anyhow::Result<(i64, String)> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        const KEEP: usize = 16 * 1024;
        check_container_ref(id)?;
        let options = CreateExecOptions {
            cmd: Some(cmd.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = self
            .client
            .create_exec(id, options)
            .await
            .with_context(|| format!("creating exec {cmd:?} in container {id}"))?;
        let started = self
            .client
            .start_exec(&created.id, None)
            .await
            .with_context(|| format!("starting exec {cmd:?} in container {id}"))?;
        let mut output = Vec::new();
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = started
        {
            while let Some(item) = stream.next().await {
                let item = item.with_context(|| format!("reading the output of {cmd:?}"))?;
                output.extend_from_slice(&item.into_bytes());
                if output.len() > 2 * KEEP {
                    output.drain(..output.len() - KEEP);
                }
            }
        }
        let start = output.len().saturating_sub(KEEP);
        let text = String::from_utf8_lossy(&output[start..]).into_owned();
        let inspected = self
            .client
            .inspect_exec(&created.id)
            .await
            .with_context(|| format!("inspecting exec {cmd:?} in container {id}"))?;
        let code = inspected
            .exit_code
            .with_context(|| format!("exec {cmd:?} has no exit code"))?;
        Ok((code, text))
    }

    /// Removes a container, killing it if it runs, with its anonymous volumes. Missing is `Ok`.
    #[instrument(skip_all, fields(id = %id))]
    async fn remove(&self, id: &str) -> anyhow::Result<()> {
        check_container_ref(id)?;
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match retrying("remove", || {
            self.client.remove_container(id, Some(options.clone()))
        })
        .await
        {
            Ok(()) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing container {id}")),
        }
    }

    /// The container by id or name; `None` if there is no such container.
    #[instrument(skip_all, fields(id = %id))]
    async fn inspect(&self, id: &str) -> anyhow::Result<Option<ContainerInfo>> {
        check_container_ref(id)?;
        match retrying("inspect", || {
            self.client
                .inspect_container(id, None::<InspectContainerOptions>)
        })
        .await
        {
            Ok(response) => container_info(response)
                .map(Some)
                .with_context(|| format!("reading the engine's answer for container {id}")),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("inspecting container {id}")),
        }
    }

    /// Every container (running or not) carrying the label `key=value`.
    #[instrument(skip_all, fields(key = %key, value = %value))]
    async fn list_by_label(&self, key: &str, value: &str) -> anyhow::Result<Vec<ContainerInfo>> {
        let filters = HashMap::from([("label", vec![format!("{key}={value}")])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = retrying("list", || {
            self.client.list_containers(Some(options.clone()))
        })
        .await
        .with_context(|| format!("listing containers labelled {key}={value}"))?;
        let mut found = Vec::with_capacity(summaries.len());
        for id in summaries.into_iter().filter_map(|s| s.id) {
            // The summary lacks exit codes and health; a container removed meanwhile is skipped.
            if let Some(info) = self.inspect(&id).await? {
                found.push(info);
            }
        }
        Ok(found)
    }

    /// The last `lines` lines of stdout and stderr, interleaved as the engine stored them.
    #[instrument(skip_all, fields(id = %id))]
    async fn logs_tail(&self, id: &str, lines: usize) -> anyhow::Result<String> {
        check_container_ref(id)?;
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .follow(false)
            .tail(&lines.to_string())
            .build();
        let chunks: Vec<_> = self
            .client
            .logs(id, Some(options))
            .try_collect()
            .await
            .with_context(|| format!("reading the logs of container {id}"))?;
        // Decoded once: a character split across two frames stays whole.
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|chunk| chunk.into_bytes())
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Waits until `check` passes against the container `id` (see [`HealthCheck`]). Fails at
    /// once if the container stops running, with its exit code; fails after `check.failures`
    /// consecutive failed probes past the grace period, or at the deadline, with the last
    /// probe's outcome.
    #[instrument(skip_all, fields(id = %id, url = %check.url))]
    async fn wait_healthy(&self, id: &str, check: &HealthCheck) -> anyhow::Result<HealthReport> {
        check_container_ref(id)?;
        super::wait_healthy(check, &format!("container {id}"), || async {
            self.ensure_running(id).await.map(|_| ())
        })
        .await
    }

    /// Waits for Docker's own HEALTHCHECK to report `healthy`. Fails at once if the container
    /// stops, reports `unhealthy`, or has no HEALTHCHECK; fails after `deadline`.
    #[instrument(skip_all, fields(id = %id))]
    async fn wait_docker_health(
        &self,
        id: &str,
        deadline: Duration,
    ) -> anyhow::Result<HealthReport> {
        check_container_ref(id)?;
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let info = self.ensure_running(id).await?;
            match info.health.as_deref() {
                None | Some("none") | Some("") => {
                    bail!("container {id} has no Docker HEALTHCHECK to wait for")
                }
                Some("healthy") => {
                    return Ok(HealthReport {
                        attempts,
                        elapsed: started.elapsed(),
                    })
                }
                Some("unhealthy") => bail!("Docker reports container {id} unhealthy"),
                Some(other) => {
                    if started.elapsed() >= deadline {
                        bail!("container {id} was not healthy within {deadline:?}; Docker health: {other}");
                    }
                }
            }
            tokio::time::sleep(STATE_POLL).await;
        }
    }
}

/// A stop grace in the engine's whole seconds.
fn grace_secs(grace: Duration) -> i32 {
    i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)
}

fn parse_api_version(text: &str) -> Option<ClientVersion> {
    let (major, minor) = text.split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}
