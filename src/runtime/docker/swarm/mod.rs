//! [`Swarm`]: a Docker Swarm manager, for apps that name a service (`[apps.swarm]`).
//!
//! Placement, rolling order, failure detection and the rollback of tasks are Swarm's: dockhand
//! pins the service to one image digest with an `UpdateConfig` whose failure action is
//! `rollback`, then reads the service's update status and its tasks until the rollout ends.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bollard::models::{
    ServiceSpec, ServiceSpecRollbackConfig, ServiceSpecRollbackConfigFailureActionEnum,
    ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
    ServiceUpdateStatusStateEnum, TaskState,
};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListTasksOptionsBuilder, UpdateServiceOptionsBuilder,
};

mod job;

pub use job::{Job, JobReport};

use super::refs::check_image_ref;
use super::Docker;

/// The task label naming the deploy that made a task's spec (every rollout changes it, so the
/// manager always starts one, and a task shows which deploy it runs).
pub const DEPLOY_LABEL: &str = "dockhand.deploy";
/// The task label naming the commit a task's image was built from.
pub const COMMIT_LABEL: &str = "dockhand.commit";

/// A Swarm manager, reached over its engine's unix socket.
#[derive(Clone)]
pub struct Swarm {
    docker: Docker,
}

/// How the manager rolls a new spec out (Swarm's `UpdateConfig`; the same values roll back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutPolicy {
    /// Tasks replaced at once.
    pub parallelism: u64,
    /// Wait between two batches.
    pub delay: Duration,
    /// How long each new task is watched for failure before the next batch.
    pub monitor: Duration,
    /// Start the new task before stopping the old one (a host-network task on a fixed port
    /// cannot: the port is taken).
    pub start_first: bool,
}

/// What `check` and a deploy need to know of the service.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    pub id: String,
    /// The image reference its spec runs now.
    pub image: String,
    /// Replicas wanted; `None` for a global service (one per eligible node).
    pub replicas: Option<u64>,
}

/// One task of the service as the manager reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub id: String,
    /// The node's host name and address (its id when the node is gone).
    pub node: String,
    /// The node's address, where a host-network task answers.
    pub addr: Option<String>,
    pub slot: Option<i64>,
    /// Its state (`running`, `starting`, `failed`, `shutdown`, …).
    pub state: String,
    /// The state the manager wants it in (`running`, `shutdown`).
    pub desired: String,
    pub image: String,
    /// The deploy label of its spec.
    pub deploy: Option<String>,
    /// The engine's error or the manager's message, when it has one.
    pub error: Option<String>,
}

impl TaskView {
    /// One line for a step's output.
    pub fn line(&self) -> String {
        let slot = self.slot.map(|s| format!(".{s}")).unwrap_or_default();
        let short = self.id.get(..12).unwrap_or(&self.id);
        let mut line = format!(
            "task {short}{slot} on {}: {} (desired {}) {}",
            self.node, self.state, self.desired, self.image
        );
        if let Some(e) = &self.error {
            line.push_str(&format!(": {e}"));
        }
        line
    }
}

/// Where a rollout is: the manager's update status and the service's tasks.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The update status's state (`updating`, `completed`, `rollback_started`, …); empty when
    /// the manager has not begun.
    pub state: String,
    pub message: String,
    /// When the manager began the update this status is of (its own clock, compared only
    /// with another reading of it): a status left from the rollout before looks the same.
    pub started: Option<String>,
    /// The image reference the spec names now (after a rollback: the previous one).
    pub image: String,
    pub replicas: Option<u64>,
    pub tasks: Vec<TaskView>,
}

impl Progress {
    /// The update is being rolled back, or was.
    pub fn rolled_back(&self) -> bool {
        self.state.starts_with("rollback")
    }

    /// The tasks the manager wants running.
    pub fn wanted(&self) -> impl Iterator<Item = &TaskView> {
        self.tasks.iter().filter(|t| t.desired == "running")
    }

    /// Every wanted task runs deploy `deploy`'s spec and is `running` (past its HEALTHCHECK,
    /// which Swarm waits for), as many as the service wants, and the manager says the update
    /// completed (each batch watched for `monitor`).
    pub fn converged(&self, deploy: &str) -> bool {
        self.state == "completed"
            && self.settled()
            && self.wanted().all(|t| t.deploy.as_deref() == Some(deploy))
    }

