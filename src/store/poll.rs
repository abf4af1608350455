//! What a poll asks the store: has a tracked tip been tried already, and queueing a poll deploy.

use super::{now_ms, Store};

/// Newest finished deploys of a commit a poll reads: enough to count the retries it allows.
const HISTORY: u32 = 16;

/// A deploy of app `?1` in flight for commit `?3` found at ref `?2`: queued or running and
/// naming or deploying the commit, or a queued push or poll of the ref (it deploys the ref's
/// tip when it runs).
const IN_FLIGHT: &str = "SELECT 1 FROM deploys
     WHERE app = ?1 AND status IN ('queued', 'running')
       AND (requested_sha = ?3 OR to_commit = ?3
            OR (status = 'queued' AND git_ref = ?2 AND trigger IN ('push', 'poll')))";

/// What the store knows about one commit of an app, for a poll that found it at a tracked ref.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TipHistory {
    /// A queued or running deploy will deploy it: one naming it, or a queued push or poll of
    /// the same ref (it deploys the ref's tip when it runs).
    pub in_flight: bool,
    /// The newest finished deploy that named or deployed this commit, if any.
    pub last: Option<Attempt>,
    /// How many of the newest finished deploys of it, in a row, failed at their fetch step.
    pub fetch_failures: u32,
}

/// A finished deploy of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub deploy_id: i64,
    pub status: String,
    /// Its fetch step ran and failed: the origin could not be read then.
    pub fetch_failed: bool,
}

impl Store {
    /// What the store knows about `commit` of `app`, found at `git_ref` of the origin. A
    /// deploy counts whatever its ref: a commit that any deploy named (`requested_sha`) or
    /// deployed (`to_commit`) has been tried.
    pub async fn tip_history(
        &self,
        app: &str,
        git_ref: &str,
        commit: &str,
    ) -> anyhow::Result<TipHistory> {
        let in_flight: bool = sqlx::query_scalar(&format!("SELECT EXISTS ({IN_FLIGHT})"))
            .bind(app)
            .bind(git_ref)
            .bind(commit)
            .fetch_one(&self.pool)
            .await?;
        let rows: Vec<(i64, String, bool)> = sqlx::query_as(
            "SELECT d.id, d.status,
                    EXISTS (SELECT 1 FROM deploy_steps s
                            WHERE s.deploy_id = d.id AND s.stage = 'fetch' AND s.ok = 0)
             FROM deploys d
             WHERE d.app = ?1 AND (d.requested_sha = ?2 OR d.to_commit = ?2)
               AND d.status NOT IN ('queued', 'running')
             ORDER BY d.id DESC LIMIT ?3",
        )
        .bind(app)
        .bind(commit)
        .bind(HISTORY)
        .fetch_all(&self.pool)
        .await?;
        let fetch_failures = rows.iter().take_while(|(_, _, failed)| *failed).count();
        Ok(TipHistory {
            in_flight,
            last: rows
                .into_iter()
                .next()
                .map(|(deploy_id, status, fetch_failed)| Attempt {
                    deploy_id,
                    status,
                    fetch_failed,
                }),
            fetch_failures: u32::try_from(fetch_failures).unwrap_or(u32::MAX),
        })
    }

    /// Persist a poll deploy of `git_ref` (found at `commit`) as `queued`; its id, or `None`
    /// — nothing recorded — when by now the app is locked, or `commit` is deployed or in flight
    /// (as [`TipHistory::in_flight`] says). Checked in the same statement as the insert, so a
    /// push recorded meanwhile is never deployed twice.
    pub async fn queue_poll_deploy(
        &self,
        app: &str,
        git_ref: &str,
        commit: &str,
        reason: &str,
    ) -> anyhow::Result<Option<i64>> {
        let sql = format!(
            "INSERT INTO deploys (app, trigger, git_ref, requested_sha, forced, reason, status, created_at)
             SELECT ?1, 'poll', ?2, ?3, 0, ?4, 'queued', ?5
             WHERE NOT EXISTS (SELECT 1 FROM app_locks WHERE app = ?1)
               AND NOT EXISTS (SELECT 1 FROM app_state WHERE app = ?1 AND commit_sha = ?3)
               AND NOT EXISTS ({IN_FLIGHT})
             RETURNING id"
        );
        Ok(sqlx::query_scalar(&sql)
            .bind(app)
            .bind(git_ref)
            .bind(commit)
            .bind(reason)
            .bind(now_ms())
            .fetch_optional(&mut *self.writer.lock().await)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StepStage;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const MAIN: &str = "refs/heads/main";

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("dockhand.db")).await.unwrap();
        (dir, store)
    }

