//! Running one batch of queued deploys of an app: fetch once, pick the newest, deploy it.

use std::collections::BTreeSet;

use anyhow::Context as _;
use tracing::{info, instrument, warn};

use super::hold::Held;
use super::plan::{self, Decision, DeployPath, Running};
use super::steps::Steps;
use super::{blocking, fast, full, pick_latest, reload, rollback, Candidate, Context};
use crate::config::{render, AppConfig, FastCheck, Layout, Reload};
use crate::git::{Cache, Change, Oid};
use crate::hooks::{self, Stage};
use crate::redact::redact_url;
use crate::runtime::{Docker, HealthCheck};
use crate::store::{now_ms, AppState, Deploy, DeployStatus, Trigger};

/// Deploy the newest of `ids` (all queued for app `app_name`); the others become `superseded`.
#[instrument(skip_all, fields(app = %app_name, deploy_id = tracing::field::Empty))]
pub(super) async fn run_batch(ctx: &Context, app_name: &str, ids: Vec<i64>) -> anyhow::Result<()> {
    let app = ctx
        .config
        .app(app_name)
        .context("app is no longer configured")?
        .clone();
    let mut batch = Vec::with_capacity(ids.len());
    for id in ids {
        match ctx.store.deploy(id).await? {
            Some(d) if d.status == DeployStatus::Queued.as_str() => batch.push(d),
            _ => {}
        }
    }
    // Pushes queued before a lock was taken are held like those that arrive after it.
    if let Some(lock) = ctx.store.lock(&app.name).await? {
        let reason = format!("app locked by {}: {}", lock.locked_by, lock.reason);
        for d in batch.iter().filter(|d| !d.asked_for()) {
            ctx.store
                .finish_deploy(d.id, DeployStatus::Locked, Some(&reason), None)
                .await?;
        }
        batch.retain(Deploy::asked_for);
    }
    if batch.is_empty() {
        return Ok(());
    }
    let (live, deployed) = Live::of(ctx.store.app_state(&app.name).await?)?;

    // One fetch for the whole batch, then the pick, which needs the fetched history. A rollback
    // names a commit already in the cache and fetches nothing: its tag may have moved or gone.
    let refs: Vec<String> = batch
        .iter()
        .filter(|d| d.trigger != Trigger::Rollback.as_str())
        .filter_map(|d| d.git_ref.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let started = now_ms();
    let fetched = {
        let cache = ctx.config.cache_path(&app.name);
        let app = app.clone();
        let refs = refs.clone();
        // A push (or a poll) is a doorbell: it deploys its ref's tip as the origin has it now,
        // never the payload's `after` (a late or replayed delivery would put back an old
        // commit). API deploys of a named commit deploy that commit.
        let wanted: Vec<(Option<String>, bool)> = batch
            .iter()
            .map(|d| {
                let spec = match d.follows_tip() {
                    true => d.git_ref.clone(),
                    false => d.requested_sha.clone().or_else(|| d.git_ref.clone()),
                };
                (spec, d.forced)
            })
            .collect();
        let name = app.name.clone();
        ctx.with_cache(&name, move || fetch_and_pick(&cache, &app, &refs, &wanted))
            .await
    };
    let ran = (started, now_ms());

    let (win, target) = match &fetched {
        Ok((win, target)) => (*win, *target),
        Err(_) => (batch.len() - 1, None),
    };
    // Said in the fetch step when the origin's tip is not what the push named.
    let mut tip_note = String::new();
    let (named, pushed_ref) = (&batch[win].requested_sha, &batch[win].git_ref);
    if let (Some(target), Some(named), Some(git_ref)) = (target, named, pushed_ref) {
        if batch[win].trigger == Trigger::Push.as_str()
            && !named.eq_ignore_ascii_case(&target.to_string())
        {
            tip_note = format!(
                "{git_ref} is at {target} at the origin; the push named {named}: the origin's tip is deployed"
            );
            warn!(%target, pushed = named.as_str(), "the origin's tip is not the pushed commit");
        }
    }
    let deploy = batch.swap_remove(win);
    tracing::Span::current().record("deploy_id", deploy.id);
    let others: Vec<i64> = batch.iter().map(|d| d.id).collect();
    if !others.is_empty() {
        ctx.store.supersede(&others, deploy.id).await?;
        info!(deploy_id = deploy.id, superseded = ?others, "latest wins");
    }
    ctx.store
        .start_deploy(deploy.id, deployed.map(|d| d.to_string()).as_deref())
        .await?;
    let detail = format!("{} from {}", refs.join(" "), redact_url(&app.repo));
    match &fetched {
        Ok(_) if refs.is_empty() => {}
        Ok(_) => {
            ctx.store
                .record_step(deploy.id, "fetch", &detail, ran, true, &tip_note)
                .await?
        }
        Err(e) => {
            ctx.store
                .record_step(deploy.id, "fetch", &detail, ran, false, &format!("{e:#}"))
                .await?;
            return fail(ctx, &deploy, e).await;
        }
    }
    let Some(target) = target else {
        let wanted = deploy
            .requested_sha
            .as_deref()
            .or(deploy.git_ref.as_deref())
            .unwrap_or("?");
        let e = anyhow::anyhow!(
            "commit {wanted} is not at the origin after fetching (was it force-pushed away?)"
        );
        return fail(ctx, &deploy, &e).await;
    };
    execute(ctx, &app, &deploy, deployed, target, live).await
}

/// What an app runs now, besides its deployed commit.
#[derive(Debug, Clone, Default)]
pub(super) struct Live {
    /// The live container of an app with a container spec.
    pub container: Option<String>,
    /// The digest of the image it runs, as recorded.
    pub digest: Option<String>,
    /// Its image reference and port, as recorded.
    pub image: Option<String>,
    pub port: Option<u16>,
    /// The deploy that put the deployed commit there.
    pub deploy_id: Option<i64>,
}

impl Live {
    /// What `app_state` says runs: the live parts and the deployed commit.
    pub(super) fn of(state: Option<AppState>) -> anyhow::Result<(Live, Option<Oid>)> {
        let Some(state) = state else {
            return Ok((Live::default(), None));
        };
        let deployed =
            Oid::from_str(&state.commit_sha).context("app_state holds a bad commit id")?;
        let live = Live {
            container: state.container_id,
            digest: state.digest,
            image: state.image,
            port: state.port.and_then(|p| u16::try_from(p).ok()),
            deploy_id: Some(state.deploy_id),
        };
        Ok((live, Some(deployed)))
    }

    /// The live container as `app_state` records it, to put back after a reverted deploy.
    fn live_container(&self) -> Option<crate::store::LiveContainer> {
        Some(crate::store::LiveContainer {
            id: self.container.clone()?,
            image: self.image.clone()?,
            digest: self.digest.clone(),
            port: self.port?,
        })
    }
}

/// Between deploys, when nothing is queued: compact the app's cache if fetches have left too
/// many packs ([`Cache::compact`]), under the cache lock, so the next push finds one index.
pub(super) async fn maintain(ctx: &Context, app_name: &str) {
    let cache = ctx.config.cache_path(app_name);
    let started = std::time::Instant::now();
    let compacted = ctx.with_cache(app_name, move || match cache.join("HEAD").exists() {
        true => Cache::open_or_init(&cache)?.compact(),
        false => Ok(None),
    });
    match compacted.await {
        Ok(Some(objects)) => info!(
            app = app_name,
            objects,
            ms = started.elapsed().as_millis() as u64,
            "compacted the git cache into one pack"
        ),
        Ok(None) => {}
        Err(e) => warn!(
            app = app_name,
            error = format!("{e:#}"),
            "compacting the git cache failed; fetches still work"
        ),
    }
}

/// Fetch `refs`, resolve each candidate's commit, and pick the one to deploy.
fn fetch_and_pick(
    cache: &std::path::Path,
    app: &AppConfig,
    refs: &[String],
    wanted: &[(Option<String>, bool)],
) -> anyhow::Result<(usize, Option<Oid>)> {
    let cache = Cache::open_or_init(cache)?;
    if !refs.is_empty() {
        cache.fetch(&app.repo, refs, &app.access, &app.fetch_limits)?;
    }
    let candidates: Vec<Candidate> = wanted
        .iter()
        .map(|(spec, forced)| Candidate {
            commit: spec
                .as_deref()
                .and_then(|s| cache.resolve(s).ok().flatten()),
            forced: *forced,
        })
        .collect();
    let win = pick_latest(&candidates, |a, b| cache.is_ancestor(a, b).unwrap_or(false));
    Ok((win, candidates.get(win).and_then(|c| c.commit)))
}

/// Deploy `target` over `deployed` for a running deploy row.
async fn execute(
    ctx: &Context,
    app: &AppConfig,
    deploy: &Deploy,
    deployed: Option<Oid>,
    target: Oid,
    live: Live,
) -> anyhow::Result<()> {
    let store = &ctx.store;
    let cache = ctx.config.cache_path(&app.name);
    // Asked for by name (manual, rollback): a redeploy of the same commit runs (and reloads).
    if deployed == Some(target) && !deploy.asked_for() {
        let reason = format!("commit {target} is already deployed");
        store
            .finish_deploy(deploy.id, DeployStatus::Ignored, Some(&reason), None)
            .await?;
        return Ok(());
    }
    if let Some(current) = deployed.filter(|_| !deploy.forced) {
        let c = cache.clone();
        let older = blocking(move || Cache::open_or_init(&c)?.is_ancestor(target, current)).await?;
        if older {
            let reason = format!(
                "commit {target} is older than the deployed {current}; a forced push or a manual deploy can put it back"
            );
            warn!(deploy_id = deploy.id, %reason, "stale");
            store
                .finish_deploy(deploy.id, DeployStatus::Stale, Some(&reason), None)
                .await?;
            return Ok(());
        }
    }

    let steps = Steps::new(store.clone(), deploy.id);
    let volume = app.volume.clone();
    let plan = {
        let (c, v, adopt, layout) = (cache.clone(), volume.clone(), app.adopt, app.layout);
        let max = app.max_tree_size;
        steps
            .run("plan", "diff against the deployed commit", async move {
                let plan =
                    blocking(move || fast::plan(&c, &v, layout, deployed, target, adopt, max))
                        .await?;
                let summary = plan.summary.clone();
                Ok((plan, summary))
            })
            .await
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => return fail(ctx, deploy, &e).await,
    };
    // A rollback on an app with a container runs the image recorded for the deploy it repeats.
    let recorded = match (deploy.rollback_of, &app.container) {
        (Some(of), Some(_)) => store.image_as_of(&app.name, of).await?,
        _ => None,
    };
    let ask = Ask {
        git_ref: deploy.git_ref.as_deref().unwrap_or_default(),
        requested: deploy.requested_path.as_deref().and_then(DeployPath::parse),
        recorded_digest: recorded.as_ref().map(|(_, digest)| digest.as_str()),
    };
    let (decision, docker) = match decide(ctx, app, &ask, &plan, target, &live).await {
        Ok(decided) => decided,
        Err(e) => return fail(ctx, deploy, &e).await,
    };
    let deployed_by = live.deploy_id;
    let before = live.clone();
    let undo = Undo {
        commit: deployed,
        live: &before,
    };
    let live_digest = live.digest.clone();
    let old_container = live.container;
    let live_container = old_container.clone();
    store
        .plan_deploy(
            deploy.id,
            &target.to_string(),
            decision.path.as_str(),
            &decision.reason,
        )
        .await?;
    // Operator hooks (hooks.rs): FROM/TO/PATH are recorded; nothing has changed yet.
    if let Err(e) = hooks::run_stage(ctx, &app.name, deploy.id, Stage::PreDeploy).await {
        return fail(ctx, deploy, &e).await;
    }

    // The full path pulls before the volume is touched: a bad image changes nothing.
    let full = match (decision.path, &app.container, docker) {
        (DeployPath::Full, Some(container), Some(docker)) => {
            let f = full_deploy(ctx, app, container, deploy, target, old_container);
            let pulled = match &recorded {
                Some((image, digest)) => {
                    rollback::reuse_image(&docker, store, &steps, &f, image, digest).await
                }
                None => full::pull(&docker, store, &steps, &f).await,
            };
            match pulled {
                Ok(pulled) => Some((f, docker, pulled)),
                Err(e) => return fail(ctx, deploy, &e).await,
            }
        }
        _ => None,
    };

    let revision = app.revision_file.clone().map(|file| fast::Revision {
        file,
        git_ref: deploy.git_ref.clone().unwrap_or_default(),
        deploy_id: deploy.id,
    });
    // Writes the new commit as a step: `Switch::Now` puts it live, `Later` (releases) only
    // builds its release.
    let write = |stage: &'static str, switch: fast::Switch| {
        let (c, v, layout) = (cache.clone(), volume.clone(), app.layout);
        let (changes, revision) = (plan.changes.clone(), revision.clone());
        let detail = match switch {
            fast::Switch::Now => format!("into {}", volume.display()),
            fast::Switch::Later => "the new release, current unchanged".to_string(),
        };
        let steps = &steps;
        async move {
            steps
                .run(stage, &detail, async move {
                    let done = blocking(move || {
                        let write = fast::Write {
                            from: deployed,
                            to: target,
                            changes: &changes,
                            revision: revision.as_ref(),
                        };
                        fast::sync(&c, &v, layout, &write, switch)
                    })
                    .await?;
                    Ok(((), done))
                })
                .await
        }
    };
    let sync = || write("sync", fast::Switch::Now);
    // The full path orders the sync around the old container (full::swap); the fast path
    // syncs first.
    let synced = match &full {
        Some(_) => Ok(()),
        None => sync().await,
    };
    let live = match (synced, &full) {
        (Err(e), _) => Err(e),
        (Ok(()), Some((f, docker, (image, digest)))) => {
            // The new release is built while the old container still serves: its tree
            // changes (`current` switched) only while it is paused.
            if matches!(app.layout, Layout::Releases { .. }) && app.reload != Reload::Swap {
                let built = write("build", fast::Switch::Later).await;
                if let Err(e) = built {
                    return fail(ctx, deploy, &e).await;
                }
            }
            let trial = match full::needs_trial(f) {
                true => match stage_trial(ctx, app, &steps, target, revision.clone()).await {
                    Ok(dir) => Some(dir),
                    Err(e) => return fail(ctx, deploy, &e).await,
                },
                false => None,
            };
            let back = restore(ctx, app, &steps, target, deployed);
            let (image, digest) = (image.clone(), digest.clone());
            let tree = full::Tree {
                trial: trial.as_deref(),
                put: sync(),
                back,
            };
            let swapped = full::swap(docker, &steps, f, image, digest, tree).await;
            if let Some(dir) = trial {
                if let Err(e) = blocking(move || fast::remove_stage(&dir)).await {
                    warn!(error = format!("{e:#}"), "removing the trial's tree failed");
                }
            }
            match swapped {
                Ok((new, kept)) => {
                    let replaced = Replaced {
                        docker,
                        f,
                        new: &new,
                    };
                    if !watch_replaced(ctx, deploy, &steps, replaced, kept, undo).await? {
                        return Ok(());
                    }
                    Ok(Some(new))
                }
                // The tree is back already (full::swap ordered it around the old container).
                Err(e) => return fail(ctx, deploy, &e).await,
            }
        }
        (Ok(()), None) if app.reload == Reload::Swap => {
            let container = app
                .container
                .as_ref()
                .context("swap needs [apps.container]")?;
            let f = full_deploy(ctx, app, container, deploy, target, live_container.clone());
            match swap_same_image(ctx, &f, &steps, live_digest).await {
                Ok((docker, new, kept)) => {
                    let replaced = Replaced {
                        docker: &docker,
                        f: &f,
                        new: &new,
                    };
                    if !watch_replaced(ctx, deploy, &steps, replaced, kept, undo).await? {
                        return Ok(());
                    }
                    Ok(Some(new))
                }
                Err(e) => Err(e),
            }
        }
        // Nothing the app runs changed (a push that only moves a submodule, say): the app is
        // not disturbed. (A release is new even so, and its app may hold the old path.)
        (Ok(()), None) if plan.changes.is_empty() && app.layout == Layout::InPlace => {
            let step = steps.begin("reload", &app.reload.to_string()).await?;
            steps
                .end(step, "skipped: nothing in the deployed tree changed")
                .await?;
            Ok(None)
        }
        (Ok(()), None) => {
            let container = live_container.as_deref();
            // New requests wait in the proxy while the app server reloads, until the check
            // (or the revert's verify) says a version answers again: latency, not errors.
            let held = Held::start(proxy_of(ctx, app), &steps, hold_detail(app)).await;
            let reloaded = reload_step(ctx, app, &steps, container).await;
            if let (Ok(()), Some(check)) = (&reloaded, &app.check) {
                let git_ref = deploy.git_ref.as_deref().unwrap_or_default();
                if let Err(e) = run_check(app, &steps, "check", check, target, git_ref).await {
                    let reverted =
                        revert(ctx, app, &steps, container, target, deployed, git_ref).await;
                    held.release(&steps).await;
                    return fail_reverted(ctx, deploy, &e, reverted).await;
                }
            }
            held.release(&steps).await;
            if let (Ok(()), Some(check)) = (&reloaded, &app.check) {
                if !check.watch.is_zero() {
                    let git_ref = deploy.git_ref.as_deref().unwrap_or_default();
                    // Live while watched: app_state names what runs; the deploy stays running.
                    store
                        .go_live(deploy.id, &app.name, &target.to_string(), None)
                        .await?;
                    let watched = Watched::check(check, target, git_ref);
                    if let Err(e) = watch(ctx, app, deploy, &steps, &watched).await {
                        let previous = deployed.map(|c| c.to_string());
                        let before = deployed_by.zip(previous.as_deref());
                        store.put_back_app_state(&app.name, before, None).await?;
                        let held = Held::start(proxy_of(ctx, app), &steps, hold_detail(app)).await;
                        let reverted =
                            revert(ctx, app, &steps, container, target, deployed, git_ref).await;
                        held.release(&steps).await;
                        return fail_reverted(ctx, deploy, &e, reverted).await;
                    }
                }
            }
            reloaded.map(|()| None)
        }
    };
    let live = match live {
        Ok(live) => live,
        Err(e) => {
            restore(ctx, app, &steps, target, deployed).await;
            return fail(ctx, deploy, &e).await;
        }
    };
    if let Err(e) = post_deploy_hooks(ctx, app, deploy, target, live.as_ref()).await {
        // A fast deploy is put back if its post-deploy hook fails, when the app says so.
        // (A swap's old container is gone by then, like a full deploy's.)
        if app.revert_on_hook_failure && full.is_none() && app.reload != Reload::Swap {
            let git_ref = deploy.git_ref.as_deref().unwrap_or_default();
            let container = live_container.as_deref();
            let reverted = revert(ctx, app, &steps, container, target, deployed, git_ref).await;
            let previous = deployed.map(|c| c.to_string());
            let before = deployed_by.zip(previous.as_deref());
            store.put_back_app_state(&app.name, before, None).await?;
            return fail_reverted(ctx, deploy, &e, reverted).await;
        }
        let e = anyhow::anyhow!("{e:#}; the new version stays live (commit {target})");
        return fail(ctx, deploy, &e).await;
    }
    store
        .succeed_deploy(deploy.id, &app.name, &target.to_string(), live.as_ref())
        .await?;
    // Old releases go only once the new one is recorded; failing to prune fails nothing.
    if let Layout::Releases { keep } = app.layout {
        let v = volume.clone();
        let pruned = steps
            .run(
                "prune-releases",
                &format!("keep the newest {keep} and those containers run on"),
                async move {
                    let in_use = releases_in_use(ctx, app).await?;
                    let done =
                        blocking(move || fast::prune_releases(&v, keep, target, deployed, &in_use))
                            .await?;
                    Ok(((), done))
                },
            )
            .await;
        if let Err(e) = pruned {
            warn!(error = format!("{e:#}"), "pruning old releases failed");
        }
    }
    // Old images go only once the new deploy is recorded; failing to prune fails nothing.
    if let (Some(live), Some((f, docker, _))) = (&live, &full) {
        if let Err(e) =
            full::prune_images(docker, store, &steps, app, f.container, &live.image).await
        {
            warn!(error = format!("{e:#}"), "pruning old images failed");
        }
    }
    info!(deploy_id = deploy.id, commit = %target, "deploy succeeded");
    Ok(())
}

