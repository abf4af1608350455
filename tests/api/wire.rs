//! The API's contract is the `dockhand::api` types, which the server serializes and the CLI
//! deserializes: a field renamed there is renamed on both sides or the build breaks. What is
//! left to prove is that every answer on the wire is exactly such a type — nothing added by
//! hand beside it, nothing it holds missing. Each answer of a real server is read as its type
//! and written back: it must come out equal.

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::support::helpers::*;
use crate::support::ops::{spawn_ops, sse_events, ADMIN};
use dockhand::api::{
    AppList, AppView, DeployList, DeployView, ErrorBody, Health, LockAnswer, PlanView, QueuedView,
    StatusEvent, StepEvent, UnlockAnswer, WebhookAnswer,
};

/// `value` read as `T` and written back is `value` again.
fn exactly<T: DeserializeOwned + Serialize>(what: &str, value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{what} does not read as its api type: {e}\n{value:#}"));
    let again = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &again, value,
        "{what}: the wire holds more or other than its api type"
    );
    typed
}

#[tokio::test]
async fn every_answer_of_the_api_is_exactly_its_shared_type() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let first = origin.head();
    let pushed = ops.app.push_ref("refs/heads/main", &first, false).await;
    let pushed: WebhookAnswer = exactly("a webhook's answer", &pushed.json().await.unwrap());
    let deployed = ops
        .wait(pushed.deploy_id.expect("the push names its deploy"))
        .await;
    assert_eq!(deployed["status"], "succeeded");
    let ping = br#"{"zen": "Keep it logically awesome.", "hook_id": 42}"#.to_vec();
    let pong = ops.app.send_signed("/hooks/github", "ping", ping).await;
    let pong: WebhookAnswer = exactly("a ping's answer", &pong.json().await.unwrap());
    assert_eq!(pong.status, "pong");
    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("v2");

    let plan: PlanView = exactly("plan", &ops.post("/api/apps/web/plan", json!({})).await.1);
    assert_eq!(plan.commit, second);
    let (_, queued) = ops.post("/api/apps/web/deploy", json!({})).await;
    let queued: QueuedView = exactly("a queued deploy", &queued);
    let done = ops.wait(queued.deploy_id).await;
    let done: DeployView = exactly("a deploy with its steps", &done);
    assert_eq!(done.status, "succeeded");
    assert!(!done.steps.unwrap_or_default().is_empty());

    let apps: AppList = exactly("the app list", &ops.get("/api/apps").await);
    assert_eq!(apps.apps.len(), 2);
    let web: AppView = exactly("an app", &ops.get("/api/apps/web").await);
    assert_eq!(web.deployed.map(|d| d.commit), Some(second.clone()));
    let list: DeployList = exactly("a deploy list", &ops.get("/api/apps/web/deploys").await);
    assert_eq!(list.deploys.len(), 2);

    let (_, locked) = ops
        .post(
            "/api/apps/web/lock",
            json!({ "reason": "checking the wire" }),
        )
        .await;
    let locked: LockAnswer = exactly("a lock", &locked);
    let (status, refused) = ops.post("/api/apps/web/deploy", json!({})).await;
    assert_eq!(status, 409);
    let refused: ErrorBody = exactly("a 409", &refused);
    assert_eq!(refused.lock, Some(locked.locked));
    let unlocked = ops
        .call(
            Method::DELETE,
            "/api/apps/web/lock",
            Some(ADMIN),
            Value::Null,
        )
        .await;
    let _: UnlockAnswer = exactly("an unlock", &unlocked.json().await.unwrap());

    let health = ops
        .app
        .client
        .get(ops.app.url("/healthz"))
        .send()
        .await
        .unwrap();
    let _: Health = exactly("health", &health.json().await.unwrap());

    let events = ops
        .call(
            Method::GET,
            &format!("/api/deploys/{}/events", queued.deploy_id),
            Some(ADMIN),
            Value::Null,
        )
        .await
        .text()
        .await
        .unwrap();
    let events = sse_events(&events);
    assert!(events.iter().any(|(e, _)| e == "step"), "{events:?}");
    for (event, data) in &events {
        match event.as_str() {
            "step" => drop(exactly::<StepEvent>("a step event", data)),
            "status" => drop(exactly::<StatusEvent>("a status event", data)),
            other => panic!("an event the api does not type: {other}"),
        }
    }
}
