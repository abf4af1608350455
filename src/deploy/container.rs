//! Starting a container: its spec (labels, mounts, env), the image it runs (pulled always for a
//! deploy's template, only when missing for a recorded image), and the health gate. One way
//! for every start — a full deploy, a swap, a trial and crash recovery's revive — so they
//! cannot drift apart.

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::full::{FullDeploy, LABEL_APP, LABEL_COMMIT, LABEL_DEPLOY};
use super::steps::Steps;
use crate::config::{render, AppConfig, ContainerConfig};
use crate::runtime::{ContainerSpec, Engine, HealthCheck, Mount};
use crate::store::{AppState, LiveContainer, StepStage};
use crate::tree::Tree;

/// Pull `image` (with the app's registry credentials): every deploy of the image template
/// does, since a tag may name a new image.
pub(super) async fn pull(
    docker: &dyn Engine,
    c: &ContainerConfig,
    image: &str,
) -> anyhow::Result<crate::runtime::Pulled> {
    docker
        .pull(image, credentials(c, image).await?.as_ref())
        .await
}

/// `image` as the engine has it, pulled only when it is missing: the policy for a recorded
/// image (a rollback's digest, the image crash recovery starts again). `None`: it was here.
pub(super) async fn pull_if_missing(
    docker: &dyn Engine,
    c: &ContainerConfig,
    image: &str,
) -> anyhow::Result<Option<crate::runtime::Pulled>> {
    if docker.has_image(image).await? {
        return Ok(None);
    }
    pull(docker, c, image).await.map(Some)
}

/// Create and start a container of `image` on `port` and wait until it is healthy; on failure
/// it is removed, its last log lines kept in the step.
pub(super) async fn start_healthy(
    docker: &dyn Engine,
    steps: &Steps,
    d: &FullDeploy<'_>,
    image: &str,
    port: u16,
) -> anyhow::Result<String> {
    let spec = spec(d, image, port);
    let detail = format!("{} on 127.0.0.1:{port}", spec.name);
    let record = Recorded {
        steps,
        stages: [StepStage::Start, StepStage::Health],
        detail: &detail,
    };
    launch_healthy(docker, d, &spec, port, Some(record)).await
}

/// The two steps a launch is recorded as (`start`/`health`, `trial`/`trial-health`), and what
/// the first one says.
pub(super) struct Recorded<'a> {
    pub steps: &'a Steps,
    pub stages: [StepStage; 2],
    pub detail: &'a str,
}

/// Create and start `spec` (listening on `port`), then wait until it is healthy — by the
/// image's HEALTHCHECK when it has one, else the HTTP probe. With `record`, as its two steps.
/// On failure the container is removed, its last log lines kept in the error. What deploys,
/// swaps, trials and crash recovery all start a container with.
pub(super) async fn launch_healthy(
    docker: &dyn Engine,
    d: &FullDeploy<'_>,
    spec: &ContainerSpec,
    port: u16,
    record: Option<Recorded<'_>>,
) -> anyhow::Result<String> {
    let start = async {
        let id = docker.create(spec).await?;
        docker.start(&id).await?;
        anyhow::Ok(id)
    };
    let id = match &record {
        Some(r) => {
            r.steps
                .run(r.stages[0], r.detail, async {
                    let id = start.await?;
                    Ok((id.clone(), format!("container {id}")))
                })
                .await?
        }
        None => start.await?,
    };
    let docker_health = has_own_healthcheck(docker, &id).await;
    let wait = async {
        match wait_until_healthy(docker, d, &id, port, docker_health).await {
            Ok(report) => Ok(report),
            Err(e) => {
                let logs = docker.logs_tail(&id, 40).await.unwrap_or_default();
                Err(e.context(format!("last log lines of the new container:\n{logs}")))
            }
        }
    };
    let healthy = match &record {
        Some(r) => {
            let detail = if docker_health {
                "Docker HEALTHCHECK of the image".to_string()
            } else {
                health_check(d, port).url
            };
            let wait = async { wait.await.map(|report| ((), report)) };
            r.steps.run(r.stages[1], &detail, wait).await
        }
        None => wait.await.map(drop),
    };
    match healthy {
        Ok(()) => Ok(id),
        Err(e) => {
            let _ = docker.remove(&id).await;
            Err(e)
        }
    }
}

/// Whether container `id` runs an image with its own HEALTHCHECK: then Docker's health status
/// judges it, else dockhand's HTTP probe.
pub(super) async fn has_own_healthcheck(docker: &dyn Engine, id: &str) -> bool {
    matches!(docker.inspect(id).await, Ok(Some(info)) if !matches!(info.health.as_deref(), None | Some("" | "none")))
}