/// The app's proxy, if it has one.
fn proxy_of<'a>(ctx: &'a Context, app: &AppConfig) -> Option<&'a crate::proxy::Proxy> {
    ctx.proxies.get(&app.name).map(|p| p.as_ref())
}

/// Until when a fast deploy's reload holds the app's new requests.
fn hold_detail(app: &AppConfig) -> &'static str {
    match &app.check {
        Some(_) => "new requests wait in the proxy until the check passes",
        None => "new requests wait in the proxy until the reload returns",
    }
}

/// What the full path (and a swap) needs to know about `deploy` of `target`, replacing `old`.
fn full_deploy<'a>(
    ctx: &'a Context,
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
        commit: target.to_string(),
        git_ref: deploy.git_ref.clone().unwrap_or_default(),
        old_container: old,
        proxy: proxy_of(ctx, app),
    }
}

/// The `swap` reload: a new container from the image the live one runs (already in the engine,
/// no pull) on the new release, through the full path's gate, switch, drain and retire.
async fn swap_same_image(
    ctx: &Context,
    f: &full::FullDeploy<'_>,
    steps: &Steps,
    digest: Option<String>,
) -> anyhow::Result<(Docker, crate::store::LiveContainer, Option<full::Kept>)> {
    let docker = ctx.docker().await?;
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
    let (new, kept) = full::swap(&docker, steps, f, running.image_ref, digest, tree).await?;
    Ok((docker, new, kept))
}

