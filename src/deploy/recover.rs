//! Startup recovery: what a crash left behind is resolved before the server answers.
//!
//! - stale git lock files in the caches are removed (a SIGKILL during a fetch leaves them);
//! - deploys left `running` become `interrupted`, and the paths they may have touched are put
//!   back to the app's last good commit, then the app is reloaded;
//! - deploys still `queued` (acknowledged, never started) are queued again, oldest first.

use anyhow::{bail, Context as _};
use tracing::{info, warn};

use super::run::AppTree;
use super::steps::Steps;
use super::{blocking, full, reload};
use crate::git::Oid;
use crate::services::Services;
use crate::store::DeployStatus;
use crate::store::StepStage;

/// Resolve what a previous run left unfinished. Called once at startup, after the workers start.
pub async fn recover(ctx: &Services) -> anyhow::Result<()> {
    for app in &ctx.config.apps {
        let cache = ctx.config.cache_path(&app.name);
        let removed = blocking(move || clear_stale_locks(&cache)).await?;
        if removed > 0 {
            warn!(
                app = app.name,
                removed, "removed stale git lock files left by a crash"
            );
        }
    }

    // Files first, containers next, reloads last: a live container that a crash left stopped
    // is started on the restored tree (and so needs no reload); a running one is reloaded.
    let interrupted = ctx.store.deploys_with_status(DeployStatus::Running).await?;
    let mut undone = Vec::with_capacity(interrupted.len());
    for deploy in &interrupted {
        undone.push(undo_interrupted(ctx, deploy, false).await);
    }
    let started = reconcile_containers(ctx).await?;
    for (deploy, undone) in interrupted.iter().zip(undone) {
        let stopped = "dockhand stopped while this deploy was running";
        let result = match undone {
            Ok(true) if !started.contains(&deploy.app) => reload_after_undo(ctx, deploy).await,
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        let error = result.map(|()| stopped.to_string()).unwrap_or_else(|e| {
            warn!(
                deploy_id = deploy.id,
                error = format!("{e:#}"),
                "could not undo interrupted deploy"
            );
            format!("{stopped}; undoing it failed: {e:#}")
        });
        // Only now: a deploy left `running` is undone again at the next start if this one is
        // killed mid-restore (the restore is idempotent: the same paths, the same content).
        ctx.store
            .finish_deploy(deploy.id, DeployStatus::Interrupted, None, Some(&error))
            .await?;
    }
    point_proxies(ctx).await?;

    let queued = ctx.store.deploys_with_status(DeployStatus::Queued).await?;
    if !queued.is_empty() {
        info!(
            count = queued.len(),
            "resuming deploys accepted before the last stop"
        );
    }
    let mut resume = Vec::with_capacity(queued.len());
    for deploy in queued {
        if ctx.config.app(&deploy.app).is_none() {
            let error = "app is no longer configured";
            ctx.store
                .finish_deploy(deploy.id, DeployStatus::Failed, None, Some(error))
                .await?;
        } else {
            resume.push((deploy.app, deploy.id));
        }
    }
    // In arrival order, from one task: latest-wins depends on it, and startup must not wait for
    // a queue that is longer than its bound.
    let deployer = ctx.deployer.clone();
    tokio::spawn(async move {
        for (app, id) in resume {
            if let Err(e) = deployer.enqueue(&app, id).await {
                warn!(deploy_id = id, error = %e, "could not resume queued deploy");
            }
        }
    });
    Ok(())
}

/// After a batch ended in an error of its own (the store refused a write, a panic), put each
/// of its deploys in a terminal state, as startup recovery would: a running one has its paths
/// undone first. Retried with backoff while that fails (the store may be locked for a while),
/// until shutdown: then the next start recovers them.
pub(super) async fn settle(
    ctx: &Services,
    ids: &[i64],
    failure: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    /// Tries of the undo before the deploy is recorded failed without it.
    const UNDO_TRIES: u32 = 5;
    let error = format!("the deploy could not go on: {failure}");
    for &id in ids {
        let mut wait = std::time::Duration::from_millis(500);
        let mut tried = 0;
        loop {
            tried += 1;
            match settle_one(ctx, id, &error, tried >= UNDO_TRIES).await {
                Ok(()) => break,
                Err(e) => warn!(
                    deploy_id = id,
                    error = format!("{e:#}"),
                    retry_in = ?wait,
                    "could not settle the failed deploy yet"
                ),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(std::time::Duration::from_secs(30));
        }
    }
}

/// Undo deploy `id` if it is running, then record it failed. With `last_try` a failed undo is
/// said in the error instead of tried again.
async fn settle_one(ctx: &Services, id: i64, error: &str, last_try: bool) -> anyhow::Result<()> {
    let Some(deploy) = ctx.store.deploy(id).await? else {
        return Ok(());
    };
    let mut error = error.to_string();
    if deploy.status == DeployStatus::Running {
        match undo_interrupted(ctx, &deploy, true).await {
            Ok(_) => {}
            Err(e) if last_try => error = format!("{error}; undoing it failed: {e:#}"),
            Err(e) => return Err(e.context("undoing the deploy")),
        }
    } else if deploy.status != DeployStatus::Queued {
        return Ok(()); // already terminal
    }
    ctx.store
        .finish_deploy(id, DeployStatus::Failed, None, Some(&error))
        .await
}

/// How many startup recoveries of one deploy may be cut short before the next start stops
/// trying: a restore that kills the process must not become a crash loop.
const MAX_RECOVER_ATTEMPTS: usize = 2;

/// Put back the last good commit over the paths an interrupted deploy may have touched, and
/// with `reload` reload the app, recorded as the deploy's `recover` step. `Ok(true)` when the
/// app still needs its reload (`reload` false and a good commit was put back).
async fn undo_interrupted(
    ctx: &Services,
    deploy: &crate::store::Deploy,
    reload: bool,
) -> anyhow::Result<bool> {
    let Some(app) = ctx.config.app(&deploy.app) else {
        warn!(
            deploy_id = deploy.id,
            app = deploy.app,
            "interrupted deploy of an app no longer configured"
        );
        return Ok(false);
    };
    let Some(touched) = deploy.to_commit.map(Oid::from) else {
        return Ok(false); // stopped before planning: the volume was never written
    };
    let cut_short = ctx
        .store
        .steps(deploy.id)
        .await?
        .iter()
        .filter(|s| s.stage == StepStage::Recover && s.finished_at.is_none())
        .count();
    if cut_short >= MAX_RECOVER_ATTEMPTS {
        bail!(
            "startup recovery was itself interrupted {cut_short} times, so it is not tried again; \
             files of {touched} may remain in the volume: check it, then deploy"
        );
    }
    let (live, good) = super::decide::Live::of(ctx.store.app_state(&app.name).await?);
    let tree = AppTree::new(app);
    let detail = match good {
        Some(c) => format!("re-apply the last good commit {c}"),
        None => "remove the partial first deploy".to_string(),
    };
    let revision = super::run::live_revision(ctx, app).await;
    Steps::new(ctx.store.clone(), deploy.id)
        .run(StepStage::Recover, &detail, async {
            let opened = tree.get().await?;
            let restored = ctx
                .with_cache(&app.name, move |cache| {
                    opened.restore(cache, touched, good, revision.as_ref())
                })
                .await?;
            match good {
                Some(_) if reload => {
                    let live = live.container.as_deref();
                    let reloaded = reload::reload(ctx, app, &tree, live).await?;
                    Ok(((), format!("{restored}; {reloaded}")))
                }
                _ => Ok(((), restored)),
            }
        })
        .await?;
    info!(
        deploy_id = deploy.id,
        app = app.name,
        "interrupted deploy undone"
    );
    Ok(good.is_some() && !reload)
}

/// Reload an app whose interrupted deploy was undone at startup, as the deploy's `reload`
/// step, once its live container runs again.
async fn reload_after_undo(ctx: &Services, deploy: &crate::store::Deploy) -> anyhow::Result<()> {
    let Some(app) = ctx.config.app(&deploy.app) else {
        return Ok(());
    };
    let (live, _) = super::decide::Live::of(ctx.store.app_state(&app.name).await?);
    Steps::new(ctx.store.clone(), deploy.id)
        .run(
            StepStage::Reload,
            "the app, on the last good commit",
            async {
                let tree = AppTree::new(app);
                let reloaded = reload::reload(ctx, app, &tree, live.container.as_deref()).await?;
                Ok(((), reloaded))
            },
        )
        .await
}

/// For apps with a container: remove containers that interrupted deploys left behind, and make
/// sure the last good container runs — started again if stopped, recreated from its recorded
/// image if gone (SECURITY.md 33). Runs after the volumes were restored. Returns the apps whose
/// live container was started or recreated (it read the restored tree as it booted). An engine
/// error is said per app and never stops the server from starting.
async fn reconcile_containers(ctx: &Services) -> anyhow::Result<std::collections::HashSet<String>> {
    let mut started = std::collections::HashSet::new();
    let apps: Vec<_> = ctx
        .config
        .apps
        .iter()
        .filter(|a| a.container.is_some())
        .collect();
    if apps.is_empty() {
        return Ok(started);
    }
    let docker = match ctx.engine().await {
        Ok(d) => d,
        Err(e) => {
            warn!(
                error = format!("{e:#}"),
                "container engine unreachable: containers not reconciled"
            );
            return Ok(started);
        }
    };
    for app in apps {
        match reconcile_app(ctx, &*docker, app).await {
            Ok(true) => {
                started.insert(app.name.clone());
            }
            Ok(false) => {}
            Err(e) => warn!(
                app = app.name,
                error = format!("{e:#}"),
                "could not reconcile the app's containers"
            ),
        }
    }
    Ok(started)
}

/// [`reconcile_containers`] for one app; `Ok(true)` when its live container was started or
/// recreated.
async fn reconcile_app(
    ctx: &Services,
    docker: &dyn crate::runtime::Engine,
    app: &crate::config::AppConfig,
) -> anyhow::Result<bool> {
    let Some(container) = &app.container else {
        return Ok(false);
    };
    let state = ctx.store.app_state(&app.name).await?;
    let live = state.as_ref().and_then(|s| s.container_id.clone());
    for c in docker.list_by_label(full::LABEL_APP, &app.name).await? {
        if Some(&c.id) != live.as_ref() {
            match docker.remove(&c.id).await {
                Ok(_) => warn!(
                    app = app.name,
                    container = c.name,
                    "removed a container an interrupted deploy left behind"
                ),
                Err(e) => warn!(
                    app = app.name,
                    container = c.name,
                    error = format!("{e:#}"),
                    "could not remove a container an interrupted deploy left behind"
                ),
            }
        }
    }
    let (Some(state), Some(live)) = (state, live) else {
        return Ok(false);
    };
    match docker.inspect(&live).await? {
        // A full deploy paused it around the tree's change (put back above) and stopped.
        Some(info) if info.paused => {
            docker.unpause(&live).await?;
            info!(
                app = app.name,
                container = live,
                "resumed the live container an interrupted deploy had paused"
            );
            Ok(false)
        }
        Some(info) if info.running => Ok(false),
        Some(_) => {
            docker.start(&live).await?;
            info!(
                app = app.name,
                container = live,
                "started the stopped live container again"
            );
            Ok(true)
        }
        None => match super::container::revive(docker, app, container, &state).await {
            Ok(c) => {
                ctx.store.set_live_container(&app.name, &c).await?;
                info!(
                    app = app.name,
                    container = c.id,
                    port = c.port,
                    "live container was gone; recreated it"
                );
                Ok(true)
            }
            Err(e) => {
                warn!(
                    app = app.name,
                    error = format!("{e:#}"),
                    "could not recreate the live container"
                );
                Ok(false)
            }
        },
    }
}

/// Point each proxied app's proxy at its live container (as reconciled), and restore the
/// maintenance switch as last set over the API.
async fn point_proxies(ctx: &Services) -> anyhow::Result<()> {
    for app in &ctx.config.apps {
        let Some(proxy) = ctx.proxies.get(&app.name) else {
            continue;
        };
        if let Some(m) = ctx.store.maintenance(&app.name).await? {
            proxy.set_maintenance(m.enabled);
        }
        if app.container.is_none() {
            continue;
        }
        let state = ctx.store.app_state(&app.name).await?;
        let live = state.and_then(|s| Some((s.container_id?, u16::try_from(s.port?).ok()?)));
        if let Some((id, port)) = live {
            proxy.switch(Some(full::upstream(&id, port)));
        }
    }
    Ok(())
}

/// Remove `*.lock` files that libgit2 leaves in a bare repository when it is killed mid-write
/// (`refs/**`, `packed-refs.lock`, `config.lock`, `shallow.lock`). Only called at startup, before
/// any worker can fetch, so no live lock is ever removed. Returns how many were removed.
fn clear_stale_locks(repo: &std::path::Path) -> anyhow::Result<usize> {
    fn walk(dir: &std::path::Path, removed: &mut usize) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                walk(&path, removed)?;
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "lock") {
                std::fs::remove_file(&path)?;
                *removed += 1;
            }
        }
        Ok(())
    }
    if !repo.is_dir() {
        return Ok(0);
    }
    let mut removed = 0;
    for top in [
        "packed-refs.lock",
        "config.lock",
        "shallow.lock",
        "HEAD.lock",
        "FETCH_HEAD.lock",
    ] {
        let path = repo.join(top);
        if path.is_file() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
            removed += 1;
        }
    }
    let refs = repo.join("refs");
    if refs.is_dir() {
        walk(&refs, &mut removed)
            .with_context(|| format!("clearing lock files under {}", refs.display()))?;
    }
    Ok(removed)
}