/// Wait until container `id` is healthy, by Docker's HEALTHCHECK status or the HTTP probe;
/// what it took, for a step's output.
async fn wait_until_healthy(
    docker: &dyn Engine,
    d: &FullDeploy<'_>,
    id: &str,
    port: u16,
    docker_health: bool,
) -> anyhow::Result<String> {
    let check = health_check(d, port);
    let report = if docker_health {
        docker.wait_docker_health(id, check.deadline).await?
    } else {
        docker.wait_healthy(id, &check).await?
    };
    Ok(format!(
        "healthy after {} probes in {:?}",
        report.attempts, report.elapsed
    ))
}

/// Start the app's last good container again from its recorded image (digest preferred) after
/// a crash lost it, pulled only when this host no longer has it; health-gated like a deploy
/// (the image's HEALTHCHECK, else the HTTP probe). Recovery only: nothing else is running.
pub(super) async fn revive(
    docker: &dyn Engine,
    app: &AppConfig,
    container: &ContainerConfig,
    state: &AppState,
) -> anyhow::Result<LiveContainer> {
    let image = state
        .digest
        .clone()
        .or_else(|| state.image.clone())
        .context("no image was recorded for the last good deploy")?;
    let d = FullDeploy {
        app,
        container,
        deploy_id: state.deploy_id,
        commit: state.commit_sha,
        git_ref: String::new(),
        old_container: None,
        proxy: None,
    };
    // The image it ran is usually still here: a registry down at boot must not keep the app
    // down (issue 12, defect 2).
    pull_if_missing(docker, container, &image)
        .await
        .with_context(|| format!("{image} is no longer on this host"))?;
    let port = container_port(container)?;
    let id = launch_healthy(docker, &d, &spec(&d, &image, port), port, None).await?;
    Ok(LiveContainer {
        id,
        image: state.image.clone().unwrap_or(image),
        digest: state.digest.clone(),
        port,
    })
}

pub(super) fn spec(d: &FullDeploy<'_>, image: &str, port: u16) -> ContainerSpec {
    let mut env = d.container.env.clone();
    env.push(("PORT".to_string(), port.to_string()));
    // What the container was started for (a fast deploy later changes the code, not these:
    // the tree's revision file says what runs now).
    env.push(("DOCKHAND_COMMIT".to_string(), d.commit.to_string()));
    env.push(("DOCKHAND_DEPLOY_ID".to_string(), d.deploy_id.to_string()));
    // A swapping app's container mounts its own release: its tree never changes under it.
    let mut mounts = vec![Mount {
        source: Tree::mount_for(d.app, &d.commit.to_string()),
        target: d.container.mount.clone(),
        read_only: false,
    }];
    mounts.extend(d.container.mounts.iter().cloned());
    let labels = BTreeMap::from([
        (LABEL_APP.to_string(), d.app.name.clone()),
        (LABEL_COMMIT.to_string(), d.commit.to_string()),
        (LABEL_DEPLOY.to_string(), d.deploy_id.to_string()),
    ]);
    ContainerSpec {
        // Unique even if another dockhand (or a wiped state dir) reuses the deploy id.
        name: format!(
            "dockhand-{}-{}-{:x}",
            d.app.name,
            d.deploy_id,
            crate::store::now_ms() & 0xffff_ffff
        ),
        image: image.to_string(),
        cmd: d.container.cmd.clone(),
        env,
        mounts,
        labels,
        network_mode: "host".to_string(),
        restart_policy: Some(d.container.restart.clone()),
    }
}

pub(super) fn health_check(d: &FullDeploy<'_>, port: u16) -> HealthCheck {
    let c = d.container;
    HealthCheck {
        url: format!("http://127.0.0.1:{port}{}", c.health_path),
        expect_status: None,
        expect_body_contains: c
            .expect_body_contains
            .as_deref()
            .map(|t| render(t, &d.commit.to_string(), &d.git_ref)),
        grace: c.health_grace,
        interval: c.health_interval,
        timeout: c.health_timeout,
        failures: c.health_failures,
        answer_failures: None,
        deadline: c.health_deadline,
    }
}

/// The configured registry credentials, else those of Docker's `config.json` for the image's
/// registry, else none. The file is read on the blocking pool: a slow or stuck filesystem holds
/// this deploy, never an async thread (issue 12, defect 9).
pub(super) async fn credentials(
    c: &ContainerConfig,
    image: &str,
) -> anyhow::Result<Option<crate::runtime::Credentials>> {
    if let Some(auth) = &c.registry_auth {
        return Ok(Some(auth.clone()));
    }
    let (path, image) = (c.docker_config.clone(), image.to_string());
    super::blocking(move || crate::runtime::Credentials::from_docker_config(&path, &image)).await
}

/// The port a new container listens on: the app's fixed `port`, else a fresh loopback one.
pub(super) fn container_port(container: &ContainerConfig) -> anyhow::Result<u16> {
    match container.port {
        Some(port) => Ok(port),
        None => free_loopback_port(),
    }
}

/// A loopback port nothing listens on now, for a container on the host network.
pub(super) fn free_loopback_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}
