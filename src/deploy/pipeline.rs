//! One deploy, as an ordered list of stages: skip what needs no deploy, plan, decide the path,
//! record the plan, pre-deploy hooks, pull, put the new version live (a new container, a swap,
//! or the fast path's write and reload), post-deploy hooks, succeed.
//!
//! Each stage returns `Result<T, End>`. A failure carries what it leaves to undo
//! ([`Failure`]); one place, [`Run::finish`], does that undo, the on-failure hooks and the
//! final row. A store error ends the deploy as [`End::Broken`]: the worker then settles it
//! (`recover::settle`), as startup recovery would.

use std::sync::Arc;

use tracing::{info, warn};

use super::check::{run_check, watch, Watched};
use super::decide::{decide, Ask, Live};
use super::hold::Held;
use super::hooks::{self, Stage};
use super::plan::{Decision, DeployPath};
use super::run::{
    fail, fail_reverted, full_deploy, hold_detail, post_deploy_hooks, proxy_of, releases_in_use,
    reload_step, restore, stage_trial, swap_same_image, AppTree,
};
use super::steps::Steps;
use super::{blocking, fast, full, rollback};
use crate::commit::CommitId;
use crate::config::{AppConfig, AppPaths, Reload};
use crate::git::{Change, Oid};
use crate::runtime::Engine;
use crate::services::Services;
use crate::store::{Deploy, DeployStatus, LiveContainer, StepStage};
use crate::tree::{Revision, Switch, Tree, Write};

/// Deploy `target` for `deploy` of `app`, whose tree holds `deployed` and which runs `live`.
/// `Err` only when the store could not record how it ended.
pub(super) async fn execute(
    ctx: &Services,
    app: &AppConfig,
    deploy: &Deploy,
    deployed: Option<Oid>,
    target: Oid,
    live: Live,
) -> anyhow::Result<()> {
    let run = Run {
        ctx,
        app,
        deploy,
        deployed,
        target,
        before: live,
        steps: Steps::new(ctx.store.clone(), deploy.id),
        tree: AppTree::new(app),
    };
    match run.stages().await {
        Ok(()) | Err(End::Recorded) => Ok(()),
        Err(End::Failed(failure)) => run.finish(failure).await,
        Err(End::Broken(e)) => Err(e),
    }
}

/// How a deploy's stages ended before the last one.
enum End {
    /// Already recorded in a terminal state: already deployed, stale, or a watched
    /// replacement that was switched back.
    Recorded,
    /// Failed; [`Run::finish`] undoes what the failure says and records it.
    Failed(Failure),
    /// The store could not record what happened.
    Broken(anyhow::Error),
}

impl From<anyhow::Error> for End {
    fn from(e: anyhow::Error) -> End {
        End::Broken(e)
    }
}

impl End {
    /// Failed, nothing to undo.
    fn failed(e: anyhow::Error) -> End {
        End::Failed(Failure::Failed(e))
    }

    /// Failed after the tree may have taken the new commit.
    fn restore(e: anyhow::Error) -> End {
        End::Failed(Failure::Restore(e))
    }
}

/// A failed deploy and what it leaves to undo.
enum Failure {
    /// Nothing: nothing changed, or the stage put back what it changed itself.
    Failed(anyhow::Error),
    /// The tree may hold the new commit: put the deployed one back first.
    Restore(anyhow::Error),
    /// Reverted already (a failed check, watch or hook); how the revert went.
    Reverted(anyhow::Error, anyhow::Result<&'static str>),
}

/// An image pulled for the full path, and the deploy that runs it.
struct Pulled<'a> {
    f: full::FullDeploy<'a>,
    docker: Arc<dyn Engine>,
    image: String,
    digest: Option<String>,
}

/// One deploy as it runs.
struct Run<'a> {
    ctx: &'a Services,
    app: &'a AppConfig,
    deploy: &'a Deploy,
    /// The commit the app's tree holds before this deploy.
    deployed: Option<Oid>,
    target: Oid,
    /// What ran before this deploy: container, image, the deploy that put it there.
    before: Live,
    steps: Steps,
    tree: AppTree<'a>,
}

