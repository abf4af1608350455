//! The read API: apps, their deploys, one deploy with its steps, and health.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::auth::Reader;
use super::error::ApiError;
use super::views;
use crate::api::{AppList, AppView, DeployList, DeployView, Health, NotificationList};
use crate::config::AppConfig;
use crate::services::Services;
use crate::store::Deploy;

/// `GET /api/apps[/{app}[/deploys]]`, `GET /api/deploys/{id}` and `GET /healthz`.
pub(super) fn router() -> Router<Services> {
    Router::new()
        .route("/api/apps", get(list_apps))
        .route("/api/apps/{app}", get(get_app))
        .route("/api/apps/{app}/deploys", get(list_deploys))
        .route("/api/apps/{app}/notifications", get(list_notifications))
        .route("/api/deploys/{id}", get(get_deploy))
        .route("/healthz", get(health))
}

pub(super) async fn app_view(state: &Services, app: &AppConfig) -> Result<AppView, ApiError> {
    let deployed = state.store.app_state(&app.name).await?;
    let proxy = state
        .proxies
        .get(&app.name)
        .map(|p| views::proxy(p.status(), deployed.as_ref()));
    let (deployed, container) = match deployed.as_ref().map(views::deployed) {
        Some((deployed, container)) => (Some(deployed), container),
        None => (None, None),
    };
    let last_deploy = state.store.last_deploy(&app.name).await?.map(views::deploy);
    let locked = state.store.lock(&app.name).await?.as_ref().map(views::lock);
    Ok(AppView {
        name: app.name.clone(),
        repository: app.repository_label(),
        branch: app.branch.clone(),
        tags: app.tags.as_ref().map(|t| t.pattern.clone()),
        volume: app.volume.display().to_string(),
        reload: views::reload(&app.reload),
        deployed,
        last_deploy,
        container,
        proxy,
        locked,
    })
}

/// `GET /api/apps`: the apps the caller's token is scoped to.
async fn list_apps(
    State(state): State<Services>,
    caller: Reader,
) -> Result<Json<AppList>, ApiError> {
    let mut apps = Vec::with_capacity(state.config.apps.len());
    for app in state.config.apps.iter().filter(|a| caller.may(&a.name)) {
        apps.push(app_view(&state, app).await?);
    }
    Ok(Json(AppList { apps }))
}

/// `GET /api/apps/{app}`
async fn get_app(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Reader,
) -> Result<Json<AppView>, ApiError> {
    let app = caller.app(&state, &name)?;
    Ok(Json(app_view(&state, app).await?))
}

#[derive(Deserialize)]
pub struct Limit {
    limit: Option<String>,
}

impl Limit {
    /// `?limit=N`: 1..=1000, default 20.
    fn get(&self) -> Result<u32, ApiError> {
        match self.limit.as_deref() {
            None => Ok(20),
            Some(s) => s
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("limit: {s:?} is not a number from 1 to 1000"))
                }),
        }
    }
}

/// `GET /api/apps/{app}/notifications?limit=N` (newest first; 1..=1000, default 20).
async fn list_notifications(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Reader,
    Query(q): Query<Limit>,
) -> Result<Json<NotificationList>, ApiError> {
    let app = caller.app(&state, &name)?;
    let notifications = state
        .store
        .messages_for_app(&app.name, q.get()?)
        .await?
        .into_iter()
        .map(views::notification)
        .collect();
    Ok(Json(NotificationList {
        app: app.name.clone(),
        notifications,
    }))
}

/// `GET /api/apps/{app}/deploys?limit=N` (newest first; 1..=1000, default 20).
async fn list_deploys(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Reader,
    Query(q): Query<Limit>,
) -> Result<Json<DeployList>, ApiError> {
    let app = caller.app(&state, &name)?;
    let limit = q.get()?;
    let deploys = state
        .store
        .deploys_for_app(&app.name, limit)
        .await?
        .into_iter()
        .map(views::deploy)
        .collect();
    Ok(Json(DeployList {
        app: app.name.clone(),
        deploys,
    }))
}

/// `GET /api/deploys/{id}` with its steps.
async fn get_deploy(
    State(state): State<Services>,
    Path(id): Path<String>,
    caller: Reader,
) -> Result<Json<DeployView>, ApiError> {
    let deploy = readable_deploy(&state, &caller, &id).await?;
    let id = deploy.id;
    let steps = state
        .store
        .steps(id)
        .await?
        .into_iter()
        .map(views::step)
        .collect();
    let mut view = views::deploy(deploy);
    view.steps = Some(steps);
    Ok(Json(view))
}

/// The deploy `id` (from the path), if it exists and the caller may see its app.
pub(super) async fn readable_deploy(
    state: &Services,
    caller: &Reader,
    id: &str,
) -> Result<Deploy, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("deploy id {id:?} is not a number")))?;
    let deploy = state
        .store
        .deploy(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no deploy {id}")))?;
    caller.check(&deploy.app)?;
    Ok(deploy)
}

/// `GET /healthz`: the database answers.
async fn health(State(state): State<Services>) -> Result<Json<Health>, ApiError> {
    state.store.ping().await?;
    Ok(Json(Health {
        status: "ok".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }))
}
