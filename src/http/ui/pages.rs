//! The pages: every app at a glance, one app's history and delivery ledger, one deploy.

use axum::extract::{Path, Query, State};
use maud::{html, Markup};
use serde::Deserialize;

use super::render::{self, duration, page, short, status, time};
use super::session::Viewer;
use super::UiError;
use crate::api::{AppView, DeployView, NotificationView, ReloadView};
use crate::config::AppConfig;
use crate::services::Services;
use crate::store::{rfc3339, DeployFilter, DeployStatus, LedgerEntry, Trigger};

use super::super::api::{app_view, readable_deploy};
use super::super::error::ApiError;
use super::super::views;

/// Rows per page of history and of the delivery ledger.
const PAGE: u32 = 50;

/// Recent deploys shown per app on the overview.
const RECENT: u32 = 5;

/// Newest notifications (webhook receivers, GitHub) shown per app, and looked at for failures.
const NOTIFICATIONS: u32 = 20;

/// A message that is not getting through: given up, or still retrying after an error.
fn failing(n: &NotificationView) -> bool {
    n.state == "gave_up" || (n.state == "pending" && n.last_error.is_some())
}

async fn notifications(state: &Services, app: &str) -> Result<Vec<NotificationView>, UiError> {
    Ok(state
        .store
        .messages_for_app(app, NOTIFICATIONS)
        .await?
        .into_iter()
        .map(views::notification)
        .collect())
}

/// `GET /ui`: every app the viewer may see.
pub(super) async fn overview(
    State(state): State<Services>,
    viewer: Viewer,
) -> Result<Markup, UiError> {
    let mut cards = Vec::new();
    for app in state.config.apps.iter().filter(|a| viewer.may(&a.name)) {
        let view = app_view(&state, app).await?;
        let recent = state.store.deploys_for_app(&app.name, RECENT).await?;
        let deployed_subject = match &view.deployed {
            Some(d) => state
                .store
                .deploy(d.deploy_id)
                .await?
                .and_then(|d| d.subject),
            None => None,
        };
        let recent: Vec<DeployView> = recent.into_iter().map(views::deploy).collect();
        let failing = notifications(&state, &app.name)
            .await?
            .iter()
            .filter(|n| failing(n))
            .count();
        cards.push(app_card(
            &view,
            deployed_subject.as_deref(),
            &recent,
            failing,
        ));
    }
    Ok(page(
        "Apps",
        Some(&viewer),
        html! {
            h1 { "Apps" }
            @if cards.is_empty() { p.notice { "No app this token may see." } }
            div.cards { @for card in cards { (card) } }
        },
    ))
}

fn app_card(
    view: &AppView,
    subject: Option<&str>,
    recent: &[DeployView],
    failing: usize,
) -> Markup {
    html! {
        article.card data-app=(view.name) {
            h2 { a href={ "/ui/apps/" (view.name) } { (view.name) } }
            (badges(view))
            @if failing > 0 {
                p { a.badge.bad href={ "/ui/apps/" (view.name) "#notifications" } { (failing) " notifications failing" } }
            }
            dl {
                dt { "Deployed" }
                dd {
                    @if let Some(d) = &view.deployed {
                        a href={ "/ui/deploys/" (d.deploy_id) } { code { (short(&d.commit)) } }
                        @if let Some(s) = subject { " " span.subject { (s) } }
                        " since " (time(&d.since))
                    } @else { "nothing yet" }
                }
                @if let Some(last) = &view.last_deploy {
                    dt { "Last deploy" }
                    dd {
                        a href={ "/ui/deploys/" (last.id) } { "#" (last.id) } " "
                        (status(&last.status)) " "
                        @if let Some(p) = &last.path { span.path { (p) " path" } }
                    }
                }
                @if let Some(proxy) = &view.proxy {
                    dt { "Proxy" }
                    dd { (proxy.listen) " → " (proxy.upstream.as_deref().unwrap_or("no upstream")) }
                }
                dt { "Tracks" }
                dd { (view.repository) " · " (view.branch) @if let Some(t) = &view.tags { " · tags " (t) } }
            }
            @if !recent.is_empty() {
                ol.recent {
                    @for d in recent {
                        li { a href={ "/ui/deploys/" (d.id) } { "#" (d.id) } " " (status(&d.status)) " "
                             (d.trigger) " " (time(&d.created_at)) }
                    }
                }
            }
        }
    }
}

