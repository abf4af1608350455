//! A deploy's steps: one row per stage, opened when it starts and closed with its output.

use sqlx::FromRow;

use super::events::DeployEvent;
use super::{now_ms, Store};

/// Longest step output kept; the tail beyond it is cut with a marker.
const MAX_STEP_OUTPUT: usize = 64 * 1024;

/// One row of `deploy_steps` (the API shows it as `api::StepView`).
#[derive(Debug, Clone, FromRow)]
pub struct Step {
    pub id: i64,
    pub stage: String,
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
        stage: &str,
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
            stage: stage.to_string(),
            detail: Some(detail.to_string()),
            at,
        });
        Ok(step)
    }

    /// Record a step that already ran (work done before the deploy it belongs to was known).
    pub async fn record_step(
        &self,
        deploy_id: i64,
        stage: &str,
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
            stage: stage.to_string(),
            detail: Some(detail.to_string()),
            at: ran.0,
        });
        self.publish(DeployEvent::StepEnded {
            deploy_id,
            step,
            stage: stage.to_string(),
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
        let (deploy_id, stage): (i64, String) = sqlx::query_as(
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
