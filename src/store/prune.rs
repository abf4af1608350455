//! Pruning old history, so a storm of deliveries cannot grow the database without bound.
//!
//! What to remove is read once, without the writer; it is then removed in small transactions,
//! so a webhook's write never waits behind more than one batch. A row once chosen stays
//! removable: newer deploys only push it further from the newest `keep_per_app`, and each batch
//! checks again that it is finished and not what an app's state names.

use sqlx::Connection as _;

use super::{now_ms, Store};

/// What one prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub deploys: u64,
}

/// Rows removed per transaction: each holds the single writer for a few milliseconds.
const BATCH: usize = 500;

/// The ids of a batch, bound as one JSON array (`json_each`), whatever its length.
fn json_ids(ids: &[i64]) -> String {
    serde_json::Value::from(ids).to_string()
}

impl Store {
    /// Delete history older than `retention_ms`: finished deploys (with their steps) beyond the
    /// newest `keep_per_app` of each app, and deliveries no remaining deploy points at. Never
    /// touches queued/running deploys or the deploy an app's `app_state` names.
    pub async fn prune(&self, retention_ms: i64, keep_per_app: u32) -> anyhow::Result<Pruned> {
        let cutoff = now_ms() - retention_ms;
        let old_deploys: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM (
                 SELECT id, created_at, status,
                        ROW_NUMBER() OVER (PARTITION BY app ORDER BY id DESC) AS newest_first
                 FROM deploys)
             WHERE newest_first > ?2 AND created_at < ?1
               AND status NOT IN ('queued', 'running')
               AND id NOT IN (SELECT deploy_id FROM app_state)
             ORDER BY id",
        )
        .bind(cutoff)
        .bind(keep_per_app)
        .fetch_all(&self.pool)
        .await?;
        let mut pruned = Pruned::default();
        for batch in old_deploys.chunks(BATCH) {
            pruned.deploys += self.prune_deploys(&json_ids(batch)).await?;
        }
        let old_deliveries: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM deliveries d
             WHERE received_at < ?
               AND NOT EXISTS (SELECT 1 FROM deploys WHERE delivery_id = d.id)
             ORDER BY id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        for batch in old_deliveries.chunks(BATCH) {
            pruned.deliveries += sqlx::query(
                "DELETE FROM deliveries
                 WHERE id IN (SELECT value FROM json_each(?))
                   AND NOT EXISTS (SELECT 1 FROM deploys WHERE delivery_id = deliveries.id)",
            )
            .bind(json_ids(batch))
            .execute(&mut *self.writer.lock().await)
            .await?
            .rows_affected();
        }
        self.prune_outbox(cutoff).await?;
        self.prune_github(cutoff).await?;
        Ok(pruned)
    }

    /// Remove one batch of deploys (a JSON array of ids) that are still removable, with their
    /// steps, in one transaction.
    async fn prune_deploys(&self, ids: &str) -> anyhow::Result<u64> {
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        let going: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM deploys
             WHERE id IN (SELECT value FROM json_each(?))
               AND status NOT IN ('queued', 'running')
               AND id NOT IN (SELECT deploy_id FROM app_state)",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let going = json_ids(&going);
        let set = "(SELECT value FROM json_each(?))";
        sqlx::query(&format!(
            "DELETE FROM deploy_steps WHERE deploy_id IN {set}"
        ))
        .bind(&going)
        .execute(&mut *tx)
        .await?;
        // Rows that will stay must not point at rows that go.
        for column in ["superseded_by", "rollback_of", "promoted_from"] {
            sqlx::query(&format!(
                "UPDATE deploys SET {column} = NULL WHERE {column} IN {set}"
            ))
            .bind(&going)
            .execute(&mut *tx)
            .await?;
        }
        let removed = sqlx::query(&format!("DELETE FROM deploys WHERE id IN {set}"))
            .bind(&going)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const APPS: i64 = 3;
    const PER_APP: i64 = 3_000;
    const KEEP: u32 = 10;

    async fn deploys(store: &Store) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM deploys")
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    /// Issue 12's defect 8: the prune ran a correlated count per row inside one writer
    /// transaction, so every webhook waited behind all of it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_during_a_long_prune_waits_for_one_batch_not_for_the_whole_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("dockhand.db")).await.unwrap();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
             INSERT INTO deploys (app, trigger, status, created_at, finished_at)
             SELECT 'app' || (i % ?), 'manual', 'succeeded', 1, 1 FROM n",
        )
        .bind(APPS * PER_APP)
        .bind(APPS)
        .execute(&mut *store.writer.lock().await)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO deploy_steps (deploy_id, stage, ok, started_at, finished_at)
             SELECT id, 'sync', 1, 1, 1 FROM deploys",
        )
        .execute(&mut *store.writer.lock().await)
        .await
        .unwrap();
        let all = deploys(&store).await;
        assert_eq!(all, APPS * PER_APP);

        let pruning = tokio::spawn({
            let store = store.clone();
            async move { store.prune(0, KEEP).await }
        });
        while deploys(&store).await == all && !pruning.is_finished() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // What a webhook does: one write. It gets in between two of the prune's batches.
        store.lock_app("app0", "testing", "ops").await.unwrap();
        let left_when_written = deploys(&store).await;
        let pruned = pruning.await.unwrap().unwrap();

        let kept = i64::from(KEEP) * APPS;
        assert_eq!(pruned.deploys, u64::try_from(all - kept).unwrap());
        assert!(
            left_when_written > kept,
            "the write waited until the whole prune was over ({left_when_written} deploys left)"
        );
        let newest_kept: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT app, COUNT(*), MIN(id) FROM deploys GROUP BY app ORDER BY app")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        for (i, (app, count, min_id)) in newest_kept.iter().enumerate() {
            assert_eq!(*count, i64::from(KEEP), "{app} keeps its newest {KEEP}");
            let i = i64::try_from(i).unwrap();
            // The app's ids are i+1, i+1+APPS, ...; its newest KEEP start here.
            assert_eq!(*min_id, i + 1 + APPS * (PER_APP - i64::from(KEEP)), "{app}");
        }
        let steps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deploy_steps")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(
            steps, kept,
            "the steps of the removed deploys went with them"
        );
    }
}
