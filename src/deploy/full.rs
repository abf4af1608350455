//! The full path: pull the image, start a new container beside the old one on a fresh loopback
//! port, wait until it is healthy, then stop and remove the old one (start-first). On any
//! failure the new container is removed (its last log lines kept in the step) and the old one
//! is never touched.

use std::future::Future;

use super::container::{
    self, container_port, free_loopback_port, health_check, launch_healthy, spec, start_healthy,
    Recorded,
};
use super::hold::Held;
use super::steps::Steps;
use crate::commit::CommitId;
use crate::config::{render, AppConfig, ContainerConfig, Reload, Strategy};
use crate::proxy::{Proxy, Retired, Target};
use crate::runtime::Engine;
use crate::store::StepStage;
use crate::store::{LiveContainer, Store};

/// Labels dockhand puts on every container it starts.
pub const LABEL_APP: &str = "dockhand.app";
pub(crate) const LABEL_COMMIT: &str = "dockhand.commit";
pub(super) const LABEL_DEPLOY: &str = "dockhand.deploy";

/// What a full deploy needs to know about itself.
pub(super) struct FullDeploy<'a> {
    pub app: &'a AppConfig,
    pub container: &'a ContainerConfig,
    pub deploy_id: i64,
    pub commit: CommitId,
    pub git_ref: String,
    /// The container serving now, if any: stopped only once the new one is healthy.
    pub old_container: Option<String>,
    /// The app's reverse proxy, switched to the new container once it is healthy.
    pub proxy: Option<&'a Proxy>,
}

/// The proxy target of a container listening on a loopback port.
pub(super) fn upstream(container: &str, port: u16) -> Target {
    Target {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        container: Some(container.to_string()),
    }
}

/// Pull the deploy's image and record its digest; returns the image reference and digest.
pub(super) async fn pull(
    docker: &dyn Engine,
    store: &Store,
    steps: &Steps,
    d: &FullDeploy<'_>,
) -> anyhow::Result<(String, Option<String>)> {
    let image = render(&d.container.image, &d.commit.to_string(), &d.git_ref);
    let pulled = steps
        .run(StepStage::Pull, &image, async {
            let pulled = container::pull(docker, d.container, &image).await?;
            let out = format!(
                "image {} digest {}",
                pulled.image_id,
                pulled.digest.as_deref().unwrap_or("(none)")
            );
            Ok((pulled, out))
        })
        .await?;
    store
        .record_image(d.deploy_id, &image, pulled.digest.as_deref())
        .await?;
    Ok((image, pulled.digest))
}

/// How the new commit reaches the tree the containers mount, for [`swap`] to order around the
/// old container.
pub(super) struct Tree<'a, P, B> {
    /// A copy of the new tree for a trial container ([`needs_trial`]).
    pub trial: Option<&'a std::path::Path>,
    /// Puts the new commit into the tree.
    pub put: P,
    /// Puts the old commit back, after `put` or the new container failed.
    pub back: B,
}

/// Replace the old container by a new one of `image`, by the app's strategy. With a proxy,
/// new requests switch to the new container once it is healthy, and the old one is stopped
/// only after the requests still open on it finished (bounded by the drain timeout).
///
/// `tree.put` brings the new commit into the tree the containers mount and `tree.back` puts
/// the old one back (after `put` failed, or the new container did). The tree the old container runs from
/// changes only while that container runs nothing: stopped first (stop-first), else paused
/// (start-first on a shared tree: the volume, or `current`), new requests waiting in the
/// proxy's hold meanwhile. A swapping app's containers each mount their own release: the old
/// one keeps serving throughout. With the container's `watch`, the old container is not
/// removed but kept (paused, or stopped) and returned, for [`switch_back`] or [`retire`].
pub(super) async fn swap(
    docker: &dyn Engine,
    steps: &Steps,
    d: &FullDeploy<'_>,
    image: String,
    digest: Option<String>,
    tree: Tree<'_, impl Future<Output = anyhow::Result<()>>, impl Future<Output = ()>>,
) -> anyhow::Result<(LiveContainer, Option<Kept>)> {
    let Tree { trial, put, back } = tree;
    let port = container_port(d.container)?;
    let old = make_room(docker, steps, d, &image, port, trial).await?;
    let started = match put.await {
        Ok(()) => start_healthy(docker, steps, d, &image, port).await,
        Err(e) => Err(e),
    };
    let id = match started {
        Ok(id) => id,
        Err(e) => {
            back.await;
            return Err(serve_old_again(docker, steps, d, old, e).await);
        }
    };
    // From here on the new container is live: nothing below fails the deploy.
    let (retired, paused) = go_live(steps, d, &id, port, old).await;
    let live = LiveContainer {
        id,
        image,
        digest,
        port,
    };
    let kept = match &d.old_container {
        Some(old) => keep_or_retire(docker, steps, d, old, retired, paused).await,
        None => None,
    };
    Ok((live, kept))
}

