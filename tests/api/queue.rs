//! Ordering and coalescing: latest wins, old commits never replace new ones, bounded queue.

use serde_json::Value;

use crate::support::helpers::*;

/// Add `n` files so the next deploy takes long enough for pushes to pile up behind it.
fn add_bulk(origin: &Origin, n: usize) {
    for i in 0..n {
        origin.write(&format!("bulk/{}/{i}.txt", i % 50), &format!("file {i}\n"));
    }
}

#[tokio::test]
async fn burst_of_pushes_while_deploying_ends_on_the_newest_with_at_most_two_deploys_run() {
    let origin = Origin::new();
    add_bulk(&origin, 3000);
    let first = origin.commit("bulk");
    let mut commits = vec![first];
    for i in 0..9 {
        origin.write("app.py", &format!("VERSION = {i}\n"));
        commits.push(origin.commit(&format!("burst {i}")));
    }
    let app = spawn_app(&origin).await;
    let mut ids = Vec::new();
    for commit in &commits {
        ids.push(app.push(commit).await);
    }
    for id in &ids {
        app.wait_deploy(*id).await;
    }
    let newest = commits.last().unwrap();
    assert_eq!(app.volume_snapshot(), origin.snapshot(newest));
    let deploys = app.deploys().await;
    // Every push deploys the origin's tip, so once the newest is live the later ones find it
    // already deployed (ignored), if latest-wins did not fold them in (superseded).
    for d in deploys.iter().filter(|d| d["status"] == "ignored") {
        assert!(
            d["reason"].as_str().unwrap().contains("already deployed"),
            "{d:#}"
        );
    }
    let ran: Vec<&Value> = deploys
        .iter()
        .filter(|d| d["status"] != "superseded" && d["status"] != "ignored")
        .collect();
    assert!(ran.len() <= 2, "{} deploys ran: {deploys:#?}", ran.len());
    assert!(ran.iter().all(|d| d["status"] == "succeeded"), "{ran:#?}");
    let last = ran.first().unwrap();
    assert_eq!(last["to_commit"], newest.as_str());
    for d in deploys.iter().filter(|d| d["status"] == "superseded") {
        assert!(
            deploys
                .iter()
                .any(|r| r["id"] == d["superseded_by"] && r["status"] != "superseded"),
            "superseded_by must name a deploy that ran (or found its commit deployed): {d:#}"
        );
    }
}

#[tokio::test]
async fn a_branch_moved_back_without_a_forced_push_is_stale_and_not_deployed() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    let (old, new) = app.deployed_twice(&origin).await;

    // The branch at the origin goes back to the old commit; the push does not say forced.
    // (A late delivery of an old commit deploys the origin's tip: fast_path's doorbell tests.)
    origin.git(&["reset", "-q", "--hard", &old]);
    origin.git(&["push", "-q", "-f", "origin", "HEAD:refs/heads/main"]);
    let id = app.push(&old).await;
    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "stale", "{deploy:#}");
    assert!(
        deploy["reason"].as_str().unwrap().contains("older"),
        "{deploy:#}"
    );
    assert_eq!(app.volume_snapshot(), origin.snapshot(&new));

    // Unless the push says it was forced.
    let response = app.push_ref("refs/heads/main", &old, true).await;
    let id = response.json::<Value>().await.unwrap()["deploy_id"]
        .as_i64()
        .unwrap();
    assert_eq!(app.wait_deploy(id).await["status"], "succeeded");
    assert_eq!(app.volume_snapshot(), origin.snapshot(&old));
}