    /// As many wanted tasks as the service wants, all `running`, whatever spec they run.
    pub fn settled(&self) -> bool {
        let wanted: Vec<&TaskView> = self.wanted().collect();
        let enough = match self.replicas {
            Some(n) => wanted.len() as u64 == n,
            None => !wanted.is_empty(),
        };
        enough && wanted.iter().all(|t| t.state == "running")
    }

    /// The tasks, one line each: wanted ones first, then the most recent others.
    pub fn report(&self) -> String {
        let mut lines: Vec<String> = self.wanted().map(TaskView::line).collect();
        lines.extend(
            self.tasks
                .iter()
                .filter(|t| t.desired != "running")
                .take(6)
                .map(TaskView::line),
        );
        lines.join("\n")
    }
}

impl Swarm {
    /// Connect to the manager at `host` (`unix://PATH`), which must be a Swarm manager.
    pub async fn connect(host: &str) -> anyhow::Result<Swarm> {
        let docker = Docker::connect_to(host).await?;
        let info = docker
            .client
            .info()
            .await
            .with_context(|| format!("asking the engine at {host} about its swarm"))?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            let state = swarm
                .local_node_state
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".into());
            bail!(
                "the engine at {host} is not a Swarm manager (its swarm state: {state}); \
                 point manager at a manager node's socket, or run `docker swarm init` there"
            );
        }
        Ok(Swarm { docker })
    }

    /// The service `name`, or an error saying it does not exist on this manager.
    pub async fn service(&self, name: &str) -> anyhow::Result<ServiceInfo> {
        check_service_name(name)?;
        let service = self.inspect(name).await?;
        let spec = service.spec.unwrap_or_default();
        let mode = spec.mode.clone().unwrap_or_default();
        if mode.replicated_job.is_some() || mode.global_job.is_some() {
            bail!("service {name} is a job, not a long-running service");
        }
        Ok(ServiceInfo {
            id: service.id.unwrap_or_default(),
            image: container_image(&spec),
            replicas: mode
                .replicated
                .map(|r| r.replicas.unwrap_or(1).max(0) as u64),
        })
    }

    /// The digest `image` (a tag) names in its registry now, as the manager's engine asks it:
    /// `repo@sha256:…`. The service is pinned to it, so every node runs the same bytes.
    pub async fn resolve(
        &self,
        image: &str,
        credentials: Option<&crate::runtime::Credentials>,
    ) -> anyhow::Result<String> {
        check_image_ref(image)?;
        let inspected = self
            .docker
            .client
            .inspect_registry_image(image, auth(credentials))
            .await
            .with_context(|| {
                format!("the registry does not answer for {image} (is it pushed? can the manager reach the registry?)")
            })?;
        let Some(digest) = inspected.descriptor.digest else {
            bail!("the registry named no digest for {image}");
        };
        Ok(format!("{}@{digest}", repository_of(image)))
    }

    /// Update the service to `image` (pinned: `repo[:tag]@sha256:…`) with `policy`, failure
    /// action `rollback`, and the deploy's labels on its tasks.
    pub async fn update(
        &self,
        name: &str,
        image: &str,
        labels: &[(&str, &str)],
        policy: RolloutPolicy,
        credentials: Option<&crate::runtime::Credentials>,
    ) -> anyhow::Result<()> {
        let service = self.inspect(name).await?;
        let version = service.version.and_then(|v| v.index).unwrap_or_default();
        let mut spec = service.spec.unwrap_or_default();
        let template = spec.task_template.get_or_insert_with(Default::default);
        let container = template.container_spec.get_or_insert_with(Default::default);
        container.image = Some(image.to_string());
        let task_labels = container.labels.get_or_insert_with(HashMap::new);
        for (k, v) in labels {
            task_labels.insert((*k).to_string(), (*v).to_string());
        }
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let parallelism = i64::try_from(policy.parallelism).unwrap_or(i64::MAX);
        spec.update_config = Some(ServiceSpecUpdateConfig {
            parallelism: Some(parallelism),
            delay: Some(nanos(policy.delay)),
            failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
            monitor: Some(nanos(policy.monitor)),
            max_failure_ratio: Some(0.0),
            order: Some(match policy.start_first {
                true => ServiceSpecUpdateConfigOrderEnum::START_FIRST,
                false => ServiceSpecUpdateConfigOrderEnum::STOP_FIRST,
            }),
        });
        spec.rollback_config = Some(ServiceSpecRollbackConfig {
            parallelism: Some(parallelism),
            delay: Some(nanos(policy.delay)),
            // A rollback goes on past a task that fails (the broken one being replaced may exit
            // mid-way): the old version everywhere is what matters, and `follow` checks it.
            failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::CONTINUE),
            monitor: Some(nanos(policy.monitor)),
            max_failure_ratio: Some(0.0),
            order: Some(match policy.start_first {
                true => ServiceSpecRollbackConfigOrderEnum::START_FIRST,
                false => ServiceSpecRollbackConfigOrderEnum::STOP_FIRST,
            }),
        });
        let options = UpdateServiceOptionsBuilder::new()
            .version(i32::try_from(version).context("service version out of range")?)
            .build();
        let answer = self
            .docker
            .client
            .update_service(name, spec, options, auth(credentials))
            .await
            .with_context(|| format!("updating service {name}"))?;
        if let Some(warnings) = answer.warnings.filter(|w| !w.is_empty()) {
            tracing::warn!(
                service = name,
                ?warnings,
                "the manager warned about the update"
            );
        }
        Ok(())
    }

    /// Ask the manager to roll the service back to its previous spec.
    pub async fn rollback(&self, name: &str) -> anyhow::Result<()> {
        let service = self.inspect(name).await?;
        let version = service.version.and_then(|v| v.index).unwrap_or_default();
        let spec = service.spec.unwrap_or_default();
        let options = UpdateServiceOptionsBuilder::new()
            .version(i32::try_from(version).context("service version out of range")?)
            .rollback("previous")
            .build();
        self.docker
            .client
            .update_service(name, spec, options, None)
            .await
            .with_context(|| format!("rolling service {name} back"))?;
        Ok(())
    }

    /// The service's update status and its tasks (node names resolved).
    pub async fn progress(&self, name: &str) -> anyhow::Result<Progress> {
        let service = self.inspect(name).await?;
        let status = service.update_status.unwrap_or_default();
        let spec = service.spec.unwrap_or_default();
        let replicas = spec
            .mode
            .as_ref()
            .and_then(|m| m.replicated.as_ref())
            .map(|r| r.replicas.unwrap_or(1).max(0) as u64);
        let image = container_image(&spec);
        let tasks = self.tasks_of(name).await?;
        let nodes: HashMap<String, (String, Option<String>)> = self
            .docker
            .client
            .list_nodes(None::<ListNodesOptions>)
            .await
            .context("listing the swarm's nodes")?
            .into_iter()
            .filter_map(|n| {
                let host = n.description?.hostname?;
                // Nodes may share a host name; the address tells them apart.
                let addr = n.status.and_then(|s| s.addr);
                let name = match &addr {
                    Some(addr) => format!("{host} ({addr})"),
                    None => host,
                };
                Some((n.id?, (name, addr)))
            })
            .collect();
        let mut tasks: Vec<(Option<String>, TaskView)> = tasks
            .into_iter()
            .map(|t| {
                let status = t.status.unwrap_or_default();
                let container = t.spec.and_then(|s| s.container_spec).unwrap_or_default();
                let node = t.node_id.unwrap_or_default();
                let error = status.err.filter(|e| !e.is_empty()).or(status
                    .message
                    .filter(|m| !matches!(m.as_str(), "" | "started")));
                let (name, addr) = nodes.get(&node).cloned().unwrap_or((node, None));
                let view = TaskView {
                    id: t.id.unwrap_or_default(),
                    node: name,
                    addr,
                    slot: t.slot,
                    state: status.state.map(task_state).unwrap_or_default(),
                    desired: t.desired_state.map(task_state).unwrap_or_default(),
                    image: container.image.unwrap_or_default(),
                    deploy: container.labels.and_then(|mut l| l.remove(DEPLOY_LABEL)),
                    error,
                };
                (status.timestamp.map(|t| t.to_string()), view)
            })
            .collect();
        // Newest first, so a report shows what happened last.
        tasks.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(Progress {
            state: status.state.map(update_state).unwrap_or_default(),
            message: status.message.unwrap_or_default(),
            started: status.started_at.map(|t| t.to_string()),
            image,
            replicas,
            tasks: tasks.into_iter().map(|(_, t)| t).collect(),
        })
    }

    /// Every task of service (or job) `name`, as the manager keeps them.
    async fn tasks_of(&self, name: &str) -> anyhow::Result<Vec<bollard::models::Task>> {
        let filters = HashMap::from([("service".to_string(), vec![name.to_string()])]);
        self.docker
            .client
            .list_tasks(Some(
                ListTasksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .with_context(|| format!("listing the tasks of {name}"))
    }

    async fn inspect(&self, name: &str) -> anyhow::Result<bollard::models::Service> {
        check_service_name(name)?;
        match self
            .docker
            .client
            .inspect_service(name, None::<InspectServiceOptions>)
            .await
        {
            Ok(service) => Ok(service),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => bail!(
                "service {name} does not exist on the manager {}; create it first (`docker service create --name {name} …`)",
                self.docker.host
            ),
            Err(e) => Err(e).with_context(|| format!("inspecting service {name}")),
        }
    }
}

/// A service name as Swarm allows it (letters, digits, `-`, `_`, `.`; up to 63), checked
/// before it goes into a URL path.
pub fn check_service_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("{name:?} is not a Swarm service name (letters, digits, '-', '_', '.'; at most 63)");
    }
    Ok(())
}

