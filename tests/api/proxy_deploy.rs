//! Zero-downtime full deploys behind the proxy, on the real engine and registry, under a
//! steady load of real requests.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::support::engine::Cleanup;
use crate::support::full::{live, own_repository, publish_for_commit, spawn_with, BROKEN, V1};
use crate::support::helpers::*;
use crate::support::load::{Load, Sample};

const V2: &str = "127.0.0.1:5000/dockhand-test/app:v2";

/// The test image's version page, plus `/cgi-bin/stream` from the code volume: a response that
/// takes about 4 s, one line every 200 ms, each naming the version that serves it.
const STREAM_CGI: &str = r#"#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
v=$(cat /tmp/www/index.html)
i=0
while [ $i -lt 20 ]; do echo "$v $i"; i=$((i+1)); sleep 0.2; done
echo "$v end"
"#;

const CONTAINER: &str = r#"cmd = ["/bin/sh", "-c", "mkdir -p /tmp/www/cgi-bin && cp /www/index.html /tmp/www/ && cp /code/stream.cgi /tmp/www/cgi-bin/stream && exec httpd -f -p 127.0.0.1:$PORT -h /tmp/www"]
expect_body_contains = "v"
[apps.proxy]
listen = "127.0.0.1:0"
"#;

/// An app whose image is `repo:<short sha>`, deployed once on V1, behind a proxy.
async fn proxied_on_v1(origin: &Origin, test: &str) -> (TestApp, String, Cleanup, String, String) {
    origin.write("stream.cgi", STREAM_CGI);
    origin.set_exec("stream.cgi", true);
    let head = origin.commit("a streaming endpoint");
    let repo = own_repository(test);
    publish_for_commit(V1, &repo, &head);
    let (app, name) = spawn_with(origin, &format!("{repo}:{{short_sha}}"), CONTAINER).await;
    let cleanup = Cleanup::app(&name);
    app.deploy(&head).await;
    let listen = app.get(&format!("/api/apps/{name}")).await["proxy"]["listen"]
        .as_str()
        .unwrap()
        .to_string();
    (app, name, cleanup, repo, format!("http://{listen}"))
}

fn failures(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter_map(|s| match &s.answer {
            Ok(body) if body == "v1\n" || body == "v2\n" => None,
            Ok(body) => Some(format!("unexpected body {body:?}")),
            Err(e) => Some(e.clone()),
        })
        .collect()
}

#[tokio::test]
async fn twenty_full_deploys_under_load_fail_no_request_and_a_long_response_on_the_old_container_completes(
) {
    let origin = Origin::new();
    let (app, name, _cleanup, repo, base) = proxied_on_v1(&origin, "zero").await;

    // A long response starts on the V1 container before anything is deployed.
    let stream = client()
        .get(format!("{base}/cgi-bin/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let mut stream = stream.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"v1 0"), "{first:?}");
    let long = tokio::spawn(async move {
        let mut text = String::from_utf8(first.to_vec()).unwrap();
        while let Some(chunk) = stream.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        text
    });

    let load = Load::start(format!("{base}/"), 250);
    // (pushed at, live at, version): after `live at` and before the next push, only `version`
    // may answer.
    let mut timeline = Vec::new();
    let mut first_deploy = Value::Null;
    for round in 1..=20 {
        let (image, version) = if round % 2 == 1 {
            (V2, "v2\n")
        } else {
            (V1, "v1\n")
        };
        origin.write("app.py", &format!("ROUND = {round}\n"));
        let head = origin.commit(&format!("round {round}"));
        publish_for_commit(image, &repo, &head);
        let pushed = Instant::now();
        let deploy = app.deploy(&head).await;
        timeline.push((pushed, Instant::now(), version));
        assert_eq!(deploy["path"], "full", "{deploy:#}");
        if round == 1 {
            first_deploy = deploy;
        }
    }
    let (samples, elapsed) = load.finish().await;

    let failed = failures(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during 20 full deploys: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(10)]
    );
    let rate = samples.len() as f64 / elapsed.as_secs_f64();
    assert!(rate >= 200.0, "the load was only {rate:.0} requests/s");
    for (i, (_, live_at, version)) in timeline.iter().enumerate() {
        let next_push = timeline.get(i + 1).map(|t| t.0);
        let mixed: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.sent > *live_at && next_push.is_none_or(|p| s.sent < p))
            .filter(|s| s.answer.as_deref() != Ok(*version))
            .collect();
        assert!(
            mixed.is_empty(),
            "after deploy {} went live, {} requests were answered by the old version",
            i + 1,
            mixed.len()
        );
    }

    // The long response finished on V1: the first deploy drained before retiring it.
    let text = long.await.unwrap();
    assert!(text.ends_with("v1 end\n"), "{text:?}");
    assert_eq!(text.lines().count(), 21, "{text:?}");
    let steps = stages(&first_deploy);
    let (switch, drain, retire) = (
        steps.iter().position(|s| s == "switch").unwrap(),
        steps.iter().position(|s| s == "drain").unwrap(),
        steps.iter().position(|s| s == "retire").unwrap(),
    );
    assert!(switch < drain && drain < retire, "{steps:?}");

    // The API names what the proxy serves now.
    let state = app.get(&format!("/api/apps/{name}")).await;
    let container = live(&app, &name).await;
    let proxy = &state["proxy"];
    assert_eq!(
        proxy["upstream"],
        format!("127.0.0.1:{}", container["port"]),
        "{state:#}"
    );
    assert_eq!(proxy["container"], container["id"]);
    assert_eq!(proxy["digest"], container["digest"]);
    assert!(proxy["since"].is_string());
}