/// Before the new container starts: stop-first stops the old one (its port is needed); on a
/// shared tree the new version first proves itself in a trial, then the old one is paused
/// while its tree changes. Otherwise the old one serves on, untouched.
async fn make_room<'a>(
    docker: &dyn Engine,
    steps: &'a Steps,
    d: &FullDeploy<'a>,
    image: &str,
    port: u16,
    trial: Option<&std::path::Path>,
) -> anyhow::Result<Option<Old<'a>>> {
    let stop_first = d.container.strategy == Strategy::StopFirst;
    Ok(match d.old_container.as_deref() {
        Some(old) if stop_first => Some(Old::Stopped(stop_old(docker, steps, d, old, port).await?)),
        Some(old) if needs_trial(d) => {
            // The new version proves itself first while the old one serves, unchanged: a
            // deploy that fails here has cost nobody anything.
            if let Some(tree) = trial {
                run_trial(docker, steps, d, image, tree).await?;
            }
            Some(Old::Paused(pause_old(docker, steps, d.proxy, old).await?))
        }
        _ => None,
    })
}

/// The new container did not come up (the tree is back already): the old one serves again.
/// Returns the deploy's error, saying so if the old one could not be brought back.
async fn serve_old_again(
    docker: &dyn Engine,
    steps: &Steps,
    d: &FullDeploy<'_>,
    old: Option<Old<'_>>,
    e: anyhow::Error,
) -> anyhow::Error {
    if let (Some(old), Some(id)) = (old, d.old_container.as_deref()) {
        if let Err(again) = old.resume(docker, steps, d.proxy, id).await {
            return e.context(format!(
                "and the previous container did not serve again: {again:#}"
            ));
        }
    }
    e
}

/// The proxy sends to the new container; a paused old one's hold is released. Returns what
/// the proxy switched away from, and whether the old container is paused.
async fn go_live(
    steps: &Steps,
    d: &FullDeploy<'_>,
    id: &str,
    port: u16,
    old: Option<Old<'_>>,
) -> (Option<Retired>, bool) {
    let mut retired = None;
    if let Some(proxy) = d.proxy {
        retired = switch(steps, proxy, Some(upstream(id, port)))
            .await
            .unwrap_or(None);
    }
    let mut paused = false;
    if let Some(Old::Paused(p)) = old {
        p.hold.release(steps).await;
        retired = retired.or(p.switched);
        paused = true;
    }
    (retired, paused)
}

/// After the switch: drain the old container's requests, then retire it — or, with the
/// container's `watch`, keep it paused (stopped, stop-first) to switch back to.
async fn keep_or_retire(
    docker: &dyn Engine,
    steps: &Steps,
    d: &FullDeploy<'_>,
    old: &str,
    retired: Option<Retired>,
    paused: bool,
) -> Option<Kept> {
    let grace = d.container.stop_grace;
    let stop_first = d.container.strategy == Strategy::StopFirst;
    if let (Some(proxy), Some(retired)) = (d.proxy, &retired) {
        let _ = drain(steps, proxy, retired).await;
    }
    if d.container.watch.is_zero() {
        retire(docker, steps, old, grace).await;
        return None;
    }
    // Kept to switch back to while the new one is watched: paused (stopped, stop-first).
    if !paused && !stop_first {
        let paused = steps
            .run(
                StepStage::PauseOld,
                &format!("keep {old} paused while the new container is watched"),
                async {
                    docker.pause(old).await?;
                    Ok(((), "paused".to_string()))
                },
            )
            .await;
        if paused.is_err() {
            retire(docker, steps, old, grace).await;
            return None;
        }
    }
    Some(Kept {
        id: old.to_string(),
        target: retired.map(|r| r.target().clone()),
        stopped: stop_first,
    })
}

