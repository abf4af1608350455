//! Deploys, their steps, and the per-app deployed commit.

use sqlx::{Connection as _, FromRow};

use super::{now_ms, Store};
use crate::commit::CommitId;

/// Where a deploy is in its life. `Queued` and `Running` are the only non-terminal ones.
/// Stored as its lowercase name (the CHECK of `deploys.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(rename_all = "lowercase")]
pub enum DeployStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Superseded,
    Stale,
    Ignored,
    Interrupted,
    /// A push that arrived while the app was locked: recorded, never run.
    Locked,
}

impl DeployStatus {
    /// Every status, in the order of a deploy's life (the dashboard's filter lists them).
    pub const ALL: [DeployStatus; 9] = [
        DeployStatus::Queued,
        DeployStatus::Running,
        DeployStatus::Succeeded,
        DeployStatus::Failed,
        DeployStatus::Superseded,
        DeployStatus::Stale,
        DeployStatus::Ignored,
        DeployStatus::Interrupted,
        DeployStatus::Locked,
    ];

    /// The status called `s` (as [`DeployStatus::as_str`] says it).
    pub fn parse(s: &str) -> Option<DeployStatus> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeployStatus::Queued => "queued",
            DeployStatus::Running => "running",
            DeployStatus::Succeeded => "succeeded",
            DeployStatus::Failed => "failed",
            DeployStatus::Superseded => "superseded",
            DeployStatus::Stale => "stale",
            DeployStatus::Ignored => "ignored",
            DeployStatus::Interrupted => "interrupted",
            DeployStatus::Locked => "locked",
        }
    }

    /// Whether nothing will change this deploy any more.
    pub fn is_terminal(self) -> bool {
        crate::api::is_terminal(self.as_str())
    }
}

impl std::fmt::Display for DeployStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started a deploy. Stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(rename_all = "lowercase")]
pub enum Trigger {
    Push,
    Manual,
    Rollback,
    /// A poll found a tracked ref's tip not deployed (its push never arrived, or could not
    /// fetch). It behaves like a push: it deploys the ref's tip as the origin has it.
    Poll,
    /// The commit and image a deploy of another app ran (`promoted_from`).
    Promote,
}

impl Trigger {
    /// Every trigger (the dashboard's filter lists them).
    pub const ALL: [Trigger; 5] = [
        Trigger::Push,
        Trigger::Manual,
        Trigger::Rollback,
        Trigger::Poll,
        Trigger::Promote,
    ];

    /// The trigger called `s`.
    pub fn parse(s: &str) -> Option<Trigger> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Push => "push",
            Trigger::Manual => "manual",
            Trigger::Rollback => "rollback",
            Trigger::Poll => "poll",
            Trigger::Promote => "promote",
        }
    }
}

/// Which way a deploy goes: the fast path (new code into the running app's tree) or the full
/// path (a new container). Stored as its lowercase name (`deploys.path`, `requested_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(rename_all = "lowercase")]
pub enum DeployPath {
    Fast,
    Full,
}

impl DeployPath {
    /// `fast` or `full`, as the store and the API say it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployPath::Fast => "fast",
            DeployPath::Full => "full",
        }
    }

    /// `fast` or `full`; anything else is `None`.
    pub fn parse(s: &str) -> Option<DeployPath> {
        match s {
            "fast" => Some(DeployPath::Fast),
            "full" => Some(DeployPath::Full),
            _ => None,
        }
    }
}

impl std::fmt::Display for DeployPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A deploy asked for over the API (manual or rollback); its target is already a full SHA.
#[derive(Debug, Clone)]
pub struct NewApiDeploy {
    pub app: String,
    pub trigger: Trigger,
    /// The token's name.
    pub actor: String,
    pub git_ref: Option<String>,
    /// The resolved full commit id.
    pub sha: String,
    /// The path asked for, winning over the planner.
    pub path: Option<DeployPath>,
    /// For a rollback: the deploy whose commit (and recorded image) it runs again.
    pub rollback_of: Option<i64>,
    /// For a promote: the deploy of another app whose commit and image it runs.
    pub promoted_from: Option<i64>,
    /// Why, for the record (e.g. "rollback to deploy 7 (tag v1)").
    pub reason: Option<String>,
}
#[cfg(test)]
impl NewApiDeploy {
    /// A manual deploy of `sha` to `app` by token `ci`, for tests.
    pub(crate) fn manual(app: &str, sha: &str) -> NewApiDeploy {
        NewApiDeploy {
            app: app.into(),
            trigger: Trigger::Manual,
            actor: "ci".into(),
            git_ref: None,
            sha: sha.into(),
            path: None,
            rollback_of: None,
            promoted_from: None,
            reason: None,
        }
    }
}

