//! The CLI client: `dockhand deploy|rollback|plan|history|logs|lock|unlock|status|maintenance`
//! against a running server's JSON API: answers are read as the `api` types the server
//! writes, and `render` turns them into text.
//!
//! The token goes only into the `Authorization` header (marked sensitive) and is never
//! printed; `--json` prints the API's body exactly as received. Exit codes: 0 done, 1 a
//! followed deploy did not succeed, 2 usage errors and every error (shown as `error: …`).

mod render;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;

use crate::api::{
    AppList, DeployList, DeployRequest, DeployView, ErrorBody, LockAnswer, LockRequest,
    MaintenanceView, PlanRequest, PlanView, PromoteRequest, QueuedView, RollbackRequest,
    RollbackTarget, UnlockAnswer,
};
use crate::cli::{ClientCommand, Connection, QueueArgs, Switch};
use crate::redact::redact_url;
use render::{Follower, Plain, Spinners};

/// How long one non-streaming call may take (a `plan` fetches, so not short).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Run one client command; prints errors as `error: …`.
pub async fn main(command: ClientCommand) -> ExitCode {
    match run(command).await {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::DeployNotSucceeded) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// How a command ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command did what it was asked.
    Done,
    /// A followed deploy reached a terminal status other than `succeeded`.
    DeployNotSucceeded,
}

/// One command: its client, its call, its output.
async fn run(command: ClientCommand) -> anyhow::Result<Outcome> {
    match command {
        ClientCommand::Deploy {
            app,
            git_ref,
            full,
            fast,
            queue,
            conn,
        } => {
            let client = Client::new(&conn)?;
            let path = format!("/api/apps/{}/deploy", segment(&app));
            let body = DeployRequest {
                force: queue.force.then_some(true),
                ..deploy_body(git_ref, full, fast)
            };
            queued(&client, &path, &body, &queue).await
        }
        ClientCommand::Rollback {
            app,
            to,
            queue,
            conn,
        } => {
            let client = Client::new(&conn)?;
            let path = format!("/api/apps/{}/rollback", segment(&app));
            let body = RollbackRequest {
                to: to.as_deref().map(rollback_target),
                force: queue.force.then_some(true),
            };
            queued(&client, &path, &body, &queue).await
        }
        ClientCommand::Promote {
            app,
            from_deploy,
            queue,
            conn,
        } => {
            let client = Client::new(&conn)?;
            let path = format!("/api/apps/{}/promote", segment(&app));
            let body = PromoteRequest {
                from_deploy,
                force: queue.force.then_some(true),
            };
            queued(&client, &path, &body, &queue).await
        }
        ClientCommand::Plan {
            app,
            git_ref,
            json,
            conn,
        } => plan(&Client::new(&conn)?, &app, git_ref, json).await,
        ClientCommand::History {
            app,
            limit,
            json,
            conn,
        } => history(&Client::new(&conn)?, &app, limit, json).await,
        ClientCommand::Logs {
            deploy_id,
            follow,
            json,
            conn,
        } => logs(&Client::new(&conn)?, deploy_id, follow, json).await,
        ClientCommand::Lock { app, reason, conn } => lock(&Client::new(&conn)?, &app, reason).await,
        ClientCommand::Unlock { app, conn } => unlock(&Client::new(&conn)?, &app).await,
        ClientCommand::Status { json, conn } => status(&Client::new(&conn)?, json).await,
        ClientCommand::Maintenance { app, state, conn } => {
            maintenance(&Client::new(&conn)?, &app, state).await
        }
    }
}

/// The body of `dockhand deploy`: the ref and the path, when given.
fn deploy_body(git_ref: Option<String>, full: bool, fast: bool) -> DeployRequest {
    let path = if full {
        Some("full")
    } else if fast {
        Some("fast")
    } else {
        None
    };
    DeployRequest {
        git_ref,
        path: path.map(str::to_string),
        force: None,
    }
}

/// `dockhand plan`: what a deploy of `git_ref` would do.
async fn plan(
    client: &Client,
    app: &str,
    git_ref: Option<String>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let body = PlanRequest { git_ref };
    let path = format!("/api/apps/{}/plan", segment(app));
    let (text, value): (_, PlanView) = client.post(&path, &body).await?;
    print_or(json, &text, || render::plan(&value))
}

/// `dockhand history`: an app's last `limit` deploys.
async fn history(client: &Client, app: &str, limit: u32, json: bool) -> anyhow::Result<Outcome> {
    let path = format!("/api/apps/{}/deploys?limit={limit}", segment(app));
    let (text, value): (_, DeployList) = client.call(Method::GET, &path).await?;
    print_or(json, &text, || render::history(&value))
}

