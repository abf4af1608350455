//! SQLite persistence: deliveries, deploys, their steps, and each app's deployed commit.
//!
//! One file under the state directory, WAL mode, migrations from `migrations/` embedded in the
//! binary and run at open. Every write that an HTTP answer promises is committed before the
//! answer is sent.

mod batch;
mod deliveries;
mod deploys;
mod events;
mod github;
mod locks;
mod maintenance;
mod outbox;
mod poll;
mod prune;
mod sessions;
mod stats;
mod steps;
mod writer;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::ConnectOptions;

use writer::Writer;

pub use deliveries::{Delivery, DeliveryOutcome, LedgerEntry, NewDelivery, NewPushDeploy};
pub use deploys::{
    AppState, Deploy, DeployFilter, DeployPath, DeployStatus, LiveContainer, NewApiDeploy, Trigger,
};
pub use events::DeployEvent;
pub use github::GithubDeployment;
pub use locks::AppLock;
pub use maintenance::Maintenance;
pub use outbox::{Message, NewMessage, SentMessage, Transition};
pub use poll::{Attempt, TipHistory};
pub use prune::Pruned;
pub use steps::{Step, StepStage};

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Readers (WAL lets them run beside the writer).
    pool: SqlitePool,
    /// The one connection that writes. SQLite takes one writer at a time anyway; several
    /// writing connections only collide and sleep in the busy handler (whole milliseconds).
    writer: Writer,
    /// Group-commits deliveries that queue no deploy.
    batcher: batch::Batcher,
    /// Live deploy events, published after each commit.
    events: events::Events,
}

impl Store {
    /// Open (creating if missing) the database at `path` and bring its schema up to date.
    pub async fn open(path: &Path) -> anyhow::Result<Store> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a committed transaction survives a crash of dockhand (SIGKILL); only
            // an OS crash or power loss can lose the last few. FULL would fsync every delivery.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // sqlx pings a pooled connection before every acquire by default: one more round trip to
        // SQLite's worker thread per query, which a file on this host never needs (a broken
        // file fails the query itself).
        let mut writer = options
            .connect()
            .await
            .with_context(|| format!("opening database {}", path.display()))?;
        sqlx::migrate!("./migrations")
            .run(&mut writer)
            .await
            .context("running database migrations")?;
        let writer = Writer::new(writer);
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .with_context(|| format!("opening database {}", path.display()))?;
        let batcher = batch::Batcher::spawn(writer.clone());
        Ok(Store {
            pool,
            writer,
            batcher,
            events: events::Events::new(),
        })
    }

    /// A cheap query proving the database answers (for `/healthz`).
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Now, in unix milliseconds: the unit of every `*_at` column.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Render a unix-milliseconds column as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database as 0001 and 0002 left it, with history whose rows refer to each other.
    async fn database_before_0003(path: &Path) {
        let dir = tempfile::tempdir().unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        for name in ["0001_core.sql", "0002_containers.sql"] {
            std::fs::copy(source.join(name), dir.path().join(name)).unwrap();
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .unwrap()
            .filename(path)
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(dir.path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for sql in [
            "INSERT INTO deliveries (id, delivery, event, outcome, received_at) VALUES (1, 'd1', 'push', 'deploy', 1)",
            // As latest-wins leaves them: a deploy superseded by a newer one (a higher id).
            "INSERT INTO deploys (id, app, trigger, status, created_at) VALUES (1, 'web', 'push', 'queued', 1)",
            "INSERT INTO deploys (id, app, delivery_id, trigger, actor, status, created_at, to_commit, path, image, digest)
             VALUES (2, 'web', 1, 'push', 'octocat', 'succeeded', 2, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'full', 'r/web:v1', 'r/web@sha256:aa')",
            "UPDATE deploys SET status = 'superseded', superseded_by = 2 WHERE id = 1",
            "INSERT INTO deploy_steps (deploy_id, stage, output, ok, started_at) VALUES (2, 'fetch', 'out', 1, 1)",
            "INSERT INTO app_state (app, commit_sha, deploy_id, updated_at, digest) VALUES ('web', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 2, 1, 'r/web@sha256:aa')",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }

    #[tokio::test]
    async fn migration_0003_rebuilds_deploys_keeping_every_row_column_and_reference() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dockhand.db");
        database_before_0003(&path).await;

        let store = Store::open(&path).await.unwrap();
        let good = store.deploy(2).await.unwrap().unwrap();
        assert_eq!(
            (
                good.actor.as_deref(),
                good.digest.as_deref(),
                good.delivery_id
            ),
            (Some("octocat"), Some("r/web@sha256:aa"), Some(1))
        );
        assert_eq!(
            store.deploy(1).await.unwrap().unwrap().superseded_by,
            Some(2)
        );
        assert_eq!(store.steps(2).await.unwrap().len(), 1);
        assert_eq!(store.app_state("web").await.unwrap().unwrap().deploy_id, 2);
        let violations: Vec<(String, i64)> =
            sqlx::query_as("SELECT \"table\", rowid FROM pragma_foreign_key_check")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert!(violations.is_empty(), "{violations:?}");

        // The new status and columns are usable, and foreign keys are enforced again.
        store.lock_app("web", "testing", "admin").await.unwrap();
        let new = NewDelivery {
            delivery: "d2",
            hook_id: "",
            event: "push",
            repository: None,
            git_ref: Some("refs/heads/main"),
            after_sha: Some("bbbb"),
            outcome: DeliveryOutcome::Deploy,
            reason: None,
        };
        let push = NewPushDeploy {
            app: "web",
            git_ref: "refs/heads/main",
            requested_sha: "bbbb",
            forced: false,
            actor: None,
        };
        let recorded = store.record_delivery(&new, &[push]).await.unwrap().unwrap();
        assert_eq!(recorded.locked.len(), 1);
        let held = store.deploy(recorded.locked[0]).await.unwrap().unwrap();
        assert_eq!(held.status, DeployStatus::Locked);
        assert!(sqlx::query(
            "INSERT INTO deploy_steps (deploy_id, stage, started_at) VALUES (999, 'x', 1)"
        )
        .execute(&mut *store.writer.lock().await)
        .await
        .is_err());
    }
}
