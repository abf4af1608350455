//! The write API: manual deploy, rollback, dry run, lock and unlock. Every call needs a token
//! scoped to the app (`auth`); targets are resolved to a full SHA (`deploy::target`) before
//! anything is recorded or queued; deploys go through the app's one queue like pushes.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tracing::info;

use super::auth::Writer;
use super::body::AppJson;
use super::error::ApiError;
use super::views;
use crate::api::{
    ChangeView, DeployRequest, HookView, LockAnswer, LockRequest, MaintenanceView, PathsView,
    PlanRequest, PlanView, PromoteRequest, QueuedView, RollbackRequest, RollbackTarget,
    UnlockAnswer,
};
use crate::config::AppConfig;
use crate::deploy::plan::DeployPath;
use crate::deploy::target::{self, RollbackTo, Target};
use crate::services::Services;
use crate::store::{rfc3339, DeployEvent, NewApiDeploy, Store, Trigger};

/// `POST /api/apps/{app}/{deploy,rollback,plan}`, and `POST`/`DELETE` of its `lock` and
/// `maintenance`.
pub(super) fn router() -> Router<Services> {
    Router::new()
        .route("/api/apps/{app}/deploy", post(deploy))
        .route("/api/apps/{app}/rollback", post(rollback))
        .route("/api/apps/{app}/promote", post(promote))
        .route("/api/apps/{app}/plan", post(plan))
        .route("/api/apps/{app}/lock", post(lock).delete(unlock))
        .route(
            "/api/apps/{app}/maintenance",
            post(maintenance_on).delete(maintenance_off),
        )
}

/// `?wait=true`: hold the answer until the deploy is over (at most `server.wait_timeout`).
#[derive(Deserialize)]
pub struct WaitQuery {
    wait: Option<String>,
}

impl WaitQuery {
    /// No `?wait`: answer once queued (the dashboard follows the deploy on its page).
    pub(super) fn queued() -> Self {
        WaitQuery { wait: None }
    }

    fn wait(&self) -> Result<bool, ApiError> {
        match self.wait.as_deref() {
            None => Ok(false),
            Some(v) => wait_flag(v)
                .ok_or_else(|| ApiError::BadRequest(format!("wait: {v:?} must be true or false"))),
        }
    }
}