/// The old container a watched deploy keeps to switch back to: paused, or stopped
/// (stop-first), never removed until the window ends.
pub(super) struct Kept {
    pub id: String,
    /// Where the proxy sent its requests (to switch back).
    target: Option<Target>,
    stopped: bool,
}

/// Stop and remove `old` as a step; a failure fails nothing (startup reconciliation removes
/// it as a stray if it is still there then).
pub(super) async fn retire(
    docker: &dyn Engine,
    steps: &Steps,
    old: &str,
    grace: std::time::Duration,
) {
    let retiring = steps
        .run(
            StepStage::Retire,
            &format!("stop and remove {old}"),
            async {
                docker.stop(old, grace).await?;
                docker.remove(old).await?;
                Ok(((), "removed".to_string()))
            },
        )
        .await;
    if let Err(e) = retiring {
        tracing::warn!(
            container = old,
            error = format!("{e:#}"),
            "the old container could not be retired"
        );
    }
}

/// The watch failed: the kept old container serves again and the new one goes. New requests
/// are held meanwhile; the new container stops serving (paused, or stopped on a fixed port)
/// before `back` puts the old commit back into the tree, and the old one runs again only
/// after that. `previous` is the old container's commit (its health answer names it).
pub(super) async fn switch_back(
    docker: &dyn Engine,
    steps: &Steps,
    d: &FullDeploy<'_>,
    kept: Kept,
    new: &str,
    previous: &str,
    back: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let grace = d.container.stop_grace;
    let hold = Held::start(
        d.proxy,
        steps,
        "new requests wait in the proxy until the previous container serves again",
    )
    .await;
    let resumed = async {
        if let Some(proxy) = d.proxy {
            if let Some(retired) = switch(steps, proxy, None).await? {
                drain(steps, proxy, &retired).await?;
            }
        }
        steps
            .run(StepStage::StopNew, new, async {
                match kept.stopped {
                    true => docker.stop(new, grace).await?,
                    false => docker.pause(new).await?,
                }
                Ok(((), "it serves nothing now".to_string()))
            })
            .await?;
        back.await;
        let old = &kept.id;
        steps
            .run(StepStage::ResumeOld, old, async {
                match kept.stopped {
                    false => docker.unpause(old).await?,
                    true => {
                        docker.start(old).await?;
                        // Stopped: stop-first, on its fixed port.
                        let port = d.container.port.unwrap_or_default();
                        let mut check = health_check(d, port);
                        check.expect_body_contains = d
                            .container
                            .expect_body_contains
                            .as_deref()
                            .map(|t| render(t, previous, ""));
                        docker.wait_healthy(old, &check).await?;
                    }
                }
                Ok(((), "the previous container serves again".to_string()))
            })
            .await?;
        if let (Some(proxy), Some(target)) = (d.proxy, &kept.target) {
            switch(steps, proxy, Some(target.clone())).await?;
        }
        anyhow::Ok(())
    }
    .await;
    hold.release(steps).await;
    resumed?;
    retire(docker, steps, new, grace).await;
    Ok(())
}

/// Whether a full deploy pauses the old container around the tree's change, and so first
/// runs a trial of the new version on a copy of its tree (`swap`'s `trial`): start-first, an
/// old container, a tree shared by both (not a swapping app's own releases).
pub(super) fn needs_trial(d: &FullDeploy<'_>) -> bool {
    d.old_container.is_some()
        && d.container.strategy != Strategy::StopFirst
        && d.app.reload != Reload::Swap
}

/// The trial: a container of `image` on a copy of the new commit's tree (`tree`, outside the
/// volume), health-gated like the real one, then removed. The old container serves throughout;
/// if the trial fails, nothing else happened.
async fn run_trial(
    docker: &dyn Engine,
    steps: &Steps,
    d: &FullDeploy<'_>,
    image: &str,
    tree: &std::path::Path,
) -> anyhow::Result<()> {
    let port = free_loopback_port()?;
    let mut spec = spec(d, image, port);
    spec.name.push_str("-trial");
    spec.mounts[0].source = tree.to_path_buf();
    spec.restart_policy = Some("no".to_string());
    let detail = format!(
        "{} on 127.0.0.1:{port}, on a copy of the new tree ({})",
        spec.name,
        tree.display()
    );
    let record = Recorded {
        steps,
        stages: [StepStage::Trial, StepStage::TrialHealth],
        detail: &detail,
    };
    let id = launch_healthy(docker, d, &spec, port, Some(record)).await?;
    if let Err(e) = docker.remove(&id).await {
        // Startup reconciliation removes it as a stray if it is still there then.
        tracing::warn!(
            container = id,
            error = format!("{e:#}"),
            "removing the trial container failed"
        );
    }
    Ok(())
}