/// A new container that replaced `f`'s old one (full path or swap).
struct Replaced<'a> {
    docker: &'a Docker,
    f: &'a full::FullDeploy<'a>,
    new: &'a crate::store::LiveContainer,
}

/// What a reverted deploy puts back: the commit deployed before, and what `app_state` said.
#[derive(Clone, Copy)]
struct Undo<'a> {
    commit: Option<Oid>,
    live: &'a Live,
}

/// With the container's `watch`, the old container was kept: watch the new one, live
/// meanwhile, then retire the old one — or switch back to it, put the tree and `app_state`
/// back and record the deploy as failed and reverted. `Ok(false)`: reverted (recorded).
async fn watch_replaced(
    ctx: &Context,
    deploy: &Deploy,
    steps: &Steps,
    replaced: Replaced<'_>,
    kept: Option<full::Kept>,
    undo: Undo<'_>,
) -> anyhow::Result<bool> {
    let Some(kept) = kept else { return Ok(true) };
    let Replaced { docker, f, new } = replaced;
    let (app, target) = (f.app, Oid::from_str(&f.commit)?);
    let grace = f.container.stop_grace;
    ctx.store
        .go_live(deploy.id, &app.name, &f.commit, Some(new))
        .await?;
    let watched = Watched::container(f.container, new.port, target, &f.git_ref);
    let Err(e) = watch(ctx, app, deploy, steps, &watched).await else {
        full::retire(docker, steps, &kept.id, grace).await;
        return Ok(true);
    };
    let previous = undo.commit.map(|c| c.to_string()).unwrap_or_default();
    let back = restore(ctx, app, steps, target, undo.commit);
    let reverted = full::switch_back(docker, steps, f, kept, &new.id, &previous, back).await;
    if reverted.is_ok() {
        let before = undo
            .live
            .deploy_id
            .zip(undo.commit.map(|_| previous.as_str()));
        let container = undo.live.live_container();
        ctx.store
            .put_back_app_state(&app.name, before, container.as_ref())
            .await?;
    }
    let reverted = reverted.map(|()| "the previous container serves again");
    fail_reverted(ctx, deploy, &e, reverted).await?;
    Ok(false)
}

