//! SQLite persistence: deliveries, deploys, their steps, and each app's deployed commit.
//!
//! One file under the state directory, WAL mode, migrations from `migrations/` embedded in the
//! binary and run at open. Every write that an HTTP answer promises is committed before the
//! answer is sent.

mod batch;
mod deliveries;
mod deploys;
mod events;
mod locks;
mod prune;

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use deliveries::{Delivery, DeliveryOutcome, NewDelivery, NewPushDeploy};
pub use deploys::{
    is_terminal, AppState, Deploy, DeployStatus, LiveContainer, NewApiDeploy, Step, Trigger,
};
pub use events::DeployEvent;
pub use locks::AppLock;
pub use prune::Pruned;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Readers (WAL lets them run beside the writer).
    pool: SqlitePool,
    /// The one connection that writes. SQLite takes one writer at a time anyway; several
    /// writing connections only collide and sleep in the busy handler (whole milliseconds).
    writer: SqlitePool,
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
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening database {}", path.display()))?;
        sqlx::migrate!("./migrations")
            .run(&writer)
            .await
            .context("running database migrations")?;
        let pool = SqlitePoolOptions::new()
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