/// The old container while the new one is started: what it takes to have it serve again.
enum Old<'a> {
    /// Stopped to free the port (stop-first); the upstream switched away from, if any.
    Stopped(Option<Retired>),
    /// Paused while the tree it runs from changes.
    Paused(Paused<'a>),
}

struct Paused<'a> {
    hold: Held<'a>,
    /// The upstream switched away from (requests past the hold get 503 meanwhile).
    switched: Option<Retired>,
}

impl Old<'_> {
    /// The new container failed: the old one serves again (its tree is already back).
    async fn resume(
        self,
        docker: &dyn Engine,
        steps: &Steps,
        proxy: Option<&Proxy>,
        id: &str,
    ) -> anyhow::Result<()> {
        let (switched, hold) = match self {
            Old::Stopped(switched) => (switched, None),
            Old::Paused(p) => (p.switched, Some(p.hold)),
        };
        let resumed = match hold {
            None => {
                steps
                    .run(StepStage::RestartOld, id, async {
                        docker.start(id).await?;
                        Ok(((), "the previous container is running again".to_string()))
                    })
                    .await
            }
            Some(_) => {
                steps
                    .run(StepStage::ResumeOld, id, async {
                        docker.unpause(id).await?;
                        let out = "the previous container runs again, on its own commit";
                        Ok(((), out.to_string()))
                    })
                    .await
            }
        };
        if let (Some(proxy), Some(old)) = (proxy, &switched) {
            switch_back_to(steps, proxy, old.target().clone()).await;
        }
        if let Some(hold) = hold {
            hold.release(steps).await;
        }
        resumed
    }
}

/// stop-first: the proxy stops sending to the old container (503 meanwhile) and waits for its
/// open requests, then the old container stops to free the port.
async fn stop_old(
    docker: &dyn Engine,
    steps: &Steps,
    d: &FullDeploy<'_>,
    old: &str,
    port: u16,
) -> anyhow::Result<Option<Retired>> {
    let mut switched = None;
    if let Some(proxy) = d.proxy {
        switched = switch(steps, proxy, None).await?;
    }
    let grace = d.container.stop_grace;
    let stopped = async {
        if let (Some(proxy), Some(retired)) = (d.proxy, &switched) {
            drain(steps, proxy, retired).await?;
        }
        steps
            .run(
                StepStage::StopOld,
                &format!("stop {old} to free port {port}"),
                async {
                    docker.stop(old, grace).await?;
                    Ok(((), format!("stopped within {grace:?}")))
                },
            )
            .await
    }
    .await;
    if let Err(e) = stopped {
        // The old container may well still serve: send its requests back to it, not to 503s.
        if let (Some(proxy), Some(retired)) = (d.proxy, &switched) {
            switch_back_to(steps, proxy, retired.target().clone()).await;
        }
        return Err(e);
    }
    Ok(switched)
}

/// start-first on a shared tree: new requests wait in the proxy's hold (without one, or past
/// its timeout, they are answered 503), those open on the old container finish, then it is
/// paused, so that nothing in it (a reload watching a file, a worker respawned) runs the new
/// commit on the old image.
async fn pause_old<'a>(
    docker: &dyn Engine,
    steps: &Steps,
    proxy: Option<&'a Proxy>,
    old: &str,
) -> anyhow::Result<Paused<'a>> {
    let hold = Held::start(
        proxy,
        steps,
        "new requests wait in the proxy until the new container is live",
    )
    .await;
    let mut paused = Paused {
        hold,
        switched: None,
    };
    let quiet = async {
        // Nothing is live meanwhile: a request past the hold's timeout gets a 503, not a
        // paused container.
        if let Some(proxy) = proxy {
            paused.switched = switch(steps, proxy, None).await?;
            if let Some(retired) = &paused.switched {
                drain(steps, proxy, retired).await?;
            }
        }
        steps
            .run(
                StepStage::PauseOld,
                &format!("pause {old} while the tree it runs from changes"),
                async {
                    docker.pause(old).await?;
                    Ok((
                        (),
                        "paused: it runs nothing until it is retired".to_string(),
                    ))
                },
            )
            .await
    }
    .await;
    match quiet {
        Ok(()) => Ok(paused),
        Err(e) => {
            if let (Some(proxy), Some(old)) = (proxy, &paused.switched) {
                let _ = switch(steps, proxy, Some(old.target().clone())).await;
            }
            paused.hold.release(steps).await;
            Err(e)
        }
    }
}