/// Registry credentials as the engine takes them (the manager hands them to the nodes).
fn auth(
    credentials: Option<&crate::runtime::Credentials>,
) -> Option<bollard::auth::DockerCredentials> {
    credentials.map(|c| bollard::auth::DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.clone()),
        serveraddress: c.server.clone(),
        ..Default::default()
    })
}

/// The image of a service's container spec.
fn container_image(spec: &ServiceSpec) -> String {
    spec.task_template
        .as_ref()
        .and_then(|t| t.container_spec.as_ref())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// `registry:5000/name:tag` → `registry:5000/name` (a port's colon is not a tag's).
pub fn repository_of(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].find(':') {
        Some(i) => &image[..name_start + i],
        None => image,
    }
}

/// The reference a service runs for `tag` pinned to `digest` (`repo@sha256:…`): the tag
/// stays readable in `docker service ls`, the digest decides.
pub fn pinned(tag: &str, digest: &str) -> String {
    let sha = digest.rsplit('@').next().unwrap_or(digest);
    format!("{}@{sha}", tag.split('@').next().unwrap_or(tag))
}

fn task_state(s: TaskState) -> String {
    s.to_string()
}

fn update_state(s: ServiceUpdateStatusStateEnum) -> String {
    s.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_and_pinned_reference_keep_a_registry_port_apart_from_a_tag() {
        assert_eq!(
            repository_of("10.0.0.1:5000/team/web:v2"),
            "10.0.0.1:5000/team/web"
        );
        assert_eq!(repository_of("web"), "web");
        assert_eq!(repository_of("web@sha256:ab"), "web");
        assert_eq!(
            pinned("10.0.0.1:5000/web:v2", "10.0.0.1:5000/web@sha256:ab"),
            "10.0.0.1:5000/web:v2@sha256:ab"
        );
        assert_eq!(
            pinned("web:v2@sha256:old", "sha256:new"),
            "web:v2@sha256:new"
        );
    }

    #[test]
    fn service_names_that_could_reach_another_url_are_refused() {
        for bad in ["", "../containers", "a/b", "-x", "web?x=1", &"a".repeat(64)] {
            assert!(check_service_name(bad).is_err(), "{bad:?}");
        }
        for good in ["web", "web_1", "app.v2", "A-b"] {
            check_service_name(good).unwrap();
        }
    }

    fn task(state: &str, desired: &str, deploy: &str) -> TaskView {
        TaskView {
            id: "t".into(),
            node: "n1".into(),
            addr: None,
            slot: Some(1),
            state: state.into(),
            desired: desired.into(),
            image: "web@sha256:ab".into(),
            deploy: Some(deploy.into()),
            error: None,
        }
    }

    #[test]
    fn converged_only_when_completed_and_every_wanted_task_runs_the_deploy() {
        let progress = |state: &str, tasks| Progress {
            state: state.into(),
            message: String::new(),
            started: None,
            image: String::new(),
            replicas: Some(2),
            tasks,
        };
        let done = vec![
            task("running", "running", "7"),
            task("running", "running", "7"),
            task("shutdown", "shutdown", "6"),
        ];
        assert!(progress("completed", done.clone()).converged("7"));
        assert!(!progress("updating", done.clone()).converged("7"));
        // A completed status left from the previous rollout, before the manager began.
        assert!(!progress("completed", done.clone()).converged("8"));
        let short = vec![task("running", "running", "7")];
        assert!(!progress("completed", short).converged("7"));
        let starting = vec![
            task("running", "running", "7"),
            task("starting", "running", "7"),
        ];
        assert!(!progress("completed", starting).converged("7"));
        assert!(progress("rollback_completed", done).rolled_back());
    }
}