/// `dockhand logs`: one deploy's steps, or its events as they come with `--follow`.
async fn logs(
    client: &Client,
    deploy_id: u64,
    follow: bool,
    json: bool,
) -> anyhow::Result<Outcome> {
    if follow {
        return client.follow(deploy_id, json).await;
    }
    let (text, value): (_, DeployView) = client
        .call(Method::GET, &format!("/api/deploys/{deploy_id}"))
        .await?;
    print_or(json, &text, || render::logs(&value))
}

/// `dockhand lock`: lock an app with a reason.
async fn lock(client: &Client, app: &str, reason: String) -> anyhow::Result<Outcome> {
    let path = format!("/api/apps/{}/lock", segment(app));
    let body = LockRequest {
        reason: Some(reason),
    };
    let (_, value): (_, LockAnswer) = client.post(&path, &body).await?;
    print_or(false, "", || render::locked(&value))
}

/// `dockhand unlock`.
async fn unlock(client: &Client, app: &str) -> anyhow::Result<Outcome> {
    let path = format!("/api/apps/{}/lock", segment(app));
    let (_, value): (_, UnlockAnswer) = client.call(Method::DELETE, &path).await?;
    print_or(false, "", || render::unlocked(&value))
}

/// `dockhand status`: every app.
async fn status(client: &Client, json: bool) -> anyhow::Result<Outcome> {
    let (text, value): (_, AppList) = client.call(Method::GET, "/api/apps").await?;
    print_or(json, &text, || render::status(&value))
}

/// `dockhand maintenance on|off`.
async fn maintenance(client: &Client, app: &str, state: Switch) -> anyhow::Result<Outcome> {
    let path = format!("/api/apps/{}/maintenance", segment(app));
    let method = match state {
        Switch::On => Method::POST,
        Switch::Off => Method::DELETE,
    };
    let (_, value): (_, MaintenanceView) = client.call(method, &path).await?;
    print_or(false, "", || render::maintenance(&value))
}

/// POST a deploy or rollback; print its id and URL (or the JSON), then follow it if asked.
async fn queued(
    client: &Client,
    path: &str,
    body: &impl Serialize,
    args: &QueueArgs,
) -> anyhow::Result<Outcome> {
    let QueueArgs { follow, json, .. } = *args;
    let (text, value): (String, QueuedView) = client.post(path, body).await?;
    let id = u64::try_from(value.deploy_id)
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| anyhow!("the server's answer names no deploy_id: {text}"))?;
    if json {
        println!("{}", text.trim_end());
    } else {
        println!(
            "{}",
            render::queued(&value, &client.url(&format!("/api/deploys/{id}")))
        );
    }
    if follow {
        client.follow(id, json).await
    } else {
        Ok(Outcome::Done)
    }
}