/// Point the proxy at `to` (or at nothing), as a step.
async fn switch(
    steps: &Steps,
    proxy: &Proxy,
    to: Option<Target>,
) -> anyhow::Result<Option<Retired>> {
    let detail = switch_detail(to.as_ref());
    // A store that refuses the row before the switch changes nothing; once switched, the
    // upstream it retired must reach the caller (to drain, or to switch back) row or not.
    let step = steps.begin(StepStage::Switch, &detail).await?;
    let retired = proxy.switch(to);
    if let Err(e) = steps.end(step, &switched_from(retired.as_ref())).await {
        tracing::warn!(
            error = format!("{e:#}"),
            "could not record the proxy's switch"
        );
    }
    Ok(retired)
}

/// Send new requests back to `to` after a failure: switched whatever the store says, then
/// recorded if it can be.
async fn switch_back_to(steps: &Steps, proxy: &Proxy, to: Target) {
    let detail = switch_detail(Some(&to));
    let retired = proxy.switch(Some(to));
    let recorded = async {
        let step = steps.begin(StepStage::Switch, &detail).await?;
        steps.end(step, &switched_from(retired.as_ref())).await
    };
    if let Err(e) = recorded.await {
        tracing::warn!(
            error = format!("{e:#}"),
            "could not record the proxy's switch back"
        );
    }
}

fn switch_detail(to: Option<&Target>) -> String {
    match to {
        Some(t) => format!("new requests go to {}", t.addr),
        None => "new requests are answered 503 until the new container is healthy".to_string(),
    }
}

fn switched_from(retired: Option<&Retired>) -> String {
    match retired {
        Some(old) => format!("was {}", old.target().addr),
        None => "nothing was live".to_string(),
    }
}

/// Wait for the requests still open on a retired upstream, as a step.
async fn drain(steps: &Steps, proxy: &Proxy, retired: &Retired) -> anyhow::Result<()> {
    steps
        .run(
            StepStage::Drain,
            &format!("requests still open on {}", retired.target().addr),
            async { Ok(((), drained(proxy.drain(retired).await))) },
        )
        .await
}

/// How a drain ended, for its step.
fn drained(drained: crate::proxy::Drained) -> String {
    if drained.abandoned == 0 {
        format!("all finished after {:?}", drained.waited)
    } else {
        format!(
            "drain timeout after {:?}: {} requests still open are cut",
            drained.waited, drained.abandoned
        )
    }
}

/// Remove the images of this app's older full deploys, keeping `live` (this deploy's, not yet
/// recorded succeeded) and the newest others to make `keep_images` in all. An image still in
/// use or already gone is left alone.
pub(super) async fn prune_images(
    docker: &dyn Engine,
    store: &Store,
    steps: &Steps,
    app: &AppConfig,
    container: &ContainerConfig,
    live: &str,
) -> anyhow::Result<()> {
    let images = store.deployed_images(&app.name).await?;
    let old: Vec<String> = images
        .into_iter()
        .filter(|i| i != live)
        .skip(container.keep_images.saturating_sub(1))
        .collect();
    if old.is_empty() {
        return Ok(());
    }
    steps
        .run(
            StepStage::PruneImages,
            &format!("keep the newest {}", container.keep_images),
            async {
                let mut removed = Vec::new();
                for image in &old {
                    if docker.remove_image(image).await? {
                        removed.push(image.as_str());
                    }
                }
                Ok((
                    (),
                    format!(
                        "removed: {}",
                        if removed.is_empty() {
                            "none".to_string()
                        } else {
                            removed.join(", ")
                        }
                    ),
                ))
            },
        )
        .await
}
