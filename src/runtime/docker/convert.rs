//! dockhand's container types to bollard's and back. Every engine answer is `Option`-typed;
//! nothing here unwraps one, and a spec the engine would misread (an `=` in an env name, a
//! relative mount source) is refused here rather than sent.

use anyhow::{bail, Context as _};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HealthStatusEnum, HostConfig, MountType,
    RestartPolicy, RestartPolicyNameEnum,
};

use crate::runtime::{ContainerInfo, ContainerSpec};

pub(super) fn create_body(spec: &ContainerSpec) -> anyhow::Result<ContainerCreateBody> {
    let mut env = Vec::with_capacity(spec.env.len());
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') {
            bail!("environment variable name {key:?} is empty or contains '='");
        }
        env.push(format!("{key}={value}"));
    }
    let mut mounts = Vec::with_capacity(spec.mounts.len());
    for m in &spec.mounts {
        let source = m
            .source
            .to_str()
            .with_context(|| format!("mount source {} is not UTF-8", m.source.display()))?;
        if !m.source.is_absolute() {
            bail!("mount source {source} is not an absolute path");
        }
        mounts.push(bollard::models::Mount {
            source: Some(source.to_string()),
            target: Some(m.target.clone()),
            typ: Some(MountType::BIND),
            read_only: Some(m.read_only),
            ..Default::default()
        });
    }
    let restart_policy = match &spec.restart_policy {
        None => None,
        Some(name) => Some(RestartPolicy {
            name: Some(
                name.parse::<RestartPolicyNameEnum>()
                    .map_err(|_| anyhow::anyhow!("unknown restart policy {name:?}"))?,
            ),
            maximum_retry_count: None,
        }),
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.cmd.clone(),
        env: Some(env),
        labels: Some(spec.labels.clone().into_iter().collect()),
        host_config: Some(HostConfig {
            network_mode: Some(spec.network_mode.clone()),
            mounts: Some(mounts),
            restart_policy,
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(super) fn container_info(r: ContainerInspectResponse) -> anyhow::Result<ContainerInfo> {
    let id = r.id.context("no container id")?;
    let state = r.state.unwrap_or_default();
    // A container the engine is restarting after a crash is not serving.
    let running = state.running.unwrap_or(false) && !state.restarting.unwrap_or(false);
    let config = r.config.unwrap_or_default();
    let health = state
        .health
        .and_then(|h| h.status)
        .filter(|s| *s != HealthStatusEnum::EMPTY)
        .map(|s| s.to_string());
    Ok(ContainerInfo {
        id,
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image_ref: config.image.unwrap_or_default(),
        image_id: r.image.unwrap_or_default(),
        running,
        paused: state.paused.unwrap_or(false),
        exit_code: if running { None } else { state.exit_code },
        health,
        labels: config.labels.unwrap_or_default().into_iter().collect(),
    })
}
