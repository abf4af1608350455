//! The operations API (issue 5): tokens, manual deploys, rollbacks, locks, dry runs, SSE and
//! `?wait`, against a real server, real git repositories and a real SQLite file.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::helpers::*;
use crate::support::ops::*;

#[tokio::test]
async fn every_operations_endpoint_refuses_missing_wrong_and_query_string_tokens_and_unscoped_ones()
{
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let id = ops.pushed(&origin.head()).await["id"].as_i64().unwrap();
    let deploy = format!("/api/deploys/{id}");
    let events = format!("/api/deploys/{id}/events");
    let endpoints = [
        (Method::POST, "/api/apps/web/deploy"),
        (Method::POST, "/api/apps/web/rollback"),
        (Method::POST, "/api/apps/web/plan"),
        (Method::POST, "/api/apps/web/lock"),
        (Method::DELETE, "/api/apps/web/lock"),
        (Method::POST, "/api/apps/web/maintenance"),
        (Method::DELETE, "/api/apps/web/maintenance"),
        (Method::GET, "/api/apps/web"),
        (Method::GET, "/api/apps/web/deploys"),
        (Method::GET, deploy.as_str()),
        (Method::GET, events.as_str()),
    ];
    for (method, path) in endpoints {
        let body = json!({ "reason": "x" });
        for (token, query, why) in [
            (None, "", "no token"),
            (Some("wrong-token-0123456789abcdef"), "", "wrong token"),
            (Some(&ADMIN[..ADMIN.len() - 1]), "", "token prefix"),
            (None, "?token=admin-token-0123456789abcdef", "query token"),
            (
                Some(ADMIN),
                "?access_token=admin-token-0123456789abcdef",
                "query token with header",
            ),
        ] {
            let url = format!("{path}{query}");
            let response = ops.call(method.clone(), &url, token, body.clone()).await;
            assert_eq!(response.status(), 401, "{method} {url}: {why}");
            assert_eq!(
                response.headers()["www-authenticate"],
                "Bearer realm=\"dockhand\"",
                "{method} {url}"
            );
        }
        let response = ops
            .call(method.clone(), path, Some(SCOPED), body.clone())
            .await;
        assert_eq!(response.status(), 403, "{method} {path}: scoped token");
        if path.starts_with("/api/apps/web") {
            let unknown = path.replace("/web", "/nope");
            let response = ops.call(method.clone(), &unknown, Some(ADMIN), body).await;
            assert_eq!(response.status(), 404, "{method} {unknown}");
        }
    }
    // The scoped token sees only its app; nothing above deployed, locked or recorded anything.
    let listed: Value = ops
        .call(Method::GET, "/api/apps", Some(SCOPED), Value::Null)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["apps"].as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(listed["apps"][0]["name"], "other");
    let web = ops.get("/api/apps/web").await;
    assert_eq!(web["last_deploy"]["id"], id);
    assert_eq!(web["locked"], Value::Null);
    // /healthz stays open (it says only "ok").
    assert_eq!(
        ops.call(Method::GET, "/healthz", None, Value::Null)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn without_configured_tokens_reads_are_open_and_the_write_api_is_off() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    app.deploy(&origin.head()).await;
    let response = app
        .client
        .post(app.url("/api/apps/web/deploy"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.text().await.unwrap().contains("no API tokens"));
    assert_eq!(app.get("/api/apps/web").await["name"], "web");
}

#[tokio::test]
async fn bad_bodies_are_400_naming_the_field_and_unknown_refs_404() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    ops.pushed(&origin.head()).await;
    let cases = [
        ("/api/apps/web/deploy", json!({ "ref": 1 }), "ref:"),
        ("/api/apps/web/deploy", json!({ "ref": "-x" }), "ref:"),
        ("/api/apps/web/deploy", json!({ "ref": "a..b" }), "ref:"),
        ("/api/apps/web/deploy", json!({ "ref": "" }), "ref:"),
        ("/api/apps/web/deploy", json!({ "path": "slow" }), "path:"),
        ("/api/apps/web/deploy", json!({ "path": "full" }), "path:"),
        ("/api/apps/web/deploy", json!({ "force": "yes" }), "force:"),
        (
            "/api/apps/web/deploy",
            json!({ "colour": "blue" }),
            "colour:",
        ),
        ("/api/apps/web/deploy", json!([1]), "body:"),
        ("/api/apps/web/deploy?wait=maybe", json!({}), "wait:"),
        ("/api/apps/web/rollback", json!({ "to": true }), "to:"),
        ("/api/apps/web/rollback", json!({ "to": -3 }), "to:"),
        (
            "/api/apps/web/rollback",
            json!({ "to": "--upload-pack=x" }),
            "to:",
        ),
        ("/api/apps/web/plan", json!({ "ref": ["main"] }), "ref:"),
        ("/api/apps/web/lock", json!({}), "reason:"),
        ("/api/apps/web/lock", json!({ "reason": "  " }), "reason:"),
    ];
    for (path, body, field) in cases {
        let (status, answer) = ops.post(path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with(field),
            "{path} {body}: {error:?} should name {field}"
        );
    }
    let response = ops
        .call(
            Method::POST,
            "/api/apps/web/deploy",
            Some(ADMIN),
            Value::Null,
        )
        .await;
    assert_ne!(response.status(), 400, "an empty body is an empty object");
    for (path, body) in [
        ("/api/apps/web/deploy", json!({ "ref": "no-such-branch" })),
        (
            "/api/apps/web/deploy",
            json!({ "ref": "0123456789abcdef0123" }),
        ),
        ("/api/apps/web/plan", json!({ "ref": "refs/tags/nope" })),
        ("/api/apps/web/rollback", json!({ "to": "v9" })),
        ("/api/apps/web/rollback", json!({ "to": 99999 })),
        ("/api/apps/web/rollback", json!({})),
    ] {
        let (status, answer) = ops.post(path, body.clone()).await;
        assert_eq!(status, 404, "{path} {body}: {answer}");
    }
}

#[tokio::test]
async fn manual_deploys_resolve_tip_branch_tag_and_short_sha_to_full_commits_and_record_the_token()
{
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let first = origin.head();
    origin.git(&["tag", "v1"]);
    origin.git(&["push", "-q", "origin", "refs/tags/v1"]);
    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("second");
    origin.git(&["checkout", "-q", "-b", "feature"]);
    origin.write("app.py", "VERSION = 3\n");
    origin.git(&["add", "-A"]);
    origin.git(&["commit", "-q", "-m", "feature"]);
    origin.git(&["push", "-q", "origin", "feature"]);
    let feature = origin.head();

    // The tip of the tracked branch, waited for: 200 with the terminal status and a Location.
    let response = ops
        .call(
            Method::POST,
            "/api/apps/web/deploy?wait=true",
            Some(ADMIN),
            Value::Null,
        )
        .await;
    assert_eq!(response.status(), 200);
    let id = {
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let body: Value = response.json().await.unwrap();
        assert_eq!(location, format!("/api/deploys/{}", body["deploy_id"]));
        assert_eq!(body["status"], "succeeded", "{body:#}");
        assert_eq!(body["to_commit"], second);
        assert_eq!(body["trigger"], "manual");
        assert_eq!(body["actor"], "admin");
        body["deploy_id"].as_i64().unwrap()
    };
    assert_eq!(ops.app.volume_snapshot(), origin.snapshot(&second));

    for (spec, commit) in [
        ("v1", &first),
        ("feature", &feature),
        (&second[..10], &second),
        (&first[..], &first),
    ] {
        let deploy = ops
            .asked("/api/apps/web/deploy", json!({ "ref": spec }))
            .await;
        assert_eq!(deploy["status"], "succeeded", "{spec}: {deploy:#}");
        assert_eq!(deploy["to_commit"], *commit, "{spec}");
        assert_eq!(
            deploy["requested_sha"], *commit,
            "{spec}: resolved before queueing"
        );
        assert_eq!(deploy["actor"], "admin");
        assert_eq!(ops.app.volume_snapshot(), origin.snapshot(commit), "{spec}");
    }
    // Asked for by name, a redeploy of the deployed commit runs (and reloads) again.
    let again = ops
        .asked("/api/apps/web/deploy", json!({ "ref": first }))
        .await;
    assert_eq!(again["status"], "succeeded", "{again:#}");
    assert!(again["id"].as_i64().unwrap() > id);
}

#[tokio::test]
async fn rollback_by_default_deploy_id_and_sha_puts_the_recorded_commit_back() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let c1 = origin.head();
    let d1 = ops.pushed(&c1).await;
    origin.write("app.py", "VERSION = 2\n");
    let c2 = origin.commit("two");
    ops.pushed(&c2).await;
    origin.write("app.py", "VERSION = 3\n");
    origin.write("new.txt", "new\n");
    let c3 = origin.commit("three");
    ops.pushed(&c3).await;

    // Default: the last succeeded deploy before the current one.
    let back = ops.asked("/api/apps/web/rollback", json!({})).await;
    assert_eq!(back["status"], "succeeded", "{back:#}");
    assert_eq!(back["trigger"], "rollback");
    assert_eq!(back["to_commit"], c2);
    assert_eq!(back["actor"], "admin");
    assert_eq!(ops.app.volume_snapshot(), origin.snapshot(&c2));

    // The rollback locked the app (lock_on_rollback defaults to true): the next call is 409.
    let (status, answer) = ops
        .post("/api/apps/web/rollback", json!({ "to": d1["id"] }))
        .await;
    assert_eq!(status, 409, "{answer:#}");
    assert_eq!(answer["lock"]["locked_by"], "admin");

    // By deploy id, forced past the lock: an older commit, never "stale".
    let back = ops
        .asked(
            "/api/apps/web/rollback",
            json!({ "to": d1["id"], "force": true }),
        )
        .await;
    assert_eq!(back["status"], "succeeded", "{back:#}");
    assert_eq!(back["to_commit"], c1);
    assert_eq!(back["rollback_of"], d1["id"]);
    assert_eq!(ops.app.volume_snapshot(), origin.snapshot(&c1));

    // By (short) SHA.
    ops.unlock().await;
    let forward = ops
        .asked("/api/apps/web/rollback", json!({ "to": &c3[..8] }))
        .await;
    assert_eq!(forward["status"], "succeeded", "{forward:#}");
    assert_eq!(forward["to_commit"], c3);
    assert_eq!(ops.app.volume_snapshot(), origin.snapshot(&c3));

    // A deploy that did not succeed (here: a push held by the lock) is no target.
    let held = ops.app.push_ref("refs/heads/main", &c1, true).await;
    let held: Value = held.json().await.unwrap();
    assert_eq!(held["status"], "locked", "{held:#}");
    let (status, answer) = ops
        .post(
            "/api/apps/web/rollback",
            json!({ "to": held["deploy_id"], "force": true }),
        )
        .await;
    assert_eq!(status, 400, "{answer:#}");
    assert!(
        answer["error"].as_str().unwrap().starts_with("to:"),
        "{answer:#}"
    );
}

