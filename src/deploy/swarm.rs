//! The full path of a Swarm service (`[apps.swarm]`): the image's digest resolved on the
//! manager, the service updated to it (Swarm's rolling update, `failure_action = rollback`),
//! then its tasks followed until every replica runs the new spec and is healthy — or the
//! manager rolled back, or the deadline passed and dockhand asked it to. Placement, order and
//! failure detection are Swarm's; dockhand records each task's node and error in the steps.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::steps::Steps;
use crate::config::{render, AppConfig, Reload, SwarmConfig};
use crate::git::{Credentials, Oid};
use crate::runtime::{pinned, Job, JobReport, Progress, Swarm, COMMIT_LABEL, DEPLOY_LABEL};
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

/// What a fast deploy across the nodes needs of the deploy.
pub(super) struct OnNodes<'a> {
    pub app: &'a AppConfig,
    pub swarm: &'a SwarmConfig,
    pub deploy: &'a Deploy,
    pub target: Oid,
    /// The commit the nodes' `current` names before (dockhand's own tree holds it too).
    pub deployed: Option<Oid>,
}

/// The fast path across nodes, all or nothing. Phase 1: every ready node builds the release
/// in `code_dir` (a global job of `agent_image` running `dockhand node build`), `current`
/// untouched. Phase 2, only once all built: every node switches `current` (and touches the
/// reload file). If a node fails to switch, or a task of the service stops running after, every
/// node is switched back to the deployed commit.
pub(super) async fn fast(steps: &Steps, n: &OnNodes<'_>) -> anyhow::Result<()> {
    let manager = Swarm::connect(&n.swarm.manager_host()).await?;
    let jobs = Jobs::of(&manager, n)?;
    let target = n.target.to_string();
    let git_ref = match &n.deploy.git_ref {
        Some(r) if r.starts_with("refs/") => r.clone(),
        _ => format!("refs/heads/{}", n.app.branch),
    };
    let build = [
        "node",
        "build",
        "--dir",
        NODE_DIR,
        "--repo",
        &n.app.repo,
        "--ref",
        &git_ref,
        "--commit",
        &target,
    ];
    let detail = format!(
        "release {target} in {} on every node, current unchanged",
        jobs.code_dir
    );
    steps
        .run(StepStage::Build, &detail, async {
            let report = jobs.run("build", &build).await?;
            if !report.failed.is_empty() {
                bail!(
                    "the release was not built on {}; no node switched:\n{}",
                    report.failed.join(", "),
                    report.text()
                );
            }
            Ok(((), report.text()))
        })
        .await?;
    let switched = async {
        jobs.switch(steps, StepStage::Switch, &target, touch(n).as_deref())
            .await?;
        running_everywhere(&manager, steps, &n.swarm.service).await
    };
    match switched.await {
        Ok(()) => Ok(()),
        Err(e) => Err(back(&jobs, steps, n, e).await),
    }
}

/// After a fast deploy's switch, a full deploy's rollout failed: every node back on the
/// deployed commit's release.
pub(super) async fn switch_back(steps: &Steps, n: &OnNodes<'_>, e: anyhow::Error) -> anyhow::Error {
    let manager = match Swarm::connect(&n.swarm.manager_host()).await {
        Ok(m) => m,
        Err(c) => return e.context(format!("the nodes were not switched back: {c:#}")),
    };
    match Jobs::of(&manager, n) {
        Ok(jobs) => back(&jobs, steps, n, e).await,
        Err(j) => e.context(format!("the nodes were not switched back: {j:#}")),
    }
}

/// Switch every node back to the deployed commit after `e`; `e` with how that went.
async fn back(jobs: &Jobs<'_>, steps: &Steps, n: &OnNodes<'_>, e: anyhow::Error) -> anyhow::Error {
    let Some(previous) = n.deployed else {
        return e.context("this was the first deploy: nothing to switch back to");
    };
    let previous = previous.to_string();
    let touch = touch(n);
    match jobs
        .switch(steps, StepStage::Restore, &previous, touch.as_deref())
        .await
    {
        Ok(()) => e.context(format!("every node switched back to {previous}")),
        Err(b) => e.context(format!("switching the nodes back failed too: {b:#}")),
    }
}

/// The reload file touched in each node's new release.
fn touch(n: &OnNodes<'_>) -> Option<String> {
    match &n.app.reload {
        Reload::Touch(rel) => Some(rel.display().to_string()),
        _ => None,
    }
}

/// Where a job's task sees the node's code directory.
const NODE_DIR: &str = "/node";

/// `dockhand-<app>-<deploy>` cut to leave room for the job's own suffix (a service name has
/// at most 63 characters).
fn job_prefix(app: &str, deploy: i64) -> String {
    let app: String = app.chars().take(24).collect();
    format!("dockhand-{app}-{deploy}")
}

/// The jobs of one fast deploy.
struct Jobs<'a> {
    manager: &'a Swarm,
    agent: &'a str,
    code_dir: &'a str,
    mounts: Vec<(String, String, bool)>,
    prefix: String,
    deadline: Duration,
}

