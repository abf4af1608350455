//! The proxy's maintenance switch as last set over the API, so a restart keeps it.

use sqlx::FromRow;

use super::{now_ms, Store};

/// The maintenance switch of an app, and who set it when.
#[derive(Debug, Clone, FromRow)]
pub struct Maintenance {
    pub app: String,
    pub enabled: bool,
    pub changed_by: String,
    pub changed_at: i64,
}

impl Store {
    /// The switch as last set over the API, if ever.
    pub async fn maintenance(&self, app: &str) -> anyhow::Result<Option<Maintenance>> {
        Ok(sqlx::query_as(
            "SELECT app, enabled, changed_by, changed_at FROM app_maintenance WHERE app = ?",
        )
        .bind(app)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Record the switch; returns the stored row.
    pub async fn set_maintenance(
        &self,
        app: &str,
        enabled: bool,
        by: &str,
    ) -> anyhow::Result<Maintenance> {
        Ok(sqlx::query_as(
            "INSERT INTO app_maintenance (app, enabled, changed_by, changed_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (app) DO UPDATE SET enabled = excluded.enabled,
                 changed_by = excluded.changed_by, changed_at = excluded.changed_at
             RETURNING app, enabled, changed_by, changed_at",
        )
        .bind(app)
        .bind(enabled)
        .bind(by)
        .bind(now_ms())
        .fetch_one(&mut *self.writer.lock().await)
        .await?)
    }
}
