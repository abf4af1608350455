//! The dashboard (issue 13): read-only tokens, sessions, CSRF and the pages, against a real
//! server, a real git origin and a real SQLite file.

use reqwest::Method;
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::support::dashboard::*;
use crate::support::helpers::*;
use crate::support::ops::{Ops, ADMIN};

#[tokio::test]
async fn a_read_only_token_reads_but_every_write_answers_403_and_queues_nothing() {
    let origin = Origin::new();
    let ops = spawn_dashboard(&origin, "").await;
    let id = ops.pushed(&origin.head()).await["id"].as_i64().unwrap();
    for path in ["/api/apps", "/api/apps/web", "/api/apps/web/deploys"] {
        let response = ops.call(Method::GET, path, Some(VIEWER), Value::Null).await;
        assert_eq!(response.status(), 200, "GET {path}");
    }
    origin.write("app.py", "print('next')\n");
    origin.commit("next");
    let writes = [
        (Method::POST, "/api/apps/web/deploy"),
        (Method::POST, "/api/apps/web/rollback"),
        (Method::POST, "/api/apps/web/lock"),
        (Method::DELETE, "/api/apps/web/lock"),
        (Method::POST, "/api/apps/web/maintenance"),
    ];
    for (method, path) in writes {
        let response = ops
            .call(method.clone(), path, Some(VIEWER), json!({ "reason": "x" }))
            .await;
        assert_eq!(response.status(), 403, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"], "token \"viewer\" is read-only",
            "{method} {path}"
        );
    }
    let deploys = ops.get("/api/apps/web/deploys").await;
    let deploys = deploys["deploys"].as_array().unwrap();
    assert_eq!(deploys.len(), 1, "nothing queued: {deploys:#?}");
    assert_eq!(deploys[0]["id"], id);
    assert_eq!(ops.get("/api/apps/web").await["locked"], Value::Null);
}