#[tokio::test]
async fn rollback_to_a_tag_that_moved_uses_the_commit_its_deploy_recorded() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "tags = \"v*\"\nlock_on_rollback = false\n").await;
    let c1 = origin.head();
    origin.git(&["tag", "v1"]);
    origin.git(&["push", "-q", "origin", "refs/tags/v1"]);
    let tagged = ops.app.push_ref("refs/tags/v1", &c1, false).await;
    assert_eq!(tagged.status(), 202);
    let d1: Value = tagged.json().await.unwrap();
    assert_eq!(
        ops.wait(d1["deploy_id"].as_i64().unwrap()).await["status"],
        "succeeded"
    );

    origin.write("app.py", "VERSION = 2\n");
    let c2 = origin.commit("two");
    ops.pushed(&c2).await;
    // v1 is moved to a commit nobody deployed.
    origin.write("app.py", "VERSION = 666\n");
    let moved = origin.commit("moved");
    origin.git(&["tag", "-f", "v1", &moved]);
    origin.git(&["push", "-q", "-f", "origin", "refs/tags/v1"]);

    let back = ops
        .asked("/api/apps/web/rollback", json!({ "to": "v1" }))
        .await;
    assert_eq!(back["status"], "succeeded", "{back:#}");
    assert_eq!(
        back["to_commit"], c1,
        "the commit deploy {} recorded",
        d1["deploy_id"]
    );
    assert_eq!(back["rollback_of"], d1["deploy_id"]);
    assert_eq!(ops.app.volume_snapshot(), origin.snapshot(&c1));
    assert_eq!(ops.get("/api/apps/web").await["locked"], Value::Null);

    // A tag no deploy ran resolves at the origin.
    origin.git(&["tag", "v2", &c2]);
    origin.git(&["push", "-q", "origin", "refs/tags/v2"]);
    let v2 = ops
        .asked("/api/apps/web/rollback", json!({ "to": "v2" }))
        .await;
    assert_eq!(v2["to_commit"], c2, "{v2:#}");
}