impl<'a> Jobs<'a> {
    fn of(manager: &'a Swarm, n: &OnNodes<'a>) -> anyhow::Result<Jobs<'a>> {
        let swarm = n.swarm;
        let (Some(code_dir), Some(agent)) = (&swarm.code_dir, &swarm.agent_image) else {
            bail!("the fast path across nodes needs code_dir and agent_image");
        };
        if !matches!(n.app.access.credentials, Credentials::None) {
            bail!("the nodes cannot fetch a private origin yet (its credentials are not passed to the jobs): remove code_dir to deploy this app by the full path only");
        }
        let mut mounts = vec![(code_dir.clone(), NODE_DIR.to_string(), false)];
        if n.app.repo.starts_with('/') {
            // A same-host origin (a path): the nodes read it where it is.
            mounts.push((n.app.repo.clone(), n.app.repo.clone(), true));
        }
        Ok(Jobs {
            manager,
            agent,
            code_dir,
            mounts,
            prefix: job_prefix(&n.app.name, n.deploy.id),
            deadline: swarm.deadline,
        })
    }

    async fn run(&self, what: &str, args: &[&str]) -> anyhow::Result<JobReport> {
        let name = format!("{}-{what}", self.prefix);
        let job = Job {
            name: &name,
            image: self.agent,
            args: args.iter().map(|a| (*a).to_string()).collect(),
            mounts: self.mounts.clone(),
            deadline: self.deadline,
        };
        self.manager.run_job(&job).await
    }

    /// Switch every node's `current` to `commit` as step `stage`; fails naming the nodes that
    /// did not.
    async fn switch(
        &self,
        steps: &Steps,
        stage: StepStage,
        commit: &str,
        touch: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut args = vec!["node", "switch", "--dir", NODE_DIR, "--commit", commit];
        if let Some(rel) = touch {
            args.extend(["--touch", rel]);
        }
        let what = match stage {
            StepStage::Restore => "switch-back",
            _ => "switch",
        };
        let detail = format!("current -> {commit} on every node");
        steps
            .run(stage, &detail, async {
                let report = self.run(what, &args).await?;
                if !report.failed.is_empty() {
                    bail!(
                        "current was not switched on {}:\n{}",
                        report.failed.join(", "),
                        report.text()
                    );
                }
                Ok(((), report.text()))
            })
            .await
    }
}

/// The check after a switch: every task of the service still runs (within a few seconds).
async fn running_everywhere(manager: &Swarm, steps: &Steps, service: &str) -> anyhow::Result<()> {
    let detail = format!("every task of service {service} still runs");
    steps
        .run(StepStage::Check, &detail, async {
            let began = Instant::now();
            loop {
                let p = manager.progress(service).await?;
                if p.settled() {
                    return Ok(((), p.report()));
                }
                if began.elapsed() > CHECK_WITHIN {
                    bail!("not every task runs after the switch:\n{}", p.report());
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await
}

/// How long the tasks get to be all running after a switch.
const CHECK_WITHIN: Duration = Duration::from_secs(10);

/// How often a Swarm app's proxy re-reads where the service's tasks run.
const ENDPOINTS_EVERY: Duration = Duration::from_secs(1);

/// For each Swarm app with `[apps.proxy]` and `port`: a task that keeps the proxy's pool at
/// the service's running tasks (node address + port), read every second. A manager that does
/// not answer keeps the last set (warned once per outage). Aborted at shutdown.
pub fn follow_tasks(ctx: &crate::services::Services) -> Vec<tokio::task::JoinHandle<()>> {
    ctx.config
        .apps
        .iter()
        .filter_map(|app| {
            let swarm = app.swarm.clone()?;
            let port = swarm.port?;
            let proxy = ctx.proxies.get(&app.name)?.clone();
            Some(tokio::spawn(keep_pool(swarm, port, proxy)))
        })
        .collect()
}

async fn keep_pool(swarm: SwarmConfig, port: u16, proxy: std::sync::Arc<crate::proxy::Proxy>) {
    let mut manager: Option<Swarm> = None;
    let mut warned = false;
    loop {
        let read = async {
            if manager.is_none() {
                manager = Some(Swarm::connect(&swarm.manager_host()).await?);
            }
            match &manager {
                Some(m) => m.progress(&swarm.service).await,
                None => unreachable!("connected above"),
            }
        };
        match read.await {
            Ok(p) => {
                warned = false;
                proxy.set_pool(&running_at(&p, port));
            }
            Err(e) => {
                manager = None;
                if !warned {
                    tracing::warn!(
                        service = swarm.service,
                        error = format!("{e:#}"),
                        "cannot read the service's tasks; the proxy keeps the last ones"
                    );
                    warned = true;
                }
            }
        }
        tokio::time::sleep(ENDPOINTS_EVERY).await;
    }
}

/// Where the running tasks answer: their nodes' addresses on `port`, sorted.
fn running_at(p: &Progress, port: u16) -> Vec<std::net::SocketAddr> {
    let mut addrs: Vec<std::net::SocketAddr> = p
        .wanted()
        .filter(|t| t.state == "running")
        .filter_map(|t| t.addr.as_deref()?.parse::<std::net::IpAddr>().ok())
        .map(|ip| std::net::SocketAddr::new(ip, port))
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}