/// The `sessions` table's digests, read from dockhand's SQLite file.
async fn session_digests(ops: &Ops) -> Vec<Vec<u8>> {
    use sqlx::Connection;
    let db = ops.app.dir.path().join("state").join("dockhand.db");
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT digest FROM sessions")
        .fetch_all(&mut db)
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_in_gives_a_strict_http_only_cookie_kept_hashed_and_sign_out_ends_it() {
    let origin = Origin::new();
    let ops = spawn_dashboard(&origin, "").await;
    let mut browser = Browser::new(&ops);

    let (status, location, _) = browser.page("/ui/apps/web").await;
    assert_eq!(status, 303, "not signed in: to the sign-in page");
    assert_eq!(
        location.as_deref(),
        Some("/ui/sign-in?next=%2Fui%2Fapps%2Fweb")
    );

    let refused = browser
        .form("/ui/sign-in", &[("token", "not-a-token")])
        .await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("set-cookie").is_none());
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("not one of this server"));
    assert!(
        session_digests(&ops).await.is_empty(),
        "a refused sign-in stores nothing"
    );

    let set = browser.sign_in(ADMIN).await;
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.contains(attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "plain http: no Secure ({set})");
    let value = browser.cookie.clone().unwrap();
    let value = value.strip_prefix("dockhand_session=").unwrap();
    assert!(!set.contains(ADMIN));
    let digests = session_digests(&ops).await;
    assert_eq!(digests.len(), 1);
    assert_eq!(
        digests[0],
        sha2::Sha256::digest(value.as_bytes()).to_vec(),
        "kept as SHA-256"
    );

    let (status, _, page) = browser.page("/ui").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("signed in as <strong>admin</strong>"),
        "{page}"
    );
    assert!(page.contains("href=\"/ui/apps/web\""));
    assert!(!page.contains(ADMIN), "no token in a page");

    // The cookie reads the JSON API (the deploy page's EventSource needs it) …
    let read = browser
        .client
        .get(ops.app.url("/api/apps"))
        .header("cookie", browser.cookie.clone().unwrap());
    assert_eq!(read.send().await.unwrap().status(), 200);
    // … and never writes it: the write API is bearer-only.
    let write = browser
        .client
        .post(ops.app.url("/api/apps/web/lock"))
        .header("cookie", browser.cookie.clone().unwrap())
        .json(&json!({ "reason": "cookie" }));
    assert_eq!(write.send().await.unwrap().status(), 401);
    assert_eq!(ops.get("/api/apps/web").await["locked"], Value::Null);

    let csrf = Browser::csrf(&page);
    let out = browser.form("/ui/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status(), 303);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert!(
        session_digests(&ops).await.is_empty(),
        "sign-out deletes the session"
    );
    // The old cookie, replayed, opens nothing.
    let (status, location, _) = browser.page("/ui").await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some("/ui/sign-in?next=%2Fui"))
    );
    let read = browser
        .client
        .get(ops.app.url("/api/apps"))
        .header("cookie", browser.cookie.clone().unwrap());
    assert_eq!(read.send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn a_dashboard_form_without_its_csrf_token_or_from_another_origin_changes_nothing() {
    let origin = Origin::new();
    let ops = spawn_dashboard(&origin, "").await;
    let mut browser = Browser::new(&ops);
    browser.sign_in(ADMIN).await;
    let (_, _, page) = browser
        .page("/ui/apps/web/confirm?action=lock&reason=release")
        .await;
    let csrf = Browser::csrf(&page);

    let no_token = browser
        .form("/ui/apps/web/do/lock", &[("reason", "release")])
        .await;
    assert_eq!(no_token.status(), 403);
    assert!(no_token.text().await.unwrap().contains("CSRF token"));
    let wrong = browser
        .form(
            "/ui/apps/web/do/lock",
            &[("reason", "release"), ("csrf", &"0".repeat(64))],
        )
        .await;
    assert_eq!(wrong.status(), 403);
    let cross = browser
        .form_from(
            "/ui/apps/web/do/lock",
            &[("reason", "release"), ("csrf", &csrf)],
            "http://evil.test",
        )
        .await;
    assert_eq!(cross.status(), 403);
    assert!(cross.text().await.unwrap().contains("cross-site"));
    assert_eq!(
        ops.get("/api/apps/web").await["locked"],
        Value::Null,
        "nothing locked"
    );

    let done = browser
        .form(
            "/ui/apps/web/do/lock",
            &[("reason", "release"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(done.status(), 303);
    assert_eq!(done.headers()["location"], "/ui/apps/web");
    let locked = ops.get("/api/apps/web").await["locked"].clone();
    assert_eq!(
        (locked["reason"].as_str(), locked["locked_by"].as_str()),
        (Some("release"), Some("admin"))
    );
    let (_, _, page) = browser.page("/ui/apps/web").await;
    assert!(page.contains("locked by admin: release"), "{page}");
}

#[tokio::test]
async fn a_read_only_session_sees_no_actions_and_its_forms_get_403() {
    let origin = Origin::new();
    let ops = spawn_dashboard(&origin, "").await;
    ops.pushed(&origin.head()).await;
    let mut browser = Browser::new(&ops);
    browser.sign_in(VIEWER).await;
    let (status, _, page) = browser.page("/ui/apps/web").await;
    assert_eq!(status, 200);
    assert!(page.contains("read-only"));
    assert!(
        !page.contains("id=\"actions\""),
        "no action panel for a read-only token"
    );
    let (status, _, _) = browser.page("/ui/apps/web/confirm?action=deploy").await;
    assert_eq!(status, 403);
    let csrf = Browser::csrf(&page);
    let answer = browser
        .form("/ui/apps/web/do/lock", &[("reason", "x"), ("csrf", &csrf)])
        .await;
    assert_eq!(answer.status(), 403);
    assert!(answer
        .text()
        .await
        .unwrap()
        .contains("token &quot;viewer&quot; is read-only"));
    assert_eq!(ops.get("/api/apps/web").await["locked"], Value::Null);
}

#[tokio::test]
async fn deploy_and_rollback_from_the_dashboard_go_through_the_plan_and_land_on_the_deploy_page() {
    let origin = Origin::new();
    let ops = spawn_dashboard(&origin, "").await;
    let first = ops.pushed(&origin.head()).await;
    let first_id = first["id"].as_i64().unwrap();
    origin.write("app.py", "print('second')\n");
    let second = origin.commit("second: the new greeting");
    let mut browser = Browser::new(&ops);
    browser.sign_in(ADMIN).await;

    // The confirmation is the plan: what would change, and which path.
    let (status, _, confirm) = browser.page("/ui/apps/web/confirm?action=deploy").await;
    assert_eq!(status, 200, "{confirm}");
    assert!(confirm.contains(&second), "{confirm}");
    assert!(
        confirm.contains("app.py"),
        "the changed file is listed: {confirm}"
    );
    assert!(confirm.contains("<strong>fast</strong>"), "{confirm}");
    let csrf = Browser::csrf(&confirm);
    let queued = browser
        .form("/ui/apps/web/do/deploy", &[("csrf", &csrf)])
        .await;
    assert_eq!(queued.status(), 303);
    let location = queued.headers()["location"].to_str().unwrap().to_string();
    let id: i64 = location
        .strip_prefix("/ui/deploys/")
        .unwrap()
        .parse()
        .unwrap();
    let deploy = ops.wait(id).await;
    assert_eq!(deploy["status"], "succeeded");
    assert_eq!(deploy["actor"], "admin");
    assert_eq!(deploy["to_commit"], second.as_str());
    let (status, _, page) = browser.page(&location).await;
    assert_eq!(status, 200);
    assert!(page.contains("data-status=\"succeeded\""), "{page}");
    assert!(page.contains("second: the new greeting"));
    for stage in stages(&deploy) {
        assert!(
            page.contains(&format!("<span class=\"stage\">{stage}</span>")),
            "{stage} on {page}"
        );
    }
    assert!(
        !page.contains("deploy.js"),
        "a finished deploy needs no live stream"
    );

    // Roll back to the first deploy, picked from the app page's list.
    let (_, _, app_page) = browser.page("/ui/apps/web").await;
    assert!(
        app_page.contains(&format!("<option value=\"{first_id}\">")),
        "{app_page}"
    );
    let (status, _, confirm) = browser
        .page(&format!(
            "/ui/apps/web/confirm?action=rollback&to={first_id}"
        ))
        .await;
    assert_eq!(status, 200, "{confirm}");
    let back = browser
        .form(
            "/ui/apps/web/do/rollback",
            &[
                ("to", &first_id.to_string()),
                ("csrf", &Browser::csrf(&confirm)),
            ],
        )
        .await;
    assert_eq!(back.status(), 303);
    let id: i64 = back.headers()["location"]
        .to_str()
        .unwrap()
        .strip_prefix("/ui/deploys/")
        .unwrap()
        .parse()
        .unwrap();
    let rollback = ops.wait(id).await;
    assert_eq!(rollback["status"], "succeeded");
    assert_eq!(rollback["trigger"], "rollback");
    assert_eq!(rollback["rollback_of"], first_id);
    assert_eq!(rollback["to_commit"], first["to_commit"]);

    // A refused action is the API's refusal, on a page: a ref that does not exist.
    let (status, _, page) = browser
        .page("/ui/apps/web/confirm?action=deploy&ref=no-such-branch")
        .await;
    assert_eq!(status, 404, "{page}");
    assert!(page.contains("no-such-branch"));
}

#[tokio::test]
async fn the_app_page_filters_history_pages_it_and_shows_the_delivery_ledger() {
    let origin = Origin::new();
    let ops = spawn_dashboard(&origin, "").await;
    let first = ops.pushed(&origin.head()).await;
    // A delivery for a branch the app does not track: ignored, with why.
    let ignored = ops
        .app
        .push_ref("refs/heads/feature", &origin.head(), false)
        .await;
    assert_eq!(ignored.status(), 202);
    ops.post("/api/apps/web/lock", json!({ "reason": "freeze" }))
        .await;
    origin.write("app.py", "print('locked out')\n");
    let held = origin.commit("held");
    let response = ops.app.push_ref("refs/heads/main", &held, false).await;
    assert_eq!(response.status(), 202);

    let mut browser = Browser::new(&ops);
    browser.sign_in(VIEWER).await;
    let (status, _, page) = browser.page("/ui/apps/web").await;
    assert_eq!(status, 200);
    assert!(
        page.contains(">locked</"),
        "the held push is answered locked: {page}"
    );
    assert!(page.contains("app locked by admin: freeze"));
    assert!(
        page.contains("refs/heads/feature"),
        "the ignored delivery is listed"
    );

    let (_, _, succeeded) = browser.page("/ui/apps/web?status=succeeded").await;
    assert!(succeeded.contains(&format!("data-deploy=\"{}\"", first["id"])));
    assert_eq!(
        succeeded.matches("<tr data-deploy=").count(),
        1,
        "{succeeded}"
    );
    let (_, _, older) = browser
        .page(&format!("/ui/apps/web?before={}", first["id"]))
        .await;
    assert_eq!(
        older.matches("<tr data-deploy=").count(),
        0,
        "nothing before the first deploy"
    );
    let (status, _, bad) = browser.page("/ui/apps/web?status=bogus").await;
    assert_eq!(status, 400);
    assert!(bad.contains("not a deploy status"));
}

#[tokio::test]
async fn check_says_where_the_dashboard_is_and_how_to_sign_in() {
    let origin = Origin::new();
    let ops = crate::support::ops::spawn_ops_edited(
        &origin,
        "public_url = \"https://deploy.example.test\"",
        "",
        |t| t,
    )
    .await;
    let report = dockhand::cli::check_report(&ops.app.dir.path().join("dockhand.toml")).unwrap();
    assert!(
        report.contains(
            "dashboard: https://deploy.example.test/ui, sign in with a [[tokens]] token; \
             sessions last 43200s, cookie Secure (https only)"
        ),
        "{report}"
    );
    let open = spawn_app(&origin).await;
    let report = dockhand::cli::check_report(&open.dir.path().join("dockhand.toml")).unwrap();
    // The test config listens on port 0; the report repeats what the file says.
    assert!(
        report.contains("dashboard: http://127.0.0.1:0/ui, read-only for anyone (no [[tokens]])"),
        "{report}"
    );
}
