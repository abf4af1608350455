//! Group commit for deliveries that queue no deploy (pings, ignored pushes, other events).
//!
//! Under a storm of webhooks most deliveries only need their row. One task owns those inserts:
//! it takes every delivery waiting at that moment (up to [`MAX_BATCH`]) and writes them with one
//! multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING`, then answers each caller. A caller is
//! answered only after its batch committed, so "persisted before acknowledged" still holds; a
//! lone delivery is written at once, with no waiting for company.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row, Sqlite};
use tokio::sync::{mpsc, oneshot};

use super::writer::Writer;

/// Most rows in one statement (9 bound values each, far below SQLite's variable limit).
const MAX_BATCH: usize = 256;

/// One delivery row, owned so it can cross to the writer task.
pub(super) struct DeliveryRow {
    pub delivery: String,
    pub hook_id: String,
    pub event: String,
    pub repository: Option<String>,
    pub git_ref: Option<String>,
    pub after_sha: Option<String>,
    pub outcome: &'static str,
    pub reason: Option<String>,
    pub received_at: i64,
}

/// The inserted row's id, or `None` when `(delivery, hook_id)` was already recorded.
type Answer = Result<Option<i64>, String>;

struct Pending {
    row: DeliveryRow,
    done: oneshot::Sender<Answer>,
}

/// Handle to the batching writer task.
#[derive(Clone)]
pub(super) struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Start the writer task on the current runtime; it ends when every handle is dropped.
    pub(super) fn spawn(writer: Writer) -> Batcher {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(writer, rx));
        Batcher { tx }
    }

    /// Insert `row` and wait until it is committed.
    pub(super) async fn insert(&self, row: DeliveryRow) -> anyhow::Result<Option<i64>> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Pending { row, done })
            .await
            .map_err(|_| anyhow::anyhow!("delivery writer stopped"))?;
        let answer = answer
            .await
            .map_err(|_| anyhow::anyhow!("delivery writer stopped"))?;
        answer.map_err(|e| anyhow::anyhow!("recording delivery: {e}"))
    }
}

async fn run(writer: Writer, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let result = insert_all(&writer, &batch).await;
        match result {
            Ok(mut ids) => {
                for p in batch.drain(..) {
                    // The first of two identical deliveries in one batch takes the id; any
                    // later one is a redelivery, exactly as if it had come in a later batch.
                    let id = ids.remove(&(p.row.delivery, p.row.hook_id));
                    let _ = p.done.send(Ok(id));
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                tracing::error!(error = message, rows = batch.len(), "delivery batch failed");
                for p in batch.drain(..) {
                    let _ = p.done.send(Err(message.clone()));
                }
            }
        }
    }
}

async fn insert_all(
    writer: &Writer,
    batch: &[Pending],
) -> anyhow::Result<HashMap<(String, String), i64>> {
    let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(
        "INSERT INTO deliveries (delivery, hook_id, event, repository, git_ref, after_sha, outcome, reason, received_at) ",
    );
    query.push_values(batch, |mut b, p| {
        let r = &p.row;
        b.push_bind(r.delivery.as_str())
            .push_bind(r.hook_id.as_str())
            .push_bind(r.event.as_str())
            .push_bind(r.repository.as_deref())
            .push_bind(r.git_ref.as_deref())
            .push_bind(r.after_sha.as_deref())
            .push_bind(r.outcome)
            .push_bind(r.reason.as_deref())
            .push_bind(r.received_at);
    });
    query.push(" ON CONFLICT (delivery, hook_id) DO NOTHING RETURNING id, delivery, hook_id");
    let rows = query.build().fetch_all(&mut *writer.lock().await).await?;
    let mut ids = HashMap::with_capacity(rows.len());
    for row in rows {
        ids.insert(
            (row.try_get("delivery")?, row.try_get("hook_id")?),
            row.try_get("id")?,
        );
    }
    Ok(ids)
}
