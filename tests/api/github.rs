//! GitHub deployments and commit statuses (`[github]`, `[apps.github]`): a real dockhand, real
//! git and SQLite, and a fake GitHub on loopback that checks every request against GitHub's
//! published REST description (support/github.rs) and records them, so each test states the
//! exact sequence GitHub is told.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::support::git_servers::GitServers;
use crate::support::github::{Auth, FakeGithub};
use crate::support::helpers::*;
use crate::support::ops::spawn_ops_edited;

const TOKEN: &str = "ghp_first-token-0123456789";
const PUBLIC: &str = "https://deploy.example.test";

/// `[github]` with `auth` lines, and `web`'s `[apps.github]` with `app` lines.
fn sections(github: &FakeGithub, auth: &str, app: &str) -> (String, String) {
    (
        format!("public_url = \"{PUBLIC}\"\n"),
        format!(
            "[apps.github]\n{app}\n\n[github]\napi_url = \"{}\"\n{auth}\n",
            github.url
        ),
    )
}

fn token_file(dir: &Path, token: &str) -> String {
    let file = dir.join("github-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    format!("token_file = \"{}\"", file.display())
}

async fn spawn(origin: &Origin, github: &FakeGithub, auth: &str, app: &str) -> TestApp {
    let (server, tail) = sections(github, auth, app);
    spawn_app_edited(origin, &server, "", move |t| format!("{t}{tail}")).await
}

fn short(sha: &str) -> &str {
    &sha[..7]
}

#[tokio::test]
async fn each_push_is_a_github_deployment_whose_statuses_follow_it_and_the_one_it_replaced_goes_inactive(
) {
    let github = FakeGithub::start(Auth::Token(TOKEN.into())).await;
    let origin = Origin::new();
    let secrets = tempfile::tempdir().unwrap();
    let auth = token_file(secrets.path(), TOKEN);
    let app = spawn(&origin, &github, &auth, "commit_status = true").await;
    let first = origin.head();
    let d1 = app.deploy(&first).await;
    github.wait_writes(4).await;
    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("second");
    let d2 = app.deploy(&second).await;

    let writes = github.wait_writes(11).await;
    let (a, b) = (short(&first), short(&second));
    assert_eq!(
        writes,
        [
            format!("create-deployment web {a}"),
            "deployment-status 101 in_progress".into(),
            format!("commit-status {a} pending"),
            "deployment-status 101 success".into(),
            format!("commit-status {a} success"),
            format!("create-deployment web {b}"),
            "deployment-status 102 in_progress".into(),
            format!("commit-status {b} pending"),
            "deployment-status 102 success".into(),
            "deployment-status 101 inactive".into(),
            format!("commit-status {b} success"),
        ],
    );
    let calls = github.calls();
    let create = calls
        .iter()
        .find(|c| c.op == "repos/create-deployment")
        .unwrap();
    assert_eq!(create.path, "/repos/acme/web/deployments");
    assert_eq!(create.body["ref"], first.as_str());
    // GitHub is told what was deployed; it is not asked to merge or to check statuses first.
    assert_eq!(create.body["auto_merge"], false);
    assert_eq!(create.body["required_contexts"], json!([]));
    assert_eq!(create.body["payload"]["dockhand"]["deploy_id"], d1["id"]);
    assert!(calls.iter().all(|c| c.bearer == TOKEN));
    let deployments = github.deployments();
    let link = format!("{PUBLIC}/ui/deploys/{}", d2["id"]);
    let last = deployments[1].statuses.last().unwrap();
    assert_eq!(
        (last.0.as_str(), last.2.as_deref()),
        ("success", Some(link.as_str()))
    );
    assert!(last.1.starts_with("deployed (fast path)"), "{last:?}");
    let status = github.commit_statuses().pop().unwrap();
    assert_eq!(
        (status.2.as_str(), status.3.as_deref()),
        ("dockhand/web", Some(link.as_str()))
    );

    // The token file is read at each call: a rotated token is used without a restart.
    let rotated = "ghp_rotated-token-0123456789";
    github.rotate(rotated);
    token_file(secrets.path(), rotated);
    origin.write("app.py", "VERSION = 3\n");
    app.deploy(&origin.commit("third")).await;
    github.wait_writes(17).await;
    assert_eq!(github.calls().last().unwrap().bearer, rotated);
    app.stop().await;
}

