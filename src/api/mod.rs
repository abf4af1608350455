//! The API's wire types: what the server's JSON answers and events hold, shared by the server
//! (which builds and serializes them) and the CLI client (which deserializes and renders
//! them), and the bodies the client sends to the write API. The contract lives here only: a
//! field renamed here is renamed on both sides, or the build breaks — never production.
//!
//! A leaf: nothing of the server is imported. Times are RFC 3339 strings (UTC), commit ids
//! full hex strings; a field that may be absent is an `Option` and goes over the wire as
//! `null`. Reading answers is tolerant (`#[serde(default)]`): a field an older or newer server
//! does not send reads as its default, so the CLI shows `-` rather than failing. Reading
//! requests is strict (`#[serde(deny_unknown_fields)]`): a misspelt field is a 400, never
//! silently ignored; every field is optional, `null` is absent, and the client leaves out the
//! fields it does not set.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

use serde::{Deserialize, Serialize};

/// Whether a deploy status is terminal: anything but `queued` and `running`.
pub fn is_terminal(status: &str) -> bool {
    !matches!(status, "queued" | "running")
}

/// A deploy as the API shows it: its record, its duration and URL, and its steps when one
/// deploy is asked for (`GET /api/deploys/{id}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeployView {
    pub id: i64,
    pub app: String,
    /// The webhook delivery that queued it (push deploys).
    pub delivery_id: Option<i64>,
    /// `push`, `poll`, `manual` or `rollback`.
    pub trigger: String,
    /// The pusher, or the API token's name.
    pub actor: Option<String>,
    /// The full ref name pushed or asked for.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// What the push named (or, over the API, the resolved commit).
    pub requested_sha: Option<String>,
    /// Ancestry not checked: a forced push, or asked for over the API.
    pub forced: bool,
    pub from_commit: Option<String>,
    pub to_commit: Option<String>,
    /// `fast` or `full`, once planned.
    pub path: Option<String>,
    /// Why: the plan's reason, or why it did not run.
    pub reason: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed`, `superseded`, `stale`, `ignored`,
    /// `interrupted` or `locked`.
    pub status: String,
    pub superseded_by: Option<i64>,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Full deploys: the image reference run and the digest it resolved to.
    pub image: Option<String>,
    pub digest: Option<String>,
    /// Failed after changing the app, and put back to the previous commit.
    pub reverted: bool,
    /// `fast` / `full` asked for over the API.
    pub requested_path: Option<String>,
    /// For a rollback: the deploy it runs again.
    pub rollback_of: Option<i64>,
    /// For a promote: the deploy of another app whose commit and image it runs.
    pub promoted_from: Option<i64>,
    /// The first line of the target commit's message, once planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub duration_ms: Option<i64>,
    /// `/api/deploys/{id}`.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
}

impl DeployView {
    /// The commit it deploys: the one it went to, else the one it was asked for.
    pub fn commit(&self) -> Option<&str> {
        self.to_commit.as_deref().or(self.requested_sha.as_deref())
    }
}

/// One step of a deploy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepView {
    pub stage: String,
    pub detail: Option<String>,
    /// Its output (the last part of a long one).
    pub output: Option<String>,
    /// `None` while it runs.
    pub ok: Option<bool>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

/// An app lock: who, when and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LockView {
    pub reason: String,
    pub locked_by: String,
    pub locked_at: String,
}

/// `GET /api/apps`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppList {
    pub apps: Vec<AppView>,
}

/// One app: what it tracks, what it runs, and its last deploy (`GET /api/apps/{app}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppView {
    pub name: String,
    /// `owner/name` on GitHub, or the origin's URL with any credentials removed.
    pub repository: String,
    pub branch: String,
    /// The tag pattern it deploys, if it deploys tags.
    pub tags: Option<String>,
    pub volume: String,
    /// How the app is told its code changed; `None` for no reload.
    pub reload: Option<ReloadView>,
    pub deployed: Option<DeployedView>,
    pub last_deploy: Option<DeployView>,
    pub container: Option<ContainerView>,
    pub proxy: Option<ProxyView>,
    pub locked: Option<LockView>,
}

