//! The GitHub deployment of each deploy (`[apps.github]`): its id at GitHub, from the create
//! call's answer, and the last state posted to it, so a retried or restarted send resumes where
//! it stopped.

use sqlx::FromRow;

use super::{now_ms, Store};

/// A deploy's deployment at GitHub.
#[derive(Debug, Clone, FromRow)]
pub struct GithubDeployment {
    pub deploy_id: i64,
    pub github_id: i64,
    /// The last deployment status posted; `None` before the first.
    pub state: Option<String>,
}

impl Store {
    /// The GitHub deployment created for `deploy_id`, if one was.
    pub async fn github_deployment(
        &self,
        deploy_id: i64,
    ) -> anyhow::Result<Option<GithubDeployment>> {
        Ok(sqlx::query_as(
            "SELECT deploy_id, github_id, state FROM github_deployments WHERE deploy_id = ?",
        )
        .bind(deploy_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// GitHub created deployment `github_id` for `deploy_id`.
    pub async fn record_github_deployment(
        &self,
        deploy_id: i64,
        app: &str,
        environment: &str,
        github_id: i64,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO github_deployments (deploy_id, app, environment, github_id, created_at)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (deploy_id) DO UPDATE SET github_id = excluded.github_id",
        )
        .bind(deploy_id)
        .bind(app)
        .bind(environment)
        .bind(github_id)
        .bind(now_ms())
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(())
    }

    /// `state` was posted to `deploy_id`'s GitHub deployment.
    pub async fn github_state(&self, deploy_id: i64, state: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE github_deployments SET state = ? WHERE deploy_id = ?")
            .bind(state)
            .bind(deploy_id)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(())
    }

    /// The deployments of `app` in `environment`, other than `deploy_id`'s, still shown as
    /// `success`: the ones a succeeding deploy replaces.
    pub async fn github_replaced(
        &self,
        app: &str,
        environment: &str,
        deploy_id: i64,
    ) -> anyhow::Result<Vec<GithubDeployment>> {
        Ok(sqlx::query_as(
            "SELECT deploy_id, github_id, state FROM github_deployments
             WHERE app = ? AND environment = ? AND deploy_id != ? AND state = 'success'
             ORDER BY deploy_id",
        )
        .bind(app)
        .bind(environment)
        .bind(deploy_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records created before `cutoff` (unix ms) that no longer show as `success` are deleted.
    pub(super) async fn prune_github(&self, cutoff: i64) -> anyhow::Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM github_deployments WHERE created_at < ? AND state IS NOT 'success'",
        )
        .bind(cutoff)
        .execute(&mut *self.writer.lock().await)
        .await?
        .rows_affected())
    }
}
