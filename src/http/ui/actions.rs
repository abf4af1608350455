//! Actions: a panel of forms on the app page, a confirmation page for each (a deploy's shows its
//! plan), and the `POST` that runs it through the JSON API's own handler with the session's
//! token — so a refusal is the API's refusal (409 locked, 400 bad ref, 403 read-only).

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::render::{csrf_field, page, short, status, time};
use super::session::{self, Viewer};
use super::UiError;
use crate::api::{
    AppView, DeployRequest, LockRequest, PlanRequest, RollbackRequest, RollbackTarget,
};
use crate::config::AppConfig;
use crate::services::Services;
use crate::store::Deploy;

use super::super::auth::{writable, Writer};
use super::super::body::AppJson;
use super::super::error::ApiError;
use super::super::ops::{self, WaitQuery};

/// The actions a form can ask for, by their path segment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    Deploy,
    Rollback,
    Lock,
    Unlock,
    MaintenanceOn,
    MaintenanceOff,
}

impl Action {
    fn parse(s: &str) -> Result<Action, ApiError> {
        Ok(match s {
            "deploy" => Action::Deploy,
            "rollback" => Action::Rollback,
            "lock" => Action::Lock,
            "unlock" => Action::Unlock,
            "maintenance-on" => Action::MaintenanceOn,
            "maintenance-off" => Action::MaintenanceOff,
            _ => {
                return Err(ApiError::NotFound(format!(
                "no action {s:?} (deploy, rollback, lock, unlock, maintenance-on, maintenance-off)"
            )))
            }
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
            Action::Lock => "lock",
            Action::Unlock => "unlock",
            Action::MaintenanceOn => "maintenance-on",
            Action::MaintenanceOff => "maintenance-off",
        }
    }
}

/// The fields an action's forms carry (each action reads its own).
#[derive(Deserialize, Default)]
pub(super) struct ActionForm {
    action: Option<String>,
    csrf: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    to: Option<String>,
    reason: Option<String>,
    force: Option<String>,
}

impl ActionForm {
    fn git_ref(&self) -> Option<String> {
        self.git_ref
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string)
    }

    fn forced(&self) -> Option<bool> {
        self.force.as_deref().map(|f| f == "on" || f == "true")
    }

    /// A rollback's target: a deploy id (digits only), a commit or tag, or the previous deploy.
    fn rollback_to(&self) -> Option<RollbackTarget> {
        let to = self
            .to
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())?;
        Some(match to.parse::<i64>() {
            Ok(id) if to.len() < 7 => RollbackTarget::Deploy(id),
            _ => RollbackTarget::Spec(to.to_string()),
        })
    }
}

/// The session's token as a writer: 403 for a read-only token or no sign-in.
fn writer(viewer: &Viewer) -> Result<Writer, ApiError> {
    let token = viewer.token.clone().ok_or_else(|| {
        ApiError::Forbidden("no [[tokens]] configured: the dashboard cannot act".into())
    })?;
    writable(token).map(Writer)
}

/// The app page's actions, each a form that asks for confirmation first.
pub(super) fn panel(app: &AppConfig, view: &AppView, previous: &[Deploy]) -> Markup {
    let confirm = format!("/ui/apps/{}/confirm", app.name);
    let deployed = view.deployed.as_ref().map(|d| d.deploy_id);
    html! {
        section #actions.actions {
            h2 { "Actions" }
            form method="get" action=(confirm) {
                input type="hidden" name="action" value="deploy";
                label { "Deploy " input name="ref" placeholder={ "tip of " (app.branch) } size="18"; }
                button type="submit" { "Plan and deploy…" }
            }
            @if previous.iter().any(|d| Some(d.id) != deployed) {
                form method="get" action=(confirm) {
                    input type="hidden" name="action" value="rollback";
                    label { "Roll back to "
                        select name="to" {
                            @for d in previous.iter().filter(|d| Some(d.id) != deployed) {
                                option value=(d.id) {
                                    "#" (d.id) " " (d.to_commit.as_ref().map(|c| c.to_string()).as_deref().map(short).unwrap_or("?"))
                                    @if let Some(s) = &d.subject { " " (s) }
                                }
                            }
                        }
                    }
                    button type="submit" { "Roll back…" }
                }
            }
            @if view.locked.is_some() {
                form method="get" action=(confirm) {
                    input type="hidden" name="action" value="unlock";
                    button type="submit" { "Unlock…" }
                }
            } @else {
                form method="get" action=(confirm) {
                    input type="hidden" name="action" value="lock";
                    label { "Lock, because " input name="reason" required maxlength="500" size="24"; }
                    button type="submit" { "Lock…" }
                }
            }
            @if let Some(proxy) = &view.proxy {
                form method="get" action=(confirm) {
                    @if proxy.maintenance {
                        input type="hidden" name="action" value="maintenance-off";
                        button type="submit" { "End maintenance…" }
                    } @else {
                        input type="hidden" name="action" value="maintenance-on";
                        button type="submit" { "Maintenance on…" }
                    }
                }
            }
        }
    }
}

