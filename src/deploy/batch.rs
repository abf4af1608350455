//! One batch of an app's queued deploys: hold the pushes of a locked app, fetch once for the
//! whole batch, pick the newest (latest wins), supersede the rest, and run the winner through
//! the pipeline. Between batches, `maintain` compacts the app's cache.

use std::collections::BTreeSet;

use anyhow::Context as _;
use tracing::{info, instrument, warn};

use super::decide::Live;
use super::run::fail;
use super::{pick_latest, Candidate};
use crate::commit::CommitId;
use crate::config::AppConfig;
use crate::git::{Cache, Oid};
use crate::redact::redact_url;
use crate::services::Services;
use crate::store::StepStage;
use crate::store::{now_ms, Deploy, DeployStatus, Trigger};

/// Deploy the newest of `ids` (all queued for app `app_name`); the others become `superseded`.
#[instrument(skip_all, fields(app = %app_name, deploy_id = tracing::field::Empty))]
pub(super) async fn run_batch(ctx: &Services, app_name: &str, ids: Vec<i64>) -> anyhow::Result<()> {
    let app = ctx
        .config
        .app(app_name)
        .context("app is no longer configured")?
        .clone();
    let mut batch = still_queued(ctx, &app, ids).await?;
    if batch.is_empty() {
        return Ok(());
    }
    let (live, deployed) = Live::of(ctx.store.app_state(&app.name).await?);
    let fetch = fetch(ctx, &app, &batch).await;
    let win = match &fetch.picked {
        Ok((win, _)) => *win,
        Err(_) => batch.len() - 1,
    };
    let deploy = batch.swap_remove(win);
    tracing::Span::current().record("deploy_id", deploy.id);
    let others: Vec<i64> = batch.iter().map(|d| d.id).collect();
    if !others.is_empty() {
        ctx.store.supersede(&others, deploy.id).await?;
        info!(deploy_id = deploy.id, superseded = ?others, "latest wins");
    }
    ctx.store
        .start_deploy(deploy.id, deployed.map(CommitId::from))
        .await?;
    let target = match fetch.record(ctx, &app, &deploy).await? {
        Ok(target) => target,
        Err(e) => return fail(ctx, &deploy, &e).await,
    };
    super::pipeline::execute(ctx, &app, &deploy, deployed, target, live).await
}

/// The deploys of `ids` still queued. Pushes queued before a lock was taken are held (recorded
/// `locked`) like those that arrive after it; deploys asked for by name go on.
async fn still_queued(
    ctx: &Services,
    app: &AppConfig,
    ids: Vec<i64>,
) -> anyhow::Result<Vec<Deploy>> {
    let mut batch = Vec::with_capacity(ids.len());
    for id in ids {
        match ctx.store.deploy(id).await? {
            Some(d) if d.status == DeployStatus::Queued => batch.push(d),
            _ => {}
        }
    }
    if let Some(lock) = ctx.store.lock(&app.name).await? {
        let reason = format!("app locked by {}: {}", lock.locked_by, lock.reason);
        for d in batch.iter().filter(|d| !d.asked_for()) {
            ctx.store
                .finish_deploy(d.id, DeployStatus::Locked, Some(&reason), None)
                .await?;
        }
        batch.retain(Deploy::asked_for);
    }
    Ok(batch)
}

/// A batch's one fetch and its pick.
struct Fetched {
    /// The refs fetched (none for a batch of rollbacks).
    refs: Vec<String>,
    /// When the fetch started and ended (unix ms).
    ran: (i64, i64),
    /// The winner's index in the batch and the commit it resolved to.
    picked: anyhow::Result<(usize, Option<Oid>)>,
    /// Said in the fetch step when the origin's tip is not what the push named.
    tip_note: String,
}

/// One fetch for the whole batch, then the pick, which needs the fetched history. A rollback
/// or a promote names a commit already in the cache and fetches nothing: its tag may have moved
/// or gone, and a promote's ref is another app's.
async fn fetch(ctx: &Services, app: &AppConfig, batch: &[Deploy]) -> Fetched {
    let refs: Vec<String> = batch
        .iter()
        .filter(|d| !matches!(d.trigger, Trigger::Rollback | Trigger::Promote))
        .filter_map(|d| d.git_ref.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // A push (or a poll) is a doorbell: it deploys its ref's tip as the origin has it now,
    // never the payload's `after` (a late or replayed delivery would put back an old commit).
    // API deploys of a named commit deploy that commit.
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
    let started = now_ms();
    let picked = match ctx.fetching(app).await {
        Ok(app) => {
            let refs = refs.clone();
            let name = app.name.clone();
            ctx.with_cache(&name, move |cache| {
                fetch_and_pick(cache, &app, &refs, &wanted)
            })
            .await
        }
        Err(e) => Err(e),
    };
    let ran = (started, now_ms());
    let tip_note = match &picked {
        Ok((win, Some(target))) => tip_note(&batch[*win], *target),
        _ => String::new(),
    };
    Fetched {
        refs,
        ran,
        picked,
        tip_note,
    }
}

/// What the fetch step says when a push named another commit than the origin's tip (which is
/// what is deployed).
fn tip_note(won: &Deploy, target: Oid) -> String {
    let (Some(named), Some(git_ref)) = (&won.requested_sha, &won.git_ref) else {
        return String::new();
    };
    if won.trigger != Trigger::Push || named.eq_ignore_ascii_case(&target.to_string()) {
        return String::new();
    }
    warn!(%target, pushed = named.as_str(), "the origin's tip is not the pushed commit");
    format!(
        "{git_ref} is at {target} at the origin; the push named {named}: the origin's tip is deployed"
    )
}

impl Fetched {
    /// Record the fetch as `deploy`'s first step; the commit to deploy, or why there is none.
    /// `Err` outside: the store could not record it.
    async fn record(
        self,
        ctx: &Services,
        app: &AppConfig,
        deploy: &Deploy,
    ) -> anyhow::Result<Result<Oid, anyhow::Error>> {
        let detail = format!("{} from {}", self.refs.join(" "), redact_url(&app.repo));
        let target = match self.picked {
            Ok((_, target)) => {
                if !self.refs.is_empty() {
                    ctx.store
                        .record_step(
                            deploy.id,
                            StepStage::Fetch,
                            &detail,
                            self.ran,
                            true,
                            &self.tip_note,
                        )
                        .await?;
                }
                target
            }
            Err(e) => {
                let output = format!("{e:#}");
                ctx.store
                    .record_step(
                        deploy.id,
                        StepStage::Fetch,
                        &detail,
                        self.ran,
                        false,
                        &output,
                    )
                    .await?;
                return Ok(Err(e));
            }
        };
        Ok(target.ok_or_else(|| {
            let wanted = deploy
                .requested_sha
                .as_deref()
                .or(deploy.git_ref.as_deref())
                .unwrap_or("?");
            anyhow::anyhow!(
                "commit {wanted} is not at the origin after fetching (was it force-pushed away?)"
            )
        }))
    }
}

/// Fetch `refs`, resolve each candidate's commit, and pick the one to deploy.
fn fetch_and_pick(
    cache: &Cache,
    app: &AppConfig,
    refs: &[String],
    wanted: &[(Option<String>, bool)],
) -> anyhow::Result<(usize, Option<Oid>)> {
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

/// Between deploys, when nothing is queued: compact the app's cache if fetches have left too
/// many packs ([`Cache::compact`]), under the cache lock, so the next push finds one index.
pub(super) async fn maintain(ctx: &Services, app_name: &str) {
    let started = std::time::Instant::now();
    match ctx.compact_cache(app_name).await {
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
