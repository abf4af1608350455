//! Polling (issue 11 §4): an origin that moved without a webhook is deployed anyway, with
//! trigger `poll`; nothing is recorded when nothing moved; a push and a poll of one commit
//! deploy it once; an origin that was unreachable is deployed once it answers.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::helpers::*;
use crate::support::server::Server;

/// Poll every second: a test sees several polls in a few seconds.
const POLL: &str = "poll = \"1s\"\n";

/// The commit app `web` has deployed, per the API.
async fn deployed(app: &TestApp) -> Option<String> {
    app.get("/api/apps/web").await["deployed"]["commit"]
        .as_str()
        .map(str::to_string)
}

/// Wait (20 s) until app `web` has `commit` deployed; its deploys then, newest first.
async fn wait_deployed(app: &TestApp, commit: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while deployed(app).await.as_deref() != Some(commit) {
        assert!(
            Instant::now() < deadline,
            "{commit} not deployed within 20 s; deploys: {:#?}",
            app.deploys().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.deploys().await
}

/// The deploys of `commit` that succeeded.
fn succeeded_with(deploys: &[Value], commit: &str) -> usize {
    deploys
        .iter()
        .filter(|d| d["status"] == "succeeded" && d["to_commit"] == commit)
        .count()
}

/// Several poll intervals, for "nothing more happened".
async fn a_few_polls() {
    tokio::time::sleep(Duration::from_millis(3500)).await;
}

#[tokio::test]
async fn an_origin_that_moved_without_a_webhook_is_deployed_by_the_next_poll() {
    let origin = Origin::new();
    let a = origin.head();
    let app = spawn_app_with(&origin, "", POLL).await;

    // The poll at startup deploys the tip nobody pushed a webhook for.
    let deploys = wait_deployed(&app, &a).await;
    assert_eq!(deploys.len(), 1, "{deploys:#?}");
    assert_eq!(deploys[0]["trigger"], "poll");
    assert_eq!(deploys[0]["ref"], "refs/heads/main");
    assert_eq!(deploys[0]["delivery_id"], Value::Null);

    origin.write("app.py", "VERSION = 2\n");
    let b = origin.commit("v2, no webhook");
    let deploys = wait_deployed(&app, &b).await;

    assert_eq!(app.volume_snapshot(), origin.snapshot(&b));
    assert_eq!(deploys.len(), 2, "{deploys:#?}");
    let newest = &deploys[0];
    assert_eq!(
        (
            &newest["trigger"],
            &newest["status"],
            &newest["from_commit"]
        ),
        (&"poll".into(), &"succeeded".into(), &a.clone().into()),
        "{newest:#}"
    );
    let history = app.get("/api/apps/web/deploys").await;
    assert!(
        history["deploys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["trigger"] == "poll"),
        "{history:#}"
    );
}

#[tokio::test]
async fn nothing_moved_records_nothing_however_many_polls_run() {
    let origin = Origin::new();
    let a = origin.head();
    let app = spawn_app_with(&origin, "", POLL).await;
    assert_eq!(wait_deployed(&app, &a).await.len(), 1);

    a_few_polls().await;

    let deploys = app.deploys().await;
    assert_eq!(deploys.len(), 1, "{deploys:#?}");
}

#[tokio::test]
async fn a_tip_whose_deploy_failed_is_not_tried_again_at_every_poll() {
    let origin = Origin::new();
    let app = spawn_app_edited(&origin, "", POLL, |text| {
        // A volume with files of its own, and adopt = false: the first deploy refuses it.
        {
            let volume = text.split("volume = \"").nth(1).unwrap();
            let volume = std::path::Path::new(volume.split('"').next().unwrap());
            std::fs::create_dir_all(volume).unwrap();
            std::fs::write(volume.join("index.html"), "someone else's\n").unwrap();
        }
        text
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let failed = loop {
        let deploys = app.deploys().await;
        if deploys.first().is_some_and(|d| d["status"] == "failed") {
            break deploys;
        }
        assert!(Instant::now() < deadline, "no failed deploy: {deploys:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["trigger"], "poll");

    a_few_polls().await;

    let deploys = app.deploys().await;
    assert_eq!(deploys.len(), 1, "{deploys:#?}");
}

#[tokio::test]
async fn with_poll_0s_only_webhooks_deploy() {
    let origin = Origin::new();
    let a = origin.head();
    let app = spawn_app_with(&origin, "", "poll = \"0s\"\n").await;

    a_few_polls().await;
    assert!(app.deploys().await.is_empty());
    assert_eq!(deployed(&app).await, None);

    app.deploy(&a).await;
    origin.write("app.py", "VERSION = 2\n");
    origin.commit("v2, no webhook");
    a_few_polls().await;

    let deploys = app.deploys().await;
    assert_eq!(deploys.len(), 1, "{deploys:#?}");
    assert_eq!(deploys[0]["trigger"], "push");
    assert_eq!(deployed(&app).await.as_deref(), Some(a.as_str()));
}

#[tokio::test]
async fn a_webhook_push_and_a_poll_of_the_same_commit_deploy_it_once() {
    // Every deploy takes a second (a pre-deploy hook sleeps): polls run while it is queued
    // or running.
    let hooks = tempfile::tempdir().unwrap();
    let hook = hooks.path().join("pre-deploy");
    std::fs::write(&hook, "#!/bin/sh\nsleep 1\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let origin = Origin::new();
    let a = origin.head();
    let server_extra = format!("hooks_dir = \"{}\"\n", hooks.path().display());
    let app = spawn_app_with(&origin, &server_extra, POLL).await;
    wait_deployed(&app, &a).await;

    // The webhook lands before, during and after the poll that sees the commit.
    let mut commits = Vec::new();
    for (n, delay_ms) in [0u64, 300, 600, 900, 1200].into_iter().enumerate() {
        origin.write("app.py", &format!("VERSION = {}\n", n + 2));
        let commit = origin.commit(&format!("v{}", n + 2));
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let response = app.push_ref("refs/heads/main", &commit, false).await;
        assert_eq!(response.status(), 202);
        wait_deployed(&app, &commit).await;
        commits.push(commit);
    }
    a_few_polls().await;

    let deploys = app.deploys().await;
    for commit in &commits {
        let ran: Vec<&Value> = deploys
            .iter()
            .filter(|d| d["to_commit"] == commit.as_str())
            .collect();
        assert_eq!(
            (ran.len(), succeeded_with(&deploys, commit)),
            (1, 1),
            "{commit} deployed other than once: {deploys:#?}"
        );
    }
    // A poll never queues a commit that is deployed or already on its way.
    let redundant: Vec<&Value> = deploys
        .iter()
        .filter(|d| d["trigger"] == "poll" && d["status"] == "ignored")
        .collect();
    assert!(redundant.is_empty(), "{redundant:#?}");
    let settled = deploys.len();
    a_few_polls().await;
    assert_eq!(app.deploys().await.len(), settled);
}

#[tokio::test]
async fn a_tag_pushed_without_a_webhook_is_deployed_and_older_tags_are_left_alone() {
    let origin = Origin::new();
    origin.annotated_tag("v1");
    origin.write("app.py", "VERSION = 1.1\n");
    let a = origin.commit("after v1");
    let app = spawn_app_with(&origin, "", &format!("{POLL}tags = \"v*\"\n")).await;
    // v1 (an older commit) was there before polling started: only the branch deploys.
    let deploys = wait_deployed(&app, &a).await;
    assert_eq!(deploys.len(), 1, "{deploys:#?}");
    assert_eq!(deploys[0]["ref"], "refs/heads/main");

    // Releases tagged on a branch dockhand does not track; more than three tags at once,
    // which GitHub announces with no event at all.
    origin.git(&["checkout", "-q", "-b", "release"]);
    let mut tagged = Vec::new();
    for n in 2..=5 {
        origin.write("app.py", &format!("VERSION = {n}\n"));
        origin.git(&["commit", "-q", "-am", &format!("release {n}")]);
        origin.git(&["tag", "-a", "-m", "release", &format!("v{n}")]);
        tagged.push(origin.head());
    }
    origin.git(&["push", "-q", "origin", "--tags"]);
    let newest = tagged.last().unwrap();
    let deploys = wait_deployed(&app, newest).await;

    assert_eq!(app.volume_snapshot(), origin.snapshot(newest));
    let by_poll: Vec<&Value> = deploys
        .iter()
        .filter(|d| d["ref"] != "refs/heads/main")
        .collect();
    assert!(
        by_poll.iter().all(
            |d| d["trigger"] == "poll" && d["ref"].as_str().unwrap().starts_with("refs/tags/v")
        ),
        "{deploys:#?}"
    );
    assert!(
        !deploys.iter().any(|d| d["ref"] == "refs/tags/v1"),
        "{deploys:#?}"
    );
    assert_eq!(succeeded_with(&deploys, newest), 1, "{deploys:#?}");
    // The branch did not move: the tag stays live, and nothing more is recorded.
    let settled = deploys.len();
    a_few_polls().await;
    assert_eq!(app.deploys().await.len(), settled);
    assert_eq!(deployed(&app).await.as_deref(), Some(newest.as_str()));
}

#[tokio::test]
async fn an_app_without_a_webhook_secret_runs_on_polling_alone() {
    let origin = Origin::new();
    let a = origin.head();
    let app = spawn_app_edited(&origin, "", POLL, |text| {
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("secret_file"))
            .collect();
        kept.join("\n")
    })
    .await;
    wait_deployed(&app, &a).await;

    origin.write("app.py", "VERSION = 2\n");
    let b = origin.commit("v2");
    let deploys = wait_deployed(&app, &b).await;
    assert!(
        deploys.iter().all(|d| d["trigger"] == "poll"),
        "{deploys:#?}"
    );
    assert_eq!(app.volume_snapshot(), origin.snapshot(&b));

    // It takes no webhooks: refused as unsigned would be, whatever the signature.
    for path in ["/hooks/github/web", "/hooks/github"] {
        let body = push_payload("refs/heads/main", &b, false);
        let signature = sign(SECRET, &body);
        let response = app
            .deliver(path, "push", &delivery_id(), body, &signature)
            .await;
        assert_eq!(response.status(), 401, "{path}");
    }
    assert_eq!(app.deploys().await.len(), deploys.len());
}

/// Count the lines of a log containing `text`.
fn lines_with(log: &std::path::Path, text: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(text))
        .count()
}

/// Every deploy of app `web` of a dockhand process, newest first.
async fn remote_deploys(server: &Remote) -> Vec<Value> {
    let body: Value = server
        .client
        .get(format!("{}/api/apps/web/deploys?limit=1000", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["deploys"].as_array().unwrap().clone()
}

/// Wait (20 s) for a dockhand process's newest deploy of `web` to be over; returns it.
async fn newest_terminal(server: &Remote) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(d) = remote_deploys(server).await.first() {
            if d["status"] != "queued" && d["status"] != "running" {
                return d.clone();
            }
        }
        assert!(Instant::now() < deadline, "no deploy finished within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The config of the real-binary polling tests, polling every second.
fn polling_config(dir: &std::path::Path, origin: &Origin) -> std::path::PathBuf {
    std::fs::write(dir.join("secret"), SECRET).unwrap();
    let text = config_text(dir, origin, "", POLL)
        .replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port()));
    let config = dir.join("dockhand.toml");
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test]
async fn an_origin_unreachable_during_a_push_is_deployed_once_it_answers_without_another_push() {
    let origin = Origin::new();
    let a = origin.head();
    let dir = tempfile::tempdir().unwrap();
    let config = polling_config(dir.path(), &origin);
    let log = dir.path().join("dockhand.log");
    let server = Server::start(&config, &log).await;
    let first = newest_terminal(&server).await;
    assert_eq!(
        (&first["trigger"], &first["status"], &first["to_commit"]),
        (&"poll".into(), &"succeeded".into(), &a.clone().into()),
        "{first:#}"
    );

    // The origin goes away; a commit is pushed to it meanwhile, and its webhook arrives.
    let away = origin.bare.with_extension("away");
    std::fs::rename(&origin.bare, &away).unwrap();
    origin.write("app.py", "VERSION = 2\n");
    origin.git(&["commit", "-q", "-am", "v2 during the outage"]);
    origin.git(&["push", "-q", away.to_str().unwrap(), "HEAD:refs/heads/main"]);
    let b = origin.head();
    let pushed = server.wait_terminal(server.push(&b).await).await;
    assert_eq!(pushed["status"], "failed", "{pushed:#}");
    assert_eq!(step(&pushed, "fetch")["ok"], false, "{pushed:#}");
    a_few_polls().await;
    // Polls that cannot reach the origin record nothing and warn once.
    assert_eq!(remote_deploys(&server).await.len(), 2);
    assert_eq!(
        lines_with(&log, "cannot reach the origin"),
        1,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    std::fs::rename(&away, &origin.bare).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let retried = loop {
        let deploys = remote_deploys(&server).await;
        if deploys.len() > 2 && deploys[0]["status"] == "succeeded" {
            break deploys[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "not deployed after the outage: {deploys:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (&retried["trigger"], &retried["to_commit"]),
        (&"poll".into(), &b.clone().into()),
        "{retried:#}"
    );
    assert_eq!(snapshot(&dir.path().join("volume")), origin.snapshot(&b));
    assert_eq!(lines_with(&log, "the origin answers again"), 1);
}

#[tokio::test]
async fn an_origin_that_accepts_and_never_answers_does_not_hold_up_shutdown() {
    let origin = Origin::new();
    let dir = tempfile::tempdir().unwrap();
    // A git:// origin that takes the connection and then says nothing: the listing waits
    // for libgit2's socket timeout (60 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("git://{}/web.git", silent.local_addr().unwrap());
    let config = polling_config(dir.path(), &origin);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&origin.bare.display().to_string(), &url);
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("dockhand.log");
    let mut server = Server::start(&config, &log).await;
    silent.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let _held = loop {
        match silent.accept() {
            Ok((held, _)) => break held,
            Err(_) => {
                assert!(Instant::now() < deadline, "the poll never connected");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = Instant::now();
    let exit = loop {
        if let Some(exit) = server.child_mut().try_wait().unwrap() {
            break exit;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "dockhand still running {:?} after SIGTERM: {}",
            stopped.elapsed(),
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
    assert!(
        lines_with(&log, "dockhand stopped") == 1,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
}