    async fn failed_at_fetch(store: &Store, id: i64) {
        store
            .record_step(id, StepStage::Fetch, "main", (1, 2), false, "unreachable")
            .await
            .unwrap();
        store
            .finish_deploy(id, crate::store::DeployStatus::Failed, None, Some("x"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_poll_deploy_is_queued_unless_the_app_is_locked_or_the_commit_deployed_or_in_flight()
    {
        let (_dir, store) = store().await;
        assert_eq!(
            store.tip_history("web", MAIN, A).await.unwrap(),
            TipHistory::default()
        );
        let id = store
            .queue_poll_deploy("web", MAIN, A, "polled")
            .await
            .unwrap()
            .unwrap();
        let d = store.deploy(id).await.unwrap().unwrap();
        assert_eq!((d.trigger.as_str(), d.status.as_str()), ("poll", "queued"));
        assert!(d.follows_tip() && !d.asked_for());
        // Another commit of the same ref: the queued poll deploys the ref's tip anyway.
        let other = "b".repeat(40);
        assert!(
            store
                .tip_history("web", MAIN, &other)
                .await
                .unwrap()
                .in_flight
        );
        assert!(
            !store
                .tip_history("web", "refs/tags/v1", &other)
                .await
                .unwrap()
                .in_flight
        );

        // In flight (the queued poll of the ref): nothing more is queued, for any commit.
        let again = store.queue_poll_deploy("web", MAIN, &other, "polled");
        assert_eq!(again.await.unwrap(), None);
        store
            .succeed_deploy(id, "web", A.parse().unwrap(), None)
            .await
            .unwrap();
        // Deployed: not queued again.
        let again = store.queue_poll_deploy("web", MAIN, A, "polled");
        assert_eq!(again.await.unwrap(), None);
        store.lock_app("web", "testing", "admin").await.unwrap();
        let locked = store.queue_poll_deploy("web", MAIN, &other, "polled");
        assert_eq!(locked.await.unwrap(), None);
        assert_eq!(store.deploys_for_app("web", 10).await.unwrap().len(), 1);
        store.unlock_app("web").await.unwrap();
        let unlocked = store.queue_poll_deploy("web", MAIN, &other, "polled");
        assert!(unlocked.await.unwrap().is_some());
    }

    #[tokio::test]
    async fn fetch_failures_in_a_row_are_counted_from_the_newest_attempt() {
        let (_dir, store) = store().await;
        let first = store
            .queue_poll_deploy("web", MAIN, A, "polled")
            .await
            .unwrap()
            .unwrap();
        store
            .finish_deploy(first, crate::store::DeployStatus::Stale, None, None)
            .await
            .unwrap();
        for _ in 0..3 {
            let id = store
                .queue_poll_deploy("web", MAIN, A, "polled")
                .await
                .unwrap()
                .unwrap();
            failed_at_fetch(&store, id).await;
        }
        let history = store.tip_history("web", MAIN, A).await.unwrap();
        assert!(!history.in_flight);
        assert_eq!(history.fetch_failures, 3);
        let last = history.last.unwrap();
        assert_eq!((last.status.as_str(), last.fetch_failed), ("failed", true));
        // Another app's history is its own.
        assert_eq!(
            store.tip_history("api", MAIN, A).await.unwrap(),
            TipHistory::default()
        );
    }
}