/// One row of `deploys` (the API shows it as `api::DeployView`).
#[derive(Debug, Clone, FromRow)]
pub struct Deploy {
    pub id: i64,
    pub app: String,
    pub delivery_id: Option<i64>,
    pub trigger: Trigger,
    pub actor: Option<String>,
    pub git_ref: Option<String>,
    pub requested_sha: Option<String>,
    pub forced: bool,
    pub from_commit: Option<CommitId>,
    pub to_commit: Option<CommitId>,
    /// Once planned.
    pub path: Option<DeployPath>,
    pub reason: Option<String>,
    pub status: DeployStatus,
    pub superseded_by: Option<i64>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// Full deploys: the image reference run and the digest it resolved to.
    pub image: Option<String>,
    pub digest: Option<String>,
    /// Failed after changing the app, and put back to the previous commit.
    pub reverted: bool,
    /// The path asked for over the API.
    pub requested_path: Option<DeployPath>,
    /// For a rollback: the deploy it runs again.
    pub rollback_of: Option<i64>,
    /// For a promote: the deploy of another app whose commit and image it runs.
    pub promoted_from: Option<i64>,
    /// The target commit's message's first line, once planned.
    pub subject: Option<String>,
}

impl Deploy {
    /// Whether someone asked for exactly this commit (a manual deploy, a rollback): then
    /// neither ancestry nor "already deployed" stops it.
    pub fn asked_for(&self) -> bool {
        !self.follows_tip()
    }

    /// A push or a poll: a doorbell for its ref, which deploys the ref's tip as the origin
    /// has it when the deploy runs (never the commit it named when it was queued).
    pub fn follows_tip(&self) -> bool {
        self.trigger == Trigger::Push || self.trigger == Trigger::Poll
    }
}

/// Which of an app's deploys a page of history shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeployFilter {
    /// Only deploys older than this id (the previous page's last).
    pub before: Option<i64>,
    pub status: Option<DeployStatus>,
    pub trigger: Option<Trigger>,
}

/// The commit an app's volume holds, and the deploy that put it there.
#[derive(Debug, Clone, FromRow)]
pub struct AppState {
    pub app: String,
    pub commit_sha: CommitId,
    pub deploy_id: i64,
    pub updated_at: i64,
    /// The live container, for apps with a container spec.
    pub container_id: Option<String>,
    pub image: Option<String>,
    pub digest: Option<String>,
    pub port: Option<i64>,
}

/// The container a full deploy made live.
#[derive(Debug, Clone)]
pub struct LiveContainer {
    pub id: String,
    pub image: String,
    pub digest: Option<String>,
    pub port: u16,
}

const DEPLOY_COLUMNS: &str =
    "id, app, delivery_id, trigger, actor, git_ref, requested_sha, forced, from_commit, \
     to_commit, path, reason, status, superseded_by, error, created_at, started_at, finished_at, image, digest, \
     requested_path, rollback_of, reverted, promoted_from, subject";