#[tokio::test]
async fn a_locked_app_records_pushes_as_locked_refuses_manual_calls_with_409_and_unlock_lets_pushes_deploy(
) {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let c1 = origin.head();
    ops.pushed(&c1).await;

    let (status, answer) = ops
        .post("/api/apps/web/lock", json!({ "reason": "db migration" }))
        .await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["locked"]["locked_by"], "admin");
    let locked = ops.get("/api/apps/web").await["locked"].clone();
    assert_eq!(locked["reason"], "db migration");

    origin.write("app.py", "VERSION = 2\n");
    let c2 = origin.commit("two");
    let response = ops.app.push_ref("refs/heads/main", &c2, false).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "locked", "{answer:#}");
    let held = ops
        .get(&format!("/api/deploys/{}", answer["deploy_id"]))
        .await;
    assert_eq!(held["status"], "locked", "{held:#}");
    assert!(held["reason"].as_str().unwrap().contains("db migration"));
    assert_eq!(
        ops.app.volume_snapshot(),
        origin.snapshot(&c1),
        "nothing deployed"
    );

    for path in ["/api/apps/web/deploy", "/api/apps/web/rollback"] {
        let (status, answer) = ops.post(path, json!({})).await;
        assert_eq!(status, 409, "{path}: {answer:#}");
        assert_eq!(answer["lock"]["reason"], "db migration");
        assert_eq!(answer["lock"]["locked_by"], "admin");
        assert!(answer["lock"]["locked_at"].is_string());
    }
    let (status, _) = ops
        .post("/api/apps/web/lock", json!({ "reason": "another reason" }))
        .await;
    assert_eq!(status, 409, "already locked by someone, for something else");

    // Forced, a manual deploy passes the lock.
    let forced = ops
        .asked("/api/apps/web/deploy", json!({ "force": true }))
        .await;
    assert_eq!(forced["status"], "succeeded", "{forced:#}");
    assert_eq!(forced["to_commit"], c2);

    // Unlocking deploys nothing by itself; the next push deploys.
    ops.unlock().await;
    assert_eq!(
        ops.get(&format!("/api/deploys/{}", held["id"])).await["status"],
        "locked"
    );
    origin.write("app.py", "VERSION = 3\n");
    let c3 = origin.commit("three");
    ops.pushed(&c3).await;
    assert_eq!(ops.app.volume_snapshot(), origin.snapshot(&c3));
}

