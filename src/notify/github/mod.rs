//! `[apps.github]`: each deploy of the app as a GitHub *deployment* (environment = the app or
//! its `environment`, ref = the commit) whose statuses follow the deploy — `queued` (once its
//! commit is known), `in_progress` when its path is chosen, `success` / `failure` / `error` at
//! its end, `inactive` for one that was superseded or had nothing to do and for the one a
//! success replaced — with `log_url` at the deploy's dashboard page; and optionally a commit
//! status `dockhand/<app>` (pending, then the end).
//!
//! The app's receiver (`github:<app>`) is fed from the same outbox as `[[notify]]`, so the
//! calls are retried with backoff, kept across restarts and never hold up a deploy. One
//! message makes several calls; what each achieved is recorded as it happens
//! (`github_deployments`: the deployment's id, the last state posted), so a retry resumes after
//! the calls that worked. A message whose last attempt was cut off, or that failed before,
//! may have been acted on by GitHub without dockhand hearing the answer: then dockhand looks
//! before it writes (the deployment listed by commit and environment, carrying this deploy's id
//! in its payload; the deployment's newest status), so nothing is created or posted twice.
//! A commit status is not looked up first: GitHub shows the newest per context, so a repeat is
//! invisible.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub(super) use crate::github_api::Client;
use crate::github_api::{Failure, Repo};

use super::Outcome;
use crate::config::AppGithub;
use crate::store::{Deploy, GithubDeployment, Message, Store, Trigger};

/// GitHub limits a status's description to 140 characters.
const DESCRIPTION_CHARS: usize = 140;

/// The transition statuses [`render`] makes a message of.
pub(super) const TOLD: [&str; 7] = [
    "queued",
    "planned",
    "succeeded",
    "failed",
    "interrupted",
    "superseded",
    "stale",
];

/// What one message asks of GitHub; its outbox `event` is `state`.
#[derive(Debug, Serialize, Deserialize)]
struct Action {
    /// The deployment status to post.
    state: String,
    description: String,
    /// The commit deployed, once known.
    commit: Option<String>,
    git_ref: Option<String>,
    /// The dashboard's page of the deploy.
    log_url: Option<String>,
}

/// One app's GitHub receiver.
pub(super) struct Target {
    /// `github:<app>`: its outbox rows and cursor.
    pub name: String,
    pub app: String,
    pub config: AppGithub,
    pub client: std::sync::Arc<Client>,
}

/// The message transition `status` of `deploy` is, if any: `(state, body)`.
pub(super) fn render(
    target: &Target,
    status: &str,
    deploy: &Deploy,
    link: Option<&str>,
) -> Option<(&'static str, Vec<u8>)> {
    if deploy.app != target.app {
        return None;
    }
    let commit = deploy.to_commit.map(|c| c.to_string()).or_else(|| {
        // Asked for by commit (manual, rollback, promote): known before it runs.
        deploy
            .asked_for()
            .then(|| deploy.requested_sha.clone())
            .flatten()
    });
    let path = deploy.path.map_or("", |p| p.as_str());
    let (state, description) = match status {
        // A push deploys the ref's tip as the origin has it when it runs: its commit is known
        // once planned, so its deployment starts `in_progress`.
        "queued" if deploy.asked_for() && commit.is_some() => {
            ("queued", format!("queued ({})", deploy.trigger.as_str()))
        }
        "planned" => (
            "in_progress",
            format!("{path} path: {}", deploy.reason.as_deref().unwrap_or("")),
        ),
        "succeeded" if deploy.trigger == Trigger::Rollback => {
            ("success", format!("rolled back ({path} path)"))
        }
        "succeeded" => ("success", format!("deployed ({path} path)")),
        "failed" if deploy.reverted => (
            "failure",
            format!(
                "failed and put back, the previous version serves: {}",
                deploy.error.as_deref().unwrap_or("")
            ),
        ),
        "failed" => (
            "failure",
            format!("failed: {}", deploy.error.as_deref().unwrap_or("")),
        ),
        "interrupted" => (
            "error",
            "interrupted: dockhand stopped during the deploy".into(),
        ),
        "superseded" => (
            "inactive",
            match deploy.superseded_by {
                Some(by) => format!("superseded by deploy {by}"),
                None => "superseded".into(),
            },
        ),
        "stale" => (
            "inactive",
            format!(
                "nothing deployed: {}",
                deploy.reason.as_deref().unwrap_or("")
            ),
        ),
        _ => return None,
    };
    let action = Action {
        state: state.into(),
        description: truncate(description.trim_end_matches([' ', ':'])),
        commit,
        git_ref: deploy.git_ref.clone(),
        log_url: link.map(str::to_string),
    };
    Some((
        state,
        serde_json::to_vec(&action).expect("an action always serializes"),
    ))
}

/// One attempt at message `m`: the deployment (created if need be), its status, `inactive`
/// for the ones a success replaced, the commit status.
pub(super) async fn attempt(store: &Store, target: &Target, m: &Message) -> Outcome {
    match act(store, target, m).await {
        Ok(()) => Outcome::Delivered,
        Err(Failure::Retry { error, after }) => Outcome::Retry(error, after),
        Err(Failure::Final(error)) => Outcome::GiveUp(error),
    }
}

