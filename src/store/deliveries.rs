//! Webhook deliveries, and the deploys a delivery queues, written in one transaction.

use sqlx::{Connection as _, Row};

use super::batch::DeliveryRow;
use super::{now_ms, DeployStatus, Store};

/// What dockhand did with a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Deploy,
    Ignored,
    Ping,
}

impl DeliveryOutcome {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Deploy => "deploy",
            DeliveryOutcome::Ignored => "ignored",
            DeliveryOutcome::Ping => "ping",
        }
    }
}

/// A delivery to record.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub delivery: &'a str,
    pub hook_id: &'a str,
    pub event: &'a str,
    pub repository: Option<&'a str>,
    pub git_ref: Option<&'a str>,
    pub after_sha: Option<&'a str>,
    pub outcome: DeliveryOutcome,
    pub reason: Option<&'a str>,
}

/// A deploy a push delivery queues for one app.
#[derive(Debug, Clone)]
pub struct NewPushDeploy<'a> {
    pub app: &'a str,
    pub git_ref: &'a str,
    pub requested_sha: &'a str,
    pub forced: bool,
    pub actor: Option<&'a str>,
}

/// A recorded delivery and the deploys it queued.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: i64,
    pub delivery: String,
    pub outcome: String,
    pub reason: Option<String>,
    /// `(app, deploy id)` for each deploy this delivery queued.
    pub deploys: Vec<(String, i64)>,
    /// Those of `deploys` recorded as `locked` (their app was locked): never to be run.
    pub locked: Vec<i64>,
}

impl Store {
    /// Record a delivery and queue its deploys atomically. `Ok(None)` when the same
    /// `(delivery, hook_id)` is already recorded: a redelivery, which must trigger nothing.
    pub async fn record_delivery(
        &self,
        new: &NewDelivery<'_>,
        deploys: &[NewPushDeploy<'_>],
    ) -> anyhow::Result<Option<Delivery>> {
        let now = now_ms();
        if deploys.is_empty() {
            let row = DeliveryRow {
                delivery: new.delivery.to_string(),
                hook_id: new.hook_id.to_string(),
                event: new.event.to_string(),
                repository: new.repository.map(str::to_string),
                git_ref: new.git_ref.map(str::to_string),
                after_sha: new.after_sha.map(str::to_string),
                outcome: new.outcome.as_str(),
                reason: new.reason.map(str::to_string),
                received_at: now,
            };
            let id = self.batcher.insert(row).await?;
            return Ok(id.map(|id| Delivery {
                id,
                delivery: new.delivery.to_string(),
                outcome: new.outcome.as_str().to_string(),
                reason: new.reason.map(str::to_string),
                deploys: Vec::new(),
                locked: Vec::new(),
            }));
        }
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        let id = insert_delivery(new, now).fetch_optional(&mut *tx).await?;
        let Some(id) = id else {
            return Ok(None);
        };
        let mut queued = Vec::with_capacity(deploys.len());
        let mut locked = Vec::new();
        for d in deploys {
            // The lock is read in the same transaction: a push is either queued before a lock
            // commits (and the worker then finds the lock) or recorded as locked.
            let (deploy_id, status): (i64, String) = sqlx::query_as(
                "INSERT INTO deploys (app, delivery_id, trigger, actor, git_ref, requested_sha, forced,
                                      status, reason, finished_at, created_at)
                 SELECT ?1, ?2, 'push', ?3, ?4, ?5, ?6,
                        CASE WHEN l.app IS NULL THEN 'queued' ELSE 'locked' END,
                        CASE WHEN l.app IS NULL THEN NULL
                             ELSE 'app locked by ' || l.locked_by || ': ' || l.reason END,
                        CASE WHEN l.app IS NULL THEN NULL ELSE ?7 END,
                        ?7
                 FROM (SELECT 1) LEFT JOIN app_locks l ON l.app = ?1
                 RETURNING id, status",
            )
            .bind(d.app)
            .bind(id)
            .bind(d.actor)
            .bind(d.git_ref)
            .bind(d.requested_sha)
            .bind(d.forced)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            if status == "locked" {
                locked.push(deploy_id);
            }
            queued.push((d.app.to_string(), deploy_id));
        }
        tx.commit().await?;
        // A locked push ends as it is recorded: its end is published like any deploy's.
        for &deploy_id in &locked {
            self.publish_status(deploy_id, DeployStatus::Locked, None, None);
        }
        Ok(Some(Delivery {
            id,
            delivery: new.delivery.to_string(),
            outcome: new.outcome.as_str().to_string(),
            reason: new.reason.map(str::to_string),
            deploys: queued,
            locked,
        }))
    }