/// Lock and maintenance badges of an app.
fn badges(view: &AppView) -> Markup {
    html! {
        p.badges {
            @if let Some(lock) = &view.locked {
                span.badge.bad title={ "since " (lock.locked_at) } {
                    "locked by " (lock.locked_by) ": " (lock.reason)
                }
                " "
            }
            @if view.proxy.as_ref().is_some_and(|p| p.maintenance) {
                span.badge.busy { "maintenance" } " "
            }
        }
    }
}

/// `GET /ui/apps/{app}` query: history filters and the two pages' cursors.
#[derive(Deserialize, Default)]
pub(super) struct AppQuery {
    status: Option<String>,
    trigger: Option<String>,
    /// History: deploys older than this id.
    before: Option<String>,
    /// Ledger: deliveries older than this row id.
    deliveries_before: Option<String>,
}

impl AppQuery {
    fn filter(&self) -> Result<DeployFilter, ApiError> {
        let status = match self.status.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(DeployStatus::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!("status: {s:?} is not a deploy status"))
            })?),
        };
        let trigger =
            match self.trigger.as_deref().filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(Trigger::parse(s).ok_or_else(|| {
                    ApiError::BadRequest(format!("trigger: {s:?} is not a trigger"))
                })?),
            };
        Ok(DeployFilter {
            before: cursor("before", self.before.as_deref())?,
            status,
            trigger,
        })
    }

    /// This query's link with `before` (history) or `deliveries_before` (ledger) replaced.
    fn link(&self, app: &str, before: Option<i64>, deliveries_before: Option<i64>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("status", &self.status), ("trigger", &self.trigger)] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                q.append_pair(k, v);
            }
        }
        if let Some(b) = before {
            q.append_pair("before", &b.to_string());
        }
        if let Some(b) = deliveries_before {
            q.append_pair("deliveries_before", &b.to_string());
        }
        format!("/ui/apps/{app}?{}", q.finish())
    }
}

fn cursor(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{field}: {v:?} is not a positive number"))
            }),
    }
}

/// `GET /ui/apps/{app}`: its state, actions, history (filtered, paginated), delivery ledger.
pub(super) async fn app(
    State(state): State<Services>,
    Path(name): Path<String>,
    viewer: Viewer,
    Query(q): Query<AppQuery>,
) -> Result<Markup, UiError> {
    let app = viewer.reader().app(&state, &name)?;
    let filter = q.filter()?;
    let ledger_before = cursor("deliveries_before", q.deliveries_before.as_deref())?;
    let view = app_view(&state, app).await?;
    let history: Vec<DeployView> = state
        .store
        .deploys_page(&app.name, &filter, PAGE)
        .await?
        .into_iter()
        .map(views::deploy)
        .collect();
    let full_name = app.full_name();
    let ledger = state
        .store
        .ledger(&app.name, full_name.as_deref(), ledger_before, PAGE)
        .await?;
    let rollback_to = if viewer.may_write() {
        let succeeded = DeployFilter {
            status: Some(DeployStatus::Succeeded),
            ..DeployFilter::default()
        };
        state.store.deploys_page(&app.name, &succeeded, 20).await?
    } else {
        Vec::new()
    };
    let sent = notifications(&state, &app.name).await?;
    let older = (history.len() == PAGE as usize)
        .then(|| history.last().map(|d| d.id))
        .flatten();
    let older_ledger = (ledger.len() == PAGE as usize)
        .then(|| ledger.last().map(|d| d.id))
        .flatten();
    let body = html! {
        h1 { (app.name) }
        (badges(&view))
        (app_facts(&view))
        @if viewer.may_write() { (super::actions::panel(app, &view, &rollback_to)) }
        section #history {
            h2 { "Deploys" }
            (filters(app, &q))
            (deploy_table(&history))
            @if let Some(id) = older { p.more { a href=(q.link(&app.name, Some(id), ledger_before)) { "Older deploys →" } } }
        }
        @if !sent.is_empty() { (notification_table(&sent)) }
        section #deliveries {
            h2 { "Deliveries" }
            p.hint { "Every webhook recorded for this app and what dockhand answered. A redelivery of a recorded delivery is answered duplicate and not recorded again." }
            (ledger_table(&ledger))
            @if let Some(id) = older_ledger { p.more { a href=(q.link(&app.name, filter.before, Some(id))) { "Older deliveries →" } } }
        }
    };
    Ok(page(&app.name, Some(&viewer), body))
}