/// An app's reload, as configured (`{"touch": "uwsgi.ini"}`, `{"restart": true}`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadView {
    Touch(String),
    Signal(String),
    Exec(Vec<String>),
    Restart(bool),
    Swap(bool),
}

/// The commit an app's tree holds and the deploy that put it there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeployedView {
    pub commit: String,
    pub deploy_id: i64,
    pub since: String,
}

/// The live container of an app with a container spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerView {
    pub id: String,
    pub image: Option<String>,
    pub digest: Option<String>,
    pub port: Option<i64>,
    pub since: String,
}

/// What an app's proxy sends requests to now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyView {
    pub listen: String,
    /// `host:port` requests go to; `None` while nothing is live (answered 503).
    pub upstream: Option<String>,
    pub container: Option<String>,
    pub since: Option<String>,
    pub in_flight: usize,
    pub maintenance: bool,
    /// Requests waiting now in a reload's hold.
    pub held: usize,
    /// The image digest of the container it sends to.
    pub digest: Option<String>,
}

/// `GET /api/apps/{app}/deploys`: newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeployList {
    pub app: String,
    pub deploys: Vec<DeployView>,
}

/// `GET /api/apps/{app}/notifications`: the app's messages to its `[[notify]]` receivers,
/// newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotificationList {
    pub app: String,
    pub notifications: Vec<NotificationView>,
}

/// One message to one receiver.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotificationView {
    pub id: i64,
    pub receiver: String,
    pub deploy_id: i64,
    /// `started`, `succeeded`, `failed`, `reverted`, `rolled_back` or `locked`.
    pub event: String,
    /// `pending` (with `next_attempt_at`), `delivered` or `gave_up`.
    pub state: String,
    pub attempts: i64,
    /// Why the last attempt failed (the receiver's status and the start of its answer).
    pub last_error: Option<String>,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub gave_up_at: Option<String>,
}

/// The answer to `POST …/deploy` and `…/rollback`: the deploy as queued (or, with `?wait`,
/// as it ended), and how the target was resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueuedView {
    #[serde(flatten)]
    pub deploy: DeployView,
    pub deploy_id: i64,
    /// How the ref or rollback target was resolved, in words.
    pub resolved: String,
}

/// `POST /api/apps/{app}/plan`: what a deploy would do now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlanView {
    pub app: String,
    pub commit: String,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub resolved: String,
    /// The commit deployed now.
    pub deployed: Option<String>,
    /// `fast` or `full`.
    pub path: String,
    pub reason: String,
    /// How many paths change.
    pub changed: usize,
    /// The first of them.
    pub changes: Vec<ChangeView>,
    pub changes_truncated: bool,
    /// The app's `paths` (a monorepo's service) against these changes; `None`: no `paths`.
    pub paths: Option<PathsView>,
    /// The hooks a manual deploy would run, in order.
    pub hooks: Vec<HookView>,
    pub locked: Option<LockView>,
}

/// An app's `paths` against a plan's changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PathsView {
    pub patterns: Vec<String>,
    /// How many changed paths fall under them; 0: a push would be ignored (a deploy by hand,
    /// and a first deploy, runs).
    pub matching: usize,
}

/// One changed path of a plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChangeView {
    /// `write` or `delete`.
    pub op: String,
    pub path: String,
}

/// A hook a deploy would run, and why it cannot, if it cannot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HookView {
    pub stage: String,
    pub path: String,
    pub problem: Option<String>,
}

/// `POST /api/apps/{app}/lock`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LockAnswer {
    pub app: String,
    pub locked: LockView,
}

/// `DELETE /api/apps/{app}/lock`: the lock removed, if there was one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnlockAnswer {
    pub app: String,
    pub unlocked: Option<LockView>,
}

