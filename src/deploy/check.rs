//! Whether a deployed version answers: the post-reload check (with re-touching for uWSGI) and
//! the watch window after it (a fast deploy's check, or a replaced container's probe).

use super::run::{proxy_of, AppTree};
use super::steps::Steps;
use crate::config::{render, AppConfig, FastCheck, Reload};
use crate::git::Oid;
use crate::runtime::HealthCheck;
use crate::services::Services;
use crate::store::{Deploy, StepStage};

/// A touch the app has not acted on within this is made again: uWSGI's master takes the
/// touch file's mtime as its baseline at its first check after (re)starting, so a touch just
/// before that (a push right after a reload, a revert right after a failed check) is lost.
const RETOUCH_AFTER: std::time::Duration = std::time::Duration::from_secs(3);

/// The app's post-reload health check for `commit`, as a step named `stage`. With a touch
/// reload, the file is touched again every [`RETOUCH_AFTER`] until the check passes or its
/// deadline is over.
pub(super) async fn run_check(
    app: &AppConfig,
    tree: &AppTree<'_>,
    steps: &Steps,
    stage: StepStage,
    check: &FastCheck,
    commit: Oid,
    git_ref: &str,
) -> anyhow::Result<()> {
    let full = health_check(check, commit, git_ref);
    let detail = match &full.expect_body_contains {
        Some(text) => format!("{} answers containing {text:?}", check.url),
        None => check.url.clone(),
    };
    let retouch = matches!(app.reload, Reload::Touch(_)).then_some(tree);
    steps
        .run(stage, &detail, wait_retouching(app, &full, retouch))
        .await
}

/// The `[apps.check]` of a fast deploy as a probe: the expected text rendered for `commit`,
/// any number of failed connections tolerated, `check.failures` wrong answers.
fn health_check(check: &FastCheck, commit: Oid, git_ref: &str) -> HealthCheck {
    HealthCheck {
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
    }
}

/// Wait for `full` to pass; with `retouch` (the tree to touch in), in rounds of at most
/// [`RETOUCH_AFTER`], the reload file touched again after each round that ran out of time.
/// The step's output on success.
async fn wait_retouching(
    app: &AppConfig,
    full: &HealthCheck,
    retouch: Option<&AppTree<'_>>,
) -> anyhow::Result<((), String)> {
    let started = tokio::time::Instant::now();
    let mut touched = 0u32;
    loop {
        let left = full.deadline.saturating_sub(started.elapsed());
        let mut attempt = full.clone();
        attempt.deadline = if retouch.is_some() {
            left.min(RETOUCH_AFTER)
        } else {
            left
        };
        attempt.grace = if touched == 0 {
            full.grace
        } else {
            Default::default()
        };
        let waited = crate::runtime::wait_healthy(&attempt, "the app", || async { Ok(()) }).await;
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
            Err(_) if again && retouch.is_some() && started.elapsed() < full.deadline => {
                if let Some(tree) = retouch {
                    super::reload::in_tree(tree, &app.reload).await?;
                }
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
}

/// What a watch window probes after a new version went live, and for how long.
pub(super) struct Watched {
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
    pub(super) fn check(check: &FastCheck, commit: Oid, git_ref: &str) -> Watched {
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
    pub(super) fn container(
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
pub(super) async fn watch(
    ctx: &Services,
    app: &AppConfig,
    deploy: &Deploy,
    steps: &Steps,
    w: &Watched,
) -> anyhow::Result<()> {
    let target = crate::runtime::ProbeTarget::parse(&w.url)?;
    let proxy = proxy_of(ctx, app);
    let detail = format!("{} keeps answering for {:?}", w.url, w.window);
    steps
        .run(StepStage::Watch, &detail, async {
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
