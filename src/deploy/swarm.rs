//! The full path of a Swarm service (`[apps.swarm]`): the image's digest resolved on the
//! manager, the service updated to it (Swarm's rolling update, `failure_action = rollback`),
//! then its tasks followed until every replica runs the new spec and is healthy — or the
//! manager rolled back, or the deadline passed and dockhand asked it to. Placement, order and
//! failure detection are Swarm's; dockhand records each task's node and error in the steps.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::steps::Steps;
use crate::config::{render, SwarmConfig};
use crate::git::Oid;
use crate::runtime::{pinned, Progress, Swarm, COMMIT_LABEL, DEPLOY_LABEL};
use crate::store::{Deploy, StepStage, Store};

/// How often the service's update status and tasks are read while a rollout runs.
const POLL: Duration = Duration::from_millis(500);

/// Roll deploy `deploy` of `target` out to the service: the image its template names for the
/// commit, or a rollback's `recorded` one (`(image, repo@sha256:…)`). Recorded on the deploy
/// (image and digest, for a later rollback). `Err` when the rollout did not converge; the
/// manager rolled back by then (or was asked to).
pub(super) async fn rollout(
    store: &Store,
    steps: &Steps,
    swarm: &SwarmConfig,
    deploy: &Deploy,
    target: Oid,
    recorded: Option<(String, String)>,
) -> anyhow::Result<()> {
    let manager = Swarm::connect(&swarm.manager_host()).await?;
    let (image, digest) = match recorded {
        Some((image, digest)) => {
            let detail = format!("the recorded image {digest}");
            steps
                .run(StepStage::Pull, &detail, async {
                    Ok((
                        (),
                        "a rollback runs the digest its deploy ran; nothing resolved".into(),
                    ))
                })
                .await?;
            (image, digest)
        }
        None => {
            let git_ref = deploy.git_ref.as_deref().unwrap_or_default();
            let image = render(&swarm.image, &target.to_string(), git_ref);
            let detail = format!("resolve {image} on the manager");
            let digest = steps
                .run(StepStage::Pull, &detail, async {
                    let digest = manager.resolve(&image, None).await?;
                    let out = format!("{image} is {digest}: the service is pinned to it");
                    Ok((digest, out))
                })
                .await?;
            (image, digest)
        }
    };
    store.record_image(deploy.id, &image, Some(&digest)).await?;
    let reference = pinned(&image, &digest);
    let policy = swarm.policy;
    let detail = format!(
        "service {} → {reference}: {} task(s) at a time, {}, each watched {:?}, rollback on failure",
        swarm.service,
        policy.parallelism,
        if policy.start_first { "start-first" } else { "stop-first" },
        policy.monitor,
    );
    let deploy_label = deploy.id.to_string();
    let commit = target.to_string();
    steps
        .run(StepStage::Rollout, &detail, async {
            let before = manager.progress(&swarm.service).await?;
            let labels = [
                (DEPLOY_LABEL, deploy_label.as_str()),
                (COMMIT_LABEL, &commit),
            ];
            manager
                .update(&swarm.service, &reference, &labels, policy, None)
                .await?;
            let done = follow(&manager, swarm, &deploy_label, before.started).await?;
            let out = format!("every wanted task runs {reference}:\n{}", done.report());
            Ok(((), out))
        })
        .await
}

/// Read the service until the rollout that began after `before` (the update status's start
/// as read before the update) converged, was rolled back, or ran past the deadline.
async fn follow(
    manager: &Swarm,
    swarm: &SwarmConfig,
    deploy: &str,
    before: Option<String>,
) -> anyhow::Result<Progress> {
    let service = &swarm.service;
    let began = Instant::now();
    loop {
        let p = manager.progress(service).await?;
        // A status that started before the update is the previous rollout's.
        let ours = p.started.is_some() && p.started != before;
        if ours && p.converged(deploy) {
            return Ok(p);
        }
        if ours && p.state == "rollback_paused" {
            bail!(
                "Swarm's rollback of service {service} paused ({}); it may run both versions:\n{}",
                message(&p),
                p.report()
            );
        }
        // Rolled back: the failure is reported once the previous spec runs everywhere again
        // (the manager says "completed" while the last task may still be starting).
        if ours
            && p.state == "rollback_completed"
            && (p.settled() || began.elapsed() >= swarm.deadline)
        {
            bail!(
                "Swarm rolled service {service} back ({}); it runs {} again:\n{}",
                message(&p),
                p.image,
                p.report()
            );
        }
        if ours && p.state == "paused" {
            bail!(
                "the manager paused the rollout of {service} ({}); \
                 resume or roll it back with `docker service update`:\n{}",
                message(&p),
                p.report()
            );
        }
        if began.elapsed() >= swarm.deadline {
            return Err(past_deadline(manager, swarm, &p).await);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The deadline passed: ask the manager to roll back (unless it is already), wait for that
/// as long again, and say where it stands.
async fn past_deadline(manager: &Swarm, swarm: &SwarmConfig, p: &Progress) -> anyhow::Error {
    let service = &swarm.service;
    let head = format!(
        "service {service} did not converge within {:?} (update {}):\n{}",
        swarm.deadline,
        if p.state.is_empty() {
            "not begun"
        } else {
            &p.state
        },
        p.report()
    );
    if !p.rolled_back() {
        if let Err(e) = manager.rollback(service).await {
            return anyhow::anyhow!("{head}\nasking the manager to roll back failed: {e:#}");
        }
    }
    let began = Instant::now();
    while began.elapsed() < swarm.deadline {
        match manager.progress(service).await {
            Ok(now) if now.state == "rollback_completed" => {
                return anyhow::anyhow!("{head}\nrolled back: it runs {} again", now.image)
            }
            Ok(_) => tokio::time::sleep(POLL).await,
            Err(e) => return anyhow::anyhow!("{head}\nfollowing the rollback failed: {e:#}"),
        }
    }
    anyhow::anyhow!(
        "{head}\nthe rollback did not complete within {:?} either",
        swarm.deadline
    )
}

fn message(p: &Progress) -> &str {
    if p.message.is_empty() {
        "no message"
    } else {
        &p.message
    }
}
