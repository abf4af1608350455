//! Reconcile by polling: a push whose webhook never arrived is deployed anyway.
//!
//! GitHub does not redeliver a failed delivery, sends no event at all when more than three tags
//! are pushed at once, and an origin down during a push fails that push's deploy at its fetch.
//! So every app with a `poll` interval lists its origin's tracked refs at startup and then every
//! interval — one ref listing, no fetch ([`Cache::remote_tips`]) — and a tip that is neither
//! deployed, nor in flight, nor already tried gets a `poll` deploy, which behaves like a push:
//! it deploys the ref's tip as the origin has it when it runs, and latest wins across pushes
//! and polls. When nothing moved nothing is recorded.
//!
//! A failed fetch (of a push or a poll) brings the next poll forward with backoff (5 s, 10 s,
//! 20 s, … capped at the interval) and that poll tries the tip again, at most
//! [`MAX_FETCH_RETRIES`] times in a row; a listing that fails is an outage: one warning, no
//! deploy row, the same backoff. The decisions ([`decide`], [`next_delay`]) are pure.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use super::QueueError;
use crate::config::AppConfig;
use crate::git::{Cache, Oid};
use crate::services::Services;
use crate::store::{DeployEvent, DeployStatus, StepStage, TipHistory};

/// The first retry after a failure comes this soon; each further one waits twice as long, up to
/// the app's poll interval.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);

/// A tip whose deploys failed at their fetch this many times in a row (while the origin could be
/// listed) is given up on: the fetch itself is what fails (a size cap, a broken object), not
/// the connection. The next push, a newer tip or a manual deploy tries again.
pub const MAX_FETCH_RETRIES: u32 = 5;

/// The running poll tasks, one per app that polls.
pub struct Pollers {
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Pollers {
    /// Start polling every app whose `poll` is not zero, the first poll at once, until `stop`
    /// is cancelled (or [`Pollers::shutdown`]).
    pub fn spawn(ctx: &Services, stop: CancellationToken) -> Pollers {
        let tasks = ctx
            .config
            .apps
            .iter()
            .filter(|app| !app.poll.is_zero())
            .map(|app| {
                let poller = Poller {
                    ctx: ctx.clone(),
                    app: app.clone(),
                    failures: 0,
                    unreachable: false,
                    tags: None,
                    given_up: BTreeSet::new(),
                };
                let span = tracing::info_span!("poll", app = %app.name);
                tokio::spawn(poller.run(stop.clone()).instrument(span))
            })
            .collect();
        Pollers { tasks, stop }
    }

    /// Stop every poll task and wait for them. A ref listing still waiting on a slow origin is
    /// abandoned on its own thread: it holds up neither this nor the process's exit.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What one poll found at one tracked ref, and what the store says about that commit.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The full ref name (`refs/heads/main`, `refs/tags/v1`).
    pub git_ref: String,
    /// The commit it points at (a tag peeled, when the origin says).
    pub tip: Oid,
    /// A tag matching the app's `tags` (else the tracked branch).
    pub tag: bool,
    /// The tag was already at this commit at the previous listing (or at the first one since
    /// dockhand started): only tags that appear or move while dockhand polls are new.
    pub known: bool,
    /// What the store knows about `tip`.
    pub history: TipHistory,
}

/// What to do about one tracked ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Queue a poll deploy, for this reason.
    Deploy(String),
    /// Queue a poll deploy again: the last one of this tip could not fetch (`attempt` of
    /// [`MAX_FETCH_RETRIES`]).
    Retry { attempt: u32, reason: String },
    /// Nothing to do, for this reason.
    Skip(String),
    /// The tip failed at its fetch too often in a row: not tried again (said once).
    GiveUp(String),
}

