//! `[apps.swarm]`: the service, its manager and the rollout policy. That the service exists is
//! `check`'s to ask the manager; here only what the file alone can say.

use anyhow::bail;

use crate::config::raw::{
    RawSwarm, DEFAULT_SWARM_DEADLINE, DEFAULT_SWARM_DELAY, DEFAULT_SWARM_MONITOR,
    DEFAULT_SWARM_PARALLELISM,
};
use crate::config::{Strategy, SwarmConfig};
use crate::runtime::{check_service_name, RolloutPolicy};

/// The swarm section; errors name the key (the caller puts `swarm` in front).
pub(super) fn validate_swarm(raw: RawSwarm) -> anyhow::Result<SwarmConfig> {
    check_service_name(&raw.service).map_err(|e| anyhow::anyhow!("service: {e:#}"))?;
    if raw.image.trim().is_empty() || raw.image.starts_with('-') {
        bail!("image: must be an image reference");
    }
    if let Some(manager) = &raw.manager {
        if !manager.starts_with("unix://") {
            bail!("manager: {manager:?} must be a unix:// socket of a manager node's engine");
        }
    }
    let parallelism = raw.parallelism.unwrap_or(DEFAULT_SWARM_PARALLELISM);
    if parallelism == 0 {
        bail!("parallelism: 0 would replace every task at once; use at least 1");
    }
    let deadline = raw.deadline.unwrap_or(DEFAULT_SWARM_DEADLINE);
    if deadline.is_zero() {
        bail!("deadline: must be greater than zero");
    }
    if let Some(dir) = &raw.code_dir {
        let path = std::path::Path::new(dir);
        if !path.is_absolute() || dir.contains("..") || path == std::path::Path::new("/") {
            bail!("code_dir: {dir:?} must be an absolute directory on the nodes, without ..");
        }
        if raw.agent_image.is_none() {
            bail!("agent_image: code_dir needs dockhand's own image (built from the Containerfile, pushed where the nodes pull), which builds and switches the releases on each node");
        }
    }
    if raw.agent_image.is_some() && raw.code_dir.is_none() {
        bail!("agent_image: only used with code_dir (the fast path across nodes)");
    }
    let full_paths = super::container::full_paths(raw.full_paths, raw.full_paths_extra)?;
    if raw.port == Some(0) {
        bail!("port: must be the port the tasks listen on (1-65535)");
    }
    Ok(SwarmConfig {
        port: raw.port,
        code_dir: raw.code_dir,
        agent_image: raw.agent_image,
        full_paths,
        service: raw.service,
        manager: raw.manager,
        image: raw.image,
        policy: RolloutPolicy {
            parallelism,
            delay: raw.delay.unwrap_or(DEFAULT_SWARM_DELAY),
            monitor: raw.monitor.unwrap_or(DEFAULT_SWARM_MONITOR),
            // Host-network tasks on a fixed port cannot start beside the old one.
            start_first: raw.order == Some(Strategy::StartFirst),
        },
        deadline,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::testing::{parse, APP};

    const SWARM: &str =
        "[apps.swarm]\nservice = \"web\"\nimage = \"registry:5000/web:{short_sha}\"\n";

    fn refused(extra: &str) -> String {
        match parse(&format!("{APP}{extra}")) {
            Ok(_) => panic!("accepted: {extra}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn a_service_app_gets_one_task_at_a_time_stop_first_and_a_deadline_unless_it_says() {
        let (config, _) = parse(&format!("{APP}{SWARM}")).unwrap();
        let swarm = config.apps[0].swarm.clone().unwrap();
        assert_eq!(swarm.service, "web");
        assert_eq!(swarm.policy.parallelism, 1);
        assert!(!swarm.policy.start_first);
        assert_eq!(swarm.policy.monitor, Duration::from_secs(5));
        assert_eq!(swarm.deadline, Duration::from_secs(600));
        let (config, _) = parse(&format!(
            "{APP}{SWARM}parallelism = 2\norder = \"start-first\"\nmonitor = \"1s\"\ndeadline = \"2m\"\nmanager = \"unix:///run/m.sock\"\n"
        ))
        .unwrap();
        let swarm = config.apps[0].swarm.clone().unwrap();
        assert_eq!(swarm.policy.parallelism, 2);
        assert!(swarm.policy.start_first);
        assert_eq!(swarm.manager_host(), "unix:///run/m.sock");
    }

    #[test]
    fn what_a_service_app_cannot_have_is_refused_naming_the_key() {
        let container = "[apps.container]\nimage = \"app:1\"\nmount = \"/code\"\n";
        assert!(refused(&format!("{SWARM}{container}")).contains("not both"));
        assert!(refused(&format!(
            "signal = \"HUP\"\nreload_container = \"x\"\n{SWARM}"
        ))
        .contains("swarm: a service's deploys are rolled out by its manager"));
        let proxy = "[apps.proxy]\nlisten = \"127.0.0.1:9000\"\n";
        assert!(refused(&format!("{SWARM}{proxy}")).contains("swarm.port: [apps.proxy] forwards"));
        let fixed = "[apps.proxy]\nlisten = \"127.0.0.1:9000\"\nupstream = \"127.0.0.1:9001\"\n";
        assert!(refused(&format!("{SWARM}port = 8080\n{fixed}"))
            .contains("proxy.upstream: a Swarm service"));
        parse(&format!("{APP}{SWARM}port = 8080\n{proxy}")).unwrap();
        let check = "[apps.check]\nurl = \"http://127.0.0.1:8080/\"\n";
        assert!(refused(&format!("{SWARM}{check}")).contains("HEALTHCHECK"));
        let bad_name = SWARM.replace("\"web\"", "\"../containers/x\"");
        assert!(refused(&bad_name).contains("swarm: service:"));
        assert!(
            refused(&format!("{SWARM}manager = \"tcp://10.0.0.1:2375\"\n"))
                .contains("swarm: manager: \"tcp://10.0.0.1:2375\" must be a unix:// socket")
        );
        assert!(refused(&format!("{SWARM}parallelism = 0\n")).contains("parallelism: 0"));
        assert!(refused(&format!("{SWARM}nodes = 3\n")).contains("unknown field `nodes`"));
    }
}
