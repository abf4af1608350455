//! Swarm global jobs: a one-off task of dockhand's own image on every ready node (what the
//! fast path across nodes runs), followed until each node's task ended.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use bollard::models::{ServiceSpec, TaskState};
use bollard::query_parameters::ListNodesOptions;

use super::{check_service_name, Swarm};
use crate::runtime::docker::refs::check_image_ref;

/// A one-off task on every node of the swarm (a Swarm *global job*): dockhand's own image
/// running `dockhand node …` with the node's code directory mounted. Its tasks' states are
/// its report; it is removed once every node's task ended.
pub struct Job<'a> {
    pub name: &'a str,
    pub image: &'a str,
    /// The image's command line after its entry point (`node build …`).
    pub args: Vec<String>,
    /// Bind mounts: (source on the node, target in the task, read-only).
    pub mounts: Vec<(String, String, bool)>,
    pub deadline: Duration,
}

/// How a job ended on each node.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// One line per node: its task's state, error and output.
    pub lines: Vec<String>,
    /// The nodes whose task did not complete (or that got none), named.
    pub failed: Vec<String>,
}

impl JobReport {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl Swarm {
    /// Run `job` on every ready node and wait until each node's task ended (or the deadline
    /// passed: the nodes still at it, or that never got a task, are named as failed).
    pub async fn run_job(&self, job: &Job<'_>) -> anyhow::Result<JobReport> {
        check_service_name(job.name)?;
        check_image_ref(job.image)?;
        let nodes = self.ready_nodes().await?;
        let spec = job_spec(job);
        self.docker
            .client
            .create_service(spec, None)
            .await
            .with_context(|| format!("creating the job {} on the manager", job.name))?;
        let report = self.follow_job(job, &nodes).await;
        let removed = self.docker.client.delete_service(job.name).await;
        if let Err(e) = removed {
            tracing::warn!(job = job.name, error = %e, "removing a finished job failed");
        }
        report
    }

    /// The ready, active nodes: (id, name).
    async fn ready_nodes(&self) -> anyhow::Result<Vec<(String, String)>> {
        let nodes = self
            .docker
            .client
            .list_nodes(None::<ListNodesOptions>)
            .await
            .context("listing the swarm's nodes")?;
        Ok(nodes
            .into_iter()
            .filter(|n| {
                let ready = n.status.as_ref().and_then(|s| s.state)
                    == Some(bollard::models::NodeState::READY);
                let active = n.spec.as_ref().and_then(|s| s.availability)
                    == Some(bollard::models::NodeSpecAvailabilityEnum::ACTIVE);
                ready && active
            })
            .filter_map(|n| {
                let host = n.description?.hostname?;
                Some((n.id?, host))
            })
            .collect())
    }

    async fn follow_job(
        &self,
        job: &Job<'_>,
        nodes: &[(String, String)],
    ) -> anyhow::Result<JobReport> {
        let began = std::time::Instant::now();
        loop {
            let tasks = self.tasks_of(job.name).await?;
            let task_of = |node: &str| {
                tasks
                    .iter()
                    .filter(|t| t.node_id.as_deref() == Some(node))
                    .max_by_key(|t| {
                        t.status
                            .as_ref()
                            .and_then(|s| s.timestamp.clone())
                            .map(|t| t.to_string())
                    })
            };
            let ended = |t: &bollard::models::Task| {
                matches!(
                    t.status.as_ref().and_then(|s| s.state),
                    Some(TaskState::COMPLETE | TaskState::FAILED | TaskState::REJECTED)
                        | Some(TaskState::SHUTDOWN | TaskState::ORPHANED | TaskState::REMOVE)
                )
            };
            let all_ended = nodes.iter().all(|(id, _)| task_of(id).is_some_and(ended));
            let late = began.elapsed() >= job.deadline;
            if all_ended || late {
                let mut report = JobReport {
                    lines: Vec::new(),
                    failed: Vec::new(),
                };
                for (id, name) in nodes {
                    let task = task_of(id);
                    let status = task.and_then(|t| t.status.clone());
                    let state = status
                        .as_ref()
                        .and_then(|s| s.state)
                        .map_or("no task".to_string(), |s| s.to_string());
                    let error = status.and_then(|s| s.err).unwrap_or_default();
                    if state != "complete" {
                        report.failed.push(name.clone());
                    }
                    let said = match task.and_then(|t| t.id.as_deref()) {
                        Some(task) => self.task_output(task).await,
                        None => String::new(),
                    };
                    let mut line = format!("{name}: {state}");
                    for part in [error.as_str(), said.trim()] {
                        if !part.is_empty() {
                            line.push_str(&format!(": {part}"));
                        }
                    }
                    if late && state != "complete" {
                        line.push_str(&format!(" (not done within {:?})", job.deadline));
                    }
                    report.lines.push(line);
                }
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// What a job's task printed (best effort: empty when its logs cannot be read).
    async fn task_output(&self, task: &str) -> String {
        use futures_util::StreamExt as _;
        let options = bollard::query_parameters::LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .build();
        let mut out = String::new();
        let mut stream = self.docker.client.task_logs(task, Some(options));
        let read = async {
            while let Some(Ok(item)) = stream.next().await {
                out.push_str(String::from_utf8_lossy(&item.into_bytes()).trim_end());
                out.push(' ');
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
        out
    }
}

/// A global job's spec: host network (fetches reach the origin as the node does), root in
/// the task (the code directory is root's), no restart (a failure is final and reported).
fn job_spec(job: &Job<'_>) -> ServiceSpec {
    use bollard::models::{
        Mount, MountType, NetworkAttachmentConfig, ServiceSpecMode, TaskSpec,
        TaskSpecContainerSpec, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
    };
    let mounts = job
        .mounts
        .iter()
        .map(|(source, target, read_only)| Mount {
            source: Some(source.clone()),
            target: Some(target.clone()),
            typ: Some(MountType::BIND),
            read_only: Some(*read_only),
            ..Default::default()
        })
        .collect();
    ServiceSpec {
        name: Some(job.name.to_string()),
        labels: Some(HashMap::from([(
            "dockhand.job".to_string(),
            "1".to_string(),
        )])),
        mode: Some(ServiceSpecMode {
            global_job: Some(HashMap::new()),
            ..Default::default()
        }),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(job.image.to_string()),
                args: Some(job.args.clone()),
                user: Some("0".into()),
                mounts: Some(mounts),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some("host".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