/// `GET /ui/apps/{app}/confirm?action=…`: what the action will do, and the button that does it.
pub(super) async fn confirm(
    State(state): State<Services>,
    Path(name): Path<String>,
    viewer: Viewer,
    Query(form): Query<ActionForm>,
) -> Result<Markup, UiError> {
    let caller = writer(&viewer)?;
    let app = caller.app(&state, &name)?;
    let action = Action::parse(form.action.as_deref().unwrap_or(""))?;
    let lock = state.store.lock(&app.name).await?;
    let (title, what) = match action {
        Action::Deploy => plan_preview(&state, &name, &caller, &form).await?,
        Action::Rollback => rollback_preview(&state, app, &form).await?,
        Action::Lock => {
            let reason = form.reason.clone().unwrap_or_default();
            (
                format!("Lock {}", app.name),
                html! { p { "Pushes are recorded and not deployed until it is unlocked. Reason: " strong { (reason) } } },
            )
        }
        Action::Unlock => (
            format!("Unlock {}", app.name),
            html! { p { "Pushes deploy again from the next one. Pushes recorded while locked stay undeployed (deploy the tip to catch up)." } },
        ),
        Action::MaintenanceOn => (
            format!("Maintenance on for {}", app.name),
            html! { p { "The proxy answers every request with 503 and the maintenance page until switched off." } },
        ),
        Action::MaintenanceOff => (
            format!("End maintenance of {}", app.name),
            html! { p { "The proxy forwards requests to the app again." } },
        ),
    };
    let needs_force = matches!(action, Action::Deploy | Action::Rollback) && lock.is_some();
    let body = html! {
        p.crumbs { a href={ "/ui/apps/" (app.name) } { (app.name) } " / confirm" }
        h1 { (title) }
        (what)
        @if let Some(lock) = &lock {
            @if needs_force { p.error { "The app is locked by " (lock.locked_by) ": " (lock.reason) ". Tick force to go ahead anyway." } }
        }
        form.confirm method="post" action={ "/ui/apps/" (app.name) "/do/" (action.as_str()) } {
            (csrf_field(&viewer))
            @if let Some(r) = form.git_ref() { input type="hidden" name="ref" value=(r); }
            @if let Some(t) = &form.to { input type="hidden" name="to" value=(t); }
            @if let Some(r) = &form.reason { input type="hidden" name="reason" value=(r); }
            @if needs_force { label { input type="checkbox" name="force"; " force (deploy while locked)" } }
            button.primary type="submit" { "Confirm" }
            " " a href={ "/ui/apps/" (app.name) } { "Cancel" }
        }
    };
    Ok(page(&title, Some(&viewer), body))
}

/// A deploy's confirmation: the plan, as `POST /api/apps/{app}/plan` answers it.
async fn plan_preview(
    state: &Services,
    name: &str,
    caller: &Writer,
    form: &ActionForm,
) -> Result<(String, Markup), UiError> {
    let body = Ok(AppJson(PlanRequest {
        git_ref: form.git_ref(),
    }));
    let axum::Json(plan) = ops::plan(
        State(state.clone()),
        Path(name.to_string()),
        Writer(caller.0.clone()),
        body,
    )
    .await?;
    let what = html! {
        dl.facts {
            dt { "Commit" } dd { code { (plan.commit) } " (" (plan.resolved) ")" }
            dt { "Deployed now" } dd { @if let Some(d) = &plan.deployed { code { (short(d)) } } @else { "nothing" } }
            dt { "Path" } dd #plan-path { strong { (plan.path) } " — " (plan.reason) }
            dt { "Files" } dd { (plan.changed) " changed" }
        }
        @if !plan.changes.is_empty() {
            ul.changes { @for c in &plan.changes { li { code { (c.op) } " " (c.path) } } @if plan.changes_truncated { li { "…" } } }
        }
        @for h in &plan.hooks { p.hint { "hook " (h.stage) ": " (h.path) @if let Some(p) = &h.problem { " — " span.error { (p) } } } }
    };
    Ok((
        format!("Deploy {} to {}", short(&plan.commit), plan.app),
        what,
    ))
}

