//! The operations API on the full path, against the real engine and the loopback registry:
//! a rollback runs the digest recorded at deploy time, and SSE follows a running deploy.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::engine::{unique, Cleanup};
use crate::support::full::docker_cli;
use crate::support::helpers::*;
use crate::support::ops::{spawn_ops_edited, sse_events, Ops, ADMIN};

const V1: &str = "127.0.0.1:5000/dockhand-test/app:v1";
const V2: &str = "127.0.0.1:5000/dockhand-test/app:v2";

/// Point `tag` in the registry at the content of `source`.
fn publish(source: &str, tag: &str) {
    docker_cli(&["tag", source, tag]);
    docker_cli(&["push", tag]);
}

/// An ops server whose app (its own name, for container labels) runs `image`.
async fn spawn_full(origin: &Origin, image: &str, server: &str, extra: &str) -> (Ops, String) {
    let name = unique("ops").replace("dockhand-test-", "");
    let container = format!(
        "[apps.container]\nimage = \"{image}\"\nmount = \"/code\"\nexpect_body_contains = \"v\"\n\
         health_interval = \"100ms\"\nhealth_deadline = \"20s\"\nstop_grace = \"1s\"\n{extra}"
    );
    let ops = spawn_ops_edited(origin, server, &container, |t| {
        t.replace("name = \"web\"", &format!("name = \"{name}\""))
    })
    .await;
    (ops, name)
}

async fn served(ops: &Ops, name: &str) -> (Value, String) {
    let container = ops.get(&format!("/api/apps/{name}")).await["container"].clone();
    let port = container["port"].as_u64().unwrap();
    let (_, body) = get_page(&format!("http://127.0.0.1:{port}/")).await;
    (container, body)
}

#[tokio::test]
async fn a_full_path_rollback_runs_the_recorded_digest_without_pulling_after_the_tag_was_repushed()
{
    let repo = format!(
        "127.0.0.1:5000/dockhand-test/{}",
        unique("rollback").replace("dockhand-test-", "")
    );
    let tag = format!("{repo}:live");
    publish(V1, &tag);
    let origin = Origin::new();
    let (ops, name) = spawn_full(&origin, &tag, "", "").await;
    let _cleanup = Cleanup::app(&name);

    let first = ops.pushed(&origin.head()).await;
    assert_eq!(first["path"], "full", "{first:#}");
    let digest_a = first["digest"].as_str().unwrap().to_string();
    assert!(
        digest_a.starts_with(&format!("{repo}@sha256:")),
        "{first:#}"
    );

    // The same tag now names other content; a dependency change deploys it.
    publish(V2, &tag);
    origin.write("requirements.txt", "flask==3\n");
    let second = ops.pushed(&origin.commit("deps")).await;
    assert_eq!(second["path"], "full", "{second:#}");
    assert_ne!(second["digest"], digest_a, "{second:#}");
    assert!(served(&ops, &name).await.1.contains("v2"));

    let (status, answer) = ops
        .post(
            &format!("/api/apps/{name}/rollback?wait=true"),
            json!({ "to": first["id"] }),
        )
        .await;
    assert_eq!(status, 200, "{answer:#}");
    let back = ops
        .get(&format!("/api/deploys/{}", answer["deploy_id"]))
        .await;
    assert_eq!(back["status"], "succeeded", "{back:#}");
    assert_eq!(back["path"], "full", "{back:#}");
    assert_eq!(back["digest"], digest_a.as_str());
    assert_eq!(back["to_commit"], first["to_commit"]);
    let pull = step(&back, "pull");
    assert!(
        pull["output"]
            .as_str()
            .unwrap()
            .contains("present locally: not pulled"),
        "{pull:#}"
    );
    let (container, body) = served(&ops, &name).await;
    assert!(body.contains("v1"), "the first image answers again: {body}");
    assert_eq!(container["digest"], digest_a.as_str());
    assert_eq!(
        container["image"],
        digest_a.as_str(),
        "run by digest, not by tag"
    );
}