/// The value of `?wait=`: `true`/`1`/empty or `false`/`0`; `None` for anything else.
pub(super) fn wait_flag(value: &str) -> Option<bool> {
    match value {
        "true" | "1" | "" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// A body as its handler takes it: read (or refused) before the handler runs, but its fields
/// are judged after the caller's scope, so a token not scoped to the app gets 403 (or 404)
/// whatever it sent.
pub(super) type Body<T> = Result<AppJson<T>, ApiError>;

/// The app a call names and its body, refused in this order: a body that could not be read
/// (413), the caller's scope (403, 404), the body's fields (400).
fn app_and_body<'a, T>(
    state: &'a Services,
    caller: &Writer,
    name: &str,
    body: Body<T>,
) -> Result<(&'a AppConfig, T), ApiError> {
    if let Err(ApiError::Body(unread)) = body {
        return Err(ApiError::Body(unread));
    }
    let app = caller.app(state, name)?;
    let AppJson(body) = body?;
    Ok((app, body))
}

/// `POST /api/apps/{app}/deploy` `{ref?, path?, force?}`
pub(super) async fn deploy(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Writer,
    Query(q): Query<WaitQuery>,
    body: Body<DeployRequest>,
) -> Result<Response, ApiError> {
    let (app, body) = app_and_body(&state, &caller, &name, body)?;
    let spec = body.git_ref.as_deref();
    let path = match body.path.as_deref() {
        None => None,
        Some(p) => Some(DeployPath::parse(p).ok_or_else(|| {
            ApiError::BadRequest(format!("path: {p:?} must be \"fast\" or \"full\""))
        })?),
    };
    if path == Some(DeployPath::Full) && app.container.is_none() {
        return Err(ApiError::BadRequest(format!(
            "path: app {} has no [apps.container]; only the fast path exists",
            app.name
        )));
    }
    if let Some(spec) = spec {
        target::check_spec("ref", spec)?;
    }
    let wait = forced_past_lock(&state, app, body.force, &q).await?;
    let target = target::resolve_ref(&state, app, "ref", spec).await?;
    let reason = format!("asked for: {}", target.how);
    let asked = Asked {
        trigger: Trigger::Manual,
        path,
        reason: &reason,
        lock: None,
    };
    queue(&state, app, &caller, &target, asked, wait).await
}

/// `POST /api/apps/{app}/rollback` `{to?, force?}`: `to` is a commit id or tag (string) or a
/// deploy id (number); default: the last succeeded deploy before the current one.
pub(super) async fn rollback(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Writer,
    Query(q): Query<WaitQuery>,
    body: Body<RollbackRequest>,
) -> Result<Response, ApiError> {
    let (app, body) = app_and_body(&state, &caller, &name, body)?;
    let to = match body.to {
        None => RollbackTo::Previous,
        Some(RollbackTarget::Spec(s)) => {
            target::check_spec("to", &s)?;
            RollbackTo::Spec(s)
        }
        Some(RollbackTarget::Deploy(id)) => RollbackTo::Deploy(id),
    };
    let wait = forced_past_lock(&state, app, body.force, &q).await?;
    let target = target::resolve_rollback(&state, app, &to).await?;
    let reason = format!("rollback to {}", target.how);
    let lock = app.lock_on_rollback.then(|| {
        format!(
            "rolled back to {} ({}); unlock to let pushes deploy again",
            target.sha.short(),
            target.how
        )
    });
    let asked = Asked {
        trigger: Trigger::Rollback,
        path: None,
        reason: &reason,
        lock: lock.as_deref(),
    };
    queue(&state, app, &caller, &target, asked, wait).await
}

/// `POST /api/apps/{app}/promote` `{from_deploy, force?}`: run the commit and image digest that
/// a succeeded deploy of another app of the same repository ran.
async fn promote(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Writer,
    Query(q): Query<WaitQuery>,
    body: Body<PromoteRequest>,
) -> Result<Response, ApiError> {
    let (app, body) = app_and_body(&state, &caller, &name, body)?;
    let wait = forced_past_lock(&state, app, body.force, &q).await?;
    let target = target::resolve_promote(&state, app, body.from_deploy).await?;
    let reason = format!("promote {} ({})", target.how, target.sha.short());
    let asked = Asked {
        trigger: Trigger::Promote,
        path: None,
        reason: &reason,
        lock: None,
    };
    queue(&state, app, &caller, &target, asked, wait).await
}

/// `POST /api/apps/{app}/plan` `{ref?}`: what a deploy would do now. Records nothing and
/// writes nothing to the volume; it fetches into the app's git cache.
pub(super) async fn plan(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Writer,
    body: Body<PlanRequest>,
) -> Result<Json<PlanView>, ApiError> {
    let (app, body) = app_and_body(&state, &caller, &name, body)?;
    let target = target::resolve_ref(&state, app, "ref", body.git_ref.as_deref()).await?;
    let dry = target::dry_run(&state, app, &target).await?;
    let changes = dry
        .changes
        .iter()
        .map(|(op, path)| ChangeView {
            op: op.to_string(),
            path: path.clone(),
        })
        .collect();
    let hooks = dry
        .hooks
        .into_iter()
        .map(|(stage, path, problem)| HookView {
            stage: stage.as_str().to_string(),
            path: path.display().to_string(),
            problem,
        })
        .collect();
    Ok(Json(PlanView {
        app: app.name.clone(),
        commit: target.sha.to_string(),
        git_ref: target.git_ref,
        resolved: target.how,
        deployed: dry.deployed,
        path: dry.path.as_str().to_string(),
        reason: dry.reason,
        changed: dry.changed,
        changes,
        changes_truncated: dry.changed > dry.changes.len(),
        paths: app
            .paths
            .as_ref()
            .zip(dry.paths_matching)
            .map(|(p, matching)| PathsView {
                patterns: p.patterns.clone(),
                matching,
            }),
        hooks,
        locked: state.store.lock(&app.name).await?.as_ref().map(views::lock),
    }))
}

/// `POST /api/apps/{app}/lock` `{reason}`
pub(super) async fn lock(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Writer,
    body: Body<LockRequest>,
) -> Result<Json<LockAnswer>, ApiError> {
    let (app, body) = app_and_body(&state, &caller, &name, body)?;
    let reason = body
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty() && r.len() <= 500)
        .ok_or_else(|| ApiError::BadRequest("reason: required, 1-500 characters".into()))?;
    let lock = state
        .store
        .lock_app(&app.name, reason, caller.name())
        .await?;
    if lock.locked_by != caller.name() || lock.reason != reason {
        return Err(ApiError::Locked(lock));
    }
    info!(app = app.name, by = caller.name(), reason, "app locked");
    Ok(Json(LockAnswer {
        app: app.name.clone(),
        locked: views::lock(&lock),
    }))
}

/// `DELETE /api/apps/{app}/lock`: pushes deploy again from the next one; pushes recorded as
/// `locked` stay recorded and are not deployed (deploy the tip with `POST …/deploy`).
pub(super) async fn unlock(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Writer,
) -> Result<Json<UnlockAnswer>, ApiError> {
    let app = caller.app(&state, &name)?;
    let removed = state.store.unlock_app(&app.name).await?;
    if removed.is_some() {
        info!(app = app.name, by = caller.name(), "app unlocked");
    }
    Ok(Json(UnlockAnswer {
        app: app.name.clone(),
        unlocked: removed.as_ref().map(views::lock),
    }))
}

/// `POST /api/apps/{app}/maintenance`: the app's proxy answers every request with 503 and
/// its `maintenance_body` until `DELETE`. Kept across restarts.
pub(super) async fn maintenance_on(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Writer,
) -> Result<Json<MaintenanceView>, ApiError> {
    set_maintenance(&state, &name, &caller, true).await
}