/// Whether a poll deploys what it saw at a ref, given the app's deployed commit. Pure.
pub fn decide(seen: &Seen, deployed: Option<Oid>) -> Verdict {
    let what = format!("{} is at {}", seen.git_ref, seen.tip);
    if deployed == Some(seen.tip) {
        return Verdict::Skip(format!("{what}, which is deployed"));
    }
    if seen.history.in_flight {
        return Verdict::Skip(format!("{what}; a queued or running deploy covers it"));
    }
    let Some(last) = &seen.history.last else {
        if seen.tag && seen.known {
            return Verdict::Skip(format!(
                "{what}, as when polling started; only a tag that appears or moves is deployed"
            ));
        }
        return Verdict::Deploy(format!(
            "{what} at the origin and was never deployed (its push was not received)"
        ));
    };
    if last.status == DeployStatus::Locked.as_str() {
        return Verdict::Deploy(format!(
            "{what}; its push arrived while the app was locked (deploy {})",
            last.deploy_id
        ));
    }
    if last.status == DeployStatus::Failed.as_str() && last.fetch_failed {
        let failures = seen.history.fetch_failures;
        if failures > MAX_FETCH_RETRIES {
            return Verdict::GiveUp(format!(
                "{what}; its deploys failed at the fetch {failures} times in a row (the last: deploy {}); \
                 not tried again until the next push or a manual deploy",
                last.deploy_id
            ));
        }
        return Verdict::Retry {
            attempt: failures,
            reason: format!(
                "{what}; deploy {} of it could not fetch from the origin (retry {failures} of {MAX_FETCH_RETRIES})",
                last.deploy_id
            ),
        };
    }
    Verdict::Skip(format!(
        "{what}; deploy {} of it ended {}",
        last.deploy_id, last.status
    ))
}

/// How long until the next poll after `failures` in a row (failed listings or fetches): the
/// interval when there are none, else [`FIRST_RETRY`] doubled per further failure, never more
/// than the interval. Pure.
pub fn next_delay(interval: Duration, failures: u32) -> Duration {
    let Some(doublings) = failures.checked_sub(1) else {
        return interval;
    };
    FIRST_RETRY
        .saturating_mul(1u32 << doublings.min(16))
        .min(interval)
}

/// One app's poll loop and what it remembers between polls.
struct Poller {
    ctx: Services,
    app: AppConfig,
    /// Failed listings and fetch failures since the origin last answered with nothing to retry.
    failures: u32,
    /// The last listing failed (warned once; cleared with an info line when it answers again).
    unreachable: bool,
    /// Matching tags at the previous listing; `None` before the first.
    tags: Option<BTreeMap<String, Oid>>,
    /// Tips given up on (warned once each).
    given_up: BTreeSet<Oid>,
}

/// A tracked ref at the origin: its name, its tip, and whether it is a tag.
type Tracked = (String, Oid, bool);

/// How a poll went, for the schedule.
enum Polled {
    /// The origin answered; a retry was queued (its outcome decides the next delay).
    Retrying,
    /// The origin answered and nothing waits on a retry.
    Settled,
    /// The origin could not be listed.
    Unreachable,
    /// Nothing was asked of the origin (the app is locked, or the store failed).
    Skipped,
    /// The deploy queue is closed: dockhand is stopping.
    Closed,
}

impl Polled {
    /// The `result` label of `dockhand_poll_results_total`.
    fn label(&self) -> &'static str {
        match self {
            Polled::Retrying => "retrying",
            Polled::Settled => "settled",
            Polled::Unreachable => "unreachable",
            Polled::Skipped => "skipped",
            Polled::Closed => "closed",
        }
    }
}