#[tokio::test]
async fn a_failure_that_was_put_back_and_a_rollback_are_told_as_github_has_them() {
    let github = FakeGithub::start(Auth::Token(TOKEN.into())).await;
    let origin = Origin::new();
    let hooks = tempfile::tempdir().unwrap();
    let auth = token_file(hooks.path(), TOKEN);
    let (server, tail) = sections(&github, &auth, "environment = \"production\"");
    let server = format!("{server}hooks_dir = \"{}\"\n", hooks.path().display());
    let ops = spawn_ops_edited(&origin, &server, "revert_on_hook_failure = true", |t| {
        // [apps.github] belongs to web, the first app: before the second one starts.
        t.replacen(
            "\n[[apps]]\nname = \"other\"",
            &format!("\n{tail}\n[[apps]]\nname = \"other\""),
            1,
        )
    })
    .await;
    let first = origin.head();
    ops.app.deploy(&first).await;
    origin.write("app.py", "VERSION = 2\n");
    let second = origin.commit("second");
    ops.app.deploy(&second).await;
    github.wait_writes(5).await;

    let hook = hooks.path().join("web/post-deploy");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "#!/bin/sh\necho 'smoke test failed'\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    origin.write("app.py", "VERSION = 3\n");
    let third = origin.commit("third");
    let failed = ops.app.deploy_to_end(&third).await;
    assert_eq!(failed["reverted"], true, "{failed:#}");
    github.wait_writes(8).await;
    std::fs::remove_file(&hook).unwrap();

    let back = ops.asked("/api/apps/web/rollback", json!({})).await;
    assert_eq!(back["status"], "succeeded", "{back:#}");
    let writes = github.wait_writes(15).await;
    let (a, b, c) = (short(&first), short(&second), short(&third));
    assert_eq!(
        writes,
        [
            format!("create-deployment production {a}"),
            "deployment-status 101 in_progress".into(),
            "deployment-status 101 success".into(),
            format!("create-deployment production {b}"),
            "deployment-status 102 in_progress".into(),
            "deployment-status 102 success".into(),
            "deployment-status 101 inactive".into(),
            format!("create-deployment production {c}"),
            "deployment-status 103 in_progress".into(),
            "deployment-status 103 failure".into(),
            // The rollback names its commit when it is asked for: queued before it runs.
            format!("create-deployment production {a}"),
            "deployment-status 104 queued".into(),
            "deployment-status 104 in_progress".into(),
            "deployment-status 104 success".into(),
            "deployment-status 102 inactive".into(),
        ],
    );
    let deployments = github.deployments();
    let failure = &deployments[2].statuses[1];
    assert!(
        failure
            .1
            .starts_with("failed and put back, the previous version serves"),
        "{failure:?}"
    );
    assert!(failure.1.chars().count() <= 140);
    assert!(
        deployments[3].statuses[2].1.starts_with("rolled back"),
        "{:?}",
        deployments[3]
    );
    ops.app.stop().await;
}