/// `DELETE /api/apps/{app}/maintenance`: the app's proxy forwards requests again.
pub(super) async fn maintenance_off(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Writer,
) -> Result<Json<MaintenanceView>, ApiError> {
    set_maintenance(&state, &name, &caller, false).await
}

async fn set_maintenance(
    state: &Services,
    name: &str,
    caller: &Writer,
    enabled: bool,
) -> Result<Json<MaintenanceView>, ApiError> {
    let app = caller.app(state, name)?;
    let proxy = state.proxies.get(&app.name).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "app {}: no [apps.proxy], so no maintenance switch",
            app.name
        ))
    })?;
    let (store, proxy) = (state.store.clone(), proxy.clone());
    let (name, by) = (app.name.clone(), caller.name().to_string());
    let stored = super::to_the_end(async move {
        // Stored first: the switch a restart restores is never behind the one that serves.
        let stored = store.set_maintenance(&name, enabled, &by).await?;
        proxy.set_maintenance(enabled);
        info!(app = name, by, enabled, "maintenance switched");
        Ok(stored)
    })
    .await?;
    Ok(Json(MaintenanceView {
        app: app.name.clone(),
        maintenance: enabled,
        changed_by: stored.changed_by,
        changed_at: rfc3339(stored.changed_at),
    }))
}

/// What deploy and rollback share before resolving: `force` and `?wait` read, and a 409 while
/// the app is locked unless forced. Returns whether to wait.
async fn forced_past_lock(
    state: &Services,
    app: &AppConfig,
    force: Option<bool>,
    q: &WaitQuery,
) -> Result<bool, ApiError> {
    let force = force.unwrap_or(false);
    let wait = q.wait()?;
    refuse_if_locked(state, app, force).await?;
    Ok(wait)
}

/// 409 while the app is locked, unless the caller forces.
async fn refuse_if_locked(state: &Services, app: &AppConfig, force: bool) -> Result<(), ApiError> {
    match state.store.lock(&app.name).await? {
        Some(lock) if !force => Err(ApiError::Locked(lock)),
        _ => Ok(()),
    }
}

/// What an API call asks for, besides its resolved target.
struct Asked<'a> {
    trigger: Trigger,
    path: Option<DeployPath>,
    reason: &'a str,
    /// A lock to take before the deploy is queued (a rollback's), and its reason.
    lock: Option<&'a str>,
}

/// Reserve room in the app's queue, take the rollback lock if any, record the deploy, queue it,
/// and answer 202 — or, with `wait`, the deploy once it is over.
async fn queue(
    state: &Services,
    app: &AppConfig,
    caller: &Writer,
    target: &Target,
    asked: Asked<'_>,
    wait: bool,
) -> Result<Response, ApiError> {
    let new = NewApiDeploy {
        app: app.name.clone(),
        trigger: asked.trigger,
        actor: caller.name().to_string(),
        git_ref: target.git_ref.clone(),
        sha: target.sha.to_string(),
        path: asked.path,
        rollback_of: target.rollback_of,
        promoted_from: target.promoted_from,
        reason: Some(asked.reason.to_string()),
    };
    let permit = state.deployer.reserve(&app.name)?;
    // Subscribed before the deploy is queued, so `wait` cannot miss a quick deploy's end.
    let events = wait.then(|| state.store.subscribe());
    let store = state.store.clone();
    let lock = asked.lock.map(str::to_string);
    let id = super::to_the_end(async move {
        if let Some(reason) = lock {
            // Before the deploy is queued: a push arriving meanwhile is held, not run after it.
            store.lock_app(&new.app, &reason, &new.actor).await?;
        }
        let id = store.queue_api_deploy(&new).await?;
        permit.send(id);
        info!(
            app = new.app,
            deploy_id = id,
            trigger = new.trigger.as_str(),
            actor = new.actor,
            commit = new.sha,
            "api deploy queued"
        );
        Ok(id)
    })
    .await?;
    if let Some(events) = events {
        wait_terminal(&state.store, events, id, state.config.server.wait_timeout).await?;
    }
    let deploy = state
        .store
        .deploy(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("deploy {id} vanished"))?;
    let status = if wait && deploy.status.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let body = QueuedView {
        deploy: views::deploy(deploy),
        deploy_id: id,
        resolved: target.how.clone(),
    };
    let mut response = (status, Json(body)).into_response();
    if let Ok(location) = format!("/api/deploys/{id}").parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Wait until deploy `id` reaches a terminal status or `timeout` passes, by its events
/// (subscribed before it was queued, so none is missed; after a lag, the row is read again).
async fn wait_terminal(
    store: &Store,
    mut events: tokio::sync::broadcast::Receiver<DeployEvent>,
    id: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let over = async {
        loop {
            match events.recv().await {
                Ok(DeployEvent::Status {
                    deploy_id, status, ..
                }) if deploy_id == id && status.is_terminal() => return Ok(()),
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    if store
                        .deploy(id)
                        .await?
                        .is_none_or(|d| d.status.is_terminal())
                    {
                        return Ok(());
                    }
                }
                Err(RecvError::Closed) => return Ok(()),
            }
        }
    };
    tokio::time::timeout(timeout, over).await.unwrap_or(Ok(()))
}