impl Poller {
    async fn run(mut self, stop: CancellationToken) {
        let mut events = self.ctx.store.subscribe();
        loop {
            let polled = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                polled = self.poll() => polled,
            };
            self.ctx.metrics.poll(&self.app.name, polled.label());
            match polled {
                Polled::Closed => break,
                Polled::Unreachable => self.failures += 1,
                Polled::Settled => self.failures = 0,
                Polled::Retrying | Polled::Skipped => {}
            }
            let mut due = after(next_delay(self.app.poll, self.failures));
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(due) => break,
                    event = events.recv() => {
                        if let Err(RecvError::Closed) = event {
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                _ = tokio::time::sleep_until(due) => break,
                            }
                        }
                        if self.is_our_fetch_failure(event).await {
                            // The origin may be down: look again soon, backing off.
                            self.failures += 1;
                            due = due.min(after(next_delay(self.app.poll, self.failures)));
                        }
                    }
                }
            }
        }
        debug!("polling stopped");
    }

    /// Whether an event says a deploy of this app just failed at its fetch step.
    async fn is_our_fetch_failure(&self, event: Result<DeployEvent, RecvError>) -> bool {
        let Ok(DeployEvent::StepEnded {
            deploy_id,
            stage,
            ok: false,
            ..
        }) = event
        else {
            return false; // a lagged receiver only misses a wake-up: the schedule still runs
        };
        if stage != StepStage::Fetch {
            return false;
        }
        matches!(self.ctx.store.deploy(deploy_id).await, Ok(Some(d)) if d.app == self.app.name)
    }

    /// One poll: list the origin's tracked refs, decide each, queue what needs a deploy.
    async fn poll(&mut self) -> Polled {
        if !self.unlocked().await {
            return Polled::Skipped;
        }
        let Some(tips) = self.list_tips().await else {
            return Polled::Unreachable;
        };
        let deployed = match self.ctx.store.app_state(&self.app.name).await {
            Ok(state) => state.map(|s| s.commit_sha.into()),
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "poll: reading the deployed commit failed"
                );
                return Polled::Skipped;
            }
        };
        let (found, tags) = self.tracked_tips(&tips);
        // What the next poll compares tags with; a tag that could not be queued stays new.
        let mut now_known = tags.clone();

        let mut polled = Polled::Settled;
        for (git_ref, tip, tag) in found {
            match self
                .consider(git_ref, tip, tag, deployed, &mut now_known)
                .await
            {
                Ok(true) => polled = Polled::Retrying,
                Ok(false) => {}
                Err(stop) => return stop,
            }
        }
        self.tags = Some(now_known);
        polled
    }

    /// Whether the app may be polled: it is not locked, and its lock could be read.
    async fn unlocked(&self) -> bool {
        match self.ctx.store.lock(&self.app.name).await {
            Ok(None) => true,
            Ok(Some(lock)) => {
                debug!(locked_by = lock.locked_by, "app locked: not polled");
                false
            }
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "poll: reading the app's lock failed"
                );
                false
            }
        }
    }

    /// The origin's refs, or `None` when it could not be listed (warned once until it answers
    /// again, then said once that it does).
    async fn list_tips(&mut self) -> Option<BTreeMap<String, Oid>> {
        let listed = async {
            let app = self.ctx.fetching(&self.app).await?;
            list(&app, self.ctx.config.cache_path(&app.name)).await
        };
        let tips = match listed.await {
            Ok(tips) => tips,
            Err(e) => {
                let next = next_delay(self.app.poll, self.failures + 1);
                if !self.unreachable {
                    warn!(
                        error = format!("{e:#}"),
                        retry_in = ?next,
                        "cannot reach the origin to poll it; trying again with backoff"
                    );
                } else {
                    debug!(error = format!("{e:#}"), retry_in = ?next, "origin still unreachable");
                }
                self.unreachable = true;
                return None;
            }
        };
        if std::mem::take(&mut self.unreachable) {
            info!("the origin answers again");
        }
        Some(tips)
    }

    /// The tracked refs among `tips`: the branch (when the origin has it) and the matching
    /// tags, each as `(ref, tip, is a tag)`; and the matching tags alone.
    fn tracked_tips(&self, tips: &BTreeMap<String, Oid>) -> (Vec<Tracked>, BTreeMap<String, Oid>) {
        let branch = self.app.branch_ref();
        let mut found: Vec<Tracked> = Vec::new();
        match tips.get(&branch) {
            Some(tip) => found.push((branch.clone(), *tip, false)),
            None => debug!(git_ref = branch, "the origin has no such branch"),
        }
        let tags: BTreeMap<String, Oid> = match &self.app.tags {
            Some(pattern) => tips
                .iter()
                .filter(|(name, _)| {
                    name.strip_prefix("refs/tags/")
                        .is_some_and(|t| pattern.matches(t))
                })
                .map(|(name, tip)| (name.clone(), *tip))
                .collect(),
            None => BTreeMap::new(),
        };
        found.extend(tags.iter().map(|(name, tip)| (name.clone(), *tip, true)));
        (found, tags)
    }

    /// Decide one tracked ref's tip and queue a deploy when it needs one. `Ok(true)`: a retry
    /// was queued. `Err`: the poll ends there with that outcome (the store failed, the queue is
    /// closed). A tag whose deploy could not be queued goes back to its previous tip in
    /// `now_known`, so the next poll sees it as new again.
    async fn consider(
        &mut self,
        git_ref: String,
        tip: Oid,
        tag: bool,
        deployed: Option<Oid>,
        now_known: &mut BTreeMap<String, Oid>,
    ) -> Result<bool, Polled> {
        let history = match self
            .ctx
            .store
            .tip_history(&self.app.name, &git_ref, &tip.to_string())
            .await
        {
            Ok(history) => history,
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "poll: reading the deploy history failed"
                );
                return Err(Polled::Skipped);
            }
        };
        let known = self
            .tags
            .as_ref()
            .is_none_or(|previous| previous.get(&git_ref) == Some(&tip));
        let seen = Seen {
            git_ref,
            tip,
            tag,
            known,
            history,
        };
        let (reason, retry) = match decide(&seen, deployed) {
            Verdict::Skip(reason) => {
                debug!(reason, "nothing to deploy");
                return Ok(false);
            }
            Verdict::GiveUp(reason) => {
                if self.given_up.insert(tip) {
                    warn!(reason, "giving up on a tip that cannot be fetched");
                }
                return Ok(false);
            }
            Verdict::Deploy(reason) => (reason, false),
            Verdict::Retry { reason, .. } => (reason, true),
        };
        match self.queue(&seen, &reason).await {
            Ok(true) if retry => return Ok(true),
            Ok(_) => {}
            Err(QueueError::Closed) => return Err(Polled::Closed),
            Err(e) => {
                warn!(error = %e, git_ref = seen.git_ref, "poll: could not queue a deploy; the next poll tries again");
                match self.tags.as_ref().and_then(|t| t.get(&seen.git_ref)) {
                    Some(previous) => now_known.insert(seen.git_ref.clone(), *previous),
                    None => now_known.remove(&seen.git_ref),
                };
            }
        }
        Ok(false)
    }

    /// Reserve queue room, persist the poll deploy, hand it to the worker. `Ok(false)`: the app
    /// was locked meanwhile (nothing recorded).
    async fn queue(&self, seen: &Seen, reason: &str) -> Result<bool, QueueError> {
        let permit = self.ctx.deployer.reserve(&self.app.name)?;
        let queued = self
            .ctx
            .store
            .queue_poll_deploy(&self.app.name, &seen.git_ref, &seen.tip.to_string(), reason)
            .await;
        match queued {
            Ok(Some(id)) => {
                permit.send(id);
                info!(
                    deploy_id = id,
                    git_ref = seen.git_ref,
                    commit = %seen.tip,
                    reason,
                    "poll deploy queued"
                );
                Ok(true)
            }
            Ok(None) => {
                debug!("the app was locked, or the commit deployed or in flight, meanwhile: nothing queued");
                Ok(false)
            }
            Err(e) => {
                warn!(error = format!("{e:#}"), "poll: recording a deploy failed");
                Ok(false)
            }
        }
    }
}