    /// The recorded delivery with this GitHub delivery id and hook id, if any.
    pub async fn find_delivery(
        &self,
        delivery: &str,
        hook_id: &str,
    ) -> anyhow::Result<Option<Delivery>> {
        let row = sqlx::query(
            "SELECT id, outcome, reason FROM deliveries WHERE delivery = ? AND hook_id = ?",
        )
        .bind(delivery)
        .bind(hook_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        let rows = sqlx::query_as::<_, (String, i64, String)>(
            "SELECT app, id, status FROM deploys WHERE delivery_id = ? ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let locked = rows
            .iter()
            .filter(|(_, _, status)| status == "locked")
            .map(|(_, id, _)| *id)
            .collect();
        let deploys = rows.into_iter().map(|(app, id, _)| (app, id)).collect();
        Ok(Some(Delivery {
            id,
            delivery: delivery.to_string(),
            outcome: row.try_get("outcome")?,
            reason: row.try_get("reason")?,
            deploys,
            locked,
        }))
    }
}

/// One line of an app's delivery ledger: a recorded delivery and what it did for the app.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LedgerEntry {
    pub id: i64,
    pub delivery: String,
    pub event: String,
    pub git_ref: Option<String>,
    pub after_sha: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub received_at: i64,
    /// The app's deploy this delivery recorded, if any, with its status and reason.
    pub deploy_id: Option<i64>,
    pub deploy_status: Option<DeployStatus>,
    pub deploy_reason: Option<String>,
}

impl Store {
    /// An app's deliveries, newest first, older than `before` (a delivery row id): those that
    /// recorded a deploy of it, and those of its repository (`full_name`) that recorded none
    /// (ignored, pings).
    pub async fn ledger(
        &self,
        app: &str,
        full_name: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Vec<LedgerEntry>> {
        Ok(sqlx::query_as(
            "SELECT d.id, d.delivery, d.event, d.git_ref, d.after_sha, d.outcome, d.reason,
                    d.received_at, p.id AS deploy_id, p.status AS deploy_status,
                    p.reason AS deploy_reason
             FROM deliveries d LEFT JOIN deploys p ON p.delivery_id = d.id AND p.app = ?1
             WHERE d.id < ?2
               AND (p.id IS NOT NULL OR (d.repository = ?3 COLLATE NOCASE
                    AND NOT EXISTS (SELECT 1 FROM deploys o WHERE o.delivery_id = d.id)))
             ORDER BY d.id DESC LIMIT ?4",
        )
        .bind(app)
        .bind(before.unwrap_or(i64::MAX))
        .bind(full_name)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// `INSERT … ON CONFLICT DO NOTHING RETURNING id`: `None` when the delivery is already recorded.
fn insert_delivery<'q>(
    new: &'q NewDelivery<'_>,
    now: i64,
) -> sqlx::query::QueryScalar<'q, sqlx::Sqlite, i64, sqlx::sqlite::SqliteArguments<'q>> {
    sqlx::query_scalar(
        "INSERT INTO deliveries (delivery, hook_id, event, repository, git_ref, after_sha, outcome, reason, received_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (delivery, hook_id) DO NOTHING
         RETURNING id",
    )
    .bind(new.delivery)
    .bind(new.hook_id)
    .bind(new.event)
    .bind(new.repository)
    .bind(new.git_ref)
    .bind(new.after_sha)
    .bind(new.outcome.as_str())
    .bind(new.reason)
    .bind(now)
}
