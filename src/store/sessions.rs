//! Dashboard sessions, kept as the SHA-256 of their cookie value with the token's name and an
//! expiry. Expired rows are never honoured, and are pruned at each sign-in.

use super::{now_ms, Store};

impl Store {
    /// Record a session for token `token_name`, valid for `ttl_ms`; expired sessions go first.
    pub async fn create_session(
        &self,
        digest: &[u8; 32],
        token_name: &str,
        ttl_ms: i64,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let mut writer = self.writer.lock().await;
        sqlx::query("DELETE FROM sessions WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *writer)
            .await?;
        sqlx::query(
            "INSERT INTO sessions (digest, token_name, created_at, expires_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&digest[..])
        .bind(token_name)
        .bind(now)
        .bind(now.saturating_add(ttl_ms))
        .execute(&mut *writer)
        .await?;
        Ok(())
    }

    /// The token name of the unexpired session with this digest.
    pub async fn session(&self, digest: &[u8; 32]) -> anyhow::Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT token_name FROM sessions WHERE digest = ? AND expires_at > ?",
        )
        .bind(&digest[..])
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// End a session (sign-out); whether there was one.
    pub async fn delete_session(&self, digest: &[u8; 32]) -> anyhow::Result<bool> {
        let done = sqlx::query("DELETE FROM sessions WHERE digest = ?")
            .bind(&digest[..])
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
