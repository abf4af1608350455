//! What the metrics read from the history: per app, how many deploys wait in the queue, and
//! when the last one succeeded (so a restart does not reset that gauge).

use super::Store;

impl Store {
    /// `(app, deploys queued)` for every app with at least one deploy waiting.
    pub async fn queued_by_app(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as(
                "SELECT app, COUNT(*) FROM deploys WHERE status = 'queued' GROUP BY app",
            )
            .fetch_all(&self.pool)
            .await?,
        )
    }

    /// `(app, unix ms)` of each app's newest succeeded deploy's end.
    pub async fn last_success_by_app(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT app, MAX(finished_at) FROM deploys
             WHERE status = 'succeeded' AND finished_at IS NOT NULL GROUP BY app",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
