//! The one connection that writes.

use std::sync::Arc;

use sqlx::sqlite::SqliteConnection;
use tokio::sync::{Mutex, MutexGuard};

/// The database's one writing connection, held behind a lock rather than in a pool: a pool
/// pings each connection as it is returned, one more round trip to SQLite's worker thread
/// per write, and the next write waits for it. SQLite takes one writer at a time anyway.
/// Cheap to clone.
#[derive(Clone)]
pub(super) struct Writer(Arc<Mutex<SqliteConnection>>);

impl Writer {
    pub(super) fn new(conn: SqliteConnection) -> Writer {
        Writer(Arc::new(Mutex::new(conn)))
    }

    /// The connection, once no other write holds it; `&mut *` of it is an executor, and
    /// `sqlx::Connection::begin` on it a transaction.
    pub(super) async fn lock(&self) -> MutexGuard<'_, SqliteConnection> {
        self.0.lock().await
    }
}
