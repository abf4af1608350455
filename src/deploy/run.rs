//! What the deploy pipeline (`pipeline.rs`) calls on: what runs now (`Live`), the decision's
//! I/O shell (`decide`), the check and the watch, revert and restore, and how a failure is
//! recorded.

use std::sync::Arc;

use anyhow::Context as _;
use tracing::warn;

use super::hooks::{self, Stage};
use super::steps::Steps;
use super::{blocking, full, reload};
use crate::config::AppConfig;
use crate::git::Oid;
use crate::runtime::Engine;
use crate::services::Services;
use crate::store::StepStage;
use crate::store::{Deploy, DeployStatus};
use crate::tree::{Revision, Tree};

/// The app's proxy, if it has one.
pub(super) fn proxy_of<'a>(ctx: &'a Services, app: &AppConfig) -> Option<&'a crate::proxy::Proxy> {
    ctx.proxies.get(&app.name).map(|p| p.as_ref())
}

/// Until when a fast deploy's reload holds the app's new requests.
pub(super) fn hold_detail(app: &AppConfig) -> &'static str {
    match &app.check {
        Some(_) => "new requests wait in the proxy until the check passes",
        None => "new requests wait in the proxy until the reload returns",
    }
}

/// What the full path (and a swap) needs to know about `deploy` of `target`, replacing `old`.
pub(super) fn full_deploy<'a>(
    ctx: &'a Services,
    app: &'a AppConfig,
    container: &'a crate::config::ContainerConfig,
    deploy: &Deploy,
    target: Oid,
    old: Option<String>,
) -> full::FullDeploy<'a> {
    full::FullDeploy {
        app,
        container,
        deploy_id: deploy.id,
        commit: target.into(),
        git_ref: deploy.git_ref.clone().unwrap_or_default(),
        old_container: old,
        proxy: proxy_of(ctx, app),
    }
}

/// The `swap` reload: a new container from the image the live one runs (already in the engine,
/// no pull) on the new release, through the full path's gate, switch, drain and retire.
pub(super) async fn swap_same_image(
    ctx: &Services,
    f: &full::FullDeploy<'_>,
    steps: &Steps,
    digest: Option<String>,
) -> anyhow::Result<(
    Arc<dyn Engine>,
    crate::store::LiveContainer,
    Option<full::Kept>,
)> {
    let docker = ctx.engine().await?;
    let running = match &f.old_container {
        Some(id) => docker.inspect(id).await?.filter(|info| info.running),
        None => None,
    };
    let Some(running) = running else {
        anyhow::bail!(
            "no live container to swap (its image is what a swap runs): deploy the full path first (POST /api/apps/{}/deploy with path = \"full\")",
            f.app.name
        );
    };
    // Synced already: the new release is not the tree the old container runs from.
    let tree = full::Tree {
        trial: None,
        put: std::future::ready(Ok(())),
        back: std::future::ready(()),
    };
    let (new, kept) = full::swap(&*docker, steps, f, running.image_ref, digest, tree).await?;
    Ok((docker, new, kept))
}

/// A copy of `target`'s tree under the state dir for the full path's trial container, as a
/// step; returns where.
pub(super) async fn stage_trial(
    ctx: &Services,
    app: &AppConfig,
    steps: &Steps,
    target: Oid,
    revision: Option<Revision>,
) -> anyhow::Result<std::path::PathBuf> {
    let dir = ctx.config.trial_path(&app.name);
    let (layout, d) = (app.layout, dir.clone());
    let detail = format!("a copy of {target} in {}", dir.display());
    steps
        .run(StepStage::Stage, &detail, async move {
            let done = ctx
                .with_cache(&app.name, move |cache| {
                    Tree::stage(cache, &d, layout, target, revision.as_ref())
                })
                .await?;
            Ok(((), done))
        })
        .await?;
    Ok(dir)
}

/// The commits the app's containers were started on: their releases stay (a process may run
/// from one whatever `current` says). An engine that does not answer prunes nothing.
pub(super) async fn releases_in_use(ctx: &Services, app: &AppConfig) -> anyhow::Result<Vec<Oid>> {
    if app.container.is_none() {
        return Ok(Vec::new());
    }
    let docker = ctx.engine().await?;
    let containers = docker
        .list_by_label(full::LABEL_APP, &app.name)
        .await
        .context("listing the app's containers (nothing pruned)")?;
    Ok(containers
        .iter()
        .filter_map(|c| c.labels.get(full::LABEL_COMMIT))
        .filter_map(|sha| Oid::from_str(sha).ok())
        .collect())
}

pub(super) async fn fail_reverted(
    ctx: &Services,
    deploy: &Deploy,
    e: &anyhow::Error,
    reverted: anyhow::Result<&str>,
) -> anyhow::Result<()> {
    let error = match &reverted {
        Ok(state) => format!("{e:#}; reverted: {state}"),
        Err(again) => {
            format!("{e:#}; reverting did not bring the previous version back: {again:#}")
        }
    };
    record_failure(ctx, deploy, &error, true).await
}