/// A rollback's confirmation: the deploy (or commit) it goes back to.
async fn rollback_preview(
    state: &Services,
    app: &AppConfig,
    form: &ActionForm,
) -> Result<(String, Markup), UiError> {
    let what = match form.rollback_to() {
        None => html! { p { "Back to the last succeeded deploy before the current one." } },
        Some(RollbackTarget::Spec(s)) => html! { p { "Back to " code { (s) } "." } },
        Some(RollbackTarget::Deploy(id)) => match state.store.deploy(id).await? {
            Some(d) if d.app == app.name => html! {
                p { "Back to what deploy " a href={ "/ui/deploys/" (d.id) } { "#" (d.id) } " ran: "
                    code { (d.to_commit.as_ref().map(|c| c.to_string()).unwrap_or_default()) }
                    @if let Some(s) = &d.subject { " " span.subject { (s) } } " " (status(d.status.as_str())) " " (time(&crate::store::rfc3339(d.created_at))) }
            },
            _ => {
                return Err(ApiError::NotFound(format!("app {}: no deploy {id}", app.name)).into())
            }
        },
    };
    let what = html! {
        (what)
        @if app.lock_on_rollback { p.hint { "The app is locked afterwards (lock_on_rollback): unlock to let pushes deploy again." } }
    };
    Ok((format!("Roll back {}", app.name), what))
}

/// `POST /ui/apps/{app}/do/{action}`: run it, then to the deploy's page (deploy, rollback) or
/// back to the app.
pub(super) async fn act(
    State(state): State<Services>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
    viewer: Viewer,
    Form(form): Form<ActionForm>,
) -> Result<Response, UiError> {
    session::check_form(&headers, &state, form.csrf.as_deref(), true)?;
    let action = Action::parse(&action)?;
    let caller = writer(&viewer)?;
    let (s, n) = (State(state.clone()), Path(name.clone()));
    let back = Redirect::to(&format!("/ui/apps/{name}")).into_response();
    match action {
        Action::Deploy => {
            let body = DeployRequest {
                git_ref: form.git_ref(),
                path: None,
                force: form.forced(),
            };
            let queued =
                ops::deploy(s, n, caller, Query(WaitQuery::queued()), Ok(AppJson(body))).await?;
            Ok(to_deploy_page(queued))
        }
        Action::Rollback => {
            let body = RollbackRequest {
                to: form.rollback_to(),
                force: form.forced(),
            };
            let queued =
                ops::rollback(s, n, caller, Query(WaitQuery::queued()), Ok(AppJson(body))).await?;
            Ok(to_deploy_page(queued))
        }
        Action::Lock => {
            let body = LockRequest {
                reason: form.reason.clone(),
            };
            // The app page shows the new state.
            let _answer = ops::lock(s, n, caller, Ok(AppJson(body))).await?;
            Ok(back)
        }
        Action::Unlock => {
            // The app page shows the new state.
            let _answer = ops::unlock(s, n, caller).await?;
            Ok(back)
        }
        Action::MaintenanceOn => {
            // The app page shows the new state.
            let _answer = ops::maintenance_on(s, n, caller).await?;
            Ok(back)
        }
        Action::MaintenanceOff => {
            // The app page shows the new state.
            let _answer = ops::maintenance_off(s, n, caller).await?;
            Ok(back)
        }
    }
}

/// A queued deploy's API answer (its `Location: /api/deploys/{id}`) as a redirect to its page.
fn to_deploy_page(queued: Response) -> Response {
    let id = queued
        .headers()
        .get(header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| l.strip_prefix("/api/deploys/"))
        .and_then(|id| id.parse::<i64>().ok());
    match id {
        Some(id) => Redirect::to(&format!("/ui/deploys/{id}")).into_response(),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the deploy was queued but its id is unknown",
        )
            .into_response(),
    }
}
