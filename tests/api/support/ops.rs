//! A dockhand with two apps (`web`, `other`) and two API tokens (`admin` for every app,
//! `scoped` for `other` only), and the calls the operations tests make on it.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

use crate::support::helpers::*;

pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const SCOPED: &str = "scoped-token-0123456789abcdef";

/// A dockhand with app `web` (plus `other`, which the `scoped` token is limited to) and two
/// tokens: `admin` (every app) and `scoped` (only `other`).
pub struct Ops {
    pub app: TestApp,
    _tokens: TempDir,
}

/// Start it; `app_extra` is added to `web`, `edit` sees the final config text.
pub async fn spawn_ops_edited(
    origin: &Origin,
    server_extra: &str,
    app_extra: &str,
    edit: impl FnOnce(String) -> String,
) -> Ops {
    let tokens = tempfile::tempdir().unwrap();
    let (admin, scoped) = (tokens.path().join("admin"), tokens.path().join("scoped"));
    std::fs::write(&admin, format!("{ADMIN}\n")).unwrap();
    std::fs::write(&scoped, SCOPED).unwrap();
    let extra = format!(
        "\n[[apps]]\nname = \"other\"\nrepo = \"{repo}\"\nsecret = \"another secret\"\nvolume = \"{volume}\"\n{NO_POLL}\
         \n[[tokens]]\nname = \"admin\"\ntoken_file = \"{admin}\"\napps = [\"*\"]\n\
         \n[[tokens]]\nname = \"scoped\"\ntoken_file = \"{scoped}\"\napps = [\"other\"]\n",
        repo = origin.bare.display(),
        volume = tokens.path().join("other-volume").display(),
        admin = admin.display(),
        scoped = scoped.display(),
    );
    let mut app = spawn_app_edited(origin, server_extra, app_extra, |t| {
        edit(format!("{t}{extra}"))
    })
    .await;
    app.bearer = Some(ADMIN.to_string());
    Ops {
        app,
        _tokens: tokens,
    }
}

pub async fn spawn_ops(origin: &Origin, app_extra: &str) -> Ops {
    spawn_ops_edited(origin, "", app_extra, |t| t).await
}

impl Ops {
    /// Stop and start dockhand again on the same config, state and volume.
    pub async fn restart(self) -> Ops {
        Ops {
            app: self.app.restart().await,
            _tokens: self._tokens,
        }
    }

    /// A request with `token` (if any) as the bearer token; JSON `body` unless `Value::Null`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> reqwest::Response {
        let mut request = self.app.client.request(method, self.app.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if !body.is_null() {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// POST as admin; returns status and JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self.call(Method::POST, path, Some(ADMIN), body).await;
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// GET as admin, expecting 200.
    pub async fn get(&self, path: &str) -> Value {
        self.app.get(path).await
    }

    /// Wait until deploy `id` is over; returns it with its steps.
    pub async fn wait(&self, id: i64) -> Value {
        self.app.wait_deploy(id).await
    }

    /// Push `after` to main and wait for its deploy to succeed.
    pub async fn pushed(&self, after: &str) -> Value {
        self.app.deploy(after).await
    }

    /// POST to `path` as admin, expect 202 (or 200 with `?wait=true`), wait; returns the deploy.
    pub async fn asked(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.post(path, body).await;
        assert!(
            status == 202 || status == 200,
            "{path}: {status} {answer:#}"
        );
        self.wait(answer["deploy_id"].as_i64().unwrap()).await
    }

    pub async fn unlock(&self) {
        let response = self
            .call(
                Method::DELETE,
                "/api/apps/web/lock",
                Some(ADMIN),
                Value::Null,
            )
            .await;
        assert_eq!(response.status(), 200);
    }
}

/// The events of an SSE body: `(event, data)` pairs.
pub fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = Some(e.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            Some((event?, serde_json::from_str(&data).ok()?))
        })
        .collect()
}
