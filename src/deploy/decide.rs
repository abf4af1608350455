//! The I/O shell around `plan::decide`: what runs now (`Live`, from `app_state`), what the
//! engine says of the live container, and the image a deploy wants — then the pure decision.

use std::sync::Arc;

use super::fast;
use super::plan::{self, Decision, DeployPath, Running};
use crate::config::{render, AppConfig, SwarmConfig};
use crate::git::{Change, Oid};
use crate::runtime::{Engine, Swarm};
use crate::services::Services;
use crate::store::AppState;

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
    pub(super) fn of(state: Option<AppState>) -> (Live, Option<Oid>) {
        let Some(state) = state else {
            return (Live::default(), None);
        };
        let deployed = state.commit_sha.into();
        let live = Live {
            container: state.container_id,
            digest: state.digest,
            image: state.image,
            port: state.port.and_then(|p| u16::try_from(p).ok()),
            deploy_id: Some(state.deploy_id),
        };
        (live, Some(deployed))
    }

    /// The live container as `app_state` records it, to put back after a reverted deploy.
    pub(super) fn live_container(&self) -> Option<crate::store::LiveContainer> {
        Some(crate::store::LiveContainer {
            id: self.container.clone()?,
            image: self.image.clone()?,
            digest: self.digest.clone(),
            port: self.port?,
        })
    }
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
    ctx: &Services,
    app: &AppConfig,
    ask: &Ask<'_>,
    plan: &fast::Plan,
    target: Oid,
    live: &Live,
) -> anyhow::Result<(Decision, Option<Arc<dyn Engine>>)> {
    if let Some(swarm) = &app.swarm {
        return Ok((decide_swarm(swarm, ask, plan, target).await?, None));
    }
    let Some(container) = &app.container else {
        return Ok((
            Decision {
                path: DeployPath::Fast,
                reason: plan.summary.clone(),
            },
            None,
        ));
    };
    let docker = ctx.engine().await?;
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
    let changed: Vec<&std::path::Path> = plan.changes.iter().map(Change::path).collect();
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

/// A Swarm service: without `code_dir` every deploy is full; with it, `plan::decide` as for a
/// container, the service's image standing for the running one (a rollback's recorded digest
/// compared by digest).
async fn decide_swarm(
    swarm: &SwarmConfig,
    ask: &Ask<'_>,
    plan: &fast::Plan,
    target: Oid,
) -> anyhow::Result<Decision> {
    let service = &swarm.service;
    if swarm.code_dir.is_none() {
        let why = match ask.recorded_digest {
            Some(digest) => format!("rollback runs the recorded image {digest}"),
            None => "every deploy rolls the service out (no code_dir: no fast path)".into(),
        };
        return Ok(Decision {
            path: DeployPath::Full,
            reason: format!("Swarm service {service}: {why}; {}", plan.summary),
        });
    }
    let manager = Swarm::connect(&swarm.manager_host()).await?;
    let running = manager.service(service).await?.image;
    let digest_of = |r: &str| r.rsplit_once('@').map(|(_, d)| d.to_string());
    let (wanted, running) = match ask.recorded_digest {
        Some(digest) => (
            digest_of(digest).unwrap_or_else(|| digest.to_string()),
            digest_of(&running).unwrap_or(running),
        ),
        None => (
            render(&swarm.image, &target.to_string(), ask.git_ref),
            running.split('@').next().unwrap_or_default().to_string(),
        ),
    };
    let changed: Vec<&std::path::Path> = plan.changes.iter().map(Change::path).collect();
    let decision = plan::decide(&plan::Inputs {
        has_container: true,
        has_volume: true,
        full_paths: &swarm.full_paths,
        changed: &changed,
        message: &plan.message,
        wanted_image: Some(&wanted),
        running: &Running::Image(running),
        requested: ask.requested,
    });
    Ok(Decision {
        path: decision.path,
        reason: format!(
            "Swarm service {service}: {}; {}",
            decision.reason, plan.summary
        ),
    })
}