/// `--json`: the body as received; otherwise the rendering.
fn print_or(json: bool, text: &str, render: impl FnOnce() -> String) -> anyhow::Result<Outcome> {
    let out = if json {
        text.trim_end().to_string()
    } else {
        render()
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", out.trim_end()).context("writing to stdout")?;
    Ok(Outcome::Done)
}

/// `--to 41` is a deploy id (a JSON number: commit ids have at least 7 digits); anything else
/// is a commit id or tag.
fn rollback_target(to: &str) -> RollbackTarget {
    let id = (to.len() < 7)
        .then(|| to.parse::<u64>().ok())
        .flatten()
        .and_then(|id| i64::try_from(id).ok());
    match id {
        Some(id) => RollbackTarget::Deploy(id),
        None => RollbackTarget::Spec(to.to_string()),
    }
}

/// An app name as one URL path segment (names are validated by the server; this only keeps
/// a `/` or `?` from changing which endpoint is called).
fn segment(name: &str) -> String {
    form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// An HTTP client for one server and token.
struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    fn new(conn: &Connection) -> anyhow::Result<Client> {
        let base = Url::parse(conn.url.trim_end_matches('/'))
            .with_context(|| format!("--url / DOCKHAND_URL {:?}", redact_url(&conn.url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!(
                "--url / DOCKHAND_URL must be http:// or https://, not {}",
                base.scheme()
            );
        }
        if !base.username().is_empty() || base.password().is_some() || base.query().is_some() {
            bail!(
                "--url / DOCKHAND_URL must not carry credentials or a query: set DOCKHAND_TOKEN \
                 (it goes in the Authorization header)"
            );
        }
        let token = match (&conn.token, &conn.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading DOCKHAND_TOKEN_FILE {}", file.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        }
        .filter(|t| !t.is_empty());
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("dockhand-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Client { http, base, token })
    }

    /// The absolute URL of an API path.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.as_str().trim_end_matches('/'))
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            // bearer_auth marks the header sensitive, so it never shows in debug output.
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// One call without a body; the answer as [`Client::answer`] reads it.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> anyhow::Result<(String, T)> {
        self.answer(self.request(method, path)).await
    }

    /// A POST of `body` as JSON; the answer as [`Client::answer`] reads it.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<(String, T)> {
        self.answer(self.request(Method::POST, path).json(body))
            .await
    }

    /// Send `request`; the body text as received and parsed. A non-2xx answer is an error
    /// carrying the API's `error` message.
    async fn answer<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(String, T)> {
        let response = request
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(self.refused(status, &text));
        }
        let value = serde_json::from_str(&text).with_context(|| {
            format!("the server answered {status} with what this client cannot read: {text}")
        })?;
        Ok((text, value))
    }

    /// The API's refusal: its `error` message, as a person can act on it (a hint for 401).
    fn refused(&self, status: StatusCode, text: &str) -> anyhow::Error {
        let said = serde_json::from_str::<ErrorBody>(text)
            .ok()
            .map(|body| body.error)
            .filter(|error| !error.is_empty())
            .unwrap_or_else(|| {
                let text = text.trim();
                if text.is_empty() {
                    status.to_string()
                } else {
                    format!("{status}: {text}")
                }
            });
        let message = match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() => format!(
                "{said}: no API token given; set DOCKHAND_TOKEN (or DOCKHAND_TOKEN_FILE, or --token)"
            ),
            StatusCode::UNAUTHORIZED => format!(
                "{said}: the server did not accept the token; set DOCKHAND_TOKEN to a token from its [[tokens]]"
            ),
            _ => said,
        };
        anyhow::anyhow!(message)
    }

    /// A transport error, naming the server (without credentials) and the root cause.
    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        let url = redact_url(self.base.as_str());
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        if e.is_connect() {
            anyhow!("cannot reach dockhand at {url}: {cause} (is `dockhand serve` running there? set --url or DOCKHAND_URL)")
        } else if e.is_timeout() {
            anyhow!("dockhand at {url} did not answer in time")
        } else {
            anyhow!("talking to dockhand at {url}: {cause}")
        }
    }

    /// Follow deploy `id`'s events until its terminal status: spinners on a terminal, plain
    /// lines otherwise, one JSON event per line with `json`.
    async fn follow(&self, id: u64, json: bool) -> anyhow::Result<Outcome> {
        let path = format!("/api/deploys/{id}/events");
        let response = self
            .request(Method::GET, &path)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(self.refused(status, &text));
        }
        let mut follower: Box<dyn Follower> = if json {
            Box::new(render::JsonLines)
        } else if std::io::stdout().is_terminal() {
            Box::new(Spinners::new(id))
        } else {
            Box::new(Plain::new(id, std::io::stdout()))
        };
        let mut events = response.bytes_stream().eventsource();
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| {
                anyhow!(
                    "the event stream of deploy {id} broke ({e}); it may still be running: \
                     dockhand logs {id} --follow"
                )
            })?;
            if let Some(status) = follower.event(&event.event, &event.data)? {
                follower.finish();
                return Ok(if status == "succeeded" {
                    Outcome::Done
                } else {
                    Outcome::DeployNotSucceeded
                });
            }
        }
        follower.finish();
        bail!(
            "the event stream of deploy {id} ended before its terminal status; it may still be \
             running: dockhand logs {id} --follow"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    fn target(to: &str) -> serde_json::Value {
        serde_json::to_value(rollback_target(to)).unwrap()
    }

    #[test]
    fn a_short_number_is_a_deploy_id_and_anything_else_a_commit_or_tag() {
        assert_eq!(target("41"), json!(41));
        assert_eq!(target("1234567"), json!("1234567"));
        assert_eq!(target("v1.2"), json!("v1.2"));
        assert_eq!(target("abc1234"), json!("abc1234"));
        assert_eq!(target("-3"), json!("-3"));
    }

    #[test]
    fn the_bodies_carry_only_what_was_given() {
        fn sent(body: &impl Serialize) -> serde_json::Value {
            serde_json::to_value(body).unwrap()
        }
        assert_eq!(sent(&deploy_body(None, false, false)), json!({}));
        assert_eq!(
            sent(&deploy_body(Some("main".into()), true, true)),
            json!({ "ref": "main", "path": "full" })
        );
        let forced = DeployRequest {
            force: Some(true),
            ..deploy_body(None, false, true)
        };
        assert_eq!(sent(&forced), json!({ "path": "fast", "force": true }));
        assert_eq!(sent(&RollbackRequest::default()), json!({}));
        assert_eq!(sent(&PlanRequest::default()), json!({}));
    }

    #[test]
    fn an_app_name_cannot_change_the_endpoint() {
        assert_eq!(segment("web"), "web");
        assert_eq!(segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }
}