/// Every row of every table, as text, in a stable order.
async fn database_rows(state: &std::path::Path) -> Vec<String> {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", state.join("dockhand.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut db)
            .await
            .unwrap();
    let mut rows = Vec::new();
    for table in tables {
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?)")
            .bind(&table)
            .fetch_all(&mut db)
            .await
            .unwrap();
        let row = columns
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        // Ordered by the whole row: `sessions` is WITHOUT ROWID.
        let sql = format!("SELECT '{table}|' || {row} FROM \"{table}\" ORDER BY 1");
        rows.extend(
            sqlx::query_scalar::<_, String>(&sql)
                .fetch_all(&mut db)
                .await
                .unwrap(),
        );
    }
    rows
}

#[tokio::test]
async fn plan_shows_commit_path_and_changes_and_changes_nothing() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let c1 = origin.head();
    ops.pushed(&c1).await;
    origin.write("app.py", "VERSION = 2\n");
    origin.remove("static/style.css");
    let c2 = origin.commit("two");

    let state = ops.app.dir.path().join("state");
    let rows = database_rows(&state).await;
    let volume = ops.app.volume_snapshot();
    let reload_mtime = std::fs::metadata(ops.app.volume.join("uwsgi.ini"))
        .unwrap()
        .modified()
        .unwrap();

    let (status, plan) = ops.post("/api/apps/web/plan", json!({})).await;
    assert_eq!(status, 200, "{plan:#}");
    assert_eq!(plan["commit"], c2);
    assert_eq!(plan["deployed"], c1);
    assert_eq!(plan["path"], "fast");
    assert_eq!(plan["changed"], 2);
    assert_eq!(
        plan["changes"],
        json!([{ "op": "delete", "path": "static/style.css" }, { "op": "write", "path": "app.py" }])
    );
    assert_eq!(plan["hooks"], json!([]));
    assert!(
        plan["reason"].as_str().unwrap().contains("2 paths change"),
        "{plan:#}"
    );
    let (status, by_ref) = ops
        .post("/api/apps/web/plan", json!({ "ref": &c1[..9] }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(by_ref["changed"], 0);

    assert_eq!(
        database_rows(&state).await,
        rows,
        "the database is unchanged"
    );
    assert_eq!(ops.app.volume_snapshot(), volume, "the volume is unchanged");
    let after = std::fs::metadata(ops.app.volume.join("uwsgi.ini"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(after, reload_mtime, "nothing was reloaded");
}

#[tokio::test]
async fn events_of_a_finished_deploy_replay_every_step_then_the_status_and_close() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let deploy = ops.pushed(&origin.head()).await;
    let response = ops
        .call(
            Method::GET,
            &format!("/api/deploys/{}/events", deploy["id"]),
            Some(ADMIN),
            Value::Null,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = tokio::time::timeout(Duration::from_secs(10), response.text())
        .await
        .expect("the stream closes after the terminal status")
        .unwrap();
    let events = sse_events(&body);
    let steps: Vec<(String, String)> = events
        .iter()
        .filter(|(e, _)| e == "step")
        .map(|(_, d)| {
            (
                d["stage"].as_str().unwrap().to_string(),
                d["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = stages(&deploy)
        .into_iter()
        .flat_map(|s| [(s.clone(), "started".to_string()), (s, "ended".to_string())])
        .collect();
    assert_eq!(steps, expected, "{body}");
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "status");
    assert_eq!(data["status"], "succeeded");
}

#[tokio::test]
async fn wait_returns_the_terminal_status_or_202_when_the_wait_times_out() {
    let origin = Origin::new();
    let ops = spawn_ops(&origin, "").await;
    let (status, done) = ops.post("/api/apps/web/deploy?wait=true", json!({})).await;
    assert_eq!(status, 200, "{done:#}");
    assert_eq!(done["status"], "succeeded");

    let origin2 = Origin::new();
    let quick = spawn_ops_edited(&origin2, "wait_timeout = \"1ns\"\n", "", |t| t).await;
    let (status, pending) = quick
        .post("/api/apps/web/deploy?wait=true", json!({}))
        .await;
    assert_eq!(status, 202, "{pending:#}");
    assert!(
        pending["status"] == "queued" || pending["status"] == "running",
        "{pending:#}"
    );
    let id = pending["deploy_id"].as_i64().unwrap();
    assert_eq!(quick.wait(id).await["status"], "succeeded");
}

#[tokio::test]
async fn an_api_call_cut_off_by_request_timeout_keeps_the_cache_locked_until_its_fetch_ends() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::AsyncReadExt;

    // A git:// origin that takes each connection and never answers; it counts how many
    // fetches are connected at once.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("git://{}/web.git", silent.local_addr().unwrap());
    let (open, most, total) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    {
        let (open, most, total) = (open.clone(), most.clone(), total.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = silent.accept().await {
                total.fetch_add(1, Ordering::SeqCst);
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let open = open.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
    }
    let origin = Origin::new();
    let bare = origin.bare.display().to_string();
    let ops = spawn_ops_edited(
        &origin,
        "request_timeout = \"1s\"",
        "fetch_timeout = \"5s\"",
        |t| t.replace(&bare, &url),
    )
    .await;

    // Each call resolves `main`, so it fetches; each is cut off after 1 s.
    for _ in 0..2 {
        let body = json!({ "ref": "main" });
        let response = ops
            .call(Method::POST, "/api/apps/web/plan", Some(ADMIN), body)
            .await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(!status.is_success(), "{status} {text}");
    }
    // The first fetch ends at fetch_timeout; a second may have started beside it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while total.load(Ordering::SeqCst) == 0 || open.load(Ordering::SeqCst) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "fetches: {} in all, {} still open",
            total.load(Ordering::SeqCst),
            open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "two fetches ran into the same cache at once"
    );
}