fn app_facts(view: &AppView) -> Markup {
    html! {
        dl.facts {
            dt { "Deployed" }
            dd {
                @if let Some(d) = &view.deployed {
                    a href={ "/ui/deploys/" (d.deploy_id) } { code { (short(&d.commit)) } } " since " (time(&d.since))
                } @else { "nothing yet" }
            }
            dt { "Tracks" }
            dd { (view.repository) " · branch " (view.branch) @if let Some(t) = &view.tags { " · tags " (t) } }
            dt { "Volume" } dd { code { (view.volume) } }
            @if let Some(r) = &view.reload { dt { "Reload" } dd { (reload(r)) } }
            @if let Some(c) = &view.container {
                dt { "Container" }
                dd { code { (short(&c.id)) } " " (c.image.as_deref().unwrap_or("")) @if let Some(d) = &c.digest { " " code.digest { (d) } } }
            }
            @if let Some(p) = &view.proxy {
                dt { "Proxy" }
                dd { (p.listen) " → " (p.upstream.as_deref().unwrap_or("no upstream")) " · " (p.in_flight) " in flight" }
            }
        }
    }
}

fn reload(r: &ReloadView) -> String {
    match r {
        ReloadView::Touch(file) => format!("touch {file}"),
        ReloadView::Signal(signal) => format!("signal {signal}"),
        ReloadView::Exec(argv) => format!("exec {}", argv.join(" ")),
        ReloadView::Restart(_) => "restart the container".into(),
        ReloadView::Swap(_) => "swap in a fresh container".into(),
    }
}

fn filters(app: &AppConfig, q: &AppQuery) -> Markup {
    let chosen = |v: &Option<String>, s: &str| v.as_deref() == Some(s);
    html! {
        form.filters method="get" action={ "/ui/apps/" (app.name) } {
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for s in DeployStatus::ALL { option value=(s.as_str()) selected[chosen(&q.status, s.as_str())] { (s.as_str()) } }
                }
            }
            label { "Trigger "
                select name="trigger" {
                    option value="" { "any" }
                    @for t in Trigger::ALL { option value=(t.as_str()) selected[chosen(&q.trigger, t.as_str())] { (t.as_str()) } }
                }
            }
            button type="submit" { "Filter" }
        }
    }
}

fn deploy_table(deploys: &[DeployView]) -> Markup {
    html! {
        div.scroll {
            table.deploys {
                thead { tr { th { "#" } th { "Status" } th { "Commit" } th { "Trigger" } th { "Path" } th { "By" } th { "Queued" } th { "Took" } } }
                tbody {
                    @if deploys.is_empty() { tr { td colspan="8" { "No deploys." } } }
                    @for d in deploys {
                        tr data-deploy=(d.id) {
                            td { a href={ "/ui/deploys/" (d.id) } { (d.id) } }
                            td { (status(&d.status)) @if d.reverted { " " span.badge.bad { "reverted" } } }
                            td {
                                @if let Some(c) = &d.to_commit { code { (short(c)) } }
                                @if let Some(s) = &d.subject { " " span.subject { (s) } }
                            }
                            td { (d.trigger) }
                            td { (d.path.as_deref().unwrap_or("–")) }
                            td { (d.actor.as_deref().unwrap_or("–")) }
                            td { (time(&d.created_at)) }
                            td { (duration(d.duration_ms)) }
                        }
                    }
                }
            }
        }
    }
}

