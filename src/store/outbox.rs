//! The notification outbox: the statuses deploys entered (`deploy_transitions`, written by
//! triggers in the same transaction as each change), how far each receiver has read them, and
//! the rendered messages waiting to be sent, each kept until it is delivered or given up.

use sqlx::{Connection as _, FromRow};

use super::{now_ms, Store};

/// A status a deploy entered (or `planned`: its path was chosen).
#[derive(Debug, Clone, FromRow)]
pub struct Transition {
    pub id: i64,
    pub deploy_id: i64,
    pub status: String,
    pub at: i64,
}

/// A message for a receiver, rendered once.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub transition_id: i64,
    pub app: String,
    pub deploy_id: i64,
    pub event: &'static str,
    pub body: Vec<u8>,
}

/// A message not yet delivered nor given up.
#[derive(Debug, Clone, FromRow)]
pub struct Message {
    pub id: i64,
    pub deploy_id: i64,
    pub event: String,
    pub body: Vec<u8>,
    pub attempts: i64,
    pub next_at: i64,
    /// An attempt started and recorded no outcome (cut off by a crash or a restart): the
    /// receiver may have acted on it already.
    pub begun: bool,
}

/// A message as the API shows it: to whom, about what, how it went.
#[derive(Debug, Clone, FromRow)]
pub struct SentMessage {
    pub id: i64,
    pub receiver: String,
    pub deploy_id: i64,
    pub event: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub next_at: i64,
    pub delivered_at: Option<i64>,
    pub gave_up_at: Option<i64>,
}