#[tokio::test]
async fn a_full_queue_answers_503_and_records_nothing_for_the_refused_push() {
    let origin = Origin::new();
    add_bulk(&origin, 3000);
    let first = origin.commit("bulk");
    let app = spawn_app_with(&origin, "queue_limit = 1", "").await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..4 {
        let response = app.push_ref("refs/heads/main", &first, false).await;
        match response.status().as_u16() {
            202 => accepted.push(
                response.json::<Value>().await.unwrap()["deploy_id"]
                    .as_i64()
                    .unwrap(),
            ),
            503 => {
                refused += 1;
                assert!(response.text().await.unwrap().contains("full"));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        refused >= 1,
        "a queue of one must refuse some of four quick pushes"
    );
    for id in &accepted {
        app.wait_deploy(*id).await;
    }
    assert_eq!(
        app.deploys().await.len(),
        accepted.len(),
        "a refused push left a deploy behind"
    );
}

#[tokio::test]
async fn a_redelivery_while_the_queue_is_full_answers_200_pointing_at_the_original() {
    let origin = Origin::new();
    add_bulk(&origin, 3000);
    let first = origin.commit("bulk");
    let app = spawn_app_with(&origin, "queue_limit = 1", "").await;
    let body = push_payload("refs/heads/main", &first, false);
    let signature = sign(SECRET, &body);
    let send = |delivery: String| {
        let (body, signature) = (body.clone(), signature.clone());
        let app = &app;
        async move {
            app.deliver("/hooks/github", "push", &delivery, body, &signature)
                .await
        }
    };
    let original = delivery_id();
    let accepted = send(original.clone()).await;
    assert_eq!(accepted.status(), 202);
    let original_deploy = accepted.json::<Value>().await.unwrap()["deploy_id"].clone();
    // Fill the queue until a new delivery is refused, then redeliver the accepted one.
    let mut refused = false;
    for _ in 0..6 {
        if send(delivery_id()).await.status() == 503 {
            refused = true;
            break;
        }
    }
    assert!(refused, "a queue of one must refuse some quick pushes");
    let again = send(original).await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["status"], "duplicate", "{again}");
    assert!(
        again.to_string().contains(&original_deploy.to_string()),
        "{again}"
    );
}

#[tokio::test]
async fn pruning_removes_old_history_but_keeps_the_deployed_deploy_and_its_delivery() {
    let origin = Origin::new();
    let app = spawn_app(&origin).await;
    for _ in 0..3 {
        let response = app
            .push_ref("refs/heads/feature", &origin.head(), false)
            .await;
        assert_eq!(response.status(), 202);
    }
    let first = app.deploy(&origin.head()).await;
    origin.write("app.py", "VERSION = 2\n");
    let second = app.deploy(&origin.commit("v2")).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    // The same SQLite file the server uses, opened beside it.
    let store = dockhand::store::Store::open(&app.dir.path().join("state/dockhand.db"))
        .await
        .unwrap();
    // Keeping the newest two of the app keeps both deploys; the ignored deliveries go.
    let pruned = store.prune(0, 2).await.unwrap();
    assert_eq!((pruned.deliveries, pruned.deploys), (3, 0));
    let pruned = store.prune(0, 0).await.unwrap();
    assert_eq!(
        (pruned.deliveries, pruned.deploys),
        (1, 1),
        "the first deploy and its delivery"
    );

    assert_eq!(
        app.get(&format!("/api/deploys/{}", second["id"])).await["status"],
        "succeeded"
    );
    let gone = app
        .client
        .get(app.url(&format!("/api/deploys/{}", first["id"])))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(
        app.get("/api/apps/web").await["deployed"]["deploy_id"],
        second["id"]
    );
    // Within the retention nothing goes.
    assert_eq!(
        store.prune(3_600_000, 0).await.unwrap(),
        dockhand::store::Pruned::default()
    );
}

#[tokio::test]
async fn a_store_refusing_writes_mid_deploy_ends_it_failed_once_it_answers_and_the_next_push_deploys(
) {
    use sqlx::Connection as _;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    let origin = Origin::new();
    let hooks = tempfile::tempdir().unwrap();
    let hook = hooks.path().join("pre-deploy");
    std::fs::write(&hook, "#!/bin/sh\nsleep 1\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hooks_dir = format!("hooks_dir = \"{}\"", hooks.path().display());
    let app = spawn_app_with(&origin, &hooks_dir, "").await;
    let a = origin.head();
    app.deploy(&a).await;

    origin.write("app.py", "VERSION = 2\n");
    let id = app.push(&origin.commit("b")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = app.get(&format!("/api/deploys/{id}")).await;
        if d["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["stage"] == "hook:pre-deploy"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the hook never ran: {d:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Another process holds SQLite's write lock past every busy timeout (a backup tool, as a
    // full disk would refuse every write): the hook's end, and the failure after it, are
    // refused.
    let db = app.dir.path().join("state/dockhand.db");
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(24)).await;
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    other.close().await.unwrap();

    let deploy = app.wait_deploy(id).await;
    assert_eq!(deploy["status"], "failed", "{deploy:#}");
    assert!(
        deploy["error"]
            .as_str()
            .is_some_and(|e| e.contains("could not go on") && e.contains("locked")),
        "{deploy:#}"
    );
    assert_eq!(app.volume_snapshot(), origin.snapshot(&a));

    // The app's worker is still there.
    origin.write("app.py", "VERSION = 3\n");
    let c = origin.commit("c");
    app.deploy(&c).await;
    assert_eq!(app.volume_snapshot(), origin.snapshot(&c));
}
