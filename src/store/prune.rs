//! Pruning old history, so a storm of deliveries cannot grow the database without bound.

use super::{now_ms, Store};

/// What one prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub deliveries: u64,
    pub deploys: u64,
}

impl Store {
    /// Delete history older than `retention_ms`: finished deploys (with their steps) beyond the
    /// newest `keep_per_app` of each app, and deliveries no remaining deploy points at. Never
    /// touches queued/running deploys or the deploy an app's `app_state` names.
    pub async fn prune(&self, retention_ms: i64, keep_per_app: u32) -> anyhow::Result<Pruned> {
        let cutoff = now_ms() - retention_ms;
        let mut tx = self.writer.begin().await?;
        let old_deploys = "SELECT d.id FROM deploys d
             WHERE d.created_at < ?1
               AND d.status NOT IN ('queued', 'running')
               AND d.id NOT IN (SELECT deploy_id FROM app_state)
               AND (SELECT COUNT(*) FROM deploys n WHERE n.app = d.app AND n.id > d.id) >= ?2";
        sqlx::query(&format!(
            "DELETE FROM deploy_steps WHERE deploy_id IN ({old_deploys})"
        ))
        .bind(cutoff)
        .bind(keep_per_app)
        .execute(&mut *tx)
        .await?;
        // Rows that will stay must not point at rows that go.
        for column in ["superseded_by", "rollback_of"] {
            sqlx::query(&format!(
                "UPDATE deploys SET {column} = NULL WHERE {column} IN ({old_deploys})"
            ))
            .bind(cutoff)
            .bind(keep_per_app)
            .execute(&mut *tx)
            .await?;
        }
        let deploys = sqlx::query(&format!("DELETE FROM deploys WHERE id IN ({old_deploys})"))
            .bind(cutoff)
            .bind(keep_per_app)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let deliveries = sqlx::query(
            "DELETE FROM deliveries
             WHERE received_at < ? AND id NOT IN (SELECT delivery_id FROM deploys WHERE delivery_id IS NOT NULL)",
        )
        .bind(cutoff)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Pruned {
            deliveries,
            deploys,
        })
    }
}