impl Store {
    /// One deploy by id.
    pub async fn deploy(&self, id: i64) -> anyhow::Result<Option<Deploy>> {
        let sql = format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE id = ?");
        Ok(sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// An app's deploys, newest first.
    pub async fn deploys_for_app(&self, app: &str, limit: u32) -> anyhow::Result<Vec<Deploy>> {
        let sql =
            format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE app = ? ORDER BY id DESC LIMIT ?");
        Ok(sqlx::query_as(&sql)
            .bind(app)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// One page of an app's deploys, newest first: those older than `before` (a deploy id),
    /// with `status` and `trigger` when given. Served by `deploys_by_app` whatever the filter.
    pub async fn deploys_page(
        &self,
        app: &str,
        filter: &DeployFilter,
        limit: u32,
    ) -> anyhow::Result<Vec<Deploy>> {
        let sql = format!(
            "SELECT {DEPLOY_COLUMNS} FROM deploys WHERE app = ?1 AND id < ?2
               AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR trigger = ?4)
             ORDER BY id DESC LIMIT ?5"
        );
        Ok(sqlx::query_as(&sql)
            .bind(app)
            .bind(filter.before.unwrap_or(i64::MAX))
            .bind(filter.status.map(DeployStatus::as_str))
            .bind(filter.trigger.map(Trigger::as_str))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Every deploy in `status`, oldest first (startup recovery).
    pub async fn deploys_with_status(&self, status: DeployStatus) -> anyhow::Result<Vec<Deploy>> {
        let sql = format!("SELECT {DEPLOY_COLUMNS} FROM deploys WHERE status = ? ORDER BY id");
        Ok(sqlx::query_as(&sql)
            .bind(status.as_str())
            .fetch_all(&self.pool)
            .await?)
    }

    /// Mark a queued deploy running, recording what the volume held when it started.
    pub async fn start_deploy(&self, id: i64, from_commit: Option<CommitId>) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE deploys SET status = 'running', started_at = ?, from_commit = ? WHERE id = ?",
        )
        .bind(now_ms())
        .bind(from_commit)
        .bind(id)
        .execute(&mut *self.writer.lock().await)
        .await?;
        self.publish_status(id, DeployStatus::Running, None, None);
        Ok(())
    }

    /// Record the resolved target and chosen path before anything touches the volume, so a crash
    /// from here on can be undone from the record alone; and the target commit's `subject`
    /// (its message's first line) for notifications.
    pub async fn plan_deploy(
        &self,
        id: i64,
        to_commit: CommitId,
        path: DeployPath,
        reason: &str,
        subject: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE deploys SET to_commit = ?, path = ?, reason = ?, subject = ? WHERE id = ?",
        )
        .bind(to_commit)
        .bind(path)
        .bind(reason)
        .bind(subject)
        .bind(id)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(())
    }

    /// Mark a deploy failed after its changes were reverted.
    pub async fn fail_reverted(&self, id: i64, error: &str) -> anyhow::Result<()> {
        self.finish(id, DeployStatus::Failed, None, Some(error), true)
            .await
    }

    /// Give a deploy a terminal status other than `succeeded`.
    pub async fn finish_deploy(
        &self,
        id: i64,
        status: DeployStatus,
        reason: Option<&str>,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        self.finish(id, status, reason, error, false).await
    }

    async fn finish(
        &self,
        id: i64,
        status: DeployStatus,
        reason: Option<&str>,
        error: Option<&str>,
        reverted: bool,
    ) -> anyhow::Result<()> {
        debug_assert!(status.is_terminal() && status != DeployStatus::Succeeded);
        // One clock reading: a deploy that never started gets started_at = finished_at, never
        // a start a millisecond after its end (a -1 ms duration).
        let now = now_ms();
        sqlx::query(
            "UPDATE deploys SET status = ?, reason = COALESCE(?, reason), error = ?, finished_at = ?,
                    started_at = COALESCE(started_at, ?), reverted = ?
             WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(reason)
        .bind(error)
        .bind(now)
        .bind(now)
        .bind(reverted)
        .bind(id)
        .execute(&mut *self.writer.lock().await)
        .await?;
        self.publish_status(id, status, reason, error);
        Ok(())
    }

    /// Record the image a full deploy runs and the digest it resolved to.
    pub async fn record_image(
        &self,
        id: i64,
        image: &str,
        digest: Option<&str>,
    ) -> anyhow::Result<()> {
        sqlx::query("UPDATE deploys SET image = ?, digest = ? WHERE id = ?")
            .bind(image)
            .bind(digest)
            .bind(id)
            .execute(&mut *self.writer.lock().await)
            .await?;
        Ok(())
    }

    /// Mark a deploy succeeded and make its commit (and, for a full deploy, its container) the
    /// app's deployed state, atomically. A fast deploy keeps the live container as it was.
    pub async fn succeed_deploy(
        &self,
        id: i64,
        app: &str,
        commit: CommitId,
        container: Option<&LiveContainer>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        sqlx::query("UPDATE deploys SET status = 'succeeded', finished_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        set_app_state(&mut tx, id, app, commit, container, now).await?;
        tx.commit().await?;
        self.publish_status(id, DeployStatus::Succeeded, None, None);
        Ok(())
    }

    /// Whether a deploy of `app` newer than `id` waits in the queue (it ends a watch).
    pub async fn newer_queued(&self, app: &str, id: i64) -> anyhow::Result<bool> {
        let newer: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM deploys WHERE app = ? AND id > ? AND status = 'queued')",
        )
        .bind(app)
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(newer)
    }

    /// Make a still-running deploy's commit (and container) the app's deployed state: it is
    /// live, and its post-deploy hooks run next. The deploy's own status waits for them
    /// ([`Store::succeed_deploy`] or [`Store::finish_deploy`]), so it is set once.
    pub async fn go_live(
        &self,
        id: i64,
        app: &str,
        commit: CommitId,
        container: Option<&LiveContainer>,
    ) -> anyhow::Result<()> {
        let mut conn = self.writer.lock().await;
        set_app_state(&mut conn, id, app, commit, container, now_ms()).await
    }

    /// Put `app_state` back to `before` (`None`: nothing deployed) after a deploy that went live
    /// was reverted.
    /// `before` is the deploy that had put the previous commit there, and that commit;
    /// `container` the live container it recorded, when a switch back brought it back.
    pub async fn put_back_app_state(
        &self,
        app: &str,
        before: Option<(i64, CommitId)>,
        container: Option<&LiveContainer>,
    ) -> anyhow::Result<()> {
        match before {
            Some((deploy_id, commit)) => self.go_live(deploy_id, app, commit, container).await,
            None => {
                sqlx::query("DELETE FROM app_state WHERE app = ?")
                    .bind(app)
                    .execute(&mut *self.writer.lock().await)
                    .await?;
                Ok(())
            }
        }
    }

    /// Mark queued deploys as covered by deploy `by` (latest wins).
    pub async fn supersede(&self, ids: &[i64], by: i64) -> anyhow::Result<()> {
        let now = now_ms();
        let mut conn = self.writer.lock().await;
        let mut tx = conn.begin().await?;
        let reason = format!("covered by deploy {by}, which deploys a newer push");
        for id in ids {
            sqlx::query(
                "UPDATE deploys SET status = 'superseded', superseded_by = ?, reason = ?, finished_at = ?
                 WHERE id = ? AND status = 'queued'",
            )
            .bind(by)
            .bind(&reason)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        for id in ids {
            self.publish_status(*id, DeployStatus::Superseded, Some(&reason), None);
        }
        Ok(())
    }

    /// Image references an app's succeeded full deploys ran, newest first, each once.
    pub async fn deployed_images(&self, app: &str) -> anyhow::Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT image FROM deploys WHERE app = ? AND path = 'full' AND status = 'succeeded' AND image IS NOT NULL
             GROUP BY image ORDER BY MAX(id) DESC",
        )
        .bind(app)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Point an app at a new live container (startup recovery recreated it).
    pub async fn set_live_container(&self, app: &str, c: &LiveContainer) -> anyhow::Result<()> {
        sqlx::query(
            "UPDATE app_state SET container_id = ?, port = ?, updated_at = ? WHERE app = ?",
        )
        .bind(&c.id)
        .bind(i64::from(c.port))
        .bind(now_ms())
        .bind(app)
        .execute(&mut *self.writer.lock().await)
        .await?;
        Ok(())
    }

    /// The commit an app's volume holds, if it was ever deployed.
    pub async fn app_state(&self, app: &str) -> anyhow::Result<Option<AppState>> {
        Ok(sqlx::query_as(
            "SELECT app, commit_sha, deploy_id, updated_at, container_id, image, digest, port FROM app_state WHERE app = ?",
        )
        .bind(app)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The newest deploy of an app.
    pub async fn last_deploy(&self, app: &str) -> anyhow::Result<Option<Deploy>> {
        Ok(self.deploys_for_app(app, 1).await?.into_iter().next())
    }

    /// Persist a deploy asked for over the API as `queued`; returns its id. It is `forced`:
    /// the caller named the commit, so ancestry does not stop it.
    pub async fn queue_api_deploy(&self, d: &NewApiDeploy) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO deploys (app, trigger, actor, git_ref, requested_sha, forced, requested_path,
                                  rollback_of, promoted_from, reason, status, created_at)
             VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, 'queued', ?)
             RETURNING id",
        )
        .bind(&d.app)
        .bind(d.trigger.as_str())
        .bind(&d.actor)
        .bind(&d.git_ref)
        .bind(&d.sha)
        .bind(d.path)
        .bind(d.rollback_of)
        .bind(d.promoted_from)
        .bind(&d.reason)
        .bind(now_ms())
        .fetch_one(&mut *self.writer.lock().await)
        .await?)
    }