/// The refs an app tracks, as `remote_tips` takes them.
fn tracked(app: &AppConfig) -> Vec<String> {
    let mut refs = vec![app.branch_ref()];
    if app.tags.is_some() {
        refs.push("refs/tags/".to_string());
    }
    refs
}

/// The origin's tracked refs, listed on a thread of its own: a listing waiting on a dead origin
/// (bounded only by libgit2's socket timeouts) must not hold up shutdown, which waits for the
/// blocking pool.
async fn list(app: &AppConfig, cache: PathBuf) -> anyhow::Result<BTreeMap<String, Oid>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (url, refs) = (app.repo.clone(), tracked(app));
    let (access, limits) = (app.access.clone(), app.fetch_limits.clone());
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name(format!("poll-{}", app.name))
        .spawn(move || {
            let control = cache.join("dockhand-ssh");
            let tips =
                span.in_scope(|| Cache::remote_tips(&url, &refs, &access, &limits, &control));
            let _ = tx.send(tips);
        })
        .context("starting the ref listing")?;
    rx.await
        .context("the ref listing ended without an answer")?
}

/// `now + delay`, for any delay (a far-off one is clamped, never an overflow).
fn after(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Attempt;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    fn branch(tip: u8) -> Seen {
        Seen {
            git_ref: "refs/heads/main".into(),
            tip: oid(tip),
            tag: false,
            known: true,
            history: TipHistory::default(),
        }
    }

    fn tried(seen: Seen, status: DeployStatus, fetch_failed: bool, in_a_row: u32) -> Seen {
        Seen {
            history: TipHistory {
                in_flight: false,
                last: Some(Attempt {
                    deploy_id: 7,
                    status: status.as_str().into(),
                    fetch_failed,
                }),
                fetch_failures: in_a_row,
            },
            ..seen
        }
    }

    fn is_deploy(v: &Verdict) -> bool {
        matches!(v, Verdict::Deploy(_))
    }

    #[test]
    fn a_branch_tip_that_is_deployed_or_in_flight_needs_nothing() {
        assert!(
            matches!(decide(&branch(1), Some(oid(1))), Verdict::Skip(r) if r.contains("which is deployed"))
        );
        let mut queued = branch(2);
        queued.history.in_flight = true;
        assert!(
            matches!(decide(&queued, Some(oid(1))), Verdict::Skip(r) if r.contains("covers it"))
        );
    }

    #[test]
    fn a_branch_tip_never_tried_is_deployed_also_on_a_first_deploy() {
        assert!(is_deploy(&decide(&branch(2), Some(oid(1)))));
        assert!(is_deploy(&decide(&branch(2), None)));
    }

    #[test]
    fn a_tip_that_was_tried_is_not_tried_again_whatever_became_of_it() {
        for status in [
            DeployStatus::Succeeded,
            DeployStatus::Failed,
            DeployStatus::Stale,
            DeployStatus::Ignored,
            DeployStatus::Superseded,
            DeployStatus::Interrupted,
        ] {
            let v = decide(&tried(branch(2), status, false, 0), Some(oid(1)));
            assert!(
                matches!(&v, Verdict::Skip(r) if r.contains(&format!("ended {}", status.as_str()))),
                "{status:?}: {v:?}"
            );
        }
    }

    #[test]
    fn a_tip_whose_push_arrived_while_locked_is_deployed_once_unlocked() {
        let v = decide(
            &tried(branch(2), DeployStatus::Locked, false, 0),
            Some(oid(1)),
        );
        assert!(matches!(v, Verdict::Deploy(r) if r.contains("while the app was locked")));
    }

    #[test]
    fn a_failed_fetch_is_retried_a_bounded_number_of_times() {
        for n in 1..=MAX_FETCH_RETRIES {
            let v = decide(
                &tried(branch(2), DeployStatus::Failed, true, n),
                Some(oid(1)),
            );
            assert!(
                matches!(v, Verdict::Retry { attempt, .. } if attempt == n),
                "{n}"
            );
        }
        let v = decide(
            &tried(branch(2), DeployStatus::Failed, true, MAX_FETCH_RETRIES + 1),
            Some(oid(1)),
        );
        assert!(matches!(v, Verdict::GiveUp(_)), "{v:?}");
    }

    #[test]
    fn only_a_tag_that_appears_or_moves_while_polling_is_deployed() {
        let tag = |known| Seen {
            git_ref: "refs/tags/v2".into(),
            tag: true,
            known,
            ..branch(3)
        };
        assert!(
            matches!(decide(&tag(true), Some(oid(1))), Verdict::Skip(r) if r.contains("only a tag that appears"))
        );
        assert!(is_deploy(&decide(&tag(false), Some(oid(1)))));
        // A new tag at the deployed commit needs nothing.
        assert!(matches!(
            decide(&tag(false), Some(oid(3))),
            Verdict::Skip(_)
        ));
        // A known tag whose push could not fetch is retried like a branch.
        let v = decide(
            &tried(tag(true), DeployStatus::Failed, true, 1),
            Some(oid(1)),
        );
        assert!(matches!(v, Verdict::Retry { attempt: 1, .. }), "{v:?}");
    }

    #[test]
    fn backoff_doubles_from_five_seconds_and_never_exceeds_the_interval() {
        let five_min = Duration::from_secs(300);
        let delays: Vec<u64> = (0..9).map(|n| next_delay(five_min, n).as_secs()).collect();
        assert_eq!(delays, [300, 5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            next_delay(Duration::from_secs(1), 1),
            Duration::from_secs(1)
        );
        assert_eq!(next_delay(five_min, u32::MAX), five_min);
        assert_eq!(
            next_delay(Duration::from_secs(u64::MAX), 3),
            Duration::from_secs(20)
        );
    }
}