/// The app's reload as a step; `container` is its live container, if any.
pub(super) async fn reload_step(
    ctx: &Services,
    app: &AppConfig,
    tree: &AppTree<'_>,
    steps: &Steps,
    container: Option<&str>,
) -> anyhow::Result<()> {
    steps
        .run(StepStage::Reload, &app.reload.to_string(), async {
            Ok(((), reload::reload(ctx, app, tree, container).await?))
        })
        .await
}

/// An app's tree for one deploy (or one recovery): opened — the volume created if missing —
/// at its first use, then the same directory handle for every later stage (sync, reload,
/// restore, prune), so they all act on the directory the deploy first opened.
pub(super) struct AppTree<'a> {
    app: &'a AppConfig,
    tree: tokio::sync::OnceCell<Arc<Tree>>,
}

impl<'a> AppTree<'a> {
    pub(super) fn new(app: &'a AppConfig) -> AppTree<'a> {
        AppTree {
            app,
            tree: tokio::sync::OnceCell::new(),
        }
    }

    /// The tree, opened on the blocking pool the first time.
    pub(super) async fn get(&self) -> anyhow::Result<Arc<Tree>> {
        let (volume, layout) = (self.app.volume.clone(), self.app.layout);
        let open = || blocking(move || Ok(Arc::new(Tree::open(&volume, layout)?)));
        self.tree.get_or_try_init(open).await.cloned()
    }
}

/// After a failed sync or reload, put the volume back to what was deployed.
pub(super) async fn restore(
    ctx: &Services,
    app: &AppConfig,
    tree: &AppTree<'_>,
    steps: &Steps,
    current: Oid,
    back_to: Option<Oid>,
) {
    let detail = match back_to {
        Some(c) => format!("back to {c}"),
        None => "back to an empty volume".to_string(),
    };
    let revision = live_revision(ctx, app).await;
    let restored = steps
        .run(StepStage::Restore, &detail, async move {
            let tree = tree.get().await?;
            let done = ctx
                .with_cache(&app.name, move |cache| {
                    tree.restore(cache, current, back_to, revision.as_ref())
                })
                .await?;
            Ok(((), done))
        })
        .await;
    if let Err(e) = restored {
        warn!(
            error = format!("{e:#}"),
            "could not restore the previous commit"
        );
    }
}

/// The revision file of what `app_state` names live (the commit a restore puts back), as the
/// deploy that put it there recorded it (nothing live: only its path, for a restore to an
/// empty volume to remove it); `None` when the app writes none.
pub(super) async fn live_revision(ctx: &Services, app: &AppConfig) -> Option<Revision> {
    let file = app.revision_file.clone()?;
    let deploy_id = match ctx.store.app_state(&app.name).await {
        Ok(Some(state)) => state.deploy_id,
        _ => 0,
    };
    let git_ref = match ctx.store.deploy(deploy_id).await {
        Ok(Some(d)) => d.git_ref.unwrap_or_default(),
        _ => String::new(),
    };
    Some(Revision {
        file,
        git_ref,
        deploy_id,
    })
}

/// The post-deploy (or post-rollback) hooks of a deploy whose new version is live. `app_state`
/// names the new commit before they run (it is what runs, and a hook may ask the API); the
/// deploy stays `running` until they finish. A failure fails the deploy; the caller reverts a
/// fast deploy when the app asks for it, else the new version stays live.
pub(super) async fn post_deploy_hooks(
    ctx: &Services,
    app: &AppConfig,
    deploy: &Deploy,
    target: Oid,
    live: Option<&crate::store::LiveContainer>,
) -> anyhow::Result<()> {
    let stage = Stage::after_deploy(deploy.trigger);
    let (config, name) = (ctx.config.clone(), app.name.clone());
    if !blocking(move || Ok(hooks::has_hooks(&config, &name, stage))).await? {
        return Ok(());
    }
    ctx.store
        .go_live(deploy.id, &app.name, target.into(), live)
        .await?;
    hooks::run_stage(ctx, &app.name, deploy.id, stage).await
}

pub(super) async fn fail(ctx: &Services, deploy: &Deploy, e: &anyhow::Error) -> anyhow::Result<()> {
    record_failure(ctx, deploy, &format!("{e:#}"), false).await
}

/// A failed deploy: logged, the on-failure hooks run, then the row says `failed` (and whether
/// its changes were reverted).
async fn record_failure(
    ctx: &Services,
    deploy: &Deploy,
    error: &str,
    reverted: bool,
) -> anyhow::Result<()> {
    warn!(deploy_id = deploy.id, %error, reverted, "deploy failed");
    hooks::on_failure(ctx, &deploy.app, deploy.id, error).await;
    match reverted {
        true => ctx.store.fail_reverted(deploy.id, error).await,
        false => {
            ctx.store
                .finish_deploy(deploy.id, DeployStatus::Failed, None, Some(error))
                .await
        }
    }
}
