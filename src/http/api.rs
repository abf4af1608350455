//! The read API: apps, their deploys, one deploy with its steps, and health.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::Reader;
use super::error::ApiError;
use crate::config::{AppConfig, Reload};
use crate::services::Services;
use crate::store::{rfc3339, AppState as Deployed, Deploy, Step};

/// A deploy as the API shows it: its row (times as RFC 3339), its duration and URL, and its
/// steps when one deploy is asked for.
#[derive(Serialize)]
pub struct DeployView {
    #[serde(flatten)]
    pub deploy: Deploy,
    pub duration_ms: Option<i64>,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
}

/// One step of a deploy, with its duration.
#[derive(Serialize)]
pub struct StepView {
    #[serde(flatten)]
    pub step: Step,
    pub duration_ms: Option<i64>,
}

impl From<Deploy> for DeployView {
    fn from(deploy: Deploy) -> Self {
        DeployView {
            url: format!("/api/deploys/{}", deploy.id),
            duration_ms: deploy
                .started_at
                .zip(deploy.finished_at)
                .map(|(s, f)| f - s),
            deploy,
            steps: None,
        }
    }
}

impl From<Step> for StepView {
    fn from(step: Step) -> Self {
        StepView {
            duration_ms: step.finished_at.map(|f| f - step.started_at),
            step,
        }
    }
}

async fn app_view(state: &Services, app: &AppConfig) -> Result<Value, ApiError> {
    let deployed = state.store.app_state(&app.name).await?;
    let container = deployed.as_ref().and_then(|d| {
        d.container_id.as_ref().map(|id| {
            json!({ "id": id, "image": d.image, "digest": d.digest, "port": d.port,
                    "since": rfc3339(d.updated_at) })
        })
    });
    // What the proxy sends requests to right now, and the image digest behind it.
    let proxy = state.proxies.get(&app.name).map(|p| {
        let status = p.status();
        let digest = deployed
            .as_ref()
            .filter(|d| d.container_id.is_some() && d.container_id == status.container)
            .and_then(|d| d.digest.clone());
        let mut view = serde_json::to_value(status).unwrap_or_default();
        view["digest"] = json!(digest);
        view
    });
    let last = state.store.last_deploy(&app.name).await?;
    let lock = state.store.lock(&app.name).await?;
    let reload = match &app.reload {
        Reload::Touch(p) => json!({ "touch": p }),
        Reload::Signal(signal) => json!({ "signal": signal }),
        Reload::Exec(argv) => json!({ "exec": argv }),
        Reload::Restart => json!({ "restart": true }),
        Reload::Swap => json!({ "swap": true }),
        Reload::None => Value::Null,
    };
    Ok(json!({
        "name": app.name,
        "repository": app.repository_label(),
        "branch": app.branch,
        "tags": app.tags.as_ref().map(|t| &t.pattern),
        "volume": app.volume,
        "reload": reload,
        "deployed": deployed.map(|Deployed { commit_sha, deploy_id, updated_at, .. }| json!({
            "commit": commit_sha,
            "deploy_id": deploy_id,
            "since": rfc3339(updated_at),
        })),
        "last_deploy": last.map(DeployView::from),
        "container": container,
        "proxy": proxy,
        "locked": lock.as_ref().map(super::lock_view),
    }))
}

/// `GET /api/apps`: the apps the caller's token is scoped to.
pub async fn list_apps(
    State(state): State<Services>,
    caller: Reader,
) -> Result<Json<Value>, ApiError> {
    let mut apps = Vec::with_capacity(state.config.apps.len());
    for app in state.config.apps.iter().filter(|a| caller.may(&a.name)) {
        apps.push(app_view(&state, app).await?);
    }
    Ok(Json(json!({ "apps": apps })))
}

/// `GET /api/apps/{app}`
pub async fn get_app(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Reader,
) -> Result<Json<Value>, ApiError> {
    let app = caller.app(&state, &name)?;
    Ok(Json(app_view(&state, app).await?))
}

#[derive(Deserialize)]
pub struct Limit {
    limit: Option<String>,
}

/// `GET /api/apps/{app}/deploys?limit=N` (newest first; 1..=1000, default 20).
pub async fn list_deploys(
    State(state): State<Services>,
    Path(name): Path<String>,
    caller: Reader,
    Query(q): Query<Limit>,
) -> Result<Json<Value>, ApiError> {
    let app = caller.app(&state, &name)?;
    let limit = match q.limit.as_deref() {
        None => 20,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("limit: {s:?} is not a number from 1 to 1000"))
            })?,
    };
    let deploys: Vec<DeployView> = state
        .store
        .deploys_for_app(&app.name, limit)
        .await?
        .into_iter()
        .map(DeployView::from)
        .collect();
    Ok(Json(json!({ "app": app.name, "deploys": deploys })))
}

/// `GET /api/deploys/{id}` with its steps.
pub async fn get_deploy(
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
        .map(StepView::from)
        .collect();
    let mut view = DeployView::from(deploy);
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
pub async fn health(State(state): State<Services>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await?;
    Ok(Json(
        json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }),
    ))
}