/// A copy of `target`'s tree under the state dir for the full path's trial container, as a
/// step; returns where.
async fn stage_trial(
    ctx: &Context,
    app: &AppConfig,
    steps: &Steps,
    target: Oid,
    revision: Option<fast::Revision>,
) -> anyhow::Result<std::path::PathBuf> {
    let dir = ctx.config.trial_path(&app.name);
    let (cache, layout, d) = (ctx.config.cache_path(&app.name), app.layout, dir.clone());
    let detail = format!("a copy of {target} in {}", dir.display());
    steps
        .run("stage", &detail, async move {
            let done = blocking(move || fast::stage(&cache, &d, layout, target, revision.as_ref()))
                .await?;
            Ok(((), done))
        })
        .await?;
    Ok(dir)
}

/// The commits the app's containers were started on: their releases stay (a process may run
/// from one whatever `current` says). An engine that does not answer prunes nothing.
async fn releases_in_use(ctx: &Context, app: &AppConfig) -> anyhow::Result<Vec<Oid>> {
    if app.container.is_none() {
        return Ok(Vec::new());
    }
    let docker = ctx.docker().await?;
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

/// What a deploy asks of the planner besides its diff.
pub(super) struct Ask<'a> {
    /// The ref deployed, for the image template.
    pub git_ref: &'a str,
    /// A path asked for over the API.
    pub requested: Option<DeployPath>,
    /// A rollback's recorded image digest (`repo@sha256:…`), wanted instead of the template's.
    pub recorded_digest: Option<&'a str>,
}