    /// The newest succeeded deploy of an app older than deploy `before` whose commit is not
    /// `except` (the default rollback target).
    pub async fn succeeded_before(
        &self,
        app: &str,
        before: i64,
        except: CommitId,
    ) -> anyhow::Result<Option<Deploy>> {
        self.newest_succeeded(app, before, "to_commit <> ?", &except.to_string())
            .await
    }

    /// The newest succeeded deploy of an app that deployed `commit`.
    pub async fn succeeded_with_commit(
        &self,
        app: &str,
        commit: CommitId,
    ) -> anyhow::Result<Option<Deploy>> {
        self.newest_succeeded(app, i64::MAX, "to_commit = ?", &commit.to_string())
            .await
    }

    /// The newest succeeded deploy of an app that deployed the ref `git_ref` (e.g. a tag).
    pub async fn succeeded_with_ref(
        &self,
        app: &str,
        git_ref: &str,
    ) -> anyhow::Result<Option<Deploy>> {
        self.newest_succeeded(app, i64::MAX, "git_ref = ?", git_ref)
            .await
    }

    /// The newest succeeded deploy of `app` older than `before` meeting `condition` (one `?`,
    /// bound to `value`).
    async fn newest_succeeded(
        &self,
        app: &str,
        before: i64,
        condition: &str,
        value: &str,
    ) -> anyhow::Result<Option<Deploy>> {
        let sql = format!(
            "SELECT {DEPLOY_COLUMNS} FROM deploys
             WHERE app = ? AND id < ? AND status = 'succeeded' AND to_commit IS NOT NULL
               AND {condition}
             ORDER BY id DESC LIMIT 1"
        );
        Ok(sqlx::query_as(&sql)
            .bind(app)
            .bind(before)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The image (reference and digest) that was live when deploy `id` of `app` succeeded:
    /// that of the newest succeeded full deploy up to it.
    pub async fn image_as_of(
        &self,
        app: &str,
        id: i64,
    ) -> anyhow::Result<Option<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT image, digest FROM deploys
             WHERE app = ? AND id <= ? AND status = 'succeeded' AND path = 'full'
               AND image IS NOT NULL AND digest IS NOT NULL
             ORDER BY id DESC LIMIT 1",
        )
        .bind(app)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }
}

/// Point `app_state` at `commit`, put there by deploy `id`.
async fn set_app_state(
    conn: &mut sqlx::SqliteConnection,
    id: i64,
    app: &str,
    commit: CommitId,
    container: Option<&LiveContainer>,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO app_state (app, commit_sha, deploy_id, updated_at, container_id, image, digest, port)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (app) DO UPDATE SET commit_sha = excluded.commit_sha, deploy_id = excluded.deploy_id,
             updated_at = excluded.updated_at,
             container_id = COALESCE(excluded.container_id, app_state.container_id),
             image = COALESCE(excluded.image, app_state.image),
             digest = CASE WHEN excluded.container_id IS NULL THEN app_state.digest ELSE excluded.digest END,
             port = COALESCE(excluded.port, app_state.port)",
    )
    .bind(app)
    .bind(commit)
    .bind(id)
    .bind(now)
    .bind(container.map(|c| c.id.as_str()))
    .bind(container.map(|c| c.image.as_str()))
    .bind(container.and_then(|c| c.digest.as_deref()))
    .bind(container.map(|c| i64::from(c.port)))
    .execute(conn)
    .await?;
    Ok(())
}