impl<'a> Run<'a> {
    /// The stages, in order.
    async fn stages(&self) -> Result<(), End> {
        self.skip_if_deployed_or_stale().await?;
        let plan = self.plan().await?;
        self.skip_if_outside_paths(&plan).await?;
        let recorded = self.recorded_image().await?;
        let (decision, docker) = self.decide(&plan, recorded.as_ref()).await?;
        self.record_plan(&decision, &plan.message).await?;
        hooks::run_stage(self.ctx, &self.app.name, self.deploy.id, Stage::PreDeploy)
            .await
            .map_err(End::failed)?;
        if let Some(swarm) = &self.app.swarm {
            return self.rollout(&plan, swarm, decision.path, recorded).await;
        }
        // The full path pulls before the volume is touched: a bad image changes nothing.
        let pulled = self.pull(&decision, docker, recorded).await?;
        let live = match &pulled {
            Some(pulled) => Some(self.replace(&plan, pulled).await?),
            None if self.app.reload == Reload::Swap => Some(self.swap(&plan).await?),
            None => self.fast(&plan).await?,
        };
        self.post_deploy(live.as_ref(), pulled.is_some()).await?;
        self.succeed(live.as_ref(), pulled.as_ref()).await
    }

    /// A deploy that needs no work ends here, recorded: the commit is deployed already (unless
    /// asked for by name: a manual redeploy runs and reloads), or it is older than the deployed
    /// one and not forced.
    async fn skip_if_deployed_or_stale(&self) -> Result<(), End> {
        let (deploy, target, store) = (self.deploy, self.target, &self.ctx.store);
        if self.deployed == Some(target) && !deploy.asked_for() {
            let reason = format!("commit {target} is already deployed");
            store
                .finish_deploy(deploy.id, DeployStatus::Ignored, Some(&reason), None)
                .await?;
            return Err(End::Recorded);
        }
        let Some(current) = self.deployed.filter(|_| !deploy.forced) else {
            return Ok(());
        };
        let older = self
            .ctx
            .with_cache(&self.app.name, move |cache| {
                cache.is_ancestor(target, current)
            })
            .await?;
        if !older {
            return Ok(());
        }
        let reason = format!(
            "commit {target} is older than the deployed {current}; a forced push or a manual deploy can put it back"
        );
        warn!(deploy_id = deploy.id, %reason, "stale");
        store
            .finish_deploy(deploy.id, DeployStatus::Stale, Some(&reason), None)
            .await?;
        Err(End::Recorded)
    }

    /// The diff against the deployed commit, as the `plan` step.
    async fn plan(&self) -> Result<fast::Plan, End> {
        let (app, ctx) = (self.app, self.ctx);
        let (volume, adopt, layout, max) =
            (app.volume.clone(), app.adopt, app.layout, app.max_tree_size);
        let (deployed, target) = (self.deployed, self.target);
        self.steps
            .run(
                StepStage::Plan,
                "diff against the deployed commit",
                async move {
                    let plan = ctx
                        .with_cache(&app.name, move |cache| {
                            fast::plan(cache, &volume, layout, deployed, target, adopt, max)
                        })
                        .await?;
                    let summary = plan.summary.clone();
                    Ok((plan, summary))
                },
            )
            .await
            .map_err(End::failed)
    }

    /// A push (or poll) that changes nothing under the app's `paths` ends here, `ignored` with
    /// the reason: a monorepo's other services changed. Asked-for deploys and first deploys run.
    async fn skip_if_outside_paths(&self, plan: &fast::Plan) -> Result<(), End> {
        let Some(paths) = &self.app.paths else {
            return Ok(());
        };
        if self.deploy.asked_for() || self.deployed.is_none() {
            return Ok(());
        }
        if paths.matching(plan.changes.iter().map(Change::path)) > 0 {
            return Ok(());
        }
        let reason = outside_paths(paths, plan.changes.len());
        info!(deploy_id = self.deploy.id, %reason, "ignored");
        let store = &self.ctx.store;
        store
            .finish_deploy(self.deploy.id, DeployStatus::Ignored, Some(&reason), None)
            .await?;
        Err(End::Recorded)
    }

    /// A rollback on an app with a container runs the image recorded for the deploy it
    /// repeats; a promote the image the deploy of the other app ran.
    async fn recorded_image(&self) -> Result<Option<(String, String)>, End> {
        let store = &self.ctx.store;
        if self.app.container.is_none() && self.app.swarm.is_none() {
            return Ok(None);
        }
        if let Some(of) = self.deploy.rollback_of {
            return Ok(store.image_as_of(&self.app.name, of).await?);
        }
        let Some(from) = self.deploy.promoted_from else {
            return Ok(None);
        };
        match store.deploy(from).await? {
            Some(source) => Ok(store.image_as_of(&source.app, from).await?),
            None => Ok(None),
        }
    }

