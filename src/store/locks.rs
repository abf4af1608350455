//! App locks: while an app is locked, pushes are recorded as `locked` deploys and not run.

use sqlx::FromRow;

use super::{now_ms, Store};

/// Who locked an app, when and why.
#[derive(Debug, Clone, FromRow)]
pub struct AppLock {
    pub app: String,
    pub reason: String,
    pub locked_by: String,
    pub locked_at: i64,
}

impl Store {
    /// The lock on an app, if any.
    pub async fn lock(&self, app: &str) -> anyhow::Result<Option<AppLock>> {
        Ok(
            sqlx::query_as("SELECT app, reason, locked_by, locked_at FROM app_locks WHERE app = ?")
                .bind(app)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Lock an app unless it is locked already; returns the lock in force (the existing one
    /// wins: who locked it first and why stays visible).
    pub async fn lock_app(&self, app: &str, reason: &str, by: &str) -> anyhow::Result<AppLock> {
        Ok(sqlx::query_as(
            "INSERT INTO app_locks (app, reason, locked_by, locked_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (app) DO UPDATE SET app = app_locks.app
             RETURNING app, reason, locked_by, locked_at",
        )
        .bind(app)
        .bind(reason)
        .bind(by)
        .bind(now_ms())
        .fetch_one(&mut *self.writer.lock().await)
        .await?)
    }

    /// Remove an app's lock; returns the lock that was removed.
    pub async fn unlock_app(&self, app: &str) -> anyhow::Result<Option<AppLock>> {
        Ok(sqlx::query_as(
            "DELETE FROM app_locks WHERE app = ? RETURNING app, reason, locked_by, locked_at",
        )
        .bind(app)
        .fetch_optional(&mut *self.writer.lock().await)
        .await?)
    }
}