#[tokio::test]
async fn a_restart_while_github_acts_neither_loses_a_status_nor_creates_a_deployment_twice() {
    let github = FakeGithub::start(Auth::Token(TOKEN.into())).await;
    let origin = Origin::new();
    let secrets = tempfile::tempdir().unwrap();
    let auth = token_file(secrets.path(), TOKEN);
    let app = spawn(&origin, &github, &auth, "").await;
    // GitHub creates the deployment, but dockhand never hears the answer: it stops first.
    let _never = github.hold("repos/create-deployment");
    app.deploy(&origin.head()).await;
    github.wait_writes(1).await;
    // …and after the restart GitHub is down for one call.
    github.answer(vec![(503, vec![])]);
    let app = app.restart().await;

    let writes = github.wait_writes(3).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let sha = short(&origin.head()).to_string();
    assert_eq!(
        github.writes(),
        [
            format!("create-deployment web {sha}"),
            "deployment-status 101 in_progress".into(),
            "deployment-status 101 success".into(),
        ],
        "{writes:?}"
    );
    let ops: Vec<String> = github.calls().iter().map(|c| c.op.clone()).collect();
    assert_eq!(
        ops,
        [
            "repos/create-deployment",
            // The 503: the lookup of a deployment GitHub may have made, tried again.
            "repos/list-deployments",
            "repos/list-deployments",
            // …and whether the status was posted before it stopped.
            "repos/list-deployment-statuses",
            "repos/create-deployment-status",
            "repos/create-deployment-status",
        ]
    );
    let lookup = &github.calls()[2];
    assert!(
        lookup.query.contains(&format!("sha={}", origin.head())),
        "{lookup:?}"
    );
    assert!(lookup.query.contains("environment=web"), "{lookup:?}");
    assert_eq!(github.deployments().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_rate_limit_is_waited_out_and_a_refusal_is_given_up_and_shown() {
    let github = FakeGithub::start(Auth::Token(TOKEN.into())).await;
    let origin = Origin::new();
    let secrets = tempfile::tempdir().unwrap();
    let auth = token_file(secrets.path(), TOKEN);
    let reset = (time::OffsetDateTime::now_utc().unix_timestamp() + 3).to_string();
    github.answer(vec![(
        403,
        vec![
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", reset),
        ],
    )]);
    let app = spawn(&origin, &github, &auth, "").await;
    app.deploy(&origin.head()).await;
    let writes = github.wait_writes(4).await;
    let calls = github.calls();
    assert_eq!(calls[0].op, "repos/create-deployment");
    assert!(writes.len() >= 3, "{writes:?}");
    // Once the limit reset, in order, the whole sequence.
    assert_eq!(github.deployments().len(), 1);
    assert_eq!(github.deployments()[0].statuses.len(), 2);

    // A 422 is GitHub saying no: given up at once, shown, and the next deploy goes on.
    github.answer(vec![(422, vec![])]);
    origin.write("app.py", "VERSION = 2\n");
    app.deploy(&origin.commit("second")).await;
    let listed = gave_up(&app).await;
    let metrics = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let notes = listed["notifications"].as_array().unwrap();
    let refused = notes.iter().find(|n| n["state"] == "gave_up").unwrap();
    assert_eq!(refused["receiver"], "github:web");
    assert!(
        refused["last_error"].as_str().unwrap().contains("422"),
        "{refused:#}"
    );
    assert!(
        metrics
            .contains("dockhand_notifications_total{receiver=\"github:web\",outcome=\"retry\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

/// The app's notifications once one was given up (up to 20 s).
async fn gave_up(app: &TestApp) -> serde_json::Value {
    for _ in 0..400 {
        let listed = app.get("/api/apps/web/notifications").await;
        if listed["notifications"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["state"] == "gave_up"))
        {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no notification was given up");
}

/// A GitHub App's RSA key pair (openssl), and the fake GitHub that knows the App by it. Each
/// installation token it hands out expires in 4 minutes: under the 5 dockhand keeps in hand,
/// so every call buys a new one. Returns the `[github]` lines naming the App.
async fn github_app() -> (tempfile::TempDir, FakeGithub, String) {
    let keys = tempfile::tempdir().unwrap();
    let (private, public) = (keys.path().join("app.pem"), keys.path().join("app.pub"));
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    openssl(&["genrsa", "-out", private.to_str().unwrap(), "2048"]);
    openssl(&[
        "rsa",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    let github = FakeGithub::start(Auth::App {
        app_id: 4242,
        public_pem: std::fs::read(&public).unwrap(),
        installation_id: 77,
        token_life: 240,
    })
    .await;
    let auth = format!(
        "app_id = 4242\nprivate_key_file = \"{}\"",
        private.display()
    );
    (keys, github, auth)
}

#[tokio::test]
async fn a_github_app_signs_a_jwt_for_an_installation_token_and_buys_another_before_it_expires() {
    let (_keys, github, auth) = github_app().await;
    let origin = Origin::new();
    let app = spawn(&origin, &github, &auth, "").await;
    app.deploy(&origin.head()).await;
    github.wait_writes(3).await;

    let calls = github.calls();
    let ops: Vec<&str> = calls.iter().map(|c| c.op.as_str()).collect();
    assert_eq!(
        ops,
        [
            "apps/get-repo-installation",
            "apps/create-installation-access-token",
            "repos/create-deployment",
            "apps/create-installation-access-token",
            "repos/create-deployment-status",
            "apps/create-installation-access-token",
            "repos/create-deployment-status",
        ]
    );
    assert_eq!(calls[1].path, "/app/installations/77/access_tokens");
    assert_eq!(calls[2].bearer, "ghs_fake1");
    assert_eq!(calls[6].bearer, "ghs_fake3");
    app.stop().await;
}

#[tokio::test]
async fn with_fetch_token_the_apps_installation_token_is_the_password_of_every_fetch() {
    let (_keys, github, auth) = github_app().await;
    let origin = Origin::new();
    let servers = GitServers::start(&origin);
    github.hand_out(&servers.token());
    let (server, tail) = sections(&github, &auth, "deployments = false\nfetch_token = true");
    let (bare, http) = (origin.bare.display().to_string(), servers.http());
    let app = spawn_app_edited(&origin, &server, "", move |t| {
        format!(
            "{}{tail}",
            t.replacen(
                &format!("repo = \"{bare}\""),
                &format!("repo = \"{http}\""),
                1
            )
        )
    })
    .await;
    let first = app.deploy(&origin.head()).await;
    assert_eq!(first["status"], "succeeded", "{first:#}");
    assert_eq!(step(&first, "fetch")["ok"], true);

    // The git server's password changes, and so does what the App is given: the next fetch
    // asks for a new token (the last one is under 5 minutes from expiry) and gets through.
    servers.rotate();
    github.hand_out(&servers.token());
    origin.write("app.py", "VERSION = 2\n");
    let second = app.deploy(&origin.commit("second")).await;
    assert_eq!(second["status"], "succeeded", "{second:#}");

    // A token the server refuses: the fetch fails saying whose token it was.
    servers.rotate();
    github.hand_out("ghs_not-the-password");
    origin.write("app.py", "VERSION = 3\n");
    let third = origin.commit("third");
    let id = app.push(&third).await;
    let failed = app.wait_deploy(id).await;
    assert_eq!(failed["status"], "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("refused [github]'s token for this repository (fetch_token) (HTTP 401)"),
        "{error}"
    );
    assert!(
        !error.contains("ghs_not-the-password"),
        "no token in an error: {error}"
    );

    let ops: Vec<String> = github.calls().into_iter().map(|c| c.op).collect();
    let bought = ops
        .iter()
        .filter(|o| *o == "apps/create-installation-access-token")
        .count();
    assert_eq!(bought, 3, "one token per fetch: {ops:?}");
    assert!(
        ops.iter().all(|o| o.starts_with("apps/")),
        "only token calls: {ops:?}"
    );
}