/// Fast or full, and why. Apps without a container spec are always fast and need no engine;
/// for the others the engine client comes back too, for the full path to use.
pub(super) async fn decide(
    ctx: &Context,
    app: &AppConfig,
    ask: &Ask<'_>,
    plan: &fast::Plan,
    target: Oid,
    live: &Live,
) -> anyhow::Result<(Decision, Option<Docker>)> {
    let Some(container) = &app.container else {
        return Ok((
            Decision {
                path: DeployPath::Fast,
                reason: plan.summary.clone(),
            },
            None,
        ));
    };
    let docker = ctx.docker().await?;
    let running = match &live.container {
        Some(id) => match docker.inspect(id).await? {
            Some(info) if info.running => Running::Image(info.image_ref),
            _ => Running::Nothing,
        },
        None => Running::Nothing,
    };
    let wanted = match ask.recorded_digest {
        // The live container already runs the recorded digest, whatever reference it was
        // started by: the same image.
        Some(digest) if live.digest.as_deref() == Some(digest) => match &running {
            Running::Image(image) => image.clone(),
            Running::Nothing => digest.to_string(),
        },
        Some(digest) => digest.to_string(),
        None => render(&container.image, &target.to_string(), ask.git_ref),
    };
    let changed: Vec<&std::path::Path> = plan.changes.iter().map(change_path).collect();
    let decision = plan::decide(&plan::Inputs {
        has_container: true,
        has_volume: true,
        full_paths: &container.full_paths,
        changed: &changed,
        message: &plan.message,
        wanted_image: Some(&wanted),
        running: &running,
        requested: ask.requested,
    });
    let reason = match ask.recorded_digest {
        Some(digest) => format!(
            "rollback runs the recorded image {digest}: {}; {}",
            decision.reason, plan.summary
        ),
        None => format!("{}; {}", decision.reason, plan.summary),
    };
    Ok((
        Decision {
            path: decision.path,
            reason,
        },
        Some(docker),
    ))
}