impl Store {
    /// `app`'s newest `limit` messages, to every receiver, newest first.
    pub async fn messages_for_app(
        &self,
        app: &str,
        limit: u32,
    ) -> anyhow::Result<Vec<SentMessage>> {
        Ok(sqlx::query_as(
            "SELECT id, receiver, deploy_id, event, attempts, last_error, created_at, next_at,
                    delivered_at, gave_up_at
             FROM outbox WHERE app = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(app)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Where `receiver` reads transitions from: its cursor, or — heard of for the first time —
    /// the newest transition now (a new receiver is not sent the history before it).
    pub async fn notify_cursor(&self, receiver: &str) -> anyhow::Result<i64> {
        let mut conn = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO notify_cursors (receiver, transition_id)
             SELECT ?, COALESCE(MAX(id), 0) FROM deploy_transitions WHERE true
             ON CONFLICT (receiver) DO NOTHING",
        )
        .bind(receiver)
        .execute(&mut *conn)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT transition_id FROM notify_cursors WHERE receiver = ?")
                .bind(receiver)
                .fetch_one(&mut *conn)
                .await?,
        )
    }

    /// Up to `limit` transitions after `cursor`, oldest first.
    pub async fn transitions_after(
        &self,
        cursor: i64,
        limit: u32,
    ) -> anyhow::Result<Vec<Transition>> {
        Ok(sqlx::query_as(
            "SELECT id, deploy_id, status, at FROM deploy_transitions WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(cursor)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Queue `messages` for `receiver` and move its cursor to `cursor`, in one transaction: a
    /// crash between the two can neither lose a message nor queue one twice.
    pub async fn enqueue(
        &self,
        receiver: &str,
        cursor: i64,
        messages: &[NewMessage],
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        for m in messages {
            sqlx::query(
                "INSERT INTO outbox (receiver, transition_id, app, deploy_id, event, body, next_at, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (receiver, transition_id) DO NOTHING",
            )
            .bind(receiver)
            .bind(m.transition_id)
            .bind(&m.app)
            .bind(m.deploy_id)
            .bind(m.event)
            .bind(&m.body)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE notify_cursors SET transition_id = ? WHERE receiver = ?")
            .bind(cursor)
            .bind(receiver)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// `receiver`'s oldest message still to send (messages go out in order).
    pub async fn next_message(&self, receiver: &str) -> anyhow::Result<Option<Message>> {
        Ok(sqlx::query_as(
            "SELECT id, deploy_id, event, body, attempts, next_at, begun FROM outbox
             WHERE receiver = ? AND delivered_at IS NULL AND gave_up_at IS NULL
             ORDER BY id LIMIT 1",
        )
        .bind(receiver)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// How many messages `receiver` still has to send.
    pub async fn pending_messages(&self, receiver: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox
             WHERE receiver = ? AND delivered_at IS NULL AND gave_up_at IS NULL",
        )
        .bind(receiver)
        .fetch_one(&self.pool)
        .await?)
    }

    /// An attempt at message `id` starts: until its outcome is recorded, a restart finds it
    /// [`Message::begun`].
    pub async fn message_begun(&self, id: i64) -> anyhow::Result<()> {
        sqlx::query("UPDATE outbox SET begun = 1 WHERE id = ?")
            .bind(id)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(())
    }

    /// The receiver took message `id` on attempt `attempts`.
    pub async fn message_delivered(&self, id: i64, attempts: i64) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE outbox SET delivered_at = ?, attempts = ?, last_error = NULL, begun = 0 WHERE id = ?",
        )
        .bind(now_ms())
        .bind(attempts)
        .bind(id)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(())
    }

    /// Attempt `attempts` of message `id` failed with `error`: try again at `next_at`, or —
    /// `next_at` is `None` — never (given up).
    pub async fn message_failed(
        &self,
        id: i64,
        attempts: i64,
        error: &str,
        next_at: Option<i64>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE outbox SET attempts = ?, last_error = ?, next_at = COALESCE(?, next_at), begun = 0,
                    gave_up_at = CASE WHEN ? IS NULL THEN ? END
             WHERE id = ?",
        )
        .bind(attempts)
        .bind(error)
        .bind(next_at)
        .bind(next_at)
        .bind(now)
        .bind(id)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(())
    }

    /// Sent or given-up messages created before `cutoff` (unix ms) are deleted.
    pub(super) async fn prune_outbox(&self, cutoff: i64) -> anyhow::Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM outbox WHERE created_at < ?
               AND (delivered_at IS NOT NULL OR gave_up_at IS NOT NULL)",
        )
        .bind(cutoff)
        .execute(&mut *self.writer.lock().await)
        .await?
        .rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeployPath, DeployStatus, NewApiDeploy};

    #[tokio::test]
    async fn every_status_a_deploy_enters_and_its_plan_are_recorded_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("d.db")).await.unwrap();
        let cursor = store.notify_cursor("ops").await.unwrap();
        let id = store
            .queue_api_deploy(&NewApiDeploy::manual("web", &"a".repeat(40)))
            .await
            .unwrap();
        store.start_deploy(id, None).await.unwrap();
        let sha = "b".repeat(40).parse().unwrap();
        store
            .plan_deploy(id, sha, DeployPath::Fast, "why", "Fix it")
            .await
            .unwrap();
        store
            .finish_deploy(id, DeployStatus::Failed, None, Some("boom"))
            .await
            .unwrap();
        let seen: Vec<String> = store
            .transitions_after(cursor, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.status)
            .collect();
        assert_eq!(seen, ["queued", "running", "planned", "failed"]);
        let deploy = store.deploy(id).await.unwrap().unwrap();
        assert_eq!(deploy.subject.as_deref(), Some("Fix it"));
    }

    #[tokio::test]
    async fn a_new_receiver_starts_after_the_history_and_a_queued_message_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("d.db")).await.unwrap();
        store
            .queue_api_deploy(&NewApiDeploy::manual("web", &"a".repeat(40)))
            .await
            .unwrap();
        let cursor = store.notify_cursor("late").await.unwrap();
        assert!(store
            .transitions_after(cursor, 10)
            .await
            .unwrap()
            .is_empty());

        let message = NewMessage {
            transition_id: 7,
            app: "web".into(),
            deploy_id: 1,
            event: "failed",
            body: b"{}".to_vec(),
        };
        store
            .enqueue("late", 7, std::slice::from_ref(&message))
            .await
            .unwrap();
        store.enqueue("late", 7, &[message]).await.unwrap();
        assert_eq!(store.pending_messages("late").await.unwrap(), 1);
        assert_eq!(store.notify_cursor("late").await.unwrap(), 7);
        let next = store.next_message("late").await.unwrap().unwrap();
        store.message_failed(next.id, 1, "500", None).await.unwrap();
        assert_eq!(store.pending_messages("late").await.unwrap(), 0);
    }
}