#[tokio::test]
async fn events_of_a_running_deploy_follow_it_live_and_wait_outlasts_the_request_timeout() {
    let origin = Origin::new();
    // The health gate waits 2 s before its first probe: the deploy is surely running when the
    // stream opens, and it takes longer than the 1 s request deadline.
    let (ops, name) = spawn_full(
        &origin,
        V1,
        "request_timeout = \"1s\"\n",
        "health_grace = \"2s\"\n",
    )
    .await;
    let _cleanup = Cleanup::app(&name);
    let (status, queued) = ops
        .post(
            &format!("/api/apps/{name}/deploy"),
            json!({ "path": "full" }),
        )
        .await;
    assert_eq!(status, 202, "{queued:#}");
    let id = queued["deploy_id"].as_i64().unwrap();

    let stream = ops
        .call(
            Method::GET,
            &format!("/api/deploys/{id}/events"),
            Some(ADMIN),
            Value::Null,
        )
        .await;
    assert_eq!(stream.status(), 200);
    let when_opened = ops.get(&format!("/api/deploys/{id}")).await["status"].clone();
    assert!(
        when_opened == "queued" || when_opened == "running",
        "{when_opened}"
    );
    let body = tokio::time::timeout(Duration::from_secs(60), stream.text())
        .await
        .expect("the stream closes after the terminal status")
        .unwrap();

    let events = sse_events(&body);
    let mut seen = BTreeSet::new();
    for (event, data) in &events {
        if event == "step" {
            let key = (data["step"].as_i64().unwrap(), data["state"].to_string());
            assert!(seen.insert(key), "an event was sent twice: {body}");
        }
    }
    let health: Vec<&Value> = events
        .iter()
        .filter(|(e, d)| e == "step" && d["stage"] == "health")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(health.len(), 2, "{body}");
    assert_eq!(health[1]["state"], "ended");
    assert_eq!(health[1]["ok"], true);
    let (last, data) = events.last().unwrap();
    assert_eq!(
        (last.as_str(), &data["status"]),
        ("status", &json!("succeeded")),
        "{body}"
    );

    let deploy = ops.get(&format!("/api/deploys/{id}")).await;
    assert_eq!(deploy["requested_path"], "full");
    assert!(
        deploy["reason"]
            .as_str()
            .unwrap()
            .contains("full path requested explicitly"),
        "{deploy:#}"
    );

    // ?wait=true holds the answer past request_timeout until the deploy is over.
    let (status, waited) = ops
        .post(
            &format!("/api/apps/{name}/deploy?wait=true"),
            json!({ "path": "full" }),
        )
        .await;
    assert_eq!(status, 200, "{waited:#}");
    assert_eq!(waited["status"], "succeeded", "{waited:#}");
}

#[tokio::test]
async fn a_promote_runs_the_digest_the_other_app_ran_even_after_its_tag_was_repushed() {
    let repo = format!(
        "127.0.0.1:5000/dockhand-test/{}",
        unique("promote").replace("dockhand-test-", "")
    );
    let tag = format!("{repo}:live");
    publish(V1, &tag);
    let origin = Origin::new();
    let staging = unique("staging").replace("dockhand-test-", "");
    let production = unique("prod").replace("dockhand-test-", "");
    let container = format!(
        "[apps.container]\nimage = \"{tag}\"\nmount = \"/code\"\nexpect_body_contains = \"v\"\n\
         health_interval = \"100ms\"\nhealth_deadline = \"20s\"\nstop_grace = \"1s\"\n"
    );
    // `web` (staging) and `other` (production) track the same origin, each with a container.
    let (c2, s2, p2) = (container.clone(), staging.clone(), production.clone());
    let ops = spawn_ops_edited(&origin, "", &container, move |t| {
        t.replace("name = \"web\"", &format!("name = \"{s2}\""))
            .replace("\"other\"", &format!("\"{p2}\""))
            .replacen("\n[[tokens]]", &format!("\n{c2}\n[[tokens]]"), 1)
    })
    .await;
    let (_c1, _c2) = (Cleanup::app(&staging), Cleanup::app(&production));

    let staged = ops.pushed(&origin.head()).await;
    assert_eq!(staged["path"], "full", "{staged:#}");
    let digest = staged["digest"].as_str().unwrap().to_string();
    // The tag moves on after staging ran it; production must get what staging tested.
    publish(V2, &tag);

    let done = ops
        .asked(
            &format!("/api/apps/{production}/promote"),
            json!({ "from_deploy": staged["id"] }),
        )
        .await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(done["trigger"], "promote", "{done:#}");
    assert_eq!(done["digest"], digest.as_str(), "{done:#}");
    assert_eq!(done["to_commit"], staged["to_commit"], "{done:#}");
    let (container, body) = served(&ops, &production).await;
    assert!(body.contains("v1"), "staging's image answers: {body}");
    assert_eq!(
        container["image"],
        digest.as_str(),
        "run by digest, not by tag"
    );
}