async fn act(store: &Store, target: &Target, m: &Message) -> Result<(), Failure> {
    let action: Action = serde_json::from_slice(&m.body)
        .map_err(|e| Failure::Final(format!("an unreadable outbox message: {e}")))?;
    let repo = Repo {
        owner: target.config.owner.clone(),
        name: target.config.repo.clone(),
    };
    // It may have been acted on without dockhand hearing the answer: look before writing.
    let repeat = m.begun || m.attempts > 0;
    let call = Calls {
        store,
        target,
        repo: &repo,
        repeat,
    };
    if target.config.deployments {
        let known = store
            .github_deployment(m.deploy_id)
            .await
            .map_err(internal)?;
        let deployment = match (known, &action.commit) {
            (Some(d), _) => Some(d),
            (None, Some(commit)) if action.state != "inactive" => {
                Some(call.create(m.deploy_id, commit, &action).await?)
            }
            (None, _) => None,
        };
        if let Some(d) = deployment {
            call.status(&d, &action.state, &action.description, &action)
                .await?;
            if action.state == "success" {
                let replaced = store
                    .github_replaced(&target.app, &target.config.environment, m.deploy_id)
                    .await
                    .map_err(internal)?;
                let said = format!("replaced by deploy {}", m.deploy_id);
                for old in replaced {
                    call.status(&old, "inactive", &said, &action).await?;
                }
            }
        }
    }
    if target.config.commit_status {
        if let (Some(state), Some(commit)) = (commit_state(&action.state), &action.commit) {
            let path = format!("/repos/{}/{}/statuses/{commit}", repo.owner, repo.name);
            let mut body = json!({
                "state": state,
                "description": action.description,
                "context": format!("dockhand/{}", target.app),
            });
            if let Some(url) = &action.log_url {
                body["target_url"] = json!(url);
            }
            target.client.post(&repo, &path, &body).await?;
        }
    }
    Ok(())
}

/// A commit status's state for a deployment status's; `None`: not posted.
fn commit_state(state: &str) -> Option<&'static str> {
    Some(match state {
        "in_progress" => "pending",
        "success" => "success",
        "failure" => "failure",
        "error" => "error",
        _ => return None,
    })
}

/// The calls of one attempt.
struct Calls<'a> {
    store: &'a Store,
    target: &'a Target,
    repo: &'a Repo,
    repeat: bool,
}

impl Calls<'_> {
    fn deployments(&self) -> String {
        format!("/repos/{}/{}/deployments", self.repo.owner, self.repo.name)
    }

    /// Deploy `deploy_id`'s deployment of `commit`: found (on a repeat) or created, recorded.
    async fn create(
        &self,
        deploy_id: i64,
        commit: &str,
        action: &Action,
    ) -> Result<GithubDeployment, Failure> {
        let environment = &self.target.config.environment;
        let found = if self.repeat {
            self.find(deploy_id, commit).await?
        } else {
            None
        };
        let github_id = match found {
            Some(id) => id,
            None => {
                let body = json!({
                    "ref": commit,
                    "environment": environment,
                    "description": action.description,
                    // dockhand deploys what it was given: GitHub is told, not asked.
                    "auto_merge": false,
                    "required_contexts": [],
                    "payload": { "dockhand": { "app": self.target.app, "deploy_id": deploy_id, "ref": action.git_ref } },
                });
                let answer = self
                    .target
                    .client
                    .post(self.repo, &self.deployments(), &body)
                    .await?;
                answer["id"].as_i64().ok_or_else(|| {
                    Failure::Final(format!(
                        "GitHub did not create the deployment: {}",
                        answer["message"].as_str().unwrap_or("no id in its answer")
                    ))
                })?
            }
        };
        self.store
            .record_github_deployment(deploy_id, &self.target.app, environment, github_id)
            .await
            .map_err(internal)?;
        Ok(GithubDeployment {
            deploy_id,
            github_id,
            state: None,
        })
    }

    /// The deployment of `commit` in the app's environment whose payload names `deploy_id`.
    async fn find(&self, deploy_id: i64, commit: &str) -> Result<Option<i64>, Failure> {
        let environment = &self.target.config.environment;
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("sha", commit)
            .append_pair("environment", environment)
            .append_pair("per_page", "100")
            .finish();
        let listed = self
            .target
            .client
            .get(self.repo, &format!("{}?{query}", self.deployments()))
            .await?;
        let ours = |d: &&Value| {
            let p = &d["payload"]["dockhand"];
            p["deploy_id"].as_i64() == Some(deploy_id)
                && p["app"].as_str() == Some(&self.target.app)
        };
        Ok(listed
            .as_array()
            .and_then(|all| all.iter().find(ours))
            .and_then(|d| d["id"].as_i64()))
    }

    /// Post `state` to `d` unless it is its last state already (recorded, or — on a repeat —
    /// GitHub's newest status of it).
    async fn status(
        &self,
        d: &GithubDeployment,
        state: &str,
        description: &str,
        action: &Action,
    ) -> Result<(), Failure> {
        if d.state.as_deref() == Some(state) {
            return Ok(());
        }
        let path = format!("{}/{}/statuses", self.deployments(), d.github_id);
        let newest = if self.repeat {
            let listed = self
                .target
                .client
                .get(self.repo, &format!("{path}?per_page=1"))
                .await?;
            listed[0]["state"].as_str().map(str::to_string)
        } else {
            None
        };
        if newest.as_deref() != Some(state) {
            let mut body = json!({
                "state": state,
                "description": truncate(description),
                // dockhand says which one it replaced; GitHub's guess skips production.
                "auto_inactive": false,
            });
            if let Some(url) = &action.log_url {
                body["log_url"] = json!(url);
            }
            self.target.client.post(self.repo, &path, &body).await?;
        }
        self.store
            .github_state(d.deploy_id, state)
            .await
            .map_err(internal)
    }
}

fn internal(e: anyhow::Error) -> Failure {
    Failure::retry(format!("the store: {e:#}"))
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= DESCRIPTION_CHARS {
        return s.to_string();
    }
    let mut out: String = s.chars().take(DESCRIPTION_CHARS - 1).collect();
    out.push('…');
    out
}
