//! A deploy's steps: one row per stage, opened when it starts and closed with its output.

use sqlx::FromRow;

use super::events::DeployEvent;
use super::{now_ms, Store};

/// Longest step output kept; the tail beyond it is cut with a marker.
const MAX_STEP_OUTPUT: usize = 64 * 1024;

/// What a deploy step did: the closed set of stage names its row (`deploy_steps.stage`), the
/// API, the events and the CLI show. Stored by its kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(rename_all = "kebab-case")]
pub enum StepStage {
    /// Fetching the origin (recorded on each deploy of the batch that fetched once).
    Fetch,
    /// Diffing the target against the deployed commit.
    Plan,
    /// A hook ran (its stage in the name: `hook:pre-deploy`, …).
    #[sqlx(rename = "hook:pre-deploy")]
    HookPreDeploy,
    /// Pulling the image of a full deploy (or a rollback's recorded digest).
    Pull,
    /// A copy of the new commit for a trial container to run from.
    Stage,
    /// Releases layout: the next release written ahead, switched to later.
    Build,
    /// Writing the changed files into the tree (or switching the release).
    Sync,
    Reload,
    /// Holding new requests at the proxy while the app reloads.
    Hold,
    /// The fast path's health check after the reload.
    Check,
    /// Checking the previous commit again after a revert.
    Verify,
    /// Watching the new version for a while after it went live.
    Watch,
    /// Putting the deployed commit back into the tree.
    Restore,
    /// Starting the new container, then waiting until it is healthy.
    Start,
    Health,
    /// A trial container on the new tree (releases layout), then its health.
    Trial,
    TrialHealth,
    PauseOld,
    StopOld,
    /// Pointing the proxy at another upstream.
    Switch,
    /// Waiting for requests still open on the old upstream.
    Drain,
    /// Stopping and removing the old container.
    Retire,
    /// Undoing a failed replacement.
    StopNew,
    ResumeOld,
    RestartOld,
    #[sqlx(rename = "hook:post-deploy")]
    HookPostDeploy,
    #[sqlx(rename = "hook:on-failure")]
    HookOnFailure,
    #[sqlx(rename = "hook:post-rollback")]
    HookPostRollback,
    /// Startup recovery of an interrupted deploy.
    Recover,
    PruneImages,
    PruneReleases,
    /// A Swarm service updated to the new image and followed until its tasks converged (or
    /// the manager rolled it back).
    Rollout,
}

impl StepStage {
    /// The name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStage::Fetch => "fetch",
            StepStage::Plan => "plan",
            StepStage::HookPreDeploy => "hook:pre-deploy",
            StepStage::Pull => "pull",
            StepStage::Stage => "stage",
            StepStage::Build => "build",
            StepStage::Sync => "sync",
            StepStage::Reload => "reload",
            StepStage::Hold => "hold",
            StepStage::Check => "check",
            StepStage::Verify => "verify",
            StepStage::Watch => "watch",
            StepStage::Restore => "restore",
            StepStage::Start => "start",
            StepStage::Health => "health",
            StepStage::Trial => "trial",
            StepStage::TrialHealth => "trial-health",
            StepStage::PauseOld => "pause-old",
            StepStage::StopOld => "stop-old",
            StepStage::Switch => "switch",
            StepStage::Drain => "drain",
            StepStage::Retire => "retire",
            StepStage::StopNew => "stop-new",
            StepStage::ResumeOld => "resume-old",
            StepStage::RestartOld => "restart-old",
            StepStage::HookPostDeploy => "hook:post-deploy",
            StepStage::HookOnFailure => "hook:on-failure",
            StepStage::HookPostRollback => "hook:post-rollback",
            StepStage::Recover => "recover",
            StepStage::PruneImages => "prune-images",
            StepStage::PruneReleases => "prune-releases",
            StepStage::Rollout => "rollout",
        }
    }
}