    /// Fast or full, and why (`plan::decide`, with what the engine says of the live container).
    async fn decide(
        &self,
        plan: &fast::Plan,
        recorded: Option<&(String, String)>,
    ) -> Result<(Decision, Option<Arc<dyn Engine>>), End> {
        let ask = Ask {
            git_ref: self.deploy.git_ref.as_deref().unwrap_or_default(),
            requested: self.deploy.requested_path,
            recorded_digest: recorded.map(|(_, digest)| digest.as_str()),
        };
        decide(self.ctx, self.app, &ask, plan, self.target, &self.before)
            .await
            .map_err(End::failed)
    }

    /// The decision on the row: FROM/TO/PATH are recorded before anything changes.
    async fn record_plan(&self, decision: &Decision, message: &str) -> Result<(), End> {
        self.ctx
            .store
            .plan_deploy(
                self.deploy.id,
                self.target.into(),
                decision.path,
                &decision.reason,
                message.lines().next().unwrap_or_default(),
            )
            .await?;
        Ok(())
    }

    /// On the full path, the image: pulled, or a rollback's recorded one reused.
    async fn pull(
        &self,
        decision: &Decision,
        docker: Option<Arc<dyn Engine>>,
        recorded: Option<(String, String)>,
    ) -> Result<Option<Pulled<'a>>, End> {
        let (DeployPath::Full, Some(container), Some(docker)) =
            (decision.path, &self.app.container, docker)
        else {
            return Ok(None);
        };
        let old = self.before.container.clone();
        let f = full_deploy(self.ctx, self.app, container, self.deploy, self.target, old);
        let store = &self.ctx.store;
        let pulled = match &recorded {
            Some((image, digest)) => {
                rollback::reuse_image(&*docker, store, &self.steps, &f, image, digest).await
            }
            None => full::pull(&*docker, store, &self.steps, &f).await,
        };
        let (image, digest) = pulled.map_err(End::failed)?;
        Ok(Some(Pulled {
            f,
            docker,
            image,
            digest,
        }))
    }

    /// The revision file's contents for this deploy, if the app keeps one.
    fn revision(&self) -> Option<Revision> {
        self.app.revision_file.clone().map(|file| Revision {
            file,
            git_ref: self.deploy.git_ref.clone().unwrap_or_default(),
            deploy_id: self.deploy.id,
        })
    }

    /// Write the new commit as step `stage`: `Switch::Now` puts it live, `Later` (releases)
    /// only builds its release.
    async fn write(
        &self,
        plan: &fast::Plan,
        stage: StepStage,
        switch: Switch,
    ) -> anyhow::Result<()> {
        let (app, ctx) = (self.app, self.ctx);
        let volume = app.volume.clone();
        let (changes, revision) = (plan.changes.clone(), self.revision());
        let (from, to) = (self.deployed, self.target);
        let detail = match switch {
            Switch::Now => format!("into {}", volume.display()),
            Switch::Later => "the new release, current unchanged".to_string(),
        };
        let tree = &self.tree;
        self.steps
            .run(stage, &detail, async move {
                let tree = tree.get().await?;
                let done = ctx
                    .with_cache(&app.name, move |cache| {
                        let write = Write {
                            from,
                            to,
                            changes: &changes,
                            revision: revision.as_ref(),
                        };
                        tree.sync(cache, &write, switch)
                    })
                    .await?;
                Ok(((), done))
            })
            .await
    }

    /// Put the tree back to the deployed commit (best effort, recorded as a step).
    async fn restore(&self) {
        let (ctx, app, tree, steps) = (self.ctx, self.app, &self.tree, &self.steps);
        restore(ctx, app, tree, steps, self.target, self.deployed).await;
    }

    /// The full path: a new container on the pulled image, the tree written around the old
    /// one (`full::swap`), then watched if the app asks.
    async fn replace(&self, plan: &fast::Plan, p: &Pulled<'_>) -> Result<LiveContainer, End> {
        // The new release is built while the old container still serves: its tree changes
        // (`current` switched) only while it is paused.
        if Tree::builds_ahead(self.app) {
            self.write(plan, StepStage::Build, Switch::Later)
                .await
                .map_err(End::failed)?;
        }
        let trial = match full::needs_trial(&p.f) {
            true => Some(
                stage_trial(
                    self.ctx,
                    self.app,
                    &self.steps,
                    self.target,
                    self.revision(),
                )
                .await
                .map_err(End::failed)?,
            ),
            false => None,
        };
        let tree = full::Tree {
            trial: trial.as_deref(),
            put: self.write(plan, StepStage::Sync, Switch::Now),
            back: self.restore(),
        };
        let (image, digest) = (p.image.clone(), p.digest.clone());
        let swapped = full::swap(&*p.docker, &self.steps, &p.f, image, digest, tree).await;
        if let Some(dir) = trial {
            if let Err(e) = blocking(move || Tree::remove_stage(&dir)).await {
                warn!(error = format!("{e:#}"), "removing the trial's tree failed");
            }
        }
        // On failure the tree is back already (full::swap ordered it around the old container).
        let (new, kept) = swapped.map_err(End::failed)?;
        self.watch_replaced(&*p.docker, &p.f, new, kept).await
    }

    /// A Swarm service: the tree here takes the new commit (hooks read it), then the manager
    /// rolls the service out (full) or the nodes build and switch the release (fast); a
    /// failure puts the tree here back (the tasks run the old version by then). Post-deploy
    /// hooks, then success.
    async fn rollout(
        &self,
        plan: &fast::Plan,
        swarm: &crate::config::SwarmConfig,
        path: DeployPath,
        recorded: Option<(String, String)>,
    ) -> Result<(), End> {
        self.write(plan, StepStage::Sync, Switch::Now)
            .await
            .map_err(End::restore)?;
        let (store, steps) = (&self.ctx.store, &self.steps);
        let (deploy, target) = (self.deploy, self.target);
        let on_nodes = super::swarm::OnNodes {
            app: self.app,
            swarm,
            deploy,
            target,
            deployed: self.deployed,
        };
        let done = match path {
            // With code_dir the nodes' code moves too: switched before the rollout (as the
            // tree here is written around the old container), back if it fails.
            DeployPath::Full if swarm.code_dir.is_some() => {
                super::swarm::fast(steps, &on_nodes)
                    .await
                    .map_err(End::restore)?;
                let rolled = super::swarm::rollout(store, steps, swarm, deploy, target, recorded);
                match rolled.await {
                    Ok(()) => Ok(()),
                    Err(e) => Err(super::swarm::switch_back(steps, &on_nodes, e).await),
                }
            }
            DeployPath::Full => {
                super::swarm::rollout(store, steps, swarm, deploy, target, recorded).await
            }
            DeployPath::Fast => super::swarm::fast(steps, &on_nodes).await,
        };
        done.map_err(End::restore)?;
        self.post_deploy(None, true).await?;
        self.succeed(None, None).await
    }

    /// The `swap` reload: the new commit synced into a new release, then a new container on
    /// the image the live one runs.
    async fn swap(&self, plan: &fast::Plan) -> Result<LiveContainer, End> {
        self.write(plan, StepStage::Sync, Switch::Now)
            .await
            .map_err(End::restore)?;
        let container = self
            .app
            .container
            .as_ref()
            .ok_or_else(|| End::restore(anyhow::anyhow!("swap needs [apps.container]")))?;
        let old = self.before.container.clone();
        let f = full_deploy(self.ctx, self.app, container, self.deploy, self.target, old);
        let digest = self.before.digest.clone();
        let (docker, new, kept) = swap_same_image(self.ctx, &f, &self.steps, digest)
            .await
            .map_err(End::restore)?;
        self.watch_replaced(&*docker, &f, new, kept).await
    }

    /// With the container's `watch` the old container was kept: the new one is live (in
    /// `app_state`) while watched, then the old one retires — or the proxy switches back to
    /// it, the tree and `app_state` are put back, and the deploy is recorded failed and
    /// reverted (`End::Recorded`).
    async fn watch_replaced(
        &self,
        docker: &dyn Engine,
        f: &full::FullDeploy<'_>,
        new: LiveContainer,
        kept: Option<full::Kept>,
    ) -> Result<LiveContainer, End> {
        let Some(kept) = kept else { return Ok(new) };
        let (ctx, app, steps) = (self.ctx, self.app, &self.steps);
        ctx.store
            .go_live(self.deploy.id, &app.name, f.commit, Some(&new))
            .await?;
        let watched = Watched::container(f.container, new.port, self.target, &f.git_ref);
        let Err(e) = watch(ctx, app, self.deploy, steps, &watched).await else {
            full::retire(docker, steps, &kept.id, f.container.stop_grace).await;
            return Ok(new);
        };
        let previous = self.deployed.map(|c| c.to_string()).unwrap_or_default();
        let back = self.restore();
        let reverted = full::switch_back(docker, steps, f, kept, &new.id, &previous, back).await;
        if reverted.is_ok() {
            let before = self.before.deploy_id.zip(self.deployed.map(CommitId::from));
            let container = self.before.live_container();
            ctx.store
                .put_back_app_state(&app.name, before, container.as_ref())
                .await?;
        }
        let reverted = reverted.map(|()| "the previous container serves again");
        fail_reverted(ctx, self.deploy, &e, reverted).await?;
        Err(End::Recorded)
    }

    /// The fast path: write the changes, reload the app in place while the proxy holds new
    /// requests, check it (reverting on failure), then watch it if the app asks.
    async fn fast(&self, plan: &fast::Plan) -> Result<Option<LiveContainer>, End> {
        self.write(plan, StepStage::Sync, Switch::Now)
            .await
            .map_err(End::restore)?;
        // Nothing the app runs changed (a push that only moves a submodule, say): the app is
        // not disturbed. (A release is new even so, and its app may hold the old path.)
        if Tree::runs_unchanged(self.app, &plan.changes) {
            let step = self
                .steps
                .begin(StepStage::Reload, &self.app.reload.to_string())
                .await?;
            self.steps
                .end(step, "skipped: nothing in the deployed tree changed")
                .await?;
            return Ok(None);
        }
        let (ctx, app, steps) = (self.ctx, self.app, &self.steps);
        let container = self.before.container.as_deref();
        // New requests wait in the proxy while the app server reloads, until the check (or the
        // revert's verify) says a version answers again: latency, not errors.
        let held = Held::start(proxy_of(ctx, app), steps, hold_detail(app)).await;
        let tree = &self.tree;
        let reloaded = reload_step(ctx, app, tree, steps, container).await;
        if let (Ok(()), Some(check)) = (&reloaded, &app.check) {
            let git_ref = self.git_ref();
            if let Err(e) = run_check(
                app,
                tree,
                steps,
                StepStage::Check,
                check,
                self.target,
                git_ref,
            )
            .await
            {
                let reverted = self.revert().await;
                held.release(steps).await;
                return Err(End::Failed(Failure::Reverted(e, reverted)));
            }
        }
        held.release(steps).await;
        reloaded.map_err(End::restore)?;
        self.watch_fast().await?;
        Ok(None)
    }

    /// With the check's `watch`, the fast deploy is live (app_state names it; the deploy stays
    /// running) while watched; a failure puts everything back.
    async fn watch_fast(&self) -> Result<(), End> {
        let (ctx, app, steps) = (self.ctx, self.app, &self.steps);
        let Some(check) = app.check.as_ref().filter(|c| !c.watch.is_zero()) else {
            return Ok(());
        };
        ctx.store
            .go_live(self.deploy.id, &app.name, self.target.into(), None)
            .await?;
        let watched = Watched::check(check, self.target, self.git_ref());
        let Err(e) = watch(ctx, app, self.deploy, steps, &watched).await else {
            return Ok(());
        };
        self.put_back_app_state().await?;
        let held = Held::start(proxy_of(ctx, app), steps, hold_detail(app)).await;
        let reverted = self.revert().await;
        held.release(steps).await;
        Err(End::Failed(Failure::Reverted(e, reverted)))
    }

    /// Post-deploy (or post-rollback) hooks. A failure puts a fast deploy back when the app
    /// asks (`revert_on_hook_failure`); a new container or a swap stays live (its old
    /// container is gone by then).
    async fn post_deploy(&self, live: Option<&LiveContainer>, full: bool) -> Result<(), End> {
        let (app, target) = (self.app, self.target);
        let Err(e) = post_deploy_hooks(self.ctx, app, self.deploy, target, live).await else {
            return Ok(());
        };
        if app.revert_on_hook_failure && !full && app.reload != Reload::Swap {
            let reverted = self.revert().await;
            self.put_back_app_state().await?;
            return Err(End::Failed(Failure::Reverted(e, reverted)));
        }
        let e = anyhow::anyhow!("{e:#}; the new version stays live (commit {target})");
        Err(End::failed(e))
    }

    /// Prune old releases and images (failing to prune fails nothing), then record success:
    /// a deploy seen ended has all its steps, and changes nothing more on the volume.
    async fn succeed(
        &self,
        live: Option<&LiveContainer>,
        pulled: Option<&Pulled<'_>>,
    ) -> Result<(), End> {
        let (ctx, app, target) = (self.ctx, self.app, self.target);
        if let Some(keep) = Tree::keeps_releases(app) {
            if let Err(e) = self.prune_releases(keep).await {
                warn!(error = format!("{e:#}"), "pruning old releases failed");
            }
        }
        if let (Some(live), Some(p)) = (live, pulled) {
            let (store, steps) = (&ctx.store, &self.steps);
            let pruned =
                full::prune_images(&*p.docker, store, steps, app, p.f.container, &live.image).await;
            if let Err(e) = pruned {
                warn!(error = format!("{e:#}"), "pruning old images failed");
            }
        }
        ctx.store
            .succeed_deploy(self.deploy.id, &app.name, target.into(), live)
            .await?;
        info!(deploy_id = self.deploy.id, commit = %target, "deploy succeeded");
        Ok(())
    }

    /// Old releases beyond `keep`, never one a container runs from, as a step.
    async fn prune_releases(&self, keep: usize) -> anyhow::Result<()> {
        let (ctx, app, tree) = (self.ctx, self.app, &self.tree);
        let (target, deployed) = (self.target, self.deployed);
        self.steps
            .run(
                StepStage::PruneReleases,
                &format!("keep the newest {keep} and those containers run on"),
                async move {
                    let in_use = releases_in_use(ctx, app).await?;
                    let tree = tree.get().await?;
                    let done = blocking(move || tree.prune(target, deployed, &in_use)).await?;
                    Ok(((), done))
                },
            )
            .await
    }

    fn git_ref(&self) -> &str {
        self.deploy.git_ref.as_deref().unwrap_or_default()
    }

    /// After the new version failed its check: put the previous commit back, reload, and
    /// check that the previous version answers again. Returns what state the app is in (`Err`
    /// says why the previous version does not answer).
    async fn revert(&self) -> anyhow::Result<&'static str> {
        self.restore().await;
        let Some(previous) = self.deployed else {
            return Ok("the volume is empty again (this was the first deploy)");
        };
        let (ctx, app, tree, steps) = (self.ctx, self.app, &self.tree, &self.steps);
        reload_step(ctx, app, tree, steps, self.before.container.as_deref()).await?;
        match &app.check {
            Some(check) => run_check(
                app,
                tree,
                steps,
                StepStage::Verify,
                check,
                previous,
                self.git_ref(),
            )
            .await
            .map(|()| "the previous version answers again"),
            None => Ok("the previous commit is back"),
        }
    }

    /// `app_state` names the deploy that was live before this one again.
    async fn put_back_app_state(&self) -> anyhow::Result<()> {
        let before = self.before.deploy_id.zip(self.deployed.map(CommitId::from));
        self.ctx
            .store
            .put_back_app_state(&self.app.name, before, None)
            .await
    }

    /// A failed deploy: its undo, the on-failure hooks and the final row.
    async fn finish(&self, failure: Failure) -> anyhow::Result<()> {
        match failure {
            Failure::Failed(e) => fail(self.ctx, self.deploy, &e).await,
            Failure::Restore(e) => {
                self.restore().await;
                fail(self.ctx, self.deploy, &e).await
            }
            Failure::Reverted(e, reverted) => {
                fail_reverted(self.ctx, self.deploy, &e, reverted).await
            }
        }
    }
}

/// Why a push that changed `changed` paths, none under `paths`, does not deploy the app.
pub(super) fn outside_paths(paths: &AppPaths, changed: usize) -> String {
    format!(
        "no change under paths {:?} ({changed} changed elsewhere); push a change there or deploy by hand",
        paths.patterns
    )
}