/// `POST` / `DELETE /api/apps/{app}/maintenance`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MaintenanceView {
    pub app: String,
    pub maintenance: bool,
    pub changed_by: String,
    pub changed_at: String,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`.
    pub status: String,
    pub version: String,
}

/// Every 4xx/5xx answer's body. A 409 for a locked app carries the lock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockView>,
}

/// An SSE `step` event of `GET /api/deploys/{id}/events`: a step started or ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepEvent {
    /// The step's number within the deploy.
    pub step: i64,
    pub stage: String,
    /// `started` or `ended`.
    pub state: String,
    /// Started: what it works on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Ended: whether it succeeded, and its output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub at: Option<String>,
}

/// An SSE `status` event: the deploy's status changed (the last one is terminal).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusEvent {
    pub status: String,
    pub reason: Option<String>,
    pub error: Option<String>,
}

/// The answer to a webhook delivery (`POST /hooks/github…`). `status` is `queued`, `locked`,
/// `ignored` (with its `reason`), `duplicate` (a redelivery: with the first one's `outcome`)
/// or, for a ping, `pong`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookAnswer {
    pub status: String,
    /// GitHub's delivery id.
    pub delivery: String,
    /// One per app the push deploys (none for a ping).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploys: Option<Vec<QueuedDeploy>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The first deploy's id and app.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// A deploy a delivery queued (or recorded `locked`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueuedDeploy {
    pub app: String,
    pub deploy_id: i64,
    pub url: String,
    /// `locked` when the app is locked; absent when queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// `POST /api/apps/{app}/deploy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// A branch or tag name, a full ref (`refs/…`) or a commit id (7-40 hex digits); default:
    /// the tip of the app's branch.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// `fast` or `full` (an app with a container spec only); default: as the plan decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Deploy even while the app is locked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// `POST /api/apps/{app}/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// What to go back to; default: the last succeeded deploy before the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<RollbackTarget>,
    /// Roll back even while the app is locked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// `POST /api/apps/{app}/promote`: run what a deploy of another app ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// A succeeded deploy of another app of the same repository: its commit and image digest.
    pub from_deploy: i64,
    /// Promote even while the app is locked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// A rollback's target: a commit id or tag (a JSON string) or a deploy id (a JSON number).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RollbackTarget {
    /// A commit id (at least 7 hex digits) or a tag.
    Spec(String),
    /// A deploy of the app that succeeded: a positive integer.
    Deploy(i64),
}

impl<'de> Deserialize<'de> for RollbackTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RollbackTargetVisitor)
    }
}

struct RollbackTargetVisitor;

impl RollbackTargetVisitor {
    fn not_positive<E: de::Error>(id: impl fmt::Display) -> E {
        E::custom(format!("deploy id {id} must be a positive integer"))
    }
}

impl Visitor<'_> for RollbackTargetVisitor {
    type Value = RollbackTarget;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a commit id or tag (string) or a deploy id (number)")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RollbackTarget, E> {
        Ok(RollbackTarget::Spec(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RollbackTarget, E> {
        if v > 0 {
            Ok(RollbackTarget::Deploy(v))
        } else {
            Err(Self::not_positive(v))
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RollbackTarget, E> {
        match i64::try_from(v) {
            Ok(id) => self.visit_i64(id),
            Err(_) => Err(Self::not_positive(v)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RollbackTarget, E> {
        // Written as JSON writes it (`2.0`, not `2`).
        match serde_json::Number::from_f64(v) {
            Some(n) => Err(Self::not_positive(n)),
            None => Err(Self::not_positive(v)),
        }
    }
}

/// `POST /api/apps/{app}/plan`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// As [`DeployRequest::git_ref`].
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
}

/// `POST /api/apps/{app}/lock`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    /// Why, for whoever finds the app locked: 1-500 characters once trimmed (required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