impl std::fmt::Display for StepStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `deploy_steps` (the API shows it as `api::StepView`).
#[derive(Debug, Clone, FromRow)]
pub struct Step {
    pub id: i64,
    pub stage: StepStage,
    pub detail: Option<String>,
    pub output: Option<String>,
    pub ok: Option<bool>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

impl Store {
    /// The steps of a deploy, in order.
    pub async fn steps(&self, deploy_id: i64) -> anyhow::Result<Vec<Step>> {
        Ok(sqlx::query_as(
            "SELECT id, stage, detail, output, ok, started_at, finished_at FROM deploy_steps WHERE deploy_id = ? ORDER BY id",
        )
        .bind(deploy_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Open a step; returns its id for [`Store::end_step`].
    pub async fn begin_step(
        &self,
        deploy_id: i64,
        stage: StepStage,
        detail: &str,
    ) -> anyhow::Result<i64> {
        let at = now_ms();
        let step = sqlx::query_scalar(
            "INSERT INTO deploy_steps (deploy_id, stage, detail, started_at) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(deploy_id)
        .bind(stage)
        .bind(detail)
        .bind(at)
        .fetch_one(&mut *self.writer.lock().await)
        .await?;
        self.publish(DeployEvent::StepStarted {
            deploy_id,
            step,
            stage,
            detail: Some(detail.to_string()),
            at,
        });
        Ok(step)
    }

    /// Record a step that already ran (work done before the deploy it belongs to was known).
    pub async fn record_step(
        &self,
        deploy_id: i64,
        stage: StepStage,
        detail: &str,
        ran: (i64, i64),
        ok: bool,
        output: &str,
    ) -> anyhow::Result<()> {
        let output = truncate_output(output);
        let step = sqlx::query_scalar(
            "INSERT INTO deploy_steps (deploy_id, stage, detail, output, ok, started_at, finished_at)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(deploy_id)
        .bind(stage)
        .bind(detail)
        .bind(output.as_ref())
        .bind(ok)
        .bind(ran.0)
        .bind(ran.1)
        .fetch_one(&mut *self.writer.lock().await)
        .await?;
        self.publish(DeployEvent::StepStarted {
            deploy_id,
            step,
            stage,
            detail: Some(detail.to_string()),
            at: ran.0,
        });
        self.publish(DeployEvent::StepEnded {
            deploy_id,
            step,
            stage,
            ok,
            output: output.into_owned(),
            at: ran.1,
        });
        Ok(())
    }

    /// Close a step with its outcome and output (cut at 64 KiB).
    pub async fn end_step(&self, step_id: i64, ok: bool, output: &str) -> anyhow::Result<()> {
        let output = truncate_output(output);
        let at = now_ms();
        let (deploy_id, stage): (i64, StepStage) = sqlx::query_as(
            "UPDATE deploy_steps SET ok = ?, output = ?, finished_at = ? WHERE id = ?
             RETURNING deploy_id, stage",
        )
        .bind(ok)
        .bind(output.as_ref())
        .bind(at)
        .bind(step_id)
        .fetch_one(&mut *self.writer.lock().await)
        .await?;
        self.publish(DeployEvent::StepEnded {
            deploy_id,
            step: step_id,
            stage,
            ok,
            output: output.into_owned(),
            at,
        });
        Ok(())
    }
}

fn truncate_output(output: &str) -> std::borrow::Cow<'_, str> {
    if output.len() <= MAX_STEP_OUTPUT {
        return output.into();
    }
    let mut cut = MAX_STEP_OUTPUT;
    while !output.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}\n… ({} more bytes cut)",
        &output[..cut],
        output.len() - cut
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeployPath, NewApiDeploy};

    const EVERY_STAGE: [StepStage; 31] = [
        StepStage::Fetch,
        StepStage::Plan,
        StepStage::HookPreDeploy,
        StepStage::Pull,
        StepStage::Stage,
        StepStage::Build,
        StepStage::Sync,
        StepStage::Reload,
        StepStage::Hold,
        StepStage::Check,
        StepStage::Verify,
        StepStage::Watch,
        StepStage::Restore,
        StepStage::Start,
        StepStage::Health,
        StepStage::Trial,
        StepStage::TrialHealth,
        StepStage::PauseOld,
        StepStage::StopOld,
        StepStage::Switch,
        StepStage::Drain,
        StepStage::Retire,
        StepStage::StopNew,
        StepStage::ResumeOld,
        StepStage::RestartOld,
        StepStage::HookPostDeploy,
        StepStage::HookOnFailure,
        StepStage::HookPostRollback,
        StepStage::Recover,
        StepStage::PruneImages,
        StepStage::PruneReleases,
    ];

    #[tokio::test]
    async fn every_stage_and_path_is_stored_by_the_name_the_api_shows_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("dockhand.db")).await.unwrap();
        let id = store
            .queue_api_deploy(&NewApiDeploy {
                path: Some(DeployPath::Full),
                ..NewApiDeploy::manual("web", &"a".repeat(40))
            })
            .await
            .unwrap();
        for stage in EVERY_STAGE {
            let step = store.begin_step(id, stage, "detail").await.unwrap();
            store.end_step(step, true, "").await.unwrap();
        }
        let read: Vec<StepStage> = store
            .steps(id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.stage)
            .collect();
        assert_eq!(read, EVERY_STAGE);
        // The text in the column is the name the API, the events and the CLI show.
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT stage FROM deploy_steps WHERE deploy_id = ? ORDER BY id")
                .bind(id)
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let shown: Vec<&str> = EVERY_STAGE.iter().map(|s| s.as_str()).collect();
        assert_eq!(stored, shown);

        store
            .plan_deploy(
                id,
                "a".repeat(40).parse().unwrap(),
                DeployPath::Fast,
                "why",
                "subject",
            )
            .await
            .unwrap();
        let deploy = store.deploy(id).await.unwrap().unwrap();
        assert_eq!(
            (deploy.path, deploy.requested_path),
            (Some(DeployPath::Fast), Some(DeployPath::Full))
        );
        let paths: (String, String) =
            sqlx::query_as("SELECT path, requested_path FROM deploys WHERE id = ?")
                .bind(id)
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(paths, ("fast".to_string(), "full".to_string()));
    }
}