/// A touch the app has not acted on within this is made again: uWSGI's master takes the
/// touch file's mtime as its baseline at its first check after (re)starting, so a touch just
/// before that (a push right after a reload, a revert right after a failed check) is lost.
const RETOUCH_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// The app's post-reload health check for `commit`, as a step named `stage`. With a touch
/// reload, the file is touched again every [`RETOUCH_AFTER`] until the check passes or its
/// deadline is over.
async fn run_check(
    app: &AppConfig,
    steps: &Steps,
    stage: &str,
    check: &FastCheck,
    commit: Oid,
    git_ref: &str,
) -> anyhow::Result<()> {
    let full = HealthCheck {
        url: check.url.clone(),
        expect_status: check.status,
        expect_body_contains: check
            .expect_body_contains
            .as_deref()
            .map(|t| render(t, &commit.to_string(), git_ref)),
        grace: check.grace,
        interval: check.interval,
        timeout: check.timeout,
        failures: u32::MAX,
        answer_failures: Some(check.failures),
        deadline: check.deadline,
    };
    let detail = match &full.expect_body_contains {
        Some(text) => format!("{} answers containing {text:?}", check.url),
        None => check.url.clone(),
    };
    let retouch = matches!(app.reload, Reload::Touch(_));
    steps
        .run(stage, &detail, async {
            let started = tokio::time::Instant::now();
            let mut touched = 0u32;
            loop {
                let left = full.deadline.saturating_sub(started.elapsed());
                let mut attempt = full.clone();
                attempt.deadline = if retouch {
                    left.min(RETOUCH_AFTER)
                } else {
                    left
                };
                attempt.grace = if touched == 0 {
                    full.grace
                } else {
                    Default::default()
                };
                let waited =
                    crate::runtime::wait_healthy(&attempt, "the app", || async { Ok(()) }).await;
                let again = match &waited {
                    Err(e) => e
                        .downcast_ref::<crate::runtime::NotHealthyInTime>()
                        .is_some(),
                    Ok(_) => false,
                };
                match waited {
                    Ok(report) => {
                        let mut out = format!(
                            "healthy after {:?} (the last {} probes)",
                            started.elapsed(),
                            report.attempts
                        );
                        if touched > 0 {
                            out.push_str(&format!("; touched again {touched} times"));
                        }
                        return Ok(((), out));
                    }
                    Err(_) if again && retouch && started.elapsed() < full.deadline => {
                        let (volume, layout, reload) =
                            (app.volume.clone(), app.layout, app.reload.clone());
                        blocking(move || fast::reload(&volume, layout, &reload)).await?;
                        touched += 1;
                    }
                    Err(e) if again => {
                        return Err(e.context(format!(
                            "not healthy within {:?} (touched again {touched} times)",
                            full.deadline
                        )))
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .await
}

/// What a watch window probes after a new version went live, and for how long.
struct Watched {
    url: String,
    status: Option<u16>,
    expect: Option<String>,
    interval: std::time::Duration,
    timeout: std::time::Duration,
    /// Failed probes in a row tolerated.
    failures: u32,
    window: std::time::Duration,
}

impl Watched {
    /// A fast deploy's: the app's `[apps.check]`.
    fn check(check: &FastCheck, commit: Oid, git_ref: &str) -> Watched {
        Watched {
            url: check.url.clone(),
            status: check.status,
            expect: check
                .expect_body_contains
                .as_deref()
                .map(|t| render(t, &commit.to_string(), git_ref)),
            interval: check.interval,
            timeout: check.timeout,
            failures: check.failures,
            window: check.watch,
        }
    }

    /// A full deploy's or a swap's: the new container's health URL on `port`.
    fn container(
        c: &crate::config::ContainerConfig,
        port: u16,
        commit: Oid,
        git_ref: &str,
    ) -> Watched {
        Watched {
            url: format!("http://127.0.0.1:{port}{}", c.health_path),
            status: None,
            expect: c
                .expect_body_contains
                .as_deref()
                .map(|t| render(t, &commit.to_string(), git_ref)),
            interval: c.health_interval,
            timeout: c.health_timeout,
            failures: crate::config::DEFAULT_CHECK_FAILURES,
            window: c.watch,
        }
    }
}

/// Answers to the new version within [`WATCH_5XX_WINDOW`] a watch needs before the proxy's
/// 5xx ratio over them can fail it.
const WATCH_MIN_ANSWERS: u64 = 20;
/// How far back a watch looks at the proxy's answers to the new version.
const WATCH_5XX_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// The watch window: after the new version went live, probe it every `interval` for the
/// window; more than `failures` failed probes in a row fail it (the caller reverts), and so
/// does the proxy answering more than half of the new version's requests of the last
/// [`WATCH_5XX_WINDOW`] (at least [`WATCH_MIN_ANSWERS`]) with 5xx. A newer queued deploy ends it early: that one is checked
/// itself.
async fn watch(
    ctx: &Context,
    app: &AppConfig,
    deploy: &Deploy,
    steps: &Steps,
    w: &Watched,
) -> anyhow::Result<()> {
    let target = crate::runtime::ProbeTarget::parse(&w.url)?;
    let proxy = proxy_of(ctx, app);
    let detail = format!("{} keeps answering for {:?}", w.url, w.window);
    steps
        .run("watch", &detail, async {
            let started = tokio::time::Instant::now();
            // The proxy's counts for the new version over the last WATCH_5XX_WINDOW.
            let mut counts = std::collections::VecDeque::new();
            let first = proxy.and_then(|p| p.answers());
            let (mut probes, mut failed_in_a_row) = (0u32, 0u32);
            let mut answers = String::new();
            while started.elapsed() < w.window {
                if ctx.store.newer_queued(&app.name, deploy.id).await? {
                    let out = format!(
                        "a newer deploy is queued: stopped after {:?} ({probes} probes{answers})",
                        started.elapsed()
                    );
                    return Ok(((), out));
                }
                tokio::time::sleep(w.interval).await;
                if let (Some(first), Some(now)) = (first, proxy.and_then(|p| p.answers())) {
                    if now.upstream == first.upstream {
                        let at = tokio::time::Instant::now();
                        counts.push_back((at, now));
                        while counts.front().is_some_and(|(t, _)| at - *t > WATCH_5XX_WINDOW) {
                            counts.pop_front();
                        }
                        let (_, then) = counts.front().copied().unwrap_or((at, first));
                        let answered = now.answered - then.answered;
                        let errors = now.server_errors - then.server_errors;
                        answers = format!(
                            "; the proxy answered {} of {} requests with 5xx",
                            now.server_errors - first.server_errors,
                            now.answered - first.answered
                        );
                        if answered >= WATCH_MIN_ANSWERS && errors * 2 > answered {
                            anyhow::bail!(
                                "the proxy answered {errors} of the new version's last {answered} requests with 5xx, {:?} after going live",
                                started.elapsed()
                            );
                        }
                    }
                }
                probes += 1;
                let outcome =
                    crate::runtime::probe(&target, w.status, w.expect.as_deref(), w.timeout)
                        .await;
                if outcome == crate::runtime::ProbeOutcome::Healthy {
                    failed_in_a_row = 0;
                    continue;
                }
                failed_in_a_row += 1;
                if failed_in_a_row > w.failures {
                    anyhow::bail!(
                        "the new version failed {failed_in_a_row} probes in a row {:?} after going live (tolerating {}); last probe: {outcome}",
                        started.elapsed(),
                        w.failures
                    );
                }
            }
            Ok(((), format!("healthy for {:?} ({probes} probes{answers})", w.window)))
        })
        .await
}

/// After the new version failed its check: put the previous commit back, reload, and check that
/// the previous version answers again. Returns what state the app is in (`Err` says why the
/// previous version does not answer).
async fn revert(
    ctx: &Context,
    app: &AppConfig,
    steps: &Steps,
    container: Option<&str>,
    target: Oid,
    deployed: Option<Oid>,
    git_ref: &str,
) -> anyhow::Result<&'static str> {
    restore(ctx, app, steps, target, deployed).await;
    let Some(previous) = deployed else {
        return Ok("the volume is empty again (this was the first deploy)");
    };
    reload_step(ctx, app, steps, container).await?;
    match &app.check {
        Some(check) => run_check(app, steps, "verify", check, previous, git_ref)
            .await
            .map(|()| "the previous version answers again"),
        None => Ok("the previous commit is back"),
    }
}

async fn fail_reverted(
    ctx: &Context,
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
async fn reload_step(
    ctx: &Context,
    app: &AppConfig,
    steps: &Steps,
    container: Option<&str>,
) -> anyhow::Result<()> {
    steps
        .run("reload", &app.reload.to_string(), async {
            Ok(((), reload::reload(ctx, app, container).await?))
        })
        .await
}

/// After a failed sync or reload, put the volume back to what was deployed.
async fn restore(
    ctx: &Context,
    app: &AppConfig,
    steps: &Steps,
    current: Oid,
    back_to: Option<Oid>,
) {
    let (cache, volume, layout) = (
        ctx.config.cache_path(&app.name),
        app.volume.clone(),
        app.layout,
    );
    let detail = match back_to {
        Some(c) => format!("back to {c}"),
        None => "back to an empty volume".to_string(),
    };
    let revision = live_revision(ctx, app).await;
    let restored = steps
        .run("restore", &detail, async move {
            let done = blocking(move || {
                fast::restore(&cache, &volume, layout, current, back_to, revision.as_ref())
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
pub(super) async fn live_revision(ctx: &Context, app: &AppConfig) -> Option<fast::Revision> {
    let file = app.revision_file.clone()?;
    let deploy_id = match ctx.store.app_state(&app.name).await {
        Ok(Some(state)) => state.deploy_id,
        _ => 0,
    };
    let git_ref = match ctx.store.deploy(deploy_id).await {
        Ok(Some(d)) => d.git_ref.unwrap_or_default(),
        _ => String::new(),
    };
    Some(fast::Revision {
        file,
        git_ref,
        deploy_id,
    })
}

/// The post-deploy (or post-rollback) hooks of a deploy whose new version is live. `app_state`
/// names the new commit before they run (it is what runs, and a hook may ask the API); the
/// deploy stays `running` until they finish. A failure fails the deploy; the caller reverts a
/// fast deploy when the app asks for it, else the new version stays live.
async fn post_deploy_hooks(
    ctx: &Context,
    app: &AppConfig,
    deploy: &Deploy,
    target: Oid,
    live: Option<&crate::store::LiveContainer>,
) -> anyhow::Result<()> {
    let stage = Stage::after_deploy(&deploy.trigger);
    let (config, name) = (ctx.config.clone(), app.name.clone());
    if !blocking(move || Ok(hooks::has_hooks(&config, &name, stage))).await? {
        return Ok(());
    }
    ctx.store
        .go_live(deploy.id, &app.name, &target.to_string(), live)
        .await?;
    hooks::run_stage(ctx, &app.name, deploy.id, stage).await
}

async fn fail(ctx: &Context, deploy: &Deploy, e: &anyhow::Error) -> anyhow::Result<()> {
    record_failure(ctx, deploy, &format!("{e:#}"), false).await
}

/// A failed deploy: logged, the on-failure hooks run, then the row says `failed` (and whether
/// its changes were reverted).
async fn record_failure(
    ctx: &Context,
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

fn change_path(change: &Change) -> &std::path::Path {
    match change {
        Change::Write { path, .. } | Change::Delete { path } => path,
    }
}