/// The app's newest messages to its receivers (`[[notify]]`, GitHub), failures first to the eye.
fn notification_table(sent: &[NotificationView]) -> Markup {
    html! {
        section #notifications {
            h2 { "Notifications" }
            div.scroll {
                table.notifications {
                    thead { tr { th { "Receiver" } th { "Event" } th { "Deploy" } th { "State" } th { "Attempts" } th { "Last error" } } }
                    tbody {
                        @for n in sent {
                            tr data-failing=[failing(n).then_some("true")] {
                                td { (n.receiver) }
                                td { (n.event) }
                                td { a href={ "/ui/deploys/" (n.deploy_id) } { "#" (n.deploy_id) } }
                                td {
                                    @if failing(n) { span.badge.bad { (n.state) } } @else { (n.state) }
                                    @if let Some(next) = &n.next_attempt_at { br; "next " (time(next)) }
                                }
                                td { (n.attempts) }
                                td.error { (n.last_error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What dockhand answered a delivery, for this app.
fn answer(e: &LedgerEntry) -> (String, Option<String>) {
    match (e.deploy_status, e.outcome.as_str()) {
        (Some(DeployStatus::Locked), _) => ("locked".into(), e.deploy_reason.clone()),
        (Some(DeployStatus::Superseded), _) => ("superseded".into(), e.deploy_reason.clone()),
        (Some(DeployStatus::Ignored), _) => ("ignored".into(), e.deploy_reason.clone()),
        (Some(s), _) => (format!("queued → {s}"), e.deploy_reason.clone()),
        (None, outcome) => (outcome.to_string(), e.reason.clone()),
    }
}

fn ledger_table(ledger: &[LedgerEntry]) -> Markup {
    html! {
        div.scroll {
            table.ledger {
                thead { tr { th { "Received" } th { "Delivery" } th { "Event" } th { "Ref" } th { "Answer" } th { "Why" } } }
                tbody {
                    @if ledger.is_empty() { tr { td colspan="6" { "No deliveries." } } }
                    @for e in ledger {
                        @let (said, why) = answer(e);
                        tr {
                            td { (time(&rfc3339(e.received_at))) }
                            td { code { (e.delivery) } }
                            td { (e.event) }
                            td { (e.git_ref.as_deref().unwrap_or("–")) @if let Some(sha) = &e.after_sha { " " code { (short(sha)) } } }
                            td { @if let Some(id) = e.deploy_id { a href={ "/ui/deploys/" (id) } { (said) } } @else { (said) } }
                            td { (why.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /ui/deploys/{id}`: its record and steps; while it runs, the steps arrive live.
pub(super) async fn deploy(
    State(state): State<Services>,
    Path(id): Path<String>,
    viewer: Viewer,
) -> Result<Markup, UiError> {
    let deploy = readable_deploy(&state, &viewer.reader(), &id).await?;
    let steps = state.store.steps(deploy.id).await?;
    let live = !deploy.status.is_terminal();
    let d = views::deploy(deploy);
    let body = html! {
        p.crumbs { a href={ "/ui/apps/" (d.app) } { (d.app) } " / deploy " (d.id) }
        h1 { "Deploy #" (d.id) " " span #status { (status(&d.status)) } }
        dl.facts {
            dt { "Commit" }
            dd {
                @if let Some(c) = &d.to_commit { code { (c) } } @else if let Some(c) = &d.requested_sha { code { (c) } " (asked for)" }
                @if let Some(s) = &d.subject { br; span.subject { (s) } }
            }
            @if let Some(r) = &d.git_ref { dt { "Ref" } dd { (r) } }
            @if let Some(c) = &d.from_commit { dt { "Replaced" } dd { code { (short(c)) } } }
            dt { "Trigger" } dd { (d.trigger) @if let Some(by) = &d.actor { " by " (by) } @if d.forced { " (forced)" } }
            dt { "Path" } dd { (d.path.as_deref().unwrap_or("not planned yet")) }
            @if let Some(r) = &d.reason { dt { "Why" } dd #reason { (r) } }
            @if let Some(i) = &d.image { dt { "Image" } dd { code { (i) } @if let Some(g) = &d.digest { br; code.digest { (g) } } } }
            @if let Some(r) = d.rollback_of { dt { "Rollback of" } dd { a href={ "/ui/deploys/" (r) } { "#" (r) } } }
            @if let Some(p) = d.promoted_from { dt { "Promoted from" } dd { a href={ "/ui/deploys/" (p) } { "#" (p) } } }
            @if let Some(s) = d.superseded_by { dt { "Superseded by" } dd { a href={ "/ui/deploys/" (s) } { "#" (s) } } }
            dt { "Queued" } dd { (time(&d.created_at)) }
            dt { "Took" } dd #took { (duration(d.duration_ms)) }
        }
        p.error #error role="alert" hidden[d.error.is_none()] { (d.error.as_deref().unwrap_or("")) @if d.reverted { " — reverted to the previous commit" } }
        h2 { "Steps" }
        ol #steps.steps data-deploy=(d.id) data-live=[live.then_some("true")] {
            @for s in steps {
                @let v = views::step(s.clone());
                li data-step=(s.id) data-started=(v.started_at) data-ok=(match v.ok { Some(true) => "true", Some(false) => "false", None => "running" }) {
                    div.step-head {
                        span.stage { (v.stage) }
                        @if let Some(detail) = &v.detail { " " span.detail { (detail) } }
                        // Empty while it runs: the live script fills it in when it ends.
                        span.took { @if v.duration_ms.is_some() { (duration(v.duration_ms)) } }
                    }
                    @if let Some(out) = v.output.as_deref().filter(|o| !o.is_empty()) { pre { (out) } }
                }
            }
        }
        @if live { p.hint #live { "Following this deploy live…" } (render::deploy_script()) }
    };
    Ok(page(&format!("Deploy #{}", d.id), Some(&viewer), body))
}