#[tokio::test]
async fn a_new_version_that_never_gets_healthy_never_gets_a_request() {
    let origin = Origin::new();
    let (app, name, _cleanup, repo, base) = proxied_on_v1(&origin, "never").await;
    let before = app.get(&format!("/api/apps/{name}")).await["proxy"].clone();

    let load = Load::start(format!("{base}/"), 250);
    origin.write("app.py", "BROKEN = True\n");
    let head = origin.commit("a version that never starts");
    publish_for_commit(BROKEN, &repo, &head);
    let deploy = app.deploy_to_end(&head).await;
    // Keep the load going a moment after the failure too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (samples, _) = load.finish().await;

    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert!(
        !stages(&deploy).contains(&"switch".to_string()),
        "{deploy:#}"
    );
    let failed = failures(&samples);
    assert!(failed.is_empty(), "{failed:?}\n{deploy:#}");
    assert!(
        samples.iter().all(|s| s.answer.as_deref() == Ok("v1\n")),
        "every request stays on the old version"
    );
    let after = app.get(&format!("/api/apps/{name}")).await["proxy"].clone();
    assert_eq!(after["upstream"], before["upstream"]);
    assert_eq!(after["container"], before["container"]);
}

#[tokio::test]
async fn stop_first_behind_the_proxy_switches_back_to_the_old_container_when_the_new_one_fails_and_a_restart_keeps_serving(
) {
    let origin = Origin::new();
    let repo = own_repository("stopfirst");
    let proxy_port = free_port();
    let config = format!(
        "port = {}\nexpect_body_contains = \"v\"\n[apps.proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\n",
        free_port()
    );
    let (app, name) = spawn_with(&origin, &format!("{repo}:{{short_sha}}"), &config).await;
    let _cleanup = Cleanup::app(&name);
    let url = format!("http://127.0.0.1:{proxy_port}/");
    let page = || get_page(&url);
    publish_for_commit(V1, &repo, &origin.head());
    app.deploy(&origin.head()).await;
    assert_eq!(page().await, (200, "v1\n".to_string()));

    origin.write("app.py", "V = 2\n");
    let v2 = origin.commit("v2");
    publish_for_commit(V2, &repo, &v2);
    app.deploy(&v2).await;
    assert_eq!(page().await, (200, "v2\n".to_string()));

    origin.write("app.py", "V = 3\n");
    let broken = origin.commit("broken");
    publish_for_commit(BROKEN, &repo, &broken);
    let deploy = app.deploy_to_end(&broken).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    let steps = stages(&deploy);
    // The tree changes only once the old container is stopped, and is back before it starts.
    let tail: Vec<&str> = steps.iter().map(String::as_str).skip(3).collect();
    assert_eq!(
        tail,
        [
            "switch",
            "drain",
            "stop-old",
            "sync",
            "start",
            "health",
            "restore",
            "restart-old",
            "switch"
        ],
        "{deploy:#}"
    );
    assert_eq!(
        page().await,
        (200, "v2\n".to_string()),
        "back on the old container"
    );

    // dockhand restarts: the proxy comes back pointing at the live container.
    let app = app.restart().await;
    assert_eq!(page().await, (200, "v2\n".to_string()));
    drop(app);
}
